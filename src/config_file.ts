/**
 * The config file: a JSON object with the listener settings and a list of circuits, validated by the
 * same rules as the command line (src/cli.ts). parseConfig is pure; readConfigFile reads the file.
 */

import { canonicalIp, type IpPrefix, parseCidr, peerAddress } from "./ip.ts";
import { validInterfaceName } from "../ffi/structs.ts";
import {
  defaultInterfaceName,
  MAX_CIRCUITS_LIMIT,
  MAX_LINK_MTU,
  MAX_VID,
  MIN_LINK_MTU,
  MIN_VID,
} from "./circuit_rules.ts";
import { CIPHER_CHOICES } from "./cli.ts";
import { nearestWord } from "./nearest.ts";
import { type FrameFilter, parseFilter } from "./datapath/filter_stage.ts";
import type { CipherPolicy, CompressMode, CompressPolicy } from "./session.ts";
import { MAX_REKEY_AFTER_MS, MIN_REKEY_AFTER_MS } from "./timing.ts";

/** A config file that cannot be used. The message starts with the JSON path of the bad field. */
export class ConfigError extends Error {
  /** JSON path of the bad field, such as `circuits[1].vid`; undefined when no one field is at fault. */
  readonly field?: string;

  constructor(message: string, field?: string) {
    super(message);
    this.name = "ConfigError";
    this.field = field;
  }
}

/** One circuit to start, as the file gives it (the peer is not resolved yet). */
export interface CircuitConfig {
  /** Host name or IP address of the peer. */
  peer: string;
  vid: number;
  mode: "tap" | "tun";
  /** This side's addresses, at most one per family; the far side takes the other host of each pair. */
  addresses: IpPrefix[];
  mtu?: number;
  ifname?: string;
  /** UDP port of the peer; undefined means the file's top-level port or the default. */
  port?: number;
  /** Use only the peer's IPv4 or IPv6 address. */
  family?: 4 | 6;
  /** This circuit's own key file, instead of the top-level one. */
  keyFile?: string;
  /** The data cipher this circuit insists on. */
  cipher?: CipherPolicy;
  /** Whether this circuit offers compression ("compress": true, false or "with-encryption"). */
  compress?: CompressPolicy;
  /** The existing Linux bridge this circuit's tap joins. */
  bridge?: string;
  /** The listener's bridge this circuit asks the far tap to join. */
  farBridge?: string;
  /** Which frames may cross this tap circuit. */
  filter?: FrameFilter;
}

/** A listener's rule for the bridge of the taps it creates: the first rule whose vid and prefix match. */
export interface BridgeRule {
  bridge: string;
  vid?: number;
  allow?: IpPrefix;
  /** Which frames the tap circuits this rule matches may carry (as a circuit's own `filter`). */
  filter?: FrameFilter;
}

export interface FileConfig {
  listen: boolean;
  allow: IpPrefix[];
  insecureAcceptAny: boolean;
  /** UDP port of the listener and default port of the peers. */
  port?: number;
  keyFile?: string;
  /** More key files a listener accepts. */
  keyFiles?: string[];
  cipher?: CipherPolicy;
  /** What a listener accepts of compression, and its circuits' default ("compress"). */
  compress?: CompressPolicy;
  /** "compress_mode": "stateless" or "dictionary" (the default). */
  compressMode?: CompressMode;
  rekeyAfterMs?: number;
  maxCircuits?: number;
  maxCircuitsPerPeer?: number;
  /** A listener's bridge for every tap it creates (after the rules in `bridges`). */
  bridge?: string;
  bridges?: BridgeRule[];
  /** Bridges a listener lets an initiator ask its tap to join ("far_bridge" on the initiator). */
  offerBridges?: string[];
  /** Hooks: shell commands run when a circuit's interface is up, and when it is removed. */
  up?: string;
  down?: string;
  circuits: CircuitConfig[];
}

const TOP_KEYS = [
  "listen",
  "allow",
  "insecure_accept_any",
  "port",
  "key_file",
  "key_files",
  "cipher",
  "compress",
  "compress_mode",
  "rekey_after",
  "max_circuits",
  "max_circuits_per_peer",
  "bridge",
  "bridges",
  "offer_bridges",
  "up",
  "down",
  "circuits",
];
const CIRCUIT_KEYS = [
  "peer",
  "vid",
  "mode",
  "address",
  "mtu",
  "ifname",
  "port",
  "family",
  "key_file",
  "cipher",
  "compress",
  "bridge",
  "far_bridge",
  "filter",
];

