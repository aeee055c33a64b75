/**
 * The secure channel of remote control over loopback TCP: both sides of the handshake, records, and what
 * an attacker on the path (altered, replayed, oversized, garbage bytes) or without the key gets.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { ephemeralFrom } from "../../src/crypto/handshake.ts";
import {
  acceptChannel,
  type Accepted,
  ANSWER_BYTES,
  ChannelFailure,
  ChannelRefused,
  connectChannel,
  HELLO_BYTES,
  indexKeys,
  KEY_REFUSED,
  keyIdOf,
  MAX_RECORD_BYTES,
  MAX_RECORD_PAYLOAD,
} from "../../src/control/secure_channel.ts";
import { closeQuietly, readToEnd, Tap, writeAll } from "./conn_support.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ADMIN = new Uint8Array(randomBytes(32));
const READER = new Uint8Array(randomBytes(32));
const STRANGER = new Uint8Array(randomBytes(32));
const KEYS = indexKeys([{ key: ADMIN, access: "admin" }, { key: READER, access: "read" }]);

type Entry = { key: Uint8Array; access: string };

/** A connected pair of loopback TCP connections. */
async function tcpPair(): Promise<{ client: Deno.TcpConn; server: Deno.TcpConn }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  return { client, server };
}

Deno.test("connectChannel and acceptChannel carry records both ways, a large write in several", async () => {
  const { client, server } = await tcpPair();
  const [clientChannel, accepted] = await Promise.all([
    connectChannel(client, ADMIN),
    acceptChannel(server, KEYS),
  ]);
  assert.ok("channel" in accepted, JSON.stringify(accepted));
  assert.equal(accepted.entry.access, "admin");
  assert.equal(accepted.keyId, keyIdOf(ADMIN));
  const serverChannel = accepted.channel;
  try {
    await clientChannel.write(encoder.encode("STATUS?\n"));
    assert.equal(decoder.decode((await serverChannel.read())!), "STATUS?\n");
    const big = new Uint8Array(2 * MAX_RECORD_PAYLOAD + 100).map((_, i) => i & 0xff);
    await serverChannel.write(big);
    const parts: Uint8Array[] = [];
    let got = 0;
    while (got < big.length) {
      const part = (await clientChannel.read())!;
      assert.ok(part.length <= MAX_RECORD_PAYLOAD);
      parts.push(part);
      got += part.length;
    }
    assert.equal(parts.length, 3);
    assert.deepEqual(new Uint8Array(parts.flatMap((p) => [...p])), big);
    clientChannel.close();
    assert.equal(await serverChannel.read(), null, "a clean end between records reads as null");
  } finally {
    clientChannel.close();
    serverChannel.close();
  }
});

Deno.test("acceptChannel gives the entry of the read key to a client that proves it", async () => {
  const { client, server } = await tcpPair();
  const [clientChannel, accepted] = await Promise.all([
    connectChannel(client, READER),
    acceptChannel(server, KEYS),
  ]);
  clientChannel.close();
  assert.ok("channel" in accepted);
  accepted.channel.close();
  assert.equal(accepted.entry.access, "read");
});

Deno.test("acceptChannel refuses a key it does not hold, and the client hears why", async () => {
  const { client, server } = await tcpPair();
  const [clientResult, accepted] = await Promise.all([
    connectChannel(client, STRANGER).catch((error) => error),
    acceptChannel(server, KEYS),
  ]);
  closeQuietly(client);
  closeQuietly(server);
  assert.ok(clientResult instanceof ChannelRefused, String(clientResult));
  assert.equal(clientResult.reason, KEY_REFUSED);
  assert.ok("refused" in accepted);
  assert.ok(accepted.told);
  assert.match(accepted.refused, new RegExp(`does not hold \\(key id ${keyIdOf(STRANGER)}\\)`));
});

