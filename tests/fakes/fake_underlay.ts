/** An in-memory UDP underlay: FakeUnderlays on one FakeWire deliver datagrams to each other by address. */

import type { DeliverDatagram, Endpoint, Underlay } from "../../src/underlay.ts";

export class FakeWire {
  readonly #sockets = new Map<string, FakeUnderlay>();
  /** Every datagram put on the wire, copied, with sender and receiver. */
  readonly log: { from: Endpoint; to: Endpoint; datagram: Uint8Array }[] = [];
  /** When false, datagrams are lost (a cut underlay). */
  connected = true;

  attach(socket: FakeUnderlay): void {
    this.#sockets.set(`${socket.address}|${socket.port}`, socket);
  }

  detach(socket: FakeUnderlay): void {
    this.#sockets.delete(`${socket.address}|${socket.port}`);
  }

  carry(from: Endpoint, to: Endpoint, datagram: Uint8Array): void {
    const copy = datagram.slice();
    this.log.push({ from, to, datagram: copy });
    if (!this.connected) return;
    this.#sockets.get(`${to.address}|${to.port}`)?.enqueue(copy, from);
  }

  /** A stranger sends a datagram to `to` from `from` (no socket needed). */
  inject(from: Endpoint, to: Endpoint, datagram: Uint8Array): void {
    this.carry(from, to, datagram);
  }
}

let nextPort = 40_000;

export class FakeUnderlay implements Underlay {
  readonly address: string;
  readonly port: number;
  readonly #wire: FakeWire;
  readonly #queue: { datagram: Uint8Array; from: Endpoint }[] = [];
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(wire: FakeWire, address: string, port: number) {
    this.#wire = wire;
    this.address = address;
    this.port = port === 0 ? nextPort++ : port;
    wire.attach(this);
  }

  enqueue(datagram: Uint8Array, from: Endpoint): void {
    if (this.#closed) return;
    this.#queue.push({ datagram, from });
    this.#wake?.();
    this.#wake = undefined;
  }

  async receiveBatch(deliver: DeliverDatagram): Promise<boolean> {
    while (this.#queue.length === 0) {
      if (this.#closed) return false;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    if (this.#closed) return false;
    for (const item of this.#queue.splice(0)) deliver(item.datagram, item.from);
    return true;
  }

  sendBatch(
    buffers: readonly Uint8Array[],
    lengths: ArrayLike<number>,
    count: number,
    to: Endpoint,
  ): Promise<number> {
    if (this.#closed) return Promise.resolve(count);
    for (let i = 0; i < count; i++) {
      this.#wire.carry({ address: this.address, port: this.port }, to, buffers[i].subarray(0, lengths[i]));
    }
    return Promise.resolve(0);
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
