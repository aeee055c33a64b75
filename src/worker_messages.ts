/** What the main isolate and the datapath Worker say to each other, and the shared counter layout. */

import type { Endpoint } from "./underlay.ts";

/** Frames per recvmmsg or sendmmsg call. */
export const WORKER_BATCH = 64;
/** Circuits one Worker serves at once. */
export const WORKER_SLOTS = 4096;

/** Per-circuit counters: CIRCUIT_FIELDS float64 values per slot in a SharedArrayBuffer. */
export const Counter = {
  TX_PACKETS: 0,
  TX_BYTES: 1,
  RX_PACKETS: 2,
  RX_BYTES: 3,
  TX_DROPPED: 4,
  RX_DROPPED: 5,
} as const;
export const CIRCUIT_FIELDS = 6;

/**
 * Datapath-wide counts, float64 values in a SharedArrayBuffer: drops by reason, control datagrams handed
 * up, and wake-ups that waited for more frames (src/send_moderation.ts).
 */
export const DatapathCount = {
  UNKNOWN_CIRCUIT: 0,
  RUNT: 1,
  EMPTY: 2,
  CONTROL: 3,
  MODERATED_WAKEUPS: 4,
} as const;
export const DATAPATH_COUNT_FIELDS = 5;

/**
 * What one datapath Worker serves: "receive", the UDP socket into the devices; "send", the devices into
 * the UDP socket; "both", everything (the single-Worker datapath).
 */
export type WorkerRole = "receive" | "send" | "both";

export type ToWorker =
  | {
    type: "init";
    role: WorkerRole;
    udpFd: number;
    wakeFd: number;
    circuitCounters: SharedArrayBuffer;
    datapathCounts: SharedArrayBuffer;
    /** Int32 [0]: how many messages the main isolate has posted, so the Worker knows when it has all. */
    posted: SharedArrayBuffer;
    /** Send runs of equal datagrams with UDP GSO (the socket joins received ones with UDP GRO). */
    udpGso: boolean;
    /** The time slice the Worker asks the scheduler for, in ns; 0 keeps the default (see timing.ts). */
    timeSliceNs: number;
    /** A sending Worker's wait under bulk traffic, in microseconds (src/send_moderation.ts); 0: none. */
    moderationUs: number;
  }
  | {
    type: "add";
    slot: number;
    vid: number;
    fd: number;
    /** The socket connected to this peer (-1: none; the shared socket carries the circuit). */
    peerFd: number;
    sockaddr: Uint8Array<ArrayBuffer>;
    mtu: number;
    /** The device carries virtio-net headers and may hand over TCP superframes. */
    offload: boolean;
    /** The device also takes UDP superframes (src/coalescing.ts, UdpCoalescer). */
    udpOffload: boolean;
    /** Where the IP header starts in a frame: 14 for tap (Ethernet), 0 for tun. */
    ipOffset: number;
  }
  | { type: "remove"; slot: number }
  | { type: "stop" };

export type ToMain =
  | { type: "control"; datagram: Uint8Array; from: Endpoint }
  | { type: "removed"; slot: number }
  | { type: "device-failed"; slot: number }
  | { type: "stopped" }
  /** Something the operator should know that did not stop the Worker. */
  | { type: "warning"; text: string };
