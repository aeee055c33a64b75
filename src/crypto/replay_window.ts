/**
 * The replay window of one receive key (RFC 6479): a bitmap of the last WINDOW packet counters below the
 * highest one accepted, kept in 32-bit blocks so that moving the window forward clears whole blocks.
 * check() before the tag is verified (cheap: a too-old or already seen counter costs no decryption),
 * accept() only after it verified, so a forged packet never moves the window. Nothing is allocated after
 * construction; counters are JS numbers (below 2^53, far above what one key ever seals).
 */

const BLOCK_BITS = 32;
/** Blocks in the bitmap; one of them is always being filled, so the window is one block short of it. */
const BLOCKS = 128;
/** How far below the highest accepted counter a packet may be and still be taken once. */
export const REPLAY_WINDOW = (BLOCKS - 1) * BLOCK_BITS;
const LOW_RANGE = 2 ** 32;
const HALF_RANGE = 2 ** 31;

export const ReplayCheck = { FRESH: 0, REPLAYED: 1, TOO_OLD: 2 } as const;
export type ReplayCheck = typeof ReplayCheck[keyof typeof ReplayCheck];

export class ReplayWindow {
  readonly #bitmap: Uint32Array<ArrayBufferLike>;
  /** [0]: the highest counter accepted, -1 before the first. */
  readonly #top: Float64Array<ArrayBufferLike>;

  /**
   * With `state` (8 + 4 * 128 bytes from `offset`, such as shared memory kept per key), the window lives
   * there: a new ReplayWindow over the same memory goes on where the last one stopped. A fresh state is
   * all zero bytes, which reads as "nothing seen yet".
   */
  constructor(state?: ArrayBufferLike, offset = 0) {
    const memory = state ?? new ArrayBuffer(8 + 4 * BLOCKS);
    this.#top = new Float64Array(memory, offset, 1);
    this.#bitmap = new Uint32Array(memory, offset + 8, BLOCKS);
  }

  /** Stored as highest + 1, so that zeroed memory means "none yet". */
  get #highest(): number {
    return this.#top[0] - 1;
  }
  set #highest(value: number) {
    this.#top[0] = value + 1;
  }

  get highest(): number {
    return this.#highest;
  }

  /** The full counter whose low 32 bits are `low`: the one nearest to the highest accepted. */
  rebuild(low: number): number {
    const highest = this.#highest < 0 ? 0 : this.#highest;
    let counter = highest - (highest % LOW_RANGE) + low;
    if (counter > highest + HALF_RANGE && counter >= LOW_RANGE) counter -= LOW_RANGE;
    else if (counter + HALF_RANGE < highest) counter += LOW_RANGE;
    return counter;
  }

  /** Whether `counter` may be taken: FRESH, REPLAYED (seen already) or TOO_OLD (below the window). */
  check(counter: number): ReplayCheck {
    if (counter > this.#highest) return ReplayCheck.FRESH;
    if (this.#highest - counter >= REPLAY_WINDOW) return ReplayCheck.TOO_OLD;
    const block = Math.floor(counter / BLOCK_BITS) % BLOCKS;
    return (this.#bitmap[block] >>> (counter % BLOCK_BITS)) & 1 ? ReplayCheck.REPLAYED : ReplayCheck.FRESH;
  }

  /** Marks `counter` as seen (call only after check() said FRESH and the tag verified). */
  accept(counter: number): void {
    if (counter > this.#highest) {
      const current = Math.floor(this.#highest / BLOCK_BITS);
      const next = Math.floor(counter / BLOCK_BITS);
      const clear = Math.min(next - current, BLOCKS);
      for (let i = 1; i <= clear; i++) this.#bitmap[(current + i) % BLOCKS] = 0;
      this.#highest = counter;
    }
    const block = Math.floor(counter / BLOCK_BITS) % BLOCKS;
    this.#bitmap[block] |= 1 << (counter % BLOCK_BITS);
  }

  /** Forgets everything (a new key). */
  reset(): void {
    this.#bitmap.fill(0);
    this.#highest = -1;
  }
}
