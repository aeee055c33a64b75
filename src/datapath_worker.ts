/**
 * A datapath Worker (the libc underlay): a synchronous loop on its own thread. It sleeps in poll() on a
 * wake-up eventfd and, by its role (worker_messages.ts, WorkerRole), on the UDP socket, on the devices,
 * or on both. Receiving, it drains the socket with recvmmsg into device writes and hands control
 * datagrams (first byte 0) up to the main isolate; sending, it drains each readable device into sendmmsg
 * batches. Commands from the main isolate arrive as messages; the main isolate signals the eventfd so
 * that the loop stops sleeping and reads them. Counters live in shared memory (each counter is written
 * by one role only); nothing is allocated per frame.
 */

/// <reference lib="deno.worker" />

import { errno, libc } from "../ffi/libc.ts";
import { setOwnTimeSlice } from "../ffi/scheduling.ts";
import { SendModeration } from "./send_moderation.ts";
import { addressOf, Iovec, Linux, MMsgHdr, mmsghdrs, PollFd, SockaddrIn6, VnetHdr } from "../ffi/structs.ts";
import { completeChecksum, type SegmentSink, segmentTcp } from "./segmentation.ts";
import { type Coalescer, COALESCING_BUFFER_SIZE, TcpCoalescer, UdpCoalescer } from "./coalescing.ts";
import { sockaddrEndpoint } from "../ffi/udp_socket.ts";
import {
  CIRCUIT_FIELDS,
  Counter,
  DatapathCount,
  type ToMain,
  type ToWorker,
  WORKER_BATCH,
  type WorkerRole,
} from "./worker_messages.ts";

/** Largest datagram or frame handled. */
const MAX_FRAME = 65_536;
/** Batches drained from one source before the others get their turn. */
const BATCHES_PER_TURN = 4;

interface Slot {
  readonly slot: number;
  readonly vid: number;
  readonly fd: number;
  /** The socket connected to the peer, or -1: then the shared socket (udpFd) carries the circuit. */
  readonly peerFd: number;
  /** Where frames to the peer go: the peer socket, or the shared one (see sendBatch). */
  sendFd: number;
  /** The peer's sockaddr_in6 (28 bytes) and its 16 address bytes, to match senders against. */
  readonly sockaddr: Uint8Array<ArrayBuffer>;
  readonly address: Uint8Array;
  readonly readSize: number;
  /** Frames carry a virtio-net header; reads may be TCP superframes (see src/segmentation.ts). */
  readonly offload: boolean;
  /** The device takes UDP superframes too. */
  readonly udpOffload: boolean;
  readonly ipOffset: number;
}

const c = libc();
let role: WorkerRole = "both";
let udpFd = -1;
let wakeFd = -1;
let circuitCounters: Float64Array<ArrayBufferLike> = new Float64Array(0);
let datapathCounts: Float64Array<ArrayBufferLike> = new Float64Array(0);
let posted: Int32Array<ArrayBufferLike> = new Int32Array(0);
let handled = 0;
let stopping = false;
const slots = new Map<number, Slot>();
/** Slots by vid, for the receive path (usually one each). */
const byVid: Slot[][] = Array.from({ length: 256 }, () => []);
/** Waits before draining the devices under bulk traffic (src/send_moderation.ts). */
let moderation = new SendModeration(0);
/** Bytes read from the devices in the current drain. */
let drainedBytes = 0;
let pollSet = new Uint8Array(0);
let pollView = new DataView(pollSet.buffer);
let pollSlots: Slot[] = [];
/** The peer sockets a receiving Worker drains, after the devices in the poll set. */
let pollSockets: number[] = [];

