/**
 * The control socket: a Unix stream socket, root-only (mode 0600 in a 0700 directory), one command per
 * line, answered by a handler. Each client runs on its own; a slow or vanished one never holds up the
 * datapath or another client.
 */

import { logger } from "../log.ts";
import { MAX_COMMAND_LENGTH, nok } from "./protocol.ts";
import { RuntimeFailure } from "../errors.ts";

import { CONTROL_IDLE_MS, CONTROL_WRITE_MS } from "../timing.ts";

export type ControlHandler = (line: string) => Promise<string>;

export class ControlServer implements AsyncDisposable {
  readonly path: string;
  readonly #listener: Deno.UnixListener;
  readonly #clients = new Set<Deno.UnixConn>();
  readonly #handler: ControlHandler;
  readonly #accepting: Promise<void>;
  #closed = false;

  private constructor(path: string, listener: Deno.UnixListener, handler: ControlHandler) {
    this.path = path;
    this.#listener = listener;
    this.#handler = handler;
    this.#accepting = this.#accept();
  }

  /**
   * Listens on `path`: makes its directory (0700) if missing, replaces a stale socket file, refuses
   * when another daemon answers there. Throws RuntimeFailure.
   */
  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    const directory = path.slice(0, path.lastIndexOf("/")) || "/";
    try {
      Deno.mkdirSync(directory, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new RuntimeFailure(
        `Cannot make ${directory} for the control socket: ${(error as Error).message}`,
      );
    }
    let existing: Deno.FileInfo | undefined;
    try {
      existing = Deno.lstatSync(path);
    } catch {
      // No file: the usual case.
    }
    if (existing) {
      if (!existing.isSocket) {
        throw new RuntimeFailure(`${path} exists and is not a socket; remove it or choose --control`);
      }
      if (await answers(path)) {
        throw new RuntimeFailure(`Another vela daemon is listening on ${path}; stop it or choose --control`);
      }
      Deno.removeSync(path);
    }
    let listener: Deno.UnixListener;
    try {
      listener = Deno.listen({ transport: "unix", path });
      Deno.chmodSync(path, 0o600);
    } catch (error) {
      throw new RuntimeFailure(`Cannot listen on the control socket ${path}: ${(error as Error).message}`);
    }
    return new ControlServer(path, listener, handler);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // Closed.
      }
      this.#clients.add(conn);
      this.#serve(conn).finally(() => {
        this.#clients.delete(conn);
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      });
    }
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    const chunk = new Uint8Array(4096);
    let pending = "";
    for (;;) {
      let idle: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<null>((resolve) =>
        idle = setTimeout(() => resolve(null), CONTROL_IDLE_MS)
      );
      let n: number | null;
      try {
        n = await Promise.race([conn.read(chunk), timedOut]);
      } catch {
        n = null;
      } finally {
        clearTimeout(idle);
      }
      if (n === null || this.#closed) return;
      pending += decoder.decode(chunk.subarray(0, n), { stream: true });
      let newline: number;
      const tooLong = async () => {
        const refusal = nok(`command longer than ${MAX_COMMAND_LENGTH} bytes`) + "\n";
        await writeWithin(conn, encoder.encode(refusal), 1000);
      };
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline).replace(/\r$/, "");
        pending = pending.slice(newline + 1);
        if (line.length > MAX_COMMAND_LENGTH) return await tooLong();
        let reply: string;
        try {
          reply = await this.#handler(line);
        } catch (error) {
          logger("control").error(`Control command failed: ${(error as Error).message}`);
          reply = nok("internal error");
        }
        if (!(await writeWithin(conn, encoder.encode(reply + "\n"), CONTROL_WRITE_MS))) return;
      }
      if (pending.length > MAX_COMMAND_LENGTH) {
        return await tooLong();
      }
    }
  }

  /** Stops listening, disconnects the clients and removes the socket file. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const conn of this.#clients) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
    await this.#accepting;
    try {
      Deno.removeSync(this.path);
    } catch {
      // Gone already.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Writes all of `bytes`, or gives up (false) after `ms` or on an error. */
async function writeWithin(conn: Deno.Conn, bytes: Uint8Array, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  const write = (async () => {
    let offset = 0;
    while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
    return true;
  })().catch(() => false);
  try {
    return await Promise.race([write, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether something answers on the Unix socket `path`. */
async function answers(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}
