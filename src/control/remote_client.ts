/**
 * The client side of remote control, for `vela status --remote HOST[:PORT] --key-file FILE` and the
 * other subcommands: commands over the secure channel of secure_channel.ts to a daemon's
 * --control-listen port, and their whole replies, as sendControl() gives them from the control socket.
 * One RemoteControlSession carries any number of commands (vela top, and vela connect's polling, use one
 * connection and one handshake); sendRemoteControl() is one command on a session of its own.
 */

import { completeReply } from "./protocol.ts";
import { RuntimeFailure } from "../errors.ts";
import { LibcryptoMissing } from "../../ffi/libcrypto.ts";
import {
  ChannelFailure,
  ChannelRefused,
  connectChannel,
  KEY_REFUSED,
  type SecureChannel,
} from "./secure_channel.ts";
import { endpoint } from "./remote_server.ts";

import { CONTROL_REPLY_MS } from "../timing.ts";

/** The session was closed by the daemon between commands (it cuts a client off after CONTROL_COMMAND_MS idle). */
export class SessionEnded extends RuntimeFailure {
  constructor(message: string) {
    super(message);
    this.name = "SessionEnded";
  }
}

/** One proven connection to a daemon's remote control port. */
export class RemoteControlSession implements Disposable {
  readonly where: string;
  readonly #conn: Deno.TcpConn;
  readonly #channel: SecureChannel;
  readonly #replyMs: number;
  readonly #decoder = new TextDecoder();
  #closed = false;

  private constructor(conn: Deno.TcpConn, channel: SecureChannel, where: string, replyMs: number) {
    this.#conn = conn;
    this.#channel = channel;
    this.where = where;
    this.#replyMs = replyMs;
  }

  /**
   * Connects to `address` and proves `key`, all within replyMs (default CONTROL_REPLY_MS). Throws
   * RuntimeFailure with one sentence (not reachable, no daemon there, the key refused, ...).
   */
  static async open(
    address: { hostname: string; port: number },
    key: Uint8Array,
    options: { replyMs?: number } = {},
  ): Promise<RemoteControlSession> {
    const replyMs = options.replyMs ?? CONTROL_REPLY_MS;
    const where = endpoint(address.hostname, address.port);
    let conn: Deno.TcpConn | undefined;
    let timedOut = false;
    let expire!: () => void;
    const late = new Promise<"late">((resolve) => expire = () => resolve("late"));
    const timer = setTimeout(() => {
      timedOut = true;
      closeQuietly(undefined, conn);
      expire();
    }, replyMs);
    try {
      const connecting = Deno.connect({ transport: "tcp", hostname: address.hostname, port: address.port });
      let connected: Deno.TcpConn | "late";
      try {
        connected = await Promise.race([connecting, late]);
      } catch (error) {
        throw new RuntimeFailure(explainConnect(error, address.hostname, where), { cause: error });
      }
      if (connected === "late") {
        connecting.then((c) => c.close(), () => undefined);
        throw noAnswer(where, replyMs);
      }
      conn = connected;
      // The proof of the key and the command go in two writes: Nagle would hold the second for an ACK.
      conn.setNoDelay(true);
      const channel = await connectChannel(conn, key);
      return new RemoteControlSession(conn, channel, where, replyMs);
    } catch (error) {
      closeQuietly(undefined, conn);
      if (error instanceof RuntimeFailure) throw error;
      if (timedOut) throw noAnswer(where, replyMs);
      throw new RuntimeFailure(explainFailure(error, where), { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends one command line and returns its whole reply (all its lines), within replyMs. Throws
   * SessionEnded when the daemon had closed the connection before the command (nothing of it ran), and
   * RuntimeFailure otherwise; either way the session is closed then.
   */
  async send(line: string): Promise<string> {
    if (this.#closed) throw new SessionEnded(`The connection to ${this.where} is closed`);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.close();
    }, this.#replyMs);
    let text = "";
    try {
      await this.#channel.write(new TextEncoder().encode(line + "\n"));
      for (;;) {
        const reply = completeReply(text);
        if (reply !== undefined) return reply;
        const record = await this.#channel.read();
        if (record === null) {
          const message = `The daemon on ${this.where} closed the connection without a full reply`;
          throw text === "" ? new SessionEnded(message) : new RuntimeFailure(message);
        }
        text += this.#decoder.decode(record, { stream: true });
      }
    } catch (error) {
      this.close();
      if (error instanceof RuntimeFailure) throw error;
      if (timedOut) throw noAnswer(this.where, this.#replyMs);
      const gone = (error instanceof ChannelFailure && error.kind === "closed") ||
        error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset;
      if (gone && text === "") {
        throw new SessionEnded(explainFailure(error, this.where));
      }
      throw new RuntimeFailure(explainFailure(error, this.where), { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#channel, this.#conn);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Sends one command line to the daemon at `address`, proving `key`, and returns the whole reply (all its
 * lines). Connecting and the reply have replyMs each. Throws RuntimeFailure with one sentence.
 */
export async function sendRemoteControl(
  address: { hostname: string; port: number },
  key: Uint8Array,
  line: string,
  options: { replyMs?: number } = {},
): Promise<string> {
  using session = await RemoteControlSession.open(address, key, options);
  return await session.send(line);
}

function noAnswer(where: string, replyMs: number): RuntimeFailure {
  return new RuntimeFailure(
    `No answer from the daemon on ${where} within ${replyMs / 1000} s; is ${where} reachable?`,
  );
}

function explainConnect(error: unknown, hostname: string, where: string): string {
  if (error instanceof Deno.errors.ConnectionRefused) {
    return `No vela daemon listens for remote control on ${where}; start it with --control-listen, or give its port`;
  }
  const message = (error as Error).message;
  if (/lookup address|Name or service not known|No address associated/i.test(message)) {
    return `Cannot find the host ${hostname}: ${message}`;
  }
  if (error instanceof Deno.errors.TimedOut) return `No answer from ${where}; is it reachable?`;
  return `Cannot reach ${where}: ${message}`;
}

function explainFailure(error: unknown, where: string): string {
  if (error instanceof ChannelRefused) {
    if (error.reason === KEY_REFUSED) return `The daemon on ${where} refused the key`;
    return `The daemon on ${where} refused remote control: ${error.reason}`;
  }
  if (error instanceof ChannelFailure) {
    switch (error.kind) {
      case "protocol":
        return `${where} does not speak vela's remote control (${error.message}); is it a daemon's --control-listen port?`;
      case "unproven":
        return `The daemon on ${where} did not prove it holds the key; something between here and there may tamper with the connection`;
      case "tampered":
      case "oversized":
        return `A reply from ${where} did not verify (${error.message}); something between here and there may tamper with the connection`;
      case "closed":
        return `The daemon on ${where} closed the connection without a full reply`;
    }
  }
  if (error instanceof LibcryptoMissing) return `Remote control: ${error.message}`;
  return `Remote control with ${where} failed: ${(error as Error).message}`;
}

function closeQuietly(channel: SecureChannel | undefined, conn: Deno.Conn | undefined): void {
  if (channel) {
    channel.close();
    return;
  }
  try {
    conn?.close();
  } catch {
    // Already closed.
  }
}
