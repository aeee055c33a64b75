/**
 * The bed's impaired underlay (Bed.create's `impair`): loss, delay and reordering between a and b,
 * through the relay of testbed/impair.ts in a middle namespace m where the kernel has no sch_netem; and
 * without `impair`, the direct veth pair as before.
 */

import assert from "node:assert/strict";
import { Bed, netemSupport, run } from "../../testbed/netns.ts";
import { type DirectionCounters, parseImpairArgs, parseSummary } from "../../testbed/impair.ts";
import { seededRandom } from "../../testbed/seeded_random.ts";
import { iperf3Udp, netnsTest, requireProgram, startIperf3Server } from "./support.ts";

/** The ICMP counters of namespace `ns` (the "Icmp:" lines of its /proc/net/snmp), by name. */
async function icmpCounters(bed: Bed, ns: string): Promise<Record<string, number>> {
  const snmp = (await bed.exec(ns, ["cat", "/proc/net/snmp"], { check: true })).stdout;
  const [names, values] = snmp.split("\n").filter((line) => line.startsWith("Icmp:")).map((line) =>
    line.split(/\s+/).slice(1)
  );
  return Object.fromEntries(names.map((name, i) => [name, Number(values[i])]));
}

/** ping's "rtt min/avg/max/mdev" line as numbers (ms). */
function rtt(output: string): { min: number; avg: number; max: number } {
  const match = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\//.exec(output);
  assert.ok(match, `no rtt line in: ${output}`);
  return { min: Number(match[1]), avg: Number(match[2]), max: Number(match[3]) };
}

/**
 * Stops the bed's relay (where it has one) and returns its counters from a to b and from b to a; asserts
 * that it printed its summary and exited 0.
 */
async function stopRelay(bed: Bed): Promise<{ ab: DirectionCounters; ba: DirectionCounters } | undefined> {
  const relay = bed.impairer;
  if (!relay) return undefined;
  const status = await bed.stop(relay);
  assert.equal(status.code, 0, relay.output());
  const line = relay.output().split("\n").find((l) => l.startsWith("summary "));
  assert.ok(line, `no summary line from the relay: ${relay.output()}`);
  console.log(`relay: ${line}`);
  const summary = parseSummary(line)!;
  return { ab: summary[`${bed.vethMA}>${bed.vethMB}`], ba: summary[`${bed.vethMB}>${bed.vethMA}`] };
}

/** The bed takes netem where the probe found it, the relay in m otherwise. */
async function expectImpairedPath(bed: Bed): Promise<void> {
  if (await netemSupport()) {
    assert.equal(bed.impairedBy, "netem");
    return;
  }
  assert.equal(bed.impairedBy, "relay");
  assert.equal(bed.m, `${bed.a.slice(0, -"a".length)}m`);
  assert.ok(bed.impairer, "the relay runs");
  assert.equal(await bed.hasLink(bed.m!, bed.vethMA), true);
  assert.equal(await bed.hasLink(bed.m!, bed.vethMB), true);
  const addresses = await run(["ip", "-n", bed.m!, "-j", "addr", "show"], { check: true });
  const withAddresses = JSON.parse(addresses.stdout).filter((link: { addr_info?: unknown[] }) =>
    (link.addr_info ?? []).length > 0
  );
  assert.deepEqual(withAddresses, [], "m has no IP addresses");
}

Deno.test("impair.ts reads its options and its summary line", () => {
  const config = parseImpairArgs([
    "--loss",
    "10",
    "--delay",
    "20",
    "--reorder",
    "5",
    "--seed",
    "7",
    "--no-offload",
    "x",
    "m1",
    "m2",
  ]);
  assert.deepEqual(
    config,
    {
      lossPercent: 10,
      delayMs: 20,
      reorderPercent: 5,
      reorderDelayMs: 3,
      seed: 7,
      noOffload: ["x"],
      interfaces: ["m1", "m2"],
    },
  );
  assert.throws(() => parseImpairArgs(["--loss", "101", "m1", "m2"]), /--loss takes a number from 0 to 100/);
  assert.throws(() => parseImpairArgs(["m1"]), /two different interfaces/);
  assert.throws(() => parseImpairArgs(["--jitter", "1", "m1", "m2"]), /unknown option --jitter/);
  const [first, second] = [seededRandom(1), seededRandom(1)];
  const draws = Array.from({ length: 1000 }, () => first());
  assert.deepEqual(draws, Array.from({ length: 1000 }, () => second()), "the same seed, the same draws");
  assert.ok(draws.every((x) => x >= 0 && x < 1));
  const share = draws.filter((x) => x < 0.1).length / draws.length;
  assert.ok(share > 0.05 && share < 0.15, `${share} of the draws under 0.1`);
  const summary = parseSummary(
    "summary m1>m2 received=5 forwarded=3 dropped=1 reordered=0 oversize=1 failed=0 pending=0 outgoing=0 " +
      "largest=98; m2>m1 received=2 forwarded=2 dropped=0 reordered=1 oversize=0 failed=0 pending=0 " +
      "outgoing=0 largest=60",
  );
  assert.equal(summary?.["m1>m2"].oversize, 1);
  assert.equal(summary?.["m2>m1"].reordered, 1);
  assert.equal(parseSummary("ready"), null);
});

