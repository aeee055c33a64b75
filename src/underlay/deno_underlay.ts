/**
 * The underlay on Deno's own UDP API (Deno.listenDatagram): one dual-stack socket per daemon, served in
 * the main isolate by the isolate host (src/datapath/isolate_host.ts). One datagram is received at a
 * time (the API has no batches); sends are started at once and their failures counted when they settle.
 */

import type { PacketBatch } from "../packet/packet_batch.ts";
import { AddressBook, type Endpoint, type IsolateUnderlay } from "./underlay.ts";

/** Largest UDP payload; the receive buffer is this large so that no datagram is cut. */
const MAX_DATAGRAM = 65_535;

/** IPv4-mapped IPv6 text (::ffff:198.18.0.1) as plain IPv4 text; other text unchanged. */
export function unmapHostname(hostname: string): string {
  return hostname.startsWith("::ffff:") && hostname.includes(".") ? hostname.slice(7) : hostname;
}

export class DenoUnderlay implements IsolateUnderlay {
  readonly port: number;
  readonly #conn: Deno.DatagramConn;
  readonly #buffer = new Uint8Array(MAX_DATAGRAM);
  readonly #book = new AddressBook();
  /** The datagram waitReadable() received, until receive() takes it. */
  #ready: { datagram: Uint8Array; from: Endpoint } | undefined;
  #received: Endpoint = { address: "", port: 0 };
  readonly #failures: number[] = [];
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

  async waitReadable(): Promise<boolean> {
    while (!this.#closed) {
      if (this.#ready) return true;
      try {
        const [datagram, from] = await this.#conn.receive(this.#buffer);
        const addr = from as Deno.NetAddr;
        this.#ready = { datagram, from: { address: unmapHostname(addr.hostname), port: addr.port } };
        return true;
      } catch (error) {
        if (
          this.#closed || error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted
        ) {
          return false;
        }
        // An ICMP error from an earlier send (port unreachable, ...) surfaces here: keep receiving.
      }
    }
    return false;
  }

  attach(remote: Endpoint): number {
    const route = this.#book.attach(remote);
    this.#failures[route] = 0;
    return route;
  }

  detach(route: number): void {
    this.#book.detach(route);
  }

  addressOf(route: number): number {
    return this.#book.addressOf(route);
  }

  receive(batch: PacketBatch): number {
    batch.count = 0;
    const ready = this.#ready;
    if (!ready) return 0;
    this.#ready = undefined;
    const length = Math.min(ready.datagram.length, batch.maxPacket + 1);
    const at = batch.packetStart(0) - 1;
    batch.memory.set(ready.datagram.subarray(0, length), at);
    batch.offset[0] = at;
    batch.length[0] = length;
    batch.source[0] = this.#book.idOf(ready.from.address);
    batch.count = 1;
    this.#received = ready.from;
    return 1;
  }

  endpoint(): Endpoint {
    return this.#received;
  }

  send(batch: PacketBatch, start: number, end: number, route: number): number {
    const remote = this.#book.remoteOf(route);
    if (this.#closed || !remote) return 0;
    const target: Deno.NetAddr = { transport: "udp", hostname: remote.address, port: remote.port };
    const failed = () => {
      if (this.#book.remoteOf(route) === remote) this.#failures[route]++;
    };
    for (let i = start; i < end; i++) this.#conn.send(batch.copy(i), target).catch(failed);
    return end - start;
  }

  lateFailures(route: number): number {
    const failed = this.#failures[route] ?? 0;
    this.#failures[route] = 0;
    return failed;
  }

  async sendControl(datagram: Uint8Array<ArrayBuffer>, to: Endpoint): Promise<boolean> {
    if (this.#closed) return false;
    try {
      await this.#conn.send(datagram, { transport: "udp", hostname: to.address, port: to.port });
      return true;
    } catch {
      return false;
    }
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
