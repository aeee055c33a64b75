import assert from "node:assert/strict";
import {
  COALESCING_BUFFER_SIZE,
  FRAME_START,
  MAX_UDP_SEGMENTS,
  TcpCoalescer,
  UdpCoalescer,
} from "../../src/link/coalescing.ts";
import { finishChecksum, segmentTcp } from "../../src/link/segmentation.ts";
import { onesSum } from "../../src/packet/bytes.ts";
import { VnetHdr } from "../../ffi/structs.ts";

/** An IPv4 or IPv6 TCP frame (optionally behind Ethernet) carrying `payload` counting bytes. */
function tcpFrame(version: 4 | 6, payload: number, l2 = 0, flags = 0x10, seq = 1000): Uint8Array {
  const ipLength = version === 4 ? 20 : 40;
  const frame = new Uint8Array(l2 + ipLength + 32 + payload);
  if (l2) {
    frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, version === 4 ? 0x08 : 0x86, version === 4 ? 0 : 0xdd]);
  }
  const ip = l2;
  if (version === 4) {
    const total = ipLength + 32 + payload;
    frame.set([
      0x45,
      0,
      total >> 8,
      total & 0xff,
      0,
      1,
      0x40,
      0,
      64,
      6,
      0,
      0,
      198,
      18,
      207,
      1,
      198,
      18,
      207,
      2,
    ], ip);
  } else {
    const p = 32 + payload;
    frame.set([0x60, 0, 0, 0, p >> 8, p & 0xff, 6, 64], ip);
    frame.set([0xfd, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], ip + 8);
    frame.set([0xfd, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], ip + 24);
  }
  const tcp = ip + ipLength;
  frame.set([0x30, 0x39, 0x14, 0x51, seq >>> 24, (seq >> 16) & 0xff, (seq >> 8) & 0xff, seq & 0xff], tcp);
  frame.set([0, 0, 0, 7, 0x80, flags, 0x01, 0x00, 0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3], tcp + 8);
  for (let i = 0; i < payload; i++) frame[tcp + 32 + i] = (seq + i) & 0xff;
  return frame;
}

function segments(frame: Uint8Array, l2: number, gso: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let current!: Uint8Array;
  const ipLength = frame[l2] >> 4 === 4 ? 20 : 40;
  segmentTcp(frame, frame.length, l2, l2 + ipLength, gso, 0, {
    next: () => current = new Uint8Array(4000),
    commit: (length) => void out.push(current.slice(0, length)),
  });
  return out;
}

for (const [version, l2] of [[4, 0], [4, 14], [6, 0], [6, 14]] as const) {
  Deno.test(`TcpCoalescer joins IPv${version} segments${l2 ? " behind Ethernet" : ""} back into the superframe`, () => {
    const original = tcpFrame(version, 10_000, l2, 0x18);
    const pieces = segments(original, l2, 1400);
    assert.equal(pieces.length, 8);
    const coalescer = new TcpCoalescer();
    const offers = pieces.map((piece) => coalescer.offer(piece, 0, piece.length, l2, "slot"));
    assert.deepEqual(offers, ["started", ...Array(6).fill("appended"), "appended-last"]);
    assert.equal(coalescer.count, 8);
    const sum = pieces.reduce((total, piece) => total + piece.length, 0);
    assert.equal(coalescer.frameBytes, sum, "the segments' bytes, each with its headers");
    const n = coalescer.finish();
    assert.equal(n, VnetHdr.SIZE + original.length);
    const out = coalescer.buffer;
    const view = new DataView(out.buffer);
    assert.equal(out[VnetHdr.FLAGS], VnetHdr.F_NEEDS_CSUM);
    assert.equal(out[VnetHdr.GSO_TYPE], version === 4 ? VnetHdr.GSO_TCPV4 : VnetHdr.GSO_TCPV6);
    assert.equal(view.getUint16(VnetHdr.GSO_SIZE, true), 1400);
    const tcp = l2 + (version === 4 ? 20 : 40);
    assert.equal(view.getUint16(VnetHdr.CSUM_START, true), tcp);
    assert.equal(view.getUint16(VnetHdr.CSUM_OFFSET, true), 16);
    assert.equal(view.getUint16(VnetHdr.HDR_LEN, true), tcp + 32);
    const frame = out.subarray(FRAME_START, n);
    // Payload, ports, seq of the first segment, flags with PSH: as in the original.
    assert.deepEqual(frame.subarray(tcp + 32), original.subarray(tcp + 32));
    assert.deepEqual(frame.subarray(tcp, tcp + 16), original.subarray(tcp, tcp + 16));
    if (version === 4) assert.equal(finishChecksum(onesSum(frame, l2, l2 + 20)), 0, "IPv4 header checksum");
    // Completing the partial checksum as the kernel would gives a valid TCP checksum.
    const completed = frame.slice();
    const check = finishChecksum(onesSum(completed, tcp, completed.length));
    completed[tcp + 16] = check >> 8;
    completed[tcp + 17] = check & 0xff;
    const pseudo = version === 4
      ? onesSum(completed, l2 + 12, l2 + 20, 6 + completed.length - tcp)
      : onesSum(completed, l2 + 8, l2 + 40, 6 + completed.length - tcp);
    assert.equal(finishChecksum(onesSum(completed, tcp, completed.length, pseudo)), 0, "TCP checksum");
    assert.equal(coalescer.count, 0);
  });
}

