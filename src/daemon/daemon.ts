/**
 * The daemon: binds the underlay, runs the datapath, keeps one session per circuit keyed by (remote
 * address, vid) and carries out what the sessions ask for (send, create or remove a device, forward).
 */

import type { Logger } from "@logtape/logtape";
import { zeroCounters } from "../datapath/counters.ts";
import type { ControlHandler } from "../datapath/core.ts";
import type { DatapathEngine, DeviceFailureHandler } from "../datapath/engine.ts";
import { IsolateDatapath } from "../datapath/isolate_host.ts";
import { explainDeviceError, RuntimeFailure } from "../errors.ts";
import type { HostNetwork } from "../host_network.ts";
import {
  circuitKey,
  DEFAULT_MAX_CIRCUITS,
  DEFAULT_MAX_CIRCUITS_PER_PEER,
  defaultInterfaceName,
  linkMtuFor,
  MAX_FRAGMENTED_LINK_MTU,
} from "../circuit_rules.ts";
import {
  formatCidr,
  formatIp,
  type IpAddress,
  type IpPrefix,
  parseIp,
  peerAddress,
  prefixContains,
} from "../ip.ts";
import type { LinkDevice, LinkMode } from "../link/link_device.ts";
import { logger } from "../log.ts";
import {
  type CipherPolicy,
  compressionOverhead,
  type CompressMode,
  type CompressPolicy,
  Session,
} from "../session.ts";
import { cpuHasAes } from "../crypto/cpu.ts";
import { loadLibcrypto } from "../../ffi/libcrypto.ts";
import { loadLz4 } from "../../ffi/liblz4.ts";
import { DNS_REFRESH_MS, DROP_LOG_INTERVAL_MS, SHUTDOWN_GRACE_MS } from "../timing.ts";
import { type Endpoint, isIsolateUnderlay, type Underlay } from "../underlay/underlay.ts";
import type { CircuitStatus, ControlDrops, DaemonStatus } from "./status.ts";
import { derivedIPv6, derivedMac, openConfiguredDevice } from "./provisioning.ts";
import { Admission, type AdmissionRules, sessionSigned } from "./admission.ts";
import { equalBytes } from "../packet/bytes.ts";
import type { BridgeRule } from "../config_file.ts";
import type { FrameFilter } from "../datapath/filter_stage.ts";
import { type HookContext, onClose, runHook } from "./hooks.ts";
import { type CircuitHost, CircuitRuntime } from "./circuit_runtime.ts";
import { realTimers, type TimerId, type Timers } from "./timers.ts";

export type { CircuitStatus, ControlDrops, DaemonStatus };
export { derivedIPv6, derivedMac };
import {
  type ControlMessage,
  decode,
  encode,
  encodeOldNak,
  type Ireq,
  IREQ_FLAG_FRAGMENTS,
  IREQ_FLAG_LINK_MTU,
  MAC_LENGTH,
  NakReason,
  type Nonce,
  oldIreq,
} from "../wire.ts";
import { cipherOverhead } from "../datapath/stage.ts";
import { signControl } from "../keys.ts";

/** A circuit this daemon initiates (one --peer). */
export interface CircuitSpec {
  /** The peer as the operator named it. */
  peerName: string;
  /** The peer's resolved underlay address. */
  peer: IpAddress;
  /** The peer's UDP port. */
  port: number;
  vid: number;
  mode: LinkMode;
  /** This side's addresses; the far side takes the other host of each pair. */
  addresses: IpPrefix[];
  /** Link MTU to propose instead of the one derived from the route to the peer. */
  mtu?: number;
  /** Interface name instead of vela<vid>. */
  ifname?: string;
  /** Resolve the peer's name to this family only (-4, -6). */
  family?: 4 | 6;
  /** This circuit's own pre-shared key (else the daemon's). */
  key?: Uint8Array;
  /** The file that key came from (for vela showconf). */
  keyFilePath?: string;
  /** The existing Linux bridge this circuit's tap joins. */
  bridge?: string;
  /** The listener's bridge this circuit asks the far tap to join (--far-bridge). */
  farBridge?: string;
  /** Which frames may cross this (tap) circuit (src/datapath/filter_stage.ts). */
  filter?: FrameFilter;
  /** --cipher for this circuit (else the daemon's). */
  cipher?: CipherPolicy;
  /** --compress for this circuit (else the daemon's): offer compression in the IREQ. */
  compress?: CompressPolicy;
}

export interface DaemonConfig {
  /** Local UDP port; 0 lets the kernel pick one. */
  port: number;
  /** Whether to accept IREQs and create circuits for them. */
  listen: boolean;
  /** Underlay prefixes whose IREQs are accepted. */
  allow: IpPrefix[];
  /** Accept IREQs from anyone. */
  insecureAcceptAny: boolean;
  /**
   * The pre-shared key: circuits without their own use it, and with a key every control message carries
   * a MAC and every data frame is sealed (unless --cipher none).
   */
  key?: Uint8Array;
  /** More keys a listener accepts (--key-file given again, key_files in the config). */
  extraKeys?: Uint8Array[];
  /** The files `key` and `extraKeys` came from (for vela showconf). */
  keyFilePath?: string;
  extraKeyFilePaths?: string[];
  /** --cipher: "auto" (the default), a cipher to insist on, or "clear" (--cipher none). */
  cipher?: CipherPolicy;
  /**
   * --compress (and --compress-with-encryption): a listener accepts compression its initiators offer, and
   * it is the default of this daemon's own circuits. Default "off".
   */
  compress?: CompressPolicy;
  /** --compress-mode: "dictionary" (default) offers and accepts delayed dictionaries, "stateless" not. */
  compressMode?: CompressMode;
  /** New session keys this often (--rekey-after; default REKEY_AFTER_MS). */
  rekeyAfterMs?: number;
  /** Circuits this daemon holds at most (--max-circuits; default DEFAULT_MAX_CIRCUITS). */
  maxCircuits?: number;
  /** Circuits one peer address may have here (--max-circuits-per-peer; default DEFAULT_MAX_CIRCUITS_PER_PEER). */
  maxCircuitsPerPeer?: number;
  /** A listener's bridge for the taps it creates (after `bridges`, the first rule that matches wins). */
  bridge?: string;
  bridges?: BridgeRule[];
  /** Bridges an initiator may ask its tap to join here (its IREQ names one: --far-bridge). */
  offerBridges?: string[];
  /** Hooks (src/daemon/hooks.ts): shell commands run when an interface is up, and when it is removed. */
  up?: string;
  down?: string;
  circuits: CircuitSpec[];
}

