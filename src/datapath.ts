/**
 * The datapath joins link devices and the underlay; it owns no session logic.
 *
 * Underlay to device: a datagram whose first byte is 0 goes to the control handler; any other first
 * byte is the vid of a data datagram, looked up with the sender's address in the circuit table and
 * written to that circuit's device, or dropped and counted when no circuit matches.
 * Device to underlay: each circuit's pump waits until its device is readable, drains every ready frame
 * into a batch of reused buffers whose first byte is already the vid, and sends the batch.
 */

import type { LinkDevice } from "./link_device.ts";
import type { Endpoint, Underlay } from "./underlay.ts";
import { CONTROL_MARKER } from "./wire.ts";

/** Frames read from a device per batch before they are sent. */
export const DEVICE_BATCH = 64;
/** Room for the link-layer header of a tap frame (Ethernet plus one VLAN tag) beyond the MTU. */
export const FRAME_HEADROOM = 18;

export interface CircuitCounters {
  /** Frames from the device sent to the peer, and their bytes (without the vid byte). */
  txPackets: number;
  txBytes: number;
  /** Frames from the peer written to the device, and their bytes. */
  rxPackets: number;
  rxBytes: number;
  /** Frames the underlay could not send. */
  txDropped: number;
  /** Frames the device refused (queue full, malformed for a tun device). */
  rxDropped: number;
}

export interface DatapathCounters {
  /** Data datagrams for no known circuit, per (address, vid) they came from in aggregate. */
  unknownCircuit: number;
  /** Data datagrams with a vid and nothing after it. */
  runt: number;
  /** Empty datagrams. */
  empty: number;
  /** Control datagrams handed up. */
  control: number;
  /** Wake-ups of a sending Worker that waited for more frames under bulk traffic (src/send_moderation.ts). */
  moderatedWakeups: number;
}

/** What the daemon needs of a datapath: this in-isolate one, or src/worker_datapath.ts on its own thread. */
export interface DatapathEngine {
  /** Drops of the receive path (read-only view). */
  readonly counters: DatapathCounters;
  /** Runs until the datapath stops (the underlay closed, or stop()). */
  run(): Promise<void>;
  addCircuit(
    vid: number,
    remote: Endpoint,
    device: LinkDevice,
    mtu: number,
    counters?: CircuitCounters,
  ): CircuitCounters;
  removeCircuit(address: string, vid: number): void;
  /** Brings counters kept elsewhere (shared memory) into the circuits' counter objects. */
  refreshCounters?(): void;
  /** Stops forwarding; after it the devices and the underlay may be closed. */
  stop(): Promise<void>;
  /** Resolves once nothing of the datapath runs any more. */
  drained(): Promise<void>;
}

export type ControlHandler = (datagram: Uint8Array, from: Endpoint) => void;
/** Told when a device fails for good (removed under VELA's feet); the circuit is already out of the table. */
export type DeviceFailureHandler = (vid: number, remote: Endpoint, error: unknown) => void;

interface Circuit {
  readonly vid: number;
  readonly remote: Endpoint;
  readonly device: LinkDevice;
  readonly counters: CircuitCounters;
  active: boolean;
}

export function zeroCounters(): CircuitCounters {
  return { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, txDropped: 0, rxDropped: 0 };
}

export class Datapath implements DatapathEngine {
  readonly counters: DatapathCounters = {
    unknownCircuit: 0,
    runt: 0,
    empty: 0,
    control: 0,
    moderatedWakeups: 0,
  };
  readonly #underlay: Underlay;
  readonly #onControl: ControlHandler;
  readonly #onDeviceFailure: DeviceFailureHandler;
  /** Circuits by remote address, then by vid. */
  readonly #circuits = new Map<string, (Circuit | undefined)[]>();
  readonly #pumps = new Set<Promise<void>>();
  readonly #deliver = (datagram: Uint8Array, from: Endpoint) => this.#fromUnderlay(datagram, from);

  constructor(underlay: Underlay, onControl: ControlHandler, onDeviceFailure: DeviceFailureHandler) {
    this.#underlay = underlay;
    this.#onControl = onControl;
    this.#onDeviceFailure = onDeviceFailure;
  }

