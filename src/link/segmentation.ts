/**
 * TCP segmentation and checksums in userspace, for devices opened with TCP segmentation offload: the
 * kernel hands over a TCP superframe (up to 64 KiB) with a virtio-net header, and VELA cuts it into
 * ordinary frames that each fit the link MTU, as the NIC would. Every frame on the wire stays a plain,
 * fully checksummed frame, so the far end needs no offload. Pure code on byte arrays; nothing allocated.
 */

import { VnetHdr } from "../../ffi/structs.ts";
import { copyBytes, onesSum } from "../packet/bytes.ts";

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/** EtherTypes of the VLAN tags a frame may carry before its payload: 802.1Q, 802.1ad (QinQ), and the old QinQ. */
const VLAN_TAG_TYPES = [0x8100, 0x88a8, 0x9100];

/**
 * Where the payload (the IP header) of the Ethernet frame in frame[at, at+length) starts, counted from
 * `at`: after the 14-byte header and each VLAN tag (4 bytes; at most two are looked through, 802.1Q inside
 * QinQ). The frame's own EtherType is the two bytes before it.
 */
export function ethernetPayloadOffset(frame: Uint8Array, length: number, at = 0): number {
  let type = 12;
  for (let tags = 0; tags < 2 && type + 2 <= length; tags++) {
    if (!VLAN_TAG_TYPES.includes((frame[at + type] << 8) | frame[at + type + 1])) break;
    type += 4;
  }
  return type + 2;
}

/** Folds a sum to 16 bits and complements it: the Internet checksum. */
export function finishChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/**
 * Completes a checksum the kernel left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM): the sum from csumStart to
 * the end, with the field at csumStart + csumOffset holding the pseudo-header sum, stored in that field.
 */
export function completeChecksum(
  frame: Uint8Array,
  length: number,
  csumStart: number,
  csumOffset: number,
): void {
  const field = csumStart + csumOffset;
  if (field + 2 > length) return;
  let checksum = finishChecksum(onesSum(frame, csumStart, length));
  // A UDP checksum of 0 means "none"; send 0xffff instead (RFC 768). For TCP 0 cannot come out of ~.
  if (checksum === 0) checksum = 0xffff;
  frame[field] = checksum >> 8;
  frame[field + 1] = checksum & 0xff;
}

/** Where segmentation writes a frame: the buffer, and the offset of the frame in it. */
export interface SegmentSink {
  /** The next free buffer, or undefined when the batch is full. */
  next(): Uint8Array | undefined;
  /** The frame written into the last buffer from `offset` has `length` bytes. */
  commit(length: number): void;
}

/**
 * Cuts a TCP superframe (`frame`, `length` bytes, IP header at `ipOffset`) into segments of at most
 * `gsoSize` payload bytes, each written at `offset` in a buffer from `sink`: headers copied, IP length,
 * IPv4 id and header checksum, TCP sequence number, flags and checksum fixed. It starts at segment
 * `from` and stops when the sink is full; it returns how many segments it wrote (0 once all are done), or
 * -1 when the frame is not a TCP superframe it understands (the caller drops it).
 */
