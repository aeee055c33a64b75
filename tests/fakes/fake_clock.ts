/**
 * A clock for the daemon's tests: now() and the daemon's timers (src/daemon/timers.ts) on a time that
 * moves only when the test says so. advance() fires every timer that falls due, in order, and lets the
 * event loop run between them, so that datagrams on the fake wire are delivered as they would be.
 */

import type { TimerId, Timers } from "../../src/daemon/timers.ts";

interface Pending {
  readonly id: TimerId;
  at: number;
  readonly fn: () => void;
  readonly every?: number;
}

/** Lets promises and the fakes' deliveries run (a real macrotask). */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

export class FakeClock implements Timers {
  #now = 1_000_000;
  #nextId = 1;
  readonly #pending = new Map<TimerId, Pending>();

  readonly now = (): number => this.#now;

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.#nextId++;
    this.#pending.set(id, { id, at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(id: TimerId | undefined): void {
    if (id !== undefined) this.#pending.delete(id);
  }

  setInterval(fn: () => void, ms: number): TimerId {
    const id = this.#nextId++;
    this.#pending.set(id, { id, at: this.#now + ms, fn, every: ms });
    return id;
  }

  clearInterval(id: TimerId | undefined): void {
    this.clearTimeout(id);
  }

  /** Moves the time on by `ms` in steps of at most `step` ms, firing what falls due. */
  async advance(ms: number, step = 50): Promise<void> {
    const end = this.#now + ms;
    while (this.#now < end) {
      const target = Math.min(end, this.#now + step);
      for (;;) {
        let next: Pending | undefined;
        for (const timer of this.#pending.values()) {
          if (timer.at <= target && (!next || timer.at < next.at)) next = timer;
        }
        if (!next) break;
        this.#now = Math.max(this.#now, next.at);
        if (next.every) next.at += next.every;
        else this.#pending.delete(next.id);
        next.fn();
        await settle();
      }
      this.#now = target;
      await settle();
    }
  }

  /** Advances until `condition` holds; throws with `what` after `ms` of fake time. */
  async until(condition: () => boolean, what: string, ms: number): Promise<void> {
    const end = this.#now + ms;
    while (!condition()) {
      if (this.#now >= end) throw new Error(`Timed out waiting for ${what} (${ms} ms of fake time)`);
      await this.advance(50);
    }
  }
}
