/**
 * An underlay impairment relay for the namespace test bed (testbed/netns.ts): run in a middle namespace,
 * it forwards every Ethernet frame between two interfaces, both ways, through an AF_PACKET raw socket on
 * each, and loses, delays and reorders frames on the way. The bed uses it where the kernel has no
 * sch_netem.
 *
 *     deno run --allow-all testbed/impair.ts [--loss P] [--delay MS] [--reorder P] [--reorder-delay MS]
 *         [--seed N] [--no-offload IFNAME]... IFNAME1 IFNAME2
 *
 * Each direction is impaired on its own (its own pseudo-random sequence, its own queues): --loss P drops P
 * percent of the frames, --delay MS holds every frame MS milliseconds, --reorder P holds P percent of the
 * frames back another --reorder-delay MS (3 by default) so that later frames overtake them. --seed N makes
 * the random choices the same from run to run. --no-offload IFNAME turns off checksum, scatter-gather,
 * TSO, GSO and GRO offloads on an interface of this namespace before the relay starts (the bed passes the
 * a and b ends of its veth pairs while they are still here, and moves them out afterwards), so that every
 * frame is a whole, checksummed frame of at most the MTU.
 *
 * It prints "ready" when both sockets are open and, on SIGTERM or SIGINT, one line "summary ..." with the
 * counters of each direction (see parseSummary), then exits 0.
 *
 * A packet socket also sees the frames it sent itself (sll_pkttype PACKET_OUTGOING): the relay asks the
 * kernel not to hand it those (PACKET_IGNORE_OUTGOING, Linux 4.20 and later) and also reads each frame's
 * struct sockaddr_ll with recvmmsg and skips any frame whose sll_pkttype is PACKET_OUTGOING, counting it.
 */

import { check, Errno, errno, libc, SyscallError, usize } from "../ffi/libc.ts";
import { openPacketSocket, SockaddrLl } from "../ffi/packet_socket.ts";
import { addressOf, IfReq, ifreq, Linux, MMsgHdr, mmsghdrs, pollFds } from "../ffi/structs.ts";
import { seededRandom } from "./seeded_random.ts";

const SOL_PACKET = 263;
/** int option: do not deliver frames this host sent on the interface (linux/if_packet.h). */
const PACKET_IGNORE_OUTGOING = 23;
/** sll_pkttype of a frame this host sent (linux/if_packet.h). */
const PACKET_OUTGOING = 4;
const SLL_PKTTYPE = 10;
const MSG_TRUNC = 0x20;
const ENETDOWN = 100;
const SIOCETHTOOL = 0x8946;
/** Legacy ethtool "set" commands that take a struct ethtool_value { u32 cmd; u32 data; }. */
const ETHTOOL_SET = { tx: 0x17, sg: 0x19, tso: 0x1f, gso: 0x24, gro: 0x2c } as const;
/** Frames read per recvmmsg call, and the room for each: a GSO superframe fits whole. */
const BATCH = 32;
const FRAME_ROOM = 65_536 + 1024;
/** Longest wait in poll(): how soon a signal is noticed when nothing arrives. */
const IDLE_POLL_MS = 50;

/** What the relay does to each direction. */
export interface ImpairConfig {
  lossPercent: number;
  delayMs: number;
  reorderPercent: number;
  reorderDelayMs: number;
  seed: number;
  /** Interfaces whose offloads are turned off before the relay starts. */
  noOffload: string[];
  interfaces: [string, string];
}

