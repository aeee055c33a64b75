/**
 * The forwarding core: the one place where VELA's datapath decides anything. It is synchronous and
 * allocates nothing per packet; it knows no file descriptors, no threads and no messages, only a
 * PacketLink per circuit (src/link/) and one UnderlayBatch (src/underlay/). The hosts run it: the
 * Worker host on its own thread (worker_host.ts), the isolate host in the main isolate (isolate_host.ts).
 *
 * The order of the work is fixed here:
 *   out (drain):   link read (the link cuts TCP superframes) -> stages encode -> vid byte -> fragments
 *                  for datagrams over the circuit's limit -> underlay send (which joins runs with UDP GSO)
 *   in (receive):  underlay receive (which splits UDP GRO messages) -> vid demux (control up, unknown
 *                  counted, fragments joined) -> vid byte off -> stages decode, in reverse -> link write
 *                  (which joins TCP and UDP segments) -> flush at the end of the batch
 *
 * Circuits are kept in a table keyed by (address id, vid); an entry's sender address id comes from the
 * underlay. Counters are values in a Float64Array at each circuit's slot (src/datapath/counters.ts).
 */

import { type PacketBatch, PacketBatch as Batch } from "../packet/packet_batch.ts";
import type { Endpoint, UnderlayBatch } from "../underlay/underlay.ts";
import type { PacketLink } from "../link/packet_link.ts";
import { CIRCUIT_FIELDS, type CircuitCounts, Counter, DatapathCount } from "./counters.ts";
import {
  decodeAll,
  encodeAll,
  type Stage,
  type StageContext,
  type StageMemory,
  type StageSpec,
} from "./stage.ts";
import { FRAME_HEADROOM, LinkWriter } from "../link/device_link.ts";
import { controlLength } from "../wire.ts";
import {
  Accepted,
  fragmentBatch,
  fragmentCount,
  isFragment,
  MAX_FRAGMENTS,
  Reassembler,
  REASSEMBLY_BYTES,
} from "./fragmentation.ts";

/** The first byte of a control datagram (src/wire.ts, CONTROL_MARKER). */
const CONTROL_VID = 0;
/** Batches taken from one source before the others get their turn. */
export const BATCHES_PER_TURN = 4;
/** Datagrams per receive and frames per send batch. */
export const CORE_BATCH = 64;
/** The largest datagram or frame handled. */
export const MAX_PACKET = 65_536;
/** Datagrams one received GRO message may hold. */
const SEGMENTS_PER_MESSAGE = 64;
/**
 * The receive batch's room for frames a stage makes longer than they came (decompressed ones), and the
 * send batch's scratch room for a stage (a frame compressed before it is copied back): StageMemory.
 */
export const DECODE_ARENA_BYTES = 1 << 20;
export const ENCODE_SCRATCH_BYTES = MAX_PACKET;

/**
 * Takes a control datagram up to the daemon. `known`: it came from the address of a circuit this core
 * forwards for.
 */
export type ControlHandler = (datagram: Uint8Array<ArrayBuffer>, from: Endpoint, known: boolean) => void;

/** One circuit in the core. */
interface CoreCircuit {
  readonly slot: number;
  readonly vid: number;
  readonly route: number;
  readonly key: number;
  readonly link: PacketLink;
  readonly stages: readonly Stage[];
  readonly counts: CircuitCounts;
  /** Written to in the current receive batch (its link is flushed at the end). */
  touched: boolean;
  /** The longest datagram sent whole; 0: none is fragmented, and fragments from the peer are refused. */
  datagramLimit: number;
  /** The frame id of the next fragmented frame. */
  nextFragmentId: number;
  /** Received entries the stages decode at a time, at most (Stage.decodeChunk). */
  decodeChunk: number;
}