/** Every key a daemon holds: the default one, the extra ones and the circuits' own. */
export function daemonKeys(config: DaemonConfig): Uint8Array[] {
  const keys: Uint8Array[] = [];
  for (const key of [config.key, ...(config.extraKeys ?? []), ...config.circuits.map((c) => c.key)]) {
    if (key && !keys.some((k) => equalBytes(k, key))) keys.push(key);
  }
  return keys;
}

/** The outside world of a daemon: the kernel in production, fakes in tests. */
export interface DaemonEnvironment {
  network: HostNetwork;
  bindUnderlay(port: number): Underlay;
  /** Monotonic milliseconds. */
  now(): number;
  /** Timers on the same clock as now() (default: the real ones). */
  timers?: Timers;
  /** Milliseconds since the Unix epoch. */
  wallClock(): number;
  newNonce(): Nonce;
  /** A number in [0, 1) for the jitter of IREQ retries (default Math.random; tests give a fixed one). */
  random?(): number;
  /** Open devices with virtio-net headers and TCP segmentation offload (for the datapath Worker). */
  offload?: boolean;
  /** Makes the datapath for the underlay (default: the in-isolate Datapath). */
  createDatapath?(
    underlay: Underlay,
    onControl: ControlHandler,
    onDeviceFailure: DeviceFailureHandler,
  ): DatapathEngine;
  /** Resolves a peer name (or literal) to one address of the wanted family. */
  resolve(name: string, family?: 4 | 6): Promise<IpAddress>;
}

type Circuit = CircuitRuntime;

/** Whose device a daemon opens: the circuit's vid and peer, its role, and a bridge its spec names. */
export interface DeviceOwner {
  readonly vid: number;
  readonly peer: string;
  readonly role: "initiator" | "responder";
  readonly bridge?: string;
}

