/**
 * Bridged ends (issue 18, point 1): a LAN host behind a Linux bridge on each router, the circuit's tap a
 * port of each bridge (--bridge; the listener's by its own policy), hooks told what came up and went.
 */

import assert from "node:assert/strict";
import { Bed, run } from "../../testbed/netns.ts";
import { netnsTest, requireProgram } from "./support.ts";
import { PROBE_RESOLUTION } from "../../src/daemon/path_probe.ts";
import { keyFile, shaTransfer } from "./circuit_support.ts";

/**
 * A LAN namespace `lan` with a veth (MTU `mtu`, MAC `mac` if given, `address` in a /24 unless undefined) to
 * router namespace `router`, a port of its br0 there (made by the first call). Returns the LAN side's name.
 */
async function lanBehindBridge(
  router: string,
  lan: string,
  address: string | undefined,
  mac?: string,
  mtu = 1400,
): Promise<string> {
  const sh = (command: string) => run(["sh", "-ec", command], { check: true });
  const lanSide = `l${lan.slice(-12)}`.slice(0, 15);
  const routerSide = `r${lan.slice(-12)}`.slice(0, 15);
  await sh(`ip netns add ${lan}`);
  await sh(
    `ip link add ${lanSide} netns ${lan} mtu ${mtu} type veth peer name ${routerSide} netns ${router}`,
  );
  await sh(
    [
      `ip -n ${lan} link set lo up`,
      ...(mac ? [`ip -n ${lan} link set ${lanSide} address ${mac}`] : []),
      ...(address ? [`ip -n ${lan} addr add ${address}/24 dev ${lanSide}`] : []),
      `ip -n ${lan} link set ${lanSide} up`,
      `ip -n ${router} link show br0 >/dev/null 2>&1 || ip -n ${router} link add br0 type bridge`,
      `ip -n ${router} link set ${routerSide} mtu ${mtu} master br0 up`,
      `ip -n ${router} link set br0 up`,
    ].join("; "),
  );
  return lanSide;
}

/** Three pings of `size` bytes from `lan` to the far LAN host, never fragmented by IP, all answered. */
async function pingWhole(bed: Bed, lan: string, size: number): Promise<void> {
  const ping = await bed.exec(lan, [
    "ping",
    "-M",
    "do",
    "-s",
    `${size}`,
    "-c",
    "3",
    "-W",
    "2",
    "198.18.210.2",
  ]);
  assert.equal(ping.code, 0, ping.stdout + ping.stderr);
  assert.match(ping.stdout, /3 received/);
}

/** The bridge `name` is a port of in `ns`, or undefined. */
async function masterOf(ns: string, name: string): Promise<string | undefined> {
  const shown = await run(["ip", "-n", ns, "-j", "link", "show", name], { check: true });
  return JSON.parse(shown.stdout)[0].master;
}

netnsTest(
  "two LANs bridged over a tap circuit stay bridged across an initiator restart, and the hooks are told",
  async () => {
    await using bed = await Bed.create();
    const lanA = `vela-${Deno.pid}-${bed.index}-la`;
    const lanB = `vela-${Deno.pid}-${bed.index}-lb`;
    const hooks = await Deno.makeTempFile({ prefix: "vela-hooks-" });
    try {
      await lanBehindBridge(bed.a, lanA, "198.18.210.1");
      await lanBehindBridge(bed.b, lanB, "198.18.210.2");
      const hook = `echo "$VELA_EVENT $VELA_IFNAME $VELA_VID $VELA_PEER $VELA_ROLE $VELA_BRIDGE" >> ${hooks}`;
      const listener = bed.vela(bed.b, [
        "--listen",
        "--allow",
        "198.18.0.0/15",
        "--bridge",
        "br0",
        "--up",
        hook,
        "--down",
        hook,
      ]);
      const initiatorArgs = ["--peer", bed.b4, "--vid", "3", "--bridge", "br0"];
      let initiator = bed.vela(bed.a, initiatorArgs);
      await bed.waitPing(lanA, "198.18.210.2", 20_000);
      assert.equal(await masterOf(bed.a, "vela3"), "br0");
      assert.equal(await masterOf(bed.b, "vela3"), "br0");
      const far = await bed.link(bed.b, "vela3");
      assert.deepEqual(far.addrs.filter((a) => !a.startsWith("fe80:")), [], "a bridge port has no address");
      await bed.until(
        async () =>
          new RegExp(`^up vela3 3 ${bed.a4} responder br0$`, "m").test(await Deno.readTextFile(hooks)),
        "the up hook, with the interface, vid, peer, role and bridge",
      );

      // The initiator stops (its CREQ makes the listener remove its tap) and starts again.
      await bed.stop(initiator);
      await bed.until(async () => !(await bed.hasLink(bed.b, "vela3")), "the far tap removed");
      initiator = bed.vela(bed.a, initiatorArgs);
      await bed.waitPing(lanA, "198.18.210.2", 20_000);
      assert.equal(await masterOf(bed.b, "vela3"), "br0", "the far end's new tap is bridged again");
      const again = await bed.link(bed.b, "vela3");
      assert.equal(again.address, far.address, "the far tap keeps its MAC");
      await bed.until(
        async () => (await Deno.readTextFile(hooks)).includes(`down vela3 3 ${bed.a4} responder br0`),
        "the down hook",
      );
      const lines = (await Deno.readTextFile(hooks)).trim().split("\n");
      assert.deepEqual(lines.map((l) => l.split(" ")[0]), ["up", "down", "up"], lines.join("\n"));
      assert.ok(listener.output().includes("vela3 joined bridge br0"), listener.output());
    } finally {
      await Deno.remove(hooks);
      await run(["ip", "netns", "del", lanA]);
      await run(["ip", "netns", "del", lanB]);
    }
  },
);

