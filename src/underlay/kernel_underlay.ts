/**
 * The kernel underlay as the datapath core sees it (UnderlayBatch), for a datapath Worker: the shared
 * UDP socket and the peer sockets (src/underlay/peer_sockets.ts) by descriptor. recvmmsg fills the receive
 * batch and UDP GRO messages are split here at the segment size their control message gives; sendmmsg
 * sends a range of the send batch, runs of datagrams of one size as one UDP GSO message (UDP_SEGMENT).
 * A peer socket that fails is given up for the shared socket. Nothing is allocated per datagram.
 */

import { Errno, errno, libc } from "../../ffi/libc.ts";
import { addressOf, Cmsg, Iovec, Linux, MMsgHdr, SockaddrIn6 } from "../../ffi/structs.ts";
import type { PacketBatch } from "../packet/packet_batch.ts";
import { endpointSockaddr, sockaddrEndpoint } from "./sockaddr.ts";
import type { Endpoint, UnderlayBatch } from "./underlay.ts";

/** Largest UDP GSO send: 64 datagrams, under 64 KiB in all. */
const GSO_MAX_SEGMENTS = 64;
const GSO_MAX_BYTES = 65_000;
/** Per message, room for its control messages (the UDP GRO or GSO segment size). */
const CONTROL_SPACE = 64;

/**
 * Errors of a send that say nothing against the socket: EINTR, EAGAIN, ENOBUFS, and ECONNREFUSED (an
 * ICMP port unreachable from a peer that was down, reported once on a connected socket).
 */
const PASSING_SEND_ERRORS = new Set<number>([Errno.EINTR, Errno.EAGAIN, Errno.ENOBUFS, Errno.ECONNREFUSED]);
/** Errors that concern one datagram only: it is dropped and the rest of the batch sent. */
const DATAGRAM_SEND_ERRORS = new Set<number>([Errno.EMSGSIZE]);
/** Sends without UDP_SEGMENT after a first refusal, doubling up to the max while refusals go on. */
const GSO_FIRST_PAUSE = 16;
const GSO_MAX_PAUSE = 4096;

interface Route {
  readonly sockaddr: Uint8Array<ArrayBuffer>;
  readonly address: number;
  readonly peerFd: number;
  /** Where datagrams go: the peer socket, or the shared one once the peer socket failed. */
  sendFd: number;
}

/** Keeps a 64-bit address as two 32-bit halves, so that pointer arithmetic needs no BigInt. */
function halves(address: bigint): [number, number] {
  return [Number(address & 0xffffffffn), Number(address >> 32n)];
}

export class KernelUnderlay implements UnderlayBatch {
  readonly #sharedFd: number;
  /** Whether the kernel takes UDP_SEGMENT; turned off for good on the first refusal. */
  #gso: boolean;
  readonly #c = libc();
  /** The sockets receive() reads, by `which`: the shared one first, then the peer sockets. */
  readonly sockets: number[];
  readonly #routes: (Route | undefined)[] = [];
  readonly #freeRoutes: number[] = [];
  /** Address ids: the 16 address bytes of each, how many routes use it, and a lookup by hash. */
  readonly #addresses: (Uint8Array | undefined)[] = [];
  readonly #addressRoutes: number[] = [];
  readonly #freeAddresses: number[] = [];
  readonly #byHash = new Map<number, number[]>();
  #peerSocketUsers = new Map<number, number>();

  // Receive side, built for the first batch it is given.
  #rxBatch: PacketBatch | undefined;
  #rxHeaders = new Uint8Array(0);
  #rxView = new DataView(new ArrayBuffer(0));
  #rxNames: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #rxNamesView = new DataView(new ArrayBuffer(0));
  #rxControl = new Uint8Array(0);
  #rxControlView = new DataView(new ArrayBuffer(0));
  /** Per received entry, the message it came in (for endpoint()). */
  #messageOf = new Int32Array(0);

