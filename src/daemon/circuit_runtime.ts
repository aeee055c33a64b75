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
    const circuit = this;
    const host = this.#host;
    const vid = circuit.session.vid;
    for (const action of actions) {
      switch (action.type) {
        case "send":
          host.send(circuit.remote, action.message);
          break;
        case "resolve":
          if (circuit.spec) host.refreshPeer(circuit);
          break;
        case "create-device": {
          try {
            const mac = derivedMac("responder", circuit.remote.address, vid);
            try {
              circuit.device = host.openDevice(
                defaultInterfaceName(vid),
                action.mode,
                action.mtu,
                action.plan,
                mac,
              );
            } catch {
              // vela<vid> is taken (another initiator's circuit with this vid): let the kernel number one.
              circuit.device = host.openDevice(
                `${defaultInterfaceName(vid)}-%d`,
                action.mode,
                action.mtu,
                action.plan,
                mac,
              );
            }
          } catch (error) {
            host.log.error(
              `Refusing circuit ${vid} from ${circuit.remote.address}: ${(error as Error).message}`,
            );
            host.forget(circuit);
            const request = circuit.session.peerNonce;
            host.send(circuit.remote, {
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
            `Interface ${circuit.device.name} (${action.mode}, MTU ${action.mtu}, ${plan}) created for circuit ${vid} from ${circuit.remote.address}`,
          );
          break;
        }
        case "set-mtu":
          if (circuit.device) {
            try {
              host.network.setMtu(circuit.device.name, action.mtu);
            } catch (error) {
              host.log.error(explainDeviceError(error, `set MTU ${action.mtu} on ${circuit.device.name}`));
            }
            if (circuit.forwarding) {
              host.datapath.addCircuit(vid, circuit.remote, circuit.device, action.mtu, circuit.counters);
            }
          }
          break;
        case "forward":
          if (action.enabled && circuit.device) {
            host.datapath.addCircuit(
              vid,
              circuit.remote,
              circuit.device,
              circuit.session.mtu,
              circuit.counters,
            );
            circuit.forwarding = true;
          } else if (!action.enabled && circuit.forwarding) {
            host.datapath.removeCircuit(circuit.remote.address, vid);
            circuit.forwarding = false;
            circuit.establishedAt = undefined;
          }
          break;
        case "remove-device":
          host.forget(circuit);
          if (circuit.device) {
            host.log.info(
              `Circuit ${vid} from ${circuit.remote.address} closed; interface ${circuit.device.name} removed`,
            );
            circuit.device.close();
          }
          break;
        case "established":
          circuit.establishedAt = host.now();
          host.log.info(
            `Circuit ${vid} with ${circuit.remote.address} established on ${circuit.device?.name}, MTU ${action.mtu}`,
          );
          break;
        case "refused":
          host.log.error(
            `${circuit.remote.address} refused circuit ${vid}: ${action.text} (reason ${action.reason})`,
          );
          break;
        case "timer":
          host.timers.clearTimeout(circuit.timer);
          circuit.timer = undefined;
          if (action.at !== undefined && !host.stopped) {
            circuit.timer = host.timers.setTimeout(() => {
              circuit.timer = undefined;
              circuit.apply(circuit.session.handle({ type: "timer" }, host.now()));
            }, Math.max(0, action.at - host.now()));
          }
          break;
        case "dead-peer":
          circuit.establishedAt = undefined;
          host.log.warn(
            `Circuit ${vid}: nothing heard from ${circuit.remote.address} for ${
              Math.round(action.silentMs / 1000)
            } s; ${circuit.spec ? "asking again" : "keeping the interface for a while"}`,
          );
          break;
        case "drop":
          host.drop("session", `Circuit ${vid} with ${circuit.remote.address}: ignored ${action.reason}`);
          break;
      }
    }
    // A responder session that closed without a device (it refused the IREQ) leaves no entry behind,
    // so that the next IREQ from that address and vid is heard afresh.
    if (circuit.session.state === "closed" && circuit.session.role === "responder") {
      host.forget(circuit, true);
    }
  }
}