/** Parses the command line; throws an Error that says what is wrong. */
export function parseImpairArgs(args: readonly string[]): ImpairConfig {
  const config: ImpairConfig = {
    lossPercent: 0,
    delayMs: 0,
    reorderPercent: 0,
    reorderDelayMs: 3,
    seed: (Math.random() * 2 ** 32) >>> 0,
    noOffload: [],
    interfaces: ["", ""],
  };
  const names: string[] = [];
  const number = (flag: string, value: string | undefined, max: number): number => {
    const n = Number(value);
    if (value === undefined || value.trim() === "" || !Number.isFinite(n) || n < 0 || n > max) {
      throw new Error(`${flag} takes a number from 0 to ${max}, not ${value ?? "nothing"}`);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    switch (arg) {
      case "--loss":
        config.lossPercent = number(arg, args[++i], 100);
        break;
      case "--delay":
        config.delayMs = number(arg, args[++i], 60_000);
        break;
      case "--reorder":
        config.reorderPercent = number(arg, args[++i], 100);
        break;
      case "--reorder-delay":
        config.reorderDelayMs = number(arg, args[++i], 60_000);
        break;
      case "--seed":
        config.seed = number(arg, args[++i], 2 ** 32 - 1) >>> 0;
        break;
      case "--no-offload": {
        const name = args[++i];
        if (name === undefined) throw new Error("--no-offload takes an interface name");
        config.noOffload.push(name);
        break;
      }
      default:
        if (arg.startsWith("-")) throw new Error(`unknown option ${arg}`);
        names.push(arg);
    }
  }
  if (names.length !== 2 || names[0] === names[1]) {
    throw new Error("give two different interfaces to relay between");
  }
  config.interfaces = [names[0], names[1]];
  return config;
}

/** The counters of one direction, as the summary line gives them. */
export interface DirectionCounters {
  /** Frames read from the source interface (not counting the relay's own, outgoing, ones). */
  received: number;
  /** Frames written to the other interface. */
  forwarded: number;
  /** Frames dropped on purpose (--loss). */
  dropped: number;
  /** Frames held back the extra --reorder-delay. */
  reordered: number;
  /** Frames too large to write (or to read whole): counted and left out. */
  oversize: number;
  /** Frames the kernel refused to send for another reason (ENOBUFS, EAGAIN, ...). */
  failed: number;
  /** Frames still held when the relay stopped. */
  pending: number;
  /** Frames of the relay's own that the socket still saw (PACKET_OUTGOING) and skipped. */
  outgoing: number;
  /** Length of the largest frame read, in bytes. */
  largest: number;
}

const COUNTER_NAMES = [
  "received",
  "forwarded",
  "dropped",
  "reordered",
  "oversize",
  "failed",
  "pending",
  "outgoing",
  "largest",
] as const satisfies readonly (keyof DirectionCounters)[];

/** `IF1>IF2 received=N forwarded=N ...; IF2>IF1 ...` after "summary ". */
export function formatSummary(directions: { name: string; counters: DirectionCounters }[]): string {
  return "summary " +
    directions.map(({ name, counters }) =>
      [name, ...COUNTER_NAMES.map((key) => `${key}=${counters[key]}`)].join(" ")
    ).join("; ");
}

/** The counters of each direction in a summary line, by "IF1>IF2"; null if `line` is not one. */
export function parseSummary(line: string): Record<string, DirectionCounters> | null {
  if (!line.startsWith("summary ")) return null;
  const result: Record<string, DirectionCounters> = {};
  for (const part of line.slice("summary ".length).split(";")) {
    const [name, ...fields] = part.trim().split(/\s+/);
    const counters = Object.fromEntries(COUNTER_NAMES.map((key) => [key, 0])) as unknown as DirectionCounters;
    for (const field of fields) {
      const [key, value] = field.split("=");
      if ((COUNTER_NAMES as readonly string[]).includes(key)) {
        counters[key as keyof DirectionCounters] = Number(value);
      }
    }
    result[name] = counters;
  }
  return result;
}

/** A held frame and when it is due. */
interface Held {
  due: number;
  frame: Uint8Array<ArrayBuffer>;
}

/** First-in first-out, due times never decreasing. */
class Fifo {
  #items: Held[] = [];
  #head = 0;
  push(item: Held): void {
    this.#items.push(item);
  }
  peek(): Held | undefined {
    return this.#items[this.#head];
  }
  shift(): Held | undefined {
    const item = this.#items[this.#head];
    if (item === undefined) return undefined;
    this.#items[this.#head++] = undefined as unknown as Held;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
  get length(): number {
    return this.#items.length - this.#head;
  }
}

/**
 * One direction: frames from `fromFd` to `toFd`. With a constant delay every frame gets one of two
 * delays, so two queues whose due times each only grow hold them: the frames sent in order and the ones
 * held back; the earlier head of the two goes first.
 */
class Direction {
  readonly counters: DirectionCounters = {
    received: 0,
    forwarded: 0,
    dropped: 0,
    reordered: 0,
    oversize: 0,
    failed: 0,
    pending: 0,
    outgoing: 0,
    largest: 0,
  };
  readonly #inOrder = new Fifo();
  readonly #heldBack = new Fifo();
  readonly #random: () => number;
  readonly #buffers: Uint8Array<ArrayBuffer>[];
  readonly #names: Uint8Array<ArrayBuffer>[];
  readonly #headers: Uint8Array<ArrayBuffer>;
  readonly #view: DataView;
  readonly #keep: unknown;

  constructor(
    readonly name: string,
    readonly fromFd: number,
    readonly toFd: number,
    readonly config: ImpairConfig,
    salt: number,
  ) {
    this.#random = seededRandom(config.seed ^ salt);
    this.#buffers = Array.from({ length: BATCH }, () => new Uint8Array(FRAME_ROOM));
    this.#names = Array.from({ length: BATCH }, () => new Uint8Array(SockaddrLl.SIZE));
    const { headers, iovecs } = mmsghdrs(this.#buffers, this.#names);
    this.#headers = headers;
    this.#keep = iovecs; // the headers point into it: it must stay reachable
    this.#view = new DataView(headers.buffer);
  }

  /** Reads what is waiting (one batch); returns how many frames were read. */
  receive(now: number): number {
    const view = this.#view;
    for (let m = 0; m < BATCH; m++) {
      view.setUint32(m * MMsgHdr.SIZE + MMsgHdr.NAMELEN, SockaddrLl.SIZE, true);
      view.setInt32(m * MMsgHdr.SIZE + MMsgHdr.FLAGS, 0, true);
    }
    const got = libc().recvmmsg(this.fromFd, this.#headers, BATCH, Linux.MSG_DONTWAIT | MSG_TRUNC, null);
    if (got < 0) {
      const code = errno();
      // ENETDOWN: an interface went down (as the bed moves the far ends of the veth pairs); the socket
      // reports it once and receives again once the interface is up.
      if (code === Errno.EAGAIN || code === Errno.EINTR || code === ENETDOWN) return 0;
      throw new SyscallError(`recvmmsg(${this.name})`, code);
    }
    const c = this.counters;
    for (let m = 0; m < got; m++) {
      if (this.#names[m][SLL_PKTTYPE] === PACKET_OUTGOING) {
        c.outgoing++;
        continue;
      }
      c.received++;
      // With MSG_TRUNC the length is the frame's own, also when the buffer was too small for it.
      const length = view.getUint32(m * MMsgHdr.SIZE + MMsgHdr.LEN, true);
      if (length > c.largest) c.largest = length;
      const lossDraw = this.#random();
      const reorderDraw = this.#random();
      if (length > FRAME_ROOM || (view.getInt32(m * MMsgHdr.SIZE + MMsgHdr.FLAGS, true) & MSG_TRUNC)) {
        c.oversize++;
        continue;
      }
      if (lossDraw * 100 < this.config.lossPercent) {
        c.dropped++;
        continue;
      }
      const frame = this.#buffers[m].slice(0, length);
      if (reorderDraw * 100 < this.config.reorderPercent) {
        c.reordered++;
        this.#heldBack.push({ due: now + this.config.delayMs + this.config.reorderDelayMs, frame });
      } else {
        this.#inOrder.push({ due: now + this.config.delayMs, frame });
      }
    }
    return got;
  }

  /** Writes every frame due by `now`, earliest first. */
  send(now: number): void {
    for (;;) {
      const a = this.#inOrder.peek();
      const b = this.#heldBack.peek();
      const next = a && (!b || a.due <= b.due) ? this.#inOrder : b ? this.#heldBack : undefined;
      if (!next || next.peek()!.due > now) return;
      this.#write(next.shift()!.frame);
    }
  }

  /** Milliseconds until the next frame is due (Infinity if none is held). */
  wait(now: number): number {
    const a = this.#inOrder.peek()?.due ?? Infinity;
    const b = this.#heldBack.peek()?.due ?? Infinity;
    return Math.min(a, b) - now;
  }

  finish(): void {
    this.counters.pending = this.#inOrder.length + this.#heldBack.length;
    void this.#keep;
  }

  #write(frame: Uint8Array<ArrayBuffer>): void {
    const sent = libc().write_frame(this.toFd, frame, usize(frame.length));
    if (sent >= 0) {
      this.counters.forwarded++;
      return;
    }
    const code = errno();
    if (code === Errno.EMSGSIZE) this.counters.oversize++;
    else this.counters.failed++;
  }
}

/** An AF_INET datagram socket of this namespace, for interface ioctls. */
function controlSocket(): number {
  return check(libc().socket(Linux.AF_INET, Linux.SOCK_DGRAM | Linux.SOCK_CLOEXEC, 0), "socket(AF_INET)");
}

/** The index of interface `name` in this namespace. Throws SyscallError. */
export function interfaceIndex(name: string): number {
  const fd = controlSocket();
  try {
    const { bytes, view } = ifreq(name);
    check(libc().ioctl(fd, BigInt(Linux.SIOCGIFINDEX), bytes), `ioctl(SIOCGIFINDEX, ${name})`);
    return view.getInt32(IfReq.UNION, true);
  } finally {
    libc().close(fd);
  }
}

/**
 * Turns off transmit checksumming, scatter-gather, TSO, GSO and GRO on interface `name` of this
 * namespace (what `ethtool -K NAME tx off sg off tso off gso off gro off` does, through the legacy
 * SIOCETHTOOL commands, so that ethtool need not be installed). Throws SyscallError.
 */
export function offloadsOff(name: string): void {
  const fd = controlSocket();
  try {
    for (const [feature, command] of Object.entries(ETHTOOL_SET)) {
      const value = new Uint8Array(8);
      const valueView = new DataView(value.buffer);
      valueView.setUint32(0, command, true);
      valueView.setUint32(4, 0, true);
      const { bytes, view } = ifreq(name);
      view.setBigUint64(IfReq.UNION, addressOf(value), true); // ifr_data
      check(libc().ioctl(fd, BigInt(SIOCETHTOOL), bytes), `ioctl(SIOCETHTOOL, ${name} ${feature} off)`);
    }
  } finally {
    libc().close(fd);
  }
}

/** Runs the relay until SIGTERM or SIGINT; returns the summary line. */
export async function relay(config: ImpairConfig): Promise<string> {
  for (const name of config.noOffload) offloadsOff(name);
  const c = libc();
  const [first, second] = config.interfaces;
  const fds = config.interfaces.map((name) => openPacketSocket(interfaceIndex(name), false));
  try {
    const one = new Uint8Array(new Int32Array([1]).buffer);
    for (const fd of fds) {
      // Older kernels lack the option: the sll_pkttype check in receive() does the same work there.
      c.setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, one, 4);
    }
    const directions = [
      new Direction(`${first}>${second}`, fds[0], fds[1], config, 0),
      new Direction(`${second}>${first}`, fds[1], fds[0], config, 0x9e3779b9),
    ];
    const pollSet = pollFds(fds, Linux.POLLIN);
    let stopping = false;
    const stop = () => stopping = true;
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    console.log("ready");
    while (!stopping) {
      let now = performance.now();
      let busy = false;
      for (const direction of directions) {
        if (direction.receive(now) === BATCH) busy = true;
      }
      now = performance.now();
      let wait = IDLE_POLL_MS;
      for (const direction of directions) {
        direction.send(now);
        wait = Math.min(wait, direction.wait(now));
      }
      // Wait on a helper thread, so that the signal listeners run meanwhile.
      await c.poll_wait(pollSet, 2n, busy ? 0 : Math.max(0, Math.ceil(wait)));
    }
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGINT", stop);
    for (const direction of directions) direction.finish();
    return formatSummary(directions);
  } finally {
    for (const fd of fds) c.close(fd);
  }
}

if (import.meta.main) {
  let config: ImpairConfig;
  try {
    config = parseImpairArgs(Deno.args);
  } catch (error) {
    console.error(`impair: ${(error as Error).message}`);
    Deno.exit(2);
  }
  try {
    console.log(await relay(config));
    Deno.exit(0);
  } catch (error) {
    console.error(`impair: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
