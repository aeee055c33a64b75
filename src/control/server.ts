/**
 * The control socket: a Unix stream socket, root-only (mode 0600 in a 0700 directory), one command per
 * line, answered by a handler. Each client runs on its own; a slow or vanished one never holds up the
 * datapath or another client. It survives what a busy host does to it: a failed accept() (out of file
 * descriptors) is logged and tried again with backoff, at most MAX_CONTROL_CLIENTS are served at once,
 * a client has CONTROL_COMMAND_MS for each whole command line however its bytes trickle in, and a socket
 * file left by a daemon that is gone (or still dying) is taken over at start.
 */

import { logger } from "../log.ts";
import { AcceptRetry } from "./accept_retry.ts";
import { closeQuietly, writeAllTo, writeWithin } from "./conn_io.ts";
import { MAX_COMMAND_LENGTH, nok } from "./protocol.ts";
import { RuntimeFailure } from "../errors.ts";

import { CONTROL_COMMAND_MS, CONTROL_PROBE_MS, CONTROL_TAKEOVER_MS, CONTROL_WRITE_MS } from "../timing.ts";

export type ControlHandler = (line: string) => Promise<string>;

/** Clients served at once; one more gets "NOK too many control clients" and is disconnected. */
export const MAX_CONTROL_CLIENTS = 16;

/** The times of a control server (the timing.ts constants unless a test makes them short). */
export interface ControlServerTimes {
  commandMs: number;
  probeMs: number;
  takeoverMs: number;
}

