/**
 * Fragmentation: the last step of a circuit's pipeline on the way out and the first on the way in
 * (docs/PROTOCOL.md section 2.6). A frame whose datagram (vid byte and frame, as the stages left it) is
 * longer than the circuit's datagram limit goes as 2 to 16 fragments of equal size, each a datagram of
 * its own with this 8-byte header in place of the vid byte:
 *
 *   offset 0  u8   0 (the control marker: no data datagram starts so)
 *   offset 1  u8   FRAGMENT_CODE (8, a code no control message has)
 *   offset 2  u8   protocol version, 2
 *   offset 3  u8   vid
 *   offset 4  u16  frame id, big endian: the sender's count of fragmented frames on this circuit
 *   offset 6  u8   index << 4 | (fragments - 1)
 *   offset 7  u8   pad: zero bytes after the frame's end in the last fragment (so that all are one size)
 *   offset 8  ...  piece `index` of the frame, every piece as long as the first
 *
 * Every other frame keeps its one-byte header. Equal fragments make a run that UDP GSO sends as one
 * message. The receiver joins the pieces in a bounded pool of frame slots in its receive batch's memory,
 * gives up a frame after REASSEMBLY_TIMEOUT_MS or when the pool needs its slot, and counts every loss.
 * Nothing here allocates per packet.
 */

import { DROPPED, HEADROOM, type PacketBatch, TAILROOM } from "../packet/packet_batch.ts";
import { REASSEMBLY_SWEEP_MS, REASSEMBLY_TIMEOUT_MS } from "../timing.ts";
import { CIRCUIT_FIELDS, Counter } from "./counters.ts";

export const FRAGMENT_CODE = 8;
export const FRAGMENT_HEADER = 8;
export const MAX_FRAGMENTS = 16;
/** The longest frame (what follows the vid byte) that is fragmented and joined again. */
export const MAX_REASSEMBLED = 16_384;
/** Frames being joined at once, in all circuits of one datapath core. */
export const REASSEMBLY_SLOTS = 128;
/** Bytes of one frame slot: the frame after headroom for the vid byte and a virtio-net header. */
const SLOT_BYTES = Math.ceil((HEADROOM + MAX_REASSEMBLED + TAILROOM) / 64) * 64;
/** Bytes the reassembly pool takes of a receive batch's extra area. */
export const REASSEMBLY_BYTES = REASSEMBLY_SLOTS * SLOT_BYTES;

/** Whether the datagram at memory[at] is a fragment (its header may still be malformed). */
export function isFragment(memory: Uint8Array, at: number, length: number): boolean {
  return length >= 2 && memory[at] === 0 && memory[at + 1] === FRAGMENT_CODE;
}

/**
 * How many datagrams a frame of `length` bytes (without the vid byte) takes under datagram limit `limit`
 * (the longest datagram, header included): 1 when it goes whole, 0 when it cannot go at all.
 */
export function fragmentCount(length: number, limit: number): number {
  if (length + 1 <= limit) return 1;
  if (length > MAX_REASSEMBLED || limit <= FRAGMENT_HEADER) return 0;
  const n = Math.ceil(length / (limit - FRAGMENT_HEADER));
  return n <= MAX_FRAGMENTS ? n : 0;
}

/**
 * The datagram limit of a path: the largest UDP payload that leaves in one IP packet of `pathMtu` bytes.
 */
export function datagramLimit(pathMtu: number, family: 4 | 6): number {
  return pathMtu - ipUdpHeaders(family);
}

/** The IP and UDP header bytes in front of a datagram's payload. */
export function ipUdpHeaders(family: 4 | 6): number {
  return (family === 4 ? 20 : 40) + 8;
}

/**
 * Cuts the datagrams of a send batch that are over `limit` into fragments, in place: each entry [0,
 * count) is a datagram (its vid byte first); an entry over the limit becomes its fragments, spread out in
 * its own buffer (which has room for a 64 KiB packet), and the entries after it move up. The batch must
 * have room for every fragment (capacity = frames * MAX_FRAGMENTS). `lastPiece[j]` says whether entry j
 * ends a frame. A frame that cannot go (over MAX_REASSEMBLED) is dropped. Returns the number of frames
 * fragmented; `firstId` is the frame id of the first.
 */
