/**
 * The secure channel of remote control (--control-listen): a TCP connection made private, authentic and
 * replay-safe by a pre-shared key, with a fresh X25519 exchange per connection. It carries the control
 * protocol's bytes unchanged (src/control/protocol.ts); it is never carried in the tunnel's own messages.
 * TLS is not used because Deno's has no pre-shared-key mode (it would need certificates), nor SSH (a
 * second set of keys and accounts to run); this is the one small thing remote control needs. Version 1:
 *
 *   client -> server  HELLO   "VRC" 01 | key id (8) | Nc (32) | Ec (32)                     76 bytes
 *   server -> client  ANSWER  "VRC" 01 | Ns (32) | Es (32) | proof (16)                     84 bytes
 *                     or a refusal: "NOK <reason>\n" in clear, and the server hangs up
 *   then records both ways: length (4, big endian) | sealed payload | tag (16)
 *
 *   key id = HMAC-SHA-256(psk, "VELA remote control v1 key id")[0, 8)
 *   th     = SHA-256("VELA remote control v1" || HELLO || ANSWER without its proof)
 *   okm    = HKDF-SHA-256(ikm = X25519(e, E'), salt = psk, info = "VELA remote control v1 keys" || th, 64)
 *   keys   = okm[0, 32) client -> server, okm[32, 64) server -> client, ChaCha20-Poly1305
 *
 * - The key id lets the server find the key among the few it holds (an admin key, a read-only one)
 *   without trying each; an unknown id is refused before any X25519 work. It says which key a client
 *   uses, not the key.
 * - The server proves it holds the key in its answer: the proof is the AEAD tag of an empty payload
 *   sealed with the server -> client key at counter 0, the answer's first 68 bytes as associated data. A
 *   client that cannot verify it sends nothing more, so a command only ever goes to a holder of the key.
 * - The client proves it in its first record: an empty payload at counter 0 of its direction. The server
 *   opens it before it reads any command; if it does not open (a wrong key, or a replayed session), the
 *   server refuses in clear as for an unknown key. The client sends that record and its command at once,
 *   so a command takes two round trips; the server's proof comes before any command, in its answer.
 * - Nonces are per-direction counters (client records from 0, server records from 1 after the proof),
 *   never reused under a key; a record dropped, reordered, replayed or altered fails to open and ends
 *   the connection. The server's fresh nonce and ephemeral make keys of their own for each connection,
 *   so the bytes of a recorded session, replayed, fail at the client's proof.
 * - The length is the associated data of its record, so it cannot be changed either. A record holds at
 *   most MAX_RECORD_BYTES sealed bytes; a length over that (or under a tag) ends the connection before
 *   anything is read. The refusal's "NOK " cannot be a record's length (it is over the limit).
 * - The ephemeral private keys are dropped when the keys are made: a key file that leaks later opens no
 *   recorded session (forward secrecy). A key file that leaks lets its holder in, as with the tunnel's.
 *
 * This module knows no time: its callers bound every step with a deadline by closing the stream. libcrypto
 * (ffi/libcrypto.ts) seals; node:crypto hashes and exchanges keys.
 */

