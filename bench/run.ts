/**
 * deno task bench [--jumbo] [--systems a,b,c] [--smoke] [--install] [--underlay deno|libc] [--vela-args "..."]
 *                  [--pin]
 *
 * VELA's benchmark: runs bench/peers.sh (two network namespaces per system, iperf3 TCP forward and reverse, a
 * UDP search for the highest rate with under 1% loss, CPU seconds per GB of the tunnel processes), adds the
 * ratio VELA / best userspace peer of the same run (for an encrypted VELA row the best encrypted peer, and its
 * TCP against clear VELA's), prints one table and writes it as JSON and Markdown to
 * bench/results/ (<stamp>-mtu<N>.* and latest-mtu<N>.*). Systems whose programs are absent are skipped with
 * the reason; `--install` installs them from Debian first. `--smoke` is a one-shot check (none and vela-tap,
 * 1 s tests) that writes into a temporary directory, never into bench/results/. See bench/README.md.
 */

import { parseArgs } from "node:util";

const BENCH_DIR = new URL(".", import.meta.url).pathname;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;
const RESULTS_DIR = `${BENCH_DIR}results`;

/** What `--install` installs: every system's package and the harness's tools. */
export const INSTALL_PACKAGES = [
  "iperf3",
  "openvpn",
  "tinc",
  "fastd",
  "quicktun",
  "vtun",
  "wireguard-go",
  "wireguard-tools",
  "jq",
  "bc",
  "iputils-ping",
];

/** The harness's own tools, each with its Debian package. */
const TOOLS: [string, string][] = [
  ["ip", "iproute2"],
  ["ss", "iproute2"],
  ["iperf3", "iperf3"],
  ["jq", "jq"],
  ["bc", "bc"],
  ["ping", "iputils-ping"],
  ["flock", "util-linux"],
  ["timeout", "coreutils"],
];

type Kind = "bound" | "kernel" | "vela" | "peer";

interface System {
  name: string;
  kind: Kind;
  /** Programs it needs, each with its Debian package. */
  needs: [string, string][];
  /** Run only when named with --systems. */
  extra?: boolean;
  /** It encrypts its data (used when a row does not say its crypto, e.g. it was skipped). */
  encrypted?: boolean;
}

export const SYSTEMS: System[] = [
  { name: "none", kind: "bound", needs: [] },
  { name: "vxlan", kind: "kernel", needs: [] },
  { name: "vela-tap", kind: "vela", needs: [] },
  { name: "vela-tun", kind: "vela", needs: [] },
  { name: "vela-aes", kind: "vela", needs: [], encrypted: true },
  { name: "vela-chacha", kind: "vela", needs: [], encrypted: true },
  { name: "vtun", kind: "peer", needs: [["vtund", "vtun"]] },
  { name: "quicktun", kind: "peer", needs: [["quicktun", "quicktun"]] },
  { name: "fastd", kind: "peer", needs: [["fastd", "fastd"]] },
  { name: "tinc", kind: "peer", needs: [["tincd", "tinc"], ["openssl", "openssl"]] },
  { name: "openvpn-tun", kind: "peer", needs: [["openvpn", "openvpn"]] },
  { name: "openvpn-tap", kind: "peer", needs: [["openvpn", "openvpn"]] },
  {
    name: "wireguard-go",
    kind: "peer",
    needs: [["wireguard-go", "wireguard-go"], ["wg", "wireguard-tools"]],
    encrypted: true,
  },
  { name: "tinc-aes", kind: "peer", needs: [["tincd", "tinc"], ["openssl", "openssl"]], encrypted: true },
  { name: "fastd-salsa", kind: "peer", needs: [["fastd", "fastd"]], encrypted: true },
  { name: "openvpn-sk", kind: "peer", needs: [["openvpn", "openvpn"]], encrypted: true },
  {
    name: "openvpn-gcm",
    kind: "peer",
    needs: [["openvpn", "openvpn"], ["openssl", "openssl"]],
    encrypted: true,
  },
  { name: "n2n", kind: "peer", needs: [["edge", "n2n"], ["supernode", "n2n"]], extra: true, encrypted: true },
];

