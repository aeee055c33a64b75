/**
 * ffi/liblz4.ts against blocks written by hand from the LZ4 block format specification, round trips,
 * garbage, and the dictionary rules the compression stage relies on. No root needed.
 */

import assert from "node:assert/strict";
import {
  loadLz4,
  LZ4_DICTIONARY_WINDOW,
  lz4Available,
  lz4Compress,
  lz4CompressBound,
  lz4Decompress,
  lz4DecompressWithDictionary,
  Lz4DictionaryCompressor,
  Lz4Missing,
  lz4Version,
} from "../ffi/liblz4.ts";
import { traceRun } from "./allocation_trace.ts";
import { seededRandom } from "../testbed/seeded_random.ts";

const hex = (text: string) =>
  Uint8Array.from(text.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const ascii = (text: string) => new TextEncoder().encode(text);

/** Random bytes, any number of them (getRandomValues gives at most 64 KiB a call). */
function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(bytes.subarray(at, at + 65_536));
  return bytes;
}

/** Traffic-like text of `length` bytes: HTTP request lines whose paths and numbers vary with `seed`. */
function trafficText(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const random = seededRandom(seed);
  let text = "";
  while (text.length < length) {
    const id = Math.floor(random() * 100_000);
    text += `GET /api/v1/items/${id}?page=${id % 7} HTTP/1.1\r\nHost: service-${id % 5}.example.net\r\n` +
      `Accept: application/json\r\nX-Request-Id: ${(id * 7919).toString(16)}\r\n\r\n`;
  }
  return ascii(text.slice(0, length));
}

const SIZES = [0, 1, 64, 1400, 9000];

Deno.test("liblz4 1.9 or later is there", () => {
  assert.ok(lz4Available());
  assert.ok(lz4Version() >= 10900, `version ${lz4Version()}`);
});

Deno.test("lz4Decompress() decodes blocks written by hand from the block format specification", () => {
  const cases: [string, string][] = [
    // token 0x50: 5 literals, no match (a block's last sequence)
    ["50 68656c6c6f", "hello"],
    // token 0xf0: 15 literals and more, one length byte of 5: 20 literals
    ["f0 05 " + toHex(ascii("0123456789abcdefghij")), "0123456789abcdefghij"],
    // 4 literals, then a match of 8 + 4 = 12 bytes at offset 4 (overlapping copy), then 5 last literals
    ["48 61626364 0400 50 78797a7776", "abcdabcdabcdabcdxyzwv"],
    // the empty block: one token with no literals
    ["00", ""],
  ];
  const out = new Uint8Array(64);
  for (const [block, text] of cases) {
    const src = hex(block);
    out.fill(0xee);
    assert.equal(lz4Decompress(src, 0, src.length, out, 0, 64), text.length, block);
    assert.equal(new TextDecoder().decode(out.subarray(0, text.length)), text, block);
    assert.ok(out.subarray(text.length).every((b) => b === 0xee), `${block}: nothing written past the end`);
    if (text.length > 0) {
      assert.ok(lz4Decompress(src, 0, src.length, out, 0, text.length - 1) < 0, `${block}: too small`);
    }
  }
  // A match reaching back before the block's start needs a dictionary; no block is empty; a length
  // byte must follow a token's 15.
  for (const bad of ["48 61626364 0500 50 78797a7776", "", "f0", "f0 ff 41"]) {
    const src = hex(bad);
    assert.ok(lz4Decompress(src, 0, src.length, out, 0, 64) < 0, `${bad || "empty"} is malformed`);
  }
  // The specification calls offset 0 invalid, yet liblz4 1.9 decodes it, writing zeros: whatever
  // the destination held before must not come out (it may be another circuit's frame).
  const zero = hex("48 61626364 0000 50 78797a7776");
  const stale = ascii("SECRET-PASSWORD-1234567890-ABCDEFGH");
  const result = lz4Decompress(zero, 0, zero.length, stale, 0, stale.length);
  assert.ok(result < 0 || result === 21, `offset 0: ${result}`);
  if (result === 21) {
    assert.equal(toHex(stale.subarray(0, 21)), "61626364" + "00".repeat(12) + "78797a7776");
  }
});

