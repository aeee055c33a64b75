/**
 * TCP receive coalescing (GRO) in userspace, for devices opened with offload: consecutive segments of
 * one TCP flow that arrive together are joined into one superframe, written to the device with a
 * virtio-net header that says "TCP, segment size N, checksum to be completed", so that the kernel takes
 * one large packet instead of dozens. The rules follow the kernel's own GRO: same addresses, ports, ack,
 * window and options; contiguous sequence numbers; only the last segment may be short; ACK and at most
 * a final PSH, nothing else. Pure code on byte arrays; nothing allocated per frame.
 */

import { VnetHdr } from "../../ffi/structs.ts";
import { finishChecksum } from "./segmentation.ts";
import { copyBytes, onesSum } from "../packet/bytes.ts";

/** Where the frame starts in the coalescing buffer: after the virtio-net header. */
export const FRAME_START = VnetHdr.SIZE;
/** The largest superframe joined (an IPv4 total length must fit 16 bits). */
export const MAX_SUPERFRAME = 65_000;
/** The bytes a coalescer builds in: the header, the largest superframe and one more segment. */
export const COALESCING_BUFFER_SIZE = FRAME_START + MAX_SUPERFRAME + 1600;

const TCP_ACK = 0x10;
const TCP_PSH = 0x08;

export type Offer = "started" | "appended" | "appended-last" | "flush-first" | "ineligible";

/**
 * Where the transport header starts in `src` (an index) for the frame at `src[at .. at + length)` with its
 * IP header at `ipOffset`, or -1 unless it is one whole packet of `protocol` that a superframe can hold:
 * IPv4 without options and not a fragment, or IPv6 without extension headers, whose length field matches
 * the frame and that has room for `minHeader` bytes of transport header.
 */
function transportAt(
  src: Uint8Array,
  at: number,
  length: number,
  ipOffset: number,
  protocol: number,
  minHeader: number,
): number {
  const ip = at + ipOffset;
  if (src[ip] === 0x45) {
    if (length < ipOffset + 20 + minHeader) return -1;
    const total = (src[ip + 2] << 8) | src[ip + 3];
    const fragment = ((src[ip + 6] & 0x3f) << 8) | src[ip + 7];
    return src[ip + 9] === protocol && fragment === 0 && total === length - ipOffset ? ip + 20 : -1;
  }
  if (src[ip] >> 4 === 6) {
    if (length < ipOffset + 40 + minHeader) return -1;
    const payload = (src[ip + 4] << 8) | src[ip + 5];
    return src[ip + 6] === protocol && payload === length - ipOffset - 40 ? ip + 40 : -1;
  }
  return -1;
}

/**
 * What the TCP and UDP coalescers share: the buffer a superframe is built in, who it is for, how many
 * frames and bytes it holds so far.
 */
export abstract class Coalescer {
  /** The virtio-net header at 0, then the superframe. */
  readonly buffer: Uint8Array;
  /** Who the pending superframe is for (the worker's slot); undefined when none is pending. */
  owner: unknown = undefined;
  /** Frames in the pending superframe, and its length (headers and payload). */
  count = 0;
  length = 0;
  /**
   * The bytes of the frames joined, each counted whole as it was offered (its headers too): what the
   * circuit's counters count, so that they agree with the sender's count of the same frames.
   */
  frameBytes = 0;
  /** The header bytes (link, IP, transport) in front of the payload of every frame joined. */
  #headerBytes = 0;

  /**
   * `buffer`, when given, is where superframes are built (at least COALESCING_BUFFER_SIZE bytes): a view
   * of the same ArrayBuffer as the frames offered lets them be copied without allocating.
   */
  constructor(buffer = new Uint8Array(COALESCING_BUFFER_SIZE)) {
    if (buffer.length < COALESCING_BUFFER_SIZE) {
      throw new RangeError(`A coalescing buffer needs ${COALESCING_BUFFER_SIZE} bytes`);
    }
    this.buffer = buffer;
  }

  /**
   * Offers the frame at `src[at .. at + length)` (IP header at `ipOffset` within it). "started" or
   * "appended": taken. "appended-last": taken, and the superframe must be written now. "flush-first":
   * write the pending superframe, then offer again. "ineligible": write this frame as it is.
   */
  abstract offer(src: Uint8Array, at: number, length: number, ipOffset: number, owner: unknown): Offer;

  /**
   * Makes the pending superframe ready to write, with its virtio-net header (a zero one for a lone frame).
   * Returns the bytes to write from buffer[0] (0 when nothing is pending) and forgets the superframe.
   */
  abstract finish(): number;

  /** Where the IP header starts in the pending superframe's frames, and whether it is IPv4. */
  protected ipOffset = 0;
  protected v4 = false;
  /** The payload size of the first frame: every later one is at most this. */
  protected gsoSize = 0;
  /** A frame shorter than gsoSize joined: it must be the last. */
  protected lastShort = false;

