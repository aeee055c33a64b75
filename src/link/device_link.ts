/**
 * A link device as the datapath core sees it (PacketLink), over one FrameIo. Everything the device's
 * offloads ask for happens here and nowhere else: on the way out the virtio-net header is read, partial
 * checksums are completed and TCP superframes are cut into segments (src/link/segmentation.ts); on the
 * way in segments are joined back into superframes (src/link/coalescing.ts) and frames get the zero
 * virtio-net header the device expects. A device without offloads reads and writes plain frames.
 */

import { VnetHdr } from "../../ffi/structs.ts";
import { completeChecksum, ethernetPayloadOffset, type SegmentSink, segmentTcp } from "./segmentation.ts";
import { type Coalescer, COALESCING_BUFFER_SIZE, TcpCoalescer, UdpCoalescer } from "./coalescing.ts";
import { HEADROOM, type PacketBatch } from "../packet/packet_batch.ts";
import { type CircuitCounts, Counter } from "../datapath/counters.ts";
import type { FrameIo, LinkMode, PacketLink } from "./packet_link.ts";

/**
 * Datagrams per UDP superframe. One write of 64 hands a whole burst to the receiving application's socket
 * at once and it overflows (iperf3 UDP: 10-20% lost at 100-120k packets/s); 16, with a yield after each,
 * lost 2-4%, less than one write per datagram (4-6%), at two thirds of the Worker's CPU (iperf3 UDP
 * between two namespaces on the 2-core test bed, three rounds each).
 */
const UDP_SEGMENTS_PER_WRITE = 16;

/** Room for a tap frame's link-layer header (Ethernet plus one VLAN tag) beyond the MTU. */
export const FRAME_HEADROOM = 18;

/**
 * What every link of one isolate shares on the way in: the two coalescers (only one holds a superframe
 * at a time, so frames keep their order) and the yield that lets a receiving application drain its
 * socket. The coalescers' buffers are reserved in the receive batch, so that joining copies nothing
 * between ArrayBuffers.
 */
export class LinkWriter {
  readonly tcp: TcpCoalescer;
  readonly udp: UdpCoalescer;
  readonly tcpOnly: readonly Coalescer[];
  readonly tcpAndUdp: readonly Coalescer[];
  /** Device writes after which yieldCpu() is called (0: never); see YIELD_EVERY in the Worker host. */
  readonly yieldEvery: number;
  readonly yieldCpu: () => void;
  writesSinceYield = 0;

  constructor(rx: PacketBatch, { yieldEvery = 0, yieldCpu = () => {} } = {}) {
    this.tcp = new TcpCoalescer(rx.reserve(COALESCING_BUFFER_SIZE));
    this.udp = new UdpCoalescer(rx.reserve(COALESCING_BUFFER_SIZE), UDP_SEGMENTS_PER_WRITE);
    this.tcpOnly = [this.tcp];
    this.tcpAndUdp = [this.tcp, this.udp];
    this.yieldEvery = yieldEvery;
    this.yieldCpu = yieldCpu;
  }

  /** The extra bytes a receive batch needs for a LinkWriter. */
  static readonly RESERVED_BYTES = 2 * COALESCING_BUFFER_SIZE;

  /** Writes the superframe `coalescer` holds (if any) to its link and counts it. */
  flushOne(coalescer: Coalescer): void {
    const link = coalescer.owner as DeviceLink | undefined;
    const segments = coalescer.count;
    // The frames as they came from the peer, headers and all, not the superframe they were joined into.
    const bytes = coalescer.frameBytes;
    const n = coalescer.finish();
    if (!link || n === 0) return;
    const written = link.io.write(coalescer.buffer as Uint8Array<ArrayBuffer>, 0, n, false);
    if (coalescer === this.udp) {
      // The datagrams land in the receiving application's socket at once: let it run.
      this.writesSinceYield = 0;
      this.yieldCpu();
    }
    const values = link.counts.values;
    const base = link.counts.base;
    if (written) {
      values[base + Counter.RX_PACKETS] += segments;
      values[base + Counter.RX_BYTES] += bytes;
    } else {
      values[base + Counter.RX_DROPPED] += segments;
    }
  }

  flush(): void {
    this.flushOne(this.tcp);
    this.flushOne(this.udp);
  }
}

/** What a link is: its mode, its offloads and its MTU. */
export interface LinkSpec {
  readonly mode: LinkMode;
  /** Frames carry a virtio-net header; reads may be TCP superframes. */
  readonly offload: boolean;
  /** The device takes UDP superframes too. */
  readonly udpOffload: boolean;
  readonly mtu: number;
}

