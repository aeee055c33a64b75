/** The command line: parsing and validation (node:util parseArgs), the help text. Pure: no I/O. */

import { parseArgs } from "node:util";
import { HOST_CONTROL } from "./control/socket_path.ts";
import { nearestWord } from "./nearest.ts";
import { type IpPrefix, parseCidr, peerAddress } from "./ip.ts";
import type { LinkMode } from "./link/link_device.ts";
import type { Verbosity } from "./log.ts";
import { validInterfaceName } from "../ffi/structs.ts";
import { MAX_CIRCUITS_LIMIT, MAX_LINK_MTU, MAX_VID, MIN_LINK_MTU, MIN_VID } from "./circuit_rules.ts";
import { MAX_REKEY_AFTER_MS, MIN_REKEY_AFTER_MS } from "./timing.ts";
import type { CipherPolicy, CompressMode, CompressPolicy } from "./session.ts";
import { type FrameFilter, parseFilter } from "./datapath/filter_stage.ts";

export const DEFAULT_PORT = 4455;
/** The TCP port of --control-listen and --remote when they name none. */
export const DEFAULT_CONTROL_PORT = 4456;

/** A usage error: main.ts prints it on one line to stderr and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The daemon's settings as given, before the peer name is resolved. */
export interface DaemonArgs {
  verbosity: Verbosity;
  listen: boolean;
  allow: IpPrefix[];
  insecureAcceptAny: boolean;
  /** UDP port of the peer, and the port to listen on with --listen. */
  port: number;
  /** Local UDP port of an initiator that does not listen; 0 = any free port. */
  localPort: number;
  /** The pre-shared key file (--key-file). */
  keyFile?: string;
  /** More key files a listener accepts (--key-file given again). */
  extraKeyFiles?: string[];
  /** --cipher: the data cipher to insist on, "clear" for none, or "auto". */
  cipher?: CipherPolicy;
  /** --compress, --compress-with-encryption: what a listener accepts, and the --peer circuit offers. */
  compress?: CompressPolicy;
  /** --compress-mode: stateless or dictionary (the default). */
  compressMode?: CompressMode;
  /** --rekey-after, in milliseconds. */
  rekeyAfterMs?: number;
  /** --bridge with --listen: the bridge every tap the listener creates joins (and the --peer circuit's). */
  bridge?: string;
  /** --offer-bridge: bridges an initiator may ask its tap to join here (--far-bridge). */
  offerBridges?: string[];
  /** --up, --down: shell commands run when a circuit's interface is up, and when it is removed. */
  up?: string;
  down?: string;
  /** --max-circuits: circuits the daemon holds at most. */
  maxCircuits?: number;
  /** --max-circuits-per-peer: circuits one peer address may have. */
  maxCircuitsPerPeer?: number;
  /** A JSON file with the listener settings and any number of circuits (--config), instead of the flags. */
  configFile?: string;
  peer?: CircuitArgs;
  /** The control socket's path. */
  control: string;
  /** Where to serve Prometheus metrics (host and port), if anywhere. */
  metrics?: { hostname: string; port: number };
  /** Where to accept remote control connections (--control-listen), if anywhere. */
  controlListen?: { hostname: string; port: number };
  /** Keys that may run every control command remotely (--control-key); unset, the --key-file's. */
  controlKeyFiles?: string[];
  /** Keys that may only read (status, devices, showconf) remotely (--control-read-key). */
  controlReadKeyFiles?: string[];
  /** Which UDP datapath: "libc" (a Worker with recvmmsg/sendmmsg) or "deno" (Deno.listenDatagram). */
  underlay: "libc" | "deno";
  /** TCP segmentation and checksum offload on the devices (libc underlay only). */
  offload: boolean;
  /** Worker threads of the libc datapath (--datapath-threads); unset, by the machine's CPUs. */
  datapathThreads?: 1 | 2;
  /** The sending Worker's wait under bulk traffic, in microseconds (--moderation-us); unset, the default. */
  moderationUs?: number;
}

