/**
 * A datapath Worker: a thin host of the forwarding core (core.ts) on its own thread. It sleeps in poll()
 * on a wake-up eventfd and, by its role (worker_messages.ts, WorkerRole), on the UDP sockets, on the
 * devices, or on both; what is readable it hands to the core: a socket to DatapathCore.receive(), a
 * device to DatapathCore.drain(). Commands from the main isolate arrive as messages; the main isolate
 * signals the eventfd so that the loop stops sleeping and reads them. Control datagrams go up as
 * messages. Counters live in shared memory, each written by one role only.
 */

/// <reference lib="deno.worker" />

import { libc, usize } from "../../ffi/libc.ts";
import { setOwnTimeSlice } from "../../ffi/scheduling.ts";
import { TunFrames } from "../../ffi/tun.ts";
import { Linux, PollFd } from "../../ffi/structs.ts";
import { SendModeration } from "./send_moderation.ts";
import { ControlQueue } from "./control_queue.ts";
import { DROP_LOG_INTERVAL_MS } from "../timing.ts";
import { CORE_BATCH, DatapathCore } from "./core.ts";
import { DatapathCount } from "./counters.ts";
import { buildStages } from "./stage.ts";
import "./stages.ts";
import { DeviceLink } from "../link/device_link.ts";
import { KernelUnderlay } from "../underlay/kernel_underlay.ts";
import type { ToMain, ToWorker, WorkerRole } from "./worker_messages.ts";

/**
 * With UDP GRO, after this many device writes the Worker gives up its core for a moment (sched_yield), so
 * that the application reading those frames on the same core can drain its socket: without it, a burst of
 * joined datagrams overflows a receiving application's UDP buffer (measured with bench/: iperf3 UDP at
 * under 1% loss went from about 35k to 55-67k packets/s).
 */
const YIELD_EVERY = 16;

interface Slot {
  readonly slot: number;
  readonly fd: number;
  readonly route: number;
}

/** The Worker's state, made by the init message. */
class WorkerHost {
  readonly #c = libc();
  readonly role: WorkerRole;
  readonly #wakeFd: number;
  readonly #posted: Int32Array<ArrayBufferLike>;
  readonly #datapathCounts: Float64Array<ArrayBufferLike>;
  readonly #underlay: KernelUnderlay;
  readonly #core: DatapathCore;
  readonly #moderation: SendModeration;
  readonly #slots = new Map<number, Slot>();
  readonly #wakeBuffer = new Uint8Array(8);
  #lastErrorReport = -Infinity;
  /** Messages handled, the init message included. */
  #handled = 1;
  stopping = false;
  #pollSet = new Uint8Array(0);
  #pollView = new DataView(this.#pollSet.buffer);
  #pollSlots: Slot[] = [];
  /** How many of underlay.sockets the poll set holds (none for a sending Worker). */
  #pollSockets = 0;

  constructor(message: Extract<ToWorker, { type: "init" }>) {
    this.role = message.role;
    this.#wakeFd = message.wakeFd;
    this.#posted = new Int32Array(message.posted);
    this.#datapathCounts = new Float64Array(message.datapathCounts);
    this.#underlay = new KernelUnderlay(message.udpFd, message.udpGso);
    const queue = new ControlQueue(message.controlQueue);
    this.#core = new DatapathCore(
      this.#underlay,
      (datagram, from, known) =>
        self.postMessage({ type: "control", datagram, from, known } satisfies ToMain),
      { circuits: new Float64Array(message.circuitCounters), datapath: this.#datapathCounts },
      {
        yieldEvery: message.udpGso ? YIELD_EVERY : 0,
        yieldCpu: () => this.#c.sched_yield(),
        controlGate: (known) => queue.offer(known, performance.now()),
      },
    );
    this.#moderation = new SendModeration(message.moderationUs);
    try {
      if (message.timeSliceNs > 0) setOwnTimeSlice(message.timeSliceNs);
    } catch (error) {
      send({
        type: "warning",
        text: `The ${this.role} Worker keeps the default time slice: ${(error as Error).message}`,
      });
    }
    this.#rebuildPollSet();
  }

  handle(message: ToWorker): void {
    this.#handled++;
    switch (message.type) {
      case "add": {
        const core = this.#core;
        const route = this.#underlay.attachSockaddr(message.sockaddr, message.peerFd);
        const link = new DeviceLink(
          new TunFrames(message.fd),
          { mode: message.mode, offload: message.offload, udpOffload: message.udpOffload, mtu: message.mtu },
          core.writer,
          core.countsOf(message.slot),
        );
        core.addCircuit({
          slot: message.slot,
          vid: message.vid,
          route,
          link,
          stages: buildStages(message.stages, core.stageContext(message.slot, message.mtu)),
          datagramLimit: message.datagramLimit,
        });
        this.#slots.set(message.slot, { slot: message.slot, fd: message.fd, route });
        this.#rebuildPollSet();
        break;
      }
      case "stages":
        this.#core.updateStages(message.slot, message.stages);
        break;
      case "limit":
        this.#core.setDatagramLimit(message.slot, message.datagramLimit);
        break;
      case "remove":
        // A slot this Worker dropped itself (its device failed) was reported then, not again.
        if (this.#forget(message.slot)) send({ type: "removed", slot: message.slot });
        break;
      case "stop":
        this.stopping = true;
        break;
      case "init":
        break;
    }
  }

  /** Drops a slot; false if this Worker did not have it. */
  #forget(slotNumber: number): boolean {
    const slot = this.#slots.get(slotNumber);
    if (!slot) return false;
    this.#slots.delete(slotNumber);
    this.#core.removeCircuit(slotNumber);
    this.#underlay.detach(slot.route);
    this.#rebuildPollSet();
    return true;
  }