export interface CircuitPlan {
  readonly slot: number;
  readonly vid: number;
  readonly route: number;
  readonly link: PacketLink;
  readonly stages: readonly Stage[];
  /**
   * The longest datagram (vid byte included) the path takes whole, when both ends fragment (the
   * handshake agreed on it): longer ones go in fragments. 0 or absent: never.
   */
  readonly datagramLimit?: number;
}

export class DatapathCore {
  readonly rx: PacketBatch;
  readonly tx: PacketBatch;
  readonly writer: LinkWriter;
  readonly #underlay: UnderlayBatch;
  readonly #onControl: ControlHandler;
  readonly #controlGate: ((known: boolean) => boolean) | undefined;
  readonly #circuitValues: Float64Array<ArrayBufferLike>;
  readonly #counts: Float64Array<ArrayBufferLike>;
  /** Circuits by (address id * 256 + vid). */
  readonly #table = new Map<number, CoreCircuit>();
  readonly #bySlot: (CoreCircuit | undefined)[] = [];
  /** Per received entry, the slot of its circuit, or -1 (dropped, counted, or handed up). */
  readonly #target: Int32Array;
  readonly #touched: CoreCircuit[] = [];
  #touchedCount = 0;
  readonly #reassembler: Reassembler;
  readonly #now: () => number;
  /** Per send entry after fragmentation: 1 when it ends a frame. */
  readonly #lastPiece: Uint8Array;
  /**
   * Per frame read in the current turn, in the order the frames go out (those dropped on the way taken
   * out): its bytes as read, so that TX_BYTES counts the frames TX_PACKETS counts.
   */
  readonly #readBytes: Int32Array;
  /** The bytes of the frames the last #forgetDropped() took out. */
  #droppedBytes = 0;
  /** Bytes of the frames the last drain() read from its link. */
  drainedBytes = 0;
  /** Where the stages of this core's circuits may write besides their entries (StageContext.memory). */
  readonly stageMemory: StageMemory;