export const SMOKE_SYSTEMS = ["none", "vela-tap"];

/** One row of the table. Numbers are null where peers.sh printed "-". */
export interface Row {
  system: string;
  kind: Kind;
  status: "ok" | "fail" | "skip";
  layer: string;
  crypto: string;
  tcp_fwd_mbps: number | null;
  tcp_rev_mbps: number | null;
  retr: number | null;
  udp_max_pps: number | null;
  udp_max_loss_pct: number | null;
  udp_1pct_pps: number | null;
  /** null for a kernel row ("kern") or when nothing was measured. */
  tun_s_per_gb: number | null;
  sys_s_per_gb: number | null;
  note: string;
}

export const METRICS = ["tcp_fwd_mbps", "tcp_rev_mbps", "udp_1pct_pps", "tun_s_per_gb"] as const;
type Metric = typeof METRICS[number];

export interface Ratio {
  /** VELA's figure / the best userspace peer's (max; for tun_s_per_gb the min, lower being better). */
  ratio: number | null;
  best_peer: string | null;
  best_value: number | null;
}

/** An encrypted VELA row's TCP figure / the clear VELA row's of the same layer in the same run. */
export interface Share {
  ratio: number | null;
  clear_system: string;
  clear_value: number | null;
}

export const SHARE_METRICS = ["tcp_fwd_mbps", "tcp_rev_mbps"] as const;
type ShareMetric = typeof SHARE_METRICS[number];

export interface VelaRatios {
  system: string;
  /** Which peers the ratios are taken against: every userspace peer (a clear VELA row) or only the
   * encrypted ones (an encrypted VELA row). */
  against: "all" | "encrypted";
  ratios: Record<Metric, Ratio>;
  /** For an encrypted VELA row: its TCP against the clear VELA row ("share of clear"); null for a clear row. */
  share_of_clear: Record<ShareMetric, Share> | null;
}

export interface Result {
  stamp: string;
  mode: "full" | "smoke";
  jumbo: boolean;
  tun_mtu: number;
  header: string;
  info: Record<string, string>;
  duration_s: number;
  raw_dir: string;
  rows: Row[];
  ratios: VelaRatios[];
}