type JsonObject = Record<string, unknown>;

function fail(field: string, problem: string): never {
  throw new ConfigError(`${field}: ${problem}`, field);
}

/** A value as the message shows it: JSON text for scalars (shortened), a word for arrays and objects. */
function shown(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value !== null && typeof value === "object") return "an object";
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 56)}..."` : text;
}

function isObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function rejectUnknownKeys(object: JsonObject, known: readonly string[], at: (key: string) => string): void {
  for (const key of Object.keys(object)) {
    if (known.includes(key)) continue;
    const field = at(key);
    if (known === TOP_KEYS && CIRCUIT_KEYS.includes(key)) {
      fail(field, `unknown key at the top level; circuit settings go in "circuits": [{ ... }]`);
    }
    if (known === CIRCUIT_KEYS && TOP_KEYS.includes(key)) {
      fail(field, `unknown key in a circuit; "${key}" goes at the top level of the file`);
    }
    const nearest = nearestWord(key, known);
    if (nearest) fail(field, `unknown key; did you mean "${nearest}"?`);
    fail(field, `unknown key; the keys here are ${known.map((k) => `"${k}"`).join(", ")}`);
  }
}

function wholeNumber(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    fail(field, `must be a whole number from ${min} to ${max}, not ${shown(value)}`);
  }
  return value;
}

function cipherField(value: unknown, field: string): CipherPolicy {
  if (typeof value !== "string" || !(CIPHER_CHOICES as readonly string[]).includes(value)) {
    fail(field, `must be one of ${CIPHER_CHOICES.map((c) => `"${c}"`).join(", ")}, not ${shown(value)}`);
  }
  return value === "none" ? "clear" : value as CipherPolicy;
}

/** "compress": true (on), false (off) or "with-encryption". */
function compressField(value: unknown, field: string): CompressPolicy {
  if (value === true) return "on";
  if (value === false) return "off";
  if (value === "with-encryption") return value;
  fail(field, `must be true, false or "with-encryption", not ${shown(value)}`);
}

function boolean(value: unknown, field: string): boolean {
  if (typeof value !== "boolean") fail(field, `must be true or false, not ${shown(value)}`);
  return value;
}

function cidrList(value: unknown, field: string, example: string): IpPrefix[] {
  if (!Array.isArray(value)) {
    fail(
      field,
      `must be an array of addresses with a prefix length, such as ["${example}"], not ${shown(value)}`,
    );
  }
  return value.map((item, i) => {
    const parsed = typeof item === "string" ? parseCidr(item) : undefined;
    if (!parsed) {
      fail(
        `${field}[${i}]`,
        `must be an address with a prefix length, such as "${example}", not ${shown(item)}`,
      );
    }
    return parsed;
  });
}

