import assert from "node:assert/strict";
import {
  CONTROL_QUEUE_BYTES,
  CONTROL_QUEUE_DEPTH,
  ControlQueue,
  TokenBucket,
} from "../../src/datapath/control_queue.ts";
import { STRANGER_CONTROL_BURST } from "../../src/timing.ts";

Deno.test("offer() bounds the datagrams waiting per lane, and taken() makes room again", () => {
  const queue = new ControlQueue(new SharedArrayBuffer(CONTROL_QUEUE_BYTES));
  let known = 0;
  while (queue.offer(true, 0)) known++;
  assert.equal(known, CONTROL_QUEUE_DEPTH.known);
  // A full known lane leaves the strangers' lane as it was, and the other way round.
  let strangers = 0;
  while (queue.offer(false, 0)) strangers++;
  assert.equal(strangers, Math.min(CONTROL_QUEUE_DEPTH.stranger, STRANGER_CONTROL_BURST));
  queue.taken(true);
  assert.equal(queue.offer(true, 0), true);
  assert.equal(queue.offer(true, 0), false);
  assert.deepEqual(queue.waiting, { stranger: strangers, known: CONTROL_QUEUE_DEPTH.known });
});

Deno.test("offer() spends the strangers' budget, which refills with time, and not for known addresses", () => {
  const queue = new ControlQueue(new SharedArrayBuffer(CONTROL_QUEUE_BYTES));
  let offered = 0;
  // Taken at once each time: only the budget bounds them.
  for (let i = 0; i < STRANGER_CONTROL_BURST * 2; i++) {
    if (queue.offer(false, 0)) {
      offered++;
      queue.taken(false);
    }
  }
  assert.equal(offered, STRANGER_CONTROL_BURST);
  assert.equal(queue.offer(true, 0), true, "a known address is not held to the strangers' budget");
  assert.equal(queue.offer(false, 1000), true, "a second later the budget has refilled");
});

Deno.test("TokenBucket gives its burst, then its rate", () => {
  const bucket = new TokenBucket(10, 3);
  assert.deepEqual([0, 0, 0, 0].map(() => bucket.take(0)), [true, true, true, false]);
  assert.equal(bucket.take(99), false);
  assert.equal(bucket.take(100), true);
  assert.equal(bucket.take(100), false);
});
