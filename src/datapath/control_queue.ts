/**
 * The bounded hand-off of control datagrams from a datapath Worker to the daemon in the main isolate.
 * The Worker posts each one as a message; without a bound, a flood queued them faster than the main
 * isolate could decide on them (memory grew by hundreds of MB and the daemon's timers stalled). Two
 * lanes, each with its own bound on datagrams posted and not yet taken: one for the addresses of
 * circuits the Worker forwards for (their KEEPALIVEs keep circuits alive), one for everyone else, whose
 * datagrams also spend a budget per second, so that a stranger's flood neither fills the peers' lane nor
 * costs the daemon more than the budget. A datagram over a bound or the budget is dropped in the Worker,
 * before it is copied, and counted (DatapathCount.CONTROL_OVERFLOW).
 */

import { STRANGER_CONTROL_BURST, STRANGER_CONTROL_PER_SECOND } from "../timing.ts";

/** Datagrams posted and not yet taken, per lane: strangers, then known peers. */
export const CONTROL_QUEUE_DEPTH = { stranger: 256, known: 1024 } as const;
/** Bytes of the shared counts (two Int32). */
export const CONTROL_QUEUE_BYTES = 8;

const STRANGER = 0;
const KNOWN = 1;

/** A token bucket on a monotonic clock in milliseconds. */
export class TokenBucket {
  readonly #perMs: number;
  readonly #burst: number;
  #tokens: number;
  #at = -Infinity;

  constructor(perSecond: number, burst: number) {
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
    this.#tokens = burst;
  }

  /** Takes a token if there is one. */
  take(nowMs: number): boolean {
    if (nowMs > this.#at) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (nowMs - this.#at) * this.#perMs);
      this.#at = nowMs;
    }
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}

/** The counts of the queue, in memory both sides share; the Worker offers, the main isolate takes. */
export class ControlQueue {
  readonly #counts: Int32Array<SharedArrayBuffer>;
  readonly #strangers = new TokenBucket(STRANGER_CONTROL_PER_SECOND, STRANGER_CONTROL_BURST);

  constructor(shared: SharedArrayBuffer) {
    this.#counts = new Int32Array(shared, 0, 2);
  }

  /** Whether one more datagram may be posted (then it is counted as posted). Worker side. */
  offer(known: boolean, nowMs: number): boolean {
    const lane = known ? KNOWN : STRANGER;
    const depth = known ? CONTROL_QUEUE_DEPTH.known : CONTROL_QUEUE_DEPTH.stranger;
    if (Atomics.load(this.#counts, lane) >= depth) return false;
    if (!known && !this.#strangers.take(nowMs)) return false;
    Atomics.add(this.#counts, lane, 1);
    return true;
  }

  /** A posted datagram was taken off the queue. Main side. */
  taken(known: boolean): void {
    Atomics.sub(this.#counts, known ? KNOWN : STRANGER, 1);
  }

  /** Datagrams posted and not taken, per lane (for tests). */
  get waiting(): { stranger: number; known: number } {
    return { stranger: Atomics.load(this.#counts, STRANGER), known: Atomics.load(this.#counts, KNOWN) };
  }
}