Deno.test("lz4Compress() writes an input under 13 bytes as literals only, as the format requires", () => {
  const out = new Uint8Array(16);
  const src = ascii("hello");
  const size = lz4Compress(src, 0, 5, out, 0, 16);
  assert.equal(toHex(out.subarray(0, size)), "5068656c6c6f");
  assert.equal(lz4Compress(src, 0, 0, out, 0, 16), 1);
  assert.equal(out[0], 0);
});

Deno.test("lz4Compress() and lz4Decompress() round-trip text and random bytes at 0, 1, 64, 1400 and 9000 bytes", () => {
  for (const length of SIZES) {
    for (
      const [kind, input] of [["text", trafficText(length, length)], ["random", randomBytes(length)]] as const
    ) {
      const bound = lz4CompressBound(length);
      const compressed = new Uint8Array(bound);
      const size = lz4Compress(input, 0, length, compressed, 0, bound);
      assert.ok(size > 0 && size <= bound, `${kind} ${length}: size ${size}`);
      if (kind === "text" && length >= 1400) {
        assert.ok(size < length / 2, `${kind} ${length} shrinks: ${size}`);
      }
      const output = new Uint8Array(length + 8).fill(0xee);
      assert.equal(lz4Decompress(compressed, 0, size, output, 0, length), length, `${kind} ${length}`);
      assert.deepEqual(output.subarray(0, length), input, `${kind} ${length}`);
      assert.ok(output.subarray(length).every((b) => b === 0xee), `${kind} ${length}: nothing past the end`);
      if (length > 0) {
        assert.ok(lz4Decompress(compressed, 0, size, output, 0, length - 1) < 0, `${kind} ${length}: room`);
      }
    }
  }
});

Deno.test("the calls work at offsets inside large buffers and leave the bytes around their ranges alone", () => {
  const whole = randomBytes(1 << 20);
  const memory = whole.subarray(4097); // a view that does not start at its buffer's start
  const text = trafficText(1400, 3);
  memory.set(text, 600_000);
  const original = whole.slice();
  const size = lz4Compress(memory, 600_000, 1400, memory, 700_000, 1399);
  assert.ok(size > 0);
  assert.deepEqual(whole.subarray(0, 4097 + 700_000), original.subarray(0, 4097 + 700_000), "before");
  assert.deepEqual(whole.subarray(4097 + 700_000 + size), original.subarray(4097 + 700_000 + size), "after");
  const out = new Uint8Array(3000).fill(0xee);
  assert.equal(lz4Decompress(memory, 700_000, size, out, 1000, 1400), 1400);
  assert.deepEqual(out.subarray(1000, 2400), text);
  assert.ok(out.subarray(0, 1000).every((b) => b === 0xee) && out.subarray(2400).every((b) => b === 0xee));
});

Deno.test("incompressible input gives 0 with dstCapacity = srcLength - 1, and compressible input does not", () => {
  for (const length of [1, 2, 13, 64, 1400, 9000]) {
    const input = randomBytes(length);
    const out = new Uint8Array(length);
    assert.equal(lz4Compress(input, 0, length, out, 0, length - 1), 0, `random ${length}`);
    using compressor = new Lz4DictionaryCompressor();
    assert.equal(compressor.compress(input, 0, length, out, 0, length - 1), 0, `random ${length}, stream`);
    compressor.setDictionary(randomBytes(4096), 0, 4096);
    assert.equal(compressor.compress(input, 0, length, out, 0, length - 1), 0, `random ${length}, dict`);
  }
  const text = trafficText(1400, 9);
  const out = new Uint8Array(1400);
  assert.ok(lz4Compress(text, 0, 1400, out, 0, 1399) > 0);
  assert.equal(lz4Compress(text, 0, 1400, out, 0, 0), 0, "no room at all");
});

