/**
 * The compression stage (docs/PROTOCOL.md sections 2.7 and 2.8): on a circuit whose handshake agreed on
 * it, every frame carries a code byte in front (inside the AEAD payload when the circuit is keyed, since
 * this stage runs before that one). Its low bits say what follows:
 *
 *   0x00  RAW         the frame as it was: it did not shrink, or was not tried
 *   0x01  LZ4         an LZ4 block (liblz4's block format, no frame header) that decompresses to the frame
 *   0x02  DICTIONARY  an epoch byte, then an LZ4 block made against that epoch's dictionary
 *
 * and, in the dictionary mode, bit 7 (SAMPLE) says that two more bytes follow, an epoch and an index (bit
 * 7 of it: the last one), and that the frame, once decoded, is that piece of that epoch's dictionary.
 *
 * A frame is sent compressed only when that saves at least one byte with its header counted (IPComp's
 * rule), so a frame on the wire is at most the header longer than without the stage. Every block decodes
 * on its own, or with a dictionary the receiver is known to hold: a lost or reordered datagram never keeps
 * another from being decoded.
 *
 * Delayed dictionaries (after Matias and Refua, "Delayed-Dictionary Compression for Packet Networks",
 * INFOCOM 2005). The sender picks frames it sends anyway as the pieces of the next dictionary (frames of
 * at least MIN_SAMPLE_BYTES that shrank, until DICTIONARY_BYTES, the first FIRST_DICTIONARY_BYTES, or
 * MAX_SAMPLES), marks them SAMPLE with
 * their epoch and index, and keeps a copy. The receiver keeps the pieces; when it holds all of an epoch
 * (the last is marked), it joins them in index order into that epoch's dictionary, and publishes its epoch
 * and SHA-256 in the circuit's counters, which the daemon tells the peer in a signed DACK control message
 * (src/session.ts). Only when the DACK names the epoch and the hash of what the sender kept does the sender
 * compress against it (the daemon hands the DACK to this stage with update()): a frame never names a
 * dictionary the receiver lacks. A piece lost on the way leaves its epoch incomplete: the sender gives it
 * up DICTIONARY_ACK_MS after its last piece and builds another. The receiver holds two dictionaries, the one
 * the sender's frames use and the newest; a frame naming another epoch is dropped and counted
 * (DICTIONARY_MISSING). After DICTIONARY_REFRESH_FRAMES frames with one dictionary the sender builds the
 * next, so the dictionary follows the traffic. Nothing is shared between circuits.
 *
 * Giving up. Every frame tried costs an LZ4 run whether it shrinks or not, which incompressible traffic
 * (TLS, QUIC, random data) does not pay back. So the stage tries in windows of PROBE_FRAMES frames; a
 * window that saved less than GIVE_UP_SAVING of its bytes makes the stage send the next frames raw
 * without trying, first SKIP_FIRST frames, doubling up to SKIP_MOST while windows keep failing, and the
 * first window that pays starts over. Frames below MIN_TRIED_BYTES are never tried.
 *
 * On the way in, a RAW frame loses its header in place; a block is decompressed into the core's decode
 * arena (StageMemory), one slot per entry of the decode() call, at most maxFrame bytes (a block that would
 * make more is malformed); the entry then points there. An unknown code, a malformed block, a header
 * longer than the entry or an empty entry is dropped and counted (BAD_COMPRESSION). Nothing is allocated
 * per frame (a dictionary's hash allocates, once per epoch).
 */

import { createHash } from "node:crypto";
import { lz4Decompress, lz4DecompressWithDictionary, Lz4DictionaryCompressor } from "../../ffi/liblz4.ts";
import { DROPPED, HEADROOM, type PacketBatch } from "../packet/packet_batch.ts";
import { type CircuitCounts, Counter } from "./counters.ts";
import type { Stage, StageContext, StageMemory, StageSpec } from "./stage.ts";
import { type Compression, COMPRESSION_OVERHEAD, CompressionCode, DICTIONARY_OVERHEAD } from "../wire.ts";
import { DICTIONARY_ACK_MS } from "../timing.ts";

