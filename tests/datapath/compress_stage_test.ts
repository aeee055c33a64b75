/**
 * The compression stage on its own (src/datapath/compress_stage.ts): its code byte, giving up on frames
 * that do not compress and trying again, frames too large for the link, and input it cannot decode.
 */

import assert from "node:assert/strict";
import {
  CompressStage,
  MIN_TRIED_BYTES,
  PROBE_FRAMES,
  SKIP_FIRST,
} from "../../src/datapath/compress_stage.ts";
import { CIRCUIT_FIELDS, Counter } from "../../src/datapath/counters.ts";
import type { StageMemory } from "../../src/datapath/stage.ts";
import { DROPPED, PacketBatch } from "../../src/packet/packet_batch.ts";
import { lz4Compress } from "../../ffi/liblz4.ts";
import { CompressionCode } from "../../src/wire.ts";
import { DICTIONARY_ACK_MS } from "../../src/timing.ts";

const MAX_FRAME = 1518;

/** A batch of `buffers` 9000-byte buffers with room for the stage's memory, and a stage over it. */
function bench(maxFrame = MAX_FRAME, buffers = 8) {
  const batch = new PacketBatch({ buffers, maxPacket: 9000, extraBytes: (1 << 17) + 65_536 });
  const arena = batch.reserve(1 << 17);
  const scratch = batch.reserve(65_536);
  const memory: StageMemory = {
    decodeArena: arena.byteOffset,
    decodeArenaBytes: arena.length,
    encodeScratch: scratch.byteOffset,
    encodeScratchBytes: scratch.length,
  };
  const values = new Float64Array(CIRCUIT_FIELDS);
  const stage = new CompressStage({ id: "compress" }, { counts: { values, base: 0 }, memory, maxFrame });
  return { batch, stage, values };
}

/** Puts `frames` in the batch, one per buffer, at each buffer's packet start. */
function fill(batch: PacketBatch, frames: Uint8Array[]): void {
  frames.forEach((frame, i) => {
    const at = batch.packetStart(i);
    batch.memory.set(frame, at);
    batch.offset[i] = at;
    batch.length[i] = frame.length;
  });
  batch.count = frames.length;
}

function entry(batch: PacketBatch, i: number): Uint8Array {
  return batch.memory.slice(batch.offset[i], batch.offset[i] + batch.length[i]);
}

const TEXT = new TextEncoder().encode(
  'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"items":[{"id":1,"name":"alpha"},{"id":2,"name":"beta"}]}'
    .repeat(8),
);

function random(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length));
}

Deno.test("encode() compresses text behind an LZ4 code, sends random bytes and short frames raw, decode() restores all", () => {
  const { batch, stage, values } = bench();
  const frames = [TEXT, random(1200), TEXT.subarray(0, MIN_TRIED_BYTES - 1)];
  fill(batch, frames);
  stage.encode(batch, 0, 3);
  assert.equal(batch.memory[batch.offset[0]], CompressionCode.LZ4);
  assert.ok(batch.length[0] < TEXT.length / 2, `${batch.length[0]} bytes for ${TEXT.length}`);
  for (const i of [1, 2]) {
    assert.equal(batch.memory[batch.offset[i]], CompressionCode.RAW);
    assert.equal(batch.length[i], frames[i].length + 1, "one byte longer, never more");
  }
  assert.equal(values[Counter.COMPRESS_IN], TEXT.length + 1200 + MIN_TRIED_BYTES - 1);
  assert.equal(values[Counter.SENT_UNCOMPRESSED], 2);
  stage.decode(batch, 0, 3);
  frames.forEach((frame, i) => assert.deepEqual(entry(batch, i), frame));
  assert.equal(values[Counter.BAD_COMPRESSION], 0);
});

