/** A UDP GSO message the kernel refuses turns GSO off for that batch only (issue 18, point 3). */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";

const PROBE = new URL("./gso_refusal_probe.ts", import.meta.url).pathname;

netnsTest(
  "a refused UDP GSO send goes again without GSO, is counted once, and later sends still go",
  async () => {
    await using bed = await Bed.create();
    await bed.exec(bed.a, ["ip", "link", "set", "lo", "mtu", "1500"], { check: true });
    const result = await bed.exec(bed.a, [Deno.execPath(), "run", "--allow-all", PROBE]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const probe = JSON.parse(result.stdout.trim().split("\n").at(-1)!) as {
      oversize: number;
      after: number[];
      refusals: number;
      gsoActive: boolean;
      received: number;
    };
    assert.equal(probe.refusals, 1, JSON.stringify(probe));
    assert.deepEqual(probe.after, new Array(40).fill(4), "every later send went whole");
    assert.equal(probe.gsoActive, true, "after the pause the underlay joins datagrams with GSO again");
    // The 1504-byte datagrams go without GSO (fragmented by the kernel, or refused one by one).
    assert.equal(probe.received, 160 + probe.oversize, JSON.stringify(probe));
  },
);
