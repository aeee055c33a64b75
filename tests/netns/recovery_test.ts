/**
 * Recovery with real processes: a peer killed or stopped and started again, an underlay cut longer than
 * the dead-peer time, a peer name that moves, the derived IPv6 pair. Ping through the overlay proves a
 * working circuit; an unchanged ifindex proves an interface never went away.
 */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";
import { bothLinks, ifindex, LISTEN, sleep, velaLinks, waitPingOver, watchExit } from "./circuit_support.ts";

/** A listener in b and an initiator in a for circuit 3 (198.18.207.1/30), pinging. */
async function established(bed: Bed, peer = bed.b4) {
  const initiatorArgs = ["--peer", peer, "--vid", "3", "--address", "198.18.207.1/30"];
  const listener = bed.vela(bed.b, LISTEN);
  const initiator = bed.vela(bed.a, initiatorArgs);
  await bed.waitPing(bed.a, "198.18.207.2");
  return { listener, initiator, initiatorArgs };
}

netnsTest(
  "the listener killed with SIGKILL and restarted: the circuit comes back and the initiator's interface never went away",
  async () => {
    await using bed = await Bed.create();
    const { listener, initiator } = await established(bed);
    const before = await ifindex(bed.a, "vela3");
    const initiatorRunning = watchExit(initiator);

    await bed.stop(listener, "SIGKILL");
    await bed.until(async () => !(await bed.hasLink(bed.b, "vela3")), "b's vela3 to go with its process");
    bed.vela(bed.b, LISTEN);
    await waitPingOver(bed, bed.a, "198.18.207.2", "vela3", 30_000);

    assert.equal(await ifindex(bed.a, "vela3"), before, "a's vela3 is the same interface");
    assert.equal(initiatorRunning.exited, false, initiator.output());
  },
);

netnsTest(
  "the initiator restarted: the listener takes the new session without a second interface",
  async () => {
    await using bed = await Bed.create();
    const { listener, initiator, initiatorArgs } = await established(bed);
    const before = await ifindex(bed.b, "vela3");

    await bed.stop(initiator, "SIGKILL");
    await bed.until(async () => !(await bed.hasLink(bed.a, "vela3")), "a's vela3 to go with its process");
    bed.vela(bed.a, initiatorArgs);
    await bed.waitPing(bed.a, "198.18.207.2", 30_000);

    assert.deepEqual(await velaLinks(bed.b), ["vela3"], listener.output());
    assert.equal(await ifindex(bed.b, "vela3"), before, "b's vela3 is the same interface");
  },
);

netnsTest("an underlay cut longer than the dead-peer time heals by itself", async () => {
  await using bed = await Bed.create();
  const { listener, initiator } = await established(bed);
  const [nearBefore, farBefore] = [await ifindex(bed.a, "vela3"), await ifindex(bed.b, "vela3")];
  const [listenerRunning, initiatorRunning] = [watchExit(listener), watchExit(initiator)];

  await bed.exec(bed.a, ["ip", "link", "set", bed.vethA, "down"], { check: true });
  await sleep(9_000); // Longer than the dead-peer time (6 s): the point of the test.
  await bed.exec(bed.a, ["ip", "link", "set", bed.vethA, "up"], { check: true });
  await bed.waitPing(bed.a, "198.18.207.2", 30_000);

  assert.match(initiator.output(), /nothing heard/);
  assert.equal(listenerRunning.exited || initiatorRunning.exited, false, "nothing was restarted");
  assert.equal(await ifindex(bed.a, "vela3"), nearBefore);
  assert.equal(await ifindex(bed.b, "vela3"), farBefore, "the listener kept the interface (it lingers 60 s)");
});

netnsTest(
  "a clean stop of the listener: the initiator keeps its interface and is back once a listener is",
  async () => {
    await using bed = await Bed.create();
    const { listener } = await established(bed);
    const before = await ifindex(bed.a, "vela3");

    const status = await bed.stop(listener, "SIGTERM");
    assert.equal(status.code, 0, listener.output());
    assert.equal(await bed.hasLink(bed.b, "vela3"), false, "the stopped listener removed its interface");
    assert.equal(await ifindex(bed.a, "vela3"), before, "the initiator kept its interface");

    bed.vela(bed.b, LISTEN);
    await waitPingOver(bed, bed.a, "198.18.207.2", "vela3", 30_000);
    assert.equal(await ifindex(bed.a, "vela3"), before);
  },
);

netnsTest("a peer name in the hosts file is followed when it changes", async () => {
  await using bed = await Bed.create();
  const third = bed.b4.replace(/\.2$/, ".3");
  // ip netns exec bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: vela in a resolves from this file.
  const directory = `/etc/netns/${bed.a}`;
  const hosts = `${directory}/hosts`;
  try {
    Deno.mkdirSync(directory, { recursive: true });
    Deno.writeTextFileSync(hosts, `127.0.0.1 localhost\n${bed.b4} vela-peer.test\n`);
    // A second address in the same /24; promoted to primary when b4 is deleted (not deleted along).
    await bed.exec(bed.b, [
      "sh",
      "-ec",
      `echo 1 > /proc/sys/net/ipv4/conf/${bed.vethB}/promote_secondaries; ip addr add ${third}/24 dev ${bed.vethB}`,
    ], { check: true });
    const { initiator } = await established(bed, "vela-peer.test");
    const before = await ifindex(bed.a, "vela3");

    // The same inode, truncated and rewritten: the bind mount in vela's mount namespace sees it.
    Deno.writeTextFileSync(hosts, `127.0.0.1 localhost\n${third} vela-peer.test\n`);
    await bed.exec(bed.b, ["ip", "addr", "del", `${bed.b4}/24`, "dev", bed.vethB], { check: true });
    await bed.waitPing(bed.a, "198.18.207.2", 40_000);

    assert.match(initiator.output(), /now points to/);
    assert.equal(await ifindex(bed.a, "vela3"), before, "the circuit moved with its interface");
  } finally {
    Deno.removeSync(directory, { recursive: true });
    try {
      Deno.removeSync("/etc/netns"); // Only when empty, that is when nothing else uses it.
    } catch {
      // Not empty, or already gone.
    }
  }
});

/** The fd00::/8 address with prefix length 64 on an interface, once it has one. */
async function derived(bed: Bed, ns: string, ifname: string): Promise<string> {
  let found: string | undefined;
  await bed.until(async () => {
    found = (await bed.link(ns, ifname)).addrs.find((a) => /^fd[0-9a-f:]*\/64$/.test(a));
    return found !== undefined;
  }, `a derived IPv6 address on ${ifname} in ${ns}`);
  return found!;
}

netnsTest("without --address both ends get a derived IPv6 pair and answer ping over it", async () => {
  await using bed = await Bed.create();
  bed.vela(bed.b, LISTEN);
  for (const [vid, mode] of [[5, "tap"], [6, "tun"]] as const) {
    bed.vela(bed.a, ["--peer", bed.b4, "--vid", String(vid), "--mode", mode]);
    const ifname = `vela${vid}`;
    await bothLinks(bed, ifname);
    const near = await derived(bed, bed.a, ifname);
    const far = await derived(bed, bed.b, ifname);
    assert.match(near, /::1\/64$/, `${mode}: the initiator is ::1`);
    assert.match(far, /::2\/64$/, `${mode}: the listener is ::2`);
    assert.equal(near.replace(/::1\/64$/, ""), far.replace(/::2\/64$/, ""), `${mode}: the same /64`);
    await bed.waitPing(bed.a, far.replace(/\/64$/, ""));
  }
});