import { createHash, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { AEAD_TAG_BYTES, AeadContext } from "../../ffi/libcrypto.ts";
import { ephemeralFrom, x25519, X25519_BYTES } from "../crypto/handshake.ts";
import { KEY_BYTES } from "../keys.ts";

export const CHANNEL_VERSION = 1;
export const KEY_ID_BYTES = 8;
export const CHANNEL_NONCE_BYTES = 32;
/** The client's hello: magic and version, key id, nonce, ephemeral. */
export const HELLO_BYTES = 4 + KEY_ID_BYTES + CHANNEL_NONCE_BYTES + X25519_BYTES;
/** The server's answer: magic and version, nonce, ephemeral, proof. */
export const ANSWER_BYTES = 4 + CHANNEL_NONCE_BYTES + X25519_BYTES + AEAD_TAG_BYTES;
/** The most sealed bytes (payload and tag) a record holds, and so the most payload. */
export const MAX_RECORD_BYTES = 65536;
export const MAX_RECORD_PAYLOAD = MAX_RECORD_BYTES - AEAD_TAG_BYTES;
/** The reason of the refusal a client gets for a key the server does not hold, or one it failed to prove. */
export const KEY_REFUSED = "the daemon refused the key";
/** The longest refusal line read. */
const MAX_REFUSAL_BYTES = 512;

const CIPHER = "chacha20-poly1305";
const MAGIC = [0x56, 0x52, 0x43]; // "VRC"
const REFUSAL_PREFIX = [0x4e, 0x4f, 0x4b, 0x20]; // "NOK "
const encoder = new TextEncoder();
const KEY_ID_LABEL = encoder.encode("VELA remote control v1 key id");
const TRANSCRIPT_LABEL = encoder.encode("VELA remote control v1");
const KEYS_LABEL = encoder.encode("VELA remote control v1 keys");

/** What the channel needs of a connection; a Deno.Conn is one. */
export interface ByteStream {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

/** The server refused in clear; `reason` is its line without "NOK ". */
export class ChannelRefused extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(`refused: ${reason}`);
    this.name = "ChannelRefused";
    this.reason = reason;
  }
}

/**
 * The channel cannot go on: the peer does not speak it (`protocol`), the server did not prove the key
 * (`unproven`), a record did not open (`tampered`), a record's length is out of bounds (`oversized`), or
 * the connection ended or broke (`closed`).
 */
export class ChannelFailure extends Error {
  readonly kind: "protocol" | "unproven" | "tampered" | "oversized" | "closed";
  constructor(kind: ChannelFailure["kind"], message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ChannelFailure";
    this.kind = kind;
  }
}

/** A key's id, as the hello carries it, in hex (16 characters): what a log names a key by. */
export function keyIdOf(key: Uint8Array): string {
  return hex(keyIdBytes(key));
}

function keyIdBytes(key: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(KEY_ID_LABEL).digest()).subarray(0, KEY_ID_BYTES);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The keys a server accepts, by key id. Throws a RangeError for a key that is not KEY_BYTES long, and for
 * two keys with one id (the same key given twice).
 */
export function indexKeys<K extends { readonly key: Uint8Array }>(entries: readonly K[]): Map<string, K> {
  const index = new Map<string, K>();
  for (const entry of entries) {
    if (entry.key.length !== KEY_BYTES) {
      throw new RangeError(`A remote control key is ${KEY_BYTES} bytes, not ${entry.key.length}`);
    }
    const id = keyIdOf(entry.key);
    if (index.has(id)) throw new RangeError(`The same remote control key is given twice (key id ${id})`);
    index.set(id, entry);
  }
  return index;
}

/** Reads exact byte counts from a stream, keeping what came beyond them. */
class Reader {
  readonly #stream: ByteStream;
  readonly #chunk = new Uint8Array(MAX_RECORD_BYTES + 4);
  #pending = new Uint8Array(0);

  constructor(stream: ByteStream) {
    this.#stream = stream;
  }

