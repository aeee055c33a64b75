import assert from "node:assert/strict";
import { PathProbe, type PathProbeAction, PROBE_RESOLUTION } from "../../src/daemon/path_probe.ts";
import { PROBE_INTERVAL_MS, PROBE_TIMEOUT_MS, PROBE_TRIES } from "../../src/timing.ts";

/**
 * Runs a probe against a path that carries packets up to `pathMtu` (answering each probe at once) from
 * `start` until it settles; returns every path MTU it said and the probes it sent.
 */
function search(pathMtu: number, floor = 576, ceiling = 1500) {
  const probe = new PathProbe();
  let now = 0;
  const said: number[] = [];
  const sent: number[] = [];
  let actions = probe.handle({ type: "start", floor, ceiling }, now);
  for (let step = 0; step < 200; step++) {
    const next: PathProbeAction[] = [];
    let timer: number | undefined;
    for (const action of actions) {
      if (action.type === "path-mtu") said.push(action.mtu);
      if (action.type === "timer") timer = action.at;
      if (action.type === "probe") {
        sent.push(action.size);
        if (action.size <= pathMtu) {
          next.push(...probe.handle({ type: "answered", id: action.id, size: action.size }, now));
        }
      }
    }
    if (probe.state !== "searching" && next.length === 0) break;
    if (next.length > 0) actions = next;
    else {
      now = timer!;
      actions = probe.handle({ type: "timer", ceiling }, now);
    }
  }
  return { probe, said, sent };
}

Deno.test("PathProbe settles on the ceiling with one probe when the path is as large as the route", () => {
  const { probe, said, sent } = search(1500);
  assert.deepEqual(sent, [1500]);
  assert.deepEqual(said, [1500]);
  assert.equal(probe.state, "settled");
});

Deno.test("PathProbe finds a black-holed path within PROBE_RESOLUTION below it and never says a size that was lost", () => {
  for (const pathMtu of [1400, 1492, 1280, 577, 1499]) {
    const { probe, said, sent } = search(pathMtu);
    assert.equal(probe.state, "settled");
    assert.ok(
      probe.good <= pathMtu && probe.good > pathMtu - PROBE_RESOLUTION,
      `${pathMtu}: found ${probe.good}`,
    );
    assert.ok(said.every((mtu) => mtu <= pathMtu), `${pathMtu}: said ${said}`);
    assert.equal(said[0], 576, "the floor as soon as the ceiling is lost");
    assert.equal(said.at(-1), probe.good);
    assert.ok(
      sent.filter((size) => size === 1500).length === PROBE_TRIES,
      "the ceiling tried PROBE_TRIES times",
    );
  }
});

Deno.test("PathProbe settles on the floor without probing when the route is no larger", () => {
  const { said, sent } = search(9000, 1280, 1280);
  assert.deepEqual(sent, []);
  assert.deepEqual(said, [1280]);
});

Deno.test("PathProbe takes a late answer to an earlier try of the size it probes, and none from an earlier search", () => {
  const probe = new PathProbe();
  const first = probe.handle({ type: "start", floor: 576, ceiling: 1500 }, 0);
  const firstProbe = first.find((a) => a.type === "probe")!;
  assert.equal(firstProbe.type, "probe");
  const retry = probe.handle({ type: "timer", ceiling: 1500 }, PROBE_TIMEOUT_MS);
  assert.ok(retry.some((a) => a.type === "probe" && a.size === 1500 && a.id !== firstProbe.id));
  // The answer to the first try comes after the retry went: it counts.
  const settled = probe.handle({ type: "answered", id: firstProbe.id, size: 1500 }, PROBE_TIMEOUT_MS + 10);
  assert.deepEqual(settled, [
    { type: "path-mtu", mtu: 1500 },
    { type: "timer", at: PROBE_TIMEOUT_MS + 10 + PROBE_INTERVAL_MS },
  ]);
  // The next search, PROBE_INTERVAL_MS later, ignores the old id and a size it did not send.
  const again = probe.handle({ type: "timer", ceiling: 1400 }, PROBE_INTERVAL_MS * 2);
  assert.ok(again.some((a) => a.type === "probe" && a.size === 1400), "from the route's MTU now");
  assert.deepEqual(
    probe.handle({ type: "answered", id: firstProbe.id, size: 1500 }, PROBE_INTERVAL_MS * 2),
    [],
  );
  const current = again.find((a) => a.type === "probe")!;
  assert.equal(current.type, "probe");
  assert.deepEqual(probe.handle({ type: "answered", id: current.id, size: 1300 }, PROBE_INTERVAL_MS * 2), []);
  assert.equal(probe.state, "searching");
});

Deno.test("PathProbe stops: its timer off, and timers and answers after it change nothing", () => {
  const probe = new PathProbe();
  const [sent] = probe.handle({ type: "start", floor: 576, ceiling: 1500 }, 0);
  assert.deepEqual(probe.handle({ type: "stop" }, 1), [{ type: "timer", at: undefined }]);
  assert.deepEqual(probe.handle({ type: "timer", ceiling: 1500 }, 600), []);
  assert.equal(sent.type, "probe");
  assert.deepEqual(probe.handle({ type: "answered", id: sent.id, size: 1500 }, 700), []);
  assert.equal(probe.state, "idle");
  assert.ok(probe.handle({ type: "start", floor: 576, ceiling: 1500 }, 800).some((a) => a.type === "probe"));
});