// Receive side: a batch of full-size buffers with their sender addresses.
//
// Every buffer has the same layout: bytes 0..8 stay zero, byte 9 is the vid, the frame starts at 10, and
// the datagram on the wire is bytes 9 onwards. A device with offload reads and writes its 10-byte
// virtio-net header at 0..9 (a zero header on writes: byte 9 is zeroed once the vid has been read), so
// no frame is ever copied to make room for a header.
const VID_AT = 9;
const FRAME_AT = 10;
const BUFFER_SIZE = FRAME_AT + MAX_FRAME;
// The receive buffers and the coalescer's share one ArrayBuffer, as do the send buffers and the scratch
// buffer: frames are copied between views of one ArrayBuffer without allocating (src/bytes.ts).
const rxMemory = new ArrayBuffer(WORKER_BATCH * BUFFER_SIZE + 2 * COALESCING_BUFFER_SIZE);
const rxBuffers = Array.from(
  { length: WORKER_BATCH },
  (_, i) => new Uint8Array(rxMemory, i * BUFFER_SIZE, BUFFER_SIZE),
);
const rxFrames = rxBuffers.map((b) => b.subarray(FRAME_AT));
const rxNames = Array.from({ length: WORKER_BATCH }, () => new Uint8Array(SockaddrIn6.SIZE));
const rx = mmsghdrs(rxBuffers.map((b) => b.subarray(VID_AT)), rxNames);
const rxHeaders = new DataView(rx.headers.buffer);

// Send side: a batch of buffers, all sent to one peer (txName).
const txMemory = new ArrayBuffer((WORKER_BATCH + 1) * BUFFER_SIZE);
const txBuffers = Array.from(
  { length: WORKER_BATCH },
  (_, i) => new Uint8Array(txMemory, i * BUFFER_SIZE, BUFFER_SIZE),
);
const txFrames = txBuffers.map((b) => b.subarray(FRAME_AT));
const txName = new Uint8Array(SockaddrIn6.SIZE);
const tx = mmsghdrs(txBuffers.map((b) => b.subarray(VID_AT)), txBuffers.map(() => txName));
const txIovecs = new DataView(tx.iovecs.buffer);
/** Where a TCP superframe is cut up from (swapped with the tx buffer it was read into). */
let scratch = new Uint8Array(txMemory, WORKER_BATCH * BUFFER_SIZE, BUFFER_SIZE);
let scratchFrame = scratch.subarray(FRAME_AT);
/** Each buffer's wire start (its address + VID_AT) as two 32-bit halves, for iovec updates after a swap. */
const wireAddress = new Map<Uint8Array, [number, number]>();
for (const buffer of [...txBuffers, scratch]) {
  const address = addressOf(buffer) + BigInt(VID_AT);
  wireAddress.set(buffer, [Number(address & 0xffffffffn), Number(address >> 32n)]);
}
const wakeBuffer = new Uint8Array(8);

/**
 * Every size_t argument the loop passes, made once. Deno's fast FFI calls take a 64-bit integer only as a
 * BigInt: a plain number sends V8 back from the optimized loop to slow code (a deoptimization, over and
 * over under load), and a BigInt made per call would be an allocation per frame.
 */
const SIZES: readonly bigint[] = Array.from({ length: BUFFER_SIZE + 1 }, (_, n) => BigInt(n));

/** The BigInt for a size (0 to BUFFER_SIZE), without allocating. */
function size(n: number): bigint {
  return SIZES[n];
}

function send(message: ToMain): void {
  self.postMessage(message);
}

/**
 * Entry 0 is the shared UDP socket (-1, which poll() skips, for a sending Worker), 1 the eventfd, then
 * the devices (if this Worker sends), then the peer sockets (if it receives).
 */
function rebuildPollSet(): void {
  pollSlots = role === "receive" ? [] : [...slots.values()];
  pollSockets = role === "send"
    ? []
    : [...new Set([...slots.values()].map((s) => s.peerFd))].filter((fd) => fd >= 0);
  pollSet = new Uint8Array(PollFd.SIZE * (2 + pollSlots.length + pollSockets.length));
  pollView = new DataView(pollSet.buffer);
  [role === "send" ? -1 : udpFd, wakeFd, ...pollSlots.map((s) => s.fd), ...pollSockets].forEach((fd, i) => {
    pollView.setInt32(i * PollFd.SIZE + PollFd.FD, fd, true);
    pollView.setInt16(i * PollFd.SIZE + PollFd.EVENTS, Linux.POLLIN, true);
  });
}

function revents(index: number): number {
  return pollView.getInt16(index * PollFd.SIZE + PollFd.REVENTS, true);
}

function sameAddress(a: Uint8Array, name: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== name[SockaddrIn6.ADDR + i]) return false;
  return true;
}