  // Send side.
  #txBatch: PacketBatch | undefined;
  #txHeaders = new Uint8Array(0);
  #txView = new DataView(new ArrayBuffer(0));
  #txIovecs = new Uint8Array(0);
  #txIovecsView = new DataView(new ArrayBuffer(0));
  #txIovecAddress: [number, number] = [0, 0];
  #txMemoryAddress: [number, number] = [0, 0];
  #txControl = new Uint8Array(0);
  #txControlView = new DataView(new ArrayBuffer(0));
  #txName = new Uint8Array(SockaddrIn6.SIZE);
  #runLength = new Int32Array(0);
  /** Per message of a send, the entry (from the send's start) it begins with. */
  #runStart = new Int32Array(0);
  /** Sends left to go without UDP_SEGMENT after a refusal, and the pause the next refusal sets. */
  #gsoPause = 0;
  #gsoBackoff = GSO_FIRST_PAUSE;
  /** UDP_SEGMENT messages the kernel refused (each batch resent without it). */
  gsoRefusals = 0;

  /** Whether the next send may join datagrams with UDP_SEGMENT (false during a pause after a refusal). */
  get gsoActive(): boolean {
    return this.#gso && this.#gsoPause === 0;
  }
  /** Single datagrams the kernel refused (EMSGSIZE) while the rest of their batch went. */
  oversizeDrops = 0;
  /** Whether sent messages carry txName (the shared socket) or not (a connected peer socket). */
  #named = true;
  #keepAlive: unknown[] = [];

  constructor(sharedFd: number, gso: boolean) {
    this.#sharedFd = sharedFd;
    this.#gso = gso;
    this.sockets = [sharedFd];
  }

  attach(remote: Endpoint, peerFd = -1): number {
    return this.attachSockaddr(endpointSockaddr(remote), peerFd);
  }

  /** attach() for a peer given as sockaddr_in6 bytes (as the Worker is told). */
  attachSockaddr(sockaddr: Uint8Array<ArrayBuffer>, peerFd = -1): number {
    const bytes = sockaddr.slice(SockaddrIn6.ADDR, SockaddrIn6.ADDR + 16);
    let address = this.#find(bytes, 0);
    if (address < 0) {
      address = this.#freeAddresses.pop() ?? this.#addresses.length;
      this.#addresses[address] = bytes;
      this.#addressRoutes[address] = 0;
      const hash = this.#hash(bytes, 0);
      const list = this.#byHash.get(hash);
      if (list) list.push(address);
      else this.#byHash.set(hash, [address]);
    }
    this.#addressRoutes[address]++;
    const route = this.#freeRoutes.pop() ?? this.#routes.length;
    this.#routes[route] = { sockaddr, address, peerFd, sendFd: peerFd >= 0 ? peerFd : this.#sharedFd };
    if (peerFd >= 0) {
      const users = this.#peerSocketUsers.get(peerFd) ?? 0;
      if (users === 0) this.sockets.push(peerFd);
      this.#peerSocketUsers.set(peerFd, users + 1);
    }
    return route;
  }

  detach(route: number): void {
    const r = this.#routes[route];
    if (!r) return;
    this.#routes[route] = undefined;
    this.#freeRoutes.push(route);
    if (r.peerFd >= 0) {
      const users = (this.#peerSocketUsers.get(r.peerFd) ?? 1) - 1;
      if (users > 0) this.#peerSocketUsers.set(r.peerFd, users);
      else {
        this.#peerSocketUsers.delete(r.peerFd);
        this.sockets.splice(this.sockets.indexOf(r.peerFd), 1);
      }
    }
    if (--this.#addressRoutes[r.address] > 0) return;
    const bytes = this.#addresses[r.address]!;
    const hash = this.#hash(bytes, 0);
    const list = this.#byHash.get(hash)!.filter((id) => id !== r.address);
    if (list.length > 0) this.#byHash.set(hash, list);
    else this.#byHash.delete(hash);
    this.#addresses[r.address] = undefined;
    this.#freeAddresses.push(r.address);
  }

  addressOf(route: number): number {
    return this.#routes[route]?.address ?? -1;
  }

  #hash(bytes: Uint8Array, at: number): number {
    return (bytes[at + 15] | (bytes[at + 14] << 8) | (bytes[at + 13] << 16) | (bytes[at + 12] << 24)) ^
      (bytes[at + 3] | (bytes[at + 7] << 8));
  }

  /** The address id of the 16 bytes at `at` in `bytes`, or -1. */
  #find(bytes: Uint8Array, at: number): number {
    const list = this.#byHash.get(this.#hash(bytes, at));
    if (list === undefined) return -1;
    for (let k = 0; k < list.length; k++) {
      const known = this.#addresses[list[k]]!;
      let same = true;
      for (let j = 0; j < 16 && same; j++) same = known[j] === bytes[at + j];
      if (same) return list[k];
    }
    return -1;
  }

