/**
 * The daemon: binds the underlay, runs the datapath, keeps one session per circuit keyed by (remote
 * address, vid) and carries out what the sessions ask for (send, create or remove a device, forward).
 */

import type { Logger } from "@logtape/logtape";
import { Datapath } from "./datapath.ts";
import { explainDeviceError, RuntimeFailure } from "./errors.ts";
import { type HostNetwork, linkMtuFor } from "./host_network.ts";
import {
  formatCidr,
  formatIp,
  type IpAddress,
  type IpPrefix,
  parseIp,
  peerAddress,
  prefixContains,
} from "./ip.ts";
import type { LinkDevice, LinkMode } from "./link_device.ts";
import { logger } from "./log.ts";
import { Session, type SessionAction } from "./session.ts";
import { DROP_LOG_INTERVAL_MS, SHUTDOWN_GRACE_MS } from "./timing.ts";
import { type Endpoint, sendOne, type Underlay } from "./underlay.ts";
import { type ControlMessage, decode, encode, type Ireq, NakReason, type Nonce } from "./wire.ts";

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
  circuits: CircuitSpec[];
}

/** The outside world of a daemon: the kernel in production, fakes in tests. */
export interface DaemonEnvironment {
  network: HostNetwork;
  bindUnderlay(port: number): Underlay;
  /** Monotonic milliseconds. */
  now(): number;
  /** Milliseconds since the Unix epoch. */
  wallClock(): number;
  newNonce(): Nonce;
}

/** Counted drops of control traffic, by reason. */
export type ControlDrops = Record<string, number>;

interface Circuit {
  readonly key: string;
  readonly session: Session;
  remote: Endpoint;
  device?: LinkDevice;
  forwarding: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

export function circuitKey(address: string, vid: number): string {
  return `${address}|${vid}`;
}

export class Daemon {
  readonly #config: DaemonConfig;
  readonly #env: DaemonEnvironment;
  readonly #log: Logger = logger("daemon");
  readonly #circuits = new Map<string, Circuit>();
  readonly #pendingSends = new Set<Promise<number>>();
  readonly #lastDropLog = new Map<string, number>();
  readonly controlDrops: ControlDrops = {};
  #underlay?: Underlay;
  #datapath?: Datapath;
  #running?: Promise<void>;
  #stopped = false;

  constructor(config: DaemonConfig, env: DaemonEnvironment) {
    this.#config = config;
    this.#env = env;
  }

  /** The local UDP port once started. */
  get port(): number {
    return this.#underlay?.port ?? 0;
  }

  get datapath(): Datapath | undefined {
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

  /** Binds the underlay, starts the datapath and every configured circuit. Throws RuntimeFailure. */
  start(): void {
    const { port } = this.#config;
    try {
      this.#underlay = this.#env.bindUnderlay(port);
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) {
        throw new RuntimeFailure(
          `UDP port ${port} is already in use; stop the other daemon or choose --port`,
        );
      }
      throw new RuntimeFailure(`Cannot open UDP port ${port}: ${(error as Error).message}`);
    }
    this.#datapath = new Datapath(
      this.#underlay,
      (datagram, from) => this.#onControl(datagram, from),
      (vid, remote, error) => this.#onDeviceFailure(vid, remote, error),
    );
    this.#running = this.#datapath.run();
    try {
      for (const spec of this.#config.circuits) this.#startCircuit(spec);
    } catch (error) {
      this.#closeEverything();
      throw error;
    }
    const where = this.#config.listen ? `listening on UDP port ${this.port}` : `on UDP port ${this.port}`;
    this.#log.info(`VELA started, ${where}`);
  }