export function fragmentBatch(
  batch: PacketBatch,
  limit: number,
  firstId: number,
  lastPiece: Uint8Array,
): { fragmented: number; dropped: number } {
  const all = batch.count;
  const offset = batch.offset;
  const lengthOf = batch.length;
  let total = 0;
  let fragmented = 0;
  let dropped = 0;
  for (let i = 0; i < all; i++) {
    const n = fragmentCount(lengthOf[i] - 1, limit);
    if (n === 0) {
      lengthOf[i] = DROPPED;
      dropped++;
    } else if (n > 1) fragmented++;
    total += n;
  }
  if (total > batch.capacity) throw new RangeError("The send batch has no room for the fragments");
  // Entries only move up from here on (from the last down, none onto one not moved yet).
  if (dropped > 0) batch.compact();
  const count = batch.count;
  const memory = batch.memory;
  let w = total;
  let id = firstId + fragmented;
  for (let i = count - 1; i >= 0; i--) {
    const datagram = lengthOf[i];
    const n = fragmentCount(datagram - 1, limit);
    if (n === 1) {
      w--;
      offset[w] = offset[i];
      lengthOf[w] = datagram;
      lastPiece[w] = 1;
      continue;
    }
    id = (id - 1) & 0xffff;
    const vid = memory[offset[i]];
    const frame = offset[i] + 1;
    const length = datagram - 1;
    const piece = Math.ceil(length / n);
    const pad = n * piece - length;
    // From the last piece down, each moves up by one header per piece before it (never onto one not moved).
    for (let j = n - 1; j >= 0; j--) {
      const from = frame + j * piece;
      const to = frame + j * (piece + FRAGMENT_HEADER);
      const size = j === n - 1 ? piece - pad : piece;
      if (j > 0) memory.copyWithin(to, from, from + size);
      if (j === n - 1 && pad > 0) memory.fill(0, to + size, to + piece);
      const header = to - FRAGMENT_HEADER;
      memory[header] = 0;
      memory[header + 1] = FRAGMENT_CODE;
      memory[header + 2] = 2;
      memory[header + 3] = vid;
      memory[header + 4] = id >> 8;
      memory[header + 5] = id & 0xff;
      memory[header + 6] = (j << 4) | (n - 1);
      memory[header + 7] = pad;
      const e = w - n + j;
      offset[e] = header;
      lengthOf[e] = FRAGMENT_HEADER + piece;
      lastPiece[e] = j === n - 1 ? 1 : 0;
    }
    w -= n;
  }
  batch.count = total;
  return { fragmented, dropped };
}

/** What Reassembler.accept() did with a fragment. */
export const Accepted = {
  /** Kept: its frame is not whole yet. */
  KEPT: 0,
  /** Its frame is whole: at `frameStart`, `frameLength` bytes (the vid byte just before it). */
  WHOLE: 1,
  /** Refused (malformed, a duplicate, or at odds with its frame's other fragments), counted. */
  REFUSED: 2,
  /** Every slot holds a frame made whole in this pass: forward those, release(), then offer it again. */
  FULL: 3,
} as const;
export type Accepted = typeof Accepted[keyof typeof Accepted];

/**
 * The receiving side: frames joined in slots of a receive batch's memory (reserved by the caller). A
 * slot that made a whole frame stays held until release(), after the frame was written to its link.
 */
export class Reassembler {
  readonly #memory: Uint8Array;
  readonly #base: number;
  /** Per slot: the frame's key (circuit slot * 65536 + frame id), or -1 when free. */
  readonly #key = new Int32Array(REASSEMBLY_SLOTS).fill(-1);
  readonly #circuit = new Int32Array(REASSEMBLY_SLOTS);
  readonly #fragments = new Int32Array(REASSEMBLY_SLOTS);
  readonly #piece = new Int32Array(REASSEMBLY_SLOTS);
  readonly #pad = new Int32Array(REASSEMBLY_SLOTS);
  readonly #have = new Int32Array(REASSEMBLY_SLOTS);
  readonly #started = new Float64Array(REASSEMBLY_SLOTS);
  readonly #held = new Uint8Array(REASSEMBLY_SLOTS);
  readonly #heldList = new Int32Array(REASSEMBLY_SLOTS);
  #heldCount = 0;
  readonly #byKey = new Map<number, number>();
  readonly #circuitValues: Float64Array<ArrayBufferLike>;
  #lastSweep = 0;
  /** Partial frames in slots now. */
  #partial = 0;
  frameStart = 0;
  frameLength = 0;

  /** `area`: REASSEMBLY_BYTES of the receive batch's memory; `circuitValues`: the circuits' counters. */
  constructor(area: Uint8Array, circuitValues: Float64Array<ArrayBufferLike>) {
    this.#memory = new Uint8Array(area.buffer);
    this.#base = area.byteOffset;
    this.#circuitValues = circuitValues;
  }

  /** Frames partly joined, in all circuits. */
  get partial(): number {
    return this.#partial;
  }

