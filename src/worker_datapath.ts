/**
 * The datapath on its own thread: the main-isolate side of src/datapath_worker.ts. It hands the Worker
 * the UDP socket's and the devices' descriptors, wakes it through an eventfd when it posts a command,
 * reads its counters from shared memory, and passes control datagrams to the daemon. A device's
 * descriptor stays open until the Worker has confirmed that it no longer uses it.
 */

import type { LinkDevice } from "./link_device.ts";
import type { Endpoint } from "./underlay.ts";
import {
  type CircuitCounters,
  type ControlHandler,
  type DatapathCounters,
  type DatapathEngine,
  type DeviceFailureHandler,
  zeroCounters,
} from "./datapath.ts";
import { check, libc } from "../ffi/libc.ts";
import { Linux } from "../ffi/structs.ts";
import { endpointSockaddr, type LibcUdpSocket } from "../ffi/udp_socket.ts";
import {
  CIRCUIT_FIELDS,
  Counter,
  Drop,
  DROP_FIELDS,
  type ToMain,
  type ToWorker,
  WORKER_SLOTS,
} from "./worker_messages.ts";

/** A device whose descriptor the Worker may use: it stays open while leased. */
export interface LeasableDevice extends LinkDevice {
  readonly fd: number;
  readonly offload?: boolean;
  readonly udpOffload?: boolean;
  retain(): void;
  release(): void;
}

function leasable(device: LinkDevice): device is LeasableDevice {
  return typeof (device as Partial<LeasableDevice>).fd === "number";
}

interface Slot {
  readonly slot: number;
  readonly vid: number;
  readonly remote: Endpoint;
  readonly device: LeasableDevice;
  readonly counters: CircuitCounters;
  /** The counters' values when the slot started; the Worker counts from zero on top of them. */
  readonly offset: CircuitCounters;
}

export class WorkerDatapath implements DatapathEngine {
  readonly #worker: Worker;
  readonly #wakeFd: number;
  readonly #circuitCounters: Float64Array<SharedArrayBuffer>;
  readonly #drops: Float64Array<SharedArrayBuffer>;
  readonly #posted: Int32Array<SharedArrayBuffer>;
  readonly #slots = new Map<number, Slot>();
  readonly #byKey = new Map<string, number>();
  readonly #freeSlots: number[] = [];
  #nextSlot = 0;
  readonly #stopped: Promise<void>;
  #resolveStopped!: () => void;
  #stopping = false;
  readonly #onControl: ControlHandler;
  readonly #onDeviceFailure: DeviceFailureHandler;

