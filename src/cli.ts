/** The command line: parsing and validation (node:util parseArgs), the help text. Pure: no I/O. */

import { parseArgs } from "node:util";
import { type IpPrefix, parseCidr, peerAddress } from "./ip.ts";
import type { LinkMode } from "./link/link_device.ts";
import type { Verbosity } from "./log.ts";
import { validInterfaceName } from "../ffi/structs.ts";
import {
  DEFAULT_MAX_CIRCUITS,
  DEFAULT_MAX_CIRCUITS_PER_PEER,
  MAX_CIRCUITS_LIMIT,
  MAX_LINK_MTU,
  MAX_VID,
  MIN_LINK_MTU,
  MIN_VID,
} from "./circuit_rules.ts";
import { MAX_REKEY_AFTER_MS, MIN_REKEY_AFTER_MS, MODERATION_WAIT_US, REKEY_AFTER_MS } from "./timing.ts";
import type { CipherPolicy } from "./session.ts";
import { type FrameFilter, parseFilter } from "./datapath/filter_stage.ts";

export const DEFAULT_PORT = 4455;

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
  /** The existing Linux bridge the circuit's tap joins (--bridge). */
  bridge?: string;
  /** The listener's bridge the far tap is asked to join (--far-bridge). */
  farBridge?: string;
  /** Which frames may cross (--local-mac, --remote-mac, --block). */
  filter?: FrameFilter;
}

export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "genkey" }
  | { kind: "daemon"; args: DaemonArgs }
  | { kind: "status"; control: string; json: boolean }
  | { kind: "devices"; control: string; json: boolean }
  | { kind: "connect"; control: string; json: boolean; circuit: CircuitArgs; port?: number }
  | { kind: "close"; control: string; json: boolean; peer: string; vid: number }
  | { kind: "check-config"; file: string };

/** Where the daemon's control socket is unless --control says otherwise. */
export const DEFAULT_CONTROL = "/run/vela/vela.sock";

