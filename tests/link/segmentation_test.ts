import assert from "node:assert/strict";
import {
  completeChecksum,
  ethernetPayloadOffset,
  finishChecksum,
  readVnetHeader,
  segmentTcp,
} from "../../src/link/segmentation.ts";
import { onesSum } from "../../src/packet/bytes.ts";

/** An Ethernet (optional) + IPv4/IPv6 + TCP superframe with `payload` bytes of a counting pattern. */
function superframe(version: 4 | 6, payload: number, l2 = 0, flags = 0x18): Uint8Array {
  const ipLength = version === 4 ? 20 : 40;
  const frame = new Uint8Array(l2 + ipLength + 20 + payload);
  if (l2) {
    frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, version === 4 ? 0x08 : 0x86, version === 4 ? 0x00 : 0xdd]);
  }
  const ip = l2;
  if (version === 4) {
    frame.set([0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 207, 1, 198, 18, 207, 2], ip);
  } else {
    frame.set([0x60, 0, 0, 0, 0, 0, 6, 64], ip);
    frame.set([0xfd, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], ip + 8);
    frame.set([0xfd, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], ip + 24);
  }
  const tcp = ip + ipLength;
  frame.set(
    [0x30, 0x39, 0x14, 0x51, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1, 0x50, flags | 0x80, 0xff, 0xff],
    tcp,
  );
  for (let i = 0; i < payload; i++) frame[tcp + 20 + i] = i & 0xff;
  return frame;
}

function collect(frame: Uint8Array, l2: number, gso: number, capacity = 1000, offset = 10) {
  const out: Uint8Array[] = [];
  let current: Uint8Array | undefined;
  const sink = {
    next() {
      if (out.length >= capacity) return undefined;
      current = new Uint8Array(offset + 2000);
      return current;
    },
    commit(length: number) {
      out.push(current!.slice(offset, offset + length));
    },
  };
  const ipLength = frame[l2] >> 4 === 4 ? 20 : 40;
  const written = segmentTcp(frame, frame.length, l2, l2 + ipLength, gso, offset, sink);
  return { out, written };
}

function tcpChecksumValid(segment: Uint8Array, ip: number): boolean {
  const v4 = segment[ip] >> 4 === 4;
  const tcp = ip + (v4 ? 20 : 40);
  const tcpLength = segment.length - tcp;
  const pseudo = v4
    ? onesSum(segment, ip + 12, ip + 20, 6 + tcpLength)
    : onesSum(segment, ip + 8, ip + 40, 6 + tcpLength);
  return finishChecksum(onesSum(segment, tcp, segment.length, pseudo)) === 0;
}

for (const [version, l2] of [[4, 0], [4, 14], [6, 0], [6, 14]] as const) {
  Deno.test(`segmentTcp() cuts an IPv${version} superframe${l2 ? " behind Ethernet" : ""} into valid segments`, () => {
    const frame = superframe(version, 5000, l2);
    const { out, written } = collect(frame, l2, 1400);
    assert.equal(written, 4);
    assert.deepEqual(out.map((s) => s.length - l2 - (version === 4 ? 40 : 60)), [1400, 1400, 1400, 800]);
    let payloadAt = 0;
    out.forEach((segment, i) => {
      const view = new DataView(segment.buffer);
      const tcp = l2 + (version === 4 ? 20 : 40);
      if (version === 4) {
        assert.equal(view.getUint16(l2 + 2), segment.length - l2, "IPv4 total length");
        assert.equal(view.getUint16(l2 + 4), 0x1234 + i, "IPv4 id");
        assert.equal(finishChecksum(onesSum(segment, l2, l2 + 20)), 0, "IPv4 header checksum");
      } else {
        assert.equal(view.getUint16(l2 + 4), segment.length - l2 - 40, "IPv6 payload length");
      }
      assert.equal(view.getUint32(tcp + 4), (0xfffffff0 + i * 1400) >>> 0, "sequence number wraps");
      const flags = segment[tcp + 13];
      assert.equal(Boolean(flags & 0x08), i === 3, "PSH only on the last");
      assert.equal(Boolean(flags & 0x80), i === 0, "CWR only on the first");
      assert.ok(tcpChecksumValid(segment, l2), `TCP checksum of segment ${i}`);
      for (let k = tcp + 20; k < segment.length; k++, payloadAt++) assert.equal(segment[k], payloadAt & 0xff);
      if (l2) assert.deepEqual(segment.subarray(0, 14), frame.subarray(0, 14));
    });
  });
}

