/** A host with IPv6 turned off (issue 18, point 5): the link comes up with its IPv4 address and a warning. */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";

netnsTest(
  "with IPv6 turned off on both hosts, a circuit comes up over IPv4 and each end warns that it left IPv6 out",
  async () => {
    await using bed = await Bed.create();
    for (const ns of [bed.a, bed.b]) {
      for (const scope of ["all", "default"]) {
        await bed.exec(ns, ["sysctl", "-qw", `net.ipv6.conf.${scope}.disable_ipv6=1`], { check: true });
      }
    }
    const listener = bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
    const initiator = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
    await bed.waitPing(bed.a, "198.18.207.2", 20_000);
    for (const daemon of [initiator, listener]) {
      assert.match(
        daemon.output(),
        /IPv6 is turned off on this host .*vela3 comes up without fd/,
        daemon.output(),
      );
      assert.doesNotMatch(daemon.output(), /run vela as root/);
    }
    const far = await bed.link(bed.b, "vela3");
    assert.deepEqual(far.addrs, ["198.18.207.2/30"], "the far end has its IPv4 address and no IPv6 one");
  },
);