export const HELP = `VELA, the Virtual Ethernet Link Application: an Ethernet link between two hosts over UDP.

Usage:
  vela --peer HOST --vid N [options]     start a circuit to HOST; HOST's side is configured by the handshake
  vela --listen --allow CIDR [options]   accept circuits from initiators in CIDR (repeatable)
  vela --listen --key-file FILE          accept circuits from initiators that hold the same key
  vela --config FILE                     run the listener and circuits a JSON file describes
  vela genkey                            print a new random key (one line) for --key-file
  vela status [--json]                   the running daemon's circuits: state, uptime, RTT, counters, drops
  vela devices [--json]                  the interfaces the running daemon made
  vela connect --peer HOST --vid N [circuit options]   add a circuit to the running daemon
  vela close --peer HOST --vid N         close a circuit of the running daemon
  vela check-config FILE                 check a --config file and exit
  vela --help | --version

Circuit options (with --peer):
  --peer HOST         peer name or IPv4/IPv6 address (a name is looked up again when the peer goes
                      silent and every minute; the circuit follows it)
  --vid N             circuit id, 1 to 255; the interface is vela<N>
  --mode tap|tun      tap carries Ethernet frames (default), tun carries IP packets
  --address CIDR      this side's address, e.g. 198.18.207.1/30 or fd00:1::1/126 (repeatable, one per
                      family); the peer takes the other host of the pair (/31 and /127 also work)
  --mtu N             link MTU to propose (default: the route MTU to the peer minus the encapsulation)
  --ifname NAME       interface name instead of vela<N>
  --bridge BR         put the tap into the existing Linux bridge BR; a bridged tap needs no --address
  --far-bridge BR     ask the listener to put its tap into its bridge BR (one it offers: --offer-bridge)
  --local-mac MAC     a MAC on this side (repeatable)
  --remote-mac MAC    a MAC on the far side (repeatable); with either, a tap circuit carries out only
                      frames from a local or to a remote MAC, and in only frames to a local or from a
                      remote MAC (broadcast and multicast from a listed host too); the rest is counted
  --block KIND        frames that never cross (repeatable): ipv4, arp, ipv6, lldp, stp, broadcast,
                      multicast, or an EtherType such as 0x88b5
  --local-port P      local UDP port (default: any free port; with --listen, the --port)
  -4, --ipv4          use only the peer's IPv4 address
  -6, --ipv6          use only the peer's IPv6 address

Listener options:
  --listen            accept IREQs and create the interfaces they ask for
  --allow CIDR        underlay prefix whose IREQs are accepted (repeatable)
  --insecure-accept-any   accept IREQs from any address (for closed test networks only)
  --max-circuits N    circuits this daemon holds at most (1-${MAX_CIRCUITS_LIMIT}, default ${DEFAULT_MAX_CIRCUITS}); an IREQ
                      beyond it is refused with a NAK and counted (circuit-limit)
  --max-circuits-per-peer N
                      circuits one peer address may hold here (1-${MAX_VID}, default ${DEFAULT_MAX_CIRCUITS_PER_PEER})
  --bridge BR         every tap this listener creates joins the existing Linux bridge BR
  --offer-bridge BR   an initiator may ask (--far-bridge BR) for its tap to join bridge BR (repeatable)

Common options:
  --key-file FILE     pre-shared key (from vela genkey), the same on both sides: every control message
                      carries a MAC, every data frame is encrypted and authenticated with keys made
                      new by each handshake; give it again for more keys a listener accepts (the first
                      one is the initiator's)
  --cipher C          the data cipher with a key: auto (default: AES-256-GCM where both CPUs have AES
                      instructions, else ChaCha20-Poly1305), aes-256-gcm, chacha20-poly1305, or none
                      (frames in clear on purpose; both ends log a warning)
  --up CMD            run CMD (with sh -c) once a circuit's interface is up; VELA_IFNAME, VELA_VID,
                      VELA_PEER, VELA_MODE, VELA_ROLE, VELA_BRIDGE and VELA_EVENT=up in its environment
  --down CMD          the same when the interface is removed (VELA_EVENT=down)
  --rekey-after S     new session keys every S seconds (1-120, default ${REKEY_AFTER_MS / 1000})
  --port P            UDP port of the peer and of the listener (default ${DEFAULT_PORT})
  --control PATH      the daemon's control socket (default ${DEFAULT_CONTROL}); the subcommands
                      talk to it; two daemons on one host need two paths
  --metrics HOST:PORT serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9455)
  --underlay libc|deno  the UDP datapath: libc (default: a socket made through libc, served by
                      Worker threads with recvmmsg/sendmmsg) or deno (Deno.listenDatagram)
  --no-offload        no offloads: devices without TCP or UDP segmentation and checksum offload, no UDP GSO
                      or GRO (the libc datapath uses them where the kernel allows; turn them off if a
                      kernel's GSO misbehaves)
  --datapath-threads 1|2  Worker threads of the libc datapath: 2, one receiving and one sending
                      (default where the machine has 2 CPUs or more), or 1 doing both (default on 1 CPU)
  --moderation-us N   while the devices carry over 200 Mbit/s, the libc datapath waits N microseconds
                      (0-1000; default ${MODERATION_WAIT_US}, 0 with --no-offload) after each wake-up before
                      it reads them, so one sendmmsg carries more frames; 0 never waits (less delay, more
                      CPU under load)
  --json              (status, devices, connect, close) print the daemon's answer as JSON
  -v, --verbose       log debug messages too
  -q, --quiet         log errors only
  -h, --help          show this help
  -V, --version       show the version

The daemon runs until SIGINT or SIGTERM, then tells its peers (CREQ) and removes its interfaces.
SIGHUP makes a daemon started with --config read the file again: new circuits start, removed ones
close, unchanged ones are not touched.
Exit codes: 0 on a clean stop, 1 on a runtime failure, 2 on a usage error.
`;

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

/** "HOST:PORT" or "[IPv6]:PORT" for --metrics. */
function hostPort(text: string, option: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+)):([0-9]{1,5})$/.exec(text);
  if (!match) throw new UsageError(`${option} takes HOST:PORT, such as 127.0.0.1:9455, not "${text}"`);
  return { hostname: match[1] ?? match[2], port: integer(match[3], option, 1, 65535) };
}

const SUBCOMMANDS = ["status", "devices", "connect", "close", "check-config"] as const;

