/**
 * The peer sockets of the libc datapath (ffi/udp_socket.ts, openPeerSocket): one socket connected to
 * each peer, shared by that peer's circuits and closed with the last of them. They are an optimisation
 * (the kernel keeps the route; bench/: about 5% more TCP without offloads), so there is a ceiling: the
 * peers beyond it, like any peer whose socket could not be opened, go through the shared socket, which
 * carries every circuit the same way.
 */

import type { Endpoint } from "./underlay.ts";

/** Peers with a socket of their own at most; a listener with more serves the rest on the shared socket. */
export const MAX_PEER_SOCKETS = 64;

/** One peer's socket and how many circuits use it. */
export interface PeerSocket {
  readonly key: string;
  readonly fd: number;
  circuits: number;
}

export class PeerSockets {
  readonly #sockets = new Map<string, PeerSocket>();
  readonly #open: (peer: Endpoint) => number;
  readonly #close: (fd: number) => void;
  readonly #max: number;

  /** `open` makes a socket connected to a peer (it may throw); `close` closes a descriptor. */
  constructor(open: (peer: Endpoint) => number, close: (fd: number) => void, max = MAX_PEER_SOCKETS) {
    this.#open = open;
    this.#close = close;
    this.#max = max;
  }

  get size(): number {
    return this.#sockets.size;
  }

  /**
   * The socket for a new circuit to `peer`: the peer's open one, or a new one; undefined when the ceiling
   * is reached or opening failed (the circuit then uses the shared socket).
   */
  acquire(peer: Endpoint): PeerSocket | undefined {
    const key = `${peer.address}|${peer.port}`;
    let socket = this.#sockets.get(key);
    if (!socket) {
      if (this.#sockets.size >= this.#max) return undefined;
      try {
        socket = { key, fd: this.#open(peer), circuits: 0 };
      } catch {
        return undefined;
      }
      this.#sockets.set(key, socket);
    }
    socket.circuits++;
    return socket;
  }

  /** A circuit no longer uses `socket`; the last one closes it. */
  release(socket: PeerSocket): void {
    if (--socket.circuits > 0 || this.#sockets.get(socket.key) !== socket) return;
    this.#sockets.delete(socket.key);
    this.#close(socket.fd);
  }

  /** Closes every socket (the datapath has stopped); safe to call twice. */
  close(): void {
    for (const socket of this.#sockets.values()) this.#close(socket.fd);
    this.#sockets.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
