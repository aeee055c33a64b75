/** Connection helpers of the remote control tests. */

import { closeQuietly, writeAllTo } from "../../src/control/conn_io.ts";
import type { ByteStream } from "../../src/control/secure_channel.ts";

export { closeQuietly, writeAllTo as writeAll } from "../../src/control/conn_io.ts";

/** Everything a connection receives until the other side closes it (or `ms` passes). */
export async function readToEnd(conn: Deno.Conn, ms = 3000): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const timer = setTimeout(() => closeQuietly(conn), ms);
  const chunk = new Uint8Array(65536);
  try {
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) break;
      chunks.push(chunk.slice(0, n));
    }
  } catch {
    // Closed by the timer, or reset.
  } finally {
    clearTimeout(timer);
  }
  const all = new Uint8Array(chunks.reduce((total, c) => total + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

/** A stream over a connection that keeps a copy of what is written and may change it on the way. */
export class Tap implements ByteStream {
  readonly conn: Deno.Conn;
  readonly sent: number[] = [];
  readonly #alter: ((bytes: Uint8Array, offset: number) => void) | undefined;

  constructor(conn: Deno.Conn, alter?: (bytes: Uint8Array, offset: number) => void) {
    this.conn = conn;
    this.#alter = alter;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.conn.read(p);
  }

  async write(p: Uint8Array): Promise<number> {
    const copy = p.slice();
    this.#alter?.(copy, this.sent.length);
    this.sent.push(...copy);
    await writeAllTo(this.conn, copy);
    return p.length;
  }

  close(): void {
    closeQuietly(this.conn);
  }
}