/** Parses `vela status|devices|connect|close|check-config ...`. */
function parseSubcommand(name: typeof SUBCOMMANDS[number], argv: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: name === "check-config",
      options: {
        control: { type: "string" },
        json: { type: "boolean" },
        ...(name === "connect" || name === "close"
          ? { peer: { type: "string" }, vid: { type: "string" }, port: { type: "string" } }
          : {}),
        ...(name === "connect"
          ? {
            mode: { type: "string" },
            address: { type: "string", multiple: true },
            mtu: { type: "string" },
            ifname: { type: "string" },
            bridge: { type: "string" },
            "far-bridge": { type: "string" },
            ipv4: { type: "boolean", short: "4" },
            ipv6: { type: "boolean", short: "6" },
          }
          : {}),
      },
    });
  } catch (error) {
    throw new UsageError(`${name}: ${(error as Error).message.split("\n")[0].replace(/\.$/, "")}`);
  }
  const v = parsed.values as Record<string, string | string[] | boolean | undefined>;
  const control = (v.control as string | undefined) ?? DEFAULT_CONTROL;
  if (control === "") throw new UsageError("--control needs a path");
  const json = (v.json as boolean | undefined) ?? false;
  if (name === "check-config") {
    if (parsed.positionals.length !== 1) throw new UsageError("check-config takes one file name");
    if (v.control !== undefined || json) throw new UsageError("check-config takes only a file name");
    return { kind: "check-config", file: parsed.positionals[0] };
  }
  if (name === "status" || name === "devices") return { kind: name, control, json };
  const peer = v.peer as string | undefined;
  if (peer === undefined) throw new UsageError(`${name} needs --peer HOST --vid N`);
  const port = v.port === undefined ? undefined : integer(v.port as string, "--port", 1, 65535);
  if (name === "close") {
    if (v.vid === undefined) throw new UsageError("close needs --vid N (1 to 255)");
    if (port !== undefined) throw new UsageError("close takes --peer and --vid only");
    return { kind: "close", control, json, peer, vid: integer(v.vid as string, "--vid", MIN_VID, MAX_VID) };
  }
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
  }, "--");
  return { kind: "connect", control, json, circuit, port };
}

/** Parses the arguments; throws UsageError with one line that says what is wrong. */
export function parseCommandLine(argv: string[]): Command {
  if (argv[0] === "genkey") {
    if (argv.length > 1) throw new UsageError(`genkey takes no arguments, not "${argv[1]}"`);
    return { kind: "genkey" };
  }
  const subcommand = SUBCOMMANDS.find((name) => name === argv[0]);
  if (subcommand) return parseSubcommand(subcommand, argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        peer: { type: "string" },
        vid: { type: "string" },
        mode: { type: "string" },
        address: { type: "string", multiple: true },
        mtu: { type: "string" },
        ifname: { type: "string" },
        bridge: { type: "string" },
        "far-bridge": { type: "string" },
        "offer-bridge": { type: "string", multiple: true },
        "local-mac": { type: "string", multiple: true },
        "remote-mac": { type: "string", multiple: true },
        block: { type: "string", multiple: true },
        up: { type: "string" },
        down: { type: "string" },
        port: { type: "string" },
        "local-port": { type: "string" },
        listen: { type: "boolean" },
        allow: { type: "string", multiple: true },
        "insecure-accept-any": { type: "boolean" },
        "max-circuits": { type: "string" },
        "max-circuits-per-peer": { type: "string" },
        "key-file": { type: "string", multiple: true },
        cipher: { type: "string" },
        "rekey-after": { type: "string" },
        config: { type: "string" },
        control: { type: "string" },
        metrics: { type: "string" },
        underlay: { type: "string" },
        "no-offload": { type: "boolean" },
        "datapath-threads": { type: "string" },
        "moderation-us": { type: "string" },
        ipv4: { type: "boolean", short: "4" },
        ipv6: { type: "boolean", short: "6" },
        verbose: { type: "boolean", short: "v" },
        quiet: { type: "boolean", short: "q" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0].replace(/\.$/, ""));
  }
  const v = parsed.values;
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
    const alongside = [
      "config",
      "verbose",
      "quiet",
      "control",
      "metrics",
      "underlay",
      "no-offload",
      "datapath-threads",
      "moderation-us",
    ];
    const others = Object.keys(v).filter((name) => !alongside.includes(name));
    if (others.length > 0) {
      throw new UsageError(
        `--config goes alone (with --control, --metrics, -v or -q), not with --${others[0]}`,
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
    control: v.control ?? DEFAULT_CONTROL,
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