  #prepareReceive(batch: PacketBatch): void {
    this.#rxBatch = batch;
    const messages = batch.buffers;
    this.#rxHeaders = new Uint8Array(messages * MMsgHdr.SIZE);
    this.#rxView = new DataView(this.#rxHeaders.buffer);
    const iovecs = new Uint8Array(messages * Iovec.SIZE);
    const iovecView = new DataView(iovecs.buffer);
    this.#rxNames = new Uint8Array(messages * SockaddrIn6.SIZE);
    this.#rxNamesView = new DataView(this.#rxNames.buffer);
    this.#rxControl = new Uint8Array(messages * CONTROL_SPACE);
    this.#rxControlView = new DataView(this.#rxControl.buffer);
    this.#messageOf = new Int32Array(batch.capacity);
    const memory = addressOf(batch.memory);
    const iovecBase = addressOf(iovecs);
    const names = addressOf(this.#rxNames);
    const control = addressOf(this.#rxControl);
    for (let m = 0; m < messages; m++) {
      // The datagram's first byte (the vid) lands just before the packet start.
      const start = batch.packetStart(m) - 1;
      iovecView.setBigUint64(m * Iovec.SIZE + Iovec.BASE, memory + BigInt(start), true);
      iovecView.setBigUint64(m * Iovec.SIZE + Iovec.LEN, BigInt(batch.maxPacket + 1), true);
      const at = m * MMsgHdr.SIZE;
      this.#rxView.setBigUint64(at + MMsgHdr.NAME, names + BigInt(m * SockaddrIn6.SIZE), true);
      this.#rxView.setUint32(at + MMsgHdr.NAMELEN, SockaddrIn6.SIZE, true);
      this.#rxView.setBigUint64(at + MMsgHdr.IOV, iovecBase + BigInt(m * Iovec.SIZE), true);
      this.#rxView.setBigUint64(at + MMsgHdr.IOVLEN, 1n, true);
      this.#rxView.setBigUint64(at + MMsgHdr.CONTROL, control + BigInt(m * CONTROL_SPACE), true);
    }
    this.#keepAlive.push(iovecs);
  }

  /**
   * The UDP GRO segment size of received message `m` (0 when the kernel did not join datagrams): a
   * control message of level SOL_UDP and type UDP_GRO with an int.
   */
  #groSize(m: number): number {
    // msg_controllen is a size_t; its high half is zero for anything that fits CONTROL_SPACE.
    const controlLength = this.#rxView.getUint32(m * MMsgHdr.SIZE + MMsgHdr.CONTROLLEN, true);
    if (controlLength < Cmsg.DATA + 4) return 0;
    const view = this.#rxControlView;
    const at = m * CONTROL_SPACE;
    if (view.getInt32(at + Cmsg.LEVEL, true) !== Linux.SOL_UDP) return 0;
    if (view.getInt32(at + Cmsg.TYPE, true) !== Linux.UDP_GRO) return 0;
    return view.getInt32(at + Cmsg.DATA, true);
  }

