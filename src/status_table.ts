/** `vela status` as a table for people (the JSON form is the daemon's own). */

import type { DaemonStatus } from "./daemon/daemon.ts";

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

/** 3725 → "1h02m05s". */
export function humanDuration(seconds: number | null): string {
  if (seconds === null) return "-";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}h${pad(m)}m${pad(s)}s` : m > 0 ? `${m}m${pad(s)}s` : `${s}s`;
}

/** A circuit's drops: send and device always, the AEAD stage's reasons when there are any. */
function dropsCell(c: DaemonStatus["circuits"][number]): string {
  const parts = [`send ${c.drops.sendFailed}`, `device ${c.drops.deviceRefused}`];
  const sealed: [string, number][] = [
    ["bad-tag", c.drops.badTag],
    ["replayed-data", c.drops.replayedData],
    ["too-old", c.drops.tooOld],
    ["no-key", c.drops.noKey],
    ["key-exhausted", c.drops.keyExhausted],
    ["filtered", c.drops.filtered ?? 0],
    ["reassembly", c.drops.reassembly ?? 0],
  ];
  for (const [reason, count] of sealed) if (count > 0) parts.push(`${reason} ${count}`);
  return parts.join(", ");
}

/** The table: one row per circuit, then the drops by reason. */
export function renderStatus(status: DaemonStatus): string {
  const header = ["PEER", "ADDRESS", "VID", "IFACE", "STATE", "CIPHER", "UPTIME", "RTT", "TX", "RX", "DROPS"];
  const rows = status.circuits.map((c) => [
    c.peer,
    `${c.address}:${c.port}`,
    String(c.vid),
    c.ifname ?? "-",
    `${c.state} (${c.role})`,
    c.keyAgeSeconds === null ? c.cipher : `${c.cipher} (keys ${humanDuration(c.keyAgeSeconds)})`,
    humanDuration(c.uptimeSeconds),
    c.rttMs === null ? "-" : `${c.rttMs.toFixed(1)} ms`,
    `${c.txPackets} pkts / ${humanBytes(c.txBytes)}`,
    `${c.rxPackets} pkts / ${humanBytes(c.rxBytes)}`,
    dropsCell(c),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd();
  const drops = Object.entries(status.drops).filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`).join(", ");
  const where = `${status.listen ? "listening" : "running"} on UDP port ${status.port}`;
  const out = [`VELA ${where}, ${status.circuits.length} circuit${status.circuits.length === 1 ? "" : "s"}`];
  if (rows.length > 0) out.push(line(header), ...rows.map(line));
  out.push(`Dropped on the way in: ${drops || "none"}`);
  return out.join("\n");
}