/**
 * Datagrams per UDP superframe. One write of 64 hands a whole burst to the receiving application's socket
 * at once and it overflows (iperf3 UDP: 10-20% lost at 100-120k packets/s); 16, with a sched_yield after
 * each, lost 2-4%, less than one write per datagram (4-6%), at two thirds of the Worker's CPU
 * (iperf3 UDP between two namespaces on the 2-core test bed, three rounds each).
 */
const UDP_SEGMENTS_PER_WRITE = 16;

/**
 * Segments from the underlay joined into superframes for devices with offload: TCP for every such device,
 * UDP for those that take USO. Only one holds a superframe at a time, so frames keep their order.
 */
const tcpCoalescer = new TcpCoalescer(
  new Uint8Array(rxMemory, WORKER_BATCH * BUFFER_SIZE, COALESCING_BUFFER_SIZE),
);
const udpCoalescer = new UdpCoalescer(
  new Uint8Array(rxMemory, WORKER_BATCH * BUFFER_SIZE + COALESCING_BUFFER_SIZE, COALESCING_BUFFER_SIZE),
  UDP_SEGMENTS_PER_WRITE,
);
const TCP_ONLY: readonly Coalescer[] = [tcpCoalescer];
const TCP_AND_UDP: readonly Coalescer[] = [tcpCoalescer, udpCoalescer];

/** Writes the superframe `coalescer` holds (if any) to its device and counts it. */
function flushOne(coalescer: Coalescer): void {
  const slot = coalescer.owner as Slot | undefined;
  const segments = coalescer.count;
  const bytes = coalescer.length;
  const n = coalescer.finish();
  if (!slot || n === 0) return;
  const base = slot.slot * CIRCUIT_FIELDS;
  const written = c.write_frame(slot.fd, coalescer.buffer, size(n));
  if (coalescer === udpCoalescer) {
    // The datagrams land in the receiving application's socket at once: let it run (see YIELD_EVERY).
    writesSinceYield = 0;
    c.sched_yield();
  }
  if (written >= 0) {
    circuitCounters[base + Counter.RX_PACKETS] += segments;
    circuitCounters[base + Counter.RX_BYTES] += bytes;
  } else {
    circuitCounters[base + Counter.RX_DROPPED] += segments;
  }
}

/** Writes whichever superframe is pending. */
function flushCoalesced(): void {
  flushOne(tcpCoalescer);
  flushOne(udpCoalescer);
}

/** Offers a frame of `target`'s to the coalescers; returns whether one took it (false: write it as it is). */
function coalesce(buffer: Uint8Array, at: number, length: number, target: Slot): boolean {
  const coalescers = target.udpOffload ? TCP_AND_UDP : TCP_ONLY;
  for (let k = 0; k < coalescers.length; k++) {
    const coalescer = coalescers[k];
    let offer = coalescer.offer(buffer, at, length, target.ipOffset, target);
    if (offer === "flush-first") {
      flushCoalesced();
      offer = coalescer.offer(buffer, at, length, target.ipOffset, target);
    }
    if (offer === "ineligible") continue;
    // A superframe the other coalescer holds came first: it is written before this one goes on.
    if (offer === "started") flushOne(coalescer === tcpCoalescer ? udpCoalescer : tcpCoalescer);
    if (offer === "appended-last") flushCoalesced();
    return true;
  }
  return false;
}

/** Per received message, room for its control messages (the UDP GRO segment size). */
const CONTROL_SPACE = 64;
const rxControl = Array.from({ length: WORKER_BATCH }, () => new Uint8Array(CONTROL_SPACE));
const rxControlViews = rxControl.map((b) => new DataView(b.buffer));
for (let i = 0; i < WORKER_BATCH; i++) {
  rxHeaders.setBigUint64(i * MMsgHdr.SIZE + MMsgHdr.CONTROL, addressOf(rxControl[i]), true);
}
/**
 * A frame that arrived inside a GRO'd message is written where it lies, with writev: iovec 0 is a zero
 * virtio-net header (for devices with offload), iovec 1 the frame in its receive buffer. The buffers'
 * addresses are kept as 32-bit halves so that nothing is allocated per frame.
 */
