/** Send moderation (src/datapath/send_moderation.ts) on real devices: it waits under bulk traffic, never for a ping. */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import type { DaemonStatus } from "../../src/daemon/daemon.ts";
import { iperf3Udp, netnsTest, requireProgram } from "./support.ts";
import { MODERATION_BULK_BITS_PER_SECOND } from "../../src/timing.ts";

/**
 * The libc datapaths, which moderate (Deno's own UDP socket has no Worker and never waits), with the
 * options of both ends and whether the sending Worker should wait under bulk traffic.
 */
const CASES: [string, string[], boolean][] = [
  ["libc", [], true],
  ["libc --datapath-threads 1", ["--datapath-threads", "1"], true],
  ["libc --moderation-us 0", ["--moderation-us", "0"], false],
  ["libc --no-offload", ["--no-offload"], false],
  ["libc --no-offload --moderation-us 150", ["--no-offload", "--moderation-us", "150"], true],
];

/** The initiator's count of moderated wake-ups (`vela status --json`). */
async function moderatedWakeups(bed: Bed, control: string): Promise<number> {
  const status = await bed.velaCommand(bed.a, ["status", "--control", control, "--json"]);
  assert.equal(status.code, 0, status.stderr);
  return (JSON.parse(status.stdout) as DaemonStatus).moderatedWakeups;
}

for (const [name, args, waits] of CASES) {
  netnsTest(
    waits
      ? `the sending Worker waits for more frames under bulk UDP, never while only pings run (${name})`
      : `the sending Worker never waits, even under bulk UDP (${name})`,
    async () => {
      if (!(await requireProgram("iperf3", "iperf3"))) return;
      await using bed = await Bed.create();
      bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15", ...args]);
      const initiator = bed.vela(bed.a, [
        "--peer",
        bed.b4,
        "--vid",
        "5",
        "--address",
        "198.18.207.41/30",
        ...args,
      ]);
      await bed.waitPing(bed.a, "198.18.207.42");
      const ping = await bed.exec(bed.a, ["ping", "-c", "10", "-i", "0.05", "-W", "2", "198.18.207.42"]);
      assert.equal(ping.code, 0, ping.stdout + ping.stderr);
      assert.equal(await moderatedWakeups(bed, initiator.control!), 0, "no wait for pings");

      const bulkRate = String(2 * MODERATION_BULK_BITS_PER_SECOND);
      const { delivered } = await iperf3Udp(bed, "198.18.207.42", bulkRate, 1300);
      const waited = await moderatedWakeups(bed, initiator.control!);
      console.log(`bulk UDP (${name}): ${delivered} datagrams delivered, ${waited} moderated wake-ups`);
      assert.ok(delivered > 10_000, `only ${delivered} datagrams arrived`);
      if (waits) assert.ok(waited > 0, "the sending Worker never waited under bulk traffic");
      else assert.equal(waited, 0, "the sending Worker waited");

      // After the transfer, light traffic is back to no waiting at all.
      const after = await bed.exec(bed.a, ["ping", "-c", "5", "-i", "0.05", "-W", "2", "198.18.207.42"]);
      assert.equal(after.code, 0, after.stdout + after.stderr);
      assert.equal(await moderatedWakeups(bed, initiator.control!), waited, "no wait for pings after it");
    },
  );
}