/** `frame` (Ethernet, untagged) with VLAN tags of `types` put after the MAC addresses, each with vid 7. */
function tagged(frame: Uint8Array, types: number[]): Uint8Array {
  const out = new Uint8Array(frame.length + 4 * types.length);
  out.set(frame.subarray(0, 12));
  types.forEach((type, i) => out.set([type >> 8, type & 0xff, 0, 7], 12 + 4 * i));
  out.set(frame.subarray(12), 12 + 4 * types.length);
  return out;
}

Deno.test("ethernetPayloadOffset() steps over 802.1Q and QinQ tags", () => {
  const plain = superframe(4, 10, 14);
  assert.equal(ethernetPayloadOffset(plain, plain.length), 14);
  assert.equal(ethernetPayloadOffset(tagged(plain, [0x8100]), plain.length + 4), 18);
  assert.equal(ethernetPayloadOffset(tagged(plain, [0x88a8, 0x8100]), plain.length + 8), 22);
});

for (const version of [4, 6] as const) {
  Deno.test(`segmentTcp() cuts an 802.1Q-tagged IPv${version} superframe at the offset after the tag`, () => {
    const frame = tagged(superframe(version, 3000, 14), [0x8100]);
    const ip = ethernetPayloadOffset(frame, frame.length);
    const { out, written } = collect(frame, ip, 1400);
    assert.equal(written, 3);
    out.forEach((segment, i) => {
      assert.deepEqual(segment.subarray(0, 18), frame.subarray(0, 18), "the tag is in every segment");
      assert.ok(tcpChecksumValid(segment, ip), `TCP checksum of segment ${i}`);
    });
  });
}

Deno.test("segmentTcp() stops when the sink is full and resumes where it stopped", () => {
  const frame = superframe(4, 10_000);
  const first = collect(frame, 0, 1000, 4);
  assert.equal(first.written, 4);
  const out: Uint8Array[] = [];
  let current!: Uint8Array;
  const sink = {
    next: () => current = new Uint8Array(2000),
    commit: (length: number) => void out.push(current.slice(0, length)),
  };
  assert.equal(segmentTcp(frame, frame.length, 0, 20, 1000, 0, sink, 4), 6);
  assert.equal(new DataView(out[0].buffer).getUint32(24), (0xfffffff0 + 4000) >>> 0);
  assert.equal(segmentTcp(frame, frame.length, 0, 20, 1000, 0, sink, 10), 0);
});

Deno.test("segmentTcp() refuses what is not a TCP superframe", () => {
  const udp = superframe(4, 3000);
  udp[9] = 17;
  assert.equal(collect(udp, 0, 1400).written, -1);
  const short = superframe(4, 10).subarray(0, 30);
  assert.equal(
    segmentTcp(short, short.length, 0, 20, 1400, 0, { next: () => new Uint8Array(100), commit() {} }),
    -1,
  );
  const notIp = superframe(4, 3000);
  notIp[0] = 0x25;
  assert.equal(collect(notIp, 0, 1400).written, -1);
  assert.equal(collect(superframe(4, 3000), 0, 0).written, -1);
});

Deno.test("completeChecksum() finishes a partial TCP checksum the way the kernel expects", () => {
  const frame = superframe(4, 300);
  const tcpLength = 320;
  // The kernel leaves the pseudo-header sum in the field (CHECKSUM_PARTIAL).
  const pseudo = finishChecksum(onesSum(frame, 12, 20, 6 + tcpLength));
  frame[36] = (~pseudo >> 8) & 0xff;
  frame[37] = ~pseudo & 0xff;
  completeChecksum(frame, frame.length, 20, 16);
  assert.ok(tcpChecksumValid(frame, 0));
});

Deno.test("readVnetHeader() reads a little-endian virtio-net header", () => {
  const header = new Uint8Array([1, 0x81, 66, 0, 0x78, 0x05, 34, 0, 16, 0]);
  assert.deepEqual(readVnetHeader(header), {
    flags: 1,
    gsoType: 1,
    gsoSize: 1400,
    csumStart: 34,
    csumOffset: 16,
  });
});