/** Every decompress function on the same block, with guard bytes around the destination. */
function decodeAll(block: Uint8Array, dict: Uint8Array, capacity: number): number[] {
  const out = new Uint8Array(capacity + 64).fill(0xee);
  const results = [
    lz4Decompress(block, 0, block.length, out, 32, capacity),
    lz4DecompressWithDictionary(block, 0, block.length, out, 32, capacity, dict, 0, dict.length),
  ];
  for (const result of results) assert.ok(result <= capacity, `result ${result} within ${capacity}`);
  assert.ok(out.subarray(0, 32).every((b) => b === 0xee), "nothing written before the destination");
  assert.ok(out.subarray(32 + capacity).every((b) => b === 0xee), "nothing written past the destination");
  return results;
}

Deno.test("random, truncated and corrupted blocks never crash nor write outside the destination", () => {
  const random = seededRandom(1234);
  const dict = trafficText(16_384, 77);
  let decoded = 0;
  // Random garbage of every length up to 2 KiB: almost always malformed; a few happen to be valid blocks.
  for (let t = 0; t < 4000; t++) {
    const block = new Uint8Array(1 + Math.floor(random() * 2048));
    for (let i = 0; i < block.length; i++) block[i] = Math.floor(random() * 256);
    for (const result of decodeAll(block, dict, Math.floor(random() * 3000))) if (result >= 0) decoded++;
  }
  assert.ok(decoded < 400, `${decoded} of 8000 random decodes succeeded`);
  // Every truncation of a real block: malformed, or (cut right after a literal run) a shorter output.
  // Never the whole frame: the stage knows the length it expects and must compare.
  const text = trafficText(1400, 5);
  const block = new Uint8Array(lz4CompressBound(1400));
  const size = lz4Compress(text, 0, 1400, block, 0, block.length);
  let prefixes = 0;
  for (let cut = 0; cut < size; cut++) {
    for (const result of decodeAll(block.subarray(0, cut), dict, 1400)) {
      assert.ok(result < 1400, `cut at ${cut}: ${result}`);
      if (result >= 0) prefixes++;
    }
  }
  assert.ok(prefixes < size / 4, `${prefixes} truncations decoded to a prefix`);
  // Corrupted bytes of real blocks.
  for (let t = 0; t < 2000; t++) {
    const bad = block.slice(0, size);
    for (let flips = 1 + Math.floor(random() * 4); flips > 0; flips--) {
      bad[Math.floor(random() * size)] ^= 1 << Math.floor(random() * 8);
    }
    decodeAll(bad, dict, Math.floor(random() * 2000));
  }
});

/** Three frames of traffic like the dictionary's, and the dictionary itself. */
function dictionaryCase() {
  const dict = trafficText(32_768, 100);
  const frames = [trafficText(1400, 101), trafficText(900, 102), dict.slice(5000, 6400)];
  return { dict, frames };
}

Deno.test("dictionary blocks decode with the dictionary alone, in any order, and compress better", () => {
  const { dict, frames } = dictionaryCase();
  using compressor = new Lz4DictionaryCompressor();
  compressor.setDictionary(dict, 0, dict.length);
  const blocks = frames.map((frame) => {
    const out = new Uint8Array(lz4CompressBound(frame.length));
    const size = compressor.compress(frame, 0, frame.length, out, 0, out.length);
    assert.ok(size > 0);
    const plain = lz4Compress(frame, 0, frame.length, new Uint8Array(out.length), 0, out.length);
    assert.ok(size < plain, `with the dictionary ${size} bytes, without ${plain}`);
    return out.slice(0, size);
  });
  assert.ok(blocks[2].length < 30, `a frame that is part of the dictionary takes ${blocks[2].length} bytes`);
  // Compressed again in another order, each block is the same: nothing carries over between frames.
  for (const i of [2, 0, 1, 1, 0]) {
    const out = new Uint8Array(lz4CompressBound(frames[i].length));
    const size = compressor.compress(frames[i], 0, frames[i].length, out, 0, out.length);
    assert.deepEqual(out.subarray(0, size), blocks[i], `frame ${i} again`);
  }
  // Decoded C, then A, then B, each with the dictionary alone (a copy, elsewhere in memory).
  const copy = dict.slice();
  for (const i of [2, 0, 1]) {
    const out = new Uint8Array(frames[i].length);
    const result = lz4DecompressWithDictionary(
      blocks[i],
      0,
      blocks[i].length,
      out,
      0,
      out.length,
      copy,
      0,
      copy.length,
    );
    assert.equal(result, frames[i].length, `frame ${i}`);
    assert.deepEqual(out, frames[i], `frame ${i}`);
  }
});

