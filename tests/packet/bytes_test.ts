import assert from "node:assert/strict";
import { copyBytes, onesSum } from "../../src/packet/bytes.ts";
import { finishChecksum } from "../../src/link/segmentation.ts";

/** The sum as RFC 1071 writes it: big-endian 16-bit words, an odd last byte padded with zero. */
function referenceSum(bytes: Uint8Array, start: number, end: number, sum = 0): number {
  for (let i = start; i < end; i += 2) sum += (bytes[i] << 8) | (i + 1 < end ? bytes[i + 1] : 0);
  return sum;
}

/** Deterministic bytes, so that a failure can be replayed. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

Deno.test("onesSum() gives the checksum of RFC 1071's example", () => {
  const bytes = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);
  // RFC 1071 4.1: the folded sum is ddf2, so the checksum is its complement.
  assert.equal(finishChecksum(onesSum(bytes, 0, bytes.length)), ~0xddf2 & 0xffff);
});

Deno.test("onesSum() folds to the byte-by-byte sum at every start, length and view offset", () => {
  const memory = pattern(70_000, 7);
  for (const viewOffset of [0, 1, 2, 3, 10]) {
    const view = memory.subarray(viewOffset);
    for (let start = 0; start < 8; start++) {
      for (const length of [0, 1, 2, 3, 4, 5, 7, 20, 21, 40, 1371, 1400, 1401, 65_000]) {
        const expected = finishChecksum(referenceSum(view, start, start + length, 6 + length));
        const actual = finishChecksum(onesSum(view, start, start + length, 6 + length));
        assert.equal(actual, expected, `view at ${viewOffset}, bytes ${start} to ${start + length}`);
      }
    }
  }
});

Deno.test("onesSum() of all 0xff bytes folds without overflowing", () => {
  const bytes = new Uint8Array(65_536).fill(0xff);
  assert.equal(
    finishChecksum(onesSum(bytes, 0, bytes.length)),
    finishChecksum(referenceSum(bytes, 0, 65_536)),
  );
});

Deno.test("onesSum() of a range longer than its lanes' span (all 0xff, and a pattern) folds right", () => {
  for (const bytes of [new Uint8Array(200_003).fill(0xff), pattern(200_003, 11)]) {
    for (const start of [0, 1, 6]) {
      assert.equal(
        finishChecksum(onesSum(bytes, start, bytes.length)),
        finishChecksum(referenceSum(bytes, start, bytes.length)),
        `from ${start}`,
      );
    }
  }
});

Deno.test("copyBytes() copies between views of one ArrayBuffer, overlapping or not", () => {
  const memory = new ArrayBuffer(64);
  const whole = new Uint8Array(memory);
  whole.set(pattern(64, 3));
  const original = whole.slice();
  const first = new Uint8Array(memory, 0, 32);
  const second = new Uint8Array(memory, 32, 32);
  copyBytes(second, 4, first, 2, 12);
  assert.deepEqual(whole.subarray(36, 46), original.subarray(2, 12));
  assert.deepEqual(whole.subarray(0, 36), original.subarray(0, 36), "nothing else changed");
  // Overlapping, as memmove: the source is read before it is overwritten.
  copyBytes(first, 1, first, 0, 8);
  assert.deepEqual(whole.subarray(1, 9), original.subarray(0, 8));
});

Deno.test("copyBytes() copies between separate buffers", () => {
  const source = pattern(16, 5);
  const target = new Uint8Array(16);
  copyBytes(target, 3, source, 5, 15);
  assert.deepEqual(target.subarray(3, 13), source.subarray(5, 15));
  assert.equal(target[0] + target[1] + target[2] + target[13] + target[14] + target[15], 0);
});