function num(text: string | undefined): number | null {
  if (text === undefined || text === "" || text === "-") return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

function kindOf(name: string): Kind {
  return SYSTEMS.find((s) => s.name === name)?.kind ?? "peer";
}

/** Parses one line of peers.sh's table.tsv. */
export function parseTsvLine(line: string): Row {
  const f = line.split("\t");
  const note = (f[10] ?? "").trim().replace(/;\s*$/, "");
  const udp = /^(\d+)\(([\d.]+)\)$/.exec(f[6] ?? "");
  const status = note.startsWith("SKIP")
    ? "skip"
    : note.startsWith("FAIL") || note === "unknown peer"
    ? "fail"
    : "ok";
  return {
    system: f[0],
    kind: kindOf(f[0]),
    status,
    layer: f[1] ?? "?",
    crypto: f[2] ?? "?",
    tcp_fwd_mbps: num(f[3]),
    tcp_rev_mbps: num(f[4]),
    retr: num(f[5]),
    udp_max_pps: udp ? Number(udp[1]) : num(f[6]),
    udp_max_loss_pct: udp ? Number(udp[2]) : null,
    udp_1pct_pps: num(f[7]),
    tun_s_per_gb: f[8] === "kern" ? null : num(f[8]),
    sys_s_per_gb: num(f[9]),
    note: note.startsWith("SKIP: ") ? note.slice(6) : note,
  };
}

const CLEAR = new Set(["none", "null"]);
const UNKNOWN = new Set(["", "?", "-"]);

/** Whether a row's data is encrypted: its crypto column, or, where the row does not say (it was skipped or
 * failed early), what SYSTEMS says of the system. */
export function isEncrypted(row: Row): boolean {
  if (!UNKNOWN.has(row.crypto)) return !CLEAR.has(row.crypto);
  return SYSTEMS.find((s) => s.name === row.system)?.encrypted ?? false;
}

function ratio(mine: number | null, other: number | null): number | null {
  return mine !== null && other ? Math.round((mine / other) * 100) / 100 : null;
}

/** For each VELA row: its figure divided by the best userspace peer's in the same run, a clear VELA row
 * against every peer, an encrypted one against the encrypted peers only; and for an encrypted row also its
 * TCP against the clear VELA row of its layer (vela-tap for L2, vela-tun for L3). */
export function computeRatios(rows: Row[]): VelaRatios[] {
  const allPeers = rows.filter((r) => r.kind === "peer" && r.status === "ok");
  return rows.filter((r) => r.kind === "vela").map((vela) => {
    const encrypted = isEncrypted(vela);
    const peers = encrypted ? allPeers.filter(isEncrypted) : allPeers;
    const ratios = {} as Record<Metric, Ratio>;
    for (const metric of METRICS) {
      const lowerIsBetter = metric === "tun_s_per_gb";
      let best: Row | null = null;
      for (const peer of peers) {
        const value = peer[metric];
        if (value === null || (lowerIsBetter && value <= 0)) continue;
        const bestValue = best?.[metric] ?? null;
        if (bestValue === null || (lowerIsBetter ? value < bestValue : value > bestValue)) best = peer;
      }
      const bestValue = best?.[metric] ?? null;
      const mine = vela.status === "ok" ? vela[metric] : null;
      ratios[metric] = {
        ratio: ratio(mine, bestValue),
        best_peer: best?.system ?? null,
        best_value: bestValue,
      };
    }
    let share: Record<ShareMetric, Share> | null = null;
    if (encrypted) {
      const clearName = vela.layer === "L3" ? "vela-tun" : "vela-tap";
      const clear = rows.find((r) => r.system === clearName && r.status === "ok" && !isEncrypted(r));
      share = {} as Record<ShareMetric, Share>;
      for (const metric of SHARE_METRICS) {
        const clearValue = clear?.[metric] ?? null;
        share[metric] = {
          ratio: ratio(vela.status === "ok" ? vela[metric] : null, clearValue),
          clear_system: clearName,
          clear_value: clearValue,
        };
      }
    }
    return { system: vela.system, against: encrypted ? "encrypted" : "all", ratios, share_of_clear: share };
  });
}

/** Parses the "# peers.sh STAMP key=value ..." header line. */
export function parseHeader(line: string): Record<string, string> {
  const info: Record<string, string> = {};
  for (const match of line.matchAll(/(\S+)=(\S+)/g)) info[match[1]] = match[2];
  return info;
}

// ------------------------------------------------------------------------------------------ the table ---

const COLUMNS = [
  "system",
  "lyr",
  "crypto",
  "tcp_fwd",
  "tcp_rev",
  "retr",
  "udp_max_pps(loss%)",
  "udp_1%_pps",
  "tun_s/GB",
  "sys_s/GB",
  "note",
];

function fmt(value: number | null, digits = 0): string {
  if (value === null) return "-";
  return digits === 0 ? String(Math.round(value)) : value.toFixed(digits);
}

function ratioCell(r: Ratio): string {
  if (r.best_peer === null) return "- (no peer)";
  return r.ratio === null ? `- (${r.best_peer})` : `${r.ratio.toFixed(2)}x(${r.best_peer})`;
}

function shareCell(s: Share): string {
  if (s.clear_value === null) return `- (no ${s.clear_system})`;
  return s.ratio === null ? `- (${s.clear_system})` : `${s.ratio.toFixed(2)}x(${s.clear_system})`;
}

/** The table as rows of cells: systems, then one "VELA / best peer" row per VELA row, and for an encrypted
 * VELA row one more, its TCP against the clear VELA row ("share of clear"). */
export function tableCells(result: Result): string[][] {
  const cells = result.rows.map((r) => {
    const ran = r.status !== "skip";
    return [
      r.system,
      ran ? r.layer : "",
      ran ? r.crypto : "",
      fmt(r.tcp_fwd_mbps),
      fmt(r.tcp_rev_mbps),
      fmt(r.retr),
      r.udp_max_pps === null ? "-" : `${r.udp_max_pps}(${fmt(r.udp_max_loss_pct, 1)})`,
      fmt(r.udp_1pct_pps),
      r.kind === "bound" || r.kind === "kernel" ? (ran && r.status === "ok" ? "kern" : "-") : fmt(
        r.tun_s_per_gb,
        2,
      ),
      fmt(r.sys_s_per_gb, 2),
      r.status === "skip" ? `skipped: ${r.note}` : r.note,
    ];
  });
  for (const { system, against, ratios, share_of_clear: share } of result.ratios) {
    cells.push([
      `${system}/best`,
      "",
      "ratio",
      ratioCell(ratios.tcp_fwd_mbps),
      ratioCell(ratios.tcp_rev_mbps),
      "",
      "",
      ratioCell(ratios.udp_1pct_pps),
      ratioCell(ratios.tun_s_per_gb),
      "",
      `VELA / best ${against === "encrypted" ? "encrypted " : ""}userspace peer of this run ` +
      "(tun_s/GB: lower is better)",
    ]);
    if (share) {
      cells.push([
        `${system}/clear`,
        "",
        "ratio",
        shareCell(share.tcp_fwd_mbps),
        shareCell(share.tcp_rev_mbps),
        "",
        "",
        "",
        "",
        "",
        "encrypted VELA's TCP / clear VELA's of this run (share of clear)",
      ]);
    }
  }
  return cells;
}

export function textTable(result: Result): string {
  const cells = [COLUMNS, ...tableCells(result)];
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const right = (i: number) => i >= 3 && i <= 9;
  return cells.map((row) =>
    row.map((cell, i) =>
      i === row.length - 1 ? cell : right(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i])
    ).join("  ").trimEnd()
  ).join("\n");
}