Deno.test("a dictionary block decoded with another dictionary or none is never the original frame", () => {
  const { dict, frames } = dictionaryCase();
  using compressor = new Lz4DictionaryCompressor();
  compressor.setDictionary(dict, 0, dict.length);
  const others = [trafficText(32_768, 200), randomBytes(32_768), dict.slice(0, -1), new Uint8Array(0)];
  let silentlyWrong = 0;
  for (const frame of frames) {
    const block = new Uint8Array(lz4CompressBound(frame.length));
    const size = compressor.compress(frame, 0, frame.length, block, 0, block.length);
    const out = new Uint8Array(frame.length);
    const none = lz4Decompress(block, 0, size, out, 0, out.length);
    assert.ok(none < 0 || !sameBytes(out.subarray(0, none), frame), "without a dictionary");
    for (const other of others) {
      out.fill(0);
      const result = lz4DecompressWithDictionary(block, 0, size, out, 0, out.length, other, 0, other.length);
      assert.ok(result < 0 || !sameBytes(out.subarray(0, result), frame), `with ${other.length} other bytes`);
      if (result === frame.length) silentlyWrong++;
    }
  }
  // LZ4 cannot tell: most wrong dictionaries of the same length decode to the full length, wrongly.
  assert.ok(silentlyWrong > 0, "a wrong dictionary decodes without an error (why frames name theirs)");
});

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

Deno.test("only a dictionary's last 64 KiB count, and a source right after the dictionary still works", () => {
  const dict = trafficText(100_000, 300);
  using compressor = new Lz4DictionaryCompressor();
  compressor.setDictionary(dict, 0, dict.length);
  const frame = dict.slice(90_000, 91_400);
  const block = new Uint8Array(2000);
  const size = compressor.compress(frame, 0, frame.length, block, 0, block.length);
  const tail = dict.slice(dict.length - LZ4_DICTIONARY_WINDOW);
  for (const [name, d] of [["whole", dict], ["last 64 KiB", tail]] as const) {
    const out = new Uint8Array(1400);
    assert.equal(lz4DecompressWithDictionary(block, 0, size, out, 0, 1400, d, 0, d.length), 1400, name);
    assert.deepEqual(out, frame, name);
  }
  // The dictionary at memory[0, 20000) and the frame right after it, at memory[20000, 21400).
  const memory = new Uint8Array(30_000);
  memory.set(trafficText(20_000, 301));
  memory.set(trafficText(1400, 302), 20_000);
  compressor.setDictionary(memory, 0, 20_000);
  const prefixed = compressor.compress(memory, 20_000, 1400, block, 0, block.length);
  const out = new Uint8Array(1400);
  const dictCopy = memory.slice(0, 20_000);
  assert.equal(lz4DecompressWithDictionary(block, 0, prefixed, out, 0, 1400, dictCopy, 0, 20_000), 1400);
  assert.deepEqual(out, memory.subarray(20_000, 21_400));
});

Deno.test("a compressor without a dictionary, or with a tiny or cleared one, makes plain blocks", () => {
  using compressor = new Lz4DictionaryCompressor(2);
  assert.equal(compressor.acceleration, 2);
  const frame = trafficText(1400, 400);
  const block = new Uint8Array(2000);
  const out = new Uint8Array(1400);
  const check = (name: string) => {
    const size = compressor.compress(frame, 0, 1400, block, 0, block.length);
    assert.equal(lz4Decompress(block, 0, size, out, 0, 1400), 1400, name);
    assert.deepEqual(out, frame, name);
  };
  check("no dictionary");
  compressor.setDictionary(ascii("GET /ap"), 0, 7);
  check("a 7-byte dictionary");
  compressor.setDictionary(trafficText(8000, 401), 0, 8000);
  compressor.clearDictionary();
  check("a cleared dictionary");
});

