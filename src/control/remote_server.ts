/**
 * Remote control: the control protocol from other hosts over TCP, for a daemon started with
 * --control-listen ADDR:PORT, inside the secure channel of secure_channel.ts (a pre-shared key, a fresh
 * X25519 exchange per connection, sealed records). Off unless listen() is called. Once a client's key is
 * proven, its command lines go to the same one handler as the control socket's, with the access of the key
 * it proved ("admin" or "read"); the handler decides what read access may do.
 *
 * What it survives, before any key is looked at: each source address (an IPv6 one by its /64) may open
 * REMOTE_CONTROL_RATE_PER_SECOND connections a second (a burst of REMOTE_CONTROL_BURST), at most
 * maxClients are served at once and maxClientsPerAddress from one source; a handshake not done within
 * REMOTE_CONTROL_HANDSHAKE_MS is cut off, and then each command has CONTROL_COMMAND_MS as on the socket.
 * A client refused (a key this daemon does not hold, a proof that fails, a hello that is not one, a
 * limit) gets one "NOK <reason>" line in clear, is given REMOTE_CONTROL_LINGER_MS to read it, and the
 * refusal is logged with its source address (at most so many lines a second, the rest counted). A record
 * that does not verify after the handshake ends its connection; nothing is run for it.
 */

import { logger } from "../log.ts";
import { AcceptRetry } from "./accept_retry.ts";
import { closeQuietly, writeAllTo, writeWithin } from "./conn_io.ts";
import { type ControlAccess, MAX_COMMAND_LENGTH, nok } from "./protocol.ts";
import { RuntimeFailure } from "../errors.ts";
import { RateLimiter } from "../keys.ts";
import { formatIp, parseIp, unmapIPv4 } from "../ip.ts";
import { LibcryptoMissing, loadLibcrypto } from "../../ffi/libcrypto.ts";
import { acceptChannel, type Accepted, ChannelFailure, indexKeys, SecureChannel } from "./secure_channel.ts";
import { MAX_CONTROL_CLIENTS } from "./server.ts";

import {
  CONTROL_COMMAND_MS,
  CONTROL_WRITE_MS,
  REMOTE_CONTROL_BURST,
  REMOTE_CONTROL_HANDSHAKE_MS,
  REMOTE_CONTROL_LINGER_MS,
  REMOTE_CONTROL_RATE_PER_SECOND,
  REMOTE_CONTROL_REFUSAL_LOG_BURST,
  REMOTE_CONTROL_REFUSAL_LOGS_PER_SECOND,
} from "../timing.ts";

/** A key remote clients may prove, and what it lets them do. */
export interface RemoteControlKey {
  readonly key: Uint8Array;
  readonly access: ControlAccess;
}

/** Answers one command line of a client that proved a key with `access`. */
export type RemoteControlHandler = (line: string, access: ControlAccess) => Promise<string>;

/** Remote clients served at once, as on the control socket, and from one source address. */
export const MAX_REMOTE_CONTROL_CLIENTS = MAX_CONTROL_CLIENTS;
export const MAX_REMOTE_CONTROL_CLIENTS_PER_ADDRESS = 4;
/** Refused connections given time to read their refusal at once; more are closed straight away. */
const MAX_LINGERING = 64;
/** What a refused client may still send while it lingers before it is cut off. */
const MAX_LINGER_BYTES = 2 * 65536;

/** The times and limits of a remote control server (the timing.ts constants unless a test changes them). */
export interface RemoteControlOptions {
  handshakeMs: number;
  commandMs: number;
  writeMs: number;
  lingerMs: number;
  maxClients: number;
  maxClientsPerAddress: number;
  ratePerSecond: number;
  burst: number;
}

const DEFAULT_OPTIONS: RemoteControlOptions = {
  handshakeMs: REMOTE_CONTROL_HANDSHAKE_MS,
  commandMs: CONTROL_COMMAND_MS,
  writeMs: CONTROL_WRITE_MS,
  lingerMs: REMOTE_CONTROL_LINGER_MS,
  maxClients: MAX_REMOTE_CONTROL_CLIENTS,
  maxClientsPerAddress: MAX_REMOTE_CONTROL_CLIENTS_PER_ADDRESS,
  ratePerSecond: REMOTE_CONTROL_RATE_PER_SECOND,
  burst: REMOTE_CONTROL_BURST,
};