  receive(batch: PacketBatch, which: number): number {
    if (batch !== this.#rxBatch) this.#prepareReceive(batch);
    batch.count = 0;
    const messages = batch.buffers;
    const view = this.#rxView;
    for (let m = 0; m < messages; m++) {
      view.setUint32(m * MMsgHdr.SIZE + MMsgHdr.CONTROLLEN, CONTROL_SPACE, true);
      view.setUint32(m * MMsgHdr.SIZE + MMsgHdr.CONTROLLEN + 4, 0, true);
    }
    // A peer socket may report an ICMP error (ECONNREFUSED) here instead of data; reading clears it.
    const got = this.#c.recvmmsg(this.sockets[which], this.#rxHeaders, messages, Linux.MSG_DONTWAIT, null);
    if (got <= 0) return 0;
    let n = 0;
    for (let m = 0; m < got; m++) {
      const length = view.getUint32(m * MMsgHdr.SIZE + MMsgHdr.LEN, true);
      const source = this.#find(this.#rxNames, m * SockaddrIn6.SIZE + SockaddrIn6.ADDR);
      const start = batch.packetStart(m) - 1;
      const segment = this.#groSize(m);
      if (segment <= 0 || segment >= length) {
        batch.offset[n] = start;
        batch.length[n] = length;
        batch.source[n] = source;
        this.#messageOf[n++] = m;
        continue;
      }
      // The kernel joined several datagrams of one flow (UDP GRO): every `segment` bytes is one datagram.
      for (let offset = 0; offset < length && n < batch.capacity; offset += segment) {
        batch.offset[n] = start + offset;
        batch.length[n] = Math.min(segment, length - offset);
        batch.source[n] = source;
        this.#messageOf[n++] = m;
      }
    }
    batch.count = n;
    return got;
  }

  endpoint(_batch: PacketBatch, i: number): Endpoint {
    const at = this.#messageOf[i] * SockaddrIn6.SIZE;
    return sockaddrEndpoint(this.#rxNames.subarray(at, at + SockaddrIn6.SIZE));
  }

  #prepareSend(batch: PacketBatch): void {
    this.#txBatch = batch;
    const entries = batch.capacity;
    this.#txHeaders = new Uint8Array(entries * MMsgHdr.SIZE);
    this.#txView = new DataView(this.#txHeaders.buffer);
    this.#txIovecs = new Uint8Array(entries * Iovec.SIZE);
    this.#txIovecsView = new DataView(this.#txIovecs.buffer);
    this.#txIovecAddress = halves(addressOf(this.#txIovecs));
    this.#txMemoryAddress = halves(addressOf(batch.memory));
    this.#txControl = new Uint8Array(entries * CONTROL_SPACE);
    this.#txControlView = new DataView(this.#txControl.buffer);
    this.#runLength = new Int32Array(entries);
    this.#runStart = new Int32Array(entries);
    const control = addressOf(this.#txControl);
    const name = addressOf(this.#txName);
    for (let j = 0; j < entries; j++) {
      const at = j * CONTROL_SPACE;
      this.#txControlView.setBigUint64(at + Cmsg.LEN, BigInt(Cmsg.LEN_U16), true);
      this.#txControlView.setInt32(at + Cmsg.LEVEL, Linux.SOL_UDP, true);
      this.#txControlView.setInt32(at + Cmsg.TYPE, Linux.UDP_SEGMENT, true);
      this.#txView.setBigUint64(j * MMsgHdr.SIZE + MMsgHdr.CONTROL, control + BigInt(at), true);
      this.#txView.setBigUint64(j * MMsgHdr.SIZE + MMsgHdr.NAME, name, true);
      this.#txView.setUint32(j * MMsgHdr.SIZE + MMsgHdr.NAMELEN, SockaddrIn6.SIZE, true);
    }
    this.#named = true;
  }

  send(batch: PacketBatch, start: number, end: number, route: number): number {
    const r = this.#routes[route];
    if (!r || end <= start) return 0;
    if (batch !== this.#txBatch) this.#prepareSend(batch);
    // Each entry's iovec, its 64-bit base written as two 32-bit halves (no BigInt per datagram).
    const iovecs = this.#txIovecsView;
    const [low, high] = this.#txMemoryAddress;
    for (let i = start; i < end; i++) {
      const base = low + batch.offset[i];
      const at = (i - start) * Iovec.SIZE;
      iovecs.setUint32(at + Iovec.BASE, base >>> 0, true);
      iovecs.setUint32(at + Iovec.BASE + 4, high + (base > 0xffffffff ? 1 : 0), true);
      iovecs.setUint32(at + Iovec.LEN, batch.length[i], true);
    }
    this.#txName.set(r.sockaddr);
    this.#name(r.sendFd === this.#sharedFd);
    const sent = this.#flush(batch, start, end, r.sendFd);
    if (sent > 0 || r.sendFd === this.#sharedFd || PASSING_SEND_ERRORS.has(errno())) return sent;
    // The peer socket failed otherwise (its local address was removed: ENETUNREACH or EINVAL): the
    // shared socket picks a source address per datagram.
    r.sendFd = this.#sharedFd;
    this.#name(true);
    return this.#flush(batch, start, end, this.#sharedFd);
  }

  lateFailures(): number {
    return 0;
  }

  /** Whether messages carry txName: yes on the shared socket; not on a connected peer socket. */
  #name(named: boolean): void {
    if (named === this.#named) return;
    this.#named = named;
    const entries = this.#txBatch!.capacity;
    for (let j = 0; j < entries; j++) {
      this.#txView.setUint32(j * MMsgHdr.SIZE + MMsgHdr.NAMELEN, named ? SockaddrIn6.SIZE : 0, true);
    }
  }

  /**
   * Sends entries [start, end) (their iovecs from 0) on `fd`; returns how many datagrams went out. Runs
   * of datagrams of one size (the segments of a TCP superframe, or a stream of equal packets), the last
   * maybe shorter, go out as one message with UDP_SEGMENT, so the kernel handles them as one.
   */
  #flush(batch: PacketBatch, start: number, end: number, fd: number): number {
    // After a refusal, this many sends go without UDP_SEGMENT before it is tried again.
    const gso = this.#gso && this.#gsoPause === 0;
    if (this.#gsoPause > 0) this.#gsoPause--;
    const count = end - start;
    const lengths = batch.length;
    const headers = this.#txView;
    const [iovLow, iovHigh] = this.#txIovecAddress;
    let messages = 0;
    for (let k = 0; k < count;) {
      const size0 = lengths[start + k];
      let n = 1;
      let bytes = size0;
      while (
        gso && k + n < count && n < GSO_MAX_SEGMENTS &&
        bytes + lengths[start + k + n] <= GSO_MAX_BYTES &&
        lengths[start + k + n] <= size0 && lengths[start + k + n - 1] === size0
      ) {
        bytes += lengths[start + k + n];
        n++;
      }
      const at = messages * MMsgHdr.SIZE;
      const low = iovLow + k * Iovec.SIZE;
      headers.setUint32(at + MMsgHdr.IOV, low >>> 0, true);
      headers.setUint32(at + MMsgHdr.IOV + 4, iovHigh + (low > 0xffffffff ? 1 : 0), true);
      headers.setUint32(at + MMsgHdr.IOVLEN, n, true);
      headers.setUint32(at + MMsgHdr.IOVLEN + 4, 0, true);
      if (n > 1) this.#txControlView.setUint16(messages * CONTROL_SPACE + Cmsg.DATA, size0, true);
      headers.setUint32(at + MMsgHdr.CONTROLLEN, n > 1 ? Cmsg.SPACE_U16 : 0, true);
      headers.setUint32(at + MMsgHdr.CONTROLLEN + 4, 0, true);
      this.#runLength[messages] = n;
      this.#runStart[messages] = k;
      messages++;
      k += n;
    }
    let sentMessages = 0;
    let sent = 0;
    while (sentMessages < messages) {
      const from = sentMessages === 0
        ? this.#txHeaders
        : this.#txHeaders.subarray(sentMessages * MMsgHdr.SIZE);
      const n = this.#c.sendmmsg(fd, from, messages - sentMessages, 0);
      if (n <= 0) {
        const failed = this.#runLength[sentMessages];
        if (failed > 1 && !PASSING_SEND_ERRORS.has(errno())) {
          // The kernel refused a UDP_SEGMENT message (EINVAL: a datagram of it is over the path MTU, such
          // as a full-size tagged frame; EIO on a device without it): the rest of this batch goes without,
          // and UDP_SEGMENT is tried again after a pause that doubles while refusals go on. Never for good.
          this.gsoRefusals++;
          this.#gsoPause = this.#gsoBackoff;
          this.#gsoBackoff = Math.min(this.#gsoBackoff * 2, GSO_MAX_PAUSE);
          const wasGso = this.#gso;
          this.#gso = false;
          const rest = this.#flush(batch, start + this.#runStart[sentMessages], end, fd);
          this.#gso = wasGso;
          return sent + rest;
        }
        if (failed === 1 && sentMessages + 1 < messages && DATAGRAM_SEND_ERRORS.has(errno())) {
          // This one datagram cannot go (EMSGSIZE: over the path MTU); the ones after it still can.
          this.oversizeDrops++;
          sentMessages++;
          continue;
        }
        break;
      }
      if (n === messages - sentMessages && gso) this.#gsoBackoff = GSO_FIRST_PAUSE;
      for (let m = 0; m < n; m++) sent += this.#runLength[sentMessages + m];
      sentMessages += n;
    }
    return sent;
  }
}