netnsTest("--bridge naming no bridge stops the initiator with a sentence that says so", async () => {
  await using bed = await Bed.create();
  bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
  const initiator = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--bridge", "nobr0"]);
  const status = await initiator.status;
  assert.notEqual(status.code, 0);
  assert.match(
    initiator.output(),
    /Cannot put vela3 into bridge nobr0: .*is nobr0 an existing Linux bridge\?/,
  );
  assert.equal(await bed.hasLink(bed.a, "vela3"), false, "no interface left behind");
});

for (const side of ["initiator", "listener"] as const) {
  netnsTest(
    `a MAC filter (the ${side}'s) lets one LAN host through and not another, and counts what it kept back`,
    async () => {
      await using bed = await Bed.create();
      const lans = ["l1", "l2", "lb"].map((n) => `vela-${Deno.pid}-${bed.index}-${n}`);
      const config = await Deno.makeTempFile({ prefix: "vela-config-", suffix: ".json" });
      try {
        await lanBehindBridge(bed.a, lans[0], "198.18.210.1", "02:00:00:00:0a:01");
        await lanBehindBridge(bed.a, lans[1], "198.18.210.3", "02:00:00:00:0a:02");
        await lanBehindBridge(bed.b, lans[2], "198.18.210.2", "02:00:00:00:0b:01");
        // The listener's rule names the far host as REMOTE; the initiator's flag names it as LOCAL.
        await Deno.writeTextFile(
          config,
          JSON.stringify({
            listen: true,
            allow: ["198.18.0.0/15"],
            bridge: "br0",
            bridges: side === "listener"
              ? [{ bridge: "br0", vid: 3, filter: { remote: ["02:00:00:00:0a:01"] } }]
              : [],
          }),
        );
        const listener = bed.vela(bed.b, ["--config", config]);
        const initiator = bed.vela(bed.a, [
          "--peer",
          bed.b4,
          "--vid",
          "3",
          "--bridge",
          "br0",
          ...(side === "initiator" ? ["--local-mac", "02:00:00:00:0a:01"] : []),
        ]);
        await bed.waitPing(lans[0], "198.18.210.2", 20_000);
        const blocked = await bed.exec(lans[1], ["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.18.210.2"]);
        assert.notEqual(blocked.code, 0, "the host not in the filter gets no answer");
        const [ns, daemon] = side === "initiator" ? [bed.a, initiator] : [bed.b, listener];
        const shown = await bed.velaCommand(ns, ["status", "--json", "--control", daemon.control!]);
        const status = JSON.parse(shown.stdout) as { circuits: { drops: { filtered: number } }[] };
        assert.ok(status.circuits[0].drops.filtered >= 3, JSON.stringify(status.circuits[0].drops));
      } finally {
        await Deno.remove(config);
        for (const lan of lans) await run(["ip", "netns", "del", lan]);
      }
    },
  );
}