const DEFAULT_TIMES: ControlServerTimes = {
  commandMs: CONTROL_COMMAND_MS,
  probeMs: CONTROL_PROBE_MS,
  takeoverMs: CONTROL_TAKEOVER_MS,
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class ControlServer implements AsyncDisposable {
  readonly path: string;
  readonly #listener: Deno.UnixListener;
  readonly #clients = new Set<Deno.UnixConn>();
  readonly #handler: ControlHandler;
  readonly #accepting: Promise<void>;
  readonly #times: ControlServerTimes;
  readonly #log = logger("control");
  #closed = false;
  /** Ends the accept loop's backoff wait at close(). */
  readonly #acceptRetry = new AcceptRetry();
  /** Clients turned away over MAX_CONTROL_CLIENTS. */
  refusedClients = 0;
  /** accept() failures (each retried). */
  get acceptErrors(): number {
    return this.#acceptRetry.failures;
  }

  private constructor(
    path: string,
    listener: Deno.UnixListener,
    handler: ControlHandler,
    times: ControlServerTimes,
  ) {
    this.path = path;
    this.#listener = listener;
    this.#handler = handler;
    this.#times = times;
    this.#accepting = this.#accept();
  }

  /**
   * Listens on `path`: makes its directory (0700) if missing, replaces a stale socket file, refuses
   * when another daemon answers there (see claim()). Throws RuntimeFailure.
   */
  static async listen(
    path: string,
    handler: ControlHandler,
    times: Partial<ControlServerTimes> = {},
  ): Promise<ControlServer> {
    const settings = { ...DEFAULT_TIMES, ...times };
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
      await claim(path, settings);
      try {
        Deno.removeSync(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
    let listener: Deno.UnixListener;
    try {
      listener = Deno.listen({ transport: "unix", path });
      Deno.chmodSync(path, 0o600);
    } catch (error) {
      throw new RuntimeFailure(`Cannot listen on the control socket ${path}: ${(error as Error).message}`);
    }
    return new ControlServer(path, listener, handler, settings);
  }

  /** Accepts until close(); a failed accept() is logged (at most once per interval) and tried again. */
  async #accept(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        await this.#acceptRetry.failed((failures) =>
          this.#log.warn(
            `The control socket could not accept a client: ${
              (error as Error).message
            }; trying again (${failures} failures so far)`,
          )
        );
        continue;
      }
      this.#acceptRetry.succeeded();
      if (this.#clients.size >= MAX_CONTROL_CLIENTS) {
        this.refusedClients++;
        void refuseClient(conn);
        continue;
      }
      this.#clients.add(conn);
      this.#serve(conn).finally(() => {
        this.#clients.delete(conn);
        closeQuietly(conn);
      });
    }
  }

  /**
   * Serves one client: each whole command line must arrive within commandMs of the connection or of the
   * previous reply (a deadline that bytes trickling in do not move), or the client is disconnected.
   */
  async #serve(conn: Deno.UnixConn): Promise<void> {
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    const chunk = new Uint8Array(4096);
    let pending = "";
    let deadline: ReturnType<typeof setTimeout> | undefined;
    let late: Promise<null> = Promise.resolve(null);
    const startDeadline = () => {
      clearTimeout(deadline);
      late = new Promise<null>((resolve) =>
        deadline = setTimeout(() => resolve(null), this.#times.commandMs)
      );
    };
    const tooLong = async () => {
      const refusal = nok(`command longer than ${MAX_COMMAND_LENGTH} bytes`) + "\n";
      await writeWithin(() => writeAllTo(conn, encoder.encode(refusal)), 1000);
    };
    startDeadline();
    try {
      for (;;) {
        let n: number | null;
        try {
          n = await Promise.race([conn.read(chunk), late]);
        } catch {
          n = null;
        }
        if (n === null || this.#closed) return;
        pending += decoder.decode(chunk.subarray(0, n), { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline).replace(/\r$/, "");
          pending = pending.slice(newline + 1);
          if (line.length > MAX_COMMAND_LENGTH) return await tooLong();
          let reply: string;
          try {
            reply = await this.#handler(line);
          } catch (error) {
            this.#log.error(`Control command failed: ${(error as Error).message}`);
            reply = nok("internal error");
          }
          if (!(await writeWithin(() => writeAllTo(conn, encoder.encode(reply + "\n")), CONTROL_WRITE_MS))) {
            return;
          }
          startDeadline();
        }
        if (pending.length > MAX_COMMAND_LENGTH) return await tooLong();
      }
    } finally {
      clearTimeout(deadline);
    }
  }

  /** Stops listening, disconnects the clients and removes the socket file. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#acceptRetry.wake();
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

/** Tells a client over the cap why it is turned away, and disconnects it. */
async function refuseClient(conn: Deno.UnixConn): Promise<void> {
  await writeWithin(
    () => writeAllTo(conn, new TextEncoder().encode(nok("too many control clients") + "\n")),
    1000,
  );
  closeQuietly(conn);
}

/**
 * Decides whether a socket file found at start may be taken over, throwing RuntimeFailure when not. A
 * daemon there answers VERSION? at once: refused. Nothing listening (connection refused): stale, taken
 * over. A socket that accepts but does not answer belongs to a daemon killed a moment ago that is still
 * closing its descriptors, or to a stopped one (SIGSTOP): it is asked again until takeoverMs; once it no
 * longer accepts it is taken over, and if it still accepts then, it is left alone (refused).
 */
async function claim(path: string, times: ControlServerTimes): Promise<void> {
  const deadline = performance.now() + times.takeoverMs;
  for (;;) {
    const probe = await probeSocket(path, times.probeMs);
    if (probe === "answers") {
      throw new RuntimeFailure(`Another vela daemon is listening on ${path}; stop it or choose --control`);
    }
    if (probe === "nobody") return;
    if (performance.now() >= deadline) {
      throw new RuntimeFailure(
        `A vela daemon holds ${path} but does not answer (stopped?); stop it or choose --control`,
      );
    }
    await sleep(100);
  }
}

/**
 * What is at the socket `path`: a daemon that answers, one that is there but silent, or nobody. Only a
 * refused connection or a missing file is nobody: a full backlog (EAGAIN) or a connect that takes longer
 * than `ms` is a daemon that is there, however busy or stopped.
 */
async function probeSocket(path: string, ms: number): Promise<"answers" | "silent" | "nobody"> {
  let conn: Deno.UnixConn | "late";
  let connectTimer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ transport: "unix", path });
  try {
    conn = await Promise.race([
      connecting,
      new Promise<"late">((resolve) => connectTimer = setTimeout(() => resolve("late"), ms)),
    ]);
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionRefused || error instanceof Deno.errors.NotFound) {
      return "nobody";
    }
    return "silent";
  } finally {
    clearTimeout(connectTimer);
  }
  if (conn === "late") {
    connecting.then(closeQuietly, () => undefined);
    return "silent";
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"silent">((resolve) => timer = setTimeout(() => resolve("silent"), ms));
  const asked = (async (): Promise<"answers" | "silent"> => {
    await conn.write(new TextEncoder().encode("VERSION?\n"));
    const n = await conn.read(new Uint8Array(256));
    return n !== null && n > 0 ? "answers" : "silent";
  })().catch(() => "silent" as const);
  try {
    return await Promise.race([asked, late]);
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
    // The read still pending on the closed connection settles now; wait for it so no op leaks.
    await asked;
  }
}