function parseCircuit(value: unknown, field: string): CircuitConfig {
  if (!isObject(value)) fail(field, `must be an object with at least "peer" and "vid", not ${shown(value)}`);
  rejectUnknownKeys(value, CIRCUIT_KEYS, (key) => `${field}.${key}`);
  const has = (key: string) => Object.hasOwn(value, key);

  if (!has("peer")) fail(`${field}.peer`, "is missing; give the peer's host name or IP address");
  const peer = value.peer;
  if (typeof peer !== "string" || peer === "" || /[\s/]/.test(peer)) {
    fail(`${field}.peer`, `must be a host name or IP address (no prefix length), not ${shown(peer)}`);
  }
  if (!has("vid")) fail(`${field}.vid`, "is missing; give the circuit id, a whole number from 1 to 255");
  const vid = wholeNumber(value.vid, `${field}.vid`, MIN_VID, MAX_VID);

  let mode: "tap" | "tun" = "tap";
  if (has("mode")) {
    if (value.mode !== "tap" && value.mode !== "tun") {
      fail(`${field}.mode`, `must be "tap" or "tun", not ${shown(value.mode)}`);
    }
    mode = value.mode;
  }

  const addresses = has("address") ? cidrList(value.address, `${field}.address`, "198.18.207.1/30") : [];
  addresses.forEach((address, i) => {
    const at = `${field}.address[${i}]`;
    if (addresses.findIndex((a) => a.family === address.family) < i) {
      fail(at, `is a second IPv${address.family} address; a circuit takes at most one per family`);
    }
    try {
      peerAddress(address);
    } catch (error) {
      fail(at, (error as Error).message);
    }
  });

  const circuit: CircuitConfig = { peer, vid, mode, addresses };
  if (has("mtu")) circuit.mtu = wholeNumber(value.mtu, `${field}.mtu`, MIN_LINK_MTU, MAX_LINK_MTU);
  if (has("ifname")) {
    if (typeof value.ifname !== "string" || !validInterfaceName(value.ifname)) {
      fail(
        `${field}.ifname`,
        `must be a valid interface name (1 to 15 bytes, no spaces, / or :), not ${shown(value.ifname)}`,
      );
    }
    circuit.ifname = value.ifname;
  }
  if (has("port")) circuit.port = wholeNumber(value.port, `${field}.port`, 1, 65535);
  if (has("cipher")) circuit.cipher = cipherField(value.cipher, `${field}.cipher`);
  if (has("compress")) circuit.compress = compressField(value.compress, `${field}.compress`);
  if (has("filter")) {
    circuit.filter = filterField(value.filter, `${field}.filter`);
    if (mode !== "tap") fail(`${field}.filter`, `goes with "mode": "tap" (it reads Ethernet headers)`);
  }
  if (has("bridge")) {
    circuit.bridge = bridgeName(value.bridge, `${field}.bridge`);
    if (mode !== "tap") fail(`${field}.bridge`, `goes with "mode": "tap" (a tun carries no Ethernet)`);
  }
  if (has("far_bridge")) {
    circuit.farBridge = bridgeName(value.far_bridge, `${field}.far_bridge`);
    if (mode !== "tap") fail(`${field}.far_bridge`, `goes with "mode": "tap" (a tun carries no Ethernet)`);
  }
  if (has("key_file")) {
    if (typeof value.key_file !== "string" || value.key_file === "") {
      fail(`${field}.key_file`, `must be the path of the key file, not ${shown(value.key_file)}`);
    }
    circuit.keyFile = value.key_file;
  }
  if (has("family")) {
    if (value.family !== 4 && value.family !== 6) {
      fail(`${field}.family`, `must be 4 or 6, not ${shown(value.family)}`);
    }
    circuit.family = value.family;
  }
  return circuit;
}

/** How a peer is compared for duplicates: canonical IP text, or the host name in lower case. */
function peerKey(peer: string): string {
  const canonical = canonicalIp(peer);
  return canonical !== peer ? canonical : peer.toLowerCase().replace(/\.$/, "");
}

/** A circuit's `filter`: {"local": [MAC...], "remote": [MAC...], "block": [KIND...]}, each optional. */
function filterField(value: unknown, field: string): FrameFilter {
  if (!isObject(value)) {
    fail(field, `must be an object with "local", "remote" or "block", not ${shown(value)}`);
  }
  rejectUnknownKeys(value, ["local", "remote", "block"], (key) => `${field}.${key}`);
  const list = (key: string): string[] | undefined => {
    if (!Object.hasOwn(value, key)) return undefined;
    const items = value[key];
    if (!Array.isArray(items) || items.some((item) => typeof item !== "string")) {
      fail(`${field}.${key}`, `must be an array of strings, not ${shown(items)}`);
    }
    return items as string[];
  };
  try {
    return parseFilter(
      { local: list("local"), remote: list("remote"), block: list("block") },
      { local: `${field}.local:`, remote: `${field}.remote:`, block: `${field}.block:` },
    );
  } catch (error) {
    throw new ConfigError((error as Error).message, field);
  }
}

function bridgeName(value: unknown, field: string): string {
  if (typeof value !== "string" || !validInterfaceName(value)) {
    fail(field, `must be the name of an existing Linux bridge, not ${shown(value)}`);
  }
  return value;
}