  /**
   * Prepares the joined superframe in `buffer` (see prepareSuperframe) through `frame`, the coalescer's own
   * Superframe, filled in here so that none is allocated per superframe.
   */
  protected prepareJoined(frame: Superframe, l4Offset: number, headerLength: number, gsoType: number): void {
    frame.v4 = this.v4;
    frame.ipOffset = this.ipOffset;
    frame.l4Offset = l4Offset;
    frame.total = this.length;
    frame.headerLength = headerLength;
    frame.gsoType = gsoType;
    frame.gsoSize = this.gsoSize;
    prepareSuperframe(this.buffer, frame);
  }

  /** Starts a superframe for `owner` with the frame at `src[at .. at + length)`, of `payload` bytes. */
  protected begin(
    src: Uint8Array,
    at: number,
    length: number,
    owner: unknown,
    ipOffset: number,
    v4: boolean,
    payload: number,
  ): void {
    copyBytes(this.buffer, FRAME_START, src, at, at + length);
    this.owner = owner;
    this.count = 1;
    this.length = length;
    this.frameBytes = length;
    this.#headerBytes = length - payload;
    this.ipOffset = ipOffset;
    this.v4 = v4;
    this.gsoSize = payload;
    this.lastShort = false;
  }

  /** Whether a frame of `payload` bytes may follow the pending ones, as far as both coalescers care. */
  protected fits(owner: unknown, ipOffset: number, v4: boolean, payload: number): boolean {
    return owner === this.owner && v4 === this.v4 && ipOffset === this.ipOffset && payload <= this.gsoSize &&
      !this.lastShort && this.length + payload <= MAX_SUPERFRAME;
  }

  /**
   * Appends `payload` bytes, `src[from .. from + payload)`, to the pending superframe: the payload of a
   * frame whose headers are as long as the first one's (both coalescers check that before).
   */
  protected append(src: Uint8Array, from: number, payload: number): void {
    copyBytes(this.buffer, FRAME_START + this.length, src, from, from + payload);
    this.length += payload;
    this.frameBytes += this.#headerBytes + payload;
    this.count++;
    this.lastShort = payload < this.gsoSize;
  }

  /** The answer for a frame that cannot join: write the pending superframe first, if there is one. */
  protected refuse(): Offer {
    return this.count ? "flush-first" : "ineligible";
  }

  /** Whether bytes [from, to) of the pending superframe equal those of the frame at `at` in `src`. */
  protected same(src: Uint8Array, at: number, from: number, to: number): boolean {
    const b = this.buffer;
    for (let i = from; i < to; i++) if (b[FRAME_START + i] !== src[at + i]) return false;
    return true;
  }
}

export class TcpCoalescer extends Coalescer {
  #tcpOffset = 0;
  #headerLength = 0;
  /**
   * The sequence number the next segment must carry, as a signed 32-bit integer in a typed array: above
   * 2^31 an unsigned one would change the field's representation in V8 and throw away the optimized code
   * of the whole receive path at once (a burst of recompiling, measured in the middle of a UDP test).
   */
  readonly #nextSeq = new Int32Array(1);
  /** Filled in for each superframe by prepareJoined(). */
  readonly #superframe = newSuperframe(6, 16);