  /** The next `n` bytes; null when the stream ends before any of them. Throws ChannelFailure `closed`. */
  async exact(n: number): Promise<Uint8Array | null> {
    while (this.#pending.length < n) {
      let got: number | null;
      try {
        got = await this.#stream.read(this.#chunk);
      } catch (error) {
        throw new ChannelFailure("closed", `the connection broke (${(error as Error).message})`, {
          cause: error,
        });
      }
      if (got === null) {
        if (this.#pending.length === 0) return null;
        throw new ChannelFailure("closed", "the connection ended in the middle of a message");
      }
      const joined = new Uint8Array(this.#pending.length + got);
      joined.set(this.#pending);
      joined.set(this.#chunk.subarray(0, got), this.#pending.length);
      this.#pending = joined;
    }
    const bytes = this.#pending.slice(0, n);
    this.#pending = this.#pending.subarray(n);
    return bytes;
  }

  /** The rest of a refusal line after its first bytes `start`, without "NOK " and the newline. */
  async refusal(start: Uint8Array): Promise<string> {
    const bytes = [...start];
    while (bytes.length < MAX_REFUSAL_BYTES && !bytes.includes(0x0a)) {
      let next: Uint8Array | null;
      try {
        next = await this.exact(1);
      } catch {
        next = null;
      }
      if (next === null) break;
      bytes.push(next[0]);
    }
    const text = new TextDecoder().decode(new Uint8Array(bytes));
    return text.slice(REFUSAL_PREFIX.length).split("\n")[0].replace(/\r$/, "").trim();
  }
}

async function writeAll(stream: ByteStream, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  try {
    while (offset < bytes.length) offset += await stream.write(bytes.subarray(offset));
  } catch (error) {
    throw new ChannelFailure("closed", `the connection broke (${(error as Error).message})`, {
      cause: error,
    });
  }
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

/** Both keys from the X25519 result, the key and the transcript, or undefined for a low-order point. */
function deriveKeys(
  psk: Uint8Array,
  privateKey: Uint8Array,
  peerPublic: Uint8Array,
  hello: Uint8Array,
  answerHead: Uint8Array,
): { clientToServer: Uint8Array; serverToClient: Uint8Array } | undefined {
  let shared: Uint8Array;
  try {
    shared = x25519(privateKey, peerPublic);
  } catch {
    return undefined;
  }
  if (shared.every((b) => b === 0)) return undefined;
  const th = new Uint8Array(
    createHash("sha256").update(TRANSCRIPT_LABEL).update(hello).update(answerHead).digest(),
  );
  const info = new Uint8Array(KEYS_LABEL.length + th.length);
  info.set(KEYS_LABEL);
  info.set(th, KEYS_LABEL.length);
  const okm = new Uint8Array(hkdfSync("sha256", shared, psk, info, 64));
  shared.fill(0);
  return { clientToServer: okm.slice(0, 32), serverToClient: okm.slice(32, 64) };
}

/** The answer's proof: the tag of an empty payload sealed at counter 0 with the answer's head as AAD. */
function proof(serverToClient: Uint8Array, answerHead: Uint8Array): Uint8Array {
  const memory = new Uint8Array(new ArrayBuffer(answerHead.length + AEAD_TAG_BYTES));
  memory.set(answerHead);
  using seal = new AeadContext(CIPHER, serverToClient, "seal");
  seal.seal(memory, 0, answerHead.length, answerHead.length, 0, 0);
  return memory.subarray(answerHead.length);
}

function verifyProof(serverToClient: Uint8Array, answer: Uint8Array): boolean {
  const head = ANSWER_BYTES - AEAD_TAG_BYTES;
  const memory = new Uint8Array(new ArrayBuffer(ANSWER_BYTES));
  memory.set(answer);
  using open = new AeadContext(CIPHER, serverToClient, "open");
  return open.open(memory, 0, head, head, 0, 0);
}

/**
 * Reads one record and opens it with `open()`'s context under `counter` (`open()` says undefined once the
 * channel is closed); with `refusable`, a clear refusal line in its place throws ChannelRefused. Null when
 * the stream ends cleanly before the record. Throws ChannelFailure.
 */
async function readRecord(
  reader: Reader,
  open: () => AeadContext | undefined,
  counter: number,
  refusable: boolean,
): Promise<Uint8Array | null> {
  const header = await reader.exact(4);
  if (header === null) return null;
  if (refusable && startsWith(header, REFUSAL_PREFIX)) throw new ChannelRefused(await reader.refusal(header));
  const length = new DataView(header.buffer, header.byteOffset, 4).getUint32(0);
  if (length > MAX_RECORD_BYTES) {
    throw new ChannelFailure(
      "oversized",
      `a record of ${length} bytes came, over the limit of ${MAX_RECORD_BYTES}`,
    );
  }
  if (length < AEAD_TAG_BYTES) {
    throw new ChannelFailure("protocol", `a record of ${length} bytes came, shorter than its tag`);
  }
  const body = await reader.exact(length);
  if (body === null) throw new ChannelFailure("closed", "the connection ended in the middle of a record");
  const context = open();
  if (context === undefined) throw new ChannelFailure("closed", "the channel is closed");
  const memory = new Uint8Array(new ArrayBuffer(4 + length));
  memory.set(header);
  memory.set(body, 4);
  const payload = length - AEAD_TAG_BYTES;
  if (!context.open(memory, 0, 4, 4, payload, counter)) {
    throw new ChannelFailure("tampered", "a record did not verify (altered, replayed or out of order)");
  }
  return memory.subarray(4, 4 + payload);
}

/**
 * An established channel: records in both directions, each sealed under the next counter of its
 * direction. read() and write() are not meant to run twice at once each.
 */
export class SecureChannel {
  readonly #stream: ByteStream;
  readonly #reader: Reader;
  readonly #seal: AeadContext;
  readonly #open: AeadContext;
  #sendCounter: number;
  #receiveCounter: number;
  /** A client takes a clear refusal in place of the server's first record (a failed proof). */
  #refusable: boolean;
  #closed = false;
  /** What the first failed read threw; every later read throws it again. */
  #failure: Error | undefined;

  /** @internal made by connectChannel() and acceptChannel() only. */
  constructor(
    stream: ByteStream,
    reader: Reader,
    keys: { send: Uint8Array; receive: Uint8Array },
    counters: { send: number; receive: number },
    refusable: boolean,
  ) {
    this.#stream = stream;
    this.#reader = reader;
    this.#seal = new AeadContext(CIPHER, keys.send, "seal");
    this.#open = new AeadContext(CIPHER, keys.receive, "open");
    keys.send.fill(0);
    keys.receive.fill(0);
    this.#sendCounter = counters.send;
    this.#receiveCounter = counters.receive;
    this.#refusable = refusable;
  }

  /**
   * The next record's payload (possibly empty); null when the connection ends cleanly between records.
   * Throws ChannelFailure (`tampered`, `oversized`, `protocol`, `closed`), or ChannelRefused on a client
   * whose proof the server refused.
   */
  async read(): Promise<Uint8Array | null> {
    if (this.#failure) throw this.#failure;
    let payload: Uint8Array | null;
    try {
      payload = await readRecord(
        this.#reader,
        () => this.#closed ? undefined : this.#open,
        this.#receiveCounter,
        this.#refusable,
      );
    } catch (error) {
      // Whatever came after a record that failed is not read: the stream is out of step for good.
      this.#failure = error as Error;
      throw error;
    }
    if (payload === null) return null;
    this.#receiveCounter++;
    this.#refusable = false;
    return payload;
  }

  /** Sends `bytes` in as many records as it takes (none for no bytes). Throws ChannelFailure `closed`. */
  async write(bytes: Uint8Array): Promise<void> {
    const count = Math.ceil(bytes.length / MAX_RECORD_PAYLOAD);
    const memory = new Uint8Array(new ArrayBuffer(bytes.length + count * (4 + AEAD_TAG_BYTES)));
    let at = 0;
    for (let offset = 0; offset < bytes.length; offset += MAX_RECORD_PAYLOAD) {
      const payload = bytes.subarray(offset, offset + MAX_RECORD_PAYLOAD);
      at += this.#record(memory, at, payload);
    }
    await writeAll(this.#stream, memory);
  }

  /** An empty record (a proof of the key); the seal and the counter as for any record. */
  async writeEmpty(): Promise<void> {
    const memory = new Uint8Array(new ArrayBuffer(4 + AEAD_TAG_BYTES));
    this.#record(memory, 0, new Uint8Array(0));
    await writeAll(this.#stream, memory);
  }

  /** Seals `payload` as one record at memory[at...); the bytes it took. */
  #record(memory: Uint8Array, at: number, payload: Uint8Array): number {
    if (this.#closed) throw new ChannelFailure("closed", "the channel is closed");
    new DataView(memory.buffer).setUint32(at, payload.length + AEAD_TAG_BYTES);
    memory.set(payload, at + 4);
    this.#seal.seal(memory, at, 4, at + 4, payload.length, this.#sendCounter++);
    return 4 + payload.length + AEAD_TAG_BYTES;
  }

  /** Closes the connection and frees the keys; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#stream.close();
    } catch {
      // Already closed.
    }
    this.#seal.close();
    this.#open.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The client's side of the handshake, over a fresh connection: sends the hello, checks the server's
 * proof, and sends its own. Throws ChannelRefused (the server's reason) or ChannelFailure; the stream is
 * the caller's to close then.
 */
export async function connectChannel(stream: ByteStream, key: Uint8Array): Promise<SecureChannel> {
  const own = ephemeralFrom(new Uint8Array(randomBytes(X25519_BYTES)));
  const hello = new Uint8Array(HELLO_BYTES);
  hello.set([...MAGIC, CHANNEL_VERSION]);
  hello.set(keyIdBytes(key), 4);
  hello.set(randomBytes(CHANNEL_NONCE_BYTES), 4 + KEY_ID_BYTES);
  hello.set(own.publicKey, 4 + KEY_ID_BYTES + CHANNEL_NONCE_BYTES);
  await writeAll(stream, hello);
  const reader = new Reader(stream);
  const start = await reader.exact(4);
  if (start === null) {
    throw new ChannelFailure("closed", "the server closed the connection without answering");
  }
  if (startsWith(start, REFUSAL_PREFIX)) throw new ChannelRefused(await reader.refusal(start));
  if (!startsWith(start, MAGIC)) {
    throw new ChannelFailure("protocol", "the server does not speak this protocol");
  }
  if (start[3] !== CHANNEL_VERSION) {
    throw new ChannelFailure("protocol", `the server speaks version ${start[3]}, not ${CHANNEL_VERSION}`);
  }
  const rest = await reader.exact(ANSWER_BYTES - 4);
  if (rest === null) throw new ChannelFailure("closed", "the connection ended in the middle of the answer");
  const answer = new Uint8Array(ANSWER_BYTES);
  answer.set(start);
  answer.set(rest, 4);
  const head = answer.subarray(0, ANSWER_BYTES - AEAD_TAG_BYTES);
  const serverPublic = answer.subarray(4 + CHANNEL_NONCE_BYTES, 4 + CHANNEL_NONCE_BYTES + X25519_BYTES);
  const keys = deriveKeys(key, own.privateKey, serverPublic, hello, head);
  own.privateKey.fill(0);
  if (!keys || !verifyProof(keys.serverToClient, answer)) {
    throw new ChannelFailure("unproven", "the server did not prove it holds the key");
  }
  const channel = new SecureChannel(
    stream,
    reader,
    { send: keys.clientToServer, receive: keys.serverToClient },
    { send: 0, receive: 1 },
    true,
  );
  try {
    await channel.writeEmpty();
  } catch (error) {
    channel.close();
    throw error;
  }
  return channel;
}

/** What the server's side of a handshake came to: a channel and the client's key, or why not. */
export type Accepted<K> = { channel: SecureChannel; entry: K; keyId: string } | {
  /** Why, for the log ("offered a key this daemon does not hold (key id ...)"). */
  refused: string;
  /** Whether a refusal line was sent (then the stream should linger before it is closed). */
  told: boolean;
  /** The client sent not one byte (a port scan, a probe of whether the port is open). */
  silent?: true;
};

/**
 * The server's side of the handshake: reads the hello, answers with its proof, and reads the client's
 * proof. A client that fails is sent a refusal line when it can use one; the stream is the caller's to
 * close then. Never throws for anything a client sends, nor for a stream closed under it.
 */
export async function acceptChannel<K extends { readonly key: Uint8Array }>(
  stream: ByteStream,
  keys: ReadonlyMap<string, K>,
): Promise<Accepted<K>> {
  const reader = new Reader(stream);
  const refuse = async (reason: string, refusal: string): Promise<Accepted<K>> => {
    try {
      await writeAll(stream, encoder.encode(`NOK ${refusal}\n`));
      return { refused: reason, told: true };
    } catch {
      return { refused: reason, told: false };
    }
  };
  try {
    const start = await reader.exact(4);
    if (start === null) {
      return { refused: "closed the connection without a hello", told: false, silent: true };
    }
    if (!startsWith(start, MAGIC)) {
      return await refuse(
        "sent something that is not a vela remote control hello",
        "this port speaks vela's encrypted remote control only (vela ... --remote HOST --key-file FILE)",
      );
    }
    if (start[3] !== CHANNEL_VERSION) {
      return await refuse(
        `asked for remote control version ${start[3]}`,
        `remote control version ${start[3]} is not spoken here, only ${CHANNEL_VERSION}`,
      );
    }
    const rest = await reader.exact(HELLO_BYTES - 4);
    if (rest === null) return { refused: "closed the connection in the middle of its hello", told: false };
    const hello = new Uint8Array(HELLO_BYTES);
    hello.set(start);
    hello.set(rest, 4);
    const keyId = hex(hello.subarray(4, 4 + KEY_ID_BYTES));
    const entry = keys.get(keyId);
    if (!entry) return await refuse(`offered a key this daemon does not hold (key id ${keyId})`, KEY_REFUSED);
    const clientPublic = hello.subarray(HELLO_BYTES - X25519_BYTES);
    const own = ephemeralFrom(new Uint8Array(randomBytes(X25519_BYTES)));
    const answer = new Uint8Array(ANSWER_BYTES);
    answer.set([...MAGIC, CHANNEL_VERSION]);
    answer.set(randomBytes(CHANNEL_NONCE_BYTES), 4);
    answer.set(own.publicKey, 4 + CHANNEL_NONCE_BYTES);
    const head = answer.subarray(0, ANSWER_BYTES - AEAD_TAG_BYTES);
    const derived = deriveKeys(entry.key, own.privateKey, clientPublic, hello, head);
    own.privateKey.fill(0);
    if (!derived) return await refuse("sent an ephemeral key of low order", "a bad ephemeral key");
    answer.set(proof(derived.serverToClient, head), head.length);
    await writeAll(stream, answer);
    let proven: boolean;
    {
      using open = new AeadContext(CIPHER, derived.clientToServer, "open");
      try {
        const confirmation = await readRecord(reader, () => open, 0, false);
        if (confirmation === null) {
          return { refused: `closed the connection before it proved its key (key id ${keyId})`, told: false };
        }
        proven = confirmation.length === 0;
      } catch (error) {
        if (error instanceof ChannelFailure && error.kind === "closed") throw error;
        // A record that does not open, or of a wrong size: the client does not hold the key.
        proven = false;
      }
    }
    if (!proven) {
      derived.clientToServer.fill(0);
      derived.serverToClient.fill(0);
      return await refuse(
        `failed to prove it holds the key (key id ${keyId}): a wrong key, or a replayed session`,
        KEY_REFUSED,
      );
    }
    const channel = new SecureChannel(
      stream,
      reader,
      { send: derived.serverToClient, receive: derived.clientToServer },
      { send: 1, receive: 1 },
      false,
    );
    return { channel, entry, keyId };
  } catch (error) {
    return { refused: `broke off the handshake: ${(error as Error).message}`, told: false };
  }
}