/** `bridges`: an array of {"bridge": NAME, "vid"?: N, "allow"?: CIDR, "filter"?: {...}}, the first match wins. */
function bridgeRules(value: unknown): BridgeRule[] {
  if (!Array.isArray(value)) fail("bridges", `must be an array of rules, not ${shown(value)}`);
  return value.map((rule, i) => {
    const field = `bridges[${i}]`;
    if (!isObject(rule)) fail(field, `must be an object with "bridge", not ${shown(rule)}`);
    rejectUnknownKeys(rule, ["bridge", "vid", "allow", "filter"], (key) => `${field}.${key}`);
    if (!Object.hasOwn(rule, "bridge")) fail(`${field}.bridge`, "is missing");
    const parsed: BridgeRule = { bridge: bridgeName(rule.bridge, `${field}.bridge`) };
    if (Object.hasOwn(rule, "vid")) parsed.vid = wholeNumber(rule.vid, `${field}.vid`, MIN_VID, MAX_VID);
    if (Object.hasOwn(rule, "allow")) {
      const prefix = typeof rule.allow === "string" ? parseCidr(rule.allow) : undefined;
      if (!prefix) {
        fail(`${field}.allow`, `must be an address with a prefix length, not ${shown(rule.allow)}`);
      }
      parsed.allow = prefix;
    }
    if (Object.hasOwn(rule, "filter")) parsed.filter = filterField(rule.filter, `${field}.filter`);
    return parsed;
  });
}