/** One circuit as given on the command line or in a CONNECT command, its peer not yet resolved. */
export interface CircuitArgs {
  host: string;
  family?: 4 | 6;
  vid: number;
  mode: LinkMode;
  addresses: IpPrefix[];
  mtu?: number;
  ifname?: string;
  /** The data cipher this circuit insists on (CONNECT cipher=, a config file's circuit). */
  cipher?: CipherPolicy;
  /** --compress, --compress-with-encryption (CONNECT compress=, a config file's circuit). */
  compress?: CompressPolicy;
  /** The existing Linux bridge the circuit's tap joins (--bridge). */
  bridge?: string;
  /** The listener's bridge the far tap is asked to join (--far-bridge). */
  farBridge?: string;
  /** Which frames may cross (--local-mac, --remote-mac, --block). */
  filter?: FrameFilter;
}

/** A daemon on another host: its --control-listen address and the key file to prove. */
export interface RemoteTarget {
  remote: { hostname: string; port: number };
  keyFile: string;
}

/** Where a client command finds the daemon: its control socket on this host, or --remote. */
export type ControlTarget = { path: string } | RemoteTarget;

export type Command =
  | { kind: "help"; command?: SubcommandName }
  | { kind: "version" }
  | { kind: "genkey" }
  | { kind: "daemon"; args: DaemonArgs }
  | { kind: "status"; target: ControlTarget; json: boolean; circuit?: string }
  | { kind: "top"; target: ControlTarget; intervalS: number; count?: number }
  | { kind: "devices"; target: ControlTarget; json: boolean }
  | { kind: "connect"; target: ControlTarget; json: boolean; circuit: CircuitArgs; port?: number }
  | { kind: "close"; target: ControlTarget; json: boolean; peer: string; vid: number }
  | { kind: "showconf"; target: ControlTarget }
  | { kind: "check-config"; file: string }
  | { kind: "completion"; shell: "bash" | "zsh" }
  | { kind: "man" };

function integer(text: string, option: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(text)) {
    throw new UsageError(`${option} takes a whole number from ${min} to ${max}, not "${text}"`);
  }
  const value = Number(text);
  if (value < min || value > max) {
    throw new UsageError(`${option} takes a whole number from ${min} to ${max}, not ${text}`);
  }
  return value;
}

function prefix(text: string, option: string): IpPrefix {
  const parsed = parseCidr(text);
  if (!parsed) {
    throw new UsageError(
      `${option} takes an address with a prefix length, such as 198.18.207.1/30, not "${text}"`,
    );
  }
  return parsed;
}

/** A circuit's options as text, from flags or from a CONNECT command. */
export interface RawCircuit {
  peer: string;
  vid?: string;
  mode?: string;
  address?: string[];
  mtu?: string;
  ifname?: string;
  family?: 4 | 6;
  cipher?: string;
  /** "on", "off" or "with-encryption". */
  compress?: string;
  bridge?: string;
  farBridge?: string;
  localMac?: string[];
  remoteMac?: string[];
  block?: string[];
}

/**
 * Checks a circuit's options; throws UsageError naming the option with `dash` in front ("--" on the
 * command line, "" in a CONNECT command).
 */
