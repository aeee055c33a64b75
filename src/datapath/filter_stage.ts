/**
 * The filter stage of a tap circuit, in the spirit of VNET's LOCAL and REMOTE address lists: which
 * Ethernet frames may cross the circuit, decided from the frame's MAC addresses and EtherType. `local`
 * lists the MACs on this side, `remote` those on the far side. On the way out a frame crosses when its
 * source is local or its destination remote; on the way in when its destination is local or its source
 * remote. Broadcast and multicast destinations cross unless turned off. A frame of a blocked kind never
 * crosses. An empty list filters nothing by address. Filtered frames are dropped and counted per circuit
 * (Counter.FILTERED). The stage adds no bytes and allocates nothing per frame; it goes first in the
 * pipeline, so it sees the frame in clear both ways.
 */

import { DROPPED, type PacketBatch } from "../packet/packet_batch.ts";
import { type CircuitCounts, Counter } from "./counters.ts";
import type { Stage, StageContext, StageSpec } from "./stage.ts";
import { ethernetPayloadOffset } from "../link/segmentation.ts";

/** What a circuit's filter says (config `filter`, the --local-mac ... flags). */
export interface FrameFilter {
  /** MACs on this side, as 12 hex digits each ("02005e100001"); empty: no address filter. */
  readonly local: readonly string[];
  /** MACs on the far side. */
  readonly remote: readonly string[];
  /** Whether broadcast (ff:ff:ff:ff:ff:ff) and other multicast destinations cross (default both). */
  readonly broadcast: boolean;
  readonly multicast: boolean;
  /** Kinds of frame that never cross: EtherTypes, and "stp" (802.1D BPDUs: LLC with DSAP 0x42). */
  readonly block: readonly (number | "stp")[];
}

export interface FilterStageSpec extends StageSpec {
  readonly id: "filter";
  readonly filter: FrameFilter;
}

/** A MAC as a number (48 bits fit a double exactly), for a Set lookup without strings. */
function macAt(bytes: Uint8Array, at: number): number {
  return bytes[at] * 0x10000000000 + bytes[at + 1] * 0x100000000 +
    ((bytes[at + 2] << 24) >>> 0) + (bytes[at + 3] << 16) + (bytes[at + 4] << 8) + bytes[at + 5];
}

/** "02:00:5e:10:00:01" or "02005e100001" as that number; undefined when it is not a MAC. */
export function parseMac(text: string): number | undefined {
  const hex = text.replace(/[:-]/g, "").toLowerCase();
  if (!/^[0-9a-f]{12}$/.test(hex)) return undefined;
  return parseInt(hex, 16);
}

/** The kinds --block and a filter's "block" name, besides an EtherType as 0xNNNN. */
const BLOCK_NAMES: Record<string, number | "stp" | "broadcast" | "multicast"> = {
  ipv4: 0x0800,
  arp: 0x0806,
  ipv6: 0x86dd,
  lldp: 0x88cc,
  stp: "stp",
  broadcast: "broadcast",
  multicast: "multicast",
};

/**
 * A filter from what the operator wrote: MACs on this side and the far one, and kinds to block
 * ("ipv4", "arp", "ipv6", "lldp", "stp", "broadcast", "multicast", or an EtherType such as 0x88b5). Throws
 * RangeError with a sentence naming `what` and the bad value.
 */
export function parseFilter(
  given: { local?: readonly string[]; remote?: readonly string[]; block?: readonly string[] },
  what: { local: string; remote: string; block: string },
): FrameFilter {
  const macs = (list: readonly string[] | undefined, name: string) =>
    (list ?? []).map((text) => {
      const mac = parseMac(text);
      if (mac === undefined) {
        throw new RangeError(`${name} "${text}" is not a MAC address (like 02:00:5e:10:00:01)`);
      }
      return mac.toString(16).padStart(12, "0");
    });
  const filter = {
    local: macs(given.local, what.local),
    remote: macs(given.remote, what.remote),
    broadcast: true,
    multicast: true,
    block: [] as (number | "stp")[],
  };
  for (const text of given.block ?? []) {
    const name = text.toLowerCase();
    const kind = BLOCK_NAMES[name] ??
      (/^0x[0-9a-f]{4}$/.test(name) && parseInt(name, 16) > 1500 ? parseInt(name, 16) : undefined);
    if (kind === undefined) {
      throw new RangeError(
        `${what.block} "${text}" is none of ipv4, arp, ipv6, lldp, stp, broadcast, multicast or an EtherType (0x0600 to 0xffff)`,
      );
    }
    if (kind === "broadcast") filter.broadcast = false;
    else if (kind === "multicast") filter.multicast = false;
    else filter.block.push(kind);
  }
  return filter;
}