Deno.test("acceptChannel refuses the bytes of a recorded session replayed on a new connection", async () => {
  const first = await tcpPair();
  const tap = new Tap(first.client);
  const [clientChannel, accepted] = await Promise.all([
    connectChannel(tap, ADMIN),
    acceptChannel(first.server, KEYS),
  ]);
  assert.ok("channel" in accepted);
  await clientChannel.write(encoder.encode("CLOSE 198.18.0.2 5\n"));
  assert.equal(decoder.decode((await accepted.channel.read())!), "CLOSE 198.18.0.2 5\n");
  clientChannel.close();
  accepted.channel.close();

  const second = await tcpPair();
  await writeAll(second.client, new Uint8Array(tap.sent));
  const replayed = await acceptChannel(second.server, KEYS);
  assert.ok("refused" in replayed, "the replayed proof does not open under the new keys");
  assert.match(replayed.refused, /failed to prove it holds the key/);
  closeQuietly(second.server);
  const answer = await readToEnd(second.client);
  closeQuietly(second.client);
  assert.equal(answer.length > ANSWER_BYTES, true);
  assert.equal(decoder.decode(answer.subarray(ANSWER_BYTES)), `NOK ${KEY_REFUSED}\n`);
});

Deno.test("a flipped bit in a record makes it fail, and the channel stays failed", async () => {
  const { client, server } = await tcpPair();
  // The hello, the proof record (4 + 16 bytes), then the command record's header: flip its payload.
  const target = HELLO_BYTES + 20 + 4 + 1;
  const tap = new Tap(client, (bytes, offset) => {
    if (offset <= target && target < offset + bytes.length) bytes[target - offset] ^= 0x08;
  });
  const [clientChannel, accepted] = await Promise.all([
    connectChannel(tap, ADMIN),
    acceptChannel(server, KEYS),
  ]);
  assert.ok("channel" in accepted);
  try {
    await clientChannel.write(encoder.encode("CLOSE 198.18.0.2 5\n"));
    await clientChannel.write(encoder.encode("STATUS?\n"));
    const failure = await accepted.channel.read().catch((error) => error);
    assert.ok(failure instanceof ChannelFailure && failure.kind === "tampered", String(failure));
    const again = await accepted.channel.read().catch((error) => error);
    assert.equal(again, failure, "no record after a failed one is read");
  } finally {
    clientChannel.close();
    accepted.channel.close();
  }
});

Deno.test("a record longer than MAX_RECORD_BYTES is refused before it is read", async () => {
  const { client, server } = await tcpPair();
  const [clientChannel, accepted] = await Promise.all([
    connectChannel(client, ADMIN),
    acceptChannel(server, KEYS),
  ]);
  assert.ok("channel" in accepted);
  try {
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, MAX_RECORD_BYTES + 1);
    await writeAll(client, header);
    const failure = await accepted.channel.read().catch((error) => error);
    assert.ok(failure instanceof ChannelFailure && failure.kind === "oversized", String(failure));
  } finally {
    clientChannel.close();
    accepted.channel.close();
  }
});

/** What acceptChannel makes of `bytes` sent by a client that then hangs up (or not), and what it answers. */
async function acceptOf(
  bytes: Uint8Array,
  hangUp = true,
): Promise<{ accepted: Accepted<Entry>; answer: string }> {
  const { client, server } = await tcpPair();
  await writeAll(client, bytes);
  if (hangUp) await client.closeWrite();
  const accepting = acceptChannel(server, KEYS);
  if (!hangUp) setTimeout(() => closeQuietly(server), 200);
  const accepted = await accepting;
  closeQuietly(server);
  const answer = decoder.decode(await readToEnd(client));
  closeQuietly(client);
  return { accepted, answer };
}