netnsTest(
  "1500-byte LANs bridged over a 1500-byte underlay: full-size frames cross in fragments, keyed, every byte whole",
  async () => {
    await using bed = await Bed.create({ mtu: 1500 });
    const lanA = `vela-${Deno.pid}-${bed.index}-la`;
    const lanB = `vela-${Deno.pid}-${bed.index}-lb`;
    const key = await keyFile();
    try {
      await lanBehindBridge(bed.a, lanA, "198.18.210.1", undefined, 1500);
      await lanBehindBridge(bed.b, lanB, "198.18.210.2", undefined, 1500);
      bed.vela(bed.b, ["--listen", "--key-file", key, "--bridge", "br0"]);
      const initiator = bed.vela(bed.a, [
        "--peer",
        bed.b4,
        "--vid",
        "3",
        "--key-file",
        key,
        "--bridge",
        "br0",
      ]);
      await bed.waitPing(lanA, "198.18.210.2", 20_000);
      assert.equal((await bed.link(bed.a, "vela3")).mtu, 1500, "the initiator's tap has the LAN's MTU");
      assert.equal((await bed.link(bed.b, "vela3")).mtu, 1500, "and so has the listener's");
      assert.equal((await bed.link(bed.a, "br0")).mtu, 1500, "the bridge keeps 1500");

      // A full-size IP packet that must not be fragmented by IP: 1472 + 8 (ICMP) + 20 (IP) = 1500.
      await pingWhole(bed, lanA, 1472);

      // 200 MiB over TCP (MSS 1460 on a 1500 MTU), checked by sha256 on both ends.
      await shaTransfer(bed, lanA, lanB, "198.18.210.2", 200);

      const shown = await bed.velaCommand(bed.a, ["status", "--json", "--control", initiator.control!]);
      const circuit = JSON.parse(shown.stdout).circuits[0];
      assert.equal(circuit.cipher, "aes-256-gcm");
      assert.equal(circuit.datagramLimit, 1472, "from the underlay's 1500-byte path");
      assert.ok(circuit.fragmented > 100_000, `full-size segments went in fragments: ${circuit.fragmented}`);
    } finally {
      await Deno.remove(key);
      await run(["ip", "netns", "del", lanA]);
      await run(["ip", "netns", "del", lanB]);
    }
  },
);

netnsTest(
  "a path that silently loses datagrams over 1400 bytes, under the route's 1500, is found by probing and full-size frames still cross",
  async () => {
    if (!await requireProgram("nft", "nftables")) return;
    await using bed = await Bed.create({ mtu: 1500 });
    const lanA = `vela-${Deno.pid}-${bed.index}-la`;
    const lanB = `vela-${Deno.pid}-${bed.index}-lb`;
    try {
      await lanBehindBridge(bed.a, lanA, "198.18.210.1", undefined, 1500);
      await lanBehindBridge(bed.b, lanB, "198.18.210.2", undefined, 1500);
      // A black hole: IP packets of UDP over 1400 bytes vanish on the way in, and no ICMP says so.
      const blackHole = "add table ip pmtu; add chain ip pmtu in { type filter hook input priority 0; }; " +
        "add rule ip pmtu in meta l4proto udp ip length > 1400 drop";
      for (const ns of [bed.a, bed.b]) await bed.exec(ns, ["nft", blackHole], { check: true });
      // The rule sees packets as they arrive: one UDP GSO send must reach it cut, as a real path would.
      for (const [ns, veth] of [[bed.a, bed.vethA], [bed.b, bed.vethB]]) {
        await bed.exec(ns, ["ip", "link", "set", veth, "gso_max_segs", "1"], { check: true });
      }
      const listener = bed.vela(bed.b, ["--listen", "--allow", `${bed.a4}/32`, "--bridge", "br0"]);
      const initiator = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--bridge", "br0"]);
      await bed.waitPing(lanA, "198.18.210.2", 20_000);
      const circuitOf = async (ns: string, daemon: typeof initiator) => {
        const shown = await bed.velaCommand(ns, ["status", "--json", "--control", daemon.control!]);
        return JSON.parse(shown.stdout).circuits[0];
      };
      for (const [ns, daemon] of [[bed.a, initiator], [bed.b, listener]] as const) {
        await bed.until(async () => {
          const limit = (await circuitOf(ns, daemon))?.datagramLimit ?? 0;
          return limit <= 1372 && limit > 1372 - PROBE_RESOLUTION;
        }, `${ns} to probe the path down to 1400 bytes`);
        const circuit = await circuitOf(ns, daemon);
        assert.ok(circuit.pathMtu <= 1400 && circuit.pathMtu > 1400 - PROBE_RESOLUTION, `${circuit.pathMtu}`);
        assert.match(daemon.output(), /path MTU \d+ \(probed; was 1500\)/);
      }
      // 1400 + 28 + 14 bytes fit the route's 1472-byte datagram but not the path: only fragments get there.
      for (const size of [1400, 1472]) await pingWhole(bed, lanA, size);
      assert.ok((await circuitOf(bed.a, initiator)).fragmented >= 6, "both sizes went in fragments");
    } finally {
      await run(["ip", "netns", "del", lanA]);
      await run(["ip", "netns", "del", lanB]);
    }
  },
);

