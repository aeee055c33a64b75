/**
 * Operating several daemons as a new operator would (issue 19): default control sockets per network
 * namespace, the live view under traffic, one circuit in full, showconf's file recreating the circuits,
 * and the failures a daemon states at start before it listens or makes an interface.
 */

import assert from "node:assert/strict";
import { Bed, type RunResult } from "../../testbed/netns.ts";
import type { DaemonStatus } from "../../src/daemon/daemon.ts";
import { netnsTest, requireProgram } from "./support.ts";
import { bothLinks, LISTEN, MAIN } from "./circuit_support.ts";

const PERMISSIONS = ["--allow-all"];

/** `vela ARGS` in `ns` with no --control: the namespace's default socket. */
function velaHere(bed: Bed, ns: string, args: string[]) {
  return bed.spawn(ns, [Deno.execPath(), "run", ...PERMISSIONS, "--quiet", MAIN, ...args]);
}

function expectCode(result: RunResult, code: number, what: string): RunResult {
  assert.equal(result.code, code, `${what} exited ${result.code}\n${result.stdout}\n${result.stderr}`);
  return result;
}

async function statusHere(bed: Bed, ns: string): Promise<DaemonStatus> {
  const result = await expectCode(await bed.velaCommand(ns, ["status", "--json"]), 0, `status in ${ns}`);
  return JSON.parse(result.stdout);
}

async function established(bed: Bed, ns: string, count: number): Promise<DaemonStatus> {
  let last: DaemonStatus | undefined;
  await bed.until(async () => {
    const result = await bed.velaCommand(ns, ["status", "--json"]);
    if (result.code !== 0) return false;
    last = JSON.parse(result.stdout) as DaemonStatus;
    return last.circuits.filter((c) => c.state === "established").length >= count;
  }, `${count} established circuits in ${ns}`);
  return last!;
}