Deno.test("TcpCoalescer joins segments across the 2^32 sequence wrap and still asks for a flush on a gap", () => {
  const coalescer = new TcpCoalescer();
  const first = tcpFrame(4, 1000, 0, 0x10, 0xffff_fc18); // 2^32 - 1000: the next segment starts at 0
  assert.equal(coalescer.offer(first, 0, first.length, 0, "slot"), "started");
  const second = tcpFrame(4, 1000, 0, 0x10, 0);
  assert.equal(coalescer.offer(second, 0, second.length, 0, "slot"), "appended");
  const gap = tcpFrame(4, 1000, 0, 0x10, 1001);
  assert.equal(coalescer.offer(gap, 0, gap.length, 0, "slot"), "flush-first");
  const high = tcpFrame(4, 1000, 0, 0x10, 0x8000_0000);
  coalescer.finish();
  assert.equal(coalescer.offer(high, 0, high.length, 0, "slot"), "started");
  const next = tcpFrame(4, 1000, 0, 0x10, 0x8000_03e8);
  assert.equal(coalescer.offer(next, 0, next.length, 0, "slot"), "appended");
  assert.equal(coalescer.count, 2);
});

Deno.test("TcpCoalescer asks for a flush on a gap, another flow, another owner, or a segment after a short one", () => {
  const c = new TcpCoalescer();
  assert.equal(c.offer(tcpFrame(4, 1000, 0, 0x10, 1000), 0, 1052, 0, "a"), "started");
  assert.equal(c.offer(tcpFrame(4, 1000, 0, 0x10, 3000), 0, 1052, 0, "a"), "flush-first", "gap");
  const otherPort = tcpFrame(4, 1000, 0, 0x10, 2000);
  otherPort[21] = 99;
  assert.equal(c.offer(otherPort, 0, 1052, 0, "a"), "flush-first", "other flow");
  assert.equal(c.offer(tcpFrame(4, 1000, 0, 0x10, 2000), 0, 1052, 0, "b"), "flush-first", "other owner");
  assert.equal(c.offer(tcpFrame(4, 500, 0, 0x10, 2000), 0, 552, 0, "a"), "appended", "a short one");
  assert.equal(c.offer(tcpFrame(4, 500, 0, 0x10, 2500), 0, 552, 0, "a"), "flush-first", "after a short one");
  assert.equal(
    c.offer(tcpFrame(4, 1000, 0, 0x10, 2500), 0, 1052, 0, "a"),
    "flush-first",
    "bigger than the first",
  );
  c.finish();
});