netnsTest("without impair the bed joins a and b by one veth pair, as before", async () => {
  await using bed = await Bed.create();
  assert.equal(bed.m, undefined);
  assert.equal(bed.impairedBy, undefined);
  assert.equal(bed.impairer, undefined);
  const namespaces = (await run(["ip", "netns", "list"], { check: true })).stdout;
  assert.ok(!namespaces.includes(`${bed.a.slice(0, -1)}m`), namespaces);
  const show = async (ns: string, dev: string) =>
    JSON.parse((await run(["ip", "-n", ns, "-j", "link", "show", "dev", dev], { check: true })).stdout)[0];
  const [a, b] = [await show(bed.a, bed.vethA), await show(bed.b, bed.vethB)];
  assert.equal(a.link_index, b.ifindex, "vethA's peer is vethB");
  assert.equal(b.link_index, a.ifindex, "vethB's peer is vethA");
  assert.equal(a.mtu, 1500);
  await bed.waitPing(bed.a, bed.b4);
  await bed.waitPing(bed.b, bed.a6);
});

netnsTest("the impaired bed is cleaned up by destroy(), twice, relay and m included", async () => {
  const netem = await netemSupport();
  console.log(`tc qdisc ... netem works on this kernel: ${netem}`);
  const bed = await Bed.create({ impair: { lossPercent: 1 } });
  try {
    await expectImpairedPath(bed);
    await bed.waitPing(bed.a, bed.b4);
  } finally {
    await bed.destroy();
  }
  await bed.destroy();
  const namespaces = (await run(["ip", "netns", "list"], { check: true })).stdout;
  for (const ns of [bed.a, bed.b, bed.m].filter(Boolean)) {
    assert.ok(!namespaces.split("\n").some((line) => line.split(" ")[0] === ns), `${ns} is gone`);
  }
  if (bed.impairer) {
    assert.equal(await Deno.stat(`/proc/${bed.impairer.pid}`).catch(() => null), null, "the relay is gone");
  }
});

netnsTest(
  "the relay without impairment carries full-size pings, TCP and UDP over a jumbo underlay",
  async () => {
    await using bed = await Bed.create({ mtu: 9000, impair: {} });
    await expectImpairedPath(bed);
    assert.equal((await bed.link(bed.a, bed.vethA)).mtu, 9000);
    assert.equal((await bed.link(bed.b, bed.vethB)).mtu, 9000);
    await bed.waitPing(bed.a, bed.b4);
    await bed.waitPing(bed.a, bed.b6);
    const big = await bed.exec(bed.a, ["ping", "-c", "3", "-i", "0.2", "-M", "do", "-s", "8972", bed.b4]);
    assert.equal(big.code, 0, big.stdout + big.stderr);
    if (await requireProgram("iperf3", "iperf3")) {
      const server = await startIperf3Server(bed, bed.b4);
      const client = await bed.exec(bed.a, ["iperf3", "-c", bed.b4, "-t", "2", "-J"]);
      assert.equal(client.code, 0, client.stdout + client.stderr);
      const received = JSON.parse(client.stdout).end.sum_received;
      console.log(`TCP through the relay: ${(received.bits_per_second / 1e6).toFixed(0)} Mbit/s`);
      assert.ok(received.bytes > 1_000_000, `iperf3 moved only ${received.bytes} bytes`);
      await bed.stop(server);
      // 20 Mbit/s of 1200-byte datagrams: about 2,100 frames a second.
      const { sent, delivered } = await iperf3Udp(bed, bed.b4, "20M", 1200);
      console.log(`UDP through the relay at 20 Mbit/s: ${delivered} of ${sent} datagrams`);
      assert.ok(delivered >= sent * 0.98, `only ${delivered} of ${sent} datagrams arrived`);
    }
    const counters = await stopRelay(bed);
    if (counters) {
      for (const direction of [counters.ab, counters.ba]) {
        assert.ok(direction.largest <= 9000 + 14, `a frame of ${direction.largest} bytes: a superframe`);
        assert.equal(direction.oversize, 0);
        assert.equal(direction.outgoing, 0, "the kernel hands the relay none of its own frames");
        assert.equal(direction.dropped + direction.reordered, 0);
      }
    }
  },
);

