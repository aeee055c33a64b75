/**
 * The daemon's timers, injected with its clock (DaemonEnvironment): the real ones in production, a fake
 * clock in the daemon's tests (tests/fakes/fake_clock.ts), so that a test of a 6 s dead-peer time takes
 * no 6 s.
 */

export type TimerId = number;

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId | undefined): void;
  setInterval(fn: () => void, ms: number): TimerId;
  clearInterval(id: TimerId | undefined): void;
}

/** Deno's own timers (its ids are numbers, though the Node types in scope say otherwise). */
export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms) as unknown as TimerId,
  clearTimeout: (id) => clearTimeout(id),
  setInterval: (fn, ms) => setInterval(fn, ms) as unknown as TimerId,
  clearInterval: (id) => clearInterval(id),
};
