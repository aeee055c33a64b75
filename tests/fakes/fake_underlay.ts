/**
 * An in-memory UDP underlay: FakeUnderlays on one FakeWire deliver datagrams to each other by address.
 * Each is both the daemon's Underlay and the core's UnderlayBatch (src/underlay/underlay.ts), served by
 * the isolate host; `connect()` makes a connected pair for tests of the core itself.
 */

import type { PacketBatch } from "../../src/packet/packet_batch.ts";
import { AddressBook, type Endpoint, type IsolateUnderlay } from "../../src/underlay/underlay.ts";

export class FakeWire {
  readonly #sockets = new Map<string, FakeUnderlay>();
  /** Every datagram put on the wire, copied, with sender and receiver. */
  readonly log: { from: Endpoint; to: Endpoint; datagram: Uint8Array }[] = [];
  /** When false, datagrams are lost (a cut underlay). */
  connected = true;
  /** Datagrams longer than this are lost without a word (a path MTU black hole). */
  maxDatagram = Infinity;

  attach(socket: FakeUnderlay): void {
    this.#sockets.set(`${socket.address}|${socket.port}`, socket);
  }

  detach(socket: FakeUnderlay): void {
    this.#sockets.delete(`${socket.address}|${socket.port}`);
  }

  carry(from: Endpoint, to: Endpoint, datagram: Uint8Array): void {
    const copy = datagram.slice();
    this.log.push({ from, to, datagram: copy });
    if (!this.connected || copy.length > this.maxDatagram) return;
    this.#sockets.get(`${to.address}|${to.port}`)?.enqueue(copy, from);
  }

  /** A stranger sends a datagram to `to` from `from` (no socket needed). */
  inject(from: Endpoint, to: Endpoint, datagram: Uint8Array): void {
    this.carry(from, to, datagram);
  }
}

let nextPort = 40_000;

export class FakeUnderlay implements IsolateUnderlay {
  readonly address: string;
  readonly port: number;
  readonly #wire: FakeWire;
  readonly #queue: { datagram: Uint8Array; from: Endpoint }[] = [];
  readonly #book = new AddressBook();
  /** The senders of the entries of the last receive(). */
  readonly #received: Endpoint[] = [];
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(wire: FakeWire, address: string, port: number) {
    this.#wire = wire;
    this.address = address;
    this.port = port === 0 ? nextPort++ : port;
    wire.attach(this);
  }

  get endpointSelf(): Endpoint {
    return { address: this.address, port: this.port };
  }

  enqueue(datagram: Uint8Array, from: Endpoint): void {
    if (this.#closed) return;
    this.#queue.push({ datagram, from });
    this.#wake?.();
    this.#wake = undefined;
  }

  /** Datagrams waiting for receive(). */
  get queued(): number {
    return this.#queue.length;
  }

  async waitReadable(): Promise<boolean> {
    while (this.#queue.length === 0) {
      if (this.#closed) return false;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return !this.#closed;
  }

  attach(remote: Endpoint): number {
    return this.#book.attach(remote);
  }

  detach(route: number): void {
    this.#book.detach(route);
  }

  addressOf(route: number): number {
    return this.#book.addressOf(route);
  }

  receive(batch: PacketBatch): number {
    batch.count = 0;
    let n = 0;
    while (n < batch.buffers && this.#queue.length > 0) {
      const { datagram, from } = this.#queue.shift()!;
      const at = batch.packetStart(n) - 1;
      batch.memory.set(datagram.subarray(0, batch.maxPacket + 1), at);
      batch.offset[n] = at;
      batch.length[n] = Math.min(datagram.length, batch.maxPacket + 1);
      batch.source[n] = this.#book.idOf(from.address);
      this.#received[n] = from;
      n++;
    }
    batch.count = n;
    return n;
  }

  endpoint(_batch: PacketBatch, i: number): Endpoint {
    return this.#received[i];
  }

  send(batch: PacketBatch, start: number, end: number, route: number): number {
    const to = this.#book.remoteOf(route);
    if (this.#closed || !to) return 0;
    for (let i = start; i < end; i++) this.#wire.carry(this.endpointSelf, to, batch.copy(i));
    return end - start;
  }

  lateFailures(): number {
    return 0;
  }

  sendControl(datagram: Uint8Array, to: Endpoint): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#wire.carry(this.endpointSelf, to, datagram);
    return Promise.resolve(true);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wire.detach(this);
    this.#wake?.();
    this.#wake = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
