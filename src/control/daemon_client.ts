/**
 * How a client command (status, top, devices, connect, close, showconf) reaches its daemon: the control
 * socket on this host, or --remote HOST[:PORT] with --key-file. Both carry the same command lines and
 * replies; a remote client keeps one session (one handshake) for all the commands it sends.
 */

import type { ControlTarget } from "../cli.ts";
import { RuntimeFailure } from "../errors.ts";
import { KeyError, readKeyFile } from "../keys.ts";
import { sendControl } from "./client.ts";
import { endpoint } from "./remote_server.ts";
import { RemoteControlSession, SessionEnded } from "./remote_client.ts";

export interface DaemonClient extends Disposable {
  /** The socket path, or HOST:PORT. */
  readonly where: string;
  /** One command line; the whole reply. Throws RuntimeFailure with one sentence. */
  send(line: string): Promise<string>;
  /** Safe to call twice. */
  close(): void;
}

/** A client for `target`; `warn` gets a key file's warning (open to other users). */
export function daemonClient(target: ControlTarget, warn: (text: string) => void): DaemonClient {
  if ("path" in target) {
    return {
      where: target.path,
      send: (line) => sendControl(target.path, line),
      close: () => undefined,
      [Symbol.dispose]: () => undefined,
    };
  }
  return new RemoteClient(target.remote, target.keyFile, warn);
}

class RemoteClient implements DaemonClient {
  readonly where: string;
  readonly #address: { hostname: string; port: number };
  readonly #keyFile: string;
  readonly #warn: (text: string) => void;
  #key: Uint8Array | undefined;
  #session: RemoteControlSession | undefined;
  #closed = false;

  constructor(address: { hostname: string; port: number }, keyFile: string, warn: (text: string) => void) {
    this.#address = address;
    this.#keyFile = keyFile;
    this.#warn = warn;
    this.where = endpoint(address.hostname, address.port);
  }

  async send(line: string): Promise<string> {
    if (this.#closed) throw new RuntimeFailure(`The connection to ${this.where} is closed`);
    const reused = this.#session !== undefined;
    try {
      return await (await this.#open()).send(line);
    } catch (error) {
      this.#session = undefined;
      // The daemon ends a session idle for a while (vela top --interval 60): nothing of the command
      // ran, so it goes again on a new one.
      if (!(error instanceof SessionEnded) || !reused) throw error;
      return await (await this.#open()).send(line);
    }
  }

  async #open(): Promise<RemoteControlSession> {
    if (this.#session) return this.#session;
    this.#key ??= this.#readKey();
    this.#session = await RemoteControlSession.open(this.#address, this.#key);
    return this.#session;
  }

  #readKey(): Uint8Array {
    try {
      const read = readKeyFile(this.#keyFile);
      if (read.warning) this.#warn(read.warning);
      return read.key;
    } catch (error) {
      if (error instanceof KeyError) throw new RuntimeFailure(error.message);
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#session?.close();
    this.#session = undefined;
    this.#key?.fill(0);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
