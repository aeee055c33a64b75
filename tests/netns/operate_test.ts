/**
 * Operating VELA as real processes in namespaces: vela status, devices, connect and close against a
 * running daemon, Prometheus metrics, SIGHUP reload of --config, check-config, and the control socket's
 * answer to a malformed command.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess, type RunResult } from "../../testbed/netns.ts";
import type { DaemonStatus } from "../../src/daemon/daemon.ts";
import { netnsTest } from "./support.ts";
import { ifindex, LISTEN, sleep, velaLinks, watchExit } from "./circuit_support.ts";

/** Runs a vela subcommand in `ns` and fails with its output unless it exits `code`. */
async function velaExpect(bed: Bed, ns: string, args: string[], code = 0): Promise<RunResult> {
  const result = await bed.velaCommand(ns, args);
  assert.equal(
    result.code,
    code,
    `vela ${
      args.join(" ")
    } exited ${result.code}, not ${code}\n--- stdout:\n${result.stdout}\n--- stderr:\n${result.stderr}`,
  );
  return result;
}

/** The connected UDP sockets in `ns`, as "local peer" (IPv4-mapped addresses shown as IPv4). */
async function connectedUdp(bed: Bed, ns: string): Promise<string[]> {
  const result = await bed.exec(ns, ["ss", "-H", "-u", "-n", "state", "established"], { check: true });
  return result.stdout.trim().split("\n").filter((line) => line !== "").map((line) => {
    const [local, peer] = line.trim().split(/\s+/).slice(-2);
    return `${local} ${peer}`.replaceAll("[::ffff:", "").replaceAll("]", "");
  });
}

/** Waits until the daemon's control socket answers `vela status`. */
async function waitControl(bed: Bed, ns: string, daemon: BedProcess): Promise<void> {
  await bed.until(
    async () => (await bed.velaCommand(ns, ["status", "--control", daemon.control!])).code === 0,
    `the control socket ${daemon.control}`,
  );
}

/** `vela status --json` of a daemon, parsed. */
async function statusOf(bed: Bed, ns: string, daemon: BedProcess): Promise<DaemonStatus> {
  const result = await velaExpect(bed, ns, ["status", "--control", daemon.control!, "--json"]);
  return JSON.parse(result.stdout) as DaemonStatus;
}

/** Scrapes the metrics endpoint on `ns`'s loopback from inside `ns`. */
async function scrape(bed: Bed, ns: string, port: number): Promise<string> {
  const result = await bed.exec(ns, [
    Deno.execPath(),
    "eval",
    `const r = await fetch('http://127.0.0.1:${port}/metrics'); ` +
    `if (r.status !== 200) throw new Error('status ' + r.status); console.log(await r.text())`,
  ], { check: true });
  return result.stdout;
}

/** The value of `name` for circuit `vid` in a scrape. */
function sample(text: string, name: string, vid: number): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(`vid="${vid}"`));
  assert.ok(line, `no ${name} for vid ${vid} in:\n${text}`);
  return Number(line.slice(line.lastIndexOf(" ") + 1));
}