// One allocation holds both iovecs and, after them, the zero header, so that the header lives as long as
// the iovecs that point at it (a buffer only pointed at from a struct could be garbage-collected).
const frameIovecsMemory = new Uint8Array(2 * Iovec.SIZE + VnetHdr.SIZE);
const frameIovecs = frameIovecsMemory.subarray(0, 2 * Iovec.SIZE);
const frameIovecsView = new DataView(frameIovecsMemory.buffer);
frameIovecsView.setBigUint64(Iovec.BASE, addressOf(frameIovecsMemory) + BigInt(2 * Iovec.SIZE), true);
frameIovecsView.setBigUint64(Iovec.LEN, BigInt(VnetHdr.SIZE), true);
const frameIovecsFromFrame = frameIovecs.subarray(Iovec.SIZE);
const rxAddressLow = rxBuffers.map((b) => Number(addressOf(b) & 0xffffffffn));
const rxAddressHigh = rxBuffers.map((b) => Number(addressOf(b) >> 32n));

/** Writes `length` bytes at `at` of receive buffer `i` to `fd`, after a zero virtio-net header if `vnet`. */
function writeInPlace(fd: number, i: number, at: number, length: number, vnet: boolean): number {
  const low = rxAddressLow[i] + at;
  const carry = low > 0xffffffff ? 1 : 0;
  frameIovecsView.setUint32(Iovec.SIZE + Iovec.BASE, low >>> 0, true);
  frameIovecsView.setUint32(Iovec.SIZE + Iovec.BASE + 4, rxAddressHigh[i] + carry, true);
  frameIovecsView.setUint32(Iovec.SIZE + Iovec.LEN, length, true);
  return vnet ? c.writev_frame(fd, frameIovecs, 2) : c.writev_frame(fd, frameIovecsFromFrame, 1);
}

/**
 * The UDP GRO segment size of received message `i` (0 when the kernel did not join datagrams): a
 * struct cmsghdr { size_t len; int level; int type; } with level SOL_UDP and type UDP_GRO, then an int.
 */
function groSize(i: number): number {
  // msg_controllen is a size_t; its high half is zero for anything that fits CONTROL_SPACE.
  const controlLength = rxHeaders.getUint32(i * MMsgHdr.SIZE + MMsgHdr.CONTROLLEN, true);
  if (controlLength < 20) return 0;
  const view = rxControlViews[i];
  if (view.getInt32(8, true) !== Linux.SOL_UDP || view.getInt32(12, true) !== Linux.UDP_GRO) return 0;
  return view.getInt32(16, true);
}

/**
 * With UDP GRO, after this many device writes the Worker gives up its core for a moment (sched_yield), so
 * that the application reading those frames on the same core can drain its socket: without it, a burst of
 * joined datagrams overflows a receiving application's UDP buffer (measured with bench/: iperf3 UDP at
 * under 1% loss went from about 35k to 55-67k packets/s).
 */
const YIELD_EVERY = 16;
let writesSinceYield = 0;

/** One datagram (at `at`, `length` bytes, in buffer `i`): data to its device, control up. */
function deliver(i: number, at: number, length: number): void {
  const buffer = rxBuffers[i];
  if (length === 0) {
    datapathCounts[DatapathCount.EMPTY]++;
    return;
  }
  const vid = buffer[at];
  if (vid === 0) {
    datapathCounts[DatapathCount.CONTROL]++;
    send({ type: "control", datagram: buffer.slice(at, at + length), from: sockaddrEndpoint(rxNames[i]) });
    return;
  }
  const candidates = byVid[vid];
  let target: Slot | undefined;
  for (let k = 0; k < candidates.length; k++) {
    if (sameAddress(candidates[k].address, rxNames[i])) {
      target = candidates[k];
      break;
    }
  }
  if (target === undefined) {
    datapathCounts[DatapathCount.UNKNOWN_CIRCUIT]++;
    return;
  }
  if (length < 2) {
    datapathCounts[DatapathCount.RUNT]++;
    return;
  }
  const frameAt = at + 1;
  const frameLength = length - 1;
  const base = target.slot * CIRCUIT_FIELDS;
  let written: number;
  if (target.offload) {
    if (coalesce(buffer, frameAt, frameLength, target)) return;
    if (at === VID_AT) {
      buffer[VID_AT] = 0; // The 10 bytes before the frame are now a zero virtio-net header.
      written = c.write_frame(target.fd, buffer, size(FRAME_AT + frameLength));
    } else {
      written = writeInPlace(target.fd, i, frameAt, frameLength, true);
    }
  } else if (at === VID_AT) {
    written = c.write_frame(target.fd, rxFrames[i], size(frameLength));
  } else {
    written = writeInPlace(target.fd, i, frameAt, frameLength, false);
  }
  if (udpGso && ++writesSinceYield >= YIELD_EVERY) {
    writesSinceYield = 0;
    c.sched_yield();
  }
  if (written >= 0) {
    circuitCounters[base + Counter.RX_PACKETS]++;
    circuitCounters[base + Counter.RX_BYTES] += frameLength;
  } else {
    circuitCounters[base + Counter.RX_DROPPED]++;
  }
}

