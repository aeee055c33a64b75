/**
 * Hardening (issue 17) on real kernel devices: the circuit caps, and a flood of control datagrams from a
 * stranger while a keyed circuit carries pings.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";
import { keyFile, sleep, velaLinks } from "./circuit_support.ts";

const FLOOD = new URL("./control_flood.ts", import.meta.url).pathname;
const FAR = "198.18.207.2";

async function status(bed: Bed, ns: string, daemon: BedProcess) {
  const shown = await bed.velaCommand(ns, ["status", "--json", "--control", daemon.control!]);
  assert.equal(shown.code, 0, shown.stdout + shown.stderr);
  return JSON.parse(shown.stdout) as {
    circuits: { vid: number; state: string; address: string }[];
    drops: Record<string, number>;
  };
}

/** The resident set of a process, in bytes. */
async function rss(pid: number): Promise<number> {
  const text = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(text)![1]) * 1024;
}

/** How long the daemon's control socket takes to answer a STATUS? (connect, ask, whole reply), in ms. */
async function controlLatency(path: string): Promise<number> {
  const started = performance.now();
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(new TextEncoder().encode("STATUS? JSON\n"));
    const buffer = new Uint8Array(65536);
    let text = "";
    while (!text.includes("\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    assert.match(text, /^OK /, "the control socket answers OK");
  } finally {
    conn.close();
  }
  return performance.now() - started;
}

netnsTest(
  "max_circuits_per_peer: the third circuit from one peer is refused with a NAK, the daemon lives and keeps two",
  async () => {
    await using bed = await Bed.create();
    const listener = bed.vela(bed.b, [
      "--listen",
      "--allow",
      "198.18.0.0/15",
      "--max-circuits-per-peer",
      "2",
    ]);
    const config = await Deno.makeTempFile({ prefix: "vela-config-", suffix: ".json" });
    try {
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          circuits: [1, 2, 3].map((vid) => ({ peer: bed.b4, vid, address: [`198.18.${200 + vid}.1/30`] })),
        }),
      );
      const initiator = bed.vela(bed.a, ["--config", config]);
      await bed.until(
        () => Promise.resolve(initiator.output().includes("refused circuit")),
        "the initiator told of the refusal",
        20_000,
      );
      await bed.waitPing(bed.a, "198.18.201.2");
      await bed.waitPing(bed.a, "198.18.202.2");
      const far = await status(bed, bed.b, listener);
      assert.ok((far.drops["circuit-limit"] ?? 0) >= 1, JSON.stringify(far.drops));
      assert.equal(far.circuits.length, 2, JSON.stringify(far.circuits));
      assert.deepEqual(await velaLinks(bed.b), ["vela1", "vela2"]);
      assert.match(initiator.output(), /refused circuit 3: the listener holds its maximum of 2 circuits/);
      assert.match(listener.output(), /Refused IREQ for circuit 3 .*maximum of 2 circuits/);
    } finally {
      await Deno.remove(config);
    }
  },
);

