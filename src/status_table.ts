/**
 * `vela status`, `vela status IFNAME` and `vela top` for people: a table that fits 120 columns, one
 * circuit in full, and a live view with rates from two readings (the JSON form is the daemon's own).
 */

import type { CircuitStatus, DaemonStatus } from "./daemon/daemon.ts";

/** The widest a table may be. */
export const TABLE_WIDTH = 120;

/** 1536 → "1.5 KiB". */
export function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  // Go up a unit while the value would print as 1024.0 or more.
  while (value >= 1023.95 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** 1234567 → "1.2M", in powers of 1000 (rates: bit/s, packets/s). */
export function humanRate(perSecond: number): string {
  const units = ["", "k", "M", "G", "T"];
  let value = perSecond, unit = 0;
  while (value >= 999.95 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? String(Math.round(perSecond)) : `${value.toFixed(1)}${units[unit]}`;
}

/** 3725 → "1h02m05s". */
export function humanDuration(seconds: number | null): string {
  if (seconds === null) return "-";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}h${pad(m)}m${pad(s)}s` : m > 0 ? `${m}m${pad(s)}s` : `${s}s`;
}

/** A round trip, rounded: "0.4 ms" below 10 ms, "12 ms" above, "-" before one was measured. */
export function humanRtt(ms: number | null): string {
  if (ms === null) return "-";
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** An endpoint: "198.18.0.2:4455", "[fd00::2]:4455". */
export function endpoint(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A circuit's drops by reason, those above zero. */
function dropReasons(c: CircuitStatus): [string, number][] {
  const reasons: [string, number][] = [
    ["send-failed", c.drops.sendFailed],
    ["device-refused", c.drops.deviceRefused],
    ["bad-tag", c.drops.badTag],
    ["replayed-data", c.drops.replayedData],
    ["too-old", c.drops.tooOld],
    ["no-key", c.drops.noKey],
    ["key-exhausted", c.drops.keyExhausted],
    ["filtered", c.drops.filtered ?? 0],
    ["reassembly", c.drops.reassembly ?? 0],
    ["bad-compression", c.drops.badCompression ?? 0],
    ["dictionary-missing", c.drops.dictionaryMissing ?? 0],
  ];
  return reasons.filter(([, n]) => n > 0);
}

function dropTotal(c: CircuitStatus): number {
  return dropReasons(c).reduce((sum, [, n]) => sum + n, 0);
}

/** A state with the role's initial: "established (i)", "lost (r)". */
function stateCell(c: CircuitStatus): string {
  return `${c.state} (${c.role === "initiator" ? "i" : "r"})`;
}

/** The peer as named, with the endpoint when the name is not the address. */
function peerCell(c: CircuitStatus): string {
  const at = endpoint(c.address, c.port);
  return c.peer === c.address ? at : `${c.peer} ${at}`;
}

/**
 * Lays out a table within TABLE_WIDTH: columns two spaces apart; when too wide, the columns listed in
 * `shrinkable` are cut (with "~" at the cut), the widest first.
 */
export function layoutTable(header: string[], rows: string[][], shrinkable: number[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
  while (total() > TABLE_WIDTH) {
    const widest = shrinkable.reduce((best, i) => widths[i] > widths[best] ? i : best, shrinkable[0]);
    if (widths[widest] <= header[widest].length + 2) break;
    widths[widest]--;
  }
  const cell = (text: string, i: number) =>
    text.length > widths[i] ? `${text.slice(0, widths[i] - 1)}~` : text.padEnd(widths[i]);
  return [header, ...rows].map((cells) => cells.map(cell).join("  ").trimEnd());
}

/** The table: one row per circuit, then the drops by reason. */
export function renderStatus(status: DaemonStatus): string {
  const header = ["IFACE", "VID", "PEER", "STATE", "CIPHER", "UPTIME", "RTT", "TX", "RX", "DROPS"];
  const rows = status.circuits.map((c) => [
    c.ifname ?? "-",
    String(c.vid),
    peerCell(c),
    stateCell(c),
    c.cipher,
    humanDuration(c.uptimeSeconds),
    humanRtt(c.rttMs),
    humanBytes(c.txBytes),
    humanBytes(c.rxBytes),
    String(dropTotal(c)),
  ]);
  const drops = Object.entries(status.drops).filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`).join(", ");
  const where = `${status.listen ? "listening" : "running"} on UDP port ${status.port}`;
  const out = [`VELA ${where}, ${status.circuits.length} circuit${status.circuits.length === 1 ? "" : "s"}`];
  if (rows.length > 0) out.push(...layoutTable(header, rows, [2]));
  out.push(`Dropped on the way in: ${drops || "none"}`);
  return out.join("\n");
}

/** The circuit an operator names: by interface name, or "vid@peer"; undefined when none matches. */
export function findCircuit(status: DaemonStatus, name: string): CircuitStatus | undefined {
  return status.circuits.find((c) => c.ifname === name) ??
    status.circuits.find((c) => `${c.vid}@${c.peer}` === name || `${c.vid}@${c.address}` === name);
}