Deno.test("after a window that does not pay the stage stops trying for SKIP_FIRST frames, then tries again", () => {
  const { batch, stage, values } = bench();
  const send = (frame: Uint8Array) => {
    fill(batch, [frame]);
    stage.encode(batch, 0, 1);
    return batch.memory[batch.offset[0]];
  };
  for (let n = 0; n < PROBE_FRAMES; n++) assert.equal(send(random(1000)), CompressionCode.RAW);
  assert.equal(values[Counter.COMPRESSION_PAUSES], 1);
  // Paused: even text goes raw, untried.
  for (let n = 0; n < SKIP_FIRST; n++) assert.equal(send(TEXT), CompressionCode.RAW, `frame ${n}`);
  assert.equal(send(TEXT), CompressionCode.LZ4, "tried again after the pause");
  // A window that pays keeps the stage trying.
  for (let n = 0; n < 2 * PROBE_FRAMES; n++) assert.equal(send(TEXT), CompressionCode.LZ4);
  assert.equal(values[Counter.COMPRESSION_PAUSES], 1);
});

Deno.test("decode() drops a block that would make a frame longer than the link carries", () => {
  const big = new Uint8Array(4000).fill(0x61);
  const { batch, stage, values } = bench();
  const at = batch.packetStart(0);
  const packed = lz4Compress(big, 0, big.length, batch.memory, at + 1, 3000);
  assert.ok(packed > 0);
  batch.memory[at] = CompressionCode.LZ4;
  batch.offset[0] = at;
  batch.length[0] = packed + 1;
  batch.count = 1;
  stage.decode(batch, 0, 1);
  assert.equal(batch.length[0], DROPPED);
  assert.equal(values[Counter.BAD_COMPRESSION], 1);
});

Deno.test("decode() never throws on random input and drops what it cannot decode", () => {
  const { batch, stage, values } = bench(MAX_FRAME, 16);
  let dropped = 0;
  for (let round = 0; round < 400; round++) {
    const frames = Array.from({ length: 16 }, () => {
      const frame = random(Math.floor(Math.random() * 1600));
      if (frame.length > 0 && Math.random() < 0.5) frame[0] = CompressionCode.LZ4;
      return frame;
    });
    fill(batch, frames);
    stage.decode(batch, 0, frames.length);
    for (let i = 0; i < frames.length; i++) {
      if (batch.length[i] === DROPPED) {
        dropped++;
        continue;
      }
      if (frames[i][0] === CompressionCode.LZ4) {
        assert.ok(batch.length[i] <= MAX_FRAME, "never decompressed beyond the link's frame");
      } else assert.equal(batch.length[i], frames[i].length - 1, "a raw frame as it came");
    }
  }
  assert.equal(values[Counter.BAD_COMPRESSION], dropped);
  assert.ok(dropped > 0);
});

/** A sender and a receiver in the dictionary mode, each with its own batch, and a wire between them. */
function dictionaryPair() {
  const clock = { now: 0 };
  const make = () => {
    const batch = new PacketBatch({ buffers: 4, maxPacket: 9000, extraBytes: (1 << 17) + 65_536 });
    const arena = batch.reserve(1 << 17);
    const scratch = batch.reserve(65_536);
    const values = new Float64Array(CIRCUIT_FIELDS);
    const stage = new CompressStage({ id: "compress", mode: "dictionary" }, {
      counts: { values, base: 0 },
      memory: {
        decodeArena: arena.byteOffset,
        decodeArenaBytes: arena.length,
        encodeScratch: scratch.byteOffset,
        encodeScratchBytes: scratch.length,
      },
      maxFrame: MAX_FRAME,
      now: () => clock.now,
    });
    return { batch, stage, values };
  };
  const tx = make();
  const rx = make();
  /** Encodes `frame` at the sender; returns what went on the wire. */
  const send = (frame: Uint8Array): Uint8Array => {
    fill(tx.batch, [frame]);
    tx.stage.encode(tx.batch, 0, 1);
    return entry(tx.batch, 0);
  };
  /** Decodes `wire` at the receiver; the frame, or undefined when it was dropped. */
  const receive = (wire: Uint8Array): Uint8Array | undefined => {
    fill(rx.batch, [wire]);
    rx.stage.decode(rx.batch, 0, 1);
    return rx.batch.length[0] < 0 ? undefined : entry(rx.batch, 0);
  };
  /** What the daemon does with the receiver's counters: the sender is told (a DACK). */
  const acknowledge = () => {
    const epoch = rx.values[Counter.DICTIONARY_READY];
    const hash = (BigInt(rx.values[Counter.DICTIONARY_READY_HASH_HIGH]) << 32n) |
      BigInt(rx.values[Counter.DICTIONARY_READY_HASH_LOW]);
    tx.stage.update({ id: "compress", acknowledged: { epoch, hash } } as never);
    return epoch;
  };
  return { tx, rx, send, receive, acknowledge, clock };
}