/** recvmmsg until a socket is empty (or a turn is used up); data to devices, control up. */
function receiveFromUnderlay(socketFd: number): void {
  for (let turn = 0; turn < BATCHES_PER_TURN; turn++) {
    for (let i = 0; i < WORKER_BATCH; i++) {
      rxHeaders.setUint32(i * MMsgHdr.SIZE + MMsgHdr.CONTROLLEN, CONTROL_SPACE, true);
      rxHeaders.setUint32(i * MMsgHdr.SIZE + MMsgHdr.CONTROLLEN + 4, 0, true);
    }
    // A peer socket may report an ICMP error (ECONNREFUSED) here instead of data; reading clears it.
    const got = c.recvmmsg(socketFd, rx.headers, WORKER_BATCH, Linux.MSG_DONTWAIT, null);
    if (got <= 0) return;
    for (let i = 0; i < got; i++) {
      const length = rxHeaders.getUint32(i * MMsgHdr.SIZE + MMsgHdr.LEN, true);
      const segment = groSize(i);
      if (segment <= 0 || segment >= length) {
        deliver(i, VID_AT, length);
        continue;
      }
      // The kernel joined several datagrams of one flow (UDP GRO): every `segment` bytes is one datagram.
      for (let offset = 0; offset < length; offset += segment) {
        deliver(i, VID_AT + offset, Math.min(segment, length - offset));
      }
    }
    flushCoalesced();
    if (got < WORKER_BATCH) return;
  }
}

/** Per sent message, a control message carrying the UDP GSO segment size. */
const txControl = Array.from({ length: WORKER_BATCH }, () => new Uint8Array(CONTROL_SPACE));
const txControlView = txControl.map((b) => new DataView(b.buffer));
/** Each tx buffer's datagram length, and the iovecs' address, for building messages from runs. */
const txLengths = new Int32Array(WORKER_BATCH);
const txIovecLow = Number(addressOf(tx.iovecs) & 0xffffffffn);
const txIovecHigh = Number(addressOf(tx.iovecs) >> 32n);
const txHeaders = new DataView(tx.headers.buffer);
for (let j = 0; j < WORKER_BATCH; j++) {
  const view = txControlView[j];
  view.setBigUint64(0, 18n, true); // CMSG_LEN(sizeof(uint16_t))
  view.setInt32(8, Linux.SOL_UDP, true);
  view.setInt32(12, Linux.UDP_SEGMENT, true);
  txHeaders.setBigUint64(j * MMsgHdr.SIZE + MMsgHdr.CONTROL, addressOf(txControl[j]), true);
}
/** Whether the kernel takes UDP_SEGMENT; turned off for good on the first refusal. */
let udpGso = true;
/** Largest UDP GSO send: 64 datagrams, under 64 KiB in all. */
const GSO_MAX_SEGMENTS = 64;
const GSO_MAX_BYTES = 65_000;

/**
 * Errors of a send that say nothing against the socket: EINTR, EAGAIN, ENOBUFS, and ECONNREFUSED (an
 * ICMP port unreachable from a peer that was down, reported once on a connected socket).
 */
const PASSING_SEND_ERRORS = new Set([4, 11, 105, 111]);

