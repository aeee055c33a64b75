/** Robustness with real processes: a listener under a flood of bad datagrams (tests/netns/flood.ts). */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";
import { ifindex, LISTEN, watchExit } from "./circuit_support.ts";

const FLOOD = new URL("./flood.ts", import.meta.url).pathname;

netnsTest(
  "a listener under a flood of random and mutated datagrams keeps its circuit and counts the drops",
  async () => {
    await using bed = await Bed.create();
    const listener = bed.vela(bed.b, LISTEN);
    bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
    await bed.waitPing(bed.a, "198.18.207.2");
    const before = await ifindex(bed.b, "vela3");
    const listenerRunning = watchExit(listener);

    const ping = bed.spawn(bed.a, ["ping", "-c", "20", "-i", "0.2", "198.18.207.2"]);
    const flood = await bed.exec(bed.a, [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--unstable-net",
      FLOOD,
      bed.b4,
    ]);
    assert.equal(flood.code, 0, flood.stderr);
    const { sent, failed } = JSON.parse(flood.stdout);
    const total = Object.values(sent as Record<string, number>).reduce((a, b) => a + b, 0);
    assert.ok(total + failed === 5000 && total >= 4990, `the flood sent ${flood.stdout}`);
    await ping.status;
    const [, transmitted, received] = ping.output().match(/(\d+) packets transmitted, (\d+) received/) ?? [];
    assert.equal(Number(transmitted), 20, ping.output());
    assert.ok(Number(received) >= 19, `at most one ping lost under the flood:\n${ping.output()}`);

    assert.equal(listenerRunning.exited, false, `the listener is still running:\n${listener.output()}`);
    assert.equal(await ifindex(bed.b, "vela3"), before, "the listener kept its interface");
    await bed.waitPing(bed.a, "198.18.207.2", 5_000);

    const status = await bed.stop(listener, "SIGTERM");
    assert.equal(status.code, 0, listener.output());
    const summary = listener.output().match(/Dropped on the way in: (.*)/)?.[1];
    assert.ok(summary !== undefined, listener.output());
    console.log(`flood: ${flood.stdout.trim()}; the listener dropped on the way in: ${summary}`);
    const counts = Object.fromEntries(
      [...summary.matchAll(/([a-z-]+) (\d+)/g)].map(([, reason, n]) => [reason, Number(n)]),
    );
    for (const reason of ["unknown-circuit", "truncated", "unknown-code"]) {
      assert.ok(counts[reason] > 0, `no ${reason} count in "Dropped on the way in: ${summary}"`);
    }
  },
);
