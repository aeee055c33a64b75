/**
 * The control protocol, in the spirit of VNET's: one command per line, one reply per command.
 *
 *   STATUS?                       the circuits with state and counters
 *   DEVICES?                      the interfaces VELA made
 *   VERSION?                      the daemon's version
 *   CONFIG?                       the running configuration as a config file (JSON)
 *   CONNECT <peer> <vid> [mode=tap|tun] [address=CIDR]... [mtu=N] [ifname=NAME] [bridge=BR]
 *           [far-bridge=BR] [port=P] [family=4|6] [cipher=C] [compress=on|off|with-encryption]
 *   CLOSE <peer> <vid>
 *
 * Any command may end with the word JSON. A text reply is "OK <n> <what>" followed by n lines, or
 * "OK <text>"; a JSON reply is "OK " and one line of JSON. A refusal is "NOK <reason>". CONNECT and CLOSE
 * change the daemon; the rest only read it (a remote client with a read-only key may send only those).
 * This module is pure: parsing and formatting only.
 */

import { type CircuitArgs, UsageError, validateCircuit } from "../cli.ts";
import type { CircuitStatus, DaemonStatus } from "../daemon/daemon.ts";
import { formatCidr } from "../ip.ts";
import { isVid, MAX_VID, MIN_VID } from "../circuit_rules.ts";

/** Longest command line the daemon reads; a longer one is refused and the connection closed. */
export const MAX_COMMAND_LENGTH = 4096;

export type ControlRequest =
  | { command: "STATUS?"; json: boolean }
  | { command: "DEVICES?"; json: boolean }
  | { command: "VERSION?"; json: boolean }
  | { command: "CONFIG?"; json: boolean }
  | { command: "CONNECT"; json: boolean; circuit: CircuitArgs; port?: number }
  | { command: "CLOSE"; json: boolean; peer: string; vid: number };

/** A request, or the reason to answer NOK. Never throws. */
export function parseRequest(line: string): ControlRequest | { error: string } {
  const words = line.trim().split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) return { error: "empty command" };
  const json = words[words.length - 1].toUpperCase() === "JSON";
  if (json) words.pop();
  if (words.length === 0) return { error: "empty command" };
  const [command, ...rest] = words;
  switch (command?.toUpperCase()) {
    case "STATUS?":
    case "DEVICES?":
    case "VERSION?":
    case "CONFIG?":
      if (rest.length > 0) return { error: `${command.toUpperCase()} takes no arguments` };
      return { command: command.toUpperCase() as "STATUS?" | "DEVICES?" | "VERSION?" | "CONFIG?", json };
    case "CLOSE": {
      if (rest.length !== 2) return { error: "usage: CLOSE <peer> <vid>" };
      const vid = /^[0-9]+$/.test(rest[1]) ? Number(rest[1]) : NaN;
      if (!isVid(vid)) return { error: `vid must be ${MIN_VID} to ${MAX_VID}, not ${rest[1]}` };
      return { command: "CLOSE", json, peer: rest[0], vid };
    }
    case "CONNECT": {
      if (rest.length < 2) return { error: "usage: CONNECT <peer> <vid> [key=value]..." };
      const [peer, vid, ...options] = rest;
      const fields: Record<string, string[]> = {};
      for (const option of options) {
        const equals = option.indexOf("=");
        if (equals < 1) return { error: `"${option}" is not key=value` };
        const key = option.slice(0, equals).toLowerCase();
        if (
          ![
            "mode",
            "address",
            "mtu",
            "ifname",
            "port",
            "family",
            "cipher",
            "compress",
            "bridge",
            "far-bridge",
          ]
            .includes(key)
        ) {
          return { error: `unknown option ${key}` };
        }
        if (key !== "address" && fields[key]) return { error: `${key} given twice` };
        (fields[key] ??= []).push(option.slice(equals + 1));
      }
      const family = fields.family?.[0];
      if (family !== undefined && family !== "4" && family !== "6") {
        return { error: `family is 4 or 6, not ${family}` };
      }
      try {
        const circuit = validateCircuit({
          peer,
          vid,
          mode: fields.mode?.[0],
          address: fields.address,
          mtu: fields.mtu?.[0],
          ifname: fields.ifname?.[0],
          family: family === undefined ? undefined : Number(family) as 4 | 6,
          cipher: fields.cipher?.[0],
          compress: fields.compress?.[0],
          bridge: fields.bridge?.[0],
          farBridge: fields["far-bridge"]?.[0],
        }, "");
        const portText = fields.port?.[0];
        const port = portText === undefined
          ? undefined
          : /^[0-9]{1,5}$/.test(portText)
          ? Number(portText)
          : NaN;
        if (port !== undefined && !(port >= 1 && port <= 65535)) return { error: `port must be 1 to 65535` };
        return { command: "CONNECT", json, circuit, port };
      } catch (error) {
        if (error instanceof UsageError) return { error: error.message };
        throw error;
      }
    }
    default:
      return { error: `unknown command ${command}` };
  }
}

/** Who may send a command: every command, or only those that read ("read": a read-only key). */
export type ControlAccess = "admin" | "read";