/**
 * Sends tx buffers [0, count) to the slot's peer; returns how many datagrams went out. A peer socket
 * that fails otherwise (its local address was removed: ENETUNREACH or EINVAL) is given up for the
 * shared socket, which picks a source address per datagram.
 */
function sendBatch(count: number, slot: Slot): number {
  if (count === 0) return 0;
  nameMessages(slot.sendFd === udpFd);
  const sent = flush(count, slot.sendFd);
  if (sent > 0 || slot.sendFd === udpFd || PASSING_SEND_ERRORS.has(errno())) return sent;
  slot.sendFd = udpFd;
  nameMessages(true);
  return flush(count, udpFd);
}

/**
 * Whether sent messages carry the peer's address (txName): yes on the shared socket; no on a peer
 * socket, which then uses the route it keeps (with an address the kernel looks the route up again).
 */
let messagesNamed = true;
function nameMessages(named: boolean): void {
  if (named === messagesNamed) return;
  messagesNamed = named;
  for (let j = 0; j < WORKER_BATCH; j++) {
    txHeaders.setUint32(j * MMsgHdr.SIZE + MMsgHdr.NAMELEN, named ? SockaddrIn6.SIZE : 0, true);
  }
}

/**
 * Sends tx buffers [0, count) on `socketFd` (to txName, unless it is a peer socket); returns how many
 * datagrams went out. Runs of datagrams of one size (the segments of a TCP superframe, or a stream of
 * equal packets), the last maybe shorter, go out as one message with UDP_SEGMENT, so the kernel handles
 * them as one.
 */
function flush(count: number, socketFd: number): number {
  let messages = 0;
  for (let k = 0; k < count;) {
    const size0 = txLengths[k];
    let n = 1;
    let bytes = size0;
    while (
      udpGso && k + n < count && n < GSO_MAX_SEGMENTS && bytes + txLengths[k + n] <= GSO_MAX_BYTES &&
      txLengths[k + n] <= size0 && txLengths[k + n - 1] === size0
    ) {
      bytes += txLengths[k + n];
      n++;
    }
    const at = messages * MMsgHdr.SIZE;
    // 64-bit fields written as two 32-bit halves, so that no BigInt is made per message.
    const low = txIovecLow + k * 16;
    txHeaders.setUint32(at + MMsgHdr.IOV, low >>> 0, true);
    txHeaders.setUint32(at + MMsgHdr.IOV + 4, txIovecHigh + (low > 0xffffffff ? 1 : 0), true);
    txHeaders.setUint32(at + MMsgHdr.IOVLEN, n, true);
    txHeaders.setUint32(at + MMsgHdr.IOVLEN + 4, 0, true);
    if (n > 1) txControlView[messages].setUint16(16, size0, true);
    txHeaders.setUint32(at + MMsgHdr.CONTROLLEN, n > 1 ? 24 : 0, true);
    txHeaders.setUint32(at + MMsgHdr.CONTROLLEN + 4, 0, true);
    runLength[messages] = n;
    messages++;
    k += n;
  }
  let sentMessages = 0;
  let sent = 0;
  while (sentMessages < messages) {
    const headers = sentMessages === 0 ? tx.headers : tx.headers.subarray(sentMessages * MMsgHdr.SIZE);
    const n = c.sendmmsg(socketFd, headers, messages - sentMessages, 0);
    if (n <= 0) {
      if (udpGso && sent === 0 && messages < count && socketFd === udpFd) {
        // The kernel refused UDP_SEGMENT (EIO or EINVAL on an old kernel or device): go without. (A peer
        // socket's failure is first retried on the shared socket, by sendBatch.)
        udpGso = false;
        return flush(count, socketFd);
      }
      break;
    }
    for (let m = 0; m < n; m++) sent += runLength[sentMessages + m];
    sentMessages += n;
  }
  return sent;
}
const runLength = new Int32Array(WORKER_BATCH);

/** Exchanges tx buffer `index` with the scratch buffer, keeping its iovec pointing at the new one. */
function swapWithScratch(index: number): void {
  // The views change places too (a subarray made here would be garbage per superframe).
  const buffer = txBuffers[index];
  const frame = txFrames[index];
  txBuffers[index] = scratch;
  txFrames[index] = scratchFrame;
  scratch = buffer;
  scratchFrame = frame;
  const address = wireAddress.get(txBuffers[index])!;
  txIovecs.setUint32(index * 16 + 0, address[0], true);
  txIovecs.setUint32(index * 16 + 4, address[1], true);
}

