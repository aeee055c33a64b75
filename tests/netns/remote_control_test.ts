/**
 * Remote control (issue 19, point 1): two daemons, router1 and router2 in the bed's two namespaces, driven
 * from a third namespace (the operator's host) over --control-listen, with the right key, the wrong key,
 * no key, and a read-only key that is refused a mutating command. Only the operator's namespace reaches
 * the control ports (two veth pairs of its own, 198.19.x.0/30 and fd00:198:19:x::/64); the circuit itself
 * runs over the bed's underlay as always.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess, run, type RunResult } from "../../testbed/netns.ts";
import type { DaemonStatus } from "../../src/daemon/daemon.ts";
import { netnsTest } from "./support.ts";
import { keyFile, velaLinks } from "./circuit_support.ts";

/** The operator's namespace, wired to router1 over IPv4 and to router2 over IPv6. */
interface Operator {
  ns: string;
  /** router1's control address (IPv4) and router2's (IPv6), as --remote takes them. */
  router1: string;
  router2: string;
  /** The operator's own addresses, as the daemons log them. */
  own4: string;
  own6: string;
}

async function operatorNamespace(bed: Bed): Promise<Operator> {
  const ns = `vela-${Deno.pid}-${bed.index}-op`;
  const toA = `o${Deno.pid}.${bed.index}a`.slice(-15);
  const toB = `o${Deno.pid}.${bed.index}b`.slice(-15);
  const net4 = `198.19.${bed.index}`;
  const net6 = `fd00:198:19:${bed.index}`;
  const sh = (command: string) => run(["sh", "-ec", command], { check: true });
  await sh(`ip netns add ${ns}`);
  await sh(
    [
      `ip link add ${toA}x netns ${ns} type veth peer name ${toA} netns ${bed.a}`,
      `ip link add ${toB}x netns ${ns} type veth peer name ${toB} netns ${bed.b}`,
      `ip -n ${ns} link set lo up`,
      `ip -n ${ns} addr add ${net4}.2/30 dev ${toA}x`,
      `ip -n ${bed.a} addr add ${net4}.1/30 dev ${toA}`,
      `ip -n ${ns} addr add ${net6}::2/64 dev ${toB}x nodad`,
      `ip -n ${bed.b} addr add ${net6}::1/64 dev ${toB} nodad`,
      `ip -n ${ns} link set ${toA}x up`,
      `ip -n ${ns} link set ${toB}x up`,
      `ip -n ${bed.a} link set ${toA} up`,
      `ip -n ${bed.b} link set ${toB} up`,
    ].join("; "),
  );
  return {
    ns,
    router1: `${net4}.1`,
    router2: `[${net6}::1]`,
    own4: `${net4}.2`,
    own6: `${net6}::2`,
  };
}

/** A vela subcommand in the operator's namespace; fails with its output unless it exits `code`. */
async function operatorVela(bed: Bed, op: Operator, args: string[], code = 0): Promise<RunResult> {
  const result = await bed.velaCommand(op.ns, args);
  assert.equal(
    result.code,
    code,
    `vela ${
      args.join(" ")
    } exited ${result.code}, not ${code}\n--- stdout:\n${result.stdout}\n--- stderr:\n${result.stderr}`,
  );
  return result;
}

