/** Ethernet frames for the datapath tests: plain ones and TCP/IPv4 segments of one flow. */

import { onesSum } from "../../src/packet/bytes.ts";
import { finishChecksum } from "../../src/link/segmentation.ts";

/** The destination MAC of every test frame, so that a packet socket can tell them from other traffic. */
export const TEST_MAC = [0x02, 0, 0, 0, 0, 0x0b];

/** An Ethernet frame with EtherType 0x88b5 (local experimental) and `payload` bytes of `fill`. */
export function plainFrame(fill: number, payload = 100): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(14 + payload).fill(fill);
  frame.set([...TEST_MAC, 0x02, 0, 0, 0, 0, 0x0a, 0x88, 0xb5]);
  return frame;
}

/**
 * A TCP/IPv4 frame behind Ethernet, from 198.18.207.1:12345 to 198.18.207.2:5201, sequence `seq`, with
 * `payload` bytes counting from `seq`; checksums complete unless `partial` (then the TCP checksum field
 * holds the pseudo-header sum, as a kernel leaves it for offload).
 */
export function tcpFrame(
  seq: number,
  payload: number,
  flags = 0x10,
  partial = false,
): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(14 + 20 + 20 + payload);
  frame.set([...TEST_MAC, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00]);
  const total = 40 + payload;
  frame.set(
    [0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 207, 1, 198, 18, 207, 2],
    14,
  );
  const ipSum = finishChecksum(onesSum(frame, 14, 34));
  frame[24] = ipSum >> 8;
  frame[25] = ipSum & 0xff;
  frame.set([0x30, 0x39, 0x14, 0x51, seq >>> 24, (seq >>> 16) & 0xff, (seq >>> 8) & 0xff, seq & 0xff], 34);
  frame.set([0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0], 42);
  for (let i = 0; i < payload; i++) frame[54 + i] = (seq + i) & 0xff;
  const pseudo = onesSum(frame, 26, 34, 6 + 20 + payload);
  const sum = partial
    ? (~finishChecksum(pseudo) & 0xffff)
    : finishChecksum(onesSum(frame, 34, 54 + payload, pseudo));
  frame[50] = sum >> 8;
  frame[51] = sum & 0xff;
  return frame;
}

/** A virtio-net header for a TCP/IPv4 superframe behind Ethernet, `gsoSize` payload bytes per segment. */
export function tcpSuperHeader(gsoSize: number): Uint8Array<ArrayBuffer> {
  // flags NEEDS_CSUM, gso_type TCPV4, hdr_len 54, gso_size, csum_start 34, csum_offset 16 (little-endian)
  return new Uint8Array([1, 1, 54, 0, gsoSize & 0xff, gsoSize >> 8, 34, 0, 16, 0]);
}

/** `frame` with an 802.1Q tag for `vid` put after its MAC addresses (4 bytes longer). */
export function vlanTagged(frame: Uint8Array, vid: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(frame.length + 4);
  out.set(frame.subarray(0, 12));
  out.set([0x81, 0x00, vid >> 8, vid & 0xff], 12);
  out.set(frame.subarray(12), 16);
  return out;
}

/** tcpSuperHeader() for a superframe with one VLAN tag: every offset 4 bytes further. */
export function taggedTcpSuperHeader(gsoSize: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array([1, 1, 58, 0, gsoSize & 0xff, gsoSize >> 8, 38, 0, 16, 0]);
}

/** The TCP payload of a frame made by tcpFrame() (or a superframe joined from them). */
export function tcpPayload(frame: Uint8Array): Uint8Array {
  return frame.subarray(54);
}