/** Parses and checks the text of a config file; throws ConfigError with one line that says what is wrong. */
export function parseConfig(text: string): FileConfig {
  if (text.trim() === "") throw new ConfigError("The config file is empty; it must hold a JSON object");
  let root: unknown;
  try {
    root = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (error) {
    throw new ConfigError(`Invalid JSON: ${(error as Error).message.split("\n")[0]}`);
  }
  if (!isObject(root)) throw new ConfigError(`The config file must hold a JSON object, not ${shown(root)}`);
  rejectUnknownKeys(root, TOP_KEYS, (key) => key);
  const has = (key: string) => Object.hasOwn(root, key);

  const listen = has("listen") ? boolean(root.listen, "listen") : false;
  const allow = has("allow") ? cidrList(root.allow, "allow", "198.18.0.0/15") : [];
  const insecureAcceptAny = has("insecure_accept_any")
    ? boolean(root.insecure_accept_any, "insecure_accept_any")
    : false;
  const config: FileConfig = { listen, allow, insecureAcceptAny, circuits: [] };
  if (has("port")) config.port = wholeNumber(root.port, "port", 1, 65535);
  if (has("key_file")) {
    if (typeof root.key_file !== "string" || root.key_file === "") {
      fail("key_file", `must be the path of the key file, not ${shown(root.key_file)}`);
    }
    config.keyFile = root.key_file;
  }
  if (has("key_files")) {
    const files = root.key_files;
    if (!Array.isArray(files) || files.some((f) => typeof f !== "string" || f === "")) {
      fail("key_files", `must be an array of key file paths, not ${shown(files)}`);
    }
    config.keyFiles = files as string[];
  }
  if (has("cipher")) config.cipher = cipherField(root.cipher, "cipher");
  if (has("compress")) config.compress = compressField(root.compress, "compress");
  if (has("compress_mode")) {
    if (root.compress_mode !== "stateless" && root.compress_mode !== "dictionary") {
      fail("compress_mode", `must be "stateless" or "dictionary", not ${shown(root.compress_mode)}`);
    }
    config.compressMode = root.compress_mode;
  }
  if (has("rekey_after")) {
    config.rekeyAfterMs = wholeNumber(
      root.rekey_after,
      "rekey_after",
      MIN_REKEY_AFTER_MS / 1000,
      MAX_REKEY_AFTER_MS / 1000,
    ) * 1000;
  }
  if (has("max_circuits")) {
    config.maxCircuits = wholeNumber(root.max_circuits, "max_circuits", 1, MAX_CIRCUITS_LIMIT);
  }
  if (has("max_circuits_per_peer")) {
    config.maxCircuitsPerPeer = wholeNumber(root.max_circuits_per_peer, "max_circuits_per_peer", 1, MAX_VID);
  }
  if (has("bridge")) config.bridge = bridgeName(root.bridge, "bridge");
  if (has("bridges")) config.bridges = bridgeRules(root.bridges);
  if (has("offer_bridges")) {
    if (!Array.isArray(root.offer_bridges)) {
      fail("offer_bridges", `must be an array of bridge names, not ${shown(root.offer_bridges)}`);
    }
    config.offerBridges = root.offer_bridges.map((name, i) => bridgeName(name, `offer_bridges[${i}]`));
  }
  for (const hook of ["up", "down"] as const) {
    if (!has(hook)) continue;
    const command = root[hook];
    if (typeof command !== "string" || command.trim() === "") {
      fail(hook, `must be a shell command, not ${shown(command)}`);
    }
    config[hook] = command;
  }
  if (has("circuits")) {
    const circuits = root.circuits;
    if (!Array.isArray(circuits)) {
      const hint = isObject(circuits) ? " (put a single circuit in [ ])" : "";
      fail("circuits", `must be an array of circuit objects, not ${shown(circuits)}${hint}`);
    }
    config.circuits = circuits.map((circuit, i) => parseCircuit(circuit, `circuits[${i}]`));
  }

  config.circuits.forEach((circuit, i) => {
    const first = config.circuits.findIndex((c) =>
      c.vid === circuit.vid && peerKey(c.peer) === peerKey(circuit.peer)
    );
    if (first < i) {
      fail(`circuits[${i}].vid`, `circuits[${first}] already has vid ${circuit.vid} to ${circuit.peer}`);
    }
  });
  const names = config.circuits.map((c) => c.ifname ?? defaultInterfaceName(c.vid));
  names.forEach((name, i) => {
    const first = names.indexOf(name);
    if (first < i) {
      const which = config.circuits[i].ifname === undefined
        ? `the default name ${name} (from vid ${config.circuits[i].vid})`
        : `"${name}"`;
      fail(
        `circuits[${i}].ifname`,
        `${which} is also the interface of circuits[${first}]; give them different ifnames`,
      );
    }
  });

  if (
    (config.cipher !== undefined || config.circuits.some((c) => c.cipher !== undefined)) && !config.keyFile &&
    !config.circuits.some((c) => c.keyFile)
  ) {
    fail("cipher", `goes with "key_file" (without a key frames are clear)`);
  }
  if (
    listen && allow.length === 0 && !insecureAcceptAny && config.keyFile === undefined && !config.keyFiles
  ) {
    fail(
      "listen",
      `the listener needs "allow" (the initiators' underlay prefixes), "key_file" or "insecure_accept_any": true`,
    );
  }
  if (!listen && allow.length > 0) fail("allow", `goes with "listen": true`);
  if (!listen && insecureAcceptAny) fail("insecure_accept_any", `goes with "listen": true`);
  for (
    const [key, name] of [["bridge", "bridge"], ["bridges", "bridges"], [
      "offerBridges",
      "offer_bridges",
    ]] as const
  ) {
    if (!listen && config[key] !== undefined) {
      fail(name, `goes with "listen": true (a circuit's own tap takes "bridge" in its object)`);
    }
  }
  if (!listen && config.circuits.length === 0) {
    fail("circuits", `the file has no circuits and does not listen; add a circuit or "listen": true`);
  }
  return config;
}

/**
 * Reads and parses a config file. Throws ConfigError when the file cannot be read or is invalid; the
 * message then starts with the file's path (and a parse error keeps its JSON path in `field`).
 */
export function readConfigFile(path: string): FileConfig {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    const cannot = `Cannot read the config file ${path}`;
    if (error instanceof Deno.errors.NotFound) {
      throw new ConfigError(`${cannot}: it does not exist; create it or give the right path`);
    }
    if (error instanceof Deno.errors.NotCapable) {
      throw new ConfigError(`${cannot}: Deno may not read it; run vela with --allow-read`);
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new ConfigError(`${cannot}: permission denied; make it readable by the user that runs vela`);
    }
    if (error instanceof Deno.errors.IsADirectory) {
      throw new ConfigError(`${cannot}: it is a directory; give the path of the JSON file`);
    }
    throw new ConfigError(`${cannot}: ${(error as Error).message}; check the path`);
  }
  try {
    return parseConfig(text);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`${path}: ${error.message}`, error.field);
    throw error;
  }
}
