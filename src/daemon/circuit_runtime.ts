/**
 * One circuit's runtime: its session, its device, its timer and its counters, and the one place that
 * carries out what its session asks for (send, create or remove the device, forward, time out). What it
 * needs of the daemon comes through CircuitHost.
 */

import type { Logger } from "@logtape/logtape";
import type { CircuitCounters } from "../datapath/counters.ts";
import type { DatapathEngine } from "../datapath/engine.ts";
import { explainDeviceError } from "../errors.ts";
import type { HostNetwork } from "../host_network.ts";
import { formatCidr, type IpPrefix, parseIp } from "../ip.ts";
import { datagramLimit, ipUdpHeaders } from "../datapath/fragmentation.ts";
import { MIN_PATH_MTU, PathProbe, type PathProbeAction, type PathProbeEvent } from "./path_probe.ts";
import type { LinkDevice, LinkMode } from "../link/link_device.ts";
import type { Session, SessionAction } from "../session.ts";
import type { Endpoint } from "../underlay/underlay.ts";
import { type CipherName, type Compression, type ControlMessage, NakReason } from "../wire.ts";
import { type DataKey, type DataKeys, KEY_STATE_BYTES } from "../crypto/data_keys.ts";
import { pipelineFor, type StageSpec } from "../datapath/stage.ts";
import { DICTIONARY_ACK_RESEND_MS, DICTIONARY_POLL_MS } from "../timing.ts";
import type { FrameFilter } from "../datapath/filter_stage.ts";
import { defaultInterfaceName } from "../circuit_rules.ts";
import { derivedMac } from "./provisioning.ts";
import type { TimerId, Timers } from "./timers.ts";
import type { CircuitSpec, DeviceOwner } from "./daemon.ts";

/** What a circuit's runtime needs of its daemon. */
export interface CircuitHost {
  readonly log: Logger;
  readonly network: HostNetwork;
  readonly timers: Timers;
  readonly datapath: DatapathEngine;
  /** The daemon is stopping: no new timers. */
  readonly stopped: boolean;
  now(): number;
  /** Sends a control message, signed with `sign` when given. */
  send(to: Endpoint, message: ControlMessage, sign?: Uint8Array): void;
  drop(reason: string, text: string): void;
  /** Opens and configures a device (src/daemon/provisioning.ts); throws RuntimeFailure. */
  openDevice(
    name: string,
    mode: LinkMode,
    mtu: number,
    addresses: IpPrefix[],
    mac: Uint8Array,
    owner: DeviceOwner,
  ): LinkDevice;
  /** Takes the circuit out of the daemon's table (`ifCurrent`: only if the table still holds this one). */
  forget(circuit: CircuitRuntime, ifCurrent?: boolean): void;
  /** Looks the peer's name up again (an initiated circuit). */
  refreshPeer(circuit: CircuitRuntime): void;
}

export class CircuitRuntime {
  key: string;
  readonly session: Session;
  /** What the operator asked for, on circuits this daemon initiates. */
  readonly spec?: CircuitSpec;
  remote: Endpoint;
  device?: LinkDevice;
  forwarding = false;
  timer?: TimerId;
  /** When the circuit was last established (monotonic ms), undefined while it is not. */
  establishedAt?: number;
  /** When the circuit went down, or started (monotonic ms): what status says while it is not established. */
  downSince: number;
  /** The peer's reason while it refuses the circuit (its NAK's text). */
  refusal?: string;
  /** Live counters, kept across re-handshakes. */
  readonly counters: CircuitCounters;
  /** The path MTU towards the peer as probing found it (undefined: not probed, the route's holds). */
  pathMtu?: number;
  readonly #pathProbe = new PathProbe();
  #probeTimer?: TimerId;
  /** The pre-shared key of a keyed circuit. */
  readonly psk?: Uint8Array;
  /** Which frames the circuit carries: its spec's, or the listener's rule's for a circuit it accepted. */
  readonly filter?: FrameFilter;
  /** The bridge a listener chose for the tap of a circuit it accepted (its rules, or the initiator's ask). */
  readonly bridge?: string;
  /** The data keys the datapath holds (keyed circuits with a cipher), and their cipher. */
  #dataKeys: DataKeys | undefined;
  #cipher: CipherName = "clear";
  /** Frames sealed and opened when the keys in use were installed: the new keys' use counts from there. */
  #keyUseBase = { sealed: 0, opened: 0 };
  /** The counter state of each key in use, by the key's bytes (the session hands the same arrays again). */
  #keyStates = new Map<Uint8Array, SharedArrayBuffer>();
  readonly #host: CircuitHost;
  /** The compression of the pipeline last given to the datapath (a new handshake may change it). */
  #compressInPipeline: Compression = "off";
  /** The dictionary mode's poll of the receiving side (src/datapath/compress_stage.ts), and the last DACK. */
  #dictionaryTimer?: TimerId;
  #dackSent = { epoch: 0, hash: 0n, at: -Infinity };

