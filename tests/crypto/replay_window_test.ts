import assert from "node:assert/strict";
import { REPLAY_WINDOW, ReplayCheck, ReplayWindow } from "../../src/crypto/replay_window.ts";

const { FRESH, REPLAYED, TOO_OLD } = ReplayCheck;

/** check(), and accept() when it says FRESH: what a receiver does with a verified packet. */
function take(window: ReplayWindow, counter: number): ReplayCheck {
  const verdict = window.check(counter);
  if (verdict === FRESH) window.accept(counter);
  return verdict;
}

Deno.test("REPLAY_WINDOW is 127 blocks of 32 counters, 4064", () => {
  assert.equal(REPLAY_WINDOW, 4064);
  assert.equal(REPLAY_WINDOW, 127 * 32);
});

Deno.test("a new window has seen nothing: highest is -1 and every counter is fresh", () => {
  const window = new ReplayWindow();
  assert.equal(window.highest, -1);
  for (const counter of [0, 1, 31, 32, 4064, 2 ** 32, 2 ** 40]) assert.equal(window.check(counter), FRESH);
});

Deno.test("a counter is fresh once, then replayed", () => {
  const window = new ReplayWindow();
  for (const counter of [0, 1, 2, 100, 101]) {
    assert.equal(take(window, counter), FRESH, `${counter}`);
    assert.equal(window.check(counter), REPLAYED, `${counter} again`);
  }
  assert.equal(window.highest, 101);
});

Deno.test("check() changes nothing; only accept() marks a counter", () => {
  const window = new ReplayWindow();
  assert.equal(window.check(5), FRESH);
  assert.equal(window.check(5), FRESH);
  assert.equal(window.highest, -1);
  window.accept(5);
  assert.equal(window.check(5), REPLAYED);
  // A counter checked but not accepted (its tag did not verify) stays fresh.
  assert.equal(window.check(6), FRESH);
  assert.equal(window.check(4), FRESH);
  assert.equal(window.highest, 5);
});

Deno.test("out-of-order counters within the window are each taken once", () => {
  const window = new ReplayWindow();
  assert.equal(take(window, 10_000), FRESH);
  const oldest = 10_000 - REPLAY_WINDOW + 1;
  const late = [9999, 7000, oldest, 9998, 8000];
  for (const counter of late) assert.equal(take(window, counter), FRESH, `${counter}`);
  for (const counter of [...late, 10_000]) assert.equal(window.check(counter), REPLAYED, `${counter} again`);
  assert.equal(window.check(9997), FRESH, "one never seen is still fresh");
  assert.equal(window.highest, 10_000, "late counters do not move the window");
  // One step forward and the oldest falls out.
  assert.equal(take(window, 10_001), FRESH);
  assert.equal(window.check(oldest), TOO_OLD);
  assert.equal(window.check(oldest + 1), FRESH);
});

Deno.test("a counter REPLAY_WINDOW or more below the highest is too old, one less is not", () => {
  const window = new ReplayWindow();
  const highest = 10_000;
  window.accept(highest);
  assert.equal(window.check(highest - REPLAY_WINDOW + 1), FRESH);
  assert.equal(window.check(highest - REPLAY_WINDOW), TOO_OLD);
  assert.equal(window.check(0), TOO_OLD);
  window.accept(highest - REPLAY_WINDOW + 1);
  assert.equal(window.check(highest - REPLAY_WINDOW + 1), REPLAYED);
  // Too old is reported even for a counter that was accepted before it fell out of the window.
  window.accept(highest + 1);
  assert.equal(window.check(highest - REPLAY_WINDOW + 1), TOO_OLD);
});

Deno.test("every counter of a full window is remembered at once", () => {
  const window = new ReplayWindow();
  const top = 3 * REPLAY_WINDOW + 17;
  for (let counter = top - REPLAY_WINDOW + 1; counter <= top; counter++) window.accept(counter);
  for (let counter = top - REPLAY_WINDOW + 1; counter <= top; counter++) {
    assert.equal(window.check(counter), REPLAYED, `${counter}`);
  }
  assert.equal(window.check(top - REPLAY_WINDOW), TOO_OLD);
  assert.equal(window.check(top + 1), FRESH);
});

Deno.test("a jump far ahead clears the old bits, so counters that share their bit positions are fresh", () => {
  const window = new ReplayWindow();
  for (let counter = 0; counter < 200; counter++) window.accept(counter);
  // 4096 counters apart share a bit of the 128-block bitmap.
  const far = 10 * 4096;
  window.accept(far + 300);
  for (let counter = 0; counter < 200; counter++) {
    assert.equal(window.check(far + counter), FRESH, `${far + counter}`);
    assert.equal(window.check(counter), TOO_OLD, `${counter}`);
  }
  assert.equal(window.check(far + 300), REPLAYED);
});