/** Text frames alike in shape and different in content, as JSON API answers are. */
function record(n: number): Uint8Array {
  return new TextEncoder().encode(
    `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: ${
      n * 7919
    }\r\n\r\n{"id":${n},"user":"user${n % 97}","items":[${
      [1, 2, 3].map((k) => `{"sku":"A-${n * k}","qty":${k},"price":${(n * k) % 1000}}`).join(",")
    }]}`,
  );
}

Deno.test("the dictionary mode: samples make a dictionary at the receiver; once acknowledged, frames shrink more", () => {
  const { tx, rx, send, receive, acknowledge } = dictionaryPair();
  let n = 0;
  let before = 0;
  for (; n < 200; n++) {
    const frame = record(n);
    const wire = send(frame);
    if (n >= 100) before += wire.length;
    assert.deepEqual(receive(wire), frame);
  }
  assert.notEqual(rx.values[Counter.DICTIONARY_READY], 0, "a whole dictionary at the receiver");
  assert.equal(tx.values[Counter.DICTIONARY_IN_USE], 0, "not used before it is acknowledged");
  const epoch = acknowledge();
  assert.equal(tx.values[Counter.DICTIONARY_IN_USE], epoch);
  let after = 0;
  for (; n < 300; n++) {
    const frame = record(n);
    const wire = send(frame);
    assert.equal(wire[0] & CompressionCode.KIND, CompressionCode.DICTIONARY);
    assert.equal(wire[1], epoch);
    after += wire.length;
    assert.deepEqual(receive(wire), frame);
  }
  assert.ok(after < 0.8 * before, `${after} bytes with the dictionary, ${before} without`);
  assert.equal(rx.values[Counter.DICTIONARY_PEER_USES], epoch);
  assert.equal(rx.values[Counter.BAD_COMPRESSION] + rx.values[Counter.DICTIONARY_MISSING], 0);
});

Deno.test("the dictionary mode: a lost piece leaves its epoch unused, a wrong DACK changes nothing, frames naming an unknown epoch are dropped", () => {
  const { tx, rx, send, receive, acknowledge, clock } = dictionaryPair();
  let lost = false;
  for (let n = 0; n < 200; n++) {
    const wire = send(record(n));
    if (!lost && (wire[0] & CompressionCode.SAMPLE) !== 0) {
      lost = true; // The first piece never arrives.
      continue;
    }
    receive(wire);
  }
  assert.equal(rx.values[Counter.DICTIONARY_READY], 0, "no dictionary without every piece");
  tx.stage.update({ id: "compress", acknowledged: { epoch: 1, hash: 42n } } as never);
  assert.equal(tx.values[Counter.DICTIONARY_IN_USE], 0, "a DACK that names another hash is ignored");
  // Before DICTIONARY_ACK_MS the sender waits; after, it gives the epoch up and builds another.
  for (let n = 200; n < 400; n++) receive(send(record(n)));
  assert.equal(rx.values[Counter.DICTIONARY_READY], 0, "still waiting for the first one's DACK");
  clock.now += DICTIONARY_ACK_MS;
  for (let n = 400; n < 700; n++) receive(send(record(n)));
  assert.notEqual(rx.values[Counter.DICTIONARY_READY], 0);
  assert.equal(acknowledge(), tx.values[Counter.DICTIONARY_IN_USE]);
  const wire = send(record(1));
  wire[1] = (wire[1] % 255) + 7; // An epoch the receiver has never held.
  assert.equal(receive(wire), undefined);
  assert.equal(rx.values[Counter.DICTIONARY_MISSING], 1);
});