  /**
   * Takes the fragment of `length` bytes at memory[at] (the receive batch's memory) for the circuit in
   * `circuitSlot`, at monotonic time `now` (ms).
   */
  accept(memory: Uint8Array, at: number, length: number, circuitSlot: number, now: number): Accepted {
    if (now - this.#lastSweep >= REASSEMBLY_SWEEP_MS) this.#sweep(now);
    const shape = memory[at + 6];
    const fragments = (shape & 0x0f) + 1;
    const index = shape >> 4;
    const piece = length - FRAGMENT_HEADER;
    const pad = memory[at + 7];
    if (
      memory[at + 2] !== 2 || piece < 1 || fragments < 2 || index >= fragments || pad >= piece ||
      fragments * piece - pad > MAX_REASSEMBLED
    ) {
      return Accepted.REFUSED;
    }
    const key = circuitSlot * 65_536 + ((memory[at + 4] << 8) | memory[at + 5]);
    let slot = this.#byKey.get(key);
    if (
      slot !== undefined &&
      (!this.#matches(slot, fragments, piece, pad) || now - this.#started[slot] >= REASSEMBLY_TIMEOUT_MS)
    ) {
      // The same id with another shape (a frame long gone, the id wrapped, or a forgery), or a frame that
      // waited too long: given up, and this fragment starts a new one.
      this.#giveUp(slot);
      slot = undefined;
    }
    if (slot === undefined) {
      slot = this.#freeSlot();
      if (slot < 0) return Accepted.FULL;
      this.#key[slot] = key;
      this.#circuit[slot] = circuitSlot;
      this.#fragments[slot] = fragments;
      this.#piece[slot] = piece;
      this.#pad[slot] = pad;
      this.#have[slot] = 0;
      this.#started[slot] = now;
      this.#byKey.set(key, slot);
      this.#partial++;
    }
    const bit = 1 << index;
    if (this.#have[slot] & bit) return Accepted.REFUSED;
    this.#have[slot] |= bit;
    const start = this.#base + slot * SLOT_BYTES + HEADROOM;
    this.#memory.set(memory.subarray(at + FRAGMENT_HEADER, at + length), start + index * piece);
    if (this.#have[slot] !== (1 << fragments) - 1) return Accepted.KEPT;
    // Whole: the vid byte goes in front (the AEAD stage reads it as associated data).
    this.#memory[start - 1] = memory[at + 3];
    this.frameStart = start;
    this.frameLength = fragments * piece - pad;
    this.#byKey.delete(key);
    this.#key[slot] = -1;
    this.#partial--;
    this.#held[slot] = 1;
    this.#heldList[this.#heldCount++] = slot;
    return Accepted.WHOLE;
  }

  /** Frees the slots of the frames made whole since the last call (they have been written). */
  release(): void {
    for (let h = 0; h < this.#heldCount; h++) this.#held[this.#heldList[h]] = 0;
    this.#heldCount = 0;
  }

  /** Drops the partial frames of the circuit in `circuitSlot` (it is going), not counted. */
  forget(circuitSlot: number): void {
    for (let slot = 0; slot < REASSEMBLY_SLOTS; slot++) {
      if (this.#key[slot] >= 0 && this.#circuit[slot] === circuitSlot) this.#free(slot);
    }
  }

  #matches(slot: number, fragments: number, piece: number, pad: number): boolean {
    return this.#fragments[slot] === fragments && this.#piece[slot] === piece && this.#pad[slot] === pad;
  }

  /** A free slot, else the oldest partial one (given up, counted), else -1 (all are held). */
  #freeSlot(): number {
    let oldest = -1;
    for (let slot = 0; slot < REASSEMBLY_SLOTS; slot++) {
      if (this.#held[slot]) continue;
      if (this.#key[slot] < 0) return slot;
      if (oldest < 0 || this.#started[slot] < this.#started[oldest]) oldest = slot;
    }
    if (oldest >= 0) this.#giveUp(oldest);
    return oldest;
  }

  /** Gives up the partial frame in `slot`: counted as the circuit's REASSEMBLY_DROPPED. */
  #giveUp(slot: number): void {
    this.#circuitValues[this.#circuit[slot] * CIRCUIT_FIELDS + Counter.REASSEMBLY_DROPPED]++;
    this.#free(slot);
  }

  #free(slot: number): void {
    this.#byKey.delete(this.#key[slot]);
    this.#key[slot] = -1;
    this.#partial--;
  }

  #sweep(now: number): void {
    this.#lastSweep = now;
    if (this.#partial === 0) return;
    for (let slot = 0; slot < REASSEMBLY_SLOTS; slot++) {
      if (this.#key[slot] >= 0 && now - this.#started[slot] >= REASSEMBLY_TIMEOUT_MS) this.#giveUp(slot);
    }
  }
}