  /**
   * Offers the frame at `src[at .. at + length)` (IP header at `ipOffset` within it). "started" or
   * "appended": taken. "appended-last": taken, and the superframe must be written now (PSH). "flush-first":
   * write the pending superframe, then offer again. "ineligible": write this frame as it is.
   */
  offer(src: Uint8Array, at: number, length: number, ipOffset: number, owner: unknown): Offer {
    const tcp = transportAt(src, at, length, ipOffset, 6, 20);
    if (tcp < 0) return this.refuse();
    const v4 = src[at + ipOffset] === 0x45;
    const tcpHeader = (src[tcp + 12] >> 4) * 4;
    const headerLength = tcp - at + tcpHeader;
    const payload = length - headerLength;
    const flags = src[tcp + 13];
    if (tcpHeader < 20 || payload <= 0 || (flags & ~(TCP_ACK | TCP_PSH)) !== 0 || !(flags & TCP_ACK)) {
      return this.refuse();
    }
    const seq = (src[tcp + 4] << 24) | (src[tcp + 5] << 16) | (src[tcp + 6] << 8) | src[tcp + 7];
    if (this.count === 0) {
      this.begin(src, at, length, owner, ipOffset, v4, payload);
      this.#tcpOffset = tcp - at;
      this.#headerLength = headerLength;
      this.#nextSeq[0] = (seq + payload) | 0;
      return flags & TCP_PSH ? "appended-last" : "started";
    }
    if (
      !this.fits(owner, ipOffset, v4, payload) || headerLength !== this.#headerLength ||
      seq !== this.#nextSeq[0] || !this.#sameFlow(src, at, tcp - at, tcpHeader)
    ) {
      return "flush-first";
    }
    this.append(src, at + headerLength, payload);
    this.#nextSeq[0] = (seq + payload) | 0;
    if (flags & TCP_PSH) {
      this.buffer[FRAME_START + this.#tcpOffset + 13] |= TCP_PSH;
      return "appended-last";
    }
    return "appended";
  }

  /** Headers that must match for a segment to join: all but lengths, ids, checksums and sequence. */
  #sameFlow(src: Uint8Array, at: number, tcpOffset: number, tcpHeader: number): boolean {
    const ip = this.ipOffset;
    const ipSame = this.v4
      ? this.same(src, at, 0, ip + 2) && this.same(src, at, ip + 6, ip + 10) &&
        this.same(src, at, ip + 12, ip + 20)
      : this.same(src, at, 0, ip + 4) && this.same(src, at, ip + 6, ip + 40);
    // Ports, ack, header length and window, then the options byte for byte.
    return ipSame && this.same(src, at, tcpOffset, tcpOffset + 4) &&
      this.same(src, at, tcpOffset + 8, tcpOffset + 13) &&
      this.same(src, at, tcpOffset + 14, tcpOffset + 16) &&
      this.same(src, at, tcpOffset + 20, tcpOffset + tcpHeader) &&
      (this.buffer[FRAME_START + tcpOffset + 13] & TCP_PSH) === 0;
  }

  /**
   * Makes the pending superframe ready to write: lengths, IPv4 header checksum, the TCP checksum field
   * holding the pseudo-header sum, and the virtio-net header (or a zero one for a lone segment). Returns
   * the bytes to write from buffer[0] (0 when nothing is pending) and forgets the superframe.
   */
  finish(): number {
    if (this.count === 0) return 0;
    const total = this.length;
    this.buffer.fill(0, 0, VnetHdr.SIZE);
    if (this.count > 1) {
      const gsoType = this.v4 ? VnetHdr.GSO_TCPV4 : VnetHdr.GSO_TCPV6;
      this.prepareJoined(this.#superframe, this.#tcpOffset, this.#headerLength, gsoType);
    }
    this.count = 0;
    this.owner = undefined;
    return VnetHdr.SIZE + total;
  }
}

/** What prepareSuperframe() needs to know of a joined superframe. */
interface Superframe {
  v4: boolean;
  ipOffset: number;
  /** Where the TCP or UDP header starts in the frame. */
  l4Offset: number;
  /** The frame's length (headers and payload). */
  total: number;
  protocol: number;
  /** Where the checksum field is in the TCP or UDP header. */
  checkAt: number;
  gsoType: number;
  headerLength: number;
  gsoSize: number;
}

/** A Superframe for prepareJoined() to fill in, for TCP or UDP (`protocol`) with its checksum at `checkAt`. */
function newSuperframe(protocol: number, checkAt: number): Superframe {
  return {
    v4: false,
    ipOffset: 0,
    l4Offset: 0,
    total: 0,
    protocol,
    checkAt,
    gsoType: 0,
    headerLength: 0,
    gsoSize: 0,
  };
}

/**
 * Makes a joined superframe (at FRAME_START in `b`) ready to write: the IP length (and IPv4 header
 * checksum), the transport checksum field holding the pseudo-header sum, and the virtio-net header at 0
 * saying "segment by gsoSize, complete the checksum from l4Offset".
 */
function prepareSuperframe(b: Uint8Array, frame: Superframe): void {
  const ip = FRAME_START + frame.ipOffset;
  const l4 = FRAME_START + frame.l4Offset;
  const l4Length = frame.total - frame.l4Offset;
  let pseudo: number;
  if (frame.v4) {
    const ipTotal = frame.total - frame.ipOffset;
    b[ip + 2] = ipTotal >> 8;
    b[ip + 3] = ipTotal & 0xff;
    b[ip + 10] = 0;
    b[ip + 11] = 0;
    const check = finishChecksum(onesSum(b, ip, ip + 20));
    b[ip + 10] = check >> 8;
    b[ip + 11] = check & 0xff;
    pseudo = onesSum(b, ip + 12, ip + 20, frame.protocol + l4Length);
  } else {
    const payloadLength = frame.total - frame.ipOffset - 40;
    b[ip + 4] = payloadLength >> 8;
    b[ip + 5] = payloadLength & 0xff;
    pseudo = onesSum(b, ip + 8, ip + 40, frame.protocol + l4Length);
  }
  // The kernel completes the checksum from csum_start, starting from the folded pseudo-header sum.
  const folded = ~finishChecksum(pseudo) & 0xffff;
  b[l4 + frame.checkAt] = folded >> 8;
  b[l4 + frame.checkAt + 1] = folded & 0xff;
  b[VnetHdr.FLAGS] = VnetHdr.F_NEEDS_CSUM;
  b[VnetHdr.GSO_TYPE] = frame.gsoType;
  b[VnetHdr.HDR_LEN] = frame.headerLength & 0xff;
  b[VnetHdr.HDR_LEN + 1] = frame.headerLength >> 8;
  b[VnetHdr.GSO_SIZE] = frame.gsoSize & 0xff;
  b[VnetHdr.GSO_SIZE + 1] = frame.gsoSize >> 8;
  b[VnetHdr.CSUM_START] = frame.l4Offset & 0xff;
  b[VnetHdr.CSUM_START + 1] = frame.l4Offset >> 8;
  b[VnetHdr.CSUM_OFFSET] = frame.checkAt;
  b[VnetHdr.CSUM_OFFSET + 1] = 0;
}

/** The most datagrams joined into one UDP superframe (the kernel's UDP_MAX_SEGMENTS on older kernels). */
export const MAX_UDP_SEGMENTS = 64;

/**
 * UDP receive coalescing for devices that take UDP segmentation offload (USO, Linux 6.2 and later):
 * consecutive datagrams of one flow (same addresses, ports and IP header fields but for lengths, ids and
 * checksums), all of one payload size but the last, which may be shorter, are joined into one superframe
 * written with "UDP, segment size N", so that the device takes one write instead of dozens. The kernel
 * cuts it up again before any socket or next hop sees it. Nothing allocated per frame.
 */
export class UdpCoalescer extends Coalescer {
  #udpOffset = 0;
  /** Filled in for each superframe by prepareJoined(). */
  readonly #superframe = newSuperframe(17, 6);