/** One circuit in full, a line per fact. */
export function renderCircuit(c: CircuitStatus): string {
  const lines: [string, string][] = [
    ["circuit", `${c.ifname ?? "(no interface)"}, vid ${c.vid}, ${c.role}`],
    [
      "peer",
      c.peer === c.address ? endpoint(c.address, c.port) : `${c.peer} (${endpoint(c.address, c.port)})`,
    ],
    ["state", c.state],
  ];
  if (c.state === "established") lines.push(["up for", humanDuration(c.uptimeSeconds)]);
  else if (c.downSinceSeconds !== null) {
    lines.push(["down since", `${humanDuration(c.downSinceSeconds)} ago`]);
  }
  if (c.refusal !== null) lines.push(["refused", c.refusal]);
  lines.push([
    "last heard",
    c.lastHeardSeconds === null ? "never" : `${humanDuration(c.lastHeardSeconds)} ago`,
  ]);
  lines.push(["mode", c.mode], ["MTU", String(c.mtu)]);
  if (c.pathMtu !== undefined) lines.push(["path MTU", String(c.pathMtu)]);
  const derived = new Set(c.derivedAddresses);
  lines.push([
    "addresses",
    c.addresses.length === 0
      ? "none"
      : c.addresses.map((a) => derived.has(a) ? `${a} (derived)` : a).join(", "),
  ]);
  lines.push(["cipher", c.cipher]);
  if (c.keyAgeSeconds !== null) {
    lines.push([
      "keys",
      `made ${humanDuration(c.keyAgeSeconds)} ago (handshake ${c.handshake}), ${c.rotations} rotation${
        c.rotations === 1 ? "" : "s"
      }`,
    ]);
  }
  lines.push(["RTT", humanRtt(c.rttMs)]);
  lines.push(["sent", `${c.txPackets} packets, ${humanBytes(c.txBytes)}`]);
  lines.push(["received", `${c.rxPackets} packets, ${humanBytes(c.rxBytes)}`]);
  if (c.compression !== "off") {
    const ratio = c.compressIn
      ? ` (${((c.compressOut ?? 0) / c.compressIn * 100).toFixed(1)}% of the bytes)`
      : "";
    lines.push([
      "compression",
      `${c.compression}: ${humanBytes(c.compressIn ?? 0)} sent as ${
        humanBytes(c.compressOut ?? 0)
      }${ratio}, ${c.sentUncompressed ?? 0} frames uncompressed, ${c.compressionPauses ?? 0} pauses${
        c.compression === "dictionary"
          ? `; dictionary ${c.dictionaryEpoch || "none yet"} (${c.dictionariesUsed ?? 0} used)`
          : ""
      }`,
    ]);
  } else lines.push(["compression", "off"]);
  if (c.fragmented || c.reassembled) {
    lines.push(["fragments", `${c.fragmented ?? 0} frames sent in fragments, ${c.reassembled ?? 0} joined`]);
  }
  const drops = dropReasons(c).map(([r, n]) => `${r} ${n}`).join(", ");
  lines.push(["drops", drops || "none"]);
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

/** A circuit's identity across two readings. */
function circuitId(c: CircuitStatus): string {
  return `${c.address}|${c.port}|${c.vid}`;
}

/**
 * The live view: per circuit, rates from the counters' change between two readings `seconds` apart
 * (no earlier reading: no rates yet), drops, RTT and when the peer was last heard.
 */
export function renderTop(
  current: DaemonStatus,
  previous: DaemonStatus | undefined,
  seconds: number,
  title: string,
): string {
  const before = new Map((previous?.circuits ?? []).map((c) => [circuitId(c), c]));
  const header = [
    "IFACE",
    "PEER",
    "STATE",
    "RX bit/s",
    "TX bit/s",
    "RX pkt/s",
    "TX pkt/s",
    "DROPS",
    "RTT",
    "HEARD",
  ];
  const rows = current.circuits.map((c) => {
    const old = before.get(circuitId(c));
    const rate = (now: number, then: number | undefined, scale: number) =>
      old === undefined || then === undefined || seconds <= 0
        ? "-"
        : humanRate(Math.max(0, now - then) * scale / seconds);
    return [
      c.ifname ?? "-",
      peerCell(c),
      stateCell(c),
      rate(c.rxBytes, old?.rxBytes, 8),
      rate(c.txBytes, old?.txBytes, 8),
      rate(c.rxPackets, old?.rxPackets, 1),
      rate(c.txPackets, old?.txPackets, 1),
      String(dropTotal(c)),
      humanRtt(c.rttMs),
      c.lastHeardSeconds === null ? "never" : `${humanDuration(c.lastHeardSeconds)} ago`,
    ];
  });
  const out = [title];
  if (rows.length === 0) out.push("No circuits");
  else out.push(...layoutTable(header, rows, [1]));
  return out.join("\n");
}
