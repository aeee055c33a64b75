/**
 * The isolate host: the forwarding core (core.ts) in the main isolate, for the Deno underlay
 * (--underlay deno) and the daemon's tests over fakes. The underlay's receive loop and one pump per
 * circuit wait asynchronously (waitReadable()) and then run the core synchronously, as the Worker host
 * does after poll().
 */

import type { LinkDevice } from "../link/link_device.ts";
import type { Endpoint, IsolateUnderlay } from "../underlay/underlay.ts";
import { DeviceLink } from "../link/device_link.ts";
import { type ControlHandler, CORE_BATCH, DatapathCore } from "./core.ts";
import {
  CIRCUIT_FIELDS,
  type CircuitCounters,
  DATAPATH_COUNT_FIELDS,
  DatapathCount,
  type DatapathCounters,
  readCounters,
  readDatapathCounters,
  zeroCounters,
} from "./counters.ts";
import type { DatapathEngine, DeviceFailureHandler } from "./engine.ts";
import { buildStages, DEFAULT_PIPELINE, type Stage, type StageSpec } from "./stage.ts";
import "./stages.ts";
import { WORKER_SLOTS } from "./worker_messages.ts";

interface Circuit {
  readonly slot: number;
  readonly vid: number;
  readonly remote: Endpoint;
  readonly route: number;
  readonly device: LinkDevice;
  readonly counters: CircuitCounters;
  readonly offset: CircuitCounters;
  active: boolean;
}

export class IsolateDatapath implements DatapathEngine {
  readonly #underlay: IsolateUnderlay;
  readonly #core: DatapathCore;
  readonly #values = new Float64Array(WORKER_SLOTS * CIRCUIT_FIELDS);
  readonly #counts = new Float64Array(DATAPATH_COUNT_FIELDS);
  readonly #onDeviceFailure: DeviceFailureHandler;
  readonly #circuits = new Map<string, Circuit>();
  readonly #freeSlots: number[] = [];
  #nextSlot = 0;
  readonly #pumps = new Set<Promise<void>>();
  /** The stages of every circuit; a test may give its own. */
  readonly #stages: (() => Stage[]) | undefined;

  constructor(
    underlay: IsolateUnderlay,
    onControl: ControlHandler,
    onDeviceFailure: DeviceFailureHandler,
    options: { stages?: () => Stage[] } = {},
  ) {
    this.#underlay = underlay;
    this.#onDeviceFailure = onDeviceFailure;
    this.#core = new DatapathCore(underlay, onControl, { circuits: this.#values, datapath: this.#counts });
    this.#stages = options.stages;
  }

  get counters(): DatapathCounters {
    return readDatapathCounters(this.#counts);
  }

  /**
   * Runs the underlay's receive loop until the underlay is closed. An error in forwarding a batch (a
   * bug) loses the batch and is counted (DATAPATH_ERRORS); it never ends the loop.
   */
  async run(): Promise<void> {
    while (await this.#underlay.waitReadable()) {
      try {
        while (this.#core.receive(0) >= CORE_BATCH);
      } catch {
        this.#counts[DatapathCount.DATAPATH_ERRORS]++;
      }
    }
  }

  addCircuit(
    vid: number,
    remote: Endpoint,
    device: LinkDevice,
    mtu: number,
    counters?: CircuitCounters,
    stages: readonly StageSpec[] = DEFAULT_PIPELINE,
    datagramLimit = 0,
  ): CircuitCounters {
    const key = `${remote.address}|${vid}`;
    const previous = this.#circuits.get(key);
    if (previous) this.#stop(previous);
    const slot = this.#freeSlots.pop() ?? this.#nextSlot++;
    if (slot >= WORKER_SLOTS) throw new RangeError(`More than ${WORKER_SLOTS} circuits`);
    this.#values.fill(0, slot * CIRCUIT_FIELDS, (slot + 1) * CIRCUIT_FIELDS);
    const live = counters ?? previous?.counters ?? zeroCounters();
    const route = this.#underlay.attach(remote);
    const link = new DeviceLink(
      device.frames,
      { mode: device.mode, offload: device.offload, udpOffload: device.udpOffload, mtu },
      this.#core.writer,
      this.#core.countsOf(slot),
    );
    const built = this.#stages?.() ?? buildStages(stages, this.#core.stageContext(slot, mtu));
    this.#core.addCircuit({ slot, vid, route, link, stages: built, datagramLimit });
    const circuit: Circuit = {
      slot,
      vid,
      remote,
      route,
      device,
      counters: live,
      offset: { ...live },
      active: true,
    };
    this.#circuits.set(key, circuit);
    const pump = this.#pump(circuit).finally(() => this.#pumps.delete(pump));
    this.#pumps.add(pump);
    return live;
  }

  removeCircuit(address: string, vid: number): void {
    const circuit = this.#circuits.get(`${address}|${vid}`);
    if (circuit) this.#stop(circuit);
  }

  updateStages(address: string, vid: number, stages: readonly StageSpec[]): void {
    const circuit = this.#circuits.get(`${address}|${vid}`);
    if (circuit) this.#core.updateStages(circuit.slot, stages);
  }

  setDatagramLimit(address: string, vid: number, datagramLimit: number): void {
    const circuit = this.#circuits.get(`${address}|${vid}`);
    if (circuit) this.#core.setDatagramLimit(circuit.slot, datagramLimit);
  }

  refreshCounters(address?: string, vid?: number): void {
    if (address !== undefined) {
      const circuit = this.#circuits.get(`${address}|${vid}`);
      if (circuit) this.#refresh(circuit);
      return;
    }
    for (const circuit of this.#circuits.values()) this.#refresh(circuit);
  }

  #refresh(circuit: Circuit): void {
    readCounters(this.#core.countsOf(circuit.slot), circuit.offset, circuit.counters);
  }

  /** Nothing to do here: closing the underlay and the devices ends this datapath. */
  stop(): Promise<void> {
    this.refreshCounters();
    return Promise.resolve();
  }

  /** Resolves once every device pump has ended (their devices closed). */
  async drained(): Promise<void> {
    await Promise.all(this.#pumps);
  }

  #stop(circuit: Circuit): void {
    if (!circuit.active) return;
    circuit.active = false;
    this.#refresh(circuit);
    const key = `${circuit.remote.address}|${circuit.vid}`;
    if (this.#circuits.get(key) === circuit) this.#circuits.delete(key);
    this.#core.removeCircuit(circuit.slot);
    this.#underlay.detach(circuit.route);
    this.#freeSlots.push(circuit.slot);
  }

  async #pump(circuit: Circuit): Promise<void> {
    const { device, vid, remote } = circuit;
    while (circuit.active && await device.waitReadable()) {
      if (!circuit.active) break;
      if (!this.#core.drain(circuit.slot)) {
        this.#stop(circuit);
        this.#onDeviceFailure(vid, remote, new Error(`reading ${device.name} failed`));
        return;
      }
    }
  }
}