  constructor(
    underlay: UnderlayBatch,
    onControl: ControlHandler,
    counters: { circuits: Float64Array<ArrayBufferLike>; datapath: Float64Array<ArrayBufferLike> },
    options: {
      yieldEvery?: number;
      yieldCpu?: () => void;
      batch?: number;
      /**
       * Whether a plausible control datagram may go up (`known`: from a circuit's address), asked before
       * it is copied: false drops it, counted as CONTROL_OVERFLOW (the Worker's bounded queue).
       */
      controlGate?: (known: boolean) => boolean;
      /** Monotonic milliseconds (reassembly timeouts); performance.now() by default. */
      now?: () => number;
    } = {},
  ) {
    const size = options.batch ?? CORE_BATCH;
    this.#underlay = underlay;
    this.#onControl = onControl;
    this.#controlGate = options.controlGate;
    this.#circuitValues = counters.circuits;
    this.#counts = counters.datapath;
    this.rx = new Batch({
      buffers: size,
      maxPacket: MAX_PACKET,
      entries: size * SEGMENTS_PER_MESSAGE,
      extraBytes: LinkWriter.RESERVED_BYTES + REASSEMBLY_BYTES + DECODE_ARENA_BYTES,
    });
    // One buffer more than frames read: the spare a TCP superframe is cut up from; entries for fragments.
    this.tx = new Batch({
      buffers: size + 1,
      maxPacket: MAX_PACKET,
      entries: size * MAX_FRAGMENTS,
      readLimit: size,
      extraBytes: ENCODE_SCRATCH_BYTES,
    });
    const arena = this.rx.reserve(DECODE_ARENA_BYTES);
    const scratch = this.tx.reserve(ENCODE_SCRATCH_BYTES);
    this.stageMemory = {
      decodeArena: arena.byteOffset,
      decodeArenaBytes: arena.length,
      encodeScratch: scratch.byteOffset,
      encodeScratchBytes: scratch.length,
    };
    this.#lastPiece = new Uint8Array(this.tx.capacity);
    this.#readBytes = new Int32Array(this.tx.capacity);
    this.#target = new Int32Array(this.rx.capacity);
    this.writer = new LinkWriter(this.rx, options);
    this.#reassembler = new Reassembler(this.rx.reserve(REASSEMBLY_BYTES), counters.circuits);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Frames partly joined from fragments, in all circuits. */
  get partialFrames(): number {
    return this.#reassembler.partial;
  }

  /** The counters of `slot`, for its link (DeviceLink counts what it drops and writes). */
  countsOf(slot: number): CircuitCounts {
    return { values: this.#circuitValues, base: slot * CIRCUIT_FIELDS };
  }

  /** What the stages of the circuit in `slot`, whose link has MTU `mtu`, may use (buildStages()). */
  stageContext(slot: number, mtu: number): StageContext {
    return { counts: this.countsOf(slot), memory: this.stageMemory, maxFrame: mtu + FRAME_HEADROOM };
  }

  /** Adds a circuit (replacing the one with the same slot, or the same address and vid). */
  addCircuit(plan: CircuitPlan): void {
    this.removeCircuit(plan.slot);
    const key = this.#underlay.addressOf(plan.route) * 256 + plan.vid;
    const previous = this.#table.get(key);
    if (previous) this.removeCircuit(previous.slot);
    const circuit: CoreCircuit = {
      ...plan,
      key,
      counts: this.countsOf(plan.slot),
      touched: false,
      datagramLimit: plan.datagramLimit ?? 0,
      nextFragmentId: 0,
      decodeChunk: plan.stages.reduce((least, stage) => Math.min(least, stage.decodeChunk ?? least), 1 << 30),
    };
    this.#table.set(key, circuit);
    this.#bySlot[plan.slot] = circuit;
  }

  removeCircuit(slot: number): void {
    const circuit = this.#bySlot[slot];
    if (!circuit) return;
    this.#bySlot[slot] = undefined;
    if (this.#table.get(circuit.key) === circuit) this.#table.delete(circuit.key);
    this.#reassembler.forget(slot);
    circuit.link.flush();
    for (const stage of circuit.stages) stage.close?.();
  }

  /** Gives a circuit's stages new settings (new keys), each to the stage of the same id. */
  updateStages(slot: number, specs: readonly StageSpec[]): void {
    const circuit = this.#bySlot[slot];
    if (!circuit) return;
    for (const spec of specs) {
      for (const stage of circuit.stages) if (stage.id === spec.id) stage.update?.(spec);
    }
  }

  /** A new datagram limit for a circuit that fragments (0 stays 0: the peer never agreed to it). */
  setDatagramLimit(slot: number, limit: number): void {
    const circuit = this.#bySlot[slot];
    if (circuit && circuit.datagramLimit > 0 && limit > 0) circuit.datagramLimit = limit;
  }

  hasCircuit(slot: number): boolean {
    return this.#bySlot[slot] !== undefined;
  }

  /**
   * Receives one batch from socket `which` and forwards it: data to the circuits' links, control up.
   * Returns how many messages were read (CORE_BATCH: there may be more).
   */
  receive(which = 0): number {
    const batch = this.rx;
    const messages = this.#underlay.receive(batch, which);
    if (messages <= 0) return messages;
    const count = batch.count;
    // In passes: one ends early only when every reassembly slot holds a frame made whole in it.
    for (let from = 0; from < count;) {
      const to = this.#demux(from, count);
      this.#forward(from, to);
      this.#reassembler.release();
      from = to;
    }
    return messages;
  }

  /**
   * Finds the circuit of received entries [from, count) (target[i], -1 for none) and takes the vid byte
   * off; fragments go to the reassembler, and the one that makes a frame whole becomes that frame. Returns
   * where it stopped: `count`, or the fragment for which no reassembly slot was free.
   */
  #demux(from: number, count: number): number {
    const batch = this.rx;
    const counts = this.#counts;
    const target = this.#target;
    const memory = batch.memory;
    let now = -1;
    for (let i = from; i < count; i++) {
      target[i] = -1;
      const length = batch.length[i];
      if (length === 0) {
        counts[DatapathCount.EMPTY]++;
        continue;
      }
      const at = batch.offset[i];
      const vid = memory[at];
      const source = batch.source[i];
      if (vid === CONTROL_VID) {
        if (isFragment(memory, at, length)) {
          const circuit = source < 0 || length <= 3
            ? undefined
            : this.#table.get(source * 256 + memory[at + 3]);
          if (circuit === undefined || circuit.datagramLimit === 0) {
            counts[circuit === undefined ? DatapathCount.UNKNOWN_CIRCUIT : DatapathCount.FRAGMENT_REFUSED]++;
            continue;
          }
          if (now < 0) now = this.#now();
          const reassembler = this.#reassembler;
          const accepted = reassembler.accept(memory, at, length, circuit.slot, now);
          if (accepted === Accepted.FULL) return i;
          if (accepted === Accepted.REFUSED) counts[DatapathCount.FRAGMENT_REFUSED]++;
          if (accepted !== Accepted.WHOLE) continue;
          circuit.counts.values[circuit.counts.base + Counter.REASSEMBLED]++;
          batch.offset[i] = reassembler.frameStart;
          batch.length[i] = reassembler.frameLength;
          target[i] = circuit.slot;
          continue;
        }
        // The cheap test first, so that a flood of junk is never copied or handed up (nor a probe's padding).
        const message = controlLength(memory, at, length);
        if (message === 0) {
          counts[DatapathCount.CONTROL_MALFORMED]++;
        } else if (this.#controlGate !== undefined && !this.#controlGate(source >= 0)) {
          counts[DatapathCount.CONTROL_OVERFLOW]++;
        } else {
          counts[DatapathCount.CONTROL]++;
          this.#onControl(memory.slice(at, at + message), this.#underlay.endpoint(batch, i), source >= 0);
        }
        continue;
      }
      const circuit = source < 0 ? undefined : this.#table.get(source * 256 + vid);
      if (circuit === undefined) {
        counts[DatapathCount.UNKNOWN_CIRCUIT]++;
        continue;
      }
      if (length < 2) {
        counts[DatapathCount.RUNT]++;
        continue;
      }
      batch.offset[i] = at + 1;
      batch.length[i] = length - 1;
      target[i] = circuit.slot;
    }
    return count;
  }

  /** Runs of entries [from, to) for one circuit go through its stages and to its link together. */
  #forward(from: number, to: number): void {
    const batch = this.rx;
    const target = this.#target;
    for (let i = from; i < to;) {
      const slot = target[i];
      if (slot < 0) {
        i++;
        continue;
      }
      const circuit = this.#bySlot[slot]!;
      const last = Math.min(to, i + circuit.decodeChunk);
      let end = i + 1;
      while (end < last && target[end] === slot) end++;
      if (circuit.stages.length > 0) {
        decodeAll(circuit.stages, batch, i, end);
        let dropped = 0;
        for (let j = i; j < end; j++) if (batch.length[j] < 0) dropped++;
        if (dropped > 0) circuit.counts.values[circuit.counts.base + Counter.RX_DROPPED] += dropped;
      }
      circuit.link.write(batch, i, end);
      if (!circuit.touched) {
        circuit.touched = true;
        this.#touched[this.#touchedCount++] = circuit;
      }
      i = end;
    }
    for (let t = 0; t < this.#touchedCount; t++) {
      const circuit = this.#touched[t];
      circuit.touched = false;
      circuit.link.flush();
    }
    this.#touchedCount = 0;
  }

  /**
   * Reads the ready frames of a circuit's link (a turn at most, but never leaving a superframe half
   * cut) and sends them to its peer. False when the link failed.
   */
  drain(slot: number): boolean {
    const circuit = this.#bySlot[slot];
    this.drainedBytes = 0;
    if (!circuit) return true;
    const batch = this.tx;
    const link = circuit.link;
    const values = circuit.counts.values;
    const base = circuit.counts.base;
    for (let turn = 0; turn < BATCHES_PER_TURN || link.pending; turn++) {
      batch.count = 0;
      const got = link.read(batch);
      if (got < 0) return turn > 0;
      const count = batch.count;
      if (count === 0) return true;
      // Bytes are those of the frames as read (segments of a cut superframe, no virtio-net header), before
      // any stage's overhead and the vid byte: what the peer's link counts when it writes them.
      const readBytes = this.#readBytes;
      let bytes = 0;
      for (let i = 0; i < count; i++) {
        const length = batch.length[i];
        readBytes[i] = length;
        bytes += length;
      }
      this.drainedBytes += bytes;
      let stageDropped = 0;
      if (circuit.stages.length > 0) {
        encodeAll(circuit.stages, batch, 0, count);
        stageDropped = this.#forgetDropped(count, -1);
        if (stageDropped > 0) {
          bytes -= this.#droppedBytes;
          batch.compact();
        }
      }
      const memory = batch.memory;
      const vid = circuit.vid;
      const sending = batch.count;
      let longest = 0;
      for (let i = 0; i < sending; i++) {
        const at = batch.offset[i] - 1;
        memory[at] = vid;
        batch.offset[i] = at;
        const length = ++batch.length[i];
        if (length > longest) longest = length;
      }
      let datagrams = sending;
      let frames = sending;
      let fragmentDropped = 0;
      if (circuit.datagramLimit > 0 && longest > circuit.datagramLimit) {
        // A frame too long to go even in fragments is dropped by fragmentBatch(); the longest tells.
        if (fragmentCount(longest - 1, circuit.datagramLimit) === 0) {
          this.#forgetDropped(sending, circuit.datagramLimit);
          bytes -= this.#droppedBytes;
        }
        const cut = fragmentBatch(batch, circuit.datagramLimit, circuit.nextFragmentId, this.#lastPiece);
        circuit.nextFragmentId = (circuit.nextFragmentId + cut.fragmented) & 0xffff;
        values[base + Counter.FRAGMENTED] += cut.fragmented;
        fragmentDropped = cut.dropped;
        datagrams = batch.count;
        frames = sending - cut.dropped;
      }
      const sent = this.#underlay.send(batch, 0, datagrams, circuit.route);
      // Frames all of whose datagrams went out.
      let framesSent = sent;
      if (datagrams !== frames) {
        framesSent = 0;
        for (let j = 0; j < sent; j++) framesSent += this.#lastPiece[j];
      }
      // The frames sent are the first framesSent; the bytes of the others are taken back.
      for (let j = framesSent; j < frames; j++) bytes -= readBytes[j];
      const late = this.#underlay.lateFailures(circuit.route);
      values[base + Counter.TX_PACKETS] += framesSent - late;
      values[base + Counter.TX_BYTES] += bytes;
      values[base + Counter.TX_DROPPED] += frames - framesSent + late + stageDropped + fragmentDropped;
      if (count < batch.readLimit && !link.pending) return true;
    }
    return true;
  }

  /**
   * Takes the send batch's frames [0, count) that will be dropped out of #readBytes (which stays in step
   * with the frames that go on) and returns how many they are, their bytes in #droppedBytes. `limit` < 0:
   * those a stage dropped (length < 0; the caller compacts the batch when there are any); otherwise those
   * too long to go in fragments under datagram limit `limit` (fragmentBatch() drops them).
   */
  #forgetDropped(count: number, limit: number): number {
    const batch = this.tx;
    const readBytes = this.#readBytes;
    let bytes = 0;
    let kept = 0;
    for (let i = 0; i < count; i++) {
      const length = batch.length[i];
      if (limit < 0 ? length < 0 : fragmentCount(length - 1, limit) === 0) {
        bytes += readBytes[i];
      } else {
        readBytes[kept++] = readBytes[i];
      }
    }
    this.#droppedBytes = bytes;
    return count - kept;
  }
}