Deno.test("TcpCoalescer leaves SYN, FIN, UDP and fragments alone, and a lone segment gets a zero header", () => {
  const c = new TcpCoalescer();
  assert.equal(c.offer(tcpFrame(4, 10, 0, 0x12), 0, 62, 0, "a"), "ineligible", "SYN-ACK");
  assert.equal(c.offer(tcpFrame(4, 10, 0, 0x11), 0, 62, 0, "a"), "ineligible", "FIN");
  const udp = tcpFrame(4, 10);
  udp[9] = 17;
  assert.equal(c.offer(udp, 0, 62, 0, "a"), "ineligible");
  const fragment = tcpFrame(4, 10);
  fragment[6] = 0x20;
  assert.equal(c.offer(fragment, 0, 62, 0, "a"), "ineligible");
  assert.equal(c.offer(tcpFrame(4, 0), 0, 52, 0, "a"), "ineligible", "a pure ACK has no payload");
  assert.equal(c.offer(new Uint8Array(20), 0, 20, 0, "a"), "ineligible", "too short");
  const single = tcpFrame(4, 100);
  assert.equal(c.offer(single, 0, single.length, 0, "a"), "started");
  const n = c.finish();
  assert.equal(n, VnetHdr.SIZE + single.length);
  assert.deepEqual(c.buffer.subarray(0, VnetHdr.SIZE), new Uint8Array(VnetHdr.SIZE));
  assert.deepEqual(c.buffer.subarray(VnetHdr.SIZE, n), single);
  assert.equal(c.finish(), 0);
});

Deno.test("TcpCoalescer builds the same superframe in a view of the ArrayBuffer its segments live in", () => {
  const pieces = segments(tcpFrame(4, 6000, 14, 0x18), 14, 1400);
  const slot = 2000;
  const memory = new ArrayBuffer(pieces.length * slot + COALESCING_BUFFER_SIZE);
  const placed = pieces.map((piece, i) => {
    const view = new Uint8Array(memory, i * slot, slot);
    view.set(piece, 7);
    return view;
  });
  const shared = new TcpCoalescer(new Uint8Array(memory, pieces.length * slot, COALESCING_BUFFER_SIZE));
  const alone = new TcpCoalescer();
  placed.forEach((view, i) => shared.offer(view, 7, pieces[i].length, 14, "slot"));
  pieces.forEach((piece) => alone.offer(piece, 0, piece.length, 14, "slot"));
  const n = alone.finish();
  assert.equal(shared.finish(), n);
  assert.deepEqual(shared.buffer.subarray(0, n), alone.buffer.subarray(0, n));
});

Deno.test("TcpCoalescer refuses a buffer too small for a superframe", () => {
  assert.throws(() => new TcpCoalescer(new Uint8Array(COALESCING_BUFFER_SIZE - 1)), RangeError);
});

/** An IPv4 or IPv6 UDP datagram (optionally behind Ethernet) with `payload` bytes and a valid checksum. */
function udpDatagram(version: 4 | 6, payload: number, l2 = 0, id = 1, fill = 0): Uint8Array {
  const ipLength = version === 4 ? 20 : 40;
  const frame = new Uint8Array(l2 + ipLength + 8 + payload);
  if (l2) {
    frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, version === 4 ? 0x08 : 0x86, version === 4 ? 0 : 0xdd]);
  }
  const ip = l2;
  if (version === 4) {
    const total = ipLength + 8 + payload;
    frame.set([0x45, 0, total >> 8, total & 0xff, id >> 8, id & 0xff, 0x40, 0, 64, 17], ip);
    frame.set([198, 18, 207, 1, 198, 18, 207, 2], ip + 12);
    const check = finishChecksum(onesSum(frame, ip, ip + 20));
    frame.set([check >> 8, check & 0xff], ip + 10);
  } else {
    frame.set([0x60, 0, 0, 0, (8 + payload) >> 8, (8 + payload) & 0xff, 17, 64], ip);
    frame.set([0xfd, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], ip + 8);
    frame.set([0xfd, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], ip + 24);
  }
  const udp = ip + ipLength;
  frame.set([0x30, 0x39, 0x14, 0x51, (8 + payload) >> 8, (8 + payload) & 0xff], udp);
  for (let i = 0; i < payload; i++) frame[udp + 8 + i] = (fill + i) & 0xff;
  setUdpChecksum(frame, ip, udp);
  return frame;
}

