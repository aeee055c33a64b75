/** The underlay on Deno's own UDP API (Deno.listenDatagram): one dual-stack socket per daemon. */

import type { DeliverDatagram, Endpoint, Underlay } from "./underlay.ts";

/** Largest UDP payload; the receive buffer is this large so that no datagram is cut. */
const MAX_DATAGRAM = 65_535;

/** IPv4-mapped IPv6 text (::ffff:198.18.0.1) as plain IPv4 text; other text unchanged. */
export function unmapHostname(hostname: string): string {
  return hostname.startsWith("::ffff:") && hostname.includes(".") ? hostname.slice(7) : hostname;
}

export class DenoUnderlay implements Underlay {
  readonly port: number;
  readonly #conn: Deno.DatagramConn;
  readonly #buffer = new Uint8Array(MAX_DATAGRAM);
  #closed = false;

  private constructor(conn: Deno.DatagramConn) {
    this.#conn = conn;
    this.port = (conn.addr as Deno.NetAddr).port;
  }

  /**
   * Binds [::]:port, which takes IPv4 peers as mapped addresses; where the host has no IPv6 it binds
   * 0.0.0.0 instead. Throws Deno.errors.AddrInUse when the port is taken.
   */
  static bind(port: number): DenoUnderlay {
    try {
      return new DenoUnderlay(Deno.listenDatagram({ hostname: "::", port, transport: "udp" }));
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) throw error;
      return new DenoUnderlay(Deno.listenDatagram({ hostname: "0.0.0.0", port, transport: "udp" }));
    }
  }

  async receiveBatch(deliver: DeliverDatagram): Promise<boolean> {
    while (!this.#closed) {
      let datagram: Uint8Array, from: Deno.Addr;
      try {
        [datagram, from] = await this.#conn.receive(this.#buffer);
      } catch (error) {
        if (
          this.#closed || error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted
        ) {
          return false;
        }
        // An ICMP error from an earlier send (port unreachable, ...) surfaces here: keep receiving.
        continue;
      }
      const addr = from as Deno.NetAddr;
      deliver(datagram, { address: unmapHostname(addr.hostname), port: addr.port });
      return true;
    }
    return false;
  }

  async sendBatch(
    buffers: readonly Uint8Array[],
    lengths: ArrayLike<number>,
    count: number,
    to: Endpoint,
  ): Promise<number> {
    if (this.#closed) return count;
    const target: Deno.NetAddr = { transport: "udp", hostname: to.address, port: to.port };
    const sends: Promise<number>[] = [];
    for (let i = 0; i < count; i++) {
      sends.push(this.#conn.send(buffers[i].subarray(0, lengths[i]), target).then(() => 0, () => 1));
    }
    let failed = 0;
    for (const result of await Promise.all(sends)) failed += result;
    return failed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