export class Daemon {
  #config: DaemonConfig;
  readonly #env: DaemonEnvironment;
  readonly #timers: Timers;
  readonly #log: Logger = logger("daemon");
  readonly #circuits = new Map<string, Circuit>();
  readonly #pendingSends = new Set<Promise<boolean>>();
  readonly #pendingHooks = new Set<Promise<void>>();
  readonly #lastDropLog = new Map<string, number>();
  readonly controlDrops: ControlDrops = {};
  readonly #admission = new Admission();
  /** The addresses each interface was given, and which of them VELA derived (for status). */
  readonly #deviceAddresses = new WeakMap<LinkDevice, { all: string[]; derived: string[] }>();
  /** What the admission policy reads of the configuration, its keys gathered once per configuration. */
  #rules: AdmissionRules;
  /** What the circuits' runtimes need of this daemon. */
  readonly #circuitHost: CircuitHost = this.#makeCircuitHost();
  #underlay?: Underlay;
  #datapath?: DatapathEngine;
  #running?: Promise<void>;
  #resolveFailed!: (error: Error) => void;
  /**
   * Resolves when the datapath failed (a Worker died): the daemon has stopped by then, its interfaces
   * removed, and the process should exit with an error.
   */
  readonly failed: Promise<Error> = new Promise((resolve) => this.#resolveFailed = resolve);
  #dnsRefresh?: TimerId;
  #stopped = false;

  constructor(config: DaemonConfig, env: DaemonEnvironment) {
    this.#config = config;
    this.#rules = admissionRules(config);
    this.#env = env;
    this.#timers = env.timers ?? realTimers;
  }

  /** The local UDP port once started. */
  get port(): number {
    return this.#underlay?.port ?? 0;
  }

  get datapath(): DatapathEngine | undefined {
    return this.#datapath;
  }

  /** The circuits by key with their state and interface, for status and tests. */
  circuits(): { key: string; state: string; ifname?: string; mtu: number; remote: Endpoint }[] {
    return [...this.#circuits.values()].map((c) => ({
      key: c.key,
      state: c.session.state,
      ifname: c.device?.name,
      mtu: c.session.mtu,
      remote: c.remote,
    }));
  }

  /** Every circuit with its state and counters, and the drops by reason: what `vela status` shows. */
  status(): DaemonStatus {
    this.#datapath?.refreshCounters?.();
    const now = this.#env.now();
    const circuits = [...this.#circuits.values()].map((c): CircuitStatus => ({
      peer: c.spec?.peerName ?? c.remote.address,
      address: c.remote.address,
      port: c.remote.port,
      vid: c.session.vid,
      role: c.session.role,
      state: c.session.state,
      ifname: c.device?.name ?? null,
      mode: c.session.mode,
      mtu: c.session.mtu,
      uptimeSeconds: c.establishedAt === undefined ? null : Math.floor((now - c.establishedAt) / 1000),
      rttMs: c.session.rttMs ?? null,
      txPackets: c.counters.txPackets,
      txBytes: c.counters.txBytes,
      rxPackets: c.counters.rxPackets,
      rxBytes: c.counters.rxBytes,
      cipher: c.session.cipher ?? "-",
      keyAgeSeconds: c.session.keysSince === undefined
        ? null
        : Math.floor((now - c.session.keysSince) / 1000),
      rotations: c.session.rotations,
      fragmented: c.counters.fragmented,
      reassembled: c.counters.reassembled,
      compression: c.session.compression,
      ...(c.session.compressing
        ? {
          compressIn: c.counters.compressIn,
          compressOut: c.counters.compressOut,
          sentUncompressed: c.counters.sentUncompressed,
          compressionPauses: c.counters.compressionPauses,
        }
        : {}),
      ...(c.session.compression === "dictionary"
        ? { dictionaryEpoch: c.counters.dictionaryInUse, dictionariesUsed: c.counters.dictionariesUsed }
        : {}),
      datagramLimit: c.datagramLimit(),
      ...(c.pathMtu === undefined ? {} : { pathMtu: c.pathMtu }),
      addresses: (c.device && this.#deviceAddresses.get(c.device)?.all) || [],
      derivedAddresses: (c.device && this.#deviceAddresses.get(c.device)?.derived) || [],
      lastHeardSeconds: c.session.lastHeard === undefined
        ? null
        : Math.floor((now - c.session.lastHeard) / 1000),
      downSinceSeconds: c.establishedAt === undefined ? Math.floor((now - c.downSince) / 1000) : null,
      refusal: c.session.state === "refused" ? c.refusal ?? null : null,
      handshake: c.session.handshake,
      drops: {
        sendFailed: c.counters.txDropped,
        deviceRefused: c.counters.rxDropped,
        badTag: c.counters.badTag,
        replayedData: c.counters.replayedData,
        tooOld: c.counters.tooOld,
        noKey: c.counters.noKey,
        keyExhausted: c.counters.keyExhausted,
        filtered: c.counters.filtered,
        reassembly: c.counters.reassemblyDropped,
        badCompression: c.counters.badCompression,
        dictionaryMissing: c.counters.dictionaryMissing,
      },
    }));
    return {
      port: this.port,
      listen: this.#config.listen,
      circuits,
      drops: this.#dropCounts(),
      moderatedWakeups: this.#datapath?.counters.moderatedWakeups ?? 0,
      gsoRefusals: this.#datapath?.counters.gsoRefusals ?? 0,
    };
  }

  /**
   * The configuration the daemon runs: its settings and every circuit it initiates, those added with
   * connect() included (what `vela showconf` prints as a config file).
   */
  runningConfig(): DaemonConfig {
    const circuits = [...this.#circuits.values()].flatMap((c) => c.spec ? [c.spec] : []);
    return { ...this.#config, circuits };
  }

  /** Starts one more circuit in the running daemon; throws RuntimeFailure. */
  connect(spec: CircuitSpec): void {
    if (this.#stopped) throw new RuntimeFailure("The daemon is stopping");
    const most = this.#config.maxCircuits ?? DEFAULT_MAX_CIRCUITS;
    if (this.#circuits.size >= most) {
      throw new RuntimeFailure(`The daemon holds its maximum of ${most} circuits (max_circuits)`);
    }
    this.#startCircuit(spec);
  }

  /**
   * Closes the circuit to `peer` (a name the operator gave, or an address) on `vid`: CREQ to the peer,
   * the interface removed. Returns false when there is no such circuit.
   */
  close(peer: string, vid: number): boolean {
    const address = parseIp(peer);
    const text = address ? formatIp(address) : undefined;
    const circuit = [...this.#circuits.values()].find((c) =>
      c.session.vid === vid && (c.remote.address === text || c.spec?.peerName === peer)
    );
    if (!circuit) return false;
    this.#closeCircuit(circuit);
    return true;
  }

  #closeCircuit(circuit: Circuit): void {
    circuit.apply(circuit.session.handle({ type: "close" }, this.#env.now()));
    this.#timers.clearTimeout(circuit.timer);
    circuit.device?.close();
    if (this.#circuits.get(circuit.key) === circuit) this.#circuits.delete(circuit.key);
    this.#log.info(`Circuit ${circuit.session.vid} with ${circuit.remote.address} closed`);
  }

  /**
   * Takes a new configuration (SIGHUP): circuits it adds start, circuits it drops close, circuits it
   * keeps unchanged are not touched; the listener's policy and key are replaced. The UDP port stays.
   * Nothing changes when an added circuit cannot start (no route to its peer, say): the RuntimeFailure
   * says which.
   */
  reload(config: DaemonConfig): { added: number; removed: number; kept: number } {
    const same = (a: CircuitSpec, b: CircuitSpec) =>
      JSON.stringify(specIdentity(a)) === JSON.stringify(specIdentity(b));
    const added = [...config.circuits];
    const removed: Circuit[] = [];
    let kept = 0;
    for (const circuit of this.#circuits.values()) {
      if (!circuit.spec) continue;
      const index = added.findIndex((spec) => same(spec, circuit.spec!));
      if (index >= 0) {
        added.splice(index, 1);
        kept++;
      } else {
        removed.push(circuit);
      }
    }
    // Check first what can fail, so that a bad file changes nothing.
    checkCircuitCount(config);
    for (const spec of added) this.#circuitMtu(spec);
    for (const circuit of removed) this.#closeCircuit(circuit);
    if (config.port !== this.#config.port) {
      this.#log.warn(`The UDP port stays ${this.port} until a restart`);
    }
    this.#config = { ...config, port: this.#config.port };
    this.#rules = admissionRules(this.#config);
    for (const spec of added) this.#startCircuit(spec);
    return { added: added.length, removed: removed.length, kept };
  }

  #dropCounts(): Record<string, number> {
    const counts: Record<string, number> = { ...this.controlDrops };
    const datapath = this.#datapath?.counters;
    if (datapath) {
      counts["unknown-circuit"] = datapath.unknownCircuit;
      counts["runt"] = datapath.runt;
      counts["empty"] = (counts["empty"] ?? 0) + datapath.empty;
      counts["malformed-control"] = datapath.controlMalformed;
      counts["control-overflow"] = datapath.controlOverflow;
      counts["datapath-error"] = datapath.datapathErrors;
      counts["fragment-refused"] = datapath.fragmentRefused;
    }
    return counts;
  }

  /** Every drop counter by reason, as "reason N, ..." ("none" when nothing was dropped). */
  dropSummary(): string {
    const text = Object.entries(this.#dropCounts()).filter(([, n]) => n > 0).map(([reason, n]) =>
      `${reason} ${n}`
    )
      .join(", ");
    return text || "none";
  }

  /** Binds the underlay, starts the datapath and every configured circuit. Throws RuntimeFailure. */
  start(): void {
    const { port } = this.#config;
    checkCircuitCount(this.#config);
    this.#checkCrypto(this.#config);
    try {
      this.#underlay = this.#env.bindUnderlay(port);
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) {
        throw new RuntimeFailure(
          `UDP port ${port} is already in use; stop the other daemon or choose another ${
            this.#config.listen ? "--port" : "--local-port"
          }`,
        );
      }
      throw new RuntimeFailure(`Cannot open UDP port ${port}: ${(error as Error).message}`);
    }
    const onControl = (datagram: Uint8Array, from: Endpoint, known: boolean) =>
      this.#onControl(datagram, from, known);
    const onDeviceFailure = (vid: number, remote: Endpoint, error: unknown) =>
      this.#onDeviceFailure(vid, remote, error);
    const underlay = this.#underlay;
    this.#datapath = this.#env.createDatapath?.(underlay, onControl, onDeviceFailure) ??
      (isIsolateUnderlay(underlay) ? new IsolateDatapath(underlay, onControl, onDeviceFailure) : undefined);
    if (!this.#datapath) {
      underlay.close();
      throw new RuntimeFailure("This underlay needs a datapath of its own; none was given");
    }
    // A datapath that fails (a Worker died) forwards nothing any more: the daemon is told, and stops.
    this.#running = this.#datapath.run().catch((error: Error) => {
      this.#log.error(`${error.message}; VELA stops`);
      this.#running = undefined;
      this.stop().finally(() => this.#resolveFailed(error));
    });
    try {
      for (const spec of this.#config.circuits) this.#startCircuit(spec);
    } catch (error) {
      void this.#datapath.stop();
      this.#closeEverything();
      throw error;
    }
    this.#dnsRefresh = this.#timers.setInterval(() => {
      for (const circuit of this.#circuits.values()) if (circuit.spec) this.#refreshPeer(circuit);
    }, DNS_REFRESH_MS);
    const where = this.#config.listen ? `listening on UDP port ${this.port}` : `on UDP port ${this.port}`;
    this.#log.info(`VELA started, ${where}`);
  }

  /**
   * A keyed daemon that would seal frames needs libcrypto, and one that would compress liblz4: without
   * it, it stops here with the sentence that says what to install (it never falls back to clear or to
   * uncompressed by itself). Throws RuntimeFailure.
   */
  #checkCrypto(config: DaemonConfig): void {
    const sealing = (key: Uint8Array | undefined, cipher: CipherPolicy | undefined) =>
      key !== undefined && (cipher ?? config.cipher ?? "auto") !== "clear";
    const needed =
      (config.listen && daemonKeys(config).length > 0 && (config.cipher ?? "auto") !== "clear") ||
      config.circuits.some((spec) => sealing(spec.key ?? config.key, spec.cipher));
    if (needed) {
      try {
        loadLibcrypto();
      } catch (error) {
        throw new RuntimeFailure((error as Error).message);
      }
    }
    // Compression needs liblz4 (a circuit that offers it, or a listener that accepts it).
    const compressing = (config.compress ?? "off") !== "off" ||
      config.circuits.some((spec) => (spec.compress ?? "off") !== "off");
    if (compressing) requireLz4();
  }

  /**
   * The link MTU a circuit proposes: --mtu; for a tap in a bridge, the bridge's MTU (its LAN's, carried in
   * fragments where the path is narrower); else the route MTU to the peer less the overhead. `fixed`: the
   * MTU is the link's own (the first two), sealed or not, not the path's.
   */
  #circuitMtu(spec: CircuitSpec): { mtu: number; fixed: boolean } {
    if (spec.mtu !== undefined) return { mtu: spec.mtu, fixed: true };
    const lan = this.#bridgeMtu(spec.mode === "tap" ? spec.bridge : undefined);
    if (lan !== undefined) return { mtu: lan, fixed: true };
    try {
      return {
        mtu: linkMtuFor(this.#env.network.routeMtu(spec.peer), spec.peer.family, spec.mode),
        fixed: false,
      };
    } catch (error) {
      throw new RuntimeFailure(
        `No route to ${spec.peerName} (${formatIp(spec.peer)}): ${
          (error as Error).message
        }; check the underlay addresses and routes`,
      );
    }
  }

  #startCircuit(spec: CircuitSpec): void {
    const remote: Endpoint = { address: formatIp(spec.peer), port: spec.port };
    const key = circuitKey(remote.address, spec.vid);
    if (this.#circuits.has(key)) {
      throw new RuntimeFailure(`Circuit ${spec.vid} to ${spec.peerName} exists already`);
    }
    const { mtu, fixed: fixedMtu } = this.#circuitMtu(spec);
    const psk = spec.key ?? this.#config.key;
    const cipher = spec.cipher ?? this.#config.cipher ?? "auto";
    const compress = spec.compress ?? this.#config.compress ?? "off";
    const sealed = psk !== undefined && cipher !== "clear";
    if (compress === "on" && sealed) {
      throw new RuntimeFailure(
        `Circuit ${spec.vid} to ${spec.peerName}: compression on an encrypted circuit lets the sizes of the frames tell what they hold (CRIME, VORACLE); say --compress-with-encryption (compress: "with-encryption") to accept that, or --cipher none`,
      );
    }
    const compressed = compress !== "off";
    if (compressed) requireLz4();
    // Until the handshake agrees on one, the interface has the MTU this side proposes.
    const deviceMtu = fixedMtu
      ? mtu
      : mtu - (psk ? cipherOverhead(cipher === "auto" ? "aes-256-gcm" : cipher) : 0) -
        (compressed
          ? compressionOverhead(this.#config.compressMode === "stateless" ? "lz4" : "dictionary")
          : 0);
    const name = spec.ifname ?? defaultInterfaceName(spec.vid);
    // A bridged tap is a bridge port: it takes the addresses it is given, no derived pair.
    const addresses = spec.addresses.some((a) => a.family === 6) || spec.bridge !== undefined
      ? spec.addresses
      : [...spec.addresses, derivedIPv6(this.#localAddressToward(spec.peer), remote.address, spec.vid)];
    const device = this.#openConfigured(
      name,
      spec.mode,
      deviceMtu,
      addresses,
      derivedMac("initiator", remote.address, spec.vid),
      { vid: spec.vid, peer: remote.address, role: "initiator", bridge: spec.bridge },
    );
    const session = new Session({
      role: "initiator",
      vid: spec.vid,
      mode: spec.mode,
      mtu,
      fixedMtu,
      farBridge: spec.farBridge,
      plan: addresses.map(peerAddress),
      newNonce: this.#env.newNonce,
      wallClock: this.#env.wallClock,
      psk,
      cipher,
      compress,
      compressMode: this.#config.compressMode,
      aesHardware: cpuHasAes(),
      fragments: true,
      rekeyAfterMs: this.#config.rekeyAfterMs,
      jitter: this.#env.random ?? Math.random,
    });

    const circuit = new CircuitRuntime(this.#circuitHost, {
      key,
      session,
      spec,
      remote,
      device,
      counters: zeroCounters(),
      psk,
    });
    this.#circuits.set(key, circuit);
    this.#log.info(
      `Interface ${device.name} (${spec.mode}, MTU ${deviceMtu}) is up; asking ${spec.peerName} (${remote.address} port ${remote.port}) for circuit ${spec.vid}`,
    );
    circuit.apply(session.handle({ type: "start" }, this.#env.now()));
  }

  /** A device's addresses as status shows them, marking the IPv6 pair VELA derives for a circuit. */
  #describeAddresses(addresses: IpPrefix[], owner: DeviceOwner): { all: string[]; derived: string[] } {
    const all = addresses.map(formatCidr);
    const peer = parseIp(owner.peer);
    if (!peer || !addresses.some((a) => a.family === 6)) return { all, derived: [] };
    const local = this.#localAddressToward(peer);
    const derived = owner.role === "initiator"
      ? derivedIPv6(local, owner.peer, owner.vid)
      : peerAddress(derivedIPv6(owner.peer, local, owner.vid));
    const text = formatCidr(derived);
    return { all, derived: all.filter((a) => a === text) };
  }

  /** This host's underlay address towards `peer` as text ("" when the kernel has no route). */
  #localAddressToward(peer: IpAddress): string {
    try {
      return formatIp(this.#env.network.routeSource(peer));
    } catch {
      return "";
    }
  }

  /**
   * Opens a device and sets MTU, addresses, bridge and link up; throws RuntimeFailure and leaves nothing
   * behind. Then the --up hook runs, and the --down hook will when the device is closed.
   */
  #openConfigured(
    name: string,
    mode: LinkMode,
    mtu: number,
    addresses: IpPrefix[],
    mac: Uint8Array,
    owner: DeviceOwner,
  ): LinkDevice {
    const bridge = mode === "tap" ? owner.bridge ?? this.#listenerBridge(owner) : undefined;
    // A responder's tap that joins a bridge is a bridge port: the initiator's plan does not address it.
    const own = bridge !== undefined && owner.role === "responder" ? [] : addresses;
    if (own.length < addresses.length) {
      this.#log.info(
        `${name} joins bridge ${bridge}: the addresses the initiator planned for it are left out`,
      );
    }
    const device = openConfiguredDevice(
      this.#env.network,
      this.#env.offload ?? false,
      { name, mode, mtu, addresses: own, mac, bridge },
      (text) => this.#log.warn(text),
    );
    if (bridge) this.#log.info(`${device.name} joined bridge ${bridge}`);
    this.#deviceAddresses.set(device, this.#describeAddresses(own, owner));
    const context: HookContext = {
      ifname: device.name,
      vid: owner.vid,
      peer: owner.peer,
      mode,
      role: owner.role,
      bridge,
    };
    const { up, down } = this.#config;
    if (up) this.#hook(runHook(up, "up", context, this.#log));
    if (!down) return device;
    return onClose(device, () => this.#hook(runHook(down, "down", context, this.#log)));
  }

  /** A hook's run, waited for when the daemon stops (a down hook of the last interfaces included). */
  #hook(running: Promise<void>): void {
    this.#pendingHooks.add(running);
    running.finally(() => this.#pendingHooks.delete(running));
  }

  /** The MTU of bridge `bridge` (undefined: no bridge, or none of that name, which opening the device reports). */
  #bridgeMtu(bridge: string | undefined): number | undefined {
    if (bridge === undefined) return undefined;
    try {
      return this.#env.network.interfaceMtu(bridge);
    } catch {
      return undefined;
    }
  }

  /** The bridge a listener's policy gives a tap it creates for `owner` (a responder's circuit). */
  #listenerBridge(owner: Pick<DeviceOwner, "role" | "peer" | "vid">): string | undefined {
    if (owner.role !== "responder") return undefined;
    return this.#listenerRule(owner.vid, owner.peer)?.bridge ?? this.#config.bridge;
  }

  /** The first of the listener's `bridges` rules that matches a circuit from `peer` on `vid`. */
  #listenerRule(vid: number, peer: string): BridgeRule | undefined {
    const source = parseIp(peer);
    return (this.#config.bridges ?? []).find((r) =>
      (r.vid === undefined || r.vid === vid) &&
      (r.allow === undefined || (source !== undefined && prefixContains(r.allow, source)))
    );
  }

  /**
   * A control datagram from the datapath. Whatever it holds, the daemon goes on: an error in handling
   * it (a bug) is counted as "internal-error" and logged, never thrown to the datapath's message loop.
   */
  #onControl(datagram: Uint8Array, from: Endpoint, known: boolean): void {
    if (this.#stopped) return;
    try {
      this.#handleControl(datagram, from, known);
    } catch (error) {
      this.#drop(
        "internal-error",
        `Dropped a control datagram from ${from.address}: handling it failed: ${(error as Error).message}`,
        "warning",
      );
    }
  }

  #handleControl(datagram: Uint8Array, from: Endpoint, known: boolean): void {
    const decoded = decode(datagram);
    if (!decoded.ok) {
      if (decoded.reason === "bad-version" && this.#answerOldVersion(datagram, from)) return;
      this.#drop(decoded.reason, `Dropped a control datagram from ${from.address}: ${decoded.detail}`);
      return;
    }
    const message = decoded.message;
    const rules = this.#rules;
    // The peer of a circuit this side initiates is no stranger either, before its first circuit is up.
    known ||= this.#initiatesTo(from.address);
    const verdict = this.#admission.control(
      rules,
      datagram,
      message,
      from,
      this.#env.now(),
      this.#env.wallClock(),
      known,
    );
    if (!verdict.admit) {
      this.#drop(verdict.reason, verdict.text, verdict.level);
      return;
    }
    if (message.type === "NOP") return;
    let circuit = this.#circuits.get(circuitKey(from.address, message.vid));
    if (verdict.key && circuit?.session.keyed && !sameKey(circuit.psk, verdict.key)) {
      this.#drop(
        "bad-mac",
        `Dropped ${message.type} from ${from.address}: signed with another circuit's key`,
      );
      return;
    }
    if (sessionSigned(message) && rules.keys.length > 0) {
      // Signed with a session's own keys: the session that holds them may be at another address (the
      // initiator moved). It follows only what its keys verify.
      const ours = message.type === "ICON" ? message.responderNonce : message.receiverNonce;
      if (!circuit || circuit.session.nonce !== ours) {
        circuit = [...this.#circuits.values()].find((c) =>
          c.session.vid === message.vid && c.session.nonce === ours
        );
      }
      if (!circuit) {
        this.#drop(
          "no-session",
          `Dropped ${message.type} for unknown circuit ${message.vid} from ${from.address}`,
        );
        return;
      }
      const actions = circuit.session.handle({ type: "received", message, datagram }, this.#env.now());
      const verified = !(actions.length === 1 && actions[0].type === "drop");
      if (verified && circuit.session.role === "responder") this.#follow(circuit, from);
      circuit.apply(actions);
      return;
    }
    if (!circuit) {
      if (message.type === "IREQ") this.#accept(message, from, verdict.key);
      else {this.#drop(
          "no-session",
          `Dropped ${message.type} for unknown circuit ${message.vid} from ${from.address}`,
        );}
      return;
    }
    if (message.type === "IREQ" && circuit.session.role === "initiator") {
      this.#drop(
        "vid-in-use",
        `Refused IREQ for circuit ${message.vid} from ${from.address}: this side initiates it`,
      );
      this.#send(from, {
        type: "NAK",
        vid: message.vid,
        initiatorNonce: message.initiatorNonce,
        reason: NakReason.VID_IN_USE,
        text: "vid in use",
      }, verdict.key);
      return;
    }
    if (
      message.type === "IREQ" && circuit.session.role === "responder" && !circuit.session.keyed &&
      circuit.remote.port !== from.port
    ) {
      // Without a key: the initiator came back from another port (it restarted): follow it.
      this.#follow(circuit, from);
    }
    circuit.apply(circuit.session.handle({ type: "received", message, datagram }, this.#env.now()), from);
  }

  /**
   * A responder's circuit whose peer was heard from another address or port (authenticated by the
   * session's keys, or an IREQ without a key): the circuit and its datapath entry move there; the
   * interface stays.
   */
  #follow(circuit: Circuit, from: Endpoint): void {
    const old = circuit.remote;
    if (old.address === from.address && old.port === from.port) return;
    const key = circuitKey(from.address, circuit.session.vid);
    const other = this.#circuits.get(key);
    if (other && other !== circuit) {
      if (other.device) {
        this.#log.warn(
          `Circuit ${circuit.session.vid}: ${from.address} has a circuit ${circuit.session.vid} already; not following there`,
        );
        return;
      }
      // An unproven handshake at the new address (a replayed IREQ, say) gives way.
      this.#closeCircuit(other);
    }
    this.#log.info(
      `Circuit ${circuit.session.vid}: the peer moved from ${formatEndpoint(old)} to ${
        formatEndpoint(from)
      }; following`,
    );
    if (circuit.forwarding) this.#datapath!.removeCircuit(old.address, circuit.session.vid);
    if (this.#circuits.get(circuit.key) === circuit) this.#circuits.delete(circuit.key);
    circuit.key = key;
    circuit.remote = from;
    this.#circuits.set(key, circuit);
    if (circuit.forwarding) circuit.addToDatapath();
  }

  /**
   * A protocol v1 IREQ: a v1 NAK that says to upgrade (signed when the daemon has the key it was signed
   * with). True when the datagram was a v1 IREQ and is counted here (answered as bad-version, or refused).
   */
  #answerOldVersion(datagram: Uint8Array, from: Endpoint): boolean {
    const old = oldIreq(datagram);
    if (!old) return false;
    const verdict = this.#admission.oldVersion(this.#rules, datagram, from, this.#env.now());
    if (!verdict.admit) {
      this.#drop(verdict.reason, verdict.text, verdict.level);
      return true;
    }
    this.#drop("bad-version", `${from.address} asked for circuit ${old.vid} in protocol v1`);
    this.#log.warn(
      `${from.address} asked for circuit ${old.vid} in protocol v1; told it to upgrade VELA (this side speaks v2)`,
    );
    const reply = encodeOldNak(
      old.vid,
      old.initiatorNonce,
      "the peer speaks VELA protocol v2: upgrade VELA on this side",
      verdict.key ? MAC_LENGTH : 0,
    );
    if (verdict.key) signControl(verdict.key, reply);
    void this.#underlay?.sendControl(reply, from);
    return true;
  }

  /** Answers an IREQ with a NAK (signed with the key its IREQ was, if any). */
  #refuse(to: Endpoint, request: Ireq, reason: number, text: string, psk: Uint8Array | undefined): void {
    this.#send(
      to,
      { type: "NAK", vid: request.vid, initiatorNonce: request.initiatorNonce, reason, text },
      psk,
    );
  }

  #accept(request: Ireq, from: Endpoint, psk: Uint8Array | undefined): void {
    const verdict = this.#admission.newCircuit(this.#rules, request, from);
    if (!verdict.admit) {
      this.#drop(verdict.reason, verdict.text, verdict.level);
      if (verdict.reason === "not-allowed") {
        this.#refuse(from, request, NakReason.NOT_ALLOWED, "not allowed", psk);
      }
      return;
    }
    const full = this.#circuitLimit(from);
    if (full) {
      this.#drop(
        "circuit-limit",
        `Refused IREQ for circuit ${request.vid} from ${from.address}: ${full}`,
        "warning",
      );
      this.#refuse(from, request, NakReason.CIRCUIT_LIMIT, full, psk);
      return;
    }
    // The bridge the tap joins: the one the initiator asks for, when this listener offers it; else its rules'.
    let bridge = request.mode === "tap"
      ? this.#listenerBridge({ vid: request.vid, peer: from.address, role: "responder" })
      : undefined;
    if (request.bridge !== undefined) {
      if (request.mode !== "tap" || !(this.#config.offerBridges ?? []).includes(request.bridge)) {
        const text = `bridge ${request.bridge} is not offered here`;
        this.#drop(
          "bridge-refused",
          `Refused IREQ for circuit ${request.vid} from ${from.address}: ${text}`,
          "warning",
        );
        this.#refuse(from, request, NakReason.NOT_ALLOWED, text, psk);
        return;
      }
      bridge = request.bridge;
    }
    const source = parseIp(from.address)!;
    let localMtu = request.mtu;
    if ((request.flags & IREQ_FLAG_FRAGMENTS) && (request.flags & IREQ_FLAG_LINK_MTU)) {
      // The initiator's MTU is its link's own, and both ends fragment: the path does not limit the link,
      // a bridge's LAN here may.
      localMtu = this.#bridgeMtu(bridge) ?? MAX_FRAGMENTED_LINK_MTU;
    } else {
      try {
        localMtu = linkMtuFor(this.#env.network.routeMtu(source), source.family, request.mode);
      } catch {
        // No route back is unusual (we just heard from it); take the initiator's proposal.
      }
    }
    const session = new Session({
      role: "responder",
      vid: request.vid,
      mode: request.mode,
      mtu: localMtu,
      plan: [],
      newNonce: this.#env.newNonce,
      wallClock: this.#env.wallClock,
      psk,
      cipher: this.#config.cipher ?? "auto",
      compress: this.#config.compress ?? "off",
      compressMode: this.#config.compressMode,
      aesHardware: cpuHasAes(),
      fragments: true,
      rekeyAfterMs: this.#config.rekeyAfterMs,
      jitter: this.#env.random ?? Math.random,
    });
    const filter = request.mode === "tap" ? this.#listenerRule(request.vid, from.address)?.filter : undefined;
    const circuit = new CircuitRuntime(this.#circuitHost, {
      key: circuitKey(from.address, request.vid),
      session,
      remote: from,
      counters: zeroCounters(),
      psk,
      filter,
      bridge,
    });
    this.#circuits.set(circuit.key, circuit);
    circuit.apply(session.handle({ type: "received", message: request }, this.#env.now()));
  }

  /** Whether this daemon initiates a circuit to `address`. */
  #initiatesTo(address: string): boolean {
    for (const circuit of this.#circuits.values()) {
      if (circuit.spec && circuit.remote.address === address) return true;
    }
    return false;
  }

  /** Why one more circuit from `from` would be one too many (undefined: room for it). */
  #circuitLimit(from: Endpoint): string | undefined {
    const most = this.#config.maxCircuits ?? DEFAULT_MAX_CIRCUITS;
    if (this.#circuits.size >= most) return `the listener holds its maximum of ${most} circuits`;
    const perPeer = this.#config.maxCircuitsPerPeer ?? DEFAULT_MAX_CIRCUITS_PER_PEER;
    let fromPeer = 0;
    for (const circuit of this.#circuits.values()) if (circuit.remote.address === from.address) fromPeer++;
    if (fromPeer >= perPeer) {
      return `the listener holds its maximum of ${perPeer} circuits for ${from.address}`;
    }
    return undefined;
  }

  #makeCircuitHost(): CircuitHost {
    // Getters: the datapath and the stop flag change after construction.
    const getters = {
      log: () => this.#log,
      network: () => this.#env.network,
      timers: () => this.#timers,
      datapath: () => this.#datapath!,
      stopped: () => this.#stopped,
    };
    return {
      get log() {
        return getters.log();
      },
      get network() {
        return getters.network();
      },
      get timers() {
        return getters.timers();
      },
      get datapath() {
        return getters.datapath();
      },
      get stopped() {
        return getters.stopped();
      },
      now: () => this.#env.now(),
      send: (to, message, sign) => this.#send(to, message, sign),
      drop: (reason, text) => this.#drop(reason, text),
      openDevice: (name, mode, mtu, addresses, mac, owner) =>
        this.#openConfigured(name, mode, mtu, addresses, mac, owner),
      forget: (circuit, ifCurrent = false) => {
        if (!ifCurrent || this.#circuits.get(circuit.key) === circuit) this.#circuits.delete(circuit.key);
      },
      refreshPeer: (circuit) => void this.#refreshPeer(circuit),
    };
  }

  /** Sends a control message, signed with `sign` when given (a pre-shared or a session control key). */
  #send(to: Endpoint, message: ControlMessage, sign?: Uint8Array): void {
    if (!this.#underlay) return;
    let datagram = encode(message, sign ? MAC_LENGTH : 0);
    if (sign) signControl(sign, datagram);
    if (message.type === "PROBE" && message.size > datagram.length) {
      // A path MTU probe: zero padding after the message, up to the size it names.
      const padded = new Uint8Array(message.size);
      padded.set(datagram);
      datagram = padded;
    }
    const sending = this.#underlay.sendControl(datagram, to);
    this.#pendingSends.add(sending);
    sending.then((sent) => {
      this.#pendingSends.delete(sending);
      if (!sent) {
        this.#drop("send-failed", `Could not send ${message.type} to ${to.address} port ${to.port}`);
      }
    });
  }

  /** Counts a drop and logs it at most once per interval per reason. */
  #drop(reason: string, text: string, level: "debug" | "warning" = "debug"): void {
    this.controlDrops[reason] = (this.controlDrops[reason] ?? 0) + 1;
    const now = this.#env.now();
    const last = this.#lastDropLog.get(reason);
    if (last !== undefined && now - last < DROP_LOG_INTERVAL_MS) return;
    this.#lastDropLog.set(reason, now);
    const line = `${text} (${this.controlDrops[reason]} ${reason} so far)`;
    if (level === "warning") this.#log.warn(line);
    else this.#log.debug(line);
  }

  /**
   * Resolves an initiated circuit's peer name again; when it now points elsewhere, the circuit moves
   * there (a new handshake to the new address) and keeps its interface.
   */
  async #refreshPeer(circuit: Circuit): Promise<void> {
    const spec = circuit.spec;
    if (!spec || parseIp(spec.peerName) || this.#stopped) return;
    let address: IpAddress;
    try {
      address = await this.#env.resolve(spec.peerName, spec.family);
    } catch (error) {
      this.#log.warn(
        `Cannot resolve ${spec.peerName} again: ${
          (error as Error).message
        }; keeping ${circuit.remote.address}`,
      );
      return;
    }
    const text = formatIp(address);
    if (this.#stopped || this.#circuits.get(circuit.key) !== circuit || text === circuit.remote.address) {
      return;
    }
    const key = circuitKey(text, spec.vid);
    if (this.#circuits.has(key)) {
      this.#log.error(
        `${spec.peerName} now points to ${text}, which already has a circuit ${spec.vid}; staying`,
      );
      return;
    }
    this.#log.info(
      `${spec.peerName} now points to ${text} (was ${circuit.remote.address}); moving circuit ${spec.vid}`,
    );
    if (circuit.forwarding) this.#datapath!.removeCircuit(circuit.remote.address, spec.vid);
    circuit.forwarding = false;
    this.#circuits.delete(circuit.key);
    circuit.key = key;
    circuit.remote = { address: text, port: circuit.remote.port };
    this.#circuits.set(key, circuit);
    circuit.apply(circuit.session.handle({ type: "moved" }, this.#env.now()));
  }

  #onDeviceFailure(vid: number, remote: Endpoint, error: unknown): void {
    const circuit = this.#circuits.get(circuitKey(remote.address, vid));
    if (!circuit) {
      this.#log.error(`The datapath failed: ${(error as Error).message}`);
      return;
    }
    circuit.forwarding = false;
    this.#log.error(explainDeviceError(error, `read from ${circuit.device?.name}`) + "; closing the circuit");
    circuit.apply(circuit.session.handle({ type: "close" }, this.#env.now()));
    circuit.device?.close();
    this.#circuits.delete(circuit.key);
  }

  /**
   * Closes every circuit (CREQ to each peer), removes the interfaces, closes the underlay. Safe to call
   * twice.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const circuit of [...this.#circuits.values()]) {
      circuit.apply(circuit.session.handle({ type: "close" }, this.#env.now()));
    }
    let grace: TimerId | undefined;
    await Promise.race([
      Promise.all(this.#pendingSends),
      new Promise<void>((resolve) => grace = this.#timers.setTimeout(resolve, SHUTDOWN_GRACE_MS)),
    ]);
    this.#timers.clearTimeout(grace);
    await this.#datapath?.stop();
    this.#closeEverything();
    await this.#running;
    await this.#datapath?.drained();
    await Promise.all(this.#pendingHooks);
    this.#log.info(`Dropped on the way in: ${this.dropSummary()}`);
    this.#log.info("VELA stopped; its interfaces are removed");
  }

  #closeEverything(): void {
    this.#stopped = true;
    this.#timers.clearInterval(this.#dnsRefresh);
    for (const circuit of this.#circuits.values()) {
      this.#timers.clearTimeout(circuit.timer);
      if (circuit.forwarding) this.#datapath?.removeCircuit(circuit.remote.address, circuit.session.vid);
      circuit.device?.close();
    }
    this.#circuits.clear();
    this.#underlay?.close();
  }
}

/** What makes two circuit specs the same circuit for a reload: everything the operator gave. */
function specIdentity(spec: CircuitSpec): unknown[] {
  return [
    spec.peerName,
    spec.port,
    spec.vid,
    spec.mode,
    spec.addresses.map(formatCidr),
    spec.mtu,
    spec.ifname,
    spec.family,
    spec.key ? Array.from(spec.key) : null,
    spec.cipher ?? null,
    spec.bridge ?? null,
    spec.farBridge ?? null,
    spec.filter ?? null,
  ];
}

function sameKey(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a !== undefined && b !== undefined && equalBytes(a, b);
}

/** A configuration with more circuits than its max_circuits cannot start. Throws RuntimeFailure. */
function checkCircuitCount(config: DaemonConfig): void {
  const most = config.maxCircuits ?? DEFAULT_MAX_CIRCUITS;
  if (config.circuits.length > most) {
    throw new RuntimeFailure(
      `The configuration has ${config.circuits.length} circuits, more than max_circuits (${most})`,
    );
  }
}

function admissionRules(config: DaemonConfig): AdmissionRules {
  return { ...config, keys: daemonKeys(config) };
}

function formatEndpoint(endpoint: Endpoint): string {
  return endpoint.address.includes(":")
    ? `[${endpoint.address}]:${endpoint.port}`
    : `${endpoint.address}:${endpoint.port}`;
}

/** Loads liblz4 for the compression stage; without it, throws RuntimeFailure saying what to install. */
function requireLz4(): void {
  try {
    loadLz4();
  } catch (error) {
    throw new RuntimeFailure((error as Error).message);
  }
}
