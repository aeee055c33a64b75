import assert from "node:assert/strict";
import {
  IfReq,
  ifreq,
  ifreqFlags,
  ifreqInt,
  ifreqName,
  ifreqWithFlags,
  ifreqWithHardwareAddress,
  ifreqWithInet4,
  ifreqWithInt,
  in6Ifreq,
  Linux,
  pollFds,
  pollRevents,
  SchedAttr,
  schedAttr,
  schedAttrWithSlice,
  sockaddrIn,
  sockaddrIn6,
  validInterfaceName,
} from "../ffi/structs.ts";
import { ipv4Netmask } from "../ffi/netconfig.ts";
import { tunFlags } from "../ffi/tun.ts";

const encoder = new TextEncoder();

function bytesAt(bytes: Uint8Array, offset: number, length: number): number[] {
  return Array.from(bytes.subarray(offset, offset + length));
}

// --- ifreq -----------------------------------------------------------------------------------------

Deno.test("ifreq() is 40 zeroed bytes with the name at offset 0", () => {
  const { bytes, view } = ifreq("vela3");
  assert.equal(bytes.length, 40);
  assert.equal(IfReq.SIZE, 40);
  assert.deepEqual(bytesAt(bytes, 0, 5), Array.from(encoder.encode("vela3")));
  assert.ok(bytes.subarray(5).every((b) => b === 0), "the rest is zero, so the name is NUL-terminated");
  assert.equal(view.buffer, bytes.buffer);
  assert.equal(view.byteLength, 40);
});

Deno.test("ifreq() takes a 15-byte name, leaving the 16th byte as its NUL", () => {
  const { bytes } = ifreq("abcdefghijklmno");
  assert.deepEqual(bytesAt(bytes, 0, 15), Array.from(encoder.encode("abcdefghijklmno")));
  assert.equal(bytes[15], 0);
});

Deno.test("ifreq() takes a name with %d for the kernel to number", () => {
  assert.equal(ifreqName(ifreq("vela%d").bytes), "vela%d");
});

Deno.test("ifreq() rejects names of 16 bytes or more", () => {
  assert.throws(() => ifreq("abcdefghijklmnop"), RangeError);
  assert.throws(() => ifreq("a".repeat(40)), RangeError);
  // Fifteen characters but more than 15 bytes in UTF-8.
  assert.throws(() => ifreq("é".repeat(8)), RangeError);
});

Deno.test("ifreq() rejects names with a space, a slash, a colon or nothing at all", () => {
  for (const name of ["vela 3", "vela\t3", "vela/3", "vela:3", "", ".", ".."]) {
    assert.throws(() => ifreq(name), RangeError, JSON.stringify(name));
  }
});

Deno.test("validInterfaceName() accepts 1 to 15 bytes without space, slash or colon", () => {
  for (const name of ["v", "vela3", "vela255", "abcdefghijklmno", "vela-x_y.z"]) {
    assert.equal(validInterfaceName(name), true, name);
  }
  for (const name of ["", "abcdefghijklmnop", "a b", "a/b", "a:b", ".", ".."]) {
    assert.equal(validInterfaceName(name), false, name);
  }
});

Deno.test("ifreqWithFlags() puts the flags little-endian at offset 16", () => {
  const bytes = ifreqWithFlags("vela3", Linux.IFF_TAP | Linux.IFF_NO_PI);
  assert.equal(bytes.length, 40);
  assert.equal(Linux.IFF_TAP | Linux.IFF_NO_PI, 0x1002);
  assert.deepEqual(bytesAt(bytes, 16, 2), [0x02, 0x10]);
  assert.ok(bytes.subarray(18).every((b) => b === 0));
  assert.equal(ifreqName(bytes), "vela3");
  assert.equal(ifreqFlags(bytes), 0x1002);
});

Deno.test("ifreqWithInt() puts a 32-bit int little-endian at offset 16", () => {
  const bytes = ifreqWithInt("vela3", 1400);
  assert.deepEqual(bytesAt(bytes, 16, 4), [0x78, 0x05, 0, 0]);
  assert.equal(ifreqInt(bytes), 1400);
  assert.deepEqual(bytesAt(ifreqWithInt("vela3", 0x01020304), 16, 4), [4, 3, 2, 1]);
  assert.equal(ifreqInt(ifreqWithInt("vela3", -1)), -1);
});

Deno.test("ifreqWithInet4() puts a sockaddr_in at offset 16", () => {
  const bytes = ifreqWithInet4("vela3", new Uint8Array([198, 18, 207, 1]));
  assert.equal(bytes.length, 40);
  assert.deepEqual(bytesAt(bytes, 16, 2), [2, 0], "AF_INET little-endian");
  assert.deepEqual(bytesAt(bytes, 18, 2), [0, 0], "port 0");
  assert.deepEqual(bytesAt(bytes, 20, 4), [198, 18, 207, 1]);
  assert.ok(bytes.subarray(24).every((b) => b === 0));
  assert.equal(ifreqName(bytes), "vela3");
});

