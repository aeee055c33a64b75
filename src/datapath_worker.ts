/**
 * The datapath Worker (the libc underlay): a synchronous loop on its own thread. It sleeps in poll() on
 * the UDP socket, the devices and a wake-up eventfd; drains the socket with recvmmsg into device writes
 * and each readable device into sendmmsg batches; hands control datagrams (first byte 0) up to the main
 * isolate. Commands from the main isolate arrive as messages; the main isolate signals the eventfd so
 * that the loop stops sleeping and reads them. Counters live in shared memory; nothing is allocated per
 * frame.
 */

/// <reference lib="deno.worker" />

import { libc } from "../ffi/libc.ts";
import { Linux, MMsgHdr, mmsghdrs, PollFd, SockaddrIn6 } from "../ffi/structs.ts";
import { sockaddrEndpoint } from "../ffi/udp_socket.ts";
import {
  CIRCUIT_FIELDS,
  Counter,
  Drop,
  type ToMain,
  type ToWorker,
  WORKER_BATCH,
} from "./worker_messages.ts";

/** Largest datagram or frame handled. */
const MAX_FRAME = 65_536;
/** Batches drained from one source before the others get their turn. */
const BATCHES_PER_TURN = 4;

interface Slot {
  readonly slot: number;
  readonly vid: number;
  readonly fd: number;
  /** The peer's sockaddr_in6 (28 bytes) and its 16 address bytes, to match senders against. */
  readonly sockaddr: Uint8Array<ArrayBuffer>;
  readonly address: Uint8Array;
  readonly readSize: number;
}

const c = libc();
let udpFd = -1;
let wakeFd = -1;
let circuitCounters: Float64Array<ArrayBufferLike> = new Float64Array(0);
let drops: Float64Array<ArrayBufferLike> = new Float64Array(0);
let posted: Int32Array<ArrayBufferLike> = new Int32Array(0);
let handled = 0;
let stopping = false;
const slots = new Map<number, Slot>();
/** Slots by vid, for the receive path (usually one each). */
const byVid: Slot[][] = Array.from({ length: 256 }, () => []);
let pollSet = new Uint8Array(0);
let pollView = new DataView(pollSet.buffer);
let pollSlots: Slot[] = [];

// Receive side: a batch of full-size buffers with their sender addresses.
const rxBuffers = Array.from({ length: WORKER_BATCH }, () => new Uint8Array(MAX_FRAME));
const rxBodies = rxBuffers.map((b) => b.subarray(1));
const rxNames = Array.from({ length: WORKER_BATCH }, () => new Uint8Array(SockaddrIn6.SIZE));
const rx = mmsghdrs(rxBuffers, rxNames);
const rxHeaders = new DataView(rx.headers.buffer);

// Send side: a batch of buffers whose first byte is the vid, all sent to one peer (txName).
const txBuffers = Array.from({ length: WORKER_BATCH }, () => new Uint8Array(MAX_FRAME));
const txBodies = txBuffers.map((b) => b.subarray(1));
const txName = new Uint8Array(SockaddrIn6.SIZE);
const tx = mmsghdrs(txBuffers, txBuffers.map(() => txName));
const txIovecs = new DataView(tx.iovecs.buffer);
const wakeBuffer = new Uint8Array(8);

/**
 * A size for a size_t parameter. Deno's FFI takes a plain number for 64-bit integer parameters (its
 * types say bigint); passing the number avoids one BigInt per frame.
 */
function size(n: number): bigint {
  return n as unknown as bigint;
}

function send(message: ToMain): void {
  self.postMessage(message);
}

function rebuildPollSet(): void {
  pollSlots = [...slots.values()];
  pollSet = new Uint8Array(PollFd.SIZE * (2 + pollSlots.length));
  pollView = new DataView(pollSet.buffer);
  [udpFd, wakeFd, ...pollSlots.map((s) => s.fd)].forEach((fd, i) => {
    pollView.setInt32(i * PollFd.SIZE + PollFd.FD, fd, true);
    pollView.setInt16(i * PollFd.SIZE + PollFd.EVENTS, Linux.POLLIN, true);
  });
}

function revents(index: number): number {
  return pollView.getInt16(index * PollFd.SIZE + PollFd.REVENTS, true);
}

function sameAddress(a: Uint8Array, name: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== name[SockaddrIn6.ADDR + i]) return false;
  return true;
}