export function segmentTcp(
  frame: Uint8Array,
  length: number,
  ipOffset: number,
  tcpOffset: number,
  gsoSize: number,
  offset: number,
  sink: SegmentSink,
  from = 0,
): number {
  if (tcpOffset + 20 > length || gsoSize <= 0) return -1;
  const version = frame[ipOffset] >> 4;
  if (version !== 4 && version !== 6) return -1;
  if (version === 4 && frame[ipOffset + 9] !== 6) return -1;
  if (version === 6 && (frame[ipOffset + 6] !== 6 || tcpOffset !== ipOffset + 40)) return -1;
  const tcpHeaderLength = (frame[tcpOffset + 12] >> 4) * 4;
  const headerLength = tcpOffset + tcpHeaderLength;
  if (tcpHeaderLength < 20 || headerLength > length) return -1;
  const payload = length - headerLength;
  const count = Math.max(1, Math.ceil(payload / gsoSize));
  // Sequence numbers as signed 32-bit integers (see TcpCoalescer in src/link/coalescing.ts): V8 keeps them in
  // registers as int32 and never meets a value it did not expect above 2^31.
  const firstSeq = (frame[tcpOffset + 4] << 24) | (frame[tcpOffset + 5] << 16) | (frame[tcpOffset + 6] << 8) |
    frame[tcpOffset + 7];
  const firstId = version === 4 ? (frame[ipOffset + 4] << 8) | frame[ipOffset + 5] : 0;
  const flags = frame[tcpOffset + 13];
  // The pseudo-header's addresses and protocol are the same for every segment.
  const addressSum = version === 4
    ? onesSum(frame, ipOffset + 12, ipOffset + 20, 6)
    : onesSum(frame, ipOffset + 8, ipOffset + 40, 6);
  let written = 0;
  for (let i = from; i < count; i++) {
    const out = sink.next();
    if (!out) return written;
    const start = headerLength + i * gsoSize;
    const chunk = Math.min(gsoSize, length - start);
    const segmentLength = headerLength + chunk;
    copyBytes(out, offset, frame, 0, headerLength);
    copyBytes(out, offset + headerLength, frame, start, start + chunk);
    const ip = offset + ipOffset;
    const tcp = offset + tcpOffset;
    if (version === 4) {
      const total = segmentLength - ipOffset;
      out[ip + 2] = total >> 8;
      out[ip + 3] = total & 0xff;
      const id = (firstId + i) & 0xffff;
      out[ip + 4] = id >> 8;
      out[ip + 5] = id & 0xff;
      out[ip + 10] = 0;
      out[ip + 11] = 0;
      const ipChecksum = finishChecksum(onesSum(out, ip, ip + (out[ip] & 0x0f) * 4));
      out[ip + 10] = ipChecksum >> 8;
      out[ip + 11] = ipChecksum & 0xff;
    } else {
      const payloadLength = segmentLength - ipOffset - 40;
      out[ip + 4] = payloadLength >> 8;
      out[ip + 5] = payloadLength & 0xff;
    }
    const seq = (firstSeq + i * gsoSize) | 0;
    out[tcp + 4] = seq >>> 24;
    out[tcp + 5] = (seq >>> 16) & 0xff;
    out[tcp + 6] = (seq >>> 8) & 0xff;
    out[tcp + 7] = seq & 0xff;
    let segmentFlags = flags;
    if (i < count - 1) segmentFlags &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) segmentFlags &= ~TCP_CWR;
    out[tcp + 13] = segmentFlags;
    out[tcp + 16] = 0;
    out[tcp + 17] = 0;
    const tcpLength = tcpHeaderLength + chunk;
    const sum = onesSum(out, tcp, offset + segmentLength, addressSum + tcpLength);
    const tcpChecksum = finishChecksum(sum);
    out[tcp + 16] = tcpChecksum >> 8;
    out[tcp + 17] = tcpChecksum & 0xff;
    sink.commit(segmentLength);
    written++;
  }
  return written;
}

/** The fields of a virtio-net header at `at` in `bytes` (little-endian, as on every Linux VELA runs on). */
export function readVnetHeader(bytes: Uint8Array, at = 0): {
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
} {
  return {
    flags: bytes[at + VnetHdr.FLAGS],
    gsoType: bytes[at + VnetHdr.GSO_TYPE] & ~VnetHdr.GSO_ECN,
    gsoSize: bytes[at + VnetHdr.GSO_SIZE] | (bytes[at + VnetHdr.GSO_SIZE + 1] << 8),
    csumStart: bytes[at + VnetHdr.CSUM_START] | (bytes[at + VnetHdr.CSUM_START + 1] << 8),
    csumOffset: bytes[at + VnetHdr.CSUM_OFFSET] | (bytes[at + VnetHdr.CSUM_OFFSET + 1] << 8),
  };
}