/** Where segmentTcp() writes: the send batch's entries from its count on. */
class BatchSink implements SegmentSink {
  batch!: PacketBatch;
  next(): Uint8Array | undefined {
    const batch = this.batch;
    return batch.count < batch.readLimit ? batch.bufferView(batch.home[batch.count]) : undefined;
  }

  commit(length: number): void {
    const batch = this.batch;
    const i = batch.count;
    batch.offset[i] = batch.packetStart(batch.home[i]);
    batch.length[i] = length;
    batch.count = i + 1;
  }
}

export class DeviceLink implements PacketLink {
  readonly io: FrameIo;
  readonly counts: CircuitCounts;
  readonly #writer: LinkWriter;
  readonly #offload: boolean;
  readonly #coalescers: readonly Coalescer[];
  readonly #ipOffset: number;
  /** Where the pending superframe's IP header starts (after VLAN tags, if any). */
  #superIpOffset = 0;
  readonly #readSize: number;
  readonly #sink = new BatchSink();
  #readViewsOf: PacketBatch | undefined;
  #readViews: Uint8Array<ArrayBuffer>[] = [];
  #writeViewsOf: PacketBatch | undefined;
  #writeViews: Uint8Array<ArrayBuffer>[] = [];
  /** A TCP superframe in the send batch's spare buffer that is not cut up yet, and how far it is. */
  #superLength = 0;
  #superDone = 0;
  #csumStart = 0;
  #gsoSize = 0;

  constructor(io: FrameIo, spec: LinkSpec, writer: LinkWriter, counts: CircuitCounts) {
    this.io = io;
    this.counts = counts;
    this.#writer = writer;
    this.#offload = spec.offload;
    this.#coalescers = spec.udpOffload ? writer.tcpAndUdp : writer.tcpOnly;
    this.#ipOffset = spec.mode === "tap" ? 14 : 0;
    this.#readSize = spec.mtu + FRAME_HEADROOM;
  }

  get pending(): boolean {
    return this.#superLength > 0;
  }