Deno.test("ifreqName() reads back a NUL-terminated name", () => {
  const bytes = new Uint8Array(40);
  bytes.set(encoder.encode("vela12"));
  bytes[20] = 0x41; // union bytes do not leak into the name
  assert.equal(ifreqName(bytes), "vela12");
  assert.equal(ifreqName(new Uint8Array(40)), "");
});

Deno.test("ifreqName() reads a name that fills all 16 bytes without a NUL", () => {
  const bytes = new Uint8Array(40);
  bytes.set(encoder.encode("abcdefghijklmnop"));
  bytes[16] = 0x58;
  assert.equal(ifreqName(bytes), "abcdefghijklmnop");
});

Deno.test("ifreqFlags() and ifreqInt() read a view into a larger buffer", () => {
  const outer = new Uint8Array(48);
  outer.set(ifreqWithInt("vela3", 9000), 8);
  assert.equal(ifreqInt(outer.subarray(8)), 9000);
  outer.set(ifreqWithFlags("vela3", Linux.IFF_UP), 8);
  assert.equal(ifreqFlags(outer.subarray(8)), Linux.IFF_UP);
});

// --- sockaddr --------------------------------------------------------------------------------------

Deno.test("sockaddrIn() is 16 bytes: family LE at 0, port big-endian at 2, address at 4", () => {
  const bytes = sockaddrIn(new Uint8Array([192, 0, 2, 7]), 4455);
  assert.equal(bytes.length, 16);
  assert.deepEqual(bytesAt(bytes, 0, 2), [2, 0]);
  assert.deepEqual(bytesAt(bytes, 2, 2), [0x11, 0x67]);
  assert.deepEqual(bytesAt(bytes, 4, 4), [192, 0, 2, 7]);
  assert.ok(bytes.subarray(8).every((b) => b === 0));
});

Deno.test("sockaddrIn() rejects an address that is not 4 bytes", () => {
  assert.throws(() => sockaddrIn(new Uint8Array(16), 1), RangeError);
  assert.throws(() => sockaddrIn(new Uint8Array(3), 1), RangeError);
});

Deno.test("sockaddrIn6() is 28 bytes: family, port, flowinfo, address at 8, scope id at 24", () => {
  const address = new Uint8Array(16).map((_, i) => 0xf0 + i);
  const bytes = sockaddrIn6(address, 4455, 7);
  assert.equal(bytes.length, 28);
  assert.deepEqual(bytesAt(bytes, 0, 2), [10, 0]);
  assert.deepEqual(bytesAt(bytes, 2, 2), [0x11, 0x67]);
  assert.deepEqual(bytesAt(bytes, 4, 4), [0, 0, 0, 0]);
  assert.deepEqual(bytesAt(bytes, 8, 16), Array.from(address));
  assert.deepEqual(bytesAt(bytes, 24, 4), [7, 0, 0, 0]);
});

Deno.test("sockaddrIn6() defaults the scope id to 0 and rejects a 4-byte address", () => {
  assert.deepEqual(bytesAt(sockaddrIn6(new Uint8Array(16), 9), 24, 4), [0, 0, 0, 0]);
  assert.throws(() => sockaddrIn6(new Uint8Array(4), 9), RangeError);
});

// --- in6_ifreq and pollfd --------------------------------------------------------------------------

Deno.test("in6Ifreq() is 24 bytes: address at 0, prefix length at 16, ifindex at 20", () => {
  const address = new Uint8Array(16).map((_, i) => i + 1);
  const bytes = in6Ifreq(address, 126, 0x0304);
  assert.equal(bytes.length, 24);
  assert.deepEqual(bytesAt(bytes, 0, 16), Array.from(address));
  assert.deepEqual(bytesAt(bytes, 16, 4), [126, 0, 0, 0]);
  assert.deepEqual(bytesAt(bytes, 20, 4), [0x04, 0x03, 0, 0]);
  assert.throws(() => in6Ifreq(new Uint8Array(4), 64, 1), RangeError);
});

Deno.test("pollFds() writes 8 bytes per descriptor with fd and events little-endian", () => {
  const bytes = pollFds([5, 0x0102], Linux.POLLIN);
  assert.equal(bytes.length, 16);
  assert.deepEqual(Array.from(bytes), [5, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 0, 1, 0, 0, 0]);
  assert.equal(pollFds([], Linux.POLLIN).length, 0);
});

Deno.test("pollRevents() reads revents of the n-th entry", () => {
  const bytes = pollFds([3, 4], Linux.POLLIN);
  assert.equal(pollRevents(bytes, 0), 0);
  assert.equal(pollRevents(bytes, 1), 0);
  bytes[6] = 0x01;
  bytes[14] = 0x10;
  bytes[15] = 0x00;
  assert.equal(pollRevents(bytes, 0), Linux.POLLIN);
  assert.equal(pollRevents(bytes, 1), 0x10);
  const outer = new Uint8Array(24);
  outer.set(bytes, 8);
  assert.equal(pollRevents(outer.subarray(8), 1), 0x10);
});

// --- constants, netmask, tun flags -----------------------------------------------------------------