export function validateCircuit(raw: RawCircuit, dash: string): CircuitArgs {
  if (raw.peer === "") throw new UsageError(`${dash}peer needs a host name or address`);
  if (raw.vid === undefined) throw new UsageError(`${dash}peer needs ${dash}vid N (1 to 255)`);
  const vid = integer(raw.vid, `${dash}vid`, MIN_VID, MAX_VID);
  const mode = raw.mode ?? "tap";
  if (mode !== "tap" && mode !== "tun") throw new UsageError(`${dash}mode is tap or tun, not "${mode}"`);
  const addresses = (raw.address ?? []).map((text) => prefix(text, `${dash}address`));
  for (const family of [4, 6]) {
    if (addresses.filter((a) => a.family === family).length > 1) {
      throw new UsageError(`${dash}address takes one IPv${family} address per circuit`);
    }
  }
  for (const address of addresses) {
    try {
      peerAddress(address);
    } catch (error) {
      throw new UsageError(`${dash}address ${(error as Error).message}`);
    }
  }
  const mtu = raw.mtu === undefined ? undefined : integer(raw.mtu, `${dash}mtu`, MIN_LINK_MTU, MAX_LINK_MTU);
  if (raw.ifname !== undefined && !validInterfaceName(raw.ifname)) {
    throw new UsageError(
      `${dash}ifname "${raw.ifname}" is not a valid interface name (1 to 15 bytes, no spaces, / or :)`,
    );
  }
  for (const [option, name] of [["bridge", raw.bridge], ["far-bridge", raw.farBridge]] as const) {
    if (name === undefined) continue;
    if (!validInterfaceName(name)) {
      throw new UsageError(`${dash}${option} "${name}" is not a valid interface name`);
    }
    if (mode !== "tap") {
      throw new UsageError(`${dash}${option} goes with ${dash}mode tap (a tun carries no Ethernet)`);
    }
  }
  const circuit: CircuitArgs = {
    host: raw.peer,
    family: raw.family,
    vid,
    mode,
    addresses,
    mtu,
    ifname: raw.ifname,
  };
  if (raw.cipher !== undefined) circuit.cipher = parseCipher(raw.cipher, `${dash}cipher`);
  if (raw.compress !== undefined) circuit.compress = parseCompress(raw.compress, `${dash}compress`);
  if (raw.bridge !== undefined) circuit.bridge = raw.bridge;
  if (raw.farBridge !== undefined) circuit.farBridge = raw.farBridge;
  if (raw.localMac?.length || raw.remoteMac?.length || raw.block?.length) {
    if (mode !== "tap") {
      throw new UsageError(`${dash}local-mac, ${dash}remote-mac and ${dash}block go with ${dash}mode tap`);
    }
    try {
      circuit.filter = parseFilter(
        { local: raw.localMac, remote: raw.remoteMac, block: raw.block },
        { local: `${dash}local-mac`, remote: `${dash}remote-mac`, block: `${dash}block` },
      );
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  return circuit;
}

/** The ciphers --cipher names, as the operator spells them. */
export const CIPHER_CHOICES = ["auto", "aes-256-gcm", "chacha20-poly1305", "none"] as const;

/** --cipher's value: "none" is the clear cipher. Throws UsageError. */
export function parseCipher(text: string, option: string): CipherPolicy {
  if (!(CIPHER_CHOICES as readonly string[]).includes(text)) {
    throw new UsageError(`${option} is ${CIPHER_CHOICES.join(", ")}, not "${text}"`);
  }
  return text === "none" ? "clear" : text as CipherPolicy;
}

/** The words of a compression policy (CONNECT compress=, the flags' meaning). */
export const COMPRESS_CHOICES = ["on", "off", "with-encryption"] as const;

export function parseCompress(text: string, option: string): CompressPolicy {
  if (!(COMPRESS_CHOICES as readonly string[]).includes(text)) {
    throw new UsageError(`${option} is ${COMPRESS_CHOICES.join(", ")}, not "${text}"`);
  }
  return text as CompressPolicy;
}

/** --compress and --compress-with-encryption as a policy (undefined when neither is given). */
function compressFlags(v: Values): string | undefined {
  return v["compress-with-encryption"] ? "with-encryption" : v.compress ? "on" : undefined;
}

/** "HOST:PORT" or "[IPv6]:PORT" for --metrics. */
function hostPort(text: string, option: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+)):([0-9]{1,5})$/.exec(text);
  if (!match) throw new UsageError(`${option} takes HOST:PORT, such as 127.0.0.1:9455, not "${text}"`);
  return { hostname: match[1] ?? match[2], port: integer(match[3], option, 1, 65535) };
}

/** Seconds between refreshes of vela top unless --interval says otherwise. */
export const WATCH_INTERVAL_DEFAULT_S = 2;

/** An option table for parseArgs. */
type OptionTable = Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>;

/** A circuit's options, on the daemon's command line and in vela connect. */
const CIRCUIT_OPTIONS = {
  peer: { type: "string" },
  vid: { type: "string" },
  mode: { type: "string" },
  address: { type: "string", multiple: true },
  mtu: { type: "string" },
  ifname: { type: "string" },
  bridge: { type: "string" },
  "far-bridge": { type: "string" },
  compress: { type: "boolean" },
  "compress-with-encryption": { type: "boolean" },
  port: { type: "string" },
  ipv4: { type: "boolean", short: "4" },
  ipv6: { type: "boolean", short: "6" },
} as const satisfies OptionTable;