netnsTest("vela status shows the circuit with counters that move with traffic", async () => {
  await using bed = await Bed.create();
  const metricsPort = 9455;
  const listener = bed.vela(bed.b, [...LISTEN, "--metrics", `127.0.0.1:${metricsPort}`]);
  const initiator = bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
  await bed.waitPing(bed.a, "198.18.207.2");
  await sleep(3_000); // A keepalive round trip or more.

  const status = await statusOf(bed, bed.a, initiator);
  assert.equal(status.listen, false);
  assert.equal(status.circuits.length, 1, JSON.stringify(status));
  const [circuit] = status.circuits;
  assert.equal(circuit.peer, bed.b4);
  assert.equal(circuit.address, bed.b4);
  assert.equal(circuit.port, 4455);
  assert.equal(circuit.vid, 3);
  assert.equal(circuit.role, "initiator");
  assert.equal(circuit.state, "established");
  assert.equal(circuit.ifname, "vela3");
  assert.equal(circuit.mode, "tap");
  assert.equal(circuit.mtu, 1500 - 20 - 8 - 1 - 14);
  assert.ok(circuit.txPackets > 0 && circuit.txBytes > 0, JSON.stringify(circuit));
  assert.ok(circuit.rxPackets > 0 && circuit.rxBytes > 0, JSON.stringify(circuit));
  assert.equal(typeof circuit.rttMs, "number", "a keepalive round trip was measured");
  assert.ok(circuit.rttMs! >= 0 && circuit.rttMs! < 1000, `rtt ${circuit.rttMs} ms`);
  assert.ok(circuit.uptimeSeconds! >= 2, `uptime ${circuit.uptimeSeconds}`);

  const listenerStatus = await statusOf(bed, bed.b, listener);
  assert.equal(listenerStatus.listen, true);
  assert.equal(listenerStatus.port, 4455);
  assert.deepEqual(
    listenerStatus.circuits.map((c) => [c.address, c.vid, c.role, c.state, c.ifname]),
    [[bed.a4, 3, "responder", "established", "vela3"]],
  );

  const table = (await velaExpect(bed, bed.a, ["status", "--control", initiator.control!])).stdout;
  const lines = table.trimEnd().split("\n");
  assert.match(lines[0], /^VELA running on UDP port \d+, 1 circuit$/);
  assert.deepEqual(lines[1].trim().split(/\s{2,}/), [
    "IFACE",
    "VID",
    "PEER",
    "STATE",
    "CIPHER",
    "UPTIME",
    "RTT",
    "TX",
    "RX",
    "DROPS",
  ]);
  assert.match(
    lines[2],
    new RegExp(
      `^vela3\\s+3\\s+${bed.b4.replaceAll(".", "\\.")}:4455\\s+established \\(i\\)\\s+clear`,
    ),
  );
  assert.match(lines[lines.length - 1], /^Dropped on the way in: /);

  const devices = (await velaExpect(bed, bed.a, ["devices", "--control", initiator.control!])).stdout;
  assert.equal(devices, `vela3\ttap\tmtu ${circuit.mtu}\t${bed.b4} vid 3\testablished\n`);
  const devicesJson = JSON.parse(
    (await velaExpect(bed, bed.b, ["devices", "--control", listener.control!, "--json"])).stdout,
  );
  assert.deepEqual(devicesJson, [
    { ifname: "vela3", mode: "tap", mtu: circuit.mtu, peer: bed.a4, vid: 3, state: "established" },
  ]);

  const before = await scrape(bed, bed.b, metricsPort);
  assert.equal(sample(before, "vela_circuit_up", 3), 1);
  const rxBefore = sample(before, "vela_circuit_rx_packets_total", 3);
  const ping = await bed.exec(bed.a, ["ping", "-c", "20", "-i", "0.05", "-W", "1", "198.18.207.2"]);
  assert.equal(ping.code, 0, ping.stdout + ping.stderr);
  const after = await scrape(bed, bed.b, metricsPort);
  const rxAfter = sample(after, "vela_circuit_rx_packets_total", 3);
  assert.ok(rxAfter - rxBefore >= 20, `vela_circuit_rx_packets_total went from ${rxBefore} to ${rxAfter}`);
  assert.ok(sample(after, "vela_circuit_tx_packets_total", 3) >= 20, "and the replies went out");

  const later = (await statusOf(bed, bed.a, initiator)).circuits[0];
  assert.ok(later.txPackets >= circuit.txPackets + 20, `txPackets ${circuit.txPackets} → ${later.txPackets}`);
});