function mdEscape(text: string): string {
  return text.replace(/([\\|*`<>\[\]])/g, "\\$1");
}

export function markdown(result: Result): string {
  const i = result.info;
  const head = COLUMNS.map((c) => mdEscape(c));
  const lines = [
    `# VELA benchmark, ${result.stamp}, tunnel MTU ${result.tun_mtu}${result.jumbo ? " (jumbo)" : ""}`,
    "",
    `Host ${i.host ?? "?"}, kernel ${i.kernel ?? "?"}, ${i.cpus ?? "?"} CPUs; veth MTU ${
      i.veth_mtu ?? "?"
    }, tunnel MTU ${i.tun_mtu ?? result.tun_mtu}, UDP payload ${i.udp_len ?? "?"} bytes; TCP ${
      i.T ?? "?"
    }, UDP steps ${i.UDP_T ?? "?"}; congestion control ${i.tcp_cc ?? "?"}; VELA ${i.vela ?? "?"}, VELA_ARGS ${
      i.vela_args ?? "none"
    }${i.udp_args ? `, UDP_ARGS ${i.udp_args.replaceAll("_", " ")}` : ""}${
      i.pin === "1" ? "; each namespace pinned to its own core (--pin)" : ""
    }; mode ${result.mode}; took ${Math.round(result.duration_s)} s. Made by \`deno task bench${
      result.jumbo ? " --jumbo" : ""
    }${
      i.pin === "1" ? " --pin" : ""
    }\` (bench/run.ts running bench/peers.sh); columns explained in bench/README.md.`,
    "",
    `| ${head.join(" | ")} |`,
    `| ${COLUMNS.map((_, n) => (n >= 3 && n <= 9 ? "---:" : "---")).join(" | ")} |`,
    ...tableCells(result).map((row) => `| ${row.map((c) => mdEscape(c) || " ").join(" | ")} |`),
    "",
    "`x/best` rows: VELA's figure divided by the best userspace peer's of this run (the highest tcp_fwd, " +
    "tcp_rev and udp_1%_pps; the lowest tun_s/GB), that peer in brackets; for an encrypted VELA row the best " +
    "encrypted peer's (crypto not none/null). Above 1 VELA is ahead, except for tun_s/GB, where below 1 is " +
    "better. `x/clear` rows: an encrypted VELA row's TCP divided by the clear VELA row's of this run.",
    "",
  ];
  return lines.join("\n");
}

// ------------------------------------------------------------------------------------------ helpers ---

async function hasProgram(name: string): Promise<boolean> {
  const out = await new Deno.Command("sh", { args: ["-c", `command -v '${name}'`], stdout: "null" }).output();
  return out.success;
}

/** Runs a command with its stdout and stderr going to our stderr (our stdout is for the table). */
async function runToStderr(cmd: string, args: string[], env: Record<string, string> = {}): Promise<number> {
  const child = new Deno.Command(cmd, { args, env, stdin: "null", stdout: "piped", stderr: "inherit" })
    .spawn();
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  };
  const onInt = forward("SIGINT");
  const onTerm = forward("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  try {
    await child.stdout.pipeTo(Deno.stderr.writable, { preventClose: true });
    return (await child.status).code;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
}

function stampNow(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${
    p(d.getSeconds())
  }`;
}

/** NAMES joined by commas, in lines of at most WIDTH characters, each indented by INDENT spaces. */
function wrapList(names: string[], indent: number, width: number): string {
  const lines: string[] = [];
  let line = "";
  for (const name of names) {
    const next = line === "" ? name : `${line},${name}`;
    if (indent + next.length + 1 > width && line !== "") {
      lines.push(`${line},`);
      line = name;
    } else line = next;
  }
  lines.push(line);
  return lines.map((l) => " ".repeat(indent) + l).join("\n");
}

const USAGE = `Usage: deno task bench [--jumbo] [--systems a,b,c] [--smoke] [--install]
                       [--underlay deno|libc] [--vela-args "..."] [--pin]

  --jumbo            veth MTU 9000 and tunnel MTU 8900 (default 1500 and 1400)
  --systems a,b,c    run these systems only (default:
${wrapList(SYSTEMS.filter((s) => !s.extra).map((s) => s.name), 21, 110)};
                     also: ${SYSTEMS.filter((s) => s.extra).map((s) => s.name).join(",")})
  --smoke            one-shot check: none and vela-tap, 1 s tests; results go to a temporary directory
  --install          apt-get update and apt-get install -y ${INSTALL_PACKAGES.join(" ")}
  --underlay MODE    pass --underlay MODE to both VELA daemons (a datapath to compare)
  --vela-args "..."  more arguments for both VELA daemons
  --pin              every process of namespace a on CPU 0, of b on CPU 1 (a diagnosis: by default the
                     scheduler places them, as in the committed tables)
Needs root (network namespaces). Results: bench/results/<stamp>-mtu<N>.{json,md} and latest-mtu<N>.{json,md}.
`;

/**
 * `--vela-args "--no-offload"` as `--vela-args=--no-offload`: parseArgs refuses a separate value that starts
 * with "-" ("argument is ambiguous"), and VELA's arguments always do.
 */
export function joinVelaArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--vela-args" && i + 1 < argv.length) out.push(`--vela-args=${argv[++i]}`);
    else out.push(argv[i]);
  }
  return out;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: joinVelaArgs(argv),
      strict: true,
      allowPositionals: false,
      options: {
        jumbo: { type: "boolean" },
        systems: { type: "string" },
        smoke: { type: "boolean" },
        install: { type: "boolean" },
        underlay: { type: "string" },
        "vela-args": { type: "string" },
        pin: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    console.error(`bench: ${(error as Error).message.split("\n")[0]}\n\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  const smoke = v.smoke ?? false;
  const jumbo = v.jumbo ?? false;
  if (smoke && v.systems !== undefined) {
    console.error("bench: --smoke runs none and vela-tap; it does not take --systems");
    return 2;
  }
  if (v.underlay !== undefined && !/^[a-z0-9-]+$/.test(v.underlay)) {
    console.error(`bench: --underlay takes a datapath name such as deno or libc, not "${v.underlay}"`);
    return 2;
  }
  const names = smoke
    ? SMOKE_SYSTEMS
    : v.systems !== undefined
    ? v.systems.split(",").map((s) => s.trim()).filter(Boolean)
    : SYSTEMS.filter((s) => !s.extra).map((s) => s.name);
  const unknown = names.filter((n) => !SYSTEMS.some((s) => s.name === n));
  if (unknown.length > 0 || names.length === 0) {
    console.error(`bench: unknown system ${unknown.join(", ") || "(none given)"}\n\n${USAGE}`);
    return 2;
  }
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) {
    console.error("bench: needs root on Linux (it creates network namespaces); run it as root");
    return 1;
  }

  if (v.install) {
    console.error(`bench: installing ${INSTALL_PACKAGES.join(" ")}`);
    const env = { DEBIAN_FRONTEND: "noninteractive" };
    if (await runToStderr("apt-get", ["update"], env) !== 0) {
      console.error("bench: apt-get update failed");
      return 1;
    }
    if (await runToStderr("apt-get", ["install", "-y", ...INSTALL_PACKAGES], env) !== 0) {
      console.error("bench: apt-get install failed (see above); continuing with what is installed");
    }
  }
  const missingTools: string[] = [];
  for (const [program, pkg] of TOOLS) {
    if (!(await hasProgram(program))) missingTools.push(`${program} (${pkg})`);
  }
  if (missingTools.length > 0) {
    console.error(
      `bench: the harness needs ${missingTools.join(", ")}: apt-get install ${
        [...new Set(missingTools.map((m) => m.replace(/.*\((.*)\)/, "$1")))].join(" ")
      }, or run with --install`,
    );
    return 1;
  }
  const skipped = new Map<string, string>();
  for (const name of names) {
    const system = SYSTEMS.find((s) => s.name === name)!;
    const missing: string[] = [];
    for (const [program, pkg] of system.needs) {
      if (!(await hasProgram(program))) missing.push(`${program} (apt-get install ${pkg})`);
    }
    if (missing.length > 0) skipped.set(name, `not installed: ${missing.join(", ")}`);
  }
  if (skipped.size > 0) {
    console.error("bench: missing programs; these systems are skipped (run with --install to install them):");
    for (const [name, reason] of skipped) console.error(`  ${name}: ${reason}`);
  }

  const stamp = stampNow();
  const tunMtu = jumbo ? 8900 : 1400;
  const outDir = smoke ? await Deno.makeTempDir({ prefix: "vela-bench-smoke-" }) : RESULTS_DIR;
  const rawDir = smoke ? `${outDir}/raw` : `${RESULTS_DIR}/tmp/${stamp}-mtu${tunMtu}`;
  const velaArgs = [v.underlay !== undefined ? `--underlay ${v.underlay}` : "", v["vela-args"] ?? ""]
    .filter(Boolean).join(" ");
  const run = names.filter((n) => !skipped.has(n));
  const started = Date.now();
  let code = 0;
  if (run.length > 0) {
    const env: Record<string, string> = {
      PEERS: run.join(" "),
      JUMBO: jumbo ? "1" : "0",
      SMOKE: smoke ? "1" : "0",
      OUT: rawDir,
      VELA_DIR: PROJECT_DIR.replace(/\/$/, ""),
      VELA_ARGS: velaArgs,
      DENO: Deno.execPath(),
      PIN: v.pin ? "1" : "0",
    };
    console.error(
      `bench: bench/peers.sh with ${Object.entries(env).map(([k, x]) => `${k}="${x}"`).join(" ")}`,
    );
    code = await runToStderr("bash", [`${BENCH_DIR}peers.sh`], env);
    if (code !== 0) console.error(`bench: peers.sh exited ${code}`);
  }
  const duration = (Date.now() - started) / 1000;

  let header = "";
  const measured = new Map<string, Row>();
  try {
    header = (await Deno.readTextFile(`${rawDir}/table.txt`)).split("\n")[0] ?? "";
    const tsv = await Deno.readTextFile(`${rawDir}/table.tsv`);
    for (const line of tsv.split("\n").filter((l) => l.trim() !== "")) {
      const row = parseTsvLine(line);
      measured.set(row.system, row);
    }
  } catch (error) {
    if (run.length > 0) {
      console.error(`bench: no table from peers.sh in ${rawDir}: ${(error as Error).message}`);
      return 1;
    }
  }
  const rows: Row[] = names.map((name) =>
    measured.get(name) ?? {
      system: name,
      kind: kindOf(name),
      status: skipped.has(name) ? "skip" : "fail",
      layer: "",
      crypto: "",
      tcp_fwd_mbps: null,
      tcp_rev_mbps: null,
      retr: null,
      udp_max_pps: null,
      udp_max_loss_pct: null,
      udp_1pct_pps: null,
      tun_s_per_gb: null,
      sys_s_per_gb: null,
      note: skipped.get(name) ?? "not measured (peers.sh stopped early)",
    }
  );
  const result: Result = {
    stamp,
    mode: smoke ? "smoke" : "full",
    jumbo,
    tun_mtu: tunMtu,
    header,
    info: { ...parseHeader(header), vela_args: velaArgs || "none" },
    duration_s: Math.round(duration),
    raw_dir: rawDir,
    rows,
    ratios: computeRatios(rows),
  };

  console.log(header);
  console.log(textTable(result));

  if (code !== 0) {
    console.error(
      `bench: peers.sh did not finish (exit ${code}); no result files written (raw data: ${rawDir})`,
    );
    return 1;
  }
  const base = `${outDir}/${stamp}-mtu${tunMtu}`;
  const files = [`${base}.json`, `${base}.md`];
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(`${base}.json`, JSON.stringify(result, null, 2) + "\n");
  await Deno.writeTextFile(`${base}.md`, markdown(result));
  if (!smoke && v.systems === undefined) { // a subset run does not replace the latest full table
    for (const ext of ["json", "md"]) {
      await Deno.copyFile(`${base}.${ext}`, `${outDir}/latest-mtu${tunMtu}.${ext}`);
      files.push(`${outDir}/latest-mtu${tunMtu}.${ext}`);
    }
  }
  // The files live in the project, whose `deno fmt --check` covers .md and .json.
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", ...files],
    stdout: "null",
    stderr: "null",
  })
    .output();
  console.log(`\nwrote ${files.join(" ")}\nraw data (logs, iperf3 JSON): ${rawDir}`);

  if (smoke) {
    const vela = rows.find((r) => r.system === "vela-tap");
    const bad = rows.filter((r) => r.status !== "ok").map((r) => `${r.system}: ${r.note}`);
    if (!vela || !(vela.tcp_fwd_mbps! > 0) || bad.length > 0) {
      console.error(`bench: smoke failed: ${bad.join("; ") || "vela-tap moved no TCP data"}`);
      return 1;
    }
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

export { main };
