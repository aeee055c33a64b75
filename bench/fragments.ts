/**
 * deno task bench:fragments [--rounds N] [--systems vela-tap,vela-aes]
 *
 * What carrying full-size frames over a standard underlay costs (issue 18): the same VELA systems with a
 * link MTU of 1500, once over a 1600-byte veth (every frame fits one datagram) and once over a
 * 1500-byte veth (every full-size frame goes as two fragments and is joined again), in alternating runs
 * of bench/peers.sh on this machine. Prints every run's TCP figures (both ways), the ratio fragmented /
 * whole per round, and the medians. A benchmark: the numbers are this machine's, never a test's assertion.
 */

import { parseArgs } from "node:util";
import { parseTsvLine, type Row } from "./run.ts";

const HERE = new URL(".", import.meta.url).pathname;
const { values } = parseArgs({
  options: { rounds: { type: "string" }, systems: { type: "string" } },
});
const rounds = Number(values.rounds ?? 3);
const systems = (values.systems ?? "vela-tap,vela-aes").split(",").map((s) => s.trim()).filter(Boolean);
const LINK_MTU = 1500;
const SETTINGS = [
  { name: "whole (veth 1600)", vethMtu: 1600 },
  { name: "fragments (veth 1500)", vethMtu: 1500 },
] as const;

if (Deno.uid() !== 0) {
  console.error("bench:fragments needs root (it makes network namespaces)");
  Deno.exit(1);
}

async function measure(vethMtu: number): Promise<Map<string, Row>> {
  const out = await Deno.makeTempDir({ prefix: `vela-fragments-${vethMtu}-` });
  const env = {
    PEERS: systems.join(" "),
    TUN_MTU: String(LINK_MTU),
    VETH_MTU: String(vethMtu),
    OUT: out,
    DENO: Deno.execPath(),
    VELA_DIR: new URL("..", import.meta.url).pathname.replace(/\/$/, ""),
  };
  const child = new Deno.Command("bash", {
    args: [`${HERE}peers.sh`],
    env,
    stdout: "null",
    stderr: "inherit",
  });
  const status = await child.output();
  if (status.code !== 0) throw new Error(`peers.sh exited ${status.code} (raw output in ${out})`);
  const rows = new Map<string, Row>();
  for (const line of (await Deno.readTextFile(`${out}/table.tsv`)).split("\n")) {
    if (line.trim() === "") continue;
    const row = parseTsvLine(line);
    rows.set(row.system, row);
  }
  await Deno.remove(out, { recursive: true });
  return rows;
}

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted.length % 2
    ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
};
const mbps = (x: number | null) => x === null ? "-" : x.toFixed(0);

const ratios = new Map<string, { fwd: number[]; rev: number[] }>(
  systems.map((s) => [s, { fwd: [], rev: [] }]),
);
console.log(`# bench:fragments: link MTU ${LINK_MTU}, ${rounds} rounds, systems ${systems.join(", ")}`);
console.log("round\tsetting\tsystem\ttcp_fwd_mbps\ttcp_rev_mbps");
for (let round = 1; round <= rounds; round++) {
  // Alternate which setting goes first, so that drift over the run falls on both alike.
  const order = round % 2 ? SETTINGS : [...SETTINGS].reverse();
  const results = new Map<number, Map<string, Row>>();
  for (const setting of order) {
    const rows = await measure(setting.vethMtu);
    results.set(setting.vethMtu, rows);
    for (const system of systems) {
      const row = rows.get(system);
      console.log(
        `${round}\t${setting.name}\t${system}\t${mbps(row?.tcp_fwd_mbps ?? null)}\t${
          mbps(row?.tcp_rev_mbps ?? null)
        }`,
      );
    }
  }
  for (const system of systems) {
    const whole = results.get(1600)!.get(system);
    const cut = results.get(1500)!.get(system);
    if (!whole?.tcp_fwd_mbps || !cut?.tcp_fwd_mbps || !whole.tcp_rev_mbps || !cut.tcp_rev_mbps) continue;
    ratios.get(system)!.fwd.push(cut.tcp_fwd_mbps / whole.tcp_fwd_mbps);
    ratios.get(system)!.rev.push(cut.tcp_rev_mbps / whole.tcp_rev_mbps);
  }
}
console.log("\nsystem\tfragments/whole fwd (each round; median)\trev (each round; median)");
for (const [system, r] of ratios) {
  const show = (xs: number[]) =>
    xs.length === 0 ? "-" : `${xs.map((x) => x.toFixed(2)).join(" ")}; ${median(xs).toFixed(2)}`;
  console.log(`${system}\t${show(r.fwd)}\t${show(r.rev)}`);
}