netnsTest("vela connect sets up a whole link from one machine and vela close takes it down", async () => {
  await using bed = await Bed.create();
  bed.vela(bed.b, LISTEN);
  // A listener that can also initiate: it starts with no circuits, on a port of its own.
  const daemon = bed.vela(bed.a, [...LISTEN, "--port", "4456"]);
  await waitControl(bed, bed.a, daemon);
  assert.deepEqual((await statusOf(bed, bed.a, daemon)).circuits, []);

  const connected = await velaExpect(bed, bed.a, [
    "connect",
    "--control",
    daemon.control!,
    "--peer",
    bed.b4,
    "--vid",
    "7",
    "--address",
    "198.18.207.9/30",
  ]);
  assert.match(connected.stdout, /established/);
  assert.match(connected.stdout, /^Circuit 7 to .* established on vela7, MTU \d+\n$/);
  assert.equal(await bed.hasLink(bed.a, "vela7"), true);
  await bed.waitPing(bed.a, "198.18.207.10");
  assert.equal(await bed.hasLink(bed.b, "vela7"), true, "the far side has vela7");
  assert.ok((await bed.link(bed.b, "vela7")).addrs.includes("198.18.207.10/30"));
  const [circuit] = (await statusOf(bed, bed.a, daemon)).circuits;
  assert.equal(circuit.vid, 7);
  assert.equal(circuit.state, "established");
  assert.equal(circuit.port, 4455);
  // Each side's datapath has a socket connected to the other (its peer socket), on its own port.
  assert.deepEqual(await connectedUdp(bed, bed.a), [`${bed.a4}:4456 ${bed.b4}:4455`]);
  await bed.until(async () => (await connectedUdp(bed, bed.b)).length === 1, "b's peer socket");
  assert.deepEqual(await connectedUdp(bed, bed.b), [`${bed.b4}:4455 ${bed.a4}:4456`]);

  const closed = await velaExpect(bed, bed.a, [
    "close",
    "--control",
    daemon.control!,
    "--peer",
    bed.b4,
    "--vid",
    "7",
  ]);
  assert.match(closed.stdout, /Closed circuit 7/);
  assert.equal(await bed.hasLink(bed.a, "vela7"), false, "a's vela7 is gone when close returns");
  await bed.until(async () => !(await bed.hasLink(bed.b, "vela7")), "b to remove vela7 after CREQ");
  assert.deepEqual((await statusOf(bed, bed.a, daemon)).circuits, []);
  await bed.until(async () => (await connectedUdp(bed, bed.a)).length === 0, "a to close its peer socket");
  await bed.until(async () => (await connectedUdp(bed, bed.b)).length === 0, "b to close its peer socket");

  // Closing it again is an error that says so.
  const again = await velaExpect(
    bed,
    bed.a,
    ["close", "--control", daemon.control!, "--peer", bed.b4, "--vid", "7"],
    1,
  );
  assert.match(again.stderr, /^vela: no circuit 7 with /);
});

