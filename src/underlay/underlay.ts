/**
 * The UDP underlay, in two cuts. `Underlay` is what the daemon holds: the bound port and a way to send
 * one control datagram. `UnderlayBatch` is what the datapath core needs (wireguard-go's conn.Bind cut):
 * receive a batch of datagrams with their senders, send a range of a batch to a peer. The kernel one
 * (kernel_underlay.ts) runs in a datapath Worker; deno_underlay.ts and tests/fakes/ are the in-isolate
 * ones, which also implement `waitReadable()`.
 */

import type { PacketBatch } from "../packet/packet_batch.ts";

/** A UDP endpoint; `address` is canonical IP text (IPv4-mapped IPv6 is given as IPv4). */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export interface Underlay extends Disposable {
  /** The local UDP port. */
  readonly port: number;
  /** Sends one datagram; resolves false when it could not be sent. Never rejects. */
  sendControl(datagram: Uint8Array<ArrayBuffer>, to: Endpoint): Promise<boolean>;
  /** Safe to call twice. */
  close(): void;
}

export interface UnderlayBatch {
  /**
   * Makes a route to `remote` for one circuit (`peerFd`: a socket connected to the peer, or -1) and
   * returns its id. Routes to one address share an address id (addressOf()), so that the core's circuit
   * table is keyed by numbers.
   */
  attach(remote: Endpoint, peerFd?: number): number;
  detach(route: number): void;
  /** The address id of a route. */
  addressOf(route: number): number;
  /**
   * Receives ready datagrams from socket `which` (0: the shared one; see the host's poll set) into
   * `batch` from entry 0, each at its buffer's packet start less 1 (the vid byte), with `source[i]` the
   * sender's address id or -1. Returns how many messages it read (a GRO message gives several entries).
   */
  receive(batch: PacketBatch, which: number): number;
  /** The sender of received entry `i` (for a control datagram). */
  endpoint(batch: PacketBatch, i: number): Endpoint;
  /** Sends entries [start, end) of `batch` on `route`; returns how many went out. */
  send(batch: PacketBatch, start: number, end: number, route: number): number;
  /** Sends that failed after send() returned (an asynchronous underlay), taken once; 0 for the kernel's. */
  lateFailures(route: number): number;
}

/** An underlay served in the main isolate: it can also wait for datagrams. */
export interface IsolateUnderlay extends Underlay, UnderlayBatch {
  /** Resolves true once a datagram is ready, false once the underlay is closed. */
  waitReadable(): Promise<boolean>;
}

export function isIsolateUnderlay(underlay: Underlay): underlay is IsolateUnderlay {
  return typeof (underlay as Partial<IsolateUnderlay>).waitReadable === "function";
}

/**
 * Address ids for an in-isolate underlay: one per address text, reference-counted by routes; with the
 * routes' endpoints.
 */
export class AddressBook {
  readonly #ids = new Map<string, { id: number; routes: number }>();
  readonly #free: number[] = [];
  #next = 0;
  readonly #routes: ({ remote: Endpoint; address: number } | undefined)[] = [];
  readonly #freeRoutes: number[] = [];

  attach(remote: Endpoint): number {
    let entry = this.#ids.get(remote.address);
    if (!entry) {
      entry = { id: this.#free.pop() ?? this.#next++, routes: 0 };
      this.#ids.set(remote.address, entry);
    }
    entry.routes++;
    const route = this.#freeRoutes.pop() ?? this.#routes.length;
    this.#routes[route] = { remote, address: entry.id };
    return route;
  }

  detach(route: number): void {
    const r = this.#routes[route];
    if (!r) return;
    this.#routes[route] = undefined;
    this.#freeRoutes.push(route);
    const entry = this.#ids.get(r.remote.address);
    if (entry && --entry.routes === 0) {
      this.#ids.delete(r.remote.address);
      this.#free.push(entry.id);
    }
  }

  addressOf(route: number): number {
    return this.#routes[route]?.address ?? -1;
  }

  remoteOf(route: number): Endpoint | undefined {
    return this.#routes[route]?.remote;
  }

  /** The address id of `address`, or -1. */
  idOf(address: string): number {
    return this.#ids.get(address)?.id ?? -1;
  }
}