/** Frames per window of tries, and the share of its bytes a window must save to go on trying. */
export const PROBE_FRAMES = 64;
export const GIVE_UP_SAVING = 0.03;
/** Frames sent raw without trying after a window that did not pay, at first and at most. */
export const SKIP_FIRST = 1024;
export const SKIP_MOST = 65_536;
/** Frames shorter than this are sent raw without trying. */
export const MIN_TRIED_BYTES = 64;

/**
 * A dictionary is made of this many bytes of frames at least (the last piece may go past it); the first
 * one of a circuit of FIRST_DICTIONARY_BYTES, so that it comes into use sooner, and the next one is
 * built as soon as that one is in use.
 */
export const DICTIONARY_BYTES = 48 * 1024;
export const FIRST_DICTIONARY_BYTES = 12 * 1024;
/** Pieces of one dictionary at most, and the shortest frame taken as one (only frames that shrank 10%). */
export const MAX_SAMPLES = 127;
export const MIN_SAMPLE_BYTES = 128;
/** Frames sent with one dictionary before the sender builds the next. */
export const DICTIONARY_REFRESH_FRAMES = 1024;

/** What the compression stage does: LZ4 per frame, or with delayed dictionaries too. */
export type CompressionMode = Exclude<Compression, "off">;

export interface CompressStageSpec extends StageSpec {
  readonly id: "compress";
  readonly mode?: CompressionMode;
  /** The peer's DACK: it holds our dictionary `epoch` whose SHA-256 begins with `hash` (update() only). */
  readonly acknowledged?: { readonly epoch: number; readonly hash: bigint };
}

/** The first 8 bytes of the SHA-256 of bytes[0, length), as the DACK carries them. */
export function dictionaryHash(bytes: Uint8Array, length: number): bigint {
  const digest = createHash("sha256").update(bytes.subarray(0, length)).digest();
  return digest.readBigUInt64BE(0);
}

/** The next epoch after `epoch` (1 to 255; 0 means none). */
function nextEpoch(epoch: number): number {
  return epoch % 255 + 1;
}

/** The sender's dictionary under construction: the pieces it marked, copied one after the other. */
interface Building {
  epoch: number;
  pieces: number;
  bytes: number;
  /** The last piece is sent; waiting for the DACK (its hash) since `sentAt`, frames since. */
  sent: boolean;
  hash: bigint;
  sentAt: number;
  framesSince: number;
}

/** The receiver's pieces of one epoch, in the order they came. */
interface Gathering {
  epoch: number;
  used: number;
  held: number;
  /** The index of the piece marked last, -1 before it came. */
  last: number;
  readonly have: Uint8Array;
  readonly at: Int32Array;
  readonly length: Int32Array;
}

export class CompressStage implements Stage {
  readonly id = "compress";
  readonly overhead: number;
  readonly decodeChunk: number;
  readonly #mode: CompressionMode;
  readonly #counts: CircuitCounts;
  readonly #memory: StageMemory;
  readonly #maxFrame: number;
  readonly #now: () => number;
  /** Bytes between two decode slots in the arena. */
  readonly #slotBytes: number;
  /** Made when the first frame is tried, so that a Worker that only receives never makes one. */
  #plain: Lz4DictionaryCompressor | undefined;
  #withDictionary: Lz4DictionaryCompressor | undefined;
  /** The window of tries under way: frames tried, their bytes, and the bytes they went out as. */
  #windowFrames = 0;
  #windowIn = 0;
  #windowOut = 0;
  /** Frames still to send raw without trying, and how many the next failed window skips. */
  #skipLeft = 0;
  #nextSkip = SKIP_FIRST;

  // The sender's dictionaries (dictionary mode): the one in use and the next one.
  #txEpoch = 0;
  #txDictionaryBytes = 0;
  #txFramesWithDictionary = 0;
  #txInUse: Uint8Array | undefined;
  #txNext: Uint8Array | undefined;
  #building: Building | undefined;
  #lastEpoch = 0;