Deno.test("a jump of less than the whole bitmap clears exactly the blocks it passes", () => {
  const window = new ReplayWindow();
  for (const counter of [5, 40, 70, 100]) window.accept(counter);
  // From block 3 (counter 100) to block 130 (4160): blocks 4..130 mod 128 are cleared, which takes in the
  // blocks of 5, 40 and 70 (0, 1, 2) but not 100's own (3): 100 is still inside the window (4160 - 4063 = 97).
  const highest = 4160;
  window.accept(highest);
  assert.equal(window.check(100), REPLAYED, "inside the window, still remembered");
  assert.equal(window.check(99), FRESH);
  assert.equal(window.check(70), TOO_OLD);
  for (const alias of [4096 + 5, 4096 + 40]) assert.equal(window.check(alias), FRESH, `${alias}`);
  // Moving on by one block clears 100's block before a counter that shares it can be asked about.
  window.accept(4096 + 100);
  assert.equal(window.check(4096 + 100), REPLAYED);
  assert.equal(window.check(4096 + 101), FRESH);
  assert.equal(window.check(100), TOO_OLD);
});

Deno.test("steady progress over many windows takes each counter once", () => {
  const window = new ReplayWindow();
  for (let counter = 0; counter < 20_000; counter++) {
    // Each counter arrives, then a duplicate of one a few steps back.
    assert.equal(take(window, counter), FRESH, `${counter}`);
    if (counter >= 3) assert.equal(take(window, counter - 3), REPLAYED, `${counter - 3}`);
  }
  assert.equal(window.highest, 19_999);
});

Deno.test("rebuild() takes the full counter nearest to the highest accepted", () => {
  const fresh = new ReplayWindow();
  assert.equal(fresh.rebuild(0), 0);
  assert.equal(fresh.rebuild(12345), 12345);
  assert.equal(fresh.rebuild(2 ** 32 - 1), 2 ** 32 - 1, "never below 0");
  const window = new ReplayWindow();
  window.accept(1000);
  assert.equal(window.rebuild(999), 999);
  assert.equal(window.rebuild(1001), 1001);
  assert.equal(window.rebuild(0), 0);
});

Deno.test("rebuild() crosses the 2^32 boundary upward: highest 2^32 - 5, low 3 is 2^32 + 3", () => {
  const window = new ReplayWindow();
  window.accept(2 ** 32 - 5);
  assert.equal(window.rebuild(3), 2 ** 32 + 3);
  assert.equal(window.rebuild(2 ** 32 - 6), 2 ** 32 - 6);
  assert.equal(window.rebuild(2 ** 32 - 4), 2 ** 32 - 4);
  assert.equal(window.check(window.rebuild(3)), FRESH);
});

Deno.test("rebuild() crosses the 2^32 boundary downward: highest 2^32 + 10, low 2^32 - 2 is 2^32 - 2", () => {
  const window = new ReplayWindow();
  window.accept(2 ** 32 + 10);
  assert.equal(window.rebuild(2 ** 32 - 2), 2 ** 32 - 2);
  assert.equal(window.rebuild(9), 2 ** 32 + 9);
  assert.equal(window.rebuild(11), 2 ** 32 + 11);
  assert.equal(window.check(window.rebuild(2 ** 32 - 2)), FRESH, "within the window, never seen");
  window.accept(2 ** 32 - 2);
  assert.equal(window.check(window.rebuild(2 ** 32 - 2)), REPLAYED);
});

Deno.test("reset() forgets everything", () => {
  const window = new ReplayWindow();
  for (const counter of [0, 1, 5000, 5001]) window.accept(counter);
  window.reset();
  assert.equal(window.highest, -1);
  for (const counter of [0, 1, 5000, 5001]) assert.equal(window.check(counter), FRESH, `${counter}`);
  assert.equal(take(window, 1), FRESH);
  assert.equal(window.check(1), REPLAYED);
});

Deno.test("a window over shared state goes on where the last one over it stopped", () => {
  const state = new SharedArrayBuffer(16 + 8 + 4 * 128);
  const first = new ReplayWindow(state, 16);
  assert.equal(first.highest, -1, "zeroed memory is a fresh window");
  for (const counter of [10, 20, 30]) first.accept(counter);
  const second = new ReplayWindow(state, 16);
  assert.equal(second.highest, 30);
  for (const counter of [10, 20, 30]) assert.equal(second.check(counter), REPLAYED);
  assert.equal(second.check(25), FRESH);
  second.accept(25);
  assert.equal(first.check(25), REPLAYED, "both see the same memory");
  // The bytes before the offset are not touched.
  assert.deepEqual(Array.from(new Uint8Array(state, 0, 16)), new Array(16).fill(0));
});