/** recvmmsg until the socket is empty (or a turn is used up); data to devices, control up. */
function receiveFromUnderlay(): void {
  for (let turn = 0; turn < BATCHES_PER_TURN; turn++) {
    const got = c.recvmmsg(udpFd, rx.headers, WORKER_BATCH, Linux.MSG_DONTWAIT, null);
    if (got <= 0) return;
    for (let i = 0; i < got; i++) {
      const length = rxHeaders.getUint32(i * MMsgHdr.SIZE + MMsgHdr.LEN, true);
      const buffer = rxBuffers[i];
      if (length === 0) {
        drops[Drop.EMPTY]++;
        continue;
      }
      const vid = buffer[0];
      if (vid === 0) {
        drops[Drop.CONTROL]++;
        send({ type: "control", datagram: buffer.slice(0, length), from: sockaddrEndpoint(rxNames[i]) });
        continue;
      }
      const candidates = byVid[vid];
      let target: Slot | undefined;
      for (let k = 0; k < candidates.length; k++) {
        if (sameAddress(candidates[k].address, rxNames[i])) {
          target = candidates[k];
          break;
        }
      }
      if (target === undefined) {
        drops[Drop.UNKNOWN_CIRCUIT]++;
        continue;
      }
      if (length < 2) {
        drops[Drop.RUNT]++;
        continue;
      }
      const base = target.slot * CIRCUIT_FIELDS;
      if (c.write_frame(target.fd, rxBodies[i], size(length - 1)) >= 0) {
        circuitCounters[base + Counter.RX_PACKETS]++;
        circuitCounters[base + Counter.RX_BYTES] += length - 1;
      } else {
        circuitCounters[base + Counter.RX_DROPPED]++;
      }
    }
    if (got < WORKER_BATCH) return;
  }
}

/** Reads every ready frame of one device (a turn at most) and sends them to its peer with sendmmsg. */
function sendFromDevice(slot: Slot): boolean {
  const base = slot.slot * CIRCUIT_FIELDS;
  txName.set(slot.sockaddr);
  for (let turn = 0; turn < BATCHES_PER_TURN; turn++) {
    let count = 0;
    let bytes = 0;
    while (count < WORKER_BATCH) {
      const n = c.read_frame(slot.fd, txBodies[count], size(slot.readSize));
      if (n <= 0) {
        if (n < 0 && count === 0 && turn === 0) {
          const code = new Deno.UnsafePointerView(c.__errno_location()!).getInt32();
          if (code !== 11 && code !== 4) return false; // Not EAGAIN or EINTR: the device is gone.
        }
        break;
      }
      txBuffers[count][0] = slot.vid;
      txIovecs.setUint32(count * 16 + 8, n + 1, true);
      count++;
      bytes += n;
    }
    if (count === 0) return true;
    let sent = 0;
    while (sent < count) {
      const headers = sent === 0 ? tx.headers : tx.headers.subarray(sent * MMsgHdr.SIZE);
      const n = c.sendmmsg(udpFd, headers, count - sent, 0);
      if (n <= 0) break;
      sent += n;
    }
    circuitCounters[base + Counter.TX_PACKETS] += sent;
    circuitCounters[base + Counter.TX_BYTES] += bytes;
    circuitCounters[base + Counter.TX_DROPPED] += count - sent;
    if (count < WORKER_BATCH) return true;
  }
  return true;
}

function handle(message: ToWorker): void {
  handled++;
  switch (message.type) {
    case "init":
      udpFd = message.udpFd;
      wakeFd = message.wakeFd;
      circuitCounters = new Float64Array(message.circuitCounters);
      drops = new Float64Array(message.drops);
      posted = new Int32Array(message.posted);
      rebuildPollSet();
      run();
      break;
    case "add": {
      const address = message.sockaddr.slice(SockaddrIn6.ADDR, SockaddrIn6.ADDR + 16);
      const slot: Slot = {
        slot: message.slot,
        vid: message.vid,
        fd: message.fd,
        sockaddr: message.sockaddr,
        address,
        readSize: Math.min(MAX_FRAME - 1, message.mtu + 18),
      };
      slots.set(slot.slot, slot);
      byVid[slot.vid].push(slot);
      rebuildPollSet();
      break;
    }
    case "remove":
      forget(message.slot);
      send({ type: "removed", slot: message.slot });
      break;
    case "stop":
      stopping = true;
      break;
  }
}

function forget(slotNumber: number): void {
  const slot = slots.get(slotNumber);
  if (!slot) return;
  slots.delete(slotNumber);
  byVid[slot.vid] = byVid[slot.vid].filter((s) => s !== slot);
  rebuildPollSet();
}

/** Lets the event loop deliver every message the main isolate has posted so far. */
async function readMessages(): Promise<void> {
  c.read(wakeFd, wakeBuffer, 8n);
  while (handled < Atomics.load(posted, 0) && !stopping) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

async function run(): Promise<void> {
  while (!stopping) {
    const ready = c.poll(pollSet, size(2 + pollSlots.length), 1000);
    if (ready > 0) {
      if (revents(0) & Linux.POLLIN) receiveFromUnderlay();
      for (let i = 0; i < pollSlots.length; i++) {
        if (revents(2 + i) === 0) continue;
        const slot = pollSlots[i];
        if (!sendFromDevice(slot)) {
          forget(slot.slot);
          send({ type: "device-failed", slot: slot.slot });
          break;
        }
      }
      if (revents(1) & Linux.POLLIN) await readMessages();
    } else if (handled < Atomics.load(posted, 0)) {
      await readMessages();
    }
  }
  send({ type: "stopped" });
}

self.onmessage = (event: MessageEvent<ToWorker>) => handle(event.data);