/** The sink segmentTcp() writes into: the tx buffers from `count` on, frames at FRAME_AT. */
const segmentSink = {
  count: 0,
  vid: 0,
  bytes: 0,
  total: 0,
  next(): Uint8Array | undefined {
    return this.count < WORKER_BATCH ? txBuffers[this.count] : undefined;
  },
  commit(length: number): void {
    txBuffers[this.count][VID_AT] = this.vid;
    txIovecs.setUint32(this.count * 16 + 8, length + 1, true);
    txLengths[this.count] = length + 1;
    this.count++;
    this.total++;
    this.bytes += length;
  },
} satisfies SegmentSink & { count: number; vid: number; bytes: number; total: number };

/** Reads every ready frame of one device (a turn at most) and sends them to its peer with sendmmsg. */
function sendFromDevice(slot: Slot): boolean {
  const base = slot.slot * CIRCUIT_FIELDS;
  txName.set(slot.sockaddr);
  const sink = segmentSink;
  sink.vid = slot.vid;
  for (let turn = 0; turn < BATCHES_PER_TURN; turn++) {
    sink.count = 0;
    sink.bytes = 0;
    sink.total = 0;
    let dropped = 0;
    let sent = 0;
    while (sink.count < WORKER_BATCH) {
      const count = sink.count;
      const n = slot.offload
        ? c.read_frame(slot.fd, txBuffers[count], size(BUFFER_SIZE))
        : c.read_frame(slot.fd, txFrames[count], size(slot.readSize));
      if (n > 0) drainedBytes += n;
      if (n <= 0) {
        if (n < 0 && count === 0 && turn === 0) {
          const code = errno();
          if (code !== 11 && code !== 4) return false; // Not EAGAIN or EINTR: the device is gone.
        }
        break;
      }
      if (!slot.offload) {
        sink.commit(n);
        continue;
      }
      const buffer = txBuffers[count];
      const length = n - VnetHdr.SIZE;
      const gsoType = buffer[VnetHdr.GSO_TYPE] & ~VnetHdr.GSO_ECN;
      const csumStart = buffer[VnetHdr.CSUM_START] | (buffer[VnetHdr.CSUM_START + 1] << 8);
      if (gsoType === VnetHdr.GSO_NONE) {
        if (buffer[VnetHdr.FLAGS] & VnetHdr.F_NEEDS_CSUM) {
          const csumOffset = buffer[VnetHdr.CSUM_OFFSET] | (buffer[VnetHdr.CSUM_OFFSET + 1] << 8);
          completeChecksum(txFrames[count], length, csumStart, csumOffset);
        }
        sink.commit(length);
        continue;
      }
      if (gsoType !== VnetHdr.GSO_TCPV4 && gsoType !== VnetHdr.GSO_TCPV6) {
        dropped++; // Not offered (no UFO), so not expected.
        continue;
      }
      // A TCP superframe: move it aside, then cut it into segments in the tx buffers from `count` on.
      const gsoSize = buffer[VnetHdr.GSO_SIZE] | (buffer[VnetHdr.GSO_SIZE + 1] << 8);
      swapWithScratch(count);
      let done = 0;
      for (;;) {
        const wrote = segmentTcp(
          scratchFrame,
          length,
          slot.ipOffset,
          csumStart,
          gsoSize,
          FRAME_AT,
          sink,
          done,
        );
        if (wrote < 0) {
          dropped++;
          break;
        }
        done += wrote;
        if (sink.count < WORKER_BATCH) break;
        // The batch is full and segments remain: send it and go on.
        sent += sendBatch(sink.count, slot);
        sink.count = 0;
      }
    }
    if (sink.total === 0 && dropped === 0) return true;
    const batch = sink.count;
    sent += sendBatch(batch, slot);
    circuitCounters[base + Counter.TX_PACKETS] += sent;
    circuitCounters[base + Counter.TX_BYTES] += sink.bytes;
    circuitCounters[base + Counter.TX_DROPPED] += dropped + sink.total - sent;
    if (batch < WORKER_BATCH) return true;
  }
  return true;
}