Deno.test("Linux.TUNSETIFF is _IOW('T', 202, int)", () => {
  assert.equal(Linux.TUNSETIFF, 0x400454ca);
  const ioc = (1 << 30) | (4 << 16) | ("T".charCodeAt(0) << 8) | 202;
  assert.equal(Linux.TUNSETIFF, ioc >>> 0);
});

Deno.test("Linux constants match the kernel's values", () => {
  assert.equal(Linux.AF_INET, 2);
  assert.equal(Linux.AF_INET6, 10);
  assert.equal(Linux.IFF_TUN, 0x0001);
  assert.equal(Linux.IFF_TAP, 0x0002);
  assert.equal(Linux.IFF_NO_PI, 0x1000);
  assert.equal(Linux.IFNAMSIZ, 16);
  assert.equal(Linux.O_NONBLOCK, 0x800);
  assert.equal(Linux.SIOCSIFMTU, 0x8922);
});

Deno.test("ipv4Netmask() turns prefix lengths into netmasks", () => {
  assert.deepEqual(Array.from(ipv4Netmask(0)), [0, 0, 0, 0]);
  assert.deepEqual(Array.from(ipv4Netmask(8)), [255, 0, 0, 0]);
  assert.deepEqual(Array.from(ipv4Netmask(24)), [255, 255, 255, 0]);
  assert.deepEqual(Array.from(ipv4Netmask(30)), [255, 255, 255, 252]);
  assert.deepEqual(Array.from(ipv4Netmask(31)), [255, 255, 255, 254]);
  assert.deepEqual(Array.from(ipv4Netmask(32)), [255, 255, 255, 255]);
  assert.deepEqual(Array.from(ipv4Netmask(1)), [128, 0, 0, 0]);
});

Deno.test("tunFlags() asks for a tap or tun device without packet information", () => {
  assert.equal(tunFlags("tap"), 0x1002);
  assert.equal(tunFlags("tun"), 0x1001);
});

Deno.test("ifreqWithHardwareAddress() puts ARPHRD_ETHER and the MAC in ifr_hwaddr", () => {
  const bytes = ifreqWithHardwareAddress("vela3", new Uint8Array([2, 1, 2, 3, 4, 5]));
  assert.equal(bytes.length, 40);
  assert.deepEqual([...bytes.subarray(16, 24)], [1, 0, 2, 1, 2, 3, 4, 5]);
  assert.throws(() => ifreqWithHardwareAddress("vela3", new Uint8Array(5)), RangeError);
});

// --- sched_attr ------------------------------------------------------------------------------------

/** A sched_attr as sched_getattr would fill it. */
function readSchedAttr(policy: number, flags: bigint, nice: number): Uint8Array {
  const bytes = schedAttr();
  const view = new DataView(bytes.buffer);
  view.setUint32(SchedAttr.POLICY, policy, true);
  view.setBigUint64(SchedAttr.FLAGS, flags, true);
  view.setInt32(SchedAttr.NICE, nice, true);
  return bytes;
}

Deno.test("schedAttr() is 48 zero bytes with its size in the first field", () => {
  const bytes = schedAttr();
  assert.equal(bytes.length, 48);
  assert.deepEqual(bytesAt(bytes, 0, 4), [48, 0, 0, 0]);
  assert.ok(bytes.subarray(4).every((b) => b === 0));
});

Deno.test("schedAttrWithSlice() keeps policy, nice and reset-on-fork and sets the slice", () => {
  const wanted = schedAttrWithSlice(readSchedAttr(SchedAttr.SCHED_BATCH, 0x61n, 7), 10_000_000);
  assert.ok(wanted);
  const view = new DataView(wanted.buffer);
  assert.equal(view.getUint32(SchedAttr.SIZE_FIELD, true), 48);
  assert.equal(view.getUint32(SchedAttr.POLICY, true), SchedAttr.SCHED_BATCH);
  // 0x20 and 0x40 (utilization clamps) need the larger struct; only reset-on-fork (0x1) is kept.
  assert.equal(view.getBigUint64(SchedAttr.FLAGS, true), 1n);
  assert.equal(view.getInt32(SchedAttr.NICE, true), 7);
  assert.equal(view.getBigUint64(SchedAttr.RUNTIME, true), 10_000_000n);
  assert.deepEqual(bytesAt(wanted, SchedAttr.DEADLINE, 16), new Array(16).fill(0));
});

Deno.test("schedAttrWithSlice() keeps a negative nice value", () => {
  const wanted = schedAttrWithSlice(readSchedAttr(SchedAttr.SCHED_OTHER, 0n, -5), 3_000_000);
  assert.ok(wanted);
  assert.equal(new DataView(wanted.buffer).getInt32(SchedAttr.NICE, true), -5);
});

Deno.test("schedAttrWithSlice() leaves real-time and idle threads alone", () => {
  for (const policy of [1, 2, 5, 6]) { // SCHED_FIFO, SCHED_RR, SCHED_IDLE, SCHED_DEADLINE
    assert.equal(schedAttrWithSlice(readSchedAttr(policy, 0n, 0), 10_000_000), null);
  }
});