  // The receiver's: two dictionaries by epoch, and the pieces of the one coming.
  readonly #rxEpoch = [0, 0];
  readonly #rxBytes: (Uint8Array | undefined)[] = [undefined, undefined];
  readonly #rxLength = [0, 0];
  #gathering: Gathering | undefined;
  #staging: Uint8Array | undefined;
  #peerUses = 0;

  constructor(spec: CompressStageSpec, context: StageContext) {
    if (!context.memory || !context.maxFrame) {
      throw new RangeError("The compression stage needs the core's stage memory and the link's frame size");
    }
    this.#mode = spec.mode ?? "lz4";
    this.overhead = this.#mode === "dictionary" ? DICTIONARY_OVERHEAD : COMPRESSION_OVERHEAD;
    this.#counts = context.counts;
    this.#memory = context.memory;
    this.#maxFrame = context.maxFrame;
    this.#now = context.now ?? (() => performance.now());
    this.#slotBytes = Math.ceil((HEADROOM + context.maxFrame) / 64) * 64;
    this.decodeChunk = Math.max(1, Math.floor(context.memory.decodeArenaBytes / this.#slotBytes));
    if (context.memory.encodeScratchBytes < context.maxFrame) {
      throw new RangeError("The core's encode scratch is smaller than a frame");
    }
  }

  /** Room for one dictionary: its bytes and a last piece that may go past them. */
  #dictionaryRoom(): number {
    return DICTIONARY_BYTES + this.#maxFrame;
  }

  encode(batch: PacketBatch, start: number, end: number): void {
    const values = this.#counts.values;
    const base = this.#counts.base;
    const memory = batch.memory;
    const scratch = this.#memory.encodeScratch;
    const dictionaries = this.#mode === "dictionary";
    let bytesIn = 0;
    let bytesOut = 0;
    let raw = 0;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      const at = batch.offset[i];
      bytesIn += length;
      let kind: number = CompressionCode.RAW;
      let packed = 0;
      if (length >= MIN_TRIED_BYTES && this.#skipLeft === 0) {
        if (this.#txEpoch !== 0) {
          // Code and epoch: the block must be at least three bytes shorter to pay.
          packed = this.#withDictionary!.compress(memory, at, length, memory, scratch, length - 3);
          if (packed > 0) kind = CompressionCode.DICTIONARY;
          this.#tried(length, packed > 0 ? packed + 2 : length + 1);
        } else {
          const plain = this.#plain ??= new Lz4DictionaryCompressor();
          packed = plain.compress(memory, at, length, memory, scratch, length - 2);
          if (packed > 0) kind = CompressionCode.LZ4;
          this.#tried(length, packed > 0 ? packed + 1 : length + 1);
        }
      } else if (this.#skipLeft > 0) {
        this.#skipLeft--;
      }
      let sample = -1;
      if (dictionaries) {
        this.#txFramesWithDictionary++;
        sample = this.#sampleOf(memory, at, length, kind === CompressionCode.RAW ? length : packed);
      }
      const header = 1 + (kind === CompressionCode.DICTIONARY ? 1 : 0) + (sample >= 0 ? 2 : 0);
      const payload = kind === CompressionCode.RAW ? length : packed;
      if (kind !== CompressionCode.RAW) memory.copyWithin(at, scratch, scratch + packed);
      else raw++;
      let h = at - header;
      memory[h++] = kind | (sample >= 0 ? CompressionCode.SAMPLE : 0);
      if (kind === CompressionCode.DICTIONARY) memory[h++] = this.#txEpoch;
      if (sample >= 0) {
        memory[h++] = this.#building!.epoch;
        memory[h] = sample;
      }
      batch.offset[i] = at - header;
      batch.length[i] = payload + header;
      bytesOut += payload + header;
    }
    values[base + Counter.COMPRESS_IN] += bytesIn;
    values[base + Counter.COMPRESS_OUT] += bytesOut;
    values[base + Counter.SENT_UNCOMPRESSED] += raw;
  }