/** The circuits a daemon reports on its own control socket (the ground truth, not remote control). */
async function localStatus(bed: Bed, ns: string, daemon: BedProcess): Promise<DaemonStatus> {
  const result = await bed.velaCommand(ns, ["status", "--control", daemon.control!, "--json"]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as DaemonStatus;
}

/** Sends `text` in clear to HOST:PORT from `ns` (as `nc` would) and returns what comes back. */
async function clearText(
  bed: Bed,
  ns: string,
  hostname: string,
  port: number,
  text: string,
): Promise<string> {
  const result = await bed.exec(ns, [
    Deno.execPath(),
    "eval",
    `const c = await Deno.connect({ hostname: ${JSON.stringify(hostname)}, port: ${port} });
     await c.write(new TextEncoder().encode(${JSON.stringify(text)}));
     const chunks = []; const buffer = new Uint8Array(4096);
     for (;;) { const n = await c.read(buffer).catch(() => null); if (n === null) break; chunks.push(buffer.slice(0, n)); }
     console.log(new TextDecoder().decode(new Uint8Array(chunks.flatMap((b) => [...b]))));`,
  ], { check: true });
  return result.stdout;
}

netnsTest(
  "a third namespace drives two daemons over --control-listen: right key, wrong key, no key, read-only key",
  async () => {
    await using bed = await Bed.create();
    const op = await operatorNamespace(bed);
    const keys: string[] = [];
    try {
      const link = await keyFile("link");
      const ops = await keyFile("ops");
      const noc = await keyFile("noc");
      const stranger = await keyFile("stranger");
      keys.push(link, ops, noc, stranger);
      // router1 holds an operators' key and a read-only one; router2 has none of its own, so its circuit
      // key (--key-file) is the one that may run every command there.
      const router1 = bed.vela(bed.a, [
        "--listen",
        "--key-file",
        link,
        "--control-listen",
        op.router1,
        "--control-key",
        ops,
        "--control-read-key",
        noc,
      ]);
      const router2 = bed.vela(bed.b, ["--listen", "--key-file", link, "--control-listen", op.router2]);
      const remote1 = (key: string) => ["--remote", op.router1, "--key-file", key];
      const remote2 = (key: string) => ["--remote", op.router2, "--key-file", key];
      await bed.until(
        async () =>
          (await bed.velaCommand(op.ns, ["status", ...remote1(ops)])).code === 0 &&
          (await bed.velaCommand(op.ns, ["status", ...remote2(link)])).code === 0,
        "both daemons answering remote control",
      );
      assert.match(router1.output(), /remote control on 198\.19\.\d+\.1:4456 \(1 admin key, 1 read-only\)/);
      assert.match(
        router2.output(),
        /remote control on \[fd00:198:19:\d+::1\]:4456 \(1 admin key, 0 read-only\)/,
      );

      // The operator makes router1 set up the circuit to router2; router2's side comes from the handshake.
      const connected = await operatorVela(bed, op, [
        "connect",
        ...remote1(ops),
        "--peer",
        bed.b4,
        "--vid",
        "3",
        "--address",
        "198.18.207.1/30",
      ]);
      assert.match(connected.stdout, /^Circuit 3 to 198\.18\.\d+\.2 established on vela3, MTU \d+$/m);
      await bed.waitPing(bed.a, "198.18.207.2");
      const far = JSON.parse((await operatorVela(bed, op, ["status", ...remote2(link), "--json"])).stdout);
      assert.equal(far.circuits.length, 1, JSON.stringify(far));
      assert.equal(far.circuits[0].state, "established");
      assert.equal(far.circuits[0].role, "responder");
      assert.match(far.circuits[0].cipher, /^(aes-256-gcm|chacha20-poly1305)$/, "the circuit is keyed");
      const devices = await operatorVela(bed, op, ["devices", ...remote2(link)]);
      assert.match(devices.stdout, /^vela3\ttap\tmtu \d+\t/m);

      // The read-only key reads (status, top, showconf) and is refused close; nothing changes.
      const read = await operatorVela(bed, op, ["status", ...remote1(noc)]);
      assert.match(read.stdout, /^vela3 +3 +198\.18\.\d+\.2:4455 +established/m);
      const top = await operatorVela(bed, op, ["top", ...remote1(noc), "--interval", "1", "--count", "2"]);
      assert.equal(top.stdout.match(/^vela top: 198\.19\.\d+\.1:4456/gm)?.length, 2, top.stdout);
      const shown = JSON.parse((await operatorVela(bed, op, ["showconf", ...remote1(noc)])).stdout);
      assert.equal(shown.circuits?.[0]?.vid, 3, JSON.stringify(shown));
      const refused = await operatorVela(bed, op, [
        "close",
        ...remote1(noc),
        "--peer",
        bed.b4,
        "--vid",
        "3",
      ], 1);
      assert.match(refused.stderr, /^vela: CLOSE needs the control key; this key may only read\n$/);
      assert.equal((await localStatus(bed, bed.a, router1)).circuits[0]?.state, "established");

      // A key router1 does not hold (a stranger's, and the circuit key, which --control-key replaced) is
      // refused, logged with the operator's address, and changes nothing.
      for (const wrong of [stranger, link]) {
        const denied = await operatorVela(bed, op, [
          "close",
          ...remote1(wrong),
          "--peer",
          bed.b4,
          "--vid",
          "3",
        ], 1);
        assert.match(denied.stderr, /^vela: The daemon on 198\.19\.\d+\.1:4456 refused the key\n$/);
      }
      await bed.until(
        () => Promise.resolve(router1.output().includes(`Remote control from ${op.own4}:`)),
        "router1 logging the refusal",
        5_000,
      );
      assert.match(router1.output(), /Remote control from 198\.19\.\d+\.2:\d+ refused/);
      const wrongOnRouter2 = await operatorVela(bed, op, ["status", ...remote2(ops)], 1);
      assert.match(wrongOnRouter2.stderr, /refused the key/);

      // No key: the client will not go without one, and a command sent in clear is refused in clear.
      const usage = await operatorVela(bed, op, [
        "close",
        "--remote",
        op.router1,
        "--peer",
        bed.b4,
        "--vid",
        "3",
      ], 2);
      assert.match(usage.stderr, /--remote needs --key-file FILE/);
      const plain = await clearText(bed, op.ns, op.router1, 4456, `CLOSE ${bed.b4} 3\n`);
      assert.match(plain, /^NOK /, plain);
      assert.equal((await localStatus(bed, bed.a, router1)).circuits.length, 1, "still there");
      assert.deepEqual(await velaLinks(bed.a), ["vela3"]);

      // The operators' key closes it: router1 tells router2, and both interfaces go.
      await operatorVela(bed, op, ["close", ...remote1(ops), "--peer", bed.b4, "--vid", "3"]);
      await bed.until(
        async () => (await velaLinks(bed.a)).length === 0 && (await velaLinks(bed.b)).length === 0,
        "vela3 removed on both routers",
      );
      // router2 is still driven by its circuit key; the circuit is gone there too.
      const after = JSON.parse((await operatorVela(bed, op, ["status", ...remote2(link), "--json"])).stdout);
      assert.equal(after.circuits.length, 0, JSON.stringify(after));
    } finally {
      await run(["ip", "netns", "del", op.ns]).catch(() => undefined);
      for (const key of keys) await Deno.remove(key).catch(() => undefined);
    }
  },
);