/** A filter as the operator would write it (the inverse of parseFilter): MACs with colons, kinds by name. */
export function describeFilter(
  filter: FrameFilter,
): { local?: string[]; remote?: string[]; block?: string[] } {
  const mac = (hex: string) => hex.match(/../g)!.join(":");
  const names = Object.entries(BLOCK_NAMES);
  const block = filter.block.map((kind) =>
    names.find(([, value]) => value === kind)?.[0] ?? `0x${(kind as number).toString(16).padStart(4, "0")}`
  );
  if (!filter.broadcast) block.push("broadcast");
  if (!filter.multicast) block.push("multicast");
  const described: { local?: string[]; remote?: string[]; block?: string[] } = {};
  if (filter.local.length > 0) described.local = filter.local.map(mac);
  if (filter.remote.length > 0) described.remote = filter.remote.map(mac);
  if (block.length > 0) described.block = block;
  return described;
}

export class FilterStage implements Stage {
  readonly id = "filter";
  readonly overhead = 0;
  readonly #counts: CircuitCounts;
  #local = new Set<number>();
  #remote = new Set<number>();
  #byAddress = false;
  #broadcast = true;
  #multicast = true;
  #blockedTypes = new Set<number>();
  #blockStp = false;

  constructor(spec: StageSpec, context: StageContext) {
    this.#counts = context.counts;
    this.update(spec);
  }

  update(spec: StageSpec): void {
    const filter = (spec as FilterStageSpec).filter;
    const macs = (list: readonly string[]) =>
      new Set(list.map(parseMac).filter((mac): mac is number => mac !== undefined));
    this.#local = macs(filter.local);
    this.#remote = macs(filter.remote);
    this.#byAddress = this.#local.size > 0 || this.#remote.size > 0;
    this.#broadcast = filter.broadcast;
    this.#multicast = filter.multicast;
    this.#blockedTypes = new Set(filter.block.filter((b): b is number => typeof b === "number"));
    this.#blockStp = filter.block.includes("stp");
  }

  encode(batch: PacketBatch, start: number, end: number): void {
    this.#filter(batch, start, end, true);
  }

  decode(batch: PacketBatch, start: number, end: number): void {
    this.#filter(batch, start, end, false);
  }

  #filter(batch: PacketBatch, start: number, end: number, out: boolean): void {
    const memory = batch.memory;
    const values = this.#counts.values;
    const base = this.#counts.base;
    for (let i = start; i < end; i++) {
      const length = batch.length[i];
      if (length < 0) continue;
      if (!this.#passes(memory, batch.offset[i], length, out)) {
        batch.length[i] = DROPPED;
        values[base + Counter.FILTERED]++;
      }
    }
  }

  /** Whether the frame at memory[at, at+length) may cross in this direction. */
  #passes(memory: Uint8Array, at: number, length: number, out: boolean): boolean {
    if (length < 14) return false;
    if (this.#blockedTypes.size > 0 || this.#blockStp) {
      const type = at + ethernetPayloadOffset(memory, length, at) - 2;
      if (type + 2 > at + length) return false;
      const etherType = (memory[type] << 8) | memory[type + 1];
      if (this.#blockedTypes.has(etherType)) return false;
      // An 802.3 length field, then LLC: DSAP 0x42 is the spanning tree's.
      if (this.#blockStp && etherType <= 1500 && type + 3 <= at + length && memory[type + 2] === 0x42) {
        return false;
      }
    }
    const group = (memory[at] & 1) !== 0;
    if (group) {
      const broadcast = memory[at] === 0xff && memory[at + 1] === 0xff && memory[at + 2] === 0xff &&
        memory[at + 3] === 0xff && memory[at + 4] === 0xff && memory[at + 5] === 0xff;
      if (broadcast ? !this.#broadcast : !this.#multicast) return false;
      if (!this.#byAddress) return true;
      // A group frame still comes from someone: on the way in from a remote host, on the way out from a local one.
      const source = macAt(memory, at + 6);
      return out
        ? this.#local.size === 0 || this.#local.has(source)
        : this.#remote.size === 0 || this.#remote.has(source);
    }
    if (!this.#byAddress) return true;
    const destination = macAt(memory, at);
    const source = macAt(memory, at + 6);
    return out
      ? this.#local.has(source) || this.#remote.has(destination)
      : this.#local.has(destination) || this.#remote.has(source);
  }
}