  /** Runs the underlay's receive loop until the underlay is closed. */
  async run(): Promise<void> {
    while (await this.#underlay.receiveBatch(this.#deliver));
  }

  /**
   * Forwards between `device` and `remote` for `vid` with buffers for `mtu`; replaces a circuit with
   * the same remote address and vid. Returns the circuit's live counters.
   */
  addCircuit(
    vid: number,
    remote: Endpoint,
    device: LinkDevice,
    mtu: number,
    counters?: CircuitCounters,
  ): CircuitCounters {
    const previous = this.#lookup(remote.address, vid);
    if (previous) this.#stop(previous);
    const circuit: Circuit = {
      vid,
      remote,
      device,
      counters: counters ?? previous?.counters ?? zeroCounters(),
      active: true,
    };
    let byVid = this.#circuits.get(remote.address);
    if (!byVid) this.#circuits.set(remote.address, byVid = new Array(256));
    byVid[vid] = circuit;
    const pump = this.#pump(circuit, mtu).finally(() => this.#pumps.delete(pump));
    this.#pumps.add(pump);
    return circuit.counters;
  }

  /** Stops forwarding for (address, vid); the device stays open for its owner to close. */
  removeCircuit(address: string, vid: number): void {
    const circuit = this.#lookup(address, vid);
    if (circuit) this.#stop(circuit);
  }

  /** Nothing to do here: closing the underlay and the devices ends this datapath. */
  stop(): Promise<void> {
    return Promise.resolve();
  }

  /** Resolves once every device pump has ended (their devices closed). */
  async drained(): Promise<void> {
    await Promise.all(this.#pumps);
  }

  #lookup(address: string, vid: number): Circuit | undefined {
    return this.#circuits.get(address)?.[vid];
  }

  #stop(circuit: Circuit): void {
    circuit.active = false;
    const byVid = this.#circuits.get(circuit.remote.address);
    if (byVid?.[circuit.vid] === circuit) {
      byVid[circuit.vid] = undefined;
      if (byVid.every((c) => c === undefined)) this.#circuits.delete(circuit.remote.address);
    }
  }

  #fromUnderlay(datagram: Uint8Array, from: Endpoint): void {
    if (datagram.length === 0) {
      this.counters.empty++;
      return;
    }
    const vid = datagram[0];
    if (vid === CONTROL_MARKER) {
      this.counters.control++;
      this.#onControl(datagram, from);
      return;
    }
    const circuit = this.#circuits.get(from.address)?.[vid];
    if (circuit === undefined) {
      this.counters.unknownCircuit++;
      return;
    }
    if (datagram.length < 2) {
      this.counters.runt++;
      return;
    }
    const frame = datagram.subarray(1);
    const counters = circuit.counters;
    if (circuit.device.write(frame) === 0) {
      counters.rxPackets++;
      counters.rxBytes += frame.length;
    } else {
      counters.rxDropped++;
    }
  }

  async #pump(circuit: Circuit, mtu: number): Promise<void> {
    const { device, vid, remote, counters } = circuit;
    const buffers: Uint8Array[] = [];
    const bodies: Uint8Array[] = [];
    const lengths = new Int32Array(DEVICE_BATCH);
    for (let i = 0; i < DEVICE_BATCH; i++) {
      const buffer = new Uint8Array(1 + mtu + FRAME_HEADROOM);
      buffer[0] = vid;
      buffers.push(buffer);
      bodies.push(buffer.subarray(1));
    }
    try {
      while (circuit.active && await device.waitReadable()) {
        // Drain: read every ready frame (up to a batch) with synchronous calls, then send them together.
        while (circuit.active) {
          let count = 0;
          let bytes = 0;
          while (count < DEVICE_BATCH) {
            const length = device.tryRead(bodies[count]);
            if (length === 0) break;
            lengths[count++] = length + 1;
            bytes += length;
          }
          if (count === 0) break;
          const failed = await this.#underlay.sendBatch(buffers, lengths, count, remote);
          counters.txPackets += count - failed;
          counters.txBytes += bytes;
          counters.txDropped += failed;
          if (count < DEVICE_BATCH) break;
        }
      }
    } catch (error) {
      if (circuit.active) {
        this.#stop(circuit);
        this.#onDeviceFailure(vid, remote, error);
      }
    }
  }
}
