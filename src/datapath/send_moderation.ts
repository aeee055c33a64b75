/**
 * Send moderation: under bulk traffic a sending Worker, woken by a device, waits a moment before it drains
 * the device, so that one drain gathers more frames into each sendmmsg batch, as a network card's interrupt
 * moderation gathers packets per interrupt. Under light traffic (a ping, an interactive session) it never
 * waits, so latency there is unchanged.
 *
 * States and transitions (the clock is injected; `now` in milliseconds):
 *
 * | state  | event                                                         | next   | action            |
 * | ------ | ------------------------------------------------------------- | ------ | ----------------- |
 * | light  | window of MODERATION_WINDOW_MS closes at >= the bulk rate     | bulk   |                   |
 * | light  | woken                                                         | light  | drain at once     |
 * | bulk   | woken within MODERATION_WINDOW_MS of the last drain           | bulk   | wait, then drain  |
 * | bulk   | woken later than that (the traffic paused)                    | light  | drain at once     |
 * | bulk   | window closes below the bulk rate                             | light  |                   |
 *
 * A window closes at the first drain at least MODERATION_WINDOW_MS after it opened; its rate is the bytes
 * drained in it over its length.
 */

import { MODERATION_BULK_BITS_PER_SECOND, MODERATION_WINDOW_MS } from "../timing.ts";

export class SendModeration {
  #bulk = false;
  #windowStart = 0;
  #windowBytes = 0;
  #lastDrain = Number.NEGATIVE_INFINITY;

  /** `waitMicroseconds` 0 turns moderation off: every wake-up drains at once. */
  constructor(readonly waitMicroseconds: number) {}

  /** Woken by a device at `now`: how long to wait before draining it, in microseconds (0: not at all). */
  wake(now: number): number {
    if (now - this.#lastDrain > MODERATION_WINDOW_MS) this.#bulk = false;
    return this.#bulk ? this.waitMicroseconds : 0;
  }

  /** A drain at `now` read `bytes` from the devices. */
  drained(bytes: number, now: number): void {
    if (this.waitMicroseconds <= 0) return;
    this.#lastDrain = now;
    this.#windowBytes += bytes;
    const length = now - this.#windowStart;
    if (length < MODERATION_WINDOW_MS) return;
    this.#bulk = (this.#windowBytes * 8) / (length / 1000) >= MODERATION_BULK_BITS_PER_SECOND;
    this.#windowStart = now;
    this.#windowBytes = 0;
  }

  /** Whether wake-ups wait now (for tests). */
  get bulk(): boolean {
    return this.#bulk;
  }
}
