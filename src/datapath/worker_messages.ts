/** What the main isolate and a datapath Worker say to each other (the counters: src/datapath/counters.ts). */

import type { Endpoint } from "../underlay/underlay.ts";
import type { LinkMode } from "../link/packet_link.ts";
import type { StageSpec } from "./stage.ts";

/** Circuits one Worker serves at once. */
export const WORKER_SLOTS = 4096;

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
    /** The counts of the control queue to the main isolate (src/datapath/control_queue.ts). */
    controlQueue: SharedArrayBuffer;
    /** Send runs of equal datagrams with UDP GSO (the socket joins received ones with UDP GRO). */
    udpGso: boolean;
    /** The time slice the Worker asks the scheduler for, in ns; 0 keeps the default (see timing.ts). */
    timeSliceNs: number;
    /** A sending Worker's wait under bulk traffic, in microseconds (src/datapath/send_moderation.ts); 0: none. */
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
    /** The device also takes UDP superframes (src/link/coalescing.ts, UdpCoalescer). */
    udpOffload: boolean;
    mode: LinkMode;
    /** The circuit's pipeline (src/datapath/stage.ts, STAGES). */
    stages: readonly StageSpec[];
    /** Longer datagrams go in fragments (src/datapath/fragmentation.ts); 0: never. */
    datagramLimit: number;
  }
  | { type: "limit"; slot: number; datagramLimit: number }
  /** New settings for a circuit's stages (new keys); the stages stay, with their state. */
  | { type: "stages"; slot: number; stages: readonly StageSpec[] }
  | { type: "remove"; slot: number }
  | { type: "stop" };

export type ToMain =
  /** `known`: from the address of a circuit the Worker forwards for (its lane of the control queue). */
  | { type: "control"; datagram: Uint8Array<ArrayBuffer>; from: Endpoint; known: boolean }
  | { type: "removed"; slot: number }
  | { type: "device-failed"; slot: number }
  | { type: "stopped" }
  /** Something the operator should know that did not stop the Worker. */
  | { type: "warning"; text: string };
