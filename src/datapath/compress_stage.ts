/**
 * The compression stage (docs/PROTOCOL.md section 2.7): on a circuit whose handshake agreed on it, every
 * frame carries one code byte in front (inside the AEAD payload when the circuit is keyed, since this
 * stage runs before that one):
 *
 *   0x00  RAW    the frame follows as it was: it did not shrink, or was not tried
 *   0x01  LZ4    an LZ4 block (liblz4's block format, no frame header) that decompresses to the frame
 *
 * A frame is sent compressed only when that saves at least one byte with the code counted (IPComp's
 * rule), so a frame on the wire is at most one byte longer than without the stage. Every frame is
 * compressed on its own: a lost or reordered datagram never keeps another from being decoded.
 *
 * Giving up. Every frame tried costs an LZ4 run whether it shrinks or not, which incompressible traffic
 * (TLS, QUIC, random data) does not pay back. So the stage tries in windows of PROBE_FRAMES frames; a
 * window that saved less than GIVE_UP_SAVING of its bytes makes the stage send the next frames raw
 * without trying, first SKIP_FIRST frames, doubling up to SKIP_MOST while windows keep failing, and the
 * first window that pays starts over. Frames below MIN_TRIED_BYTES are never tried (headers do not
 * compress on their own).
 *
 * On the way in, a RAW frame loses its code byte in place; an LZ4 frame is decompressed into the core's
 * decode arena (StageMemory), one slot per entry of the decode() call, at most maxFrame bytes (a block that
 * would make more is malformed); the entry then points there. An unknown code, a malformed block or an
 * empty entry is dropped and counted (BAD_COMPRESSION). Nothing is allocated per frame.
 */

import { lz4Decompress, Lz4DictionaryCompressor } from "../../ffi/liblz4.ts";
import { DROPPED, HEADROOM, type PacketBatch } from "../packet/packet_batch.ts";
import { type CircuitCounts, Counter } from "./counters.ts";
import type { Stage, StageContext, StageMemory, StageSpec } from "./stage.ts";
import { COMPRESSION_OVERHEAD, CompressionCode } from "../wire.ts";

/** Frames per window of tries, and the share of its bytes a window must save to go on trying. */
export const PROBE_FRAMES = 64;
export const GIVE_UP_SAVING = 0.03;
/** Frames sent raw without trying after a window that did not pay, at first and at most. */
export const SKIP_FIRST = 1024;
export const SKIP_MOST = 65_536;
/** Frames shorter than this are sent raw without trying. */
export const MIN_TRIED_BYTES = 64;

export interface CompressStageSpec extends StageSpec {
  readonly id: "compress";
}

export class CompressStage implements Stage {
  readonly id = "compress";
  readonly overhead = COMPRESSION_OVERHEAD;
  readonly decodeChunk: number;
  readonly #counts: CircuitCounts;
  readonly #memory: StageMemory;
  readonly #maxFrame: number;
  /** Bytes between two decode slots in the arena. */
  readonly #slotBytes: number;
  /** Made when the first frame is tried, so that a Worker that only receives never makes one. */
  #compressor: Lz4DictionaryCompressor | undefined;
  /** The window of tries under way: frames tried, their bytes, and the bytes they went out as. */
  #windowFrames = 0;
  #windowIn = 0;
  #windowOut = 0;
  /** Frames still to send raw without trying, and how many the next failed window skips. */
  #skipLeft = 0;
  #nextSkip = SKIP_FIRST;

  constructor(_spec: CompressStageSpec, context: StageContext) {
    if (!context.memory || !context.maxFrame) {
      throw new RangeError("The compression stage needs the core's stage memory and the link's frame size");
    }
    this.#counts = context.counts;
    this.#memory = context.memory;
    this.#maxFrame = context.maxFrame;
    this.#slotBytes = Math.ceil((HEADROOM + context.maxFrame) / 64) * 64;
    this.decodeChunk = Math.max(1, Math.floor(context.memory.decodeArenaBytes / this.#slotBytes));
    if (context.memory.encodeScratchBytes < context.maxFrame) {
      throw new RangeError("The core's encode scratch is smaller than a frame");
    }
  }

  encode(batch: PacketBatch, start: number, end: number): void {
    const values = this.#counts.values;
    const base = this.#counts.base;
    const memory = batch.memory;
    const scratch = this.#memory.encodeScratch;
    let bytesIn = 0;
    let bytesOut = 0;
    let raw = 0;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      const at = batch.offset[i];
      bytesIn += length;
      let packed = 0;
      if (length >= MIN_TRIED_BYTES && this.#skipLeft === 0) {
        const compressor = this.#compressor ??= new Lz4DictionaryCompressor();
        // Only a block at least two bytes shorter pays for its code byte.
        packed = compressor.compress(memory, at, length, memory, scratch, length - 2);
        this.#tried(length, packed > 0 ? packed + 1 : length + 1);
      } else if (this.#skipLeft > 0) {
        this.#skipLeft--;
      }
      if (packed > 0) {
        memory.copyWithin(at, scratch, scratch + packed);
        memory[at - 1] = CompressionCode.LZ4;
        batch.length[i] = packed + 1;
        bytesOut += packed + 1;
      } else {
        memory[at - 1] = CompressionCode.RAW;
        batch.length[i] = length + 1;
        bytesOut += length + 1;
        raw++;
      }
      batch.offset[i] = at - 1;
    }
    values[base + Counter.COMPRESS_IN] += bytesIn;
    values[base + Counter.COMPRESS_OUT] += bytesOut;
    values[base + Counter.SENT_UNCOMPRESSED] += raw;
  }

  /** Counts a frame tried into the window; a full window decides whether to go on trying. */
  #tried(bytesIn: number, bytesOut: number): void {
    this.#windowFrames++;
    this.#windowIn += bytesIn;
    this.#windowOut += bytesOut;
    if (this.#windowFrames < PROBE_FRAMES) return;
    const saved = 1 - this.#windowOut / this.#windowIn;
    this.#windowFrames = this.#windowIn = this.#windowOut = 0;
    if (saved >= GIVE_UP_SAVING) {
      this.#nextSkip = SKIP_FIRST;
      return;
    }
    this.#skipLeft = this.#nextSkip;
    this.#nextSkip = Math.min(this.#nextSkip * 2, SKIP_MOST);
    this.#counts.values[this.#counts.base + Counter.COMPRESSION_PAUSES]++;
  }

  decode(batch: PacketBatch, start: number, end: number): void {
    const values = this.#counts.values;
    const base = this.#counts.base;
    const memory = batch.memory;
    const arena = this.#memory.decodeArena + HEADROOM;
    const slotBytes = this.#slotBytes;
    const maxFrame = this.#maxFrame;
    let bad = 0;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      const at = batch.offset[i];
      const code = length > 0 ? memory[at] : -1;
      if (code === CompressionCode.RAW) {
        batch.offset[i] = at + 1;
        batch.length[i] = length - 1;
        continue;
      }
      if (code === CompressionCode.LZ4 && length > 1) {
        const to = arena + (i - start) * slotBytes;
        const made = lz4Decompress(memory, at + 1, length - 1, memory, to, maxFrame);
        if (made > 0) {
          batch.offset[i] = to;
          batch.length[i] = made;
          continue;
        }
      }
      batch.length[i] = DROPPED;
      bad++;
    }
    if (bad > 0) values[base + Counter.BAD_COMPRESSION] += bad;
  }

  close(): void {
    this.#compressor?.close();
    this.#compressor = undefined;
  }
}