  readonly #maxSegments: number;

  /** `buffer` as for TcpCoalescer; at most `maxSegments` datagrams (up to MAX_UDP_SEGMENTS) are joined. */
  constructor(buffer = new Uint8Array(COALESCING_BUFFER_SIZE), maxSegments = MAX_UDP_SEGMENTS) {
    super(buffer);
    if (!(maxSegments >= 1 && maxSegments <= MAX_UDP_SEGMENTS)) {
      throw new RangeError(`A UDP superframe joins 1 to ${MAX_UDP_SEGMENTS} datagrams`);
    }
    this.#maxSegments = maxSegments;
  }

  /** As TcpCoalescer.offer(), for UDP datagrams ("appended-last" is never returned). */
  offer(src: Uint8Array, at: number, length: number, ipOffset: number, owner: unknown): Offer {
    const udp = transportAt(src, at, length, ipOffset, 17, 8);
    if (udp < 0) return this.refuse();
    const v4 = src[at + ipOffset] === 0x45;
    const udpLength = (src[udp + 4] << 8) | src[udp + 5];
    const payload = udpLength - 8;
    if (udpLength !== at + length - udp || payload <= 0) return this.refuse();
    if (this.count === 0) {
      this.begin(src, at, length, owner, ipOffset, v4, payload);
      this.#udpOffset = udp - at;
      return "started";
    }
    if (
      !this.fits(owner, ipOffset, v4, payload) || udp - at !== this.#udpOffset ||
      this.count >= this.#maxSegments || !this.#sameFlow(src, at)
    ) {
      return "flush-first";
    }
    this.append(src, udp + 8, payload);
    return "appended";
  }

  /** The link header, the IP header but for lengths, id and checksum, and the ports. */
  #sameFlow(src: Uint8Array, at: number): boolean {
    const ip = this.ipOffset;
    const udp = this.#udpOffset;
    return this.v4
      ? this.same(src, at, 0, ip + 2) && this.same(src, at, ip + 6, ip + 10) &&
        this.same(src, at, ip + 12, udp + 4)
      : this.same(src, at, 0, ip + 4) && this.same(src, at, ip + 6, udp + 4);
  }

  /** As TcpCoalescer.finish(); a joined superframe also gets its UDP length. */
  finish(): number {
    if (this.count === 0) return 0;
    const total = this.length;
    const b = this.buffer;
    b.fill(0, 0, VnetHdr.SIZE);
    if (this.count > 1) {
      const udp = FRAME_START + this.#udpOffset;
      const udpLength = total - this.#udpOffset;
      b[udp + 4] = udpLength >> 8;
      b[udp + 5] = udpLength & 0xff;
      this.prepareJoined(this.#superframe, this.#udpOffset, this.#udpOffset + 8, VnetHdr.GSO_UDP_L4);
    }
    this.count = 0;
    this.owner = undefined;
    return VnetHdr.SIZE + total;
  }
}
