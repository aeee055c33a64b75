/**
 * A stage is one step of a circuit's pipeline, such as encryption or compression: it works on a range of
 * a batch in place. encode() runs on the way out, after the frames are read from the device (and TCP
 * superframes are cut up) and before the vid byte is put in front; decode() runs on the way in, after the
 * vid byte is taken off and before the frames are joined and written to the device. A stage may move an
 * entry's start back into the headroom (at most `overhead` bytes in all, headers and trailers) or drop
 * it (length DROPPED, src/packet/packet_batch.ts). Stages allocate nothing per packet.
 *
 * The order is fixed here and nowhere else: encode in pipeline order, decode in the reverse.
 */

import type { PacketBatch } from "../packet/packet_batch.ts";
import type { CircuitCounts } from "./counters.ts";
import { AEAD_OVERHEAD, type DataKeys } from "../crypto/data_keys.ts";
import type { CipherName, Compression } from "../wire.ts";
import type { FrameFilter } from "./filter_stage.ts";

export interface Stage {
  /** What the stage is, for logs and status ("identity"). */
  readonly id: string;
  /** The most bytes encode() adds to a frame; it comes off the link MTU (src/host_network.ts). */
  readonly overhead: number;
  encode(batch: PacketBatch, start: number, end: number): void;
  decode(batch: PacketBatch, start: number, end: number): void;
  /**
   * Received entries decode() takes at a time at most (the core hands longer runs in parts, each written
   * to the link before the next): a stage that puts frames in StageMemory's decode arena. Absent: any.
   */
  readonly decodeChunk?: number;
  /** Takes new settings of the same stage (new keys); a stage without settings has none. */
  update?(spec: StageSpec): void;
  /** Frees what the stage holds (libcrypto contexts); safe to call twice. */
  close?(): void;
}

/** What a stage may use of its circuit: its counters (values[base + Counter.X]), and of its core. */
export interface StageContext {
  readonly counts: CircuitCounts;
  /** The core's room for stages (absent in tests of stages that need none). */
  readonly memory?: StageMemory;
  /** The longest frame the circuit's link carries (its MTU and a link-layer header). */
  readonly maxFrame?: number;
  /** Monotonic milliseconds (performance.now() unless a test gives another clock). */
  readonly now?: () => number;
}

/**
 * Room in the core's batches that stages may write (src/datapath/core.ts), as offsets into the batch's
 * memory: in the receive batch, an arena for frames decode() makes longer than they came (what is in it
 * lasts until the link has written the entries of that decode() call); in the send batch, scratch bytes
 * for encode() (what is in it lasts until the next frame).
 */
export interface StageMemory {
  readonly decodeArena: number;
  readonly decodeArenaBytes: number;
  readonly encodeScratch: number;
  readonly encodeScratchBytes: number;
}

/** The stage that changes nothing. */
export const identityStage: Stage = {
  id: "identity",
  overhead: 0,
  encode() {},
  decode() {},
};

/** A stage as a Worker is told of it: its id and its settings (the Worker builds it from STAGES). */
export interface StageSpec {
  readonly id: string;
}

/** Every stage a circuit may name, by id (the AEAD stage registers itself: src/datapath/stages.ts). */
export const STAGES: Record<string, (spec: StageSpec, context: StageContext) => Stage> = {
  identity: () => identityStage,
};

const NO_COUNTS: StageContext = { counts: { values: new Float64Array(64), base: 0 } };

/** The stages for a pipeline spec; throws on an unknown id. */
export function buildStages(specs: readonly StageSpec[], context: StageContext = NO_COUNTS): Stage[] {
  return specs.map((spec) => {
    const make = STAGES[spec.id];
    if (!make) throw new RangeError(`Unknown datapath stage: ${spec.id}`);
    return make(spec, context);
  });
}

/** The pipeline of a clear circuit. */
export const DEFAULT_PIPELINE: readonly StageSpec[] = [{ id: "identity" }];

/**
 * The pipeline of a circuit with `cipher`, holding `keys` (clear: the default pipeline), and `filter`
 * first when it has one (src/datapath/filter_stage.ts: it sees frames in clear both ways), then
 * compression when the handshake agreed on it (src/datapath/compress_stage.ts: before the seal, since
 * sealed bytes do not compress).
 */
export function pipelineFor(
  vid: number,
  cipher: CipherName,
  keys?: DataKeys,
  filter?: FrameFilter,
  compression: Compression = "off",
): readonly StageSpec[] {
  const stages: StageSpec[] = filter === undefined ? [] : [{ id: "filter", filter } as StageSpec];
  if (compression !== "off") stages.push({ id: "compress", mode: compression } as StageSpec);
  if (cipher !== "clear" && keys) stages.push({ id: "aead", vid, keys } as StageSpec);
  return stages.length === 0 ? DEFAULT_PIPELINE : stages;
}

/** Bytes the pipeline of a circuit with `cipher` adds to a frame (what the link MTU leaves room for). */
export function cipherOverhead(cipher: CipherName): number {
  return cipher === "clear" ? 0 : AEAD_OVERHEAD;
}

/** Bytes a pipeline adds to a frame. */
export function pipelineOverhead(stages: readonly Stage[]): number {
  let total = 0;
  for (const stage of stages) total += stage.overhead;
  return total;
}

export function encodeAll(stages: readonly Stage[], batch: PacketBatch, start: number, end: number): void {
  for (let s = 0; s < stages.length; s++) stages[s].encode(batch, start, end);
}

export function decodeAll(stages: readonly Stage[], batch: PacketBatch, start: number, end: number): void {
  for (let s = stages.length - 1; s >= 0; s--) stages[s].decode(batch, start, end);
}
