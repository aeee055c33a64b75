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
import { formatCidr, type IpPrefix } from "../ip.ts";
import type { LinkDevice, LinkMode } from "../link/link_device.ts";
import type { Session, SessionAction } from "../session.ts";
import type { Endpoint } from "../underlay/underlay.ts";
import { type ControlMessage, NakReason } from "../wire.ts";
import { defaultInterfaceName } from "../circuit_rules.ts";
import { derivedMac } from "./provisioning.ts";
import type { TimerId, Timers } from "./timers.ts";
import type { CircuitSpec } from "./daemon.ts";

/** What a circuit's runtime needs of its daemon. */
export interface CircuitHost {
  readonly log: Logger;
  readonly network: HostNetwork;
  readonly timers: Timers;
  readonly datapath: DatapathEngine;
  /** The daemon is stopping: no new timers. */
  readonly stopped: boolean;
  now(): number;
  send(to: Endpoint, message: ControlMessage): void;
  drop(reason: string, text: string): void;
  /** Opens and configures a device (src/daemon/provisioning.ts); throws RuntimeFailure. */
  openDevice(name: string, mode: LinkMode, mtu: number, addresses: IpPrefix[], mac: Uint8Array): LinkDevice;
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
  /** Live counters, kept across re-handshakes. */
  readonly counters: CircuitCounters;
  readonly #host: CircuitHost;

  constructor(
    host: CircuitHost,
    init: {
      key: string;
      session: Session;
      spec?: CircuitSpec;
      remote: Endpoint;
      device?: LinkDevice;
      counters: CircuitCounters;
    },
  ) {
    this.#host = host;
    this.key = init.key;
    this.session = init.session;
    this.spec = init.spec;
    this.remote = init.remote;
    this.device = init.device;
    this.counters = init.counters;
  }

  /** Carries out what the session asked for. */
  apply(actions: SessionAction[]): void {
    const host = this.#host;
    const vid = this.session.vid;
    for (const action of actions) {
      switch (action.type) {
        case "send":
          host.send(this.remote, action.message);
          break;
        case "resolve":
          if (this.spec) host.refreshPeer(this);
          break;
        case "create-device": {
          try {
            const mac = derivedMac("responder", this.remote.address, vid);
            try {
              this.device = host.openDevice(
                defaultInterfaceName(vid),
                action.mode,
                action.mtu,
                action.plan,
                mac,
              );
            } catch {
              // vela<vid> is taken (another initiator's circuit with this vid): let the kernel number one.
              this.device = host.openDevice(
                `${defaultInterfaceName(vid)}-%d`,
                action.mode,
                action.mtu,
                action.plan,
                mac,
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
            });
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
            if (this.forwarding) {
              host.datapath.addCircuit(vid, this.remote, this.device, action.mtu, this.counters);
            }
          }
          break;
        case "forward":
          if (action.enabled && this.device) {
            host.datapath.addCircuit(
              vid,
              this.remote,
              this.device,
              this.session.mtu,
              this.counters,
            );
            this.forwarding = true;
          } else if (!action.enabled && this.forwarding) {
            host.datapath.removeCircuit(this.remote.address, vid);
            this.forwarding = false;
            this.establishedAt = undefined;
          }
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
        case "established":
          this.establishedAt = host.now();
          host.log.info(
            `Circuit ${vid} with ${this.remote.address} established on ${this.device?.name}, MTU ${action.mtu}`,
          );
          break;
        case "refused":
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
              this.apply(this.session.handle({ type: "timer" }, host.now()));
            }, Math.max(0, action.at - host.now()));
          }
          break;
        case "dead-peer":
          this.establishedAt = undefined;
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