function setUdpChecksum(frame: Uint8Array, ip: number, udp: number): void {
  frame[udp + 6] = 0;
  frame[udp + 7] = 0;
  const length = frame.length - udp;
  const pseudo = frame[ip] >> 4 === 4
    ? onesSum(frame, ip + 12, ip + 20, 17 + length)
    : onesSum(frame, ip + 8, ip + 40, 17 + length);
  const check = finishChecksum(onesSum(frame, udp, frame.length, pseudo)) || 0xffff;
  frame[udp + 6] = check >> 8;
  frame[udp + 7] = check & 0xff;
}

/** Cuts a UDP superframe as the kernel's UDP GSO does: headers copied, lengths, ids and checksums redone. */
function segmentUdpAsTheKernel(superframe: Uint8Array, header: Uint8Array, l2: number): Uint8Array[] {
  const view = new DataView(header.buffer, header.byteOffset);
  assert.equal(header[VnetHdr.GSO_TYPE], VnetHdr.GSO_UDP_L4);
  assert.equal(header[VnetHdr.FLAGS], VnetHdr.F_NEEDS_CSUM);
  const gso = view.getUint16(VnetHdr.GSO_SIZE, true);
  const udp = view.getUint16(VnetHdr.CSUM_START, true);
  assert.equal(view.getUint16(VnetHdr.CSUM_OFFSET, true), 6);
  assert.equal(view.getUint16(VnetHdr.HDR_LEN, true), udp + 8);
  const v4 = superframe[l2] >> 4 === 4;
  const firstId = (superframe[l2 + 4] << 8) | superframe[l2 + 5];
  const out: Uint8Array[] = [];
  for (let at = udp + 8, k = 0; at < superframe.length; at += gso, k++) {
    const chunk = Math.min(gso, superframe.length - at);
    const segment = new Uint8Array(udp + 8 + chunk);
    segment.set(superframe.subarray(0, udp + 8));
    segment.set(superframe.subarray(at, at + chunk), udp + 8);
    if (v4) {
      const total = segment.length - l2;
      segment.set([total >> 8, total & 0xff, (firstId + k) >> 8, (firstId + k) & 0xff], l2 + 2);
      segment.set([0, 0], l2 + 10);
      const check = finishChecksum(onesSum(segment, l2, l2 + 20));
      segment.set([check >> 8, check & 0xff], l2 + 10);
    } else {
      segment.set([(8 + chunk) >> 8, (8 + chunk) & 0xff], l2 + 4);
    }
    segment.set([(8 + chunk) >> 8, (8 + chunk) & 0xff], udp + 4);
    setUdpChecksum(segment, l2, udp);
    out.push(segment);
  }
  return out;
}

for (const [version, l2] of [[4, 0], [4, 14], [6, 0], [6, 14]] as const) {
  Deno.test(`UdpCoalescer joins IPv${version} datagrams${l2 ? " behind Ethernet" : ""} that the kernel cuts back as they were`, () => {
    const datagrams = [0, 1, 2, 3, 4].map((k) =>
      udpDatagram(version, k < 4 ? 1200 : 700, l2, 100 + k, k * 7)
    );
    const coalescer = new UdpCoalescer();
    const offers = datagrams.map((d) => coalescer.offer(d, 0, d.length, l2, "slot"));
    assert.deepEqual(offers, ["started", "appended", "appended", "appended", "appended"]);
    assert.equal(coalescer.frameBytes, datagrams.reduce((total, d) => total + d.length, 0));
    const n = coalescer.finish();
    const header = coalescer.buffer.subarray(0, VnetHdr.SIZE);
    const superframe = coalescer.buffer.slice(FRAME_START, n);
    assert.equal(new DataView(header.buffer).getUint16(VnetHdr.GSO_SIZE, true), 1200);
    assert.deepEqual(segmentUdpAsTheKernel(superframe, header, l2), datagrams);
    // Completing the partial checksum over the whole superframe, as the kernel would, gives a valid one.
    const udp = l2 + (version === 4 ? 20 : 40);
    const check = finishChecksum(onesSum(superframe, udp, superframe.length));
    superframe.set([check >> 8, check & 0xff], udp + 6);
    const pseudo = version === 4
      ? onesSum(superframe, l2 + 12, l2 + 20, 17 + superframe.length - udp)
      : onesSum(superframe, l2 + 8, l2 + 40, 17 + superframe.length - udp);
    assert.equal(finishChecksum(onesSum(superframe, udp, superframe.length, pseudo)), 0, "UDP checksum");
    if (version === 4) {
      assert.equal(finishChecksum(onesSum(superframe, l2, l2 + 20)), 0, "IPv4 header checksum");
    }
  });
}

