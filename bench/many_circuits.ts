/**
 * deno task bench:circuits [--circuits N] [--rounds N] [--key]
 *
 * How fast many circuits on one pair come up (issue 17: 255 circuits from one config up in under 15 s,
 * and back within 15 s after a listener restart). Two namespaces (testbed/netns.ts), a listener in b with
 * --max-circuits-per-peer N, an initiator in a whose config file holds N circuits to b (vids 1..N, tap,
 * no addresses: each end derives an IPv6 pair), both keyed with --key. Each round times, from the moment
 * each process was started or stopped:
 *   - up:        the initiator started until `vela status` shows all N established on both ends;
 *   - restart:   the listener stopped (SIGTERM: its CREQs tell the initiator at once) and started again
 *                until all N are established again;
 *   - crash:     the listener killed (SIGKILL: no CREQ; the initiator finds out by its dead-peer timer,
 *                6 to 8 s) and started again until all N are established again.
 * Prints every round and the median against the 15 s target. Times are wall-clock seconds on this
 * machine: a benchmark, never a test's assertion.
 */

import { parseArgs } from "node:util";
import { Bed, type BedProcess, namespaceSupport } from "../testbed/netns.ts";

const TARGET_S = 15;
const LIMIT_MS = 120_000;

const { values } = parseArgs({
  options: { circuits: { type: "string" }, rounds: { type: "string" }, key: { type: "boolean" } },
});
const circuits = Number(values.circuits ?? 255);
const rounds = Number(values.rounds ?? 3);
if (!Number.isInteger(circuits) || circuits < 1 || circuits > 255) {
  throw new Error("--circuits is 1 to 255");
}

const support = await namespaceSupport();
if (!support.ok) {
  console.error(`bench:circuits needs network namespaces: ${support.reason}`);
  Deno.exit(1);
}

async function established(bed: Bed, ns: string, daemon: BedProcess): Promise<number> {
  const shown = await bed.velaCommand(ns, ["status", "--json", "--control", daemon.control!]);
  if (shown.code !== 0) return 0;
  const status = JSON.parse(shown.stdout) as { circuits: { state: string }[] };
  return status.circuits.filter((c) => c.state === "established").length;
}

/**
 * Seconds from `since` until all circuits are established on both ends (polling every 200 ms): the
 * listener's count, so that an initiator that has not yet noticed a killed listener does not count.
 */
async function allUp(bed: Bed, initiator: BedProcess, listener: BedProcess, since: number): Promise<number> {
  for (;;) {
    if (
      (await established(bed, bed.b, listener)) === circuits &&
      (await established(bed, bed.a, initiator)) === circuits
    ) return (performance.now() - since) / 1000;
    if (performance.now() - since > LIMIT_MS) {
      throw new Error(`Not all ${circuits} circuits up within ${LIMIT_MS / 1000} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function listening(bed: Bed): Promise<void> {
  await bed.until(
    async () => (await bed.exec(bed.b, ["ss", "-lun", "sport = :4455"])).stdout.includes("4455"),
    "the listener's UDP port",
  );
}

async function round(): Promise<{ up: number; restart: number; crash: number }> {
  await using bed = await Bed.create();
  const dir = await Deno.makeTempDir({ prefix: "vela-circuits-" });
  try {
    const keyArgs: string[] = [];
    const config: Record<string, unknown> = {
      circuits: Array.from({ length: circuits }, (_, i) => ({ peer: bed.b4, vid: i + 1 })),
    };
    if (values.key) {
      const made = await bed.velaCommand(bed.a, ["genkey"]);
      await Deno.writeTextFile(`${dir}/key`, made.stdout, { mode: 0o600 });
      keyArgs.push("--key-file", `${dir}/key`);
      config.key_file = `${dir}/key`;
    }
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    const listenArgs = [
      "--listen",
      ...(values.key ? [] : ["--allow", "198.18.0.0/15"]),
      ...keyArgs,
      "--max-circuits-per-peer",
      String(circuits),
    ];
    let listener = bed.vela(bed.b, listenArgs);
    await listening(bed);
    let since = performance.now();
    const initiator = bed.vela(bed.a, ["--config", `${dir}/config.json`]);
    const up = await allUp(bed, initiator, listener, since);

    since = performance.now();
    await bed.stop(listener, "SIGTERM");
    listener = bed.vela(bed.b, listenArgs);
    const restart = await allUp(bed, initiator, listener, since);

    since = performance.now();
    await bed.stop(listener, "SIGKILL");
    listener = bed.vela(bed.b, listenArgs);
    const crash = await allUp(bed, initiator, listener, since);
    return { up, restart, crash };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const results: { up: number; restart: number; crash: number }[] = [];
const commit = await new Deno.Command("git", { args: ["describe", "--always", "--dirty"] }).output();
console.log(
  `bench:circuits: ${circuits} circuits on one pair, ${values.key ? "keyed" : "key-less (--allow)"}, ` +
    `vela=${new TextDecoder().decode(commit.stdout).trim()}, ${new Date().toISOString()}`,
);
console.log("| round | up (s) | restart, SIGTERM (s) | restart, SIGKILL (s) |");
console.log("| ----: | -----: | -------------------: | -------------------: |");
for (let i = 1; i <= rounds; i++) {
  const r = await round();
  results.push(r);
  console.log(`| ${i} | ${r.up.toFixed(1)} | ${r.restart.toFixed(1)} | ${r.crash.toFixed(1)} |`);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const verdict = (xs: number[]) => {
  const m = median(xs);
  const met = m < TARGET_S && xs.every((x) => x < TARGET_S / 0.9);
  return `${m.toFixed(1)} s (${met ? "met" : "NOT met"}: target under ${TARGET_S} s)`;
};
console.log(`median up ${verdict(results.map((r) => r.up))}`);
console.log(`median restart (SIGTERM) ${verdict(results.map((r) => r.restart))}`);
console.log(`median restart (SIGKILL) ${verdict(results.map((r) => r.crash))}`);
