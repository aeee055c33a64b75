/**
 * What makes a circuit valid, in one place for the CLI, the config file, the control protocol and the
 * daemon: the vid range, the default interface name, the key a circuit is known by, the link MTU limits,
 * and the bytes VELA adds to a frame on the underlay (the datapath's stages included).
 */

import type { LinkMode } from "./link/packet_link.ts";
import { buildStages, DEFAULT_PIPELINE, pipelineOverhead } from "./datapath/stage.ts";
import { WORKER_SLOTS } from "./datapath/worker_messages.ts";

/** Circuit ids: vid 0 is the control channel. */
export const MIN_VID = 1;
export const MAX_VID = 255;
/** The smallest link MTU VELA sets up (IPv4's minimum datagram size every host must take). */
export const MIN_LINK_MTU = 576;
/** The largest link MTU (an IPv4 total length). */
export const MAX_LINK_MTU = 65_535;
/**
 * The largest link MTU of a circuit that fragments when the path is narrower: a frame with two VLAN
 * tags and the AEAD overhead still fits MAX_REASSEMBLED (src/datapath/fragmentation.ts). It is also what
 * a listener that fragments takes as its own limit when nothing else (a bridge's MTU) sets one.
 */
export const MAX_FRAGMENTED_LINK_MTU = 16_000;

/**
 * How many circuits a daemon holds at most, and how many of them one peer address may have (each vid once,
 * so at most MAX_VID), unless the configuration says otherwise (--max-circuits, max_circuits, and
 * --max-circuits-per-peer, max_circuits_per_peer). An IREQ beyond either is answered with a NAK
 * (CIRCUIT_LIMIT) and counted as "circuit-limit". The defaults fit a router with many sites; the daemon's
 * datapath has twice MAX_CIRCUITS_LIMIT slots (a closed circuit's slot is free again only once every Worker has
 * let go of it).
 */
export const DEFAULT_MAX_CIRCUITS = 1024;
export const DEFAULT_MAX_CIRCUITS_PER_PEER = 64;
export const MAX_CIRCUITS_LIMIT = WORKER_SLOTS / 2;

export function isVid(value: number): boolean {
  return Number.isInteger(value) && value >= MIN_VID && value <= MAX_VID;
}

/** The interface a circuit gets unless the operator names one. */
export function defaultInterfaceName(vid: number): string {
  return `vela${vid}`;
}

/** The key a circuit is known by: its peer's address and its vid. */
export function circuitKey(address: string, vid: number): string {
  return `${address}|${vid}`;
}

/** Bytes every circuit's pipeline adds to a frame (the identity pipeline today: none). */
export const STAGE_OVERHEAD = pipelineOverhead(buildStages(DEFAULT_PIPELINE));

/**
 * Bytes VELA adds to a frame on the underlay: IP header, UDP header, vid byte, the stages' overhead, and
 * for tap the Ethernet header.
 */
export function encapsulationOverhead(family: 4 | 6, mode: LinkMode, stageOverhead = STAGE_OVERHEAD): number {
  return (family === 4 ? 20 : 40) + 8 + 1 + stageOverhead + (mode === "tap" ? 14 : 0);
}

/** The link MTU that fits the underlay MTU without fragmentation. */
export function linkMtuFor(underlayMtu: number, family: 4 | 6, mode: LinkMode): number {
  return underlayMtu - encapsulationOverhead(family, mode);
}