  #startCircuit(spec: CircuitSpec): void {
    const remote: Endpoint = { address: formatIp(spec.peer), port: spec.port };
    const key = circuitKey(remote.address, spec.vid);
    if (this.#circuits.has(key)) {
      throw new RuntimeFailure(`Circuit ${spec.vid} to ${spec.peerName} is given twice`);
    }
    let mtu = spec.mtu;
    if (mtu === undefined) {
      let underlayMtu: number;
      try {
        underlayMtu = this.#env.network.routeMtu(spec.peer);
      } catch (error) {
        throw new RuntimeFailure(
          `No route to ${spec.peerName} (${remote.address}): ${
            (error as Error).message
          }; check the underlay addresses and routes`,
        );
      }
      mtu = linkMtuFor(underlayMtu, spec.peer.family, spec.mode);
    }
    const name = spec.ifname ?? `vela${spec.vid}`;
    const device = this.#openConfigured(name, spec.mode, mtu, spec.addresses);
    const session = new Session({
      role: "initiator",
      vid: spec.vid,
      mode: spec.mode,
      mtu,
      plan: spec.addresses.map(peerAddress),
      newNonce: this.#env.newNonce,
      wallClock: this.#env.wallClock,
    });
    const circuit: Circuit = { key, session, remote, device, forwarding: false };
    this.#circuits.set(key, circuit);
    this.#log.info(
      `Interface ${device.name} (${spec.mode}, MTU ${mtu}) is up; asking ${spec.peerName} (${remote.address} port ${remote.port}) for circuit ${spec.vid}`,
    );
    this.#apply(circuit, session.handle({ type: "start" }, this.#env.now()));
  }

  /** Opens a device and sets MTU, addresses and link up; throws RuntimeFailure and leaves nothing behind. */
  #openConfigured(name: string, mode: LinkMode, mtu: number, addresses: IpPrefix[]): LinkDevice {
    const network = this.#env.network;
    let device: LinkDevice;
    try {
      device = network.openDevice(name, mode);
    } catch (error) {
      throw new RuntimeFailure(explainDeviceError(error, `create interface ${name}`), { cause: error });
    }
    try {
      network.setMtu(device.name, mtu);
      for (const address of addresses) network.addAddress(device.name, address);
      network.setUp(device.name);
    } catch (error) {
      device.close();
      throw new RuntimeFailure(explainDeviceError(error, `configure interface ${device.name}`), {
        cause: error,
      });
    }
    return device;
  }

  #onControl(datagram: Uint8Array, from: Endpoint): void {
    if (this.#stopped) return;
    const decoded = decode(datagram);
    if (!decoded.ok) {
      this.#drop(decoded.reason, `Dropped a control datagram from ${from.address}: ${decoded.detail}`);
      return;
    }
    const message = decoded.message;
    if (message.type === "NOP") return;
    const circuit = this.#circuits.get(circuitKey(from.address, message.vid));
    if (!circuit) {
      if (message.type === "IREQ") this.#accept(message, from);
      else {this.#drop(
          "no-session",
          `Dropped ${message.type} for unknown circuit ${message.vid} from ${from.address}`,
        );}
      return;
    }
    if (
      message.type === "IREQ" && circuit.session.role === "responder" && circuit.remote.port !== from.port
    ) {
      // The initiator came back from another port (it restarted): follow it.
      circuit.remote = from;
      if (circuit.forwarding && circuit.device) {
        this.#datapath!.addCircuit(message.vid, from, circuit.device, circuit.session.mtu);
      }
    }
    this.#apply(circuit, circuit.session.handle({ type: "received", message }, this.#env.now()));
  }

  #accept(request: Ireq, from: Endpoint): void {
    if (!this.#config.listen) {
      this.#drop("not-listening", `Ignored IREQ from ${from.address}: this daemon does not listen`);
      return;
    }
    const source = parseIp(from.address);
    const allowed = this.#config.insecureAcceptAny ||
      (source !== undefined && this.#config.allow.some((prefix) => prefixContains(prefix, source)));
    if (!allowed || !source) {
      this.#drop(
        "not-allowed",
        `Refused IREQ for circuit ${request.vid} from ${from.address}: not in --allow`,
      );
      this.#send(from, {
        type: "NAK",
        vid: request.vid,
        initiatorNonce: request.initiatorNonce,
        reason: NakReason.NOT_ALLOWED,
        text: "not allowed",
      });
      return;
    }
    let localMtu = request.mtu;
    try {
      localMtu = linkMtuFor(this.#env.network.routeMtu(source), source.family, request.mode);
    } catch {
      // No route back is unusual (we just heard from it); take the initiator's proposal.
    }
    const session = new Session({
      role: "responder",
      vid: request.vid,
      mode: request.mode,
      mtu: localMtu,
      plan: [],
      newNonce: this.#env.newNonce,
      wallClock: this.#env.wallClock,
    });
    const circuit: Circuit = {
      key: circuitKey(from.address, request.vid),
      session,
      remote: from,
      forwarding: false,
    };
    this.#circuits.set(circuit.key, circuit);
    this.#apply(circuit, session.handle({ type: "received", message: request }, this.#env.now()));
  }

  #apply(circuit: Circuit, actions: SessionAction[]): void {
    const vid = circuit.session.vid;
    for (const action of actions) {
      switch (action.type) {
        case "send":
          this.#send(circuit.remote, action.message);
          break;
        case "create-device": {
          const name = `vela${vid}`;
          try {
            circuit.device = this.#openConfigured(name, action.mode, action.mtu, action.plan);
          } catch (error) {
            this.#log.error(
              `Refusing circuit ${vid} from ${circuit.remote.address}: ${(error as Error).message}`,
            );
            this.#circuits.delete(circuit.key);
            const request = circuit.session.peerNonce;
            this.#send(circuit.remote, {
              type: "NAK",
              vid,
              initiatorNonce: request,
              reason: NakReason.DEVICE_FAILED,
              text: "the listener could not create the interface",
            });
            return;
          }
          const plan = action.plan.map(formatCidr).join(", ") || "no addresses";
          this.#log.info(
            `Interface ${circuit.device.name} (${action.mode}, MTU ${action.mtu}, ${plan}) created for circuit ${vid} from ${circuit.remote.address}`,
          );
          break;
        }
        case "set-mtu":
          if (circuit.device) {
            try {
              this.#env.network.setMtu(circuit.device.name, action.mtu);
            } catch (error) {
              this.#log.error(explainDeviceError(error, `set MTU ${action.mtu} on ${circuit.device.name}`));
            }
            if (circuit.forwarding) {
              this.#datapath!.addCircuit(vid, circuit.remote, circuit.device, action.mtu);
            }
          }
          break;
        case "forward":
          if (action.enabled && circuit.device) {
            this.#datapath!.addCircuit(vid, circuit.remote, circuit.device, circuit.session.mtu);
            circuit.forwarding = true;
          } else if (!action.enabled && circuit.forwarding) {
            this.#datapath!.removeCircuit(circuit.remote.address, vid);
            circuit.forwarding = false;
          }
          break;
        case "remove-device":
          this.#circuits.delete(circuit.key);
          if (circuit.device) {
            this.#log.info(
              `Circuit ${vid} from ${circuit.remote.address} closed; interface ${circuit.device.name} removed`,
            );
            circuit.device.close();
          }
          break;
        case "established":
          this.#log.info(
            `Circuit ${vid} with ${circuit.remote.address} established on ${circuit.device?.name}, MTU ${action.mtu}`,
          );
          break;
        case "refused":
          this.#log.error(
            `${circuit.remote.address} refused circuit ${vid}: ${action.text} (reason ${action.reason})`,
          );
          break;
        case "timer":
          clearTimeout(circuit.timer);
          circuit.timer = undefined;
          if (action.at !== undefined && !this.#stopped) {
            circuit.timer = setTimeout(() => {
              circuit.timer = undefined;
              this.#apply(circuit, circuit.session.handle({ type: "timer" }, this.#env.now()));
            }, Math.max(0, action.at - this.#env.now()));
          }
          break;
        case "drop":
          this.#drop("session", `Circuit ${vid} with ${circuit.remote.address}: ignored ${action.reason}`);
          break;
      }
    }
    // A responder session that closed without a device (it refused the IREQ) leaves no entry behind,
    // so that the next IREQ from that address and vid is heard afresh.
    if (circuit.session.state === "closed" && circuit.session.role === "responder") {
      if (this.#circuits.get(circuit.key) === circuit) this.#circuits.delete(circuit.key);
    }
  }

  #send(to: Endpoint, message: ControlMessage): void {
    if (!this.#underlay) return;
    const sending = sendOne(this.#underlay, encode(message), to);
    this.#pendingSends.add(sending);
    sending.then((failed) => {
      this.#pendingSends.delete(sending);
      if (failed) {
        this.#drop("send-failed", `Could not send ${message.type} to ${to.address} port ${to.port}`);
      }
    });
  }

  /** Counts a drop and logs it at most once per interval per reason. */
  #drop(reason: string, text: string): void {
    this.controlDrops[reason] = (this.controlDrops[reason] ?? 0) + 1;
    const now = this.#env.now();
    const last = this.#lastDropLog.get(reason);
    if (last !== undefined && now - last < DROP_LOG_INTERVAL_MS) return;
    this.#lastDropLog.set(reason, now);
    this.#log.debug(`${text} (${this.controlDrops[reason]} ${reason} so far)`);
  }

  #onDeviceFailure(vid: number, remote: Endpoint, error: unknown): void {
    const circuit = this.#circuits.get(circuitKey(remote.address, vid));
    if (!circuit) return;
    circuit.forwarding = false;
    this.#log.error(explainDeviceError(error, `read from ${circuit.device?.name}`) + "; closing the circuit");
    this.#apply(circuit, circuit.session.handle({ type: "close" }, this.#env.now()));
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
      this.#apply(circuit, circuit.session.handle({ type: "close" }, this.#env.now()));
    }
    let grace: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(this.#pendingSends),
      new Promise((resolve) => grace = setTimeout(resolve, SHUTDOWN_GRACE_MS)),
    ]);
    clearTimeout(grace);
    this.#closeEverything();
    await this.#running;
    await this.#datapath?.drained();
    this.#log.info("VELA stopped; its interfaces are removed");
  }

  #closeEverything(): void {
    this.#stopped = true;
    for (const circuit of this.#circuits.values()) {
      clearTimeout(circuit.timer);
      if (circuit.forwarding) this.#datapath?.removeCircuit(circuit.remote.address, circuit.session.vid);
      circuit.device?.close();
    }
    this.#circuits.clear();
    this.#underlay?.close();
  }
}
