import assert from "node:assert/strict";
import {
  Accepted,
  datagramLimit,
  FRAGMENT_CODE,
  FRAGMENT_HEADER,
  fragmentBatch,
  fragmentCount,
  MAX_FRAGMENTS,
  MAX_REASSEMBLED,
  Reassembler,
  REASSEMBLY_BYTES,
  REASSEMBLY_SLOTS,
} from "../../src/datapath/fragmentation.ts";
import { CIRCUIT_FIELDS, Counter } from "../../src/datapath/counters.ts";
import { PacketBatch } from "../../src/packet/packet_batch.ts";
import { REASSEMBLY_TIMEOUT_MS } from "../../src/timing.ts";
import { fillBatch } from "../fakes/batch_fill.ts";

/** A send batch of datagrams (vid byte first) as the core has them before fragmenting. */
function sendBatch(datagrams: Uint8Array[]): PacketBatch {
  const batch = new PacketBatch({ buffers: 5, maxPacket: 65_536, entries: 4 * MAX_FRAGMENTS, readLimit: 4 });
  return fillBatch(batch, datagrams, 1);
}

function entries(batch: PacketBatch): Uint8Array[] {
  return Array.from({ length: batch.count }, (_, i) => batch.copy(i));
}

function datagramOf(vid: number, length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  bytes[0] = vid;
  for (let i = 1; i < length; i++) bytes[i] = (i * 7 + seed) & 0xff;
  return bytes;
}

/** A reassembler over a receive batch's memory, with the counters of 4 circuits. */
function reassembler() {
  const memory = new Uint8Array(REASSEMBLY_BYTES + 65_536);
  const values = new Float64Array(4 * CIRCUIT_FIELDS);
  const joined = new Reassembler(memory.subarray(65_536), values);
  const offer = (fragment: Uint8Array, circuit = 0, now = 0) => {
    memory.set(fragment, 0);
    return joined.accept(memory, 0, fragment.length, circuit, now);
  };
  const frame = () => memory.slice(joined.frameStart, joined.frameStart + joined.frameLength);
  const vidByte = () => memory[joined.frameStart - 1];
  return { joined, offer, frame, vidByte, values };
}

function fragment(vid: number, id: number, index: number, count: number, pad: number, piece: number[]) {
  return new Uint8Array([
    0,
    FRAGMENT_CODE,
    2,
    vid,
    id >> 8,
    id & 0xff,
    (index << 4) | (count - 1),
    pad,
    ...piece,
  ]);
}

Deno.test("fragmentCount() sends whole what fits and cuts the rest into as few equal pieces as fit", () => {
  assert.equal(fragmentCount(1471, 1472), 1);
  assert.equal(fragmentCount(1472, 1472), 2);
  assert.equal(fragmentCount(1514, 1472), 2);
  assert.equal(fragmentCount(9014, 1472), 7);
  assert.equal(fragmentCount(MAX_REASSEMBLED + 1, 1472), 0, "over the largest joined frame");
  assert.equal(fragmentCount(3000, 100), 0, "more than 16 pieces");
  assert.equal(datagramLimit(1500, 4), 1472);
  assert.equal(datagramLimit(1500, 6), 1452);
});

Deno.test("fragmentBatch() cuts only datagrams over the limit, into equal ones with headers, in order", () => {
  const small = datagramOf(3, 200, 1);
  const big = datagramOf(3, 1515, 2); // 1514 frame bytes: 2 pieces of 757
  const odd = datagramOf(3, 1002, 3); // 1001 frame bytes: 2 pieces of 501, 1 byte of pad
  const batch = sendBatch([small, big, odd]);
  const lastPiece = new Uint8Array(batch.capacity);
  const cut = fragmentBatch(batch, 800, 0xfffe, lastPiece);
  assert.deepEqual(cut, { fragmented: 2, dropped: 0 });
  const out = entries(batch);
  assert.equal(out.length, 5);
  assert.deepEqual(out[0], small);
  assert.deepEqual([...lastPiece.subarray(0, 5)], [1, 0, 1, 0, 1]);
  assert.deepEqual([...out[1].subarray(0, 8)], [0, 8, 2, 3, 0xff, 0xfe, 0x01, 0]);
  assert.deepEqual([...out[2].subarray(0, 8)], [0, 8, 2, 3, 0xff, 0xfe, 0x11, 0]);
  assert.deepEqual([...out[3].subarray(0, 8)], [0, 8, 2, 3, 0xff, 0xff, 0x01, 1], "the next id, pad 1");
  assert.deepEqual([...out[4].subarray(0, 8)], [0, 8, 2, 3, 0xff, 0xff, 0x11, 1]);
  assert.deepEqual(out.slice(1).map((d) => d.length), [765, 765, 509, 509], "equal, for one GSO run");
  assert.deepEqual([...out[1].subarray(8), ...out[2].subarray(8)], [...big.subarray(1)]);
  assert.deepEqual([...out[3].subarray(8), ...out[4].subarray(8, 508)], [...odd.subarray(1)]);
  assert.equal(out[4][508], 0, "the pad is zero");
});

Deno.test("fragmentBatch() drops a frame too long to join and keeps the others", () => {
  const batch = sendBatch([
    datagramOf(4, 100, 1),
    datagramOf(4, MAX_REASSEMBLED + 2, 2),
    datagramOf(4, 90, 3),
  ]);
  const cut = fragmentBatch(batch, 1472, 0, new Uint8Array(batch.capacity));
  assert.deepEqual(cut, { fragmented: 0, dropped: 1 });
  assert.deepEqual(entries(batch).map((d) => d.length), [100, 90]);
});