netnsTest(
  "with lossPercent 10 each way, 200 pings lose 3% to 20% on the way there and on the way back",
  async () => {
    await using bed = await Bed.create({ impair: { lossPercent: 10, seed: 1 } });
    await expectImpairedPath(bed);
    await bed.waitPing(bed.a, bed.b4);
    const [a0, b0] = [await icmpCounters(bed, bed.a), await icmpCounters(bed, bed.b)];
    const ping = await bed.exec(bed.a, ["ping", "-c", "200", "-i", "0.01", "-q", "-W", "1", bed.b4]);
    const [a1, b1] = [await icmpCounters(bed, bed.a), await icmpCounters(bed, bed.b)];
    const requests = b1.InEchos - b0.InEchos;
    const repliesSent = b1.OutEchoReps - b0.OutEchoReps;
    const replies = a1.InEchoReps - a0.InEchoReps;
    const there = 1 - requests / 200;
    const back = 1 - replies / repliesSent;
    const match = /(\d+) received, ([\d.]+)% packet loss/.exec(ping.stdout);
    assert.ok(match, ping.stdout + ping.stderr);
    console.log(
      `200 echo requests: ${(there * 100).toFixed(1)}% lost a to b, ${(back * 100).toFixed(1)}% of the ` +
        `replies lost b to a; ping says ${match[2]}% packet loss`,
    );
    assert.ok(there >= 0.03 && there <= 0.2, `${requests} of 200 requests arrived`);
    assert.ok(back >= 0.03 && back <= 0.2, `${replies} of ${repliesSent} replies arrived`);
    assert.equal(Number(match[1]), replies, `ping counts the replies a got: ${ping.stdout}`);
    const counters = await stopRelay(bed);
    if (counters) {
      assert.ok(counters.ab.dropped >= 200 - requests, JSON.stringify(counters.ab));
      assert.ok(counters.ba.dropped >= repliesSent - replies, JSON.stringify(counters.ba));
    }
  },
);

netnsTest("with delayMs 20 each way, every ping takes at least 40 ms, from either side", async () => {
  await using bed = await Bed.create({ impair: { delayMs: 20 } });
  await expectImpairedPath(bed);
  await bed.waitPing(bed.a, bed.b4);
  for (const [ns, address] of [[bed.a, bed.b4], [bed.b, bed.a4], [bed.a, bed.b6]]) {
    const ping = await bed.exec(ns, ["ping", "-c", "5", "-i", "0.05", address]);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    const { min, avg, max } = rtt(ping.stdout);
    console.log(`ping ${address} from ${ns}: min ${min} avg ${avg} max ${max} ms`);
    assert.ok(min >= 40, `a ping came back in ${min} ms`);
    assert.ok(min < 100, `the fastest ping took ${min} ms`);
  }
});

netnsTest("with reorderPercent 20, datagrams 1 ms apart arrive out of order, and all of them", async () => {
  await using bed = await Bed.create({ impair: { reorderPercent: 20, reorderDelayMs: 5 } });
  await expectImpairedPath(bed);
  await bed.waitPing(bed.a, bed.b4);
  const port = 9000;
  const count = 300;
  const receiver = bed.spawn(bed.b, [
    Deno.execPath(),
    "eval",
    "--unstable-net",
    `const socket = Deno.listenDatagram({ transport: "udp", hostname: "${bed.b4}", port: ${port} });
    console.log("listening");
    const order = [];
    let timer;
    while (order.length < ${count}) {
      const got = await Promise.race([
        socket.receive(),
        new Promise((resolve) => timer = setTimeout(resolve, 3000, null)),
      ]);
      clearTimeout(timer);
      if (got === null) break;
      order.push(new DataView(got[0].buffer).getUint32(0));
    }
    console.log(JSON.stringify(order));
    Deno.exit(0);`,
  ]);
  await bed.until(() => Promise.resolve(receiver.output().includes("listening")), "the UDP receiver");
  const sender = await bed.exec(bed.a, [
    Deno.execPath(),
    "eval",
    "--unstable-net",
    `const socket = Deno.listenDatagram({ transport: "udp", hostname: "${bed.a4}", port: 0 });
    for (let i = 0; i < ${count}; i++) {
      const datagram = new Uint8Array(64);
      new DataView(datagram.buffer).setUint32(0, i);
      await socket.send(datagram, { transport: "udp", hostname: "${bed.b4}", port: ${port} });
      const next = performance.now() + 1;
      while (performance.now() < next) { /* 1 ms apart */ }
    }`,
  ]);
  assert.equal(sender.code, 0, sender.stdout + sender.stderr);
  const status = await receiver.status;
  assert.equal(status.code, 0, receiver.output());
  const order: number[] = JSON.parse(receiver.output().trim().split("\n").at(-1)!);
  const late = order.filter((n, i) => i > 0 && n < Math.max(...order.slice(0, i)));
  console.log(`${order.length} of ${count} datagrams arrived, ${late.length} after a higher-numbered one`);
  assert.equal(new Set(order).size, count, `all ${count} datagrams arrive, once`);
  assert.ok(late.length >= 1, "at least one datagram arrives after a higher-numbered one");
  const counters = await stopRelay(bed);
  if (counters) {
    assert.ok(counters.ab.reordered >= late.length, JSON.stringify(counters.ab));
    assert.equal(counters.ab.dropped + counters.ab.oversize + counters.ab.failed, 0);
  }
});
