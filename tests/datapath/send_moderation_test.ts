import assert from "node:assert/strict";
import { SendModeration } from "../../src/datapath/send_moderation.ts";
import { MODERATION_BULK_BITS_PER_SECOND, MODERATION_WINDOW_MS } from "../../src/timing.ts";

/** Bytes that make `ms` milliseconds carry `factor` times the bulk rate. */
function bytesFor(ms: number, factor: number): number {
  return Math.ceil((MODERATION_BULK_BITS_PER_SECOND * factor * ms) / 1000 / 8);
}

/** Drains `steps` times over `ms` milliseconds from `start`, at `factor` times the bulk rate. */
function traffic(moderation: SendModeration, start: number, ms: number, factor: number, steps = 20): number {
  const step = ms / steps;
  let now = start;
  for (let i = 0; i < steps; i++) {
    now += step;
    moderation.wake(now);
    moderation.drained(bytesFor(step, factor), now);
  }
  return now;
}

Deno.test("wake() never waits under light traffic", () => {
  const moderation = new SendModeration(100);
  let now = 0;
  for (let i = 0; i < 1000; i++) {
    now += 1; // a 1500-byte frame a millisecond: 12 Mbit/s
    assert.equal(moderation.wake(now), 0);
    moderation.drained(1500, now);
  }
  assert.equal(moderation.bulk, false);
});

Deno.test("wake() waits once a window has carried the bulk rate", () => {
  const moderation = new SendModeration(100);
  const now = traffic(moderation, 0, 2 * MODERATION_WINDOW_MS, 1.5);
  assert.equal(moderation.bulk, true);
  assert.equal(moderation.wake(now + 0.05), 100);
});

Deno.test("wake() stops waiting after a window below the bulk rate", () => {
  const moderation = new SendModeration(100);
  let now = traffic(moderation, 0, 2 * MODERATION_WINDOW_MS, 1.5);
  assert.equal(moderation.bulk, true);
  now = traffic(moderation, now, 2 * MODERATION_WINDOW_MS, 0.5);
  assert.equal(moderation.bulk, false);
  assert.equal(moderation.wake(now + 0.05), 0);
});

Deno.test("wake() drains at once when the traffic paused for a window, though the last window was bulk", () => {
  const moderation = new SendModeration(100);
  const now = traffic(moderation, 0, 2 * MODERATION_WINDOW_MS, 3);
  assert.equal(moderation.wake(now + 0.5 * MODERATION_WINDOW_MS), 100, "a short gap keeps the wait");
  assert.equal(moderation.wake(now + 2 * MODERATION_WINDOW_MS), 0, "a ping after a transfer is not delayed");
  assert.equal(moderation.bulk, false);
});

Deno.test("a wait of 0 turns moderation off, however heavy the traffic", () => {
  const moderation = new SendModeration(0);
  const now = traffic(moderation, 0, 10 * MODERATION_WINDOW_MS, 50);
  assert.equal(moderation.bulk, false);
  assert.equal(moderation.wake(now + 0.01), 0);
});