Deno.test("Reassembler joins fragments in any order and puts the vid byte in front", () => {
  const { offer, frame, vidByte } = reassembler();
  assert.equal(offer(fragment(5, 7, 2, 3, 2, [5, 6, 0, 0])), Accepted.KEPT);
  assert.equal(offer(fragment(5, 7, 0, 3, 2, [1, 2, 3, 4])), Accepted.KEPT);
  assert.equal(offer(fragment(5, 7, 1, 3, 2, [9, 9, 9, 9])), Accepted.WHOLE);
  assert.deepEqual([...frame()], [1, 2, 3, 4, 9, 9, 9, 9, 5, 6]);
  assert.equal(vidByte(), 5);
});

Deno.test("Reassembler refuses malformed headers and duplicate fragments", () => {
  const { offer, joined } = reassembler();
  assert.equal(offer(fragment(5, 1, 0, 1, 0, [1, 2])), Accepted.REFUSED, "one fragment is not a fragment");
  assert.equal(offer(fragment(5, 1, 3, 2, 0, [1, 2])), Accepted.REFUSED, "index past the count");
  assert.equal(offer(fragment(5, 1, 0, 2, 2, [1, 2])), Accepted.REFUSED, "pad as long as the piece");
  assert.equal(offer(fragment(5, 1, 0, 2, 0, [])), Accepted.REFUSED, "no piece");
  const wrongVersion = fragment(5, 1, 0, 2, 0, [1]);
  wrongVersion[2] = 1;
  assert.equal(offer(wrongVersion), Accepted.REFUSED);
  const huge = new Uint8Array(FRAGMENT_HEADER + 2000);
  huge.set(fragment(5, 1, 0, 16, 0, []));
  assert.equal(offer(huge), Accepted.REFUSED, "16 x 2000 is over the largest frame");
  assert.equal(offer(fragment(5, 2, 0, 2, 0, [1, 2])), Accepted.KEPT);
  assert.equal(offer(fragment(5, 2, 0, 2, 0, [1, 2])), Accepted.REFUSED, "a duplicate");
  assert.equal(joined.partial, 1);
});

Deno.test("Reassembler keeps circuits apart and gives up a frame whose id comes again in another shape", () => {
  const { offer, frame, values } = reassembler();
  assert.equal(offer(fragment(5, 9, 0, 2, 0, [1, 1]), 0), Accepted.KEPT);
  assert.equal(offer(fragment(5, 9, 1, 2, 0, [2, 2]), 1), Accepted.KEPT, "the same id on another circuit");
  assert.equal(offer(fragment(5, 9, 0, 3, 0, [3, 3]), 0), Accepted.KEPT, "id 9 again, 3 pieces: a new frame");
  assert.equal(values[Counter.REASSEMBLY_DROPPED], 1, "the first frame of id 9 given up, counted");
  assert.equal(offer(fragment(5, 9, 1, 3, 0, [4, 4]), 0), Accepted.KEPT);
  assert.equal(offer(fragment(5, 9, 2, 3, 0, [5, 5]), 0), Accepted.WHOLE);
  assert.deepEqual([...frame()], [3, 3, 4, 4, 5, 5]);
});

Deno.test("Reassembler gives up frames not whole within the timeout and counts them per circuit", () => {
  const { offer, joined, values } = reassembler();
  assert.equal(offer(fragment(5, 1, 0, 2, 0, [1]), 2, 1000), Accepted.KEPT);
  assert.equal(offer(fragment(5, 2, 0, 2, 0, [1]), 2, 1000 + REASSEMBLY_TIMEOUT_MS - 1), Accepted.KEPT);
  // The late second fragment of frame 1 comes after the timeout: frame 1 is gone, this starts anew.
  assert.equal(offer(fragment(5, 1, 1, 2, 0, [2]), 2, 1000 + REASSEMBLY_TIMEOUT_MS), Accepted.KEPT);
  assert.equal(values[2 * CIRCUIT_FIELDS + Counter.REASSEMBLY_DROPPED], 1);
  assert.equal(joined.partial, 2, "frame 2 (not yet timed out) and the new frame 1");
});

Deno.test("Reassembler bounds its memory: the oldest partial frame makes room, held frames never do", () => {
  const { offer, joined, values } = reassembler();
  for (let id = 0; id < REASSEMBLY_SLOTS; id++) {
    assert.equal(offer(fragment(5, id, 0, 2, 0, [id & 0xff]), 0, id), Accepted.KEPT);
  }
  assert.equal(offer(fragment(5, 500, 0, 2, 0, [1]), 0, 200), Accepted.KEPT);
  assert.equal(values[Counter.REASSEMBLY_DROPPED], 1, "frame 0, the oldest, made room");
  assert.equal(joined.partial, REASSEMBLY_SLOTS);
  // Fill every slot with a frame made whole in this pass: the next fragment must wait for release().
  joined.forget(0);
  assert.equal(joined.partial, 0);
  for (let id = 0; id < REASSEMBLY_SLOTS; id++) {
    offer(fragment(5, id, 0, 2, 0, [1]), 1, 300);
    assert.equal(offer(fragment(5, id, 1, 2, 0, [2]), 1, 300), Accepted.WHOLE);
  }
  assert.equal(offer(fragment(5, 999, 0, 2, 0, [1]), 1, 300), Accepted.FULL);
  joined.release();
  assert.equal(offer(fragment(5, 999, 0, 2, 0, [1]), 1, 300), Accepted.KEPT);
});
