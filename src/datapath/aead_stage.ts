/**
 * The AEAD stage: every frame of a keyed circuit sealed on the way out and opened on the way in
 * (docs/PROTOCOL.md section 2.3). After the vid byte a sealed frame carries
 *
 *   offset 1  u8       key epoch (the handshake number, mod 256, of the key that sealed it)
 *   offset 2  u32      the low 32 bits of the packet counter, big endian
 *   offset 6  n        the frame, encrypted
 *   offset 6+n 16      the tag, over the vid byte, epoch and counter (associated data) and the frame
 *
 * The nonce is 4 zero bytes and the 64-bit counter; one key seals each counter once, from 0. The receiver
 * rebuilds the counter's high bits from its replay window, which it checks before it decrypts (a frame too
 * old or seen already costs nothing) and moves only after the tag verified (src/crypto/replay_window.ts).
 * Two receive keys are held at once, by the epoch's low bit: the newest and the one before it, for frames
 * still on their way after a renewal. The libcrypto contexts are made once per key and only when first
 * needed, so a Worker that only sends never makes a receiving one. Nothing is allocated per frame.
 */

import { AeadContext } from "../../ffi/libcrypto.ts";
import {
  AEAD_HEADER,
  AEAD_OVERHEAD,
  type DataKey,
  type DataKeys,
  KEY_STATE_BYTES,
  SEAL_LIMIT,
} from "../crypto/data_keys.ts";
import { ReplayCheck, ReplayWindow } from "../crypto/replay_window.ts";
import { DROPPED, type PacketBatch } from "../packet/packet_batch.ts";
import { equalBytes } from "../packet/bytes.ts";
import { type CircuitCounts, Counter } from "./counters.ts";
import type { Stage, StageContext, StageSpec } from "./stage.ts";

export interface AeadStageSpec extends StageSpec {
  readonly id: "aead";
  /** The circuit's vid, the first byte of the associated data. */
  readonly vid: number;
  readonly keys: DataKeys;
}

/** The associated data: the vid byte and the stage's header. */
const AAD_LENGTH = 1 + AEAD_HEADER;

interface SealKey {
  readonly spec: DataKey;
  context: AeadContext | undefined;
  /** [0]: the next counter (in the key's shared state when it has one). */
  readonly next: Float64Array<ArrayBufferLike>;
  readonly limit: number;
}

interface OpenKey {
  readonly spec: DataKey;
  context: AeadContext | undefined;
  readonly window: ReplayWindow;
}

function sameKey(a: DataKey | undefined, b: DataKey | undefined): boolean {
  return a !== undefined && b !== undefined && a.epoch === b.epoch && a.cipher === b.cipher &&
    equalBytes(a.key, b.key);
}

export class AeadStage implements Stage {
  readonly id = "aead";
  readonly overhead = AEAD_OVERHEAD;
  readonly #vid: number;
  readonly #counts: CircuitCounts;
  #tx: SealKey | undefined;
  /** By the epoch's low bit. */
  readonly #rx: (OpenKey | undefined)[] = [undefined, undefined];

  constructor(spec: AeadStageSpec, context: StageContext) {
    this.#vid = spec.vid;
    this.#counts = context.counts;
    this.update(spec);
  }

  /** Takes new keys; a key held already keeps its counter and replay window. */
  update(spec: StageSpec): void {
    const keys = (spec as AeadStageSpec).keys;
    if (!sameKey(this.#tx?.spec, keys.tx)) {
      this.#tx?.context?.close();
      this.#tx = keys.tx && {
        spec: keys.tx,
        context: undefined,
        next: new Float64Array(keys.tx.state ?? new ArrayBuffer(KEY_STATE_BYTES), 0, 1),
        limit: SEAL_LIMIT[keys.tx.cipher],
      };
    }
    const next: (OpenKey | undefined)[] = [undefined, undefined];
    for (const key of keys.rx) {
      const slot = key.epoch & 1;
      if (next[slot]) continue;
      const held = this.#rx.find((open) => sameKey(open?.spec, key));
      next[slot] = held ?? { spec: key, context: undefined, window: new ReplayWindow(key.state) };
    }
    for (const old of this.#rx) if (old && !next.includes(old)) old.context?.close();
    this.#rx[0] = next[0];
    this.#rx[1] = next[1];
  }

  encode(batch: PacketBatch, start: number, end: number): void {
    const values = this.#counts.values;
    const base = this.#counts.base;
    const tx = this.#tx;
    const memory = batch.memory;
    let sealed = 0;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      if (!tx || tx.next[0] >= tx.limit) {
        batch.length[i] = DROPPED;
        values[base + Counter.KEY_EXHAUSTED]++;
        continue;
      }
      const context = tx.context ??= new AeadContext(tx.spec.cipher, tx.spec.key, "seal");
      const at = batch.offset[i];
      const header = at - AEAD_HEADER;
      const counter = tx.next[0]++;
      const low = counter % 0x1_0000_0000;
      memory[header - 1] = this.#vid;
      memory[header] = tx.spec.epoch;
      memory[header + 1] = low >>> 24;
      memory[header + 2] = (low >>> 16) & 0xff;
      memory[header + 3] = (low >>> 8) & 0xff;
      memory[header + 4] = low & 0xff;
      context.seal(memory, header - 1, AAD_LENGTH, at, length, counter);
      batch.offset[i] = header;
      batch.length[i] = length + AEAD_OVERHEAD;
      sealed++;
    }
    values[base + Counter.SEALED] += sealed;
  }

  decode(batch: PacketBatch, start: number, end: number): void {
    const values = this.#counts.values;
    const base = this.#counts.base;
    const memory = batch.memory;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      const at = batch.offset[i];
      const epoch = memory[at];
      const rx = this.#rx[epoch & 1];
      if (length <= AEAD_OVERHEAD || rx === undefined || rx.spec.epoch !== epoch) {
        batch.length[i] = DROPPED;
        values[base + Counter.NO_KEY]++;
        continue;
      }
      const low =
        ((memory[at + 1] << 24) | (memory[at + 2] << 16) | (memory[at + 3] << 8) | memory[at + 4]) >>> 0;
      const window = rx.window;
      const counter = window.rebuild(low);
      const verdict = window.check(counter);
      if (verdict !== ReplayCheck.FRESH) {
        batch.length[i] = DROPPED;
        values[base + (verdict === ReplayCheck.REPLAYED ? Counter.REPLAYED_DATA : Counter.TOO_OLD)]++;
        continue;
      }
      const context = rx.context ??= new AeadContext(rx.spec.cipher, rx.spec.key, "open");
      const frame = at + AEAD_HEADER;
      const frameLength = length - AEAD_OVERHEAD;
      // The vid byte the core took off is still in front of the header: the associated data is whole.
      if (!context.open(memory, at - 1, AAD_LENGTH, frame, frameLength, counter)) {
        batch.length[i] = DROPPED;
        values[base + Counter.BAD_TAG]++;
        continue;
      }
      window.accept(counter);
      values[base + Counter.OPENED]++;
      batch.offset[i] = frame;
      batch.length[i] = frameLength;
    }
  }

  close(): void {
    this.#tx?.context?.close();
    for (const rx of this.#rx) rx?.context?.close();
    this.#tx = undefined;
    this.#rx[0] = this.#rx[1] = undefined;
  }
}