Deno.test("UdpCoalescer asks for a flush on another flow, another owner, a bigger datagram, or one after a short one", () => {
  const c = new UdpCoalescer();
  const offer = (d: Uint8Array, owner = "a") => c.offer(d, 0, d.length, 0, owner);
  assert.equal(offer(udpDatagram(4, 1000)), "started");
  const otherPort = udpDatagram(4, 1000);
  otherPort[23] = 99;
  assert.equal(offer(otherPort), "flush-first", "other flow");
  assert.equal(offer(udpDatagram(4, 1000), "b"), "flush-first", "other owner");
  assert.equal(offer(udpDatagram(4, 1001)), "flush-first", "bigger than the first");
  assert.equal(offer(udpDatagram(4, 500)), "appended", "a short one");
  assert.equal(offer(udpDatagram(4, 500)), "flush-first", "after a short one");
  c.finish();
  assert.equal(offer(udpDatagram(4, 100)), "started");
  for (let k = 1; k < MAX_UDP_SEGMENTS; k++) assert.equal(offer(udpDatagram(4, 100)), "appended");
  assert.equal(offer(udpDatagram(4, 100)), "flush-first", "at most MAX_UDP_SEGMENTS");
  c.finish();
});

Deno.test("UdpCoalescer leaves TCP, fragments and empty datagrams alone, and a lone datagram gets a zero header", () => {
  const c = new UdpCoalescer();
  const tcp = tcpFrame(4, 10);
  assert.equal(c.offer(tcp, 0, tcp.length, 0, "a"), "ineligible", "TCP");
  const fragment = udpDatagram(4, 100);
  fragment[6] = 0x20;
  assert.equal(c.offer(fragment, 0, fragment.length, 0, "a"), "ineligible", "a fragment");
  const empty = udpDatagram(4, 0);
  assert.equal(c.offer(empty, 0, empty.length, 0, "a"), "ineligible", "no payload");
  const lying = udpDatagram(6, 100);
  lying[45] = 200;
  assert.equal(
    c.offer(lying, 0, lying.length, 0, "a"),
    "ineligible",
    "a UDP length that is not the datagram's",
  );
  const single = udpDatagram(6, 100, 14);
  assert.equal(c.offer(single, 0, single.length, 14, "a"), "started");
  const n = c.finish();
  assert.deepEqual(c.buffer.subarray(0, VnetHdr.SIZE), new Uint8Array(VnetHdr.SIZE));
  assert.deepEqual(c.buffer.subarray(VnetHdr.SIZE, n), single);
  assert.equal(c.finish(), 0);
});

Deno.test("UdpCoalescer joins at most the datagrams it was made for, 1 to MAX_UDP_SEGMENTS", () => {
  const c = new UdpCoalescer(undefined, 4);
  const datagram = udpDatagram(6, 300);
  const offers = [0, 1, 2, 3, 4].map(() => c.offer(datagram, 0, datagram.length, 0, "a"));
  assert.deepEqual(offers, ["started", "appended", "appended", "appended", "flush-first"]);
  assert.throws(() => new UdpCoalescer(undefined, 0), RangeError);
  assert.throws(() => new UdpCoalescer(undefined, MAX_UDP_SEGMENTS + 1), RangeError);
});