export class RemoteControlServer implements AsyncDisposable {
  /** The address listened on, and the port (the one chosen when 0 was asked for). */
  readonly hostname: string;
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  readonly #keys: Map<string, RemoteControlKey>;
  readonly #handler: RemoteControlHandler;
  readonly #options: RemoteControlOptions;
  readonly #log = logger("control");
  readonly #rate: RateLimiter;
  readonly #refusalLogs = new RateLimiter({
    ratePerSecond: REMOTE_CONTROL_REFUSAL_LOGS_PER_SECOND,
    burst: REMOTE_CONTROL_REFUSAL_LOG_BURST,
  });
  /** Every open connection (clients and refused ones lingering), for close(). */
  readonly #conns = new Set<Deno.Conn>();
  /** Clients served (in their handshake or after), in all and by source. */
  #clients = 0;
  readonly #bySource = new Map<string, number>();
  #lingering = 0;
  /** The work under way for each connection, which close() waits for. */
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #closed = false;
  /** Settles at close(), so that a command still running does not hold close() up. */
  readonly #closing: Promise<undefined>;
  #signalClosing!: () => void;
  readonly #acceptRetry = new AcceptRetry();
  #unlogged = 0;
  /** Connections refused at the rate limit, at the client caps, and at the handshake. */
  rateLimited = 0;
  refusedClients = 0;
  refusedHandshakes = 0;
  /** Connections ended by a record that did not verify (or was over the size limit) after the handshake. */
  brokenRecords = 0;
  /** accept() failures (each retried). */
  get acceptErrors(): number {
    return this.#acceptRetry.failures;
  }

  private constructor(
    listener: Deno.TcpListener,
    keys: Map<string, RemoteControlKey>,
    handler: RemoteControlHandler,
    options: RemoteControlOptions,
  ) {
    this.#listener = listener;
    this.hostname = listener.addr.hostname;
    this.port = listener.addr.port;
    this.#keys = keys;
    this.#handler = handler;
    this.#options = options;
    this.#rate = new RateLimiter({ ratePerSecond: options.ratePerSecond, burst: options.burst });
    this.#closing = new Promise<undefined>((resolve) => this.#signalClosing = () => resolve(undefined));
    this.#accepting = this.#accept();
  }

  /**
   * Listens on `address` for clients that prove one of `keys`. Throws RuntimeFailure when there is no
   * key, a key is not a key or given twice, libcrypto is missing, or the address cannot be listened on.
   */
  static listen(
    address: { hostname: string; port: number },
    keys: readonly RemoteControlKey[],
    handler: RemoteControlHandler,
    options: Partial<RemoteControlOptions> = {},
  ): Promise<RemoteControlServer> {
    try {
      return Promise.resolve(RemoteControlServer.#open(address, keys, handler, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  static #open(
    address: { hostname: string; port: number },
    keys: readonly RemoteControlKey[],
    handler: RemoteControlHandler,
    options: Partial<RemoteControlOptions>,
  ): RemoteControlServer {
    const where = endpoint(address.hostname, address.port);
    if (keys.length === 0) {
      throw new RuntimeFailure(`Remote control on ${where} needs a key; give it --key-file`);
    }
    let index: Map<string, RemoteControlKey>;
    try {
      index = indexKeys(keys);
    } catch (error) {
      throw new RuntimeFailure(`Cannot listen for remote control on ${where}: ${(error as Error).message}`);
    }
    try {
      loadLibcrypto();
    } catch (error) {
      if (error instanceof LibcryptoMissing) throw new RuntimeFailure(`Remote control: ${error.message}`);
      throw error;
    }
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ transport: "tcp", hostname: address.hostname, port: address.port });
    } catch (error) {
      throw new RuntimeFailure(
        `Cannot listen for remote control on ${where}: ${explainListen(error, address)}`,
      );
    }
    return new RemoteControlServer(listener, index, handler, { ...DEFAULT_OPTIONS, ...options });
  }

  /** Accepts until close(); a failed accept() is logged (at most once per interval) and tried again. */
  async #accept(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        await this.#acceptRetry.failed((failures) =>
          this.#log.warn(
            `Remote control could not accept a client: ${
              (error as Error).message
            }; trying again (${failures} failures so far)`,
          )
        );
        continue;
      }
      this.#acceptRetry.succeeded();
      if (this.#closed) {
        closeQuietly(conn);
        return;
      }
      this.#admit(conn);
    }
  }

  /** Serves a new connection, or refuses it over the rate or a cap. */
  #admit(conn: Deno.TcpConn): void {
    const remote = conn.remoteAddr;
    const peer = endpoint(remote.hostname, remote.port);
    const source = sourceOf(remote.hostname);
    this.#conns.add(conn);
    try {
      // The client's proof and its command come in two writes: Nagle would hold the second for an ACK.
      conn.setNoDelay(true);
    } catch {
      // Gone already; the handshake finds out.
    }
    if (!this.#rate.allow(source, performance.now())) {
      this.rateLimited++;
      this.#refuse(
        conn,
        "too many connections from your address; wait a few seconds",
        `Remote control from ${peer} refused: over ${this.#options.ratePerSecond} connections a second from ${source}`,
      );
      return;
    }
    const fromSource = this.#bySource.get(source) ?? 0;
    if (this.#clients >= this.#options.maxClients || fromSource >= this.#options.maxClientsPerAddress) {
      this.refusedClients++;
      const cap = this.#clients >= this.#options.maxClients
        ? `${this.#options.maxClients} clients are served already`
        : `${fromSource} clients from ${source} are served already`;
      this.#refuse(conn, "too many remote control clients", `Remote control from ${peer} refused: ${cap}`);
      return;
    }
    this.#clients++;
    this.#bySource.set(source, fromSource + 1);
    this.#track(
      this.#serve(conn, peer).finally(() => {
        this.#clients--;
        const left = (this.#bySource.get(source) ?? 1) - 1;
        if (left > 0) this.#bySource.set(source, left);
        else this.#bySource.delete(source);
      }),
      conn,
    );
  }

  /** Keeps `task` until it settles, then forgets `conn` and closes it. */
  #track(task: Promise<void>, conn: Deno.Conn): void {
    const tracked: Promise<void> = task.catch((error) => {
      this.#log.error(`Remote control failed: ${(error as Error).message}`);
    }).finally(() => {
      this.#tasks.delete(tracked);
      this.#conns.delete(conn);
      closeQuietly(conn);
    });
    this.#tasks.add(tracked);
  }

  /** Tells a client why it is turned away (in clear), logs why, and lets it read that before closing. */
  #refuse(conn: Deno.TcpConn, refusal: string, why: string): void {
    this.#logRefusal(why);
    if (this.#lingering >= MAX_LINGERING) {
      this.#conns.delete(conn);
      closeQuietly(conn);
      return;
    }
    this.#lingering++;
    this.#track(
      (async () => {
        if (
          await writeWithin(
            () => writeAllTo(conn, new TextEncoder().encode(nok(refusal) + "\n")),
            this.#options.lingerMs,
          )
        ) {
          await this.#linger(conn);
        }
      })().finally(() => this.#lingering--),
      conn,
    );
  }

  /**
   * After a refusal line: ends the sending side and reads what the client still sends until it hangs up
   * or lingerMs passes. Closing with its bytes unread would reset the connection, and a reset can make
   * the client lose the refusal before it reads it.
   */
  async #linger(conn: Deno.Conn): Promise<void> {
    const timer = setTimeout(() => closeQuietly(conn), this.#options.lingerMs);
    try {
      await conn.closeWrite();
      const sink = new Uint8Array(4096);
      let total = 0;
      while (total < MAX_LINGER_BYTES) {
        const n = await conn.read(sink);
        if (n === null) break;
        total += n;
      }
    } catch {
      // Closed by the timer or by the client.
    } finally {
      clearTimeout(timer);
    }
  }

  /** Logs a refusal, unless over the budget of refusal lines: those are counted in the next line logged. */
  #logRefusal(message: string): void {
    if (this.#closed) return;
    if (!this.#refusalLogs.allow("refusal", performance.now())) {
      this.#unlogged++;
      return;
    }
    const more = this.#unlogged > 0 ? ` (and ${this.#unlogged} more refusals not logged)` : "";
    this.#unlogged = 0;
    this.#log.warn(message + more);
  }

  /** One client: its handshake within handshakeMs, then its commands. */
  async #serve(conn: Deno.TcpConn, peer: string): Promise<void> {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      closeQuietly(conn);
    }, this.#options.handshakeMs);
    let accepted: Accepted<RemoteControlKey>;
    try {
      accepted = await acceptChannel(conn, this.#keys);
    } finally {
      clearTimeout(timer);
    }
    if ("refused" in accepted) {
      if (this.#closed) return;
      this.refusedHandshakes++;
      if (late) {
        this.#logRefusal(
          `Remote control from ${peer} refused: no handshake within ${this.#options.handshakeMs} ms`,
        );
        return;
      }
      if (accepted.silent) {
        // A port scan, or a probe of whether the port is open: nothing to tell anyone.
        this.#log.debug(`Remote control from ${peer}: ${accepted.refused}`);
        return;
      }
      this.#logRefusal(`Remote control from ${peer} refused: ${accepted.refused}`);
      if (accepted.told) await this.#linger(conn);
      return;
    }
    const { channel, entry, keyId } = accepted;
    try {
      if (this.#closed) return;
      this.#log.debug(`Remote control from ${peer} with the ${entry.access} key (key id ${keyId})`);
      await this.#commands(channel, entry.access, peer);
    } finally {
      channel.close();
    }
  }

  /**
   * A proven client's commands: each whole command line must arrive within commandMs of the handshake or
   * of the previous reply (a deadline that records trickling in do not move), or the client is cut off.
   */
  async #commands(channel: SecureChannel, access: ControlAccess, peer: string): Promise<void> {
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    let pending = "";
    let deadline: ReturnType<typeof setTimeout> | undefined;
    let late: Promise<"late"> = Promise.resolve("late");
    const startDeadline = () => {
      clearTimeout(deadline);
      late = new Promise<"late">((resolve) =>
        deadline = setTimeout(() => resolve("late"), this.#options.commandMs)
      );
    };
    const tooLong = async () => {
      const refusal = nok(`command longer than ${MAX_COMMAND_LENGTH} bytes`) + "\n";
      await writeWithin(() => channel.write(encoder.encode(refusal)), this.#options.writeMs);
    };
    startDeadline();
    try {
      for (;;) {
        let record: Uint8Array | null | "late";
        try {
          record = await Promise.race([channel.read(), late]);
        } catch (error) {
          if (error instanceof ChannelFailure && error.kind !== "closed" && !this.#closed) {
            this.brokenRecords++;
            this.#log.warn(`Remote control from ${peer}: ${error.message}; disconnected`);
          }
          return;
        }
        if (record === null || record === "late" || this.#closed) return;
        pending += decoder.decode(record, { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline).replace(/\r$/, "");
          pending = pending.slice(newline + 1);
          if (line.length > MAX_COMMAND_LENGTH) return await tooLong();
          const reply = await Promise.race([this.#answer(line, access), this.#closing]);
          if (reply === undefined || this.#closed) return;
          if (
            !(await writeWithin(() => channel.write(encoder.encode(reply + "\n")), this.#options.writeMs))
          ) return;
          startDeadline();
        }
        if (pending.length > MAX_COMMAND_LENGTH) return await tooLong();
      }
    } finally {
      clearTimeout(deadline);
    }
  }

  async #answer(line: string, access: ControlAccess): Promise<string> {
    try {
      return await this.#handler(line, access);
    } catch (error) {
      this.#log.error(`Control command failed: ${(error as Error).message}`);
      return nok("internal error");
    }
  }

  /** Stops listening and disconnects every client. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#signalClosing();
    this.#acceptRetry.wake();
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const conn of this.#conns) closeQuietly(conn);
    await this.#accepting;
    await Promise.all([...this.#tasks]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** "host:port", with brackets around an IPv6 address. */
export function endpoint(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** What the rate limit and the per-source cap count by: an IPv4 address, or an IPv6 one's /64. */
function sourceOf(hostname: string): string {
  const parsed = parseIp(hostname);
  if (!parsed) return hostname;
  const address = unmapIPv4(parsed);
  if (address.family === 4) return formatIp(address);
  const prefix = new Uint8Array(16);
  prefix.set(address.bytes.subarray(0, 8));
  return `${formatIp(prefix)}/64`;
}

function explainListen(error: unknown, address: { hostname: string; port: number }): string {
  if (error instanceof Deno.errors.AddrInUse) {
    return `port ${address.port} is in use; stop what holds it or choose another --control-listen port`;
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return `${address.hostname} is not an address of this host; give one of its addresses (or 0.0.0.0, ::) to --control-listen`;
  }
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable) {
    return `permission denied (a port below 1024 needs root)`;
  }
  return (error as Error).message;
}