function handle(message: ToWorker): void {
  handled++;
  switch (message.type) {
    case "init":
      role = message.role;
      udpFd = message.udpFd;
      wakeFd = message.wakeFd;
      circuitCounters = new Float64Array(message.circuitCounters);
      datapathCounts = new Float64Array(message.datapathCounts);
      posted = new Int32Array(message.posted);
      udpGso = message.udpGso;
      moderation = new SendModeration(message.moderationUs);
      try {
        if (message.timeSliceNs > 0) setOwnTimeSlice(message.timeSliceNs);
      } catch (error) {
        send({
          type: "warning",
          text: `The ${role} Worker keeps the default time slice: ${(error as Error).message}`,
        });
      }
      rebuildPollSet();
      run();
      break;
    case "add": {
      const address = message.sockaddr.slice(SockaddrIn6.ADDR, SockaddrIn6.ADDR + 16);
      const slot: Slot = {
        slot: message.slot,
        vid: message.vid,
        fd: message.fd,
        peerFd: message.peerFd,
        sendFd: message.peerFd >= 0 ? message.peerFd : udpFd,
        sockaddr: message.sockaddr,
        address,
        readSize: Math.min(MAX_FRAME - 1, message.mtu + 18),
        offload: message.offload,
        udpOffload: message.udpOffload,
        ipOffset: message.ipOffset,
      };
      slots.set(slot.slot, slot);
      byVid[slot.vid].push(slot);
      rebuildPollSet();
      break;
    }
    case "remove":
      // A slot this Worker dropped itself (its device failed) was reported then, not again.
      if (forget(message.slot)) send({ type: "removed", slot: message.slot });
      break;
    case "stop":
      stopping = true;
      break;
  }
}

/** Drops a slot; false if this Worker did not have it. */
function forget(slotNumber: number): boolean {
  const slot = slots.get(slotNumber);
  if (!slot) return false;
  slots.delete(slotNumber);
  byVid[slot.vid] = byVid[slot.vid].filter((s) => s !== slot);
  rebuildPollSet();
  return true;
}

/** Lets the event loop deliver every message the main isolate has posted so far. */
async function readMessages(): Promise<void> {
  c.read(wakeFd, wakeBuffer, 8n);
  while (handled < Atomics.load(posted, 0) && !stopping) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/** Drains every ready device into sendmmsg batches; a device that failed is forgotten and reported. */
function drainDevices(): void {
  if (pollSlots.length === 0) return;
  let ready = false;
  for (let i = 0; i < pollSlots.length && !ready; i++) ready = revents(2 + i) !== 0;
  if (!ready) return;
  const wait = moderation.wake(performance.now());
  // An early wake (EINTR) only shortens the wait, so the result is not checked.
  if (wait > 0) {
    c.usleep(wait);
    datapathCounts[DatapathCount.MODERATED_WAKEUPS]++;
  }
  drainedBytes = 0;
  for (let i = 0; i < pollSlots.length; i++) {
    if (revents(2 + i) === 0) continue;
    const slot = pollSlots[i];
    if (!sendFromDevice(slot)) {
      forget(slot.slot);
      send({ type: "device-failed", slot: slot.slot });
      break;
    }
  }
  moderation.drained(drainedBytes, performance.now());
}

async function run(): Promise<void> {
  while (!stopping) {
    const ready = c.poll(pollSet, size(2 + pollSlots.length + pollSockets.length), 1000);
    if (ready > 0) {
      if (revents(0) & Linux.POLLIN) receiveFromUnderlay(udpFd);
      const sockets = 2 + pollSlots.length;
      for (let i = 0; i < pollSockets.length; i++) {
        if (revents(sockets + i) !== 0) receiveFromUnderlay(pollSockets[i]);
      }
      drainDevices();
      if (revents(1) & Linux.POLLIN) await readMessages();
    } else if (handled < Atomics.load(posted, 0)) {
      await readMessages();
    }
  }
  send({ type: "stopped" });
}

self.onmessage = (event: MessageEvent<ToWorker>) => handle(event.data);