netnsTest(
  "two daemons in two namespaces use two default control sockets, each found by its own client",
  async () => {
    await using bed = await Bed.create();
    velaHere(bed, bed.b, LISTEN);
    velaHere(bed, bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
    const a = await established(bed, bed.a, 1);
    const b = await established(bed, bed.b, 1);
    assert.equal(a.listen, false, "router1's client reached router1's daemon");
    assert.equal(b.listen, true, "router2's client reached router2's daemon");
    for (const ns of [bed.a, bed.b]) {
      assert.ok(Deno.statSync(`/run/vela/${ns}.sock`).isSocket, `/run/vela/${ns}.sock`);
    }
  },
);

netnsTest(
  "vela top shows rates above zero while iperf3 runs, and status IFNAME shows one circuit",
  async () => {
    if (!await requireProgram("iperf3", "iperf3")) return;
    await using bed = await Bed.create();
    velaHere(bed, bed.b, LISTEN);
    velaHere(bed, bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
    await established(bed, bed.a, 1);
    await bothLinks(bed, "vela3");
    await bed.waitPing(bed.a, "198.18.207.2", 10_000);
    bed.spawn(bed.b, ["iperf3", "-s", "-1", "-B", "198.18.207.2"]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const client = bed.exec(bed.a, ["iperf3", "-c", "198.18.207.2", "-t", "5"]);
    const top = await expectCode(
      await bed.velaCommand(bed.a, ["top", "--interval", "1", "--count", "3"]),
      0,
      "vela top",
    );
    await client;
    const frames = top.stdout.trim().split(/\n\n+/);
    assert.equal(frames.length, 3, top.stdout);
    const [header, row] = frames[2].split("\n").slice(1);
    const cells = row.split(/\s{2,}/);
    const column = (name: string) => cells[header.split(/\s{2,}/).indexOf(name)];
    assert.equal(cells[0], "vela3");
    assert.match(column("STATE"), /^established/);
    for (const name of ["TX bit/s", "TX pkt/s", "RX pkt/s"]) {
      assert.match(column(name), /^[0-9.]+[kMG]?$/, `${name} in ${row}`);
      assert.ok(Number.parseFloat(column(name)) > 0, `${name} above zero: ${row}`);
    }
    assert.match(column("TX bit/s"), /[MG]$/, `megabits or more under iperf3: ${row}`);
    for (const line of top.stdout.split("\n")) assert.ok(line.length <= 120, line);

    const detail = await expectCode(await bed.velaCommand(bed.a, ["status", "vela3"]), 0, "status vela3");
    assert.match(detail.stdout, /^state +established$/m);
    assert.match(detail.stdout, /^mode +tap$/m);
    assert.match(detail.stdout, /^addresses +198\.18\.207\.1\/30, fd[0-9a-f:]+\/64 \(derived\)$/m);
    assert.match(detail.stdout, /^last heard +\d+s ago$/m);
    const missing = await bed.velaCommand(bed.a, ["status", "vela9"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^vela: No circuit vela9 here; the circuits are vela3\n$/);
  },
);

netnsTest("showconf prints a file that passes check-config and recreates the same circuits", async () => {
  await using bed = await Bed.create();
  velaHere(bed, bed.b, LISTEN);
  const first = velaHere(bed, bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
  await established(bed, bed.a, 1);
  await expectCode(
    await bed.velaCommand(bed.a, [
      "connect",
      "--peer",
      bed.b4,
      "--vid",
      "5",
      "--mode",
      "tun",
      "--mtu",
      "1300",
    ]),
    0,
    "connect vid 5",
  );
  const shown = await expectCode(await bed.velaCommand(bed.a, ["showconf"]), 0, "showconf");
  const file = JSON.parse(shown.stdout);
  assert.deepEqual(file.circuits, [
    { peer: bed.b4, vid: 3, mode: "tap", address: ["198.18.207.1/30"] },
    { peer: bed.b4, vid: 5, mode: "tun", mtu: 1300 },
  ]);
  const path = Deno.makeTempFileSync({ prefix: `vela-${Deno.pid}-`, suffix: ".json" });
  try {
    Deno.writeTextFileSync(path, shown.stdout);
    const check = await expectCode(await bed.velaCommand(bed.a, ["check-config", path]), 0, "check-config");
    assert.match(check.stdout, /valid \(2 circuits, 0 key files read\)/);
    const before = (await statusHere(bed, bed.a)).circuits.map((c) => `${c.vid} ${c.mode} ${c.peer}`).sort();
    assert.equal((await bed.stop(first, "SIGTERM")).code, 0);
    velaHere(bed, bed.a, ["--config", path]);
    const again = await established(bed, bed.a, 2);
    assert.deepEqual(again.circuits.map((c) => `${c.vid} ${c.mode} ${c.peer}`).sort(), before);
  } finally {
    Deno.removeSync(path);
  }
});

netnsTest("a daemon without CAP_NET_ADMIN stops at start with the sentence, before it listens", async () => {
  if (!await requireProgram("setpriv", "util-linux")) return;
  await using bed = await Bed.create();
  const result = await bed.exec(bed.a, [
    "setpriv",
    "--bounding-set=-net_admin",
    "--inh-caps=-net_admin",
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    "--quiet",
    MAIN,
    ...LISTEN,
  ]);
  assert.equal(result.code, 1, result.stderr);
  assert.equal(
    result.stderr,
    "vela: Cannot make interfaces: vela lacks CAP_NET_ADMIN; run it as root (or give it CAP_NET_ADMIN)\n",
  );
  assert.equal((await bed.exec(bed.a, ["ss", "-lun", "sport = :4455"])).stdout.includes("4455"), false);
  assert.throws(() => Deno.statSync(`/run/vela/${bed.a}.sock`), Deno.errors.NotFound, "no control socket");
});

netnsTest("a metrics port in use stops the daemon before it makes any interface", async () => {
  await using bed = await Bed.create();
  const holder = bed.spawn(bed.a, [
    Deno.execPath(),
    "eval",
    "Deno.listen({hostname:'127.0.0.1',port:9455}); setTimeout(()=>{},60000)",
  ]);
  await bed.until(
    async () => (await bed.exec(bed.a, ["ss", "-ltn", "sport = :9455"])).stdout.includes("9455"),
    "the metrics port held",
  );
  const process = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--metrics", "127.0.0.1:9455"]);
  const status = await process.status;
  assert.equal(status.code, 1, process.output());
  assert.match(
    process.output(),
    /^vela: Cannot serve metrics on 127\.0\.0\.1:9455: .*; choose another --metrics\n$/,
  );
  assert.equal(await bed.hasLink(bed.a, "vela3"), false, "no interface was made");
  await bed.stop(holder, "SIGKILL");
});

netnsTest("an initiator whose local UDP port is in use is told to choose another --local-port", async () => {
  await using bed = await Bed.create();
  bed.vela(bed.a, [...LISTEN, "--port", "4600"]);
  await bed.until(
    async () => (await bed.exec(bed.a, ["ss", "-lun", "sport = :4600"])).stdout.includes("4600"),
    "the listener on 4600",
  );
  const process = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--local-port", "4600"]);
  assert.equal((await process.status).code, 1, process.output());
  assert.match(
    process.output(),
    /UDP port 4600 is already in use; stop the other daemon or choose another --local-port/,
  );
  assert.equal(await bed.hasLink(bed.a, "vela3"), false);
});

netnsTest(
  "a control client that is not root is told to run as root, and root's client is answered",
  async () => {
    if (!await requireProgram("setpriv", "util-linux")) return;
    await using bed = await Bed.create();
    // The unprivileged client needs a Deno cache it may read: a copy of this one, owned by nobody.
    const denoDir = await Deno.makeTempDir({ prefix: `vela-${Deno.pid}-denodir-` });
    try {
      const info = JSON.parse(
        (await bed.exec(bed.a, [Deno.execPath(), "info", "--json"], { check: true })).stdout,
      );
      await bed.exec(bed.a, ["cp", "-r", `${info.denoDir}/.`, denoDir], { check: true });
      await bed.exec(bed.a, ["chown", "-R", "65534:65534", denoDir], { check: true });
      velaHere(bed, bed.a, ["--peer", bed.b4, "--vid", "3"]);
      await bed.until(
        async () => (await bed.velaCommand(bed.a, ["status"])).code === 0,
        "the daemon answering",
      );
      const nobody = await bed.exec(bed.a, [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "env",
        `DENO_DIR=${denoDir}`,
        "HOME=/tmp",
        Deno.execPath(),
        "run",
        ...PERMISSIONS,
        "--quiet",
        MAIN,
        "status",
      ]);
      assert.equal(nobody.code, 1, `${nobody.stdout}\n${nobody.stderr}`);
      assert.equal(nobody.stderr, `vela: Permission denied on /run/vela/${bed.a}.sock; run this as root\n`);
      assert.equal((await bed.velaCommand(bed.a, ["status"])).code, 0, "root is still answered");
    } finally {
      await Deno.remove(denoDir, { recursive: true }).catch(() => undefined);
    }
  },
);
