/**
 * The datapath on its own threads: the main-isolate side of src/datapath/worker_host.ts. It hands the
 * Workers (one receiving and one sending, or one doing both) the UDP socket's and the devices'
 * descriptors, wakes each through its eventfd when it posts a command, reads their counters from shared
 * memory, and passes control datagrams to the daemon. A device's descriptor stays open until every
 * Worker has confirmed that it no longer uses it.
 */

import type { LinkDevice } from "../link/link_device.ts";
import type { Endpoint } from "../underlay/underlay.ts";
import type { DatapathEngine, DeviceFailureHandler } from "./engine.ts";
import type { ControlHandler } from "./core.ts";
import { CONTROL_QUEUE_BYTES, ControlQueue } from "./control_queue.ts";
import {
  CIRCUIT_FIELDS,
  type CircuitCounters,
  DATAPATH_COUNT_FIELDS,
  type DatapathCounters,
  readCounters,
  readDatapathCounters,
  zeroCounters,
} from "./counters.ts";
import { DEFAULT_PIPELINE, type StageSpec } from "./stage.ts";
import { check, libc } from "../../ffi/libc.ts";
import { Linux } from "../../ffi/structs.ts";
import { openPeerSocket } from "../../ffi/udp_socket.ts";
import { endpointSockaddr } from "../underlay/sockaddr.ts";
import type { LibcUnderlay } from "../underlay/libc_underlay.ts";
import { type PeerSocket, PeerSockets } from "../underlay/peer_sockets.ts";
import { logger } from "../log.ts";
import { MODERATION_WAIT_US, NO_OFFLOAD_TIME_SLICE_MS, WORKER_STOP_MS } from "../timing.ts";
import { type ToMain, type ToWorker, WORKER_SLOTS, type WorkerRole } from "./worker_messages.ts";

interface Slot {
  readonly slot: number;
  readonly vid: number;
  readonly remote: Endpoint;
  readonly device: LinkDevice;
  readonly counters: CircuitCounters;
  /** The counters' values when the slot started; the Workers count from zero on top of them. */
  readonly offset: CircuitCounters;
  /** The Workers that still use the device's descriptor; it is released when none does. */
  readonly users: Set<WorkerThread>;
  /** The peer socket the slot sends and receives on, if one could be opened. */
  readonly peerSocket?: PeerSocket;
}

/** One datapath Worker, the eventfd that wakes it, and its count of messages posted to it. */
interface WorkerThread {
  readonly role: WorkerRole;
  readonly worker: Worker;
  readonly wakeFd: number;
  readonly posted: Int32Array<SharedArrayBuffer>;
  stopped: boolean;
}

/**
 * How many datapath Workers to run: two (one receiving, one sending) where the machine has two CPUs or
 * more, else one. Two carry 7-9% more TCP in bench/ on two CPUs, with offloads and without (the sending
 * Worker no longer waits while the receiving one writes to the devices).
 */
export function defaultDatapathThreads(): 1 | 2 {
  return navigator.hardwareConcurrency >= 2 ? 2 : 1;
}

const WORKER_MODULE = new URL("./worker_host.ts", import.meta.url);

const WAKE = new Uint8Array(new BigUint64Array([1n]).buffer);

export class WorkerDatapath implements DatapathEngine {
  readonly #threads: WorkerThread[];
  readonly #circuitCounters: Float64Array<SharedArrayBuffer>;
  readonly #datapathCounts: Float64Array<SharedArrayBuffer>;
  readonly #slots = new Map<number, Slot>();
  readonly #byKey = new Map<string, number>();
  readonly #freeSlots: number[] = [];
  #nextSlot = 0;
  readonly #stopped: Promise<void>;
  #resolveStopped!: () => void;
  /** run(): rejected when a Worker dies, resolved when the Workers stop. */
  readonly #running: Promise<void>;
  #rejectStopped!: (error: Error) => void;
  #resolveRunning!: () => void;
  #failure: Error | undefined;
  #stopping = false;
  readonly #onControl: ControlHandler;
  /** Shared by every Worker: the bounds hold for the daemon, however many Workers receive. */
  readonly #controlQueueMemory = new SharedArrayBuffer(CONTROL_QUEUE_BYTES);
  readonly #controlQueue = new ControlQueue(this.#controlQueueMemory);
  readonly #onDeviceFailure: DeviceFailureHandler;
  readonly #peerSockets: PeerSockets;
  readonly #log = logger("datapath");