  /**
   * Whether the frame memory[at, +length), which goes out as `sent` bytes, becomes a piece of the next
   * dictionary: its index byte (bit 7 on the last), or -1. Starts, gives up and renews epochs as needed.
   */
  #sampleOf(memory: Uint8Array, at: number, length: number, sent: number): number {
    let building = this.#building;
    if (building?.sent) {
      // The clock is read every 64 frames only.
      if ((++building.framesSince & 63) !== 0 || this.#now() - building.sentAt < DICTIONARY_ACK_MS) return -1;
      building = this.#building = undefined; // Never acknowledged: a piece was lost. Build another.
    }
    if (!building) {
      const full = this.#txDictionaryBytes >= DICTIONARY_BYTES;
      if (this.#txEpoch !== 0 && full && this.#txFramesWithDictionary < DICTIONARY_REFRESH_FRAMES) return -1;
      let epoch = nextEpoch(this.#lastEpoch);
      if (epoch === this.#txEpoch) epoch = nextEpoch(epoch);
      this.#lastEpoch = epoch;
      building = this.#building = {
        epoch: this.#lastEpoch,
        pieces: 0,
        bytes: 0,
        sent: false,
        hash: 0n,
        sentAt: 0,
        framesSince: 0,
      };
      this.#txNext ??= new Uint8Array(this.#dictionaryRoom());
    }
    if (length < MIN_SAMPLE_BYTES || sent * 10 > length * 9) return -1;
    const index = building.pieces++;
    this.#txNext!.set(memory.subarray(at, at + length), building.bytes);
    building.bytes += length;
    const size = this.#txEpoch === 0 ? FIRST_DICTIONARY_BYTES : DICTIONARY_BYTES;
    if (building.bytes < size && building.pieces < MAX_SAMPLES) return index;
    building.sent = true;
    building.sentAt = this.#now();
    building.hash = dictionaryHash(this.#txNext!, building.bytes);
    return index | 0x80;
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

  /** The peer's DACK (through the daemon): compress against that epoch if it is the one we built. */
  update(spec: StageSpec): void {
    const acknowledged = (spec as CompressStageSpec).acknowledged;
    const building = this.#building;
    if (!acknowledged || !building?.sent) return;
    if (acknowledged.epoch !== building.epoch || acknowledged.hash !== building.hash) return;
    const dictionary = this.#txNext!;
    const compressor = this.#withDictionary ??= new Lz4DictionaryCompressor();
    compressor.setDictionary(dictionary, 0, building.bytes);
    // The dictionary in use stays where it is while LZ4 refers to it; the one it replaces is the next.
    this.#txNext = this.#txInUse;
    this.#txInUse = dictionary;
    this.#txEpoch = building.epoch;
    this.#txDictionaryBytes = building.bytes;
    this.#txFramesWithDictionary = 0;
    this.#building = undefined;
    const values = this.#counts.values;
    values[this.#counts.base + Counter.DICTIONARY_IN_USE] = building.epoch;
    values[this.#counts.base + Counter.DICTIONARIES_USED]++;
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
      const stop = at + length;
      const code = length > 0 ? memory[at] : 0xff;
      const kind = code & CompressionCode.KIND;
      const sampled = (code & CompressionCode.SAMPLE) !== 0 && this.#mode === "dictionary";
      let p = at + 1;
      const epoch = kind === CompressionCode.DICTIONARY ? memory[p++] : 0;
      const sampleEpoch = sampled ? memory[p++] : 0;
      const sampleIndex = sampled ? memory[p++] : 0;
      let frame = -1;
      let made = -1;
      if ((code & ~(CompressionCode.KIND | CompressionCode.SAMPLE)) !== 0 || (!sampled && code >= 0x80)) {
        made = -1;
      } else if (p > stop || length === 0) {
        made = -1;
      } else if (kind === CompressionCode.RAW) {
        frame = p;
        made = stop - p;
      } else if (kind === CompressionCode.LZ4 && stop > p) {
        frame = arena + (i - start) * slotBytes;
        made = lz4Decompress(memory, p, stop - p, memory, frame, maxFrame);
      } else if (kind === CompressionCode.DICTIONARY && stop > p && this.#mode === "dictionary") {
        const slot = this.#rxEpoch[0] === epoch && epoch !== 0
          ? 0
          : this.#rxEpoch[1] === epoch && epoch !== 0
          ? 1
          : -1;
        if (slot < 0) {
          batch.length[i] = DROPPED;
          values[base + Counter.DICTIONARY_MISSING]++;
          continue;
        }
        frame = arena + (i - start) * slotBytes;
        made = lz4DecompressWithDictionary(
          memory,
          p,
          stop - p,
          memory,
          frame,
          maxFrame,
          this.#rxBytes[slot]!,
          0,
          this.#rxLength[slot],
        );
        if (made > 0 && this.#peerUses !== epoch) {
          this.#peerUses = epoch;
          values[base + Counter.DICTIONARY_PEER_USES] = epoch;
        }
      }
      if (made <= 0) {
        batch.length[i] = DROPPED;
        bad++;
        continue;
      }
      batch.offset[i] = frame;
      batch.length[i] = made;
      if (sampled && sampleEpoch !== 0) this.#gather(sampleEpoch, sampleIndex, memory, frame, made);
    }
    if (bad > 0) values[base + Counter.BAD_COMPRESSION] += bad;
  }

  /** Keeps a piece of the peer's dictionary `epoch`; the last one missing makes it whole. */
  #gather(epoch: number, index: number, memory: Uint8Array, at: number, length: number): void {
    let gathering = this.#gathering;
    if (!gathering || gathering.epoch !== epoch) {
      gathering = this.#gathering = {
        epoch,
        used: 0,
        held: 0,
        last: -1,
        have: gathering?.have.fill(0) ?? new Uint8Array(MAX_SAMPLES + 1),
        at: gathering?.at ?? new Int32Array(MAX_SAMPLES + 1),
        length: gathering?.length ?? new Int32Array(MAX_SAMPLES + 1),
      };
    }
    const piece = index & 0x7f;
    if (gathering.epoch === 0 || gathering.have[piece]) return;
    const staging = this.#staging ??= new Uint8Array(this.#dictionaryRoom());
    if (gathering.used + length > staging.length) {
      gathering.epoch = 0; // More than a dictionary holds: not one this side made sense of.
      return;
    }
    staging.set(memory.subarray(at, at + length), gathering.used);
    gathering.have[piece] = 1;
    gathering.at[piece] = gathering.used;
    gathering.length[piece] = length;
    gathering.used += length;
    gathering.held++;
    if (index & 0x80) gathering.last = piece;
    if (gathering.last < 0 || gathering.held !== gathering.last + 1) return;
    // Whole: joined in index order into the slot the peer's frames do not use.
    const slot = this.#rxEpoch[0] === this.#peerUses && this.#peerUses !== 0 ? 1 : 0;
    const target = this.#rxBytes[slot] ??= new Uint8Array(this.#dictionaryRoom());
    let bytes = 0;
    for (let k = 0; k <= gathering.last; k++) {
      target.set(staging.subarray(gathering.at[k], gathering.at[k] + gathering.length[k]), bytes);
      bytes += gathering.length[k];
    }
    this.#rxEpoch[slot] = epoch;
    this.#rxLength[slot] = bytes;
    const hash = dictionaryHash(target, bytes);
    const values = this.#counts.values;
    const base = this.#counts.base;
    values[base + Counter.DICTIONARY_READY_HASH_HIGH] = Number(hash >> 32n);
    values[base + Counter.DICTIONARY_READY_HASH_LOW] = Number(hash & 0xffff_ffffn);
    values[base + Counter.DICTIONARY_READY] = epoch;
    gathering.epoch = 0;
  }

  close(): void {
    this.#plain?.close();
    this.#withDictionary?.close();
    this.#plain = this.#withDictionary = undefined;
  }
}