netnsTest(
  "a stranger's flood of 50,000 control datagrams a second for 30 s: ping keeps answering, RSS stays bounded, the control socket answers within 1 s",
  async () => {
    await using bed = await Bed.create();
    const key = await keyFile();
    try {
      const listener = bed.vela(bed.b, ["--listen", "--key-file", key]);
      bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30", "--key-file", key]);
      await bed.waitPing(bed.a, FAR, 30_000);
      const stranger = `198.18.${bed.index}.9`;
      await bed.exec(bed.a, ["ip", "addr", "add", `${stranger}/24`, "dev", bed.vethA], { check: true });

      const flood = (rate: number, seconds: number) =>
        bed.exec(bed.a, [
          Deno.execPath(),
          "run",
          "--allow-all",
          "--quiet",
          FLOOD,
          stranger,
          bed.b4,
          "4455",
          String(rate),
          String(seconds),
          "--ireqs",
        ]);
      await sleep(2000);
      const before = await rss(listener.pid);
      const baseLatency = await controlLatency(listener.control!);
      const flooding = flood(50_000, 30);
      await sleep(1000);
      const ping = bed.exec(bed.a, ["ping", "-c", "135", "-i", "0.2", "-W", "1", "-q", FAR]);
      const samples: { rss: number; latency: number }[] = [];
      const sampling = (async () => {
        for (let i = 0; i < 13; i++) {
          await sleep(2000);
          samples.push({ rss: await rss(listener.pid), latency: await controlLatency(listener.control!) });
        }
      })();
      const [flooded, pinged] = await Promise.all([flooding, ping, sampling]);
      assert.equal(flooded.code, 0, flooded.stdout + flooded.stderr);
      const { sent } = JSON.parse(flooded.stdout) as { sent: number };
      const loss = Number(/(\d+(?:\.\d+)?)% packet loss/.exec(pinged.stdout)?.[1] ?? "100");
      // V8 gives memory back when its memory reducer runs, some seconds after the allocation stops: alone
      // within about 6 s, but under the load of the whole suite it once had not run after 20 s (RSS flat
      // at +16.7 MB for ten samples). So this samples every 2 s until RSS is back within the bound, for up
      // to 40 s.
      const afterSamples: number[] = [];
      for (let i = 0; i < 20; i++) {
        await sleep(2000);
        afterSamples.push(await rss(listener.pid));
        if (Math.min(...afterSamples) <= before + 16 * 2 ** 20) break;
      }
      const after = Math.min(...afterSamples);
      const far = await status(bed, bed.b, listener);
      const counted = Object.entries(far.drops).filter(([reason]) => reason !== "send-failed")
        .reduce((sum, [, n]) => sum + n, 0);
      const grew = Math.max(...samples.map((s) => s.rss)) - before;
      const slowest = Math.max(...samples.map((s) => s.latency));
      const report =
        `sent ${sent} in 30 s, ping loss ${loss}%, RSS ${(before / 2 ** 20).toFixed(1)} MB before, ` +
        `at most +${(grew / 2 ** 20).toFixed(1)} MB during, ${(after / 2 ** 20).toFixed(1)} MB within ${
          2 * afterSamples.length
        } s after ` +
        `(${afterSamples.map((s) => (s / 2 ** 20).toFixed(0)).join(" ")}); ` +
        `control socket ${baseLatency.toFixed(0)} ms before, at most ${slowest.toFixed(0)} ms during; ` +
        `drops ${JSON.stringify(far.drops)}`;
      console.log(report);
      assert.ok(sent >= 30 * 50_000 * 0.9, `the flood ran at 50k/s: ${report}`);
      assert.ok(counted >= sent * 0.9, `the listener saw and counted the flood: ${report}`);
      assert.ok(loss <= 1, `ping loss at most 1%: ${report}`);
      assert.ok(grew <= 32 * 2 ** 20, `RSS grew by at most 32 MB: ${report}`);
      assert.ok(after <= before + 16 * 2 ** 20, `RSS came back: ${report}`);
      assert.ok(slowest < 1000, `the control socket answered within 1 s: ${report}`);
      assert.ok(
        far.circuits.some((c) => c.vid === 3 && c.state === "established"),
        `the circuit stayed up: ${JSON.stringify(far.circuits)}`,
      );
    } finally {
      await Deno.remove(key);
    }
  },
);

/** Every UDP datagram to the listener's port that leaves a's veth goes out more than once (nftables dup). */
async function duplicateUnderlay(bed: Bed): Promise<void> {
  const nft = (...args: string[]) => bed.exec(bed.a, ["nft", ...args], { check: true });
  await nft("add", "table", "netdev", "vela_dup");
  await nft(
    "add",
    "chain",
    "netdev",
    "vela_dup",
    "out",
    `{ type filter hook egress device "${bed.vethA}" priority 0; }`,
  );
  await nft(
    "add",
    "rule",
    "netdev",
    "vela_dup",
    "out",
    "udp",
    "dport",
    "4455",
    "dup",
    "to",
    `"${bed.vethA}"`,
  );
}

/** Pings FAR 20 times from a; the duplicate replies ping counted. */
async function pingDuplicates(bed: Bed): Promise<{ received: number; duplicates: number }> {
  const pinged = await bed.exec(bed.a, ["ping", "-c", "20", "-i", "0.1", "-W", "1", "-q", FAR]);
  const received = Number(/(\d+) received/.exec(pinged.stdout)?.[1] ?? "0");
  const duplicates = Number(/\+(\d+) duplicates/.exec(pinged.stdout)?.[1] ?? "0");
  return { received, duplicates };
}

netnsTest(
  "duplicated underlay datagrams: a keyed circuit drops the copies as replayed-data, a clear one delivers them",
  async () => {
    await using bed = await Bed.create();
    const key = await keyFile();
    try {
      const listener = bed.vela(bed.b, ["--listen", "--key-file", key]);
      const initiator = bed.vela(bed.a, [
        "--peer",
        bed.b4,
        "--vid",
        "3",
        "--address",
        "198.18.207.1/30",
        "--key-file",
        key,
      ]);
      await bed.waitPing(bed.a, FAR, 30_000);
      await duplicateUnderlay(bed);
      const keyed = await pingDuplicates(bed);
      const far = await status(bed, bed.b, listener) as unknown as {
        circuits: { drops: { replayedData: number } }[];
      };
      assert.equal(keyed.received, 20, JSON.stringify(keyed));
      assert.equal(
        keyed.duplicates,
        0,
        `no duplicate reached the far side's device: ${JSON.stringify(keyed)}`,
      );
      assert.ok(far.circuits[0].drops.replayedData >= 20, JSON.stringify(far.circuits[0].drops));

      // The same underlay under a key-less circuit: the copies arrive, as the README says.
      await bed.stop(initiator);
      await bed.stop(listener);
      bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
      bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
      await bed.waitPing(bed.a, FAR, 30_000);
      const clear = await pingDuplicates(bed);
      assert.equal(clear.received, 20, JSON.stringify(clear));
      assert.ok(clear.duplicates >= 20, `the copies were delivered: ${JSON.stringify(clear)}`);
    } finally {
      await Deno.remove(key);
    }
  },
);