Deno.test("ranges outside their arrays, overlapping ranges and bad accelerations are RangeErrors", () => {
  const memory = new Uint8Array(128);
  const other = new Uint8Array(128);
  using compressor = new Lz4DictionaryCompressor();
  const bad: [number, number, number, number][] = [
    [0, 129, 0, 10],
    [-1, 4, 0, 10],
    [1.5, 4, 0, 10],
    [0, NaN, 0, 10],
    [120, 9, 0, 10],
    [0, 8, 0, 129],
    [0, 8, 100, 29],
    [0, 8, -1, 10],
    [0, 8, 0, -1], // dstCapacity = srcLength - 1 for an empty source
    [0, 8, 2 ** 32, 1],
  ];
  for (const [srcOffset, srcLength, dstOffset, dstCapacity] of bad) {
    const args = `${srcOffset}, ${srcLength}, ${dstOffset}, ${dstCapacity}`;
    assert.throws(
      () => lz4Compress(memory, srcOffset, srcLength, other, dstOffset, dstCapacity),
      RangeError,
      args,
    );
    assert.throws(
      () => lz4Decompress(memory, srcOffset, srcLength, other, dstOffset, dstCapacity),
      RangeError,
      args,
    );
    assert.throws(
      () =>
        lz4DecompressWithDictionary(
          memory,
          srcOffset,
          srcLength,
          other,
          dstOffset,
          dstCapacity,
          memory,
          0,
          0,
        ),
      RangeError,
      args,
    );
    assert.throws(
      () => compressor.compress(memory, srcOffset, srcLength, other, dstOffset, dstCapacity),
      RangeError,
    );
  }
  // Overlaps, also between two views of one buffer.
  const view = new Uint8Array(memory.buffer, 64, 64);
  assert.throws(() => lz4Compress(memory, 0, 16, memory, 8, 16), RangeError);
  assert.throws(() => lz4Compress(memory, 64, 16, view, 8, 16), RangeError);
  assert.throws(() => lz4Decompress(view, 0, 16, memory, 70, 16), RangeError);
  assert.throws(() => lz4DecompressWithDictionary(other, 0, 8, memory, 70, 16, view, 0, 64), /dictionary/);
  assert.ok(lz4Compress(memory, 0, 16, memory, 16, 32) > 0, "adjacent ranges are fine");
  assert.ok(lz4Compress(memory, 64, 16, view, 16, 32) > 0, "and apart in two views");
  compressor.setDictionary(memory, 0, 64);
  assert.throws(() => compressor.compress(memory, 32, 16, other, 0, 32), /overlaps the dictionary/);
  assert.throws(() => compressor.compress(other, 0, 16, memory, 60, 32), /overlaps the dictionary/);
  // Dictionary ranges and accelerations.
  assert.throws(() => compressor.setDictionary(memory, 100, 29), RangeError);
  assert.throws(() => lz4DecompressWithDictionary(other, 0, 8, other, 8, 16, memory, -1, 8), RangeError);
  for (const acceleration of [0, -1, 1.5, NaN]) {
    assert.throws(() => lz4Compress(memory, 0, 8, other, 0, 16, acceleration), RangeError);
    assert.throws(() => new Lz4DictionaryCompressor(acceleration), RangeError);
  }
  assert.throws(() => lz4CompressBound(-1), RangeError);
  assert.equal(lz4CompressBound(0x7e00_0001), 0);
  assert.equal(lz4CompressBound(1400), 1400 + Math.floor(1400 / 255) + 16);
});

