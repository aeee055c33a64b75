/** The forwarding core's test body (tests/datapath/core_cases.ts) over real tap devices and sockets. */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { CORE_CASES } from "../datapath/core_cases.ts";
import { netnsTest } from "./support.ts";

const PROBE = new URL("./core_probe.ts", import.meta.url).pathname;

netnsTest("every core case passes over real tap devices and UDP sockets in a namespace", async () => {
  await using bed = await Bed.create();
  const result = await bed.exec(bed.a, [Deno.execPath(), "run", "--allow-all", PROBE]);
  const report = JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "{}");
  assert.deepEqual(report.failed, [], result.stdout + result.stderr);
  assert.deepEqual(report.passed, CORE_CASES.map((c) => c.name));
  assert.equal(result.code, 0, result.stderr);
});