/** The daemon's options (vela --peer, --listen, --config). */
export const DAEMON_OPTIONS = {
  ...CIRCUIT_OPTIONS,
  "offer-bridge": { type: "string", multiple: true },
  "local-mac": { type: "string", multiple: true },
  "remote-mac": { type: "string", multiple: true },
  block: { type: "string", multiple: true },
  up: { type: "string" },
  down: { type: "string" },
  "local-port": { type: "string" },
  listen: { type: "boolean" },
  allow: { type: "string", multiple: true },
  "insecure-accept-any": { type: "boolean" },
  "max-circuits": { type: "string" },
  "max-circuits-per-peer": { type: "string" },
  "key-file": { type: "string", multiple: true },
  cipher: { type: "string" },
  "compress-mode": { type: "string" },
  "rekey-after": { type: "string" },
  config: { type: "string" },
  control: { type: "string" },
  "control-listen": { type: "string" },
  "control-key": { type: "string", multiple: true },
  "control-read-key": { type: "string", multiple: true },
  metrics: { type: "string" },
  underlay: { type: "string" },
  "no-offload": { type: "boolean" },
  "datapath-threads": { type: "string" },
  "moderation-us": { type: "string" },
  verbose: { type: "boolean", short: "v" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const satisfies OptionTable;

/** The options that may go with --config (the rest of the settings are in the file). */
export const CONFIG_COMPANIONS = [
  "control",
  "control-listen",
  "control-key",
  "control-read-key",
  "metrics",
  "underlay",
  "no-offload",
  "datapath-threads",
  "moderation-us",
  "verbose",
  "quiet",
] as const satisfies readonly (keyof typeof DAEMON_OPTIONS)[];

/** The options of every command that talks to a daemon. */
const TARGET_OPTIONS = {
  control: { type: "string" },
  remote: { type: "string" },
  "key-file": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionTable;

/** The subcommands and their options. */
export const SUBCOMMAND_OPTIONS = {
  status: {
    ...TARGET_OPTIONS,
    json: { type: "boolean" },
    circuit: { type: "string" },
    watch: { type: "boolean" },
    interval: { type: "string" },
    count: { type: "string" },
  },
  top: { ...TARGET_OPTIONS, interval: { type: "string" }, count: { type: "string" } },
  devices: { ...TARGET_OPTIONS, json: { type: "boolean" } },
  connect: { ...TARGET_OPTIONS, ...CIRCUIT_OPTIONS, json: { type: "boolean" } },
  close: { ...TARGET_OPTIONS, json: { type: "boolean" }, peer: { type: "string" }, vid: { type: "string" } },
  showconf: { ...TARGET_OPTIONS },
  "check-config": { help: { type: "boolean", short: "h" } },
  genkey: { help: { type: "boolean", short: "h" } },
  help: { help: { type: "boolean", short: "h" } },
  completion: { help: { type: "boolean", short: "h" } },
  man: { help: { type: "boolean", short: "h" } },
} as const satisfies Record<string, OptionTable>;

export type SubcommandName = keyof typeof SUBCOMMAND_OPTIONS;
export const SUBCOMMANDS = Object.keys(SUBCOMMAND_OPTIONS) as SubcommandName[];

type Values = Record<string, string | string[] | boolean | undefined>;

/** How an option is written: "--peer", or "-4" for one given by its short name. */
function optionName(name: string, table: OptionTable): string {
  return table[name] ? `--${name}` : name.length === 1 ? `-${name}` : `--${name}`;
}

/**
 * Parses `argv` against `table` with node:util parseArgs, and says what is wrong in VELA's words (no
 * parser text): an unknown option with the nearest known one, an option without its value (or with
 * another option where its value should be), a value given to a switch, an option given twice.
 */
function parseOptions(
  argv: string[],
  table: OptionTable,
  context: string,
): { values: Values; positionals: string[] } {
  const { tokens } = parseArgs({
    args: argv,
    options: table,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const values: Values = {};
  const positionals: string[] = [];
  const known = Object.keys(table);
  const where = context === "" ? "" : ` for vela ${context}`;
  for (const token of tokens) {
    if (token.kind === "positional") {
      positionals.push(token.value);
      continue;
    }
    if (token.kind !== "option") continue;
    const spec = table[token.name];
    if (!spec) {
      const nearest = nearestWord(token.name, known);
      const otherCommand = context === ""
        ? SUBCOMMANDS.find((name) => (SUBCOMMAND_OPTIONS[name] as OptionTable)[token.name] !== undefined)
        : undefined;
      throw new UsageError(
        `Unknown option ${token.rawName}${where}${
          nearest ? `; did you mean --${nearest}?` : otherCommand ? `; it goes with vela ${otherCommand}` : ""
        }`,
      );
    }
    const shown = optionName(token.name, table);
    if (spec.type === "boolean") {
      if (token.inlineValue) throw new UsageError(`${shown} takes no value`);
      if (values[token.name] !== undefined) throw new UsageError(`${shown} is given twice`);
      values[token.name] = true;
      continue;
    }
    const value = token.value;
    if (value === undefined) throw new UsageError(`${shown} needs a value`);
    if (!token.inlineValue && /^-./.test(value)) {
      throw new UsageError(
        `${shown} needs a value, not the option ${value} (write ${shown}=${value} if that is the value)`,
      );
    }
    if (spec.multiple) {
      ((values[token.name] ??= []) as string[]).push(value);
    } else {
      if (values[token.name] !== undefined) throw new UsageError(`${shown} is given twice`);
      values[token.name] = value;
    }
  }
  return { values, positionals };
}

/**
 * "HOST", "HOST:PORT", "[IPv6]", "[IPv6]:PORT" or a bare IPv6 address, for --remote and --control-listen;
 * the port is `defaultPort` when not given.
 */
export function hostOptionalPort(
  text: string,
  option: string,
  defaultPort: number,
): { hostname: string; port: number } {
  const bracketed = /^\[([^\]]+)\](?::([0-9]{1,5}))?$/.exec(text);
  const plain = /^([^:\[\]\s]+)(?::([0-9]{1,5}))?$/.exec(text);
  const match = bracketed ?? plain;
  if (match) {
    const port = match[2] === undefined ? defaultPort : integer(match[2], option, 1, 65535);
    return { hostname: match[1], port };
  }
  if (/^[0-9a-fA-F:.]+$/.test(text) && (text.match(/:/g) ?? []).length >= 2) {
    return { hostname: text, port: defaultPort };
  }
  throw new UsageError(
    `${option} takes HOST or HOST:PORT (an IPv6 address as [ADDRESS]:PORT), not "${text}"`,
  );
}

/** Where a client command finds the daemon: --remote HOST[:PORT], --control PATH, or the default socket. */
function controlTarget(v: Values, defaultControl: string): ControlTarget {
  const remote = v.remote as string | undefined;
  const keyFile = v["key-file"] as string | undefined;
  if (remote !== undefined) {
    if (v.control !== undefined) throw new UsageError("--remote and --control exclude each other");
    if (keyFile === undefined || keyFile === "") {
      throw new UsageError("--remote needs --key-file FILE, a control key of that daemon");
    }
    return { remote: hostOptionalPort(remote, "--remote", DEFAULT_CONTROL_PORT), keyFile };
  }
  if (keyFile !== undefined) {
    throw new UsageError("--key-file goes with --remote (the local control socket needs no key)");
  }
  const path = (v.control as string | undefined) ?? defaultControl;
  if (path === "") throw new UsageError("--control needs a path");
  return { path };
}

/** Parses `vela COMMAND ...`. */
function parseSubcommand(name: SubcommandName, argv: string[], defaultControl: string): Command {
  const table: OptionTable = SUBCOMMAND_OPTIONS[name];
  const { values: v, positionals } = parseOptions(argv, table, name);
  if (v.help) return { kind: "help", command: name };
  const noPositionals = () => {
    if (positionals.length > 0) {
      throw new UsageError(`Unexpected argument "${positionals[0]}" for vela ${name}`);
    }
  };
  switch (name) {
    case "help": {
      if (positionals.length > 1) throw new UsageError("Give vela help at most one command");
      if (positionals.length === 0) return { kind: "help" };
      const command = SUBCOMMANDS.find((c) => c === positionals[0]);
      if (!command) throw new UsageError(unknownCommand(positionals[0]));
      return { kind: "help", command };
    }
    case "genkey":
      noPositionals();
      return { kind: "genkey" };
    case "man":
      noPositionals();
      return { kind: "man" };
    case "completion": {
      const shell = positionals[0];
      if (positionals.length !== 1 || (shell !== "bash" && shell !== "zsh")) {
        throw new UsageError("Give vela completion bash or zsh");
      }
      return { kind: "completion", shell };
    }
    case "check-config":
      if (positionals.length !== 1) throw new UsageError("Give vela check-config one file name");
      return { kind: "check-config", file: positionals[0] };
    default:
      break;
  }
  const target = controlTarget(v, defaultControl);
  const json = (v.json as boolean | undefined) ?? false;
  const watchOptions = (): { intervalS: number; count?: number } => ({
    intervalS: v.interval === undefined
      ? WATCH_INTERVAL_DEFAULT_S
      : integer(v.interval as string, "--interval", 1, 3600),
    ...(v.count === undefined ? {} : { count: integer(v.count as string, "--count", 1, 1_000_000) }),
  });
  switch (name) {
    case "status": {
      if (positionals.length > 1) throw new UsageError("Give vela status at most one interface name");
      if (positionals.length === 1 && v.circuit !== undefined) {
        throw new UsageError("Give the circuit as IFNAME or as --circuit IFNAME, not both");
      }
      const circuit = (v.circuit as string | undefined) ?? positionals[0];
      if (v.watch) {
        if (json || circuit !== undefined) throw new UsageError("--watch goes without --json and IFNAME");
        return { kind: "top", target, ...watchOptions() };
      }
      if (v.interval !== undefined || v.count !== undefined) {
        throw new UsageError("--interval and --count go with --watch");
      }
      return circuit === undefined
        ? { kind: "status", target, json }
        : { kind: "status", target, json, circuit };
    }
    case "top":
      noPositionals();
      return { kind: "top", target, ...watchOptions() };
    case "devices":
      noPositionals();
      return { kind: "devices", target, json };
    case "showconf":
      noPositionals();
      return { kind: "showconf", target };
    default:
      break;
  }
  noPositionals();
  const peer = v.peer as string | undefined;
  if (peer === undefined) throw new UsageError(`Give vela ${name} --peer HOST --vid N`);
  if (name === "close") {
    if (v.vid === undefined) throw new UsageError("Give vela close --vid N (1 to 255)");
    return { kind: "close", target, json, peer, vid: integer(v.vid as string, "--vid", MIN_VID, MAX_VID) };
  }
  const port = v.port === undefined ? undefined : integer(v.port as string, "--port", 1, 65535);
  if (v.ipv4 && v.ipv6) throw new UsageError("-4 and -6 exclude each other");
  const circuit = validateCircuit({
    peer,
    vid: v.vid as string | undefined,
    mode: v.mode as string | undefined,
    address: v.address as string[] | undefined,
    mtu: v.mtu as string | undefined,
    ifname: v.ifname as string | undefined,
    family: v.ipv4 ? 4 : v.ipv6 ? 6 : undefined,
    bridge: v.bridge as string | undefined,
    farBridge: v["far-bridge"] as string | undefined,
    compress: compressFlags(v),
  }, "--");
  return { kind: "connect", target, json, circuit, port };
}

/** The sentence for a first word that is no command. */
function unknownCommand(word: string): string {
  const nearest = nearestWord(word, SUBCOMMANDS);
  return `Unknown command "${word}"${nearest ? `; did you mean vela ${nearest}?` : "; see vela help"}`;
}

/**
 * Parses the arguments; throws UsageError with one line that says what is wrong. `defaultControl` is
 * the control socket when --control is not given (main.ts derives it for the network namespace).
 */
export function parseCommandLine(argv: string[], defaultControl: string = HOST_CONTROL): Command {
  const first = argv[0];
  if (first !== undefined && !first.startsWith("-")) {
    const subcommand = SUBCOMMANDS.find((name) => name === first);
    if (!subcommand) throw new UsageError(unknownCommand(first));
    return parseSubcommand(subcommand, argv.slice(1), defaultControl);
  }
  const { values, positionals } = parseOptions(argv, DAEMON_OPTIONS, "");
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument "${positionals[0]}"; options start with --`);
  }
  const v = values as {
    [K in keyof typeof DAEMON_OPTIONS]?: typeof DAEMON_OPTIONS[K] extends { type: "boolean" } ? boolean
      : typeof DAEMON_OPTIONS[K] extends { multiple: true } ? string[]
      : string;
  };
  if (v.help) return { kind: "help" };
  if (v.version) return { kind: "version" };
  if (v.verbose && v.quiet) throw new UsageError("--verbose and --quiet exclude each other");
  if (v.ipv4 && v.ipv6) throw new UsageError("-4 and -6 exclude each other");
  const port = v.port === undefined ? DEFAULT_PORT : integer(v.port, "--port", 1, 65535);
  const listen = v.listen ?? false;
  const allow = (v.allow ?? []).map((text) => prefix(text, "--allow"));
  const insecureAcceptAny = v["insecure-accept-any"] ?? false;
  if (!listen && (allow.length > 0 || insecureAcceptAny)) {
    throw new UsageError("--allow and --insecure-accept-any go with --listen");
  }
  const keyFiles = v["key-file"] ?? [];
  if (keyFiles.some((file) => file === "")) throw new UsageError("--key-file needs a file name");
  const keyFile = keyFiles[0];
  if (v.config !== undefined) {
    const alongside: readonly string[] = ["config", ...CONFIG_COMPANIONS];
    const others = Object.keys(v).filter((name) => !alongside.includes(name));
    if (others.length > 0) {
      throw new UsageError(
        `--config goes alone or with ${CONFIG_COMPANIONS.map((name) => `--${name}`).join(", ")}; --${
          others[0]
        } belongs in the file`,
      );
    }
    if (v.config === "") throw new UsageError("--config needs a file name");
  }
  if (listen && allow.length === 0 && !insecureAcceptAny && keyFile === undefined) {
    throw new UsageError(
      "--listen needs --allow CIDR (the initiators' underlay prefix), --key-file FILE or --insecure-accept-any",
    );
  }
  if (listen && v["local-port"] !== undefined) {
    throw new UsageError("--local-port does not go with --listen; use --port");
  }
  const localPort = listen
    ? port
    : v["local-port"] === undefined
    ? 0
    : integer(v["local-port"], "--local-port", 1, 65535);
  const circuitOptions = [
    "vid",
    "mode",
    "address",
    "mtu",
    "ifname",
    "local-port",
    "ipv4",
    "ipv6",
    "local-mac",
    "remote-mac",
    "block",
    "far-bridge",
  ] as const;
  if (v.peer === undefined) {
    const stray = circuitOptions.find((name) => v[name] !== undefined);
    if (stray) throw new UsageError(`--${stray} goes with --peer`);
    if (!listen && v.config === undefined) {
      throw new UsageError(
        "Give --peer HOST --vid N to start a circuit, --listen to accept them, or --config FILE",
      );
    }
  }
  const args: DaemonArgs = {
    verbosity: v.verbose ? "verbose" : v.quiet ? "quiet" : "normal",
    listen,
    allow,
    insecureAcceptAny,
    port,
    localPort,
    keyFile,
    configFile: v.config,
    control: v.control ?? defaultControl,
    metrics: v.metrics === undefined ? undefined : hostPort(v.metrics, "--metrics"),
    underlay: (v.underlay ?? "libc") as "libc" | "deno",
    offload: !v["no-offload"],
  };
  if (keyFiles.length > 1) args.extraKeyFiles = keyFiles.slice(1);
  if (v.cipher !== undefined) {
    args.cipher = parseCipher(v.cipher, "--cipher");
    if (keyFile === undefined) {
      throw new UsageError("--cipher goes with --key-file (without a key frames are clear)");
    }
  }
  const compress = compressFlags(v);
  if (compress !== undefined) args.compress = compress as CompressPolicy;
  if (v["compress-mode"] !== undefined) {
    if (v["compress-mode"] !== "stateless" && v["compress-mode"] !== "dictionary") {
      throw new UsageError(`--compress-mode is stateless or dictionary, not "${v["compress-mode"]}"`);
    }
    if (compress === undefined) {
      throw new UsageError("--compress-mode goes with --compress or --compress-with-encryption");
    }
    args.compressMode = v["compress-mode"];
  }
  if (v["rekey-after"] !== undefined) {
    args.rekeyAfterMs =
      integer(v["rekey-after"], "--rekey-after", MIN_REKEY_AFTER_MS / 1000, MAX_REKEY_AFTER_MS / 1000) *
      1000;
  }
  if (v["max-circuits"] !== undefined) {
    args.maxCircuits = integer(v["max-circuits"], "--max-circuits", 1, MAX_CIRCUITS_LIMIT);
  }
  if (v["max-circuits-per-peer"] !== undefined) {
    args.maxCircuitsPerPeer = integer(v["max-circuits-per-peer"], "--max-circuits-per-peer", 1, MAX_VID);
  }
  if (v["datapath-threads"] !== undefined) {
    args.datapathThreads = integer(v["datapath-threads"], "--datapath-threads", 1, 2) as 1 | 2;
    if (v.underlay === "deno") throw new UsageError("--datapath-threads goes with the libc underlay");
  }
  if (v["moderation-us"] !== undefined) {
    args.moderationUs = integer(v["moderation-us"], "--moderation-us", 0, 1000);
    if (v.underlay === "deno") throw new UsageError("--moderation-us goes with the libc underlay");
  }
  if (args.underlay !== "libc" && args.underlay !== "deno") {
    throw new UsageError(`--underlay is libc or deno, not "${v.underlay}"`);
  }
  if (args.control === "") throw new UsageError("--control needs a path");
  const controlKeys = v["control-key"] ?? [];
  const controlReadKeys = v["control-read-key"] ?? [];
  if ([...controlKeys, ...controlReadKeys].some((file) => file === "")) {
    throw new UsageError("--control-key and --control-read-key need a file name");
  }
  if (v["control-listen"] !== undefined) {
    args.controlListen = hostOptionalPort(v["control-listen"], "--control-listen", DEFAULT_CONTROL_PORT);
    if (controlKeys.length === 0 && keyFile === undefined && v.config === undefined) {
      throw new UsageError(
        "--control-listen needs a key: --control-key FILE (or the daemon's --key-file, which then opens it too)",
      );
    }
    if (controlKeys.length > 0) args.controlKeyFiles = controlKeys;
    if (controlReadKeys.length > 0) args.controlReadKeyFiles = controlReadKeys;
  } else if (controlKeys.length > 0 || controlReadKeys.length > 0) {
    throw new UsageError(
      `--${controlKeys.length > 0 ? "control-key" : "control-read-key"} goes with --control-listen`,
    );
  }
  if (v.peer !== undefined) {
    args.peer = validateCircuit({
      peer: v.peer,
      vid: v.vid,
      mode: v.mode,
      address: v.address,
      mtu: v.mtu,
      ifname: v.ifname,
      family: v.ipv4 ? 4 : v.ipv6 ? 6 : undefined,
      bridge: v.bridge,
      farBridge: v["far-bridge"],
      compress: compressFlags(v),
      localMac: v["local-mac"],
      remoteMac: v["remote-mac"],
      block: v.block,
    }, "--");
  }
  if (v.bridge !== undefined) {
    if (!validInterfaceName(v.bridge)) {
      throw new UsageError(`--bridge "${v.bridge}" is not a valid interface name`);
    }
    if (listen) args.bridge = v.bridge;
    else if (v.peer === undefined) throw new UsageError("--bridge goes with --peer or --listen");
  }
  for (const name of v["offer-bridge"] ?? []) {
    if (!validInterfaceName(name)) {
      throw new UsageError(`--offer-bridge "${name}" is not a valid interface name`);
    }
    if (!listen) throw new UsageError("--offer-bridge goes with --listen");
    (args.offerBridges ??= []).push(name);
  }
  for (const hook of ["up", "down"] as const) {
    if (v[hook] === undefined) continue;
    if (v[hook] === "") throw new UsageError(`--${hook} needs a command`);
    args[hook] = v[hook];
  }
  return { kind: "daemon", args };
}