Deno.test("a dictionary whose buffer is detached while in use is refused", () => {
  using compressor = new Lz4DictionaryCompressor();
  const dict = trafficText(8192, 500);
  compressor.setDictionary(dict, 0, dict.length);
  const kept = dict.buffer.transfer();
  const frame = trafficText(500, 501);
  assert.throws(() => compressor.compress(frame, 0, 500, new Uint8Array(600), 0, 600), /detached/);
  compressor.setDictionary(new Uint8Array(kept), 0, kept.byteLength);
  assert.ok(compressor.compress(frame, 0, 500, new Uint8Array(600), 0, 600) > 0);
});

Deno.test("close() is safe twice, and a closed compressor refuses work", () => {
  const compressor = new Lz4DictionaryCompressor();
  compressor.setDictionary(trafficText(1000, 600), 0, 1000);
  compressor.close();
  compressor.close();
  compressor[Symbol.dispose]();
  assert.throws(() => compressor.compress(new Uint8Array(8), 0, 8, new Uint8Array(16), 0, 16), /closed/);
  assert.throws(() => compressor.setDictionary(new Uint8Array(8), 0, 8), /closed/);
  assert.throws(() => compressor.clearDictionary(), /closed/);
});

Deno.test("a missing liblz4 is one sentence that says what to install", () => {
  assert.throws(() => loadLz4("liblz4-that-is-not-here.so.1"), (error: Error) => {
    assert.ok(error instanceof Lz4Missing);
    assert.match(error.message, /liblz4\.so\.1/);
    assert.match(error.message, /liblz4-1/);
    assert.match(error.message, /^[A-Z]/);
    assert.ok(!error.message.endsWith("."));
    assert.equal(error.message.split(". ").length, 1);
    return true;
  });
  loadLz4();
});

Deno.test({
  name:
    "compression and decompression allocate nothing per frame once optimized (child Denos with --trace-gc)",
  permissions: { run: true, read: true, write: true },
  fn: async () => {
    // The offsets come from `%`, which V8 cannot prove to be int32s: the case that once boxed BigInts.
    const script = await Deno.makeTempFile({ suffix: ".ts" });
    const module = JSON.stringify(new URL("../ffi/liblz4.ts", import.meta.url).href);
    await Deno.writeTextFile(
      script,
      `import { lz4Compress, lz4Decompress, lz4DecompressWithDictionary, Lz4DictionaryCompressor } from ${module};
const frames = Number(Deno.args[0]);
const memory = new Uint8Array(1 << 20);
const text = new TextEncoder().encode("GET /index.html HTTP/1.1\\r\\nHost: example.com\\r\\n\\r\\n".repeat(1600));
memory.set(text.subarray(0, 70_000));
const dict = memory.slice(0, 65_536);
const out = new Uint8Array(65_536);
const compressor = new Lz4DictionaryCompressor();
compressor.setDictionary(dict, 0, dict.length);
let bad = 0;
for (let i = 0; i < frames; i++) {
  const at = (i % 700) * 90;
  const size = lz4Compress(memory, at, 200, memory, 100_000 + at, 300);
  if (lz4Decompress(memory, 100_000 + at, size, out, i % 1000, 200) !== 200) bad++;
  const dsize = compressor.compress(memory, at, 200, memory, 200_000 + at, 300);
  if (lz4DecompressWithDictionary(memory, 200_000 + at, dsize, out, i % 1000, 200, dict, 0, 65_536) !== 200) bad++;
}
if (bad > 0) throw new Error(bad + " did not decode");
compressor.close();
console.log("done");
`,
    );
    /** The scavenges and deoptimizations of a run of `frames` frames. */
    const run = (frames: number) => traceRun(script, frames);
    try {
      // 300,000 more frames with one heap BigInt per address would be well over 100 more scavenges.
      const [short, long] = [await run(100_000), await run(400_000)];
      assert.ok(long.scavenges - short.scavenges <= 8, `${short.scavenges} then ${long.scavenges} scavenges`);
      assert.ok(long.deopts <= 12, `${long.deopts} deoptimizations`);
    } finally {
      await Deno.remove(script);
    }
  },
});
