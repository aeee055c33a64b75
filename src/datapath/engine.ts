/**
 * What the daemon needs of a datapath: the isolate host (isolate_host.ts) or the Worker host's main side
 * (worker_datapath.ts). Both run the same core (core.ts).
 */

import type { LinkDevice } from "../link/link_device.ts";
import type { Endpoint } from "../underlay/underlay.ts";
import type { CircuitCounters, DatapathCounters } from "./counters.ts";
import type { StageSpec } from "./stage.ts";

/** Told when a device fails for good (removed under VELA's feet); the circuit is already out of the table. */
export type DeviceFailureHandler = (vid: number, remote: Endpoint, error: unknown) => void;

export interface DatapathEngine {
  /** Drops of the receive path (read-only view). */
  readonly counters: DatapathCounters;
  /**
   * Runs until the datapath stops (the underlay closed, or stop()); rejects when the datapath itself
   * failed (a Worker died), after which nothing is forwarded.
   */
  run(): Promise<void>;
  /**
   * Forwards between `device` and `remote` for `vid` with buffers for `mtu`, through the pipeline
   * `stages` (default: the clear one); replaces a circuit with the same remote address and vid. Datagrams
   * longer than `datagramLimit` (when not 0: both ends fragment) go in fragments, and fragments from the
   * peer are joined (src/datapath/fragmentation.ts). Returns the circuit's live counters.
   */
  addCircuit(
    vid: number,
    remote: Endpoint,
    device: LinkDevice,
    mtu: number,
    counters?: CircuitCounters,
    stages?: readonly StageSpec[],
    datagramLimit?: number,
  ): CircuitCounters;
  /** A new datagram limit for the circuit (address, vid): the path MTU changed. */
  setDatagramLimit(address: string, vid: number, datagramLimit: number): void;
  /** New settings (keys) for the stages of the circuit (address, vid); the stages keep their state. */
  updateStages(address: string, vid: number, stages: readonly StageSpec[]): void;
  /** Stops forwarding for (address, vid); the device stays open for its owner to close. */
  removeCircuit(address: string, vid: number): void;
  /**
   * Brings counters kept elsewhere (shared memory) into the circuits' counter objects: those of the
   * circuit (address, vid) only, when given (a circuit that reads its own counts often), else all.
   */
  refreshCounters(address?: string, vid?: number): void;
  /** Stops forwarding; after it the devices and the underlay may be closed. */
  stop(): Promise<void>;
  /** Resolves once nothing of the datapath runs any more. */
  drained(): Promise<void>;
}