netnsTest(
  "SIGHUP re-reads --config: added circuits start, removed ones close, unchanged ones stay",
  async () => {
    await using bed = await Bed.create();
    const config = await Deno.makeTempFile({ prefix: "vela-config-", suffix: ".json" });
    const write = (circuits: { vid: number; address: string }[]) =>
      Deno.writeTextFile(
        config,
        JSON.stringify({
          circuits: circuits.map((c) => ({ peer: bed.b4, vid: c.vid, address: [c.address] })),
        }),
      );
    try {
      await write([{ vid: 3, address: "198.18.207.1/30" }, { vid: 4, address: "198.18.207.5/30" }]);
      bed.vela(bed.b, LISTEN);
      const daemon = bed.vela(bed.a, ["--config", config]);
      const running = watchExit(daemon);
      await Promise.all([bed.waitPing(bed.a, "198.18.207.2"), bed.waitPing(bed.a, "198.18.207.6")]);
      const near3 = await ifindex(bed.a, "vela3");
      const far3 = await ifindex(bed.b, "vela3");

      await write([{ vid: 3, address: "198.18.207.1/30" }, { vid: 5, address: "198.18.207.9/30" }]);
      Deno.kill(daemon.pid, "SIGHUP");

      await bed.until(
        async () => (await bed.hasLink(bed.a, "vela5")) && (await bed.hasLink(bed.b, "vela5")),
        "vela5 on both sides",
      );
      await bed.waitPing(bed.a, "198.18.207.10");
      await bed.until(
        async () => !(await bed.hasLink(bed.a, "vela4")) && !(await bed.hasLink(bed.b, "vela4")),
        "vela4 gone on both sides",
      );
      assert.deepEqual(await velaLinks(bed.a), ["vela3", "vela5"]);
      assert.deepEqual(await velaLinks(bed.b), ["vela3", "vela5"]);
      assert.equal(await ifindex(bed.a, "vela3"), near3, "vela3 was not made again here");
      assert.equal(await ifindex(bed.b, "vela3"), far3, "vela3 was not made again there");
      await bed.waitPing(bed.a, "198.18.207.2");
      assert.equal(running.exited, false, "SIGHUP does not stop the daemon");
      assert.deepEqual(
        (await statusOf(bed, bed.a, daemon)).circuits.map((c) => c.vid).sort(),
        [3, 5],
      );
      assert.match(daemon.output(), /SIGHUP.*1 circuits added, 1 removed, 1 unchanged/);

      // A broken file on SIGHUP keeps the running configuration.
      await Deno.writeTextFile(config, "{ not json");
      Deno.kill(daemon.pid, "SIGHUP");
      await bed.until(
        () => Promise.resolve(/SIGHUP: kept the running configuration/.test(daemon.output())),
        "the daemon to refuse the broken file",
      );
      assert.deepEqual(await velaLinks(bed.a), ["vela3", "vela5"]);
      assert.equal(running.exited, false);
    } finally {
      await Deno.remove(config);
    }
  },
);

netnsTest("vela status without a daemon says so and exits 1", async () => {
  await using bed = await Bed.create();
  const control = `/tmp/vela-${Deno.pid}-${bed.index}-nobody.sock`;
  for (const args of [["status"], ["devices"], ["close", "--peer", bed.b4, "--vid", "3"]]) {
    const result = await velaExpect(bed, bed.a, [...args, "--control", control], 1);
    assert.equal(result.stdout, "");
    assert.equal(
      result.stderr,
      `vela: No vela daemon is listening on ${control}; start one, or give its --control path\n`,
      args[0],
    );
  }
  // A socket file that nothing answers on any more (a daemon that was killed) is "no daemon" too.
  const daemon = bed.vela(bed.a, LISTEN);
  await waitControl(bed, bed.a, daemon);
  await bed.stop(daemon, "SIGKILL");
  const result = await velaExpect(bed, bed.a, ["status", "--control", daemon.control!], 1);
  assert.match(result.stderr, /^vela: No vela daemon is listening on /);
});

netnsTest("vela check-config exits 0 for a good file and 1 naming the field for a bad one", async () => {
  await using bed = await Bed.create();
  const good = await Deno.makeTempFile({ prefix: "vela-good-", suffix: ".json" });
  const listener = await Deno.makeTempFile({ prefix: "vela-listener-", suffix: ".json" });
  const bad = await Deno.makeTempFile({ prefix: "vela-bad-", suffix: ".json" });
  try {
    await Deno.writeTextFile(
      good,
      JSON.stringify({
        circuits: [
          { peer: bed.b4, vid: 3, address: ["198.18.207.1/30"] },
          { peer: bed.b4, vid: 4, mode: "tun" },
        ],
      }),
    );
    await Deno.writeTextFile(listener, JSON.stringify({ listen: true, allow: ["198.18.0.0/15"] }));
    await Deno.writeTextFile(
      bad,
      JSON.stringify({ circuits: [{ peer: bed.b4, vid: 3 }, { peer: bed.b4, vid: 300 }] }),
    );

    const ok = await velaExpect(bed, bed.a, ["check-config", good]);
    assert.equal(ok.stdout, `${good}: valid (2 circuits, 0 key files read)\n`);
    assert.equal(ok.stderr, "");
    const okListener = await velaExpect(bed, bed.a, ["check-config", listener]);
    assert.equal(okListener.stdout, `${listener}: valid (listener, 0 circuits, 0 key files read)\n`);

    const refused = await velaExpect(bed, bed.a, ["check-config", bad], 1);
    assert.equal(refused.stdout, "");
    assert.match(
      refused.stderr,
      /^vela: .*circuits\[1\]\.vid: must be a whole number from 1 to 255, not 300\n$/,
    );
    assert.ok(refused.stderr.includes(bad), "the message names the file");

    const missing = await velaExpect(bed, bed.a, ["check-config", `${bad}.missing`], 1);
    assert.match(missing.stderr, /^vela: Cannot read the config file .*it does not exist/);

    // Usage errors exit 2.
    await velaExpect(bed, bed.a, ["check-config"], 2);
    await velaExpect(bed, bed.a, ["check-config", good, good], 2);
  } finally {
    for (const file of [good, listener, bad]) await Deno.remove(file);
  }
});