/** Whether a request changes the daemon (and so needs admin access). */
export function isMutating(request: ControlRequest): boolean {
  return request.command === "CONNECT" || request.command === "CLOSE";
}

/** The CONNECT line for a circuit, as `vela connect` sends it. */
export function formatConnect(circuit: CircuitArgs, port?: number): string {
  const parts = ["CONNECT", circuit.host, String(circuit.vid), `mode=${circuit.mode}`];
  for (const address of circuit.addresses) parts.push(`address=${formatCidr(address)}`);
  if (circuit.mtu !== undefined) parts.push(`mtu=${circuit.mtu}`);
  if (circuit.ifname !== undefined) parts.push(`ifname=${circuit.ifname}`);
  if (circuit.bridge !== undefined) parts.push(`bridge=${circuit.bridge}`);
  if (circuit.farBridge !== undefined) parts.push(`far-bridge=${circuit.farBridge}`);
  if (circuit.compress !== undefined) parts.push(`compress=${circuit.compress}`);
  if (port !== undefined) parts.push(`port=${port}`);
  if (circuit.family !== undefined) parts.push(`family=${circuit.family}`);
  return parts.join(" ");
}

/** One line of `key=value` pairs for a circuit in a STATUS? text reply. */
export function formatCircuitLine(c: CircuitStatus): string {
  return [
    `peer=${c.peer}`,
    `address=${c.address}`,
    `port=${c.port}`,
    `vid=${c.vid}`,
    `ifname=${c.ifname ?? "-"}`,
    `role=${c.role}`,
    `state=${c.state}`,
    `mode=${c.mode}`,
    `mtu=${c.mtu}`,
    `uptime=${c.uptimeSeconds ?? "-"}`,
    `rtt_ms=${c.rttMs ?? "-"}`,
    `tx_packets=${c.txPackets}`,
    `tx_bytes=${c.txBytes}`,
    `rx_packets=${c.rxPackets}`,
    `rx_bytes=${c.rxBytes}`,
    `cipher=${c.cipher}`,
    `key_age=${c.keyAgeSeconds ?? "-"}`,
    `rotations=${c.rotations}`,
    `drop_send_failed=${c.drops.sendFailed}`,
    `drop_device_refused=${c.drops.deviceRefused}`,
    `drop_bad_tag=${c.drops.badTag}`,
    `drop_replayed_data=${c.drops.replayedData}`,
    `drop_too_old=${c.drops.tooOld}`,
    `drop_no_key=${c.drops.noKey}`,
    `drop_key_exhausted=${c.drops.keyExhausted}`,
  ].join(" ");
}

/** The STATUS? reply. */
export function formatStatus(status: DaemonStatus, json: boolean): string {
  if (json) return `OK ${JSON.stringify(status)}`;
  const drops = Object.entries(status.drops).filter(([, n]) => n > 0).map(([r, n]) => `${r}=${n}`).join(" ");
  const lines = status.circuits.map(formatCircuitLine);
  lines.push(`drops ${drops || "none"}`);
  return [`OK ${lines.length} lines`, ...lines].join("\n");
}

export interface DeviceInfo {
  ifname: string;
  mode: string;
  mtu: number;
  peer: string;
  vid: number;
  state: string;
}

/** The DEVICES? reply. */
export function formatDevices(devices: DeviceInfo[], json: boolean): string {
  if (json) return `OK ${JSON.stringify(devices)}`;
  const lines = devices.map((d) =>
    `${d.ifname} ${d.mode} mtu=${d.mtu} peer=${d.peer} vid=${d.vid} state=${d.state}`
  );
  return [`OK ${lines.length} devices`, ...lines].join("\n");
}

/** A refusal; the reason is kept to one line. */
export function nok(reason: string): string {
  return `NOK ${reason.replace(/\s*\n\s*/g, " ")}`;
}

/** Splits a reply into its status and body: text lines after "OK <n> ...", or the JSON value. */
export function parseReply(reply: string): { ok: boolean; text: string; json?: unknown } {
  const [first, ...rest] = reply.split("\n");
  if (/^NOK( |$)/.test(first)) return { ok: false, text: first.slice(3).trim() };
  if (!/^OK( |$)/.test(first)) return { ok: false, text: `unexpected reply: ${first}` };
  const body = first.slice(2).trim();
  if (body.startsWith("{") || body.startsWith("[")) {
    try {
      return { ok: true, text: body, json: JSON.parse(body) };
    } catch {
      return { ok: false, text: "the daemon's JSON did not parse" };
    }
  }
  return { ok: true, text: [body, ...rest].join("\n") };
}

/** How many lines follow a text reply's first line ("OK 3 lines" → 3). */
export function replyLineCount(first: string): number {
  const match = /^OK (\d+) /.exec(first);
  return match ? Number(match[1]) : 0;
}

/** The whole reply once `text` (what has come so far) holds it, without its last newline; else undefined. */
export function completeReply(text: string): string | undefined {
  const newline = text.indexOf("\n");
  if (newline < 0) return undefined;
  const wanted = 1 + replyLineCount(text.slice(0, newline));
  const lines = text.split("\n");
  return lines.length > wanted ? lines.slice(0, wanted).join("\n") : undefined;
}