  /** With `offload` false no UDP GSO or GRO is used either (--no-offload). */
  constructor(
    socket: LibcUdpSocket,
    onControl: ControlHandler,
    onDeviceFailure: DeviceFailureHandler,
    offload = true,
  ) {
    this.#onControl = onControl;
    this.#onDeviceFailure = onDeviceFailure;
    this.#wakeFd = check(libc().eventfd(0, Linux.EFD_NONBLOCK | Linux.EFD_CLOEXEC), "eventfd");
    this.#circuitCounters = new Float64Array(new SharedArrayBuffer(8 * CIRCUIT_FIELDS * WORKER_SLOTS));
    this.#drops = new Float64Array(new SharedArrayBuffer(8 * DROP_FIELDS));
    this.#posted = new Int32Array(new SharedArrayBuffer(4));
    this.#stopped = new Promise((resolve) => this.#resolveStopped = resolve);
    this.#worker = new Worker(new URL("./datapath_worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<ToMain>) => this.#fromWorker(event.data);
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.#onDeviceFailure(
        0,
        { address: "", port: 0 },
        new Error(`The datapath worker failed: ${event.message}`),
      );
      this.#resolveStopped();
    };
    const udpGso = offload && socket.enableGro();
    this.#post({
      type: "init",
      udpFd: socket.fd,
      wakeFd: this.#wakeFd,
      circuitCounters: this.#circuitCounters.buffer,
      drops: this.#drops.buffer,
      posted: this.#posted.buffer,
      udpGso,
    });
  }

  get counters(): DatapathCounters {
    return {
      unknownCircuit: this.#drops[Drop.UNKNOWN_CIRCUIT],
      runt: this.#drops[Drop.RUNT],
      empty: this.#drops[Drop.EMPTY],
      control: this.#drops[Drop.CONTROL],
    };
  }

  #post(message: ToWorker): void {
    Atomics.add(this.#posted, 0, 1);
    this.#worker.postMessage(message);
    libc().write(this.#wakeFd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
  }

  #fromWorker(message: ToMain): void {
    switch (message.type) {
      case "control":
        this.#onControl(message.datagram, message.from);
        break;
      case "removed": {
        const slot = this.#slots.get(message.slot);
        if (!slot) break;
        this.#slots.delete(message.slot);
        this.#freeSlots.push(message.slot);
        slot.device.release();
        break;
      }
      case "device-failed": {
        const slot = this.#slots.get(message.slot);
        if (!slot) break;
        this.#refresh(slot);
        this.#slots.delete(message.slot);
        this.#byKey.delete(`${slot.remote.address}|${slot.vid}`);
        this.#freeSlots.push(message.slot);
        slot.device.release();
        this.#onDeviceFailure(slot.vid, slot.remote, new Error(`reading ${slot.device.name} failed`));
        break;
      }
      case "stopped":
        this.#resolveStopped();
        break;
    }
  }

  /** Resolves when the Worker has stopped. */
  run(): Promise<void> {
    return this.#stopped;
  }

  addCircuit(
    vid: number,
    remote: Endpoint,
    device: LinkDevice,
    mtu: number,
    counters?: CircuitCounters,
  ): CircuitCounters {
    if (!leasable(device)) throw new TypeError("The worker datapath needs a kernel device");
    const key = `${remote.address}|${vid}`;
    if (this.#byKey.has(key)) this.removeCircuit(remote.address, vid);
    const slot = this.#freeSlots.pop() ?? this.#nextSlot++;
    if (slot >= WORKER_SLOTS) throw new RangeError(`More than ${WORKER_SLOTS} circuits`);
    this.#circuitCounters.fill(0, slot * CIRCUIT_FIELDS, (slot + 1) * CIRCUIT_FIELDS);
    const live = counters ?? zeroCounters();
    device.retain();
    this.#slots.set(slot, { slot, vid, remote, device, counters: live, offset: { ...live } });
    this.#byKey.set(key, slot);
    this.#post({
      type: "add",
      slot,
      vid,
      fd: device.fd,
      sockaddr: endpointSockaddr(remote),
      mtu,
      offload: device.offload ?? false,
      udpOffload: device.udpOffload ?? false,
      ipOffset: device.mode === "tap" ? 14 : 0,
    });
    return live;
  }

  removeCircuit(address: string, vid: number): void {
    const key = `${address}|${vid}`;
    const slot = this.#byKey.get(key);
    if (slot === undefined) return;
    this.#byKey.delete(key);
    const entry = this.#slots.get(slot);
    if (entry) this.#refresh(entry);
    this.#post({ type: "remove", slot });
  }

  #refresh(slot: Slot): void {
    const base = slot.slot * CIRCUIT_FIELDS;
    const shared = this.#circuitCounters;
    slot.counters.txPackets = slot.offset.txPackets + shared[base + Counter.TX_PACKETS];
    slot.counters.txBytes = slot.offset.txBytes + shared[base + Counter.TX_BYTES];
    slot.counters.rxPackets = slot.offset.rxPackets + shared[base + Counter.RX_PACKETS];
    slot.counters.rxBytes = slot.offset.rxBytes + shared[base + Counter.RX_BYTES];
    slot.counters.txDropped = slot.offset.txDropped + shared[base + Counter.TX_DROPPED];
    slot.counters.rxDropped = slot.offset.rxDropped + shared[base + Counter.RX_DROPPED];
  }

  /** Brings the Worker's counts into the circuits' counter objects. */
  refreshCounters(): void {
    for (const [key, slot] of this.#byKey) {
      const entry = this.#slots.get(slot);
      if (entry && key) this.#refresh(entry);
    }
  }

  /** Stops the Worker and waits for it; then the devices and the socket may be closed. */
  async stop(): Promise<void> {
    if (this.#stopping) return this.#stopped;
    this.#stopping = true;
    this.refreshCounters();
    this.#post({ type: "stop" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#stopped, new Promise((resolve) => timer = setTimeout(resolve, 3000))]);
    clearTimeout(timer);
    this.#worker.terminate();
    for (const slot of this.#slots.values()) slot.device.release();
    this.#slots.clear();
    this.#byKey.clear();
    libc().close(this.#wakeFd);
    this.#resolveStopped();
  }

  drained(): Promise<void> {
    return this.#stopped;
  }
}