netnsTest("a malformed command on the socket gets NOK and the daemon keeps running", async () => {
  await using bed = await Bed.create();
  const daemon = bed.vela(bed.b, LISTEN);
  const running = watchExit(daemon);
  await waitControl(bed, bed.b, daemon);
  // The socket is a file under /tmp: the test process reaches it from outside the namespace.
  const info = await Deno.lstat(daemon.control!);
  assert.ok(info.isSocket);
  assert.equal(info.mode! & 0o777, 0o600, "the socket is root-only");

  const ask = async (bytes: Uint8Array): Promise<{ reply: string; closed: boolean }> => {
    const conn = await Deno.connect({ transport: "unix", path: daemon.control! });
    try {
      await conn.write(bytes).catch(() => undefined);
      const chunk = new Uint8Array(65536);
      let reply = "";
      let closed = false;
      const deadline = Date.now() + 5_000;
      while (!reply.includes("\n") && Date.now() < deadline) {
        const n = await conn.read(chunk).catch(() => null);
        if (n === null) {
          closed = true;
          break;
        }
        reply += new TextDecoder().decode(chunk.subarray(0, n));
      }
      if (!closed) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const more = await Promise.race([
          conn.read(chunk).catch(() => null),
          new Promise<"open">((resolve) => timer = setTimeout(() => resolve("open"), 500)),
        ]);
        clearTimeout(timer);
        closed = more === null;
      }
      return { reply, closed };
    } finally {
      try {
        conn.close();
      } catch {
        // Closed.
      }
    }
  };
  const text = (line: string) => new TextEncoder().encode(line);

  assert.deepEqual(await ask(text("FROBNICATE\n")), {
    reply: "NOK unknown command FROBNICATE\n",
    closed: false,
  });
  assert.deepEqual(await ask(text("CLOSE 198.18.0.1 999\n")), {
    reply: "NOK vid must be 1 to 255, not 999\n",
    closed: false,
  });
  assert.deepEqual(await ask(text("CONNECT\n")), {
    reply: "NOK usage: CONNECT <peer> <vid> [key=value]...\n",
    closed: false,
  });
  const binary = await ask(new Uint8Array([0, 1, 2, 0xff, 0xfe, 10]));
  assert.match(binary.reply, /^NOK unknown command/);
  const long = await ask(text("STATUS?" + " x".repeat(20_000)));
  assert.match(long.reply, /^NOK command longer than \d+ bytes\n$/);
  assert.equal(long.closed, true, "the connection of the long line is closed");
  // A client that goes away in the middle of a line.
  const halfway = await Deno.connect({ transport: "unix", path: daemon.control! });
  await halfway.write(text("STAT"));
  halfway.close();

  await sleep(200);
  assert.equal(running.exited, false, daemon.output());
  const status = await statusOf(bed, bed.b, daemon);
  assert.equal(status.listen, true);
  const version = await velaExpect(bed, bed.b, ["status", "--control", daemon.control!]);
  assert.match(version.stdout, /^VELA listening on UDP port 4455, 0 circuits/);
  assert.equal((await bed.stop(daemon)).code, 0, "and it still stops cleanly");
  assert.equal(await Deno.lstat(daemon.control!).then(() => true, () => false), false, "socket removed");
});