Deno.test("acceptChannel answers garbage and truncated hellos without throwing", async () => {
  const hello = (version = 1, key = ADMIN) => {
    const bytes = new Uint8Array(HELLO_BYTES);
    bytes.set([0x56, 0x52, 0x43, version]);
    bytes.set(Buffer.from(keyIdOf(key), "hex"), 4);
    return bytes;
  };
  const cases: { name: string; bytes: Uint8Array; hangUp?: boolean; refused: RegExp; answer: RegExp }[] = [
    { name: "nothing", bytes: new Uint8Array(0), refused: /without a hello/, answer: /^$/ },
    { name: "a clear command", bytes: encoder.encode("STATUS?\n"), refused: /not a vela/, answer: /^NOK / },
    { name: "random bytes", bytes: new Uint8Array(randomBytes(500)), refused: /not a vela/, answer: /^NOK / },
    { name: "two bytes", bytes: new Uint8Array([0x56, 0x52]), refused: /broke off/, answer: /^$/ },
    { name: "half a hello", bytes: hello().subarray(0, 40), refused: /broke off/, answer: /^$/ },
    {
      name: "half a hello, then silence",
      bytes: hello().subarray(0, 40),
      hangUp: false,
      refused: /broke off/,
      answer: /^$/,
    },
    { name: "version 2", bytes: hello(2), refused: /version 2/, answer: /^NOK remote control version 2/ },
    {
      name: "an unknown key id",
      bytes: hello(1, STRANGER),
      refused: /does not hold/,
      answer: /^NOK the daemon/,
    },
    // The right key id with an all-zero ephemeral (a low-order point): no keys can be made.
    { name: "a low-order ephemeral", bytes: hello(), refused: /low order/, answer: /^NOK a bad ephemeral/ },
  ];
  for (const c of cases) {
    const { accepted, answer } = await acceptOf(c.bytes, c.hangUp ?? true);
    assert.ok("refused" in accepted, c.name);
    assert.match(accepted.refused, c.refused, c.name);
    assert.match(answer, c.answer, c.name);
  }
  // A hello with a good ephemeral and no proof after it: the answer comes, then nothing is accepted.
  const { client } = await tcpPair().then(async (pair) => {
    const accepting = acceptChannel(pair.server, KEYS);
    const own = new Uint8Array(randomBytes(32));
    const bytes = hello();
    bytes.set(ephemeralFrom(own).publicKey, HELLO_BYTES - 32);
    await writeAll(pair.client, bytes);
    await pair.client.closeWrite();
    const accepted = await accepting;
    closeQuietly(pair.server);
    assert.ok("refused" in accepted);
    assert.match(accepted.refused, /before it proved its key/);
    return pair;
  });
  assert.equal((await readToEnd(client)).length, ANSWER_BYTES);
  closeQuietly(client);
});

Deno.test("connectChannel refuses a server that does not prove the key, and one that is not a daemon", async () => {
  for (
    const [name, reply, kind] of [
      ["an answer without the magic", new Uint8Array(ANSWER_BYTES).fill(7), "protocol"],
      [
        "an answer with a wrong proof",
        (() => {
          const a = new Uint8Array(randomBytes(ANSWER_BYTES));
          a.set([0x56, 0x52, 0x43, 1]);
          return a;
        })(),
        "unproven",
      ],
      ["an SSH server", encoder.encode("SSH-2.0-OpenSSH_9.6\r\n"), "protocol"],
      ["nothing", new Uint8Array(0), "closed"],
    ] as const
  ) {
    const { client, server } = await tcpPair();
    const serving = (async () => {
      const hello = new Uint8Array(HELLO_BYTES);
      let got = 0;
      while (got < HELLO_BYTES) got += (await server.read(hello.subarray(got)))!;
      await writeAll(server, reply);
      server.close();
    })();
    const result = await connectChannel(client, ADMIN).catch((error) => error);
    await serving;
    closeQuietly(client);
    assert.ok(result instanceof ChannelFailure, `${name}: ${result}`);
    assert.equal(result.kind, kind, name);
  }
});

Deno.test("indexKeys refuses a key of the wrong length and the same key twice", () => {
  assert.throws(() => indexKeys([{ key: new Uint8Array(16) }]), /32 bytes, not 16/);
  assert.throws(() => indexKeys([{ key: ADMIN }, { key: ADMIN.slice() }]), /given twice/);
  assert.equal(keyIdOf(ADMIN), keyIdOf(ADMIN.slice()));
  assert.notEqual(keyIdOf(ADMIN), keyIdOf(READER));
  assert.match(keyIdOf(ADMIN), /^[0-9a-f]{16}$/);
});