  /**
   * With `offload` false no UDP GSO or GRO is used either (--no-offload). `threads` is the number of
   * Workers (see defaultDatapathThreads); `moderationUs` the sending Worker's wait under bulk traffic
   * (src/datapath/send_moderation.ts, 0 for none; by default MODERATION_WAIT_US with offloads, none without).
   */
  constructor(
    underlay: LibcUnderlay,
    onControl: ControlHandler,
    onDeviceFailure: DeviceFailureHandler,
    { offload = true, threads = defaultDatapathThreads(), moderationUs, workerModule = WORKER_MODULE }: {
      offload?: boolean;
      threads?: 1 | 2;
      moderationUs?: number;
      /** The Workers' module: worker_host.ts; a test gives one that fails. */
      workerModule?: URL;
    } = {},
  ) {
    this.#onControl = onControl;
    this.#onDeviceFailure = onDeviceFailure;
    this.#circuitCounters = new Float64Array(new SharedArrayBuffer(8 * CIRCUIT_FIELDS * WORKER_SLOTS));
    this.#datapathCounts = new Float64Array(new SharedArrayBuffer(8 * DATAPATH_COUNT_FIELDS));
    this.#stopped = new Promise((resolve) => this.#resolveStopped = resolve);
    this.#running = new Promise((resolve, reject) => {
      this.#resolveRunning = resolve;
      this.#rejectStopped = reject;
    });
    this.#stopped.then(() => this.#resolveRunning());
    const socket = underlay.socket;
    const udpGso = offload && socket.enableGro();
    this.#peerSockets = new PeerSockets(
      (peer) => openPeerSocket(socket.port, endpointSockaddr(peer), udpGso),
      (fd) => libc().close(fd),
    );
    const roles: WorkerRole[] = threads === 2 ? ["receive", "send"] : ["both"];
    const timeSliceNs = offload ? 0 : NO_OFFLOAD_TIME_SLICE_MS * 1_000_000;
    moderationUs ??= offload ? MODERATION_WAIT_US : 0;
    this.#threads = roles.map((role) =>
      this.#startThread(
        role,
        workerModule,
        socket.fd,
        udpGso,
        timeSliceNs,
        role === "receive" ? 0 : moderationUs,
      )
    );
  }

  #startThread(
    role: WorkerRole,
    module: URL,
    udpFd: number,
    udpGso: boolean,
    timeSliceNs: number,
    moderationUs: number,
  ): WorkerThread {
    const thread: WorkerThread = {
      role,
      worker: new Worker(module.href, { type: "module" }),
      wakeFd: check(libc().eventfd(0, Linux.EFD_NONBLOCK | Linux.EFD_CLOEXEC), "eventfd"),
      posted: new Int32Array(new SharedArrayBuffer(4)),
      stopped: false,
    };
    thread.worker.onmessage = (event: MessageEvent<ToMain>) => this.#fromWorker(thread, event.data);
    thread.worker.onerror = (event) => {
      event.preventDefault();
      thread.stopped = true;
      this.#fail(new Error(`The datapath ${role} Worker failed: ${event.message}`));
    };
    this.#post(thread, {
      type: "init",
      role,
      udpFd,
      wakeFd: thread.wakeFd,
      circuitCounters: this.#circuitCounters.buffer,
      datapathCounts: this.#datapathCounts.buffer,
      posted: thread.posted.buffer,
      controlQueue: this.#controlQueueMemory,
      udpGso,
      timeSliceNs,
      moderationUs,
    });
    return thread;
  }

  get counters(): DatapathCounters {
    return readDatapathCounters(this.#datapathCounts);
  }

  /**
   * A Worker died: the datapath is gone, so run() rejects with `error` (the daemon stops on it). The
   * other Workers are stopped; the devices and peer sockets are let go.
   */
  #fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    this.#rejectStopped(error);
    void this.stop();
  }

  #post(thread: WorkerThread, message: ToWorker): void {
    Atomics.add(thread.posted, 0, 1);
    thread.worker.postMessage(message);
    libc().write(thread.wakeFd, WAKE, 8n);
  }

  #postAll(message: ToWorker): void {
    for (const thread of this.#threads) this.#post(thread, message);
  }

  #fromWorker(thread: WorkerThread, message: ToMain): void {
    switch (message.type) {
      case "control":
        this.#controlQueue.taken(message.known);
        this.#onControl(message.datagram, message.from, message.known);
        break;
      case "removed": {
        const slot = this.#slots.get(message.slot);
        if (slot) this.#letGo(slot, thread);
        break;
      }
      case "device-failed": {
        const slot = this.#slots.get(message.slot);
        if (!slot) break;
        this.#refresh(slot);
        const key = `${slot.remote.address}|${slot.vid}`;
        if (this.#byKey.get(key) === slot.slot) {
          // The failing Worker has dropped the slot already; the others are told to (unless a removal
          // is already on its way to them).
          this.#byKey.delete(key);
          for (const other of slot.users) {
            if (other !== thread) this.#post(other, { type: "remove", slot: slot.slot });
          }
        }
        this.#letGo(slot, thread);
        this.#onDeviceFailure(slot.vid, slot.remote, new Error(`reading ${slot.device.name} failed`));
        break;
      }
      case "warning":
        this.#log.warn(message.text);
        break;
      case "stopped":
        thread.stopped = true;
        if (this.#threads.every((t) => t.stopped)) this.#resolveStopped();
        break;
    }
  }

  /** `thread` no longer uses the slot; once no Worker does, its device is released and the slot reused. */
  #letGo(slot: Slot, thread: WorkerThread): void {
    slot.users.delete(thread);
    if (slot.users.size > 0) return;
    this.#slots.delete(slot.slot);
    this.#freeSlots.push(slot.slot);
    slot.device.release();
    if (slot.peerSocket) this.#peerSockets.release(slot.peerSocket);
  }

  /** Resolves when the Workers have stopped; rejects when one of them died. */
  run(): Promise<void> {
    return this.#running;
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
    if (device.fd < 0) throw new TypeError("The worker datapath needs a kernel device");
    const key = `${remote.address}|${vid}`;
    if (this.#byKey.has(key)) this.removeCircuit(remote.address, vid);
    const slot = this.#freeSlots.pop() ?? this.#nextSlot++;
    if (slot >= WORKER_SLOTS) throw new RangeError(`More than ${WORKER_SLOTS} circuits`);
    this.#circuitCounters.fill(0, slot * CIRCUIT_FIELDS, (slot + 1) * CIRCUIT_FIELDS);
    const live = counters ?? zeroCounters();
    device.retain();
    const peerSocket = this.#peerSockets.acquire(remote);
    this.#slots.set(slot, {
      slot,
      vid,
      remote,
      device,
      counters: live,
      offset: { ...live },
      users: new Set(this.#threads),
      peerSocket,
    });
    this.#byKey.set(key, slot);
    this.#postAll({
      type: "add",
      slot,
      vid,
      fd: device.fd,
      peerFd: peerSocket?.fd ?? -1,
      sockaddr: endpointSockaddr(remote),
      mtu,
      offload: device.offload,
      udpOffload: device.udpOffload,
      mode: device.mode,
      stages,
      datagramLimit,
    });
    return live;
  }

  setDatagramLimit(address: string, vid: number, datagramLimit: number): void {
    const slot = this.#byKey.get(`${address}|${vid}`);
    if (slot !== undefined) this.#postAll({ type: "limit", slot, datagramLimit });
  }

  updateStages(address: string, vid: number, stages: readonly StageSpec[]): void {
    const slot = this.#byKey.get(`${address}|${vid}`);
    if (slot !== undefined) this.#postAll({ type: "stages", slot, stages });
  }

  removeCircuit(address: string, vid: number): void {
    const key = `${address}|${vid}`;
    const slot = this.#byKey.get(key);
    if (slot === undefined) return;
    this.#byKey.delete(key);
    const entry = this.#slots.get(slot);
    if (entry) this.#refresh(entry);
    this.#postAll({ type: "remove", slot });
  }

  #refresh(slot: Slot): void {
    readCounters(
      { values: this.#circuitCounters, base: slot.slot * CIRCUIT_FIELDS },
      slot.offset,
      slot.counters,
    );
  }

  /** Brings the Worker's counts into the counter objects of the circuit (address, vid), or of all. */
  refreshCounters(address?: string, vid?: number): void {
    if (address !== undefined) {
      const slot = this.#byKey.get(`${address}|${vid}`);
      const entry = slot === undefined ? undefined : this.#slots.get(slot);
      if (entry) this.#refresh(entry);
      return;
    }
    for (const [key, slot] of this.#byKey) {
      const entry = this.#slots.get(slot);
      if (entry && key) this.#refresh(entry);
    }
  }

  /** Stops the Workers and waits for them; then the devices and the socket may be closed. */
  async stop(): Promise<void> {
    if (this.#stopping) return this.#stopped;
    this.#stopping = true;
    this.refreshCounters();
    this.#postAll({ type: "stop" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#stopped,
      new Promise((resolve) => timer = setTimeout(resolve, WORKER_STOP_MS)),
    ]);
    clearTimeout(timer);
    for (const thread of this.#threads) {
      thread.worker.terminate();
      libc().close(thread.wakeFd);
    }
    for (const slot of this.#slots.values()) slot.device.release();
    this.#peerSockets.close();
    this.#slots.clear();
    this.#byKey.clear();
    this.#resolveStopped();
  }

  drained(): Promise<void> {
    return this.#stopped;
  }
}