netnsTest(
  "DHCP across the bridged link: a host behind one bridge gets its lease from dnsmasq behind the other",
  async () => {
    if (!await requireProgram("dnsmasq", "dnsmasq-base") || !await requireProgram("busybox", "busybox")) {
      return;
    }
    await using bed = await Bed.create();
    const lanA = `vela-${Deno.pid}-${bed.index}-la`;
    const lanB = `vela-${Deno.pid}-${bed.index}-lb`;
    const leases = await Deno.makeTempFile({ prefix: "vela-leases-" });
    try {
      const client = await lanBehindBridge(bed.a, lanA, undefined, "02:00:5e:10:00:0a");
      const serverSide = await lanBehindBridge(bed.b, lanB, "198.18.210.2");
      bed.vela(bed.b, ["--listen", "--allow", `${bed.a4}/32`, "--bridge", "br0"]);
      bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--bridge", "br0"]);
      const dnsmasq = bed.spawn(lanB, [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--port=0",
        `--interface=${serverSide}`,
        "--bind-interfaces",
        "--dhcp-range=198.18.210.100,198.18.210.150,255.255.255.0,10m",
        `--dhcp-leasefile=${leases}`,
        "--log-dhcp",
      ]);
      await bed.until(
        async () => (await bed.link(bed.b, "vela3").catch(() => undefined)) !== undefined,
        "the far tap",
      );
      // DISCOVER and REQUEST are broadcasts from a host without an address: they cross only as frames.
      const lease = await bed.exec(lanA, [
        "busybox",
        "udhcpc",
        "-i",
        client,
        "-f",
        "-q",
        "-n",
        "-t",
        "10",
        "-T",
        "1",
        "-s",
        "/bin/true",
      ]);
      await bed.stop(dnsmasq);
      assert.equal(lease.code, 0, lease.stdout + lease.stderr + dnsmasq.output());
      assert.match(lease.stdout + lease.stderr, /lease of 198\.18\.210\.1[0-5]\d obtained/);
      assert.match(await Deno.readTextFile(leases), /02:00:5e:10:00:0a 198\.18\.210\.1[0-5]\d/);
    } finally {
      await Deno.remove(leases);
      await run(["ip", "netns", "del", lanA]);
      await run(["ip", "netns", "del", lanB]);
    }
  },
);

netnsTest(
  "an initiator's --far-bridge puts the listener's tap into the bridge it offers, and another is refused with a reason",
  async () => {
    await using bed = await Bed.create();
    const lanA = `vela-${Deno.pid}-${bed.index}-la`;
    const lanB = `vela-${Deno.pid}-${bed.index}-lb`;
    try {
      await lanBehindBridge(bed.a, lanA, "198.18.210.1");
      await lanBehindBridge(bed.b, lanB, "198.18.210.2");
      await run(["ip", "-n", bed.b, "link", "add", "brother", "type", "bridge"], { check: true });
      // The LAN is on br0; the listener's own default is another bridge: only the ask puts the tap on br0.
      bed.vela(bed.b, [
        "--listen",
        "--allow",
        `${bed.a4}/32`,
        "--bridge",
        "brother",
        "--offer-bridge",
        "br0",
      ]);
      const refused = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "4", "--far-bridge", "nope0"]);
      bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--bridge", "br0", "--far-bridge", "br0"]);
      await bed.waitPing(lanA, "198.18.210.2", 20_000);
      assert.equal(await masterOf(bed.b, "vela3"), "br0");
      await bed.until(
        () =>
          Promise.resolve(refused.output().includes("refused circuit 4: bridge nope0 is not offered here")),
        "the other ask refused",
      );
      assert.equal(await bed.hasLink(bed.b, "vela4"), false);
    } finally {
      await run(["ip", "netns", "del", lanA]);
      await run(["ip", "netns", "del", lanB]);
    }
  },
);