  read(batch: PacketBatch): number {
    const first = batch.count;
    if (this.#superLength > 0 && !this.#split(batch)) return batch.count - first;
    const spare = batch.buffers - 1;
    const max = this.#offload ? Math.min(batch.maxPacket, 65_535) + VnetHdr.SIZE : this.#readSize;
    while (batch.count < batch.readLimit) {
      const i = batch.count;
      const k = batch.home[i];
      const start = batch.packetStart(k);
      if (!this.#offload) {
        const n = this.io.read(batch.packetView(k), max);
        if (n <= 0) return n < 0 && i === first ? -1 : i - first;
        batch.offset[i] = start;
        batch.length[i] = n;
        batch.count = i + 1;
        continue;
      }
      // The header goes just before the frame, in the headroom.
      const n = this.io.read(this.#headerViews(batch)[k], max);
      if (n <= 0) return n < 0 && i === first ? -1 : i - first;
      const memory = batch.memory;
      const h = start - VnetHdr.SIZE;
      const length = n - VnetHdr.SIZE;
      const gsoType = memory[h + VnetHdr.GSO_TYPE] & ~VnetHdr.GSO_ECN;
      const csumStart = memory[h + VnetHdr.CSUM_START] | (memory[h + VnetHdr.CSUM_START + 1] << 8);
      if (gsoType === VnetHdr.GSO_NONE) {
        if (memory[h + VnetHdr.FLAGS] & VnetHdr.F_NEEDS_CSUM) {
          const csumOffset = memory[h + VnetHdr.CSUM_OFFSET] | (memory[h + VnetHdr.CSUM_OFFSET + 1] << 8);
          completeChecksum(batch.packetView(k), length, csumStart, csumOffset);
        }
        batch.offset[i] = start;
        batch.length[i] = length;
        batch.count = i + 1;
        continue;
      }
      if (gsoType !== VnetHdr.GSO_TCPV4 && gsoType !== VnetHdr.GSO_TCPV6) {
        this.counts.values[this.counts.base + Counter.TX_DROPPED]++; // Not offered (no UFO), so not expected.
        continue;
      }
      // A TCP superframe: move it to the spare buffer, then cut it into segments from entry i on. Its IP
      // header follows the Ethernet header and any VLAN tags.
      this.#superIpOffset = this.#ipOffset === 0 ? 0 : ethernetPayloadOffset(batch.packetView(k), length);
      batch.home[i] = batch.home[spare];
      batch.home[spare] = k;
      this.#superLength = length;
      this.#superDone = 0;
      this.#csumStart = csumStart;
      this.#gsoSize = memory[h + VnetHdr.GSO_SIZE] | (memory[h + VnetHdr.GSO_SIZE + 1] << 8);
      if (!this.#split(batch)) break;
    }
    return batch.count - first;
  }

  /** Per buffer of `batch`, a view from where the virtio-net header goes (made once per batch). */
  #headerViews(batch: PacketBatch): Uint8Array<ArrayBuffer>[] {
    // A link sees two batches at most (the send batch for reads, the receive batch for writes).
    if (this.#readViewsOf === batch) return this.#readViews;
    if (this.#writeViewsOf === batch) return this.#writeViews;
    const views = Array.from(
      { length: batch.buffers },
      (_, k) => batch.bufferView(k).subarray(HEADROOM - VnetHdr.SIZE),
    );
    if (this.#readViewsOf === undefined) {
      this.#readViewsOf = batch;
      this.#readViews = views;
    } else {
      this.#writeViewsOf = batch;
      this.#writeViews = views;
    }
    return views;
  }

  /** Cuts the pending superframe into the batch; false when the batch filled up before it was done. */
  #split(batch: PacketBatch): boolean {
    const sink = this.#sink;
    sink.batch = batch;
    const wrote = segmentTcp(
      batch.packetView(batch.home[batch.buffers - 1]),
      this.#superLength,
      this.#superIpOffset,
      this.#csumStart,
      this.#gsoSize,
      HEADROOM,
      sink,
      this.#superDone,
    );
    if (wrote < 0) {
      this.counts.values[this.counts.base + Counter.TX_DROPPED]++;
      this.#superLength = 0;
      return true;
    }
    this.#superDone += wrote;
    // A full batch may hold the last segments; if so, the next call writes none and ends it.
    if (batch.count >= batch.readLimit) return false;
    this.#superLength = 0;
    return true;
  }

  write(batch: PacketBatch, start: number, end: number): void {
    const values = this.counts.values;
    const base = this.counts.base;
    const writer = this.#writer;
    const memory = batch.memory;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      const at = batch.offset[i];
      if (this.#offload && this.#coalesce(memory, at, length)) continue;
      let written: boolean;
      const k = (at - HEADROOM) / batch.bufferSize;
      if (k < batch.buffers && (at - HEADROOM) % batch.bufferSize === 0) {
        // The frame starts its buffer's packet area (a datagram received alone, not moved by a stage, nor
        // put in the extra area after the buffers): written with a plain write(), after a zero header put
        // in the headroom for a device with one.
        if (this.#offload) {
          memory.fill(0, at - VnetHdr.SIZE, at);
          written = this.io.writeView(this.#headerViews(batch)[k], length + VnetHdr.SIZE);
        } else {
          written = this.io.writeView(batch.packetView(k), length);
        }
      } else {
        written = this.io.write(memory, at, length, this.#offload);
      }
      if (writer.yieldEvery > 0 && ++writer.writesSinceYield >= writer.yieldEvery) {
        writer.writesSinceYield = 0;
        writer.yieldCpu();
      }
      if (written) {
        values[base + Counter.RX_PACKETS]++;
        values[base + Counter.RX_BYTES] += length;
      } else {
        values[base + Counter.RX_DROPPED]++;
      }
    }
  }

  /** Offers a frame to the coalescers; whether one took it (false: write it as it is). */
  #coalesce(memory: Uint8Array, at: number, length: number): boolean {
    const coalescers = this.#coalescers;
    const writer = this.#writer;
    for (let k = 0; k < coalescers.length; k++) {
      const coalescer = coalescers[k];
      let offer = coalescer.offer(memory, at, length, this.#ipOffset, this);
      if (offer === "flush-first") {
        writer.flush();
        offer = coalescer.offer(memory, at, length, this.#ipOffset, this);
      }
      if (offer === "ineligible") continue;
      // A superframe the other coalescer holds came first: it is written before this one goes on.
      if (offer === "started") writer.flushOne(coalescer === writer.tcp ? writer.udp : writer.tcp);
      if (offer === "appended-last") writer.flush();
      return true;
    }
    return false;
  }

  flush(): void {
    this.#writer.flush();
  }
}