netnsTest(
  "a daemon whose --control or --metrics is taken exits 1 and says which; the first keeps answering",
  async () => {
    await using bed = await Bed.create();
    const first = bed.vela(bed.b, [...LISTEN, "--metrics", "127.0.0.1:9455"]);
    await waitControl(bed, bed.b, first);

    const sameControl = bed.vela(bed.b, [...LISTEN, "--port", "4457", "--control", first.control!]);
    assert.equal((await sameControl.status).code, 1, sameControl.output());
    assert.match(
      sameControl.output(),
      new RegExp(
        `vela: Another vela daemon is listening on ${first.control}; stop it or choose --control\\n$`,
      ),
    );

    const sameMetrics = bed.vela(bed.b, [...LISTEN, "--port", "4458", "--metrics", "127.0.0.1:9455"]);
    assert.equal((await sameMetrics.status).code, 1, sameMetrics.output());
    assert.match(
      sameMetrics.output(),
      /vela: Cannot serve metrics on 127\.0\.0\.1:9455: .*choose another --metrics\n$/,
    );

    assert.ok((await Deno.lstat(first.control!)).isSocket, "the first daemon's socket is still there");
    const status = await statusOf(bed, bed.b, first);
    assert.equal(status.port, 4455);
    assert.match(
      await scrape(bed, bed.b, 9455),
      /^vela_info\{version="[^"]+"\} 1$/m,
      "the first one's metrics",
    );
  },
);

// When --metrics cannot be served, the daemon stops and also closes the control socket it had opened.
netnsTest("a daemon that cannot serve --metrics leaves no control socket behind", async () => {
  await using bed = await Bed.create();
  const first = bed.vela(bed.b, [...LISTEN, "--metrics", "127.0.0.1:9455"]);
  await waitControl(bed, bed.b, first);
  const second = bed.vela(bed.b, [...LISTEN, "--port", "4458", "--metrics", "127.0.0.1:9455"]);
  assert.equal((await second.status).code, 1, second.output());
  assert.equal(await Deno.lstat(second.control!).then(() => true, () => false), false, second.control);
});

// A SIGHUP whose new file has a circuit that cannot start (here: no route to its peer) changes nothing.
netnsTest(
  "a SIGHUP that cannot start a new circuit keeps the running configuration, as it says",
  async () => {
    await using bed = await Bed.create();
    const config = await Deno.makeTempFile({ prefix: "vela-config-", suffix: ".json" });
    try {
      const circuits = [
        { peer: bed.b4, vid: 3, address: ["198.18.207.1/30"] },
        { peer: bed.b4, vid: 4, address: ["198.18.207.5/30"] },
      ];
      await Deno.writeTextFile(config, JSON.stringify({ circuits }));
      bed.vela(bed.b, LISTEN);
      const daemon = bed.vela(bed.a, ["--config", config]);
      await Promise.all([bed.waitPing(bed.a, "198.18.207.2"), bed.waitPing(bed.a, "198.18.207.6")]);
      await Deno.writeTextFile(
        config,
        JSON.stringify({ circuits: [circuits[0], { peer: "198.19.99.1", vid: 6 }] }),
      );
      Deno.kill(daemon.pid, "SIGHUP");
      await bed.until(
        () => Promise.resolve(/SIGHUP: kept the running configuration/.test(daemon.output())),
        "the daemon to refuse the new file",
      );
      await sleep(500);
      assert.deepEqual(await velaLinks(bed.a), ["vela3", "vela4"], "the running configuration, kept");
      assert.deepEqual(await velaLinks(bed.b), ["vela3", "vela4"]);
    } finally {
      await Deno.remove(config);
    }
  },
);
