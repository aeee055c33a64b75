/** Runtime failures of the vela process: each exits 1 with a sentence that says what to do. */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";

netnsTest("an unresolvable peer name exits 1 and says to check the name", async () => {
  await using bed = await Bed.create();
  const process = bed.vela(bed.a, ["--peer", "no-such-host.invalid", "--vid", "3"]);
  const status = await process.status;
  assert.equal(status.code, 1, process.output());
  assert.match(
    process.output(),
    /^vela: Cannot resolve peer no-such-host\.invalid .*check the name or give an address\n$/,
  );
  assert.equal(await bed.hasLink(bed.a, "vela3"), false);
});

netnsTest("a UDP port already in use exits 1 and says to choose another --port", async () => {
  await using bed = await Bed.create();
  const first = bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
  await bed.until(
    async () => (await bed.exec(bed.b, ["ss", "-lun", "sport = :4455"])).stdout.includes("4455"),
    "the first listener",
  );
  const second = bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
  const status = await second.status;
  assert.equal(status.code, 1, second.output());
  assert.match(
    second.output(),
    /UDP port 4455 is already in use; stop the other daemon or choose another --port/,
  );
  assert.equal((await bed.stop(first, "SIGINT")).code, 0, "SIGINT stops the first listener cleanly");
});

netnsTest("an interface name held by something else exits 1 and leaves nothing behind", async () => {
  await using bed = await Bed.create();
  await bed.exec(bed.a, ["ip", "link", "add", "vela7", "type", "veth", "peer", "name", "vela7p"], {
    check: true,
  });
  const process = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "7"]);
  const status = await process.status;
  assert.equal(status.code, 1, process.output());
  assert.match(process.output(), /Cannot create interface vela7: .*pick another with --ifname/);
});

netnsTest("no route to the peer exits 1 and says to check the underlay", async () => {
  await using bed = await Bed.create();
  const process = bed.vela(bed.a, ["--peer", "198.19.99.1", "--vid", "3"]);
  const status = await process.status;
  assert.equal(status.code, 1, process.output());
  assert.match(process.output(), /No route to 198\.19\.99\.1 .*check the underlay addresses and routes/);
  assert.equal(await bed.hasLink(bed.a, "vela3"), false);
});

netnsTest(
  "a datapath Worker that dies stops the daemon with an error that says so, and removes vela3",
  async () => {
    await using bed = await Bed.create();
    bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
    await bed.until(
      async () => (await bed.exec(bed.b, ["ss", "-lun", "sport = :4455"])).stdout.includes("4455"),
      "the listener",
    );
    const probe = new URL("./worker_crash_probe.ts", import.meta.url).pathname;
    const result = await bed.exec(bed.a, [Deno.execPath(), "run", "--allow-all", probe, bed.b4]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
    assert.equal(report.before, true, "vela3 was up while the Workers ran");
    assert.match(
      report.error,
      /^The datapath (receive|send|both) Worker failed: .*a test made this Worker fail/,
      result.stderr,
    );
    assert.equal(report.after, false, "vela3 is gone once the daemon stopped");
  },
);