  /** Entry 0 is the eventfd, then the devices (if this Worker sends), then the sockets (if it receives). */
  #rebuildPollSet(): void {
    this.#pollSlots = this.role === "receive" ? [] : [...this.#slots.values()];
    const sockets = this.role === "send" ? [] : this.#underlay.sockets;
    this.#pollSockets = sockets.length;
    const fds = [this.#wakeFd, ...this.#pollSlots.map((s) => s.fd), ...sockets];
    this.#pollSet = new Uint8Array(PollFd.SIZE * fds.length);
    this.#pollView = new DataView(this.#pollSet.buffer);
    fds.forEach((fd, i) => {
      this.#pollView.setInt32(i * PollFd.SIZE + PollFd.FD, fd, true);
      this.#pollView.setInt16(i * PollFd.SIZE + PollFd.EVENTS, Linux.POLLIN, true);
    });
  }

  #revents(index: number): number {
    return this.#pollView.getInt16(index * PollFd.SIZE + PollFd.REVENTS, true);
  }

  /** Lets the event loop deliver every message the main isolate has posted so far. */
  async #readMessages(): Promise<void> {
    this.#c.read(this.#wakeFd, this.#wakeBuffer, 8n);
    while (this.#handled < Atomics.load(this.#posted, 0) && !this.stopping) {
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }

  /** Drains every ready device into the core; a device that failed is forgotten and reported. */
  #drainDevices(): void {
    const slots = this.#pollSlots;
    if (slots.length === 0) return;
    let ready = false;
    for (let i = 0; i < slots.length && !ready; i++) ready = this.#revents(1 + i) !== 0;
    if (!ready) return;
    const wait = this.#moderation.wake(performance.now());
    // An early wake (EINTR) only shortens the wait, so the result is not checked.
    if (wait > 0) {
      this.#c.usleep(wait);
      this.#datapathCounts[DatapathCount.MODERATED_WAKEUPS]++;
    }
    let bytes = 0;
    for (let i = 0; i < slots.length; i++) {
      if (this.#revents(1 + i) === 0) continue;
      const slot = slots[i];
      const alive = this.#core.drain(slot.slot);
      bytes += this.#core.drainedBytes;
      if (!alive) {
        this.#forget(slot.slot);
        send({ type: "device-failed", slot: slot.slot });
        break;
      }
    }
    this.#moderation.drained(bytes, performance.now());
  }

  /** Receives from socket `which` until it is empty or a turn is used up. */
  #receive(which: number): void {
    for (let turn = 0; turn < 4; turn++) {
      if (this.#core.receive(which) < CORE_BATCH) return;
    }
  }

  async run(): Promise<void> {
    while (!this.stopping) {
      const sockets = 1 + this.#pollSlots.length;
      const ready = this.#c.poll(this.#pollSet, usize(sockets + this.#pollSockets), 1000);
      if (ready > 0) {
        this.#forward(sockets);
        if (this.#revents(0) & Linux.POLLIN) await this.#readMessages();
      } else if (this.#handled < Atomics.load(this.#posted, 0)) {
        await this.#readMessages();
      }
    }
    send({ type: "stopped" });
  }

  /**
   * One turn of forwarding. Nothing a datagram holds may end the Worker: an error here (a bug) loses the
   * batch, is counted (DATAPATH_ERRORS) and told to the daemon at most once per DROP_LOG_INTERVAL_MS.
   */
  #forward(sockets: number): void {
    try {
      for (let i = 0; i < this.#pollSockets; i++) {
        if (this.#revents(sockets + i) !== 0) this.#receive(i);
      }
      this.#drainDevices();
      // Written by the Worker that sends (one role per counter).
      if (this.role !== "receive") {
        this.#datapathCounts[DatapathCount.GSO_REFUSALS] = this.#underlay.gsoRefusals;
      }
    } catch (error) {
      this.#datapathCounts[DatapathCount.DATAPATH_ERRORS]++;
      const now = performance.now();
      if (now - this.#lastErrorReport >= DROP_LOG_INTERVAL_MS) {
        this.#lastErrorReport = now;
        send({
          type: "warning",
          text: `The ${this.role} Worker dropped a batch on an error and goes on: ${
            (error as Error).message
          }`,
        });
      }
    }
  }
}

function send(message: ToMain): void {
  self.postMessage(message);
}

let host: WorkerHost | undefined;

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "init") {
    host = new WorkerHost(message);
    void host.run();
  } else {
    host?.handle(message);
  }
};
