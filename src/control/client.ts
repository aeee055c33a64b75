/** The client side of the control socket, for `vela status`, `devices`, `connect` and `close`. */

import { completeReply } from "./protocol.ts";
import { RuntimeFailure } from "../errors.ts";

import { CONTROL_REPLY_MS } from "../timing.ts";

/** Sends one command line and returns the whole reply (all its lines). Throws RuntimeFailure. */
export async function sendControl(path: string, line: string): Promise<string> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.ConnectionRefused) {
      throw new RuntimeFailure(
        `No vela daemon is listening on ${path}; start one, or give its --control path`,
      );
    }
    if (error instanceof Deno.errors.PermissionDenied || (error as { code?: string }).code === "EACCES") {
      throw new RuntimeFailure(`Permission denied on ${path}; run this as root`);
    }
    throw new RuntimeFailure(`Cannot reach the daemon on ${path}: ${(error as Error).message}`);
  }
  const timer = setTimeout(() => conn.close(), CONTROL_REPLY_MS);
  try {
    await conn.write(new TextEncoder().encode(line + "\n"));
    const decoder = new TextDecoder();
    const chunk = new Uint8Array(65536);
    let text = "";
    for (;;) {
      const reply = completeReply(text);
      if (reply !== undefined) return reply;
      const n = await conn.read(chunk);
      if (n === null) {
        throw new RuntimeFailure(`The daemon on ${path} closed the connection without a full reply`);
      }
      text += decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  } catch (error) {
    if (error instanceof RuntimeFailure) throw error;
    throw new RuntimeFailure(`No reply from the daemon on ${path} (${(error as Error).message})`);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}