  constructor(
    host: CircuitHost,
    init: {
      key: string;
      session: Session;
      spec?: CircuitSpec;
      remote: Endpoint;
      device?: LinkDevice;
      counters: CircuitCounters;
      psk?: Uint8Array;
      filter?: FrameFilter;
      bridge?: string;
    },
  ) {
    this.#host = host;
    this.downSince = host.now();
    this.key = init.key;
    this.session = init.session;
    this.spec = init.spec;
    this.remote = init.remote;
    this.device = init.device;
    this.counters = init.counters;
    this.psk = init.psk;
    this.filter = init.filter ?? init.spec?.filter;
    this.bridge = init.bridge;
  }

  /** The circuit's pipeline: sealed with its keys, or clear. */
  #pipeline() {
    this.#compressInPipeline = this.session.compression;
    return pipelineFor(this.session.vid, this.#cipher, this.#dataKeys, this.filter, this.session.compression);
  }

  /** (Re)adds the circuit to the datapath with its device, agreed MTU, counters, pipeline and datagram limit. */
  addToDatapath(): void {
    if (!this.device) return;
    this.#host.datapath.addCircuit(
      this.session.vid,
      this.remote,
      this.device,
      this.session.mtu,
      this.counters,
      this.#pipeline(),
      this.datagramLimit(),
    );
  }

  /**
   * The longest datagram that goes whole to the peer when the circuit fragments (0 when it does not): from
   * the path MTU probing learnt, else the route's MTU (the IPv6 minimum when there is no route).
   */
  datagramLimit(): number {
    if (!this.session.fragmenting) return 0;
    const family = this.#family();
    if (!family) return 0;
    return datagramLimit(this.pathMtu ?? this.#routeMtu(), family);
  }

  /** The family of the peer's underlay address. */
  #family(): 4 | 6 | undefined {
    return parseIp(this.remote.address)?.family;
  }

  /** The MTU of the route to the peer (the IPv6 minimum when the route cannot be asked). */
  #routeMtu(): number {
    const address = parseIp(this.remote.address);
    try {
      return address ? this.#host.network.routeMtu(address) : MIN_PATH_MTU[6];
    } catch {
      return MIN_PATH_MTU[6];
    }
  }

  /**
   * The dictionary mode: while the circuit forwards, every DICTIONARY_POLL_MS, looks whether the receiving
   * side holds a new dictionary of the peer's frames that the peer does not use yet, and tells the peer
   * (DACK: again every DICTIONARY_ACK_RESEND_MS until its frames use it, a DACK may be lost).
   */
  #pollDictionary(): void {
    const host = this.#host;
    host.timers.clearTimeout(this.#dictionaryTimer);
    this.#dictionaryTimer = undefined;
    const session = this.session;
    if (
      host.stopped || !this.forwarding || session.compression !== "dictionary" || session.state === "closed"
    ) {
      return;
    }
    host.datapath.refreshCounters(this.remote.address, session.vid);
    const { dictionaryReady: epoch, dictionaryReadyHash: hash, dictionaryPeerUses } = this.counters;
    const now = host.now();
    if (epoch !== 0 && dictionaryPeerUses !== epoch) {
      const sent = this.#dackSent;
      if (sent.epoch !== epoch || sent.hash !== hash || now - sent.at >= DICTIONARY_ACK_RESEND_MS) {
        this.#dackSent = { epoch, hash, at: now };
        this.apply(session.handle({ type: "dictionary-ready", epoch, hash }, now));
      }
    }
    this.#dictionaryTimer = host.timers.setTimeout(() => this.#pollDictionary(), DICTIONARY_POLL_MS);
  }

  /** Feeds the path MTU probing of a fragmenting circuit and carries out what it asks for. */
  #probePath(event: PathProbeEvent): void {
    const family = this.#family();
    if (!family || (event.type !== "stop" && !this.session.fragmenting)) return;
    this.#applyProbe(this.#pathProbe.handle(event, this.#host.now()), family);
  }

  #applyProbe(actions: PathProbeAction[], family: 4 | 6): void {
    const host = this.#host;
    for (const action of actions) {
      switch (action.type) {
        case "probe":
          // The probe fills an IP packet of that size: its datagram is the size less the IP and UDP headers.
          this.apply(this.session.handle(
            { type: "probe", id: action.id, size: datagramLimit(action.size, family) },
            host.now(),
          ));
          break;
        case "path-mtu": {
          if (action.mtu === this.pathMtu) break;
          const was = this.pathMtu ?? this.#routeMtu();
          this.pathMtu = action.mtu;
          if (action.mtu !== was) {
            host.log.info(
              `Circuit ${this.session.vid} with ${this.remote.address}: path MTU ${action.mtu} (probed; was ${was})`,
            );
          }
          if (this.forwarding) {
            host.datapath.setDatagramLimit(this.remote.address, this.session.vid, this.datagramLimit());
          }
          break;
        }
        case "timer":
          host.timers.clearTimeout(this.#probeTimer);
          this.#probeTimer = undefined;
          if (action.at !== undefined && !host.stopped) {
            this.#probeTimer = host.timers.setTimeout(() => {
              this.#probeTimer = undefined;
              this.#probePath({ type: "timer", ceiling: this.#routeMtu() });
            }, Math.max(0, action.at - host.now()));
          }
          break;
      }
    }
  }

  /**
   * The keys with their counter state: shared memory made once per key and direction, kept while the
   * key is in use, so that a stage made again (a move, a new MTU) goes on with the key's counter and
   * replay window (src/crypto/data_keys.ts).
   */
  #withState(keys: DataKeys): DataKeys {
    const states = new Map<Uint8Array, SharedArrayBuffer>();
    const stateOf = (key: DataKey): DataKey => {
      const held = this.#keyStates.get(key.key) ?? new SharedArrayBuffer(KEY_STATE_BYTES);
      states.set(key.key, held);
      return { ...key, state: held };
    };
    const result = { tx: keys.tx && stateOf(keys.tx), rx: keys.rx.map(stateOf) };
    this.#keyStates = states;
    return result;
  }

  /** Packets the keys in use have sealed or opened, whichever is more. */
  #keyUse(): number {
    if (!this.#dataKeys) return 0;
    this.#host.datapath.refreshCounters(this.remote.address, this.session.vid);
    return Math.max(
      this.counters.sealed - this.#keyUseBase.sealed,
      this.counters.opened - this.#keyUseBase.opened,
    );
  }

  /**
   * Carries out what the session asked for. `replyTo`: where the session's answers to an IREQ (IACK,
   * IRDY, NAK) go when they are not for the circuit's current endpoint (a restarted initiator asking from
   * a new port, before it has proven its keys).
   */
  apply(actions: SessionAction[], replyTo?: Endpoint): void {
    const host = this.#host;
    const vid = this.session.vid;
    for (const action of actions) {
      switch (action.type) {
        case "send": {
          const answer = action.message.type === "IACK" || action.message.type === "IRDY" ||
            action.message.type === "NAK";
          host.send(answer && replyTo ? replyTo : this.remote, action.message, action.sign);
          break;
        }
        case "keys": {
          const wasSealed = this.#dataKeys !== undefined;
          const renewed = this.#dataKeys?.tx?.key !== action.keys.tx?.key;
          this.#dataKeys = this.#withState(action.keys);
          this.#cipher = action.cipher;
          if (renewed) {
            host.datapath.refreshCounters(this.remote.address, vid);
            this.#keyUseBase = { sealed: this.counters.sealed, opened: this.counters.opened };
          }
          if (this.forwarding) {
            if (wasSealed && this.#compressInPipeline === this.session.compression) {
              host.datapath.updateStages(this.remote.address, vid, this.#pipeline());
            } else this.addToDatapath();
          }
          break;
        }
        case "rotated":
          host.log.info(
            `Circuit ${vid} with ${this.remote.address}: new session keys (handshake ${action.handshake})`,
          );
          break;
        case "unanswered":
          host.log.warn(
            `No answer from ${this.remote.address} port ${this.remote.port} to ${action.tries} requests for circuit ${vid}: check the key, --allow and the port`,
          );
          break;
        case "resolve":
          if (this.spec) host.refreshPeer(this);
          break;
        case "create-device": {
          try {
            const mac = derivedMac("responder", this.remote.address, vid);
            const owner: DeviceOwner = {
              vid,
              peer: this.remote.address,
              role: "responder",
              bridge: this.bridge,
            };
            try {
              this.device = host.openDevice(
                defaultInterfaceName(vid),
                action.mode,
                action.mtu,
                action.plan,
                mac,
                owner,
              );
            } catch {
              // vela<vid> is taken (another initiator's circuit with this vid): let the kernel number one.
              this.device = host.openDevice(
                `${defaultInterfaceName(vid)}-%d`,
                action.mode,
                action.mtu,
                action.plan,
                mac,
                owner,
              );
            }
          } catch (error) {
            host.log.error(
              `Refusing circuit ${vid} from ${this.remote.address}: ${(error as Error).message}`,
            );
            host.forget(this);
            const request = this.session.peerNonce;
            host.send(this.remote, {
              type: "NAK",
              vid,
              initiatorNonce: request,
              reason: NakReason.DEVICE_FAILED,
              text: "the listener could not create the interface",
            }, this.psk);
            // A keyed initiator is established by now: a signed CREQ makes it ask again later.
            if (this.session.keyed) this.apply(this.session.handle({ type: "close" }, host.now()));
            return;
          }
          const plan = action.plan.map(formatCidr).join(", ") || "no addresses";
          host.log.info(
            `Interface ${this.device.name} (${action.mode}, MTU ${action.mtu}, ${plan}) created for circuit ${vid} from ${this.remote.address}`,
          );
          break;
        }
        case "set-mtu":
          if (this.device) {
            try {
              host.network.setMtu(this.device.name, action.mtu);
            } catch (error) {
              host.log.error(explainDeviceError(error, `set MTU ${action.mtu} on ${this.device.name}`));
            }
            if (this.forwarding) this.addToDatapath();
          }
          break;
        case "forward":
          if (action.enabled && this.device) {
            this.addToDatapath();
            this.forwarding = true;
            this.#dackSent = { epoch: 0, hash: 0n, at: -Infinity };
            this.#pollDictionary();
          } else if (!action.enabled && this.forwarding) {
            host.datapath.removeCircuit(this.remote.address, vid);
            this.forwarding = false;
            this.establishedAt = undefined;
            this.downSince = host.now();
          }
          if (!action.enabled) this.#probePath({ type: "stop" });
          break;
        case "remove-device":
          host.forget(this);
          if (this.device) {
            host.log.info(
              `Circuit ${vid} from ${this.remote.address} closed; interface ${this.device.name} removed`,
            );
            this.device.close();
          }
          break;
        case "dictionary-acknowledged":
          if (this.forwarding) {
            host.datapath.updateStages(this.remote.address, vid, [{
              id: "compress",
              mode: "dictionary",
              acknowledged: { epoch: action.epoch, hash: action.hash },
            } as StageSpec]);
          }
          break;
        case "probe-answered": {
          const size = action.size + ipUdpHeaders(this.#family() ?? 6);
          this.#probePath({ type: "answered", id: action.id, size });
          break;
        }
        case "established": {
          this.establishedAt = host.now();
          this.#pollDictionary();
          this.refusal = undefined;
          const family = this.#family();
          if (family) {
            this.#probePath({ type: "start", floor: MIN_PATH_MTU[family], ceiling: this.#routeMtu() });
          }
          host.log.info(
            `Circuit ${vid} with ${this.remote.address} established on ${this.device?.name}, MTU ${action.mtu}, ${
              this.session.cipher ?? "clear"
            }${this.session.compressing ? ", compressed" : ""}`,
          );
          if ((this.spec?.compress ?? "off") !== "off" && !this.session.compressing) {
            host.log.warn(
              `Circuit ${vid} with ${this.remote.address} is not compressed: the peer declined (it needs --compress, and on a keyed circuit --compress-with-encryption)`,
            );
          }
          if (this.session.keyed && this.session.cipher === "clear") {
            host.log.warn(
              `Circuit ${vid} with ${this.remote.address} carries its frames in clear (--cipher none): anyone on the path reads them and can inject frames`,
            );
          }
          break;
        }
        case "refused":
          this.refusal = action.text;
          host.log.error(
            `${this.remote.address} refused circuit ${vid}: ${action.text} (reason ${action.reason})`,
          );
          break;
        case "timer":
          host.timers.clearTimeout(this.timer);
          this.timer = undefined;
          if (action.at !== undefined && !host.stopped) {
            this.timer = host.timers.setTimeout(() => {
              this.timer = undefined;
              this.apply(this.session.handle({ type: "timer", keyUse: this.#keyUse() }, host.now()));
            }, Math.max(0, action.at - host.now()));
          }
          break;
        case "dead-peer":
          this.establishedAt = undefined;
          this.downSince = host.now();
          this.#probePath({ type: "stop" });
          host.log.warn(
            `Circuit ${vid}: nothing heard from ${this.remote.address} for ${
              Math.round(action.silentMs / 1000)
            } s; ${this.spec ? "asking again" : "keeping the interface for a while"}`,
          );
          break;
        case "drop":
          host.drop("session", `Circuit ${vid} with ${this.remote.address}: ignored ${action.reason}`);
          break;
      }
    }
    // A responder session that closed without a device (it refused the IREQ) leaves no entry behind,
    // so that the next IREQ from that address and vid is heard afresh.
    if (this.session.state === "closed" && this.session.role === "responder") {
      host.forget(this, true);
    }
  }
}
