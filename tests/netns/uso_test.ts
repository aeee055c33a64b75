/** UDP segmentation offload on a real tun device: one superframe written, every datagram received. */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";

const PROBE = new URL("./uso_probe.ts", import.meta.url).pathname;

/** Whether this kernel has USO on tun devices (Linux 6.2 and later). */
function kernelHasUso(): boolean {
  const [major, minor] = Deno.osRelease().split(".").map((part) => parseInt(part, 10));
  return major > 6 || (major === 6 && minor >= 2);
}

netnsTest(
  "a UDP superframe from UdpCoalescer written to a tun device reaches a socket as its datagrams",
  async () => {
    await using bed = await Bed.create();
    const result = await bed.exec(bed.a, [Deno.execPath(), "run", "--allow-all", "--unstable-net", PROBE]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const probe = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
    if (!kernelHasUso()) {
      assert.equal(probe.udpOffload, false, "a kernel before 6.2 has no USO on tun devices");
      console.warn(
        `!!! SKIPPING the superframe check: kernel ${Deno.osRelease()} has no USO on tun devices !!!`,
      );
      return;
    }
    assert.equal(probe.udpOffload, true, "the kernel took TUN_F_USO4 and TUN_F_USO6");
    assert.deepEqual(probe.offers, ["started", "appended", "appended", "appended"]);
    assert.equal(probe.writeError, 0, "the device took the superframe in one write");
    assert.deepEqual(probe.received, probe.sent, "the socket received each datagram whole and in order");
  },
);
