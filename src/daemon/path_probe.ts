/**
 * Path MTU probing of one circuit's underlay path (as tinc does), pure: `handle(event, now)` returns the
 * actions to take. Sizes are path MTUs (IP packet bytes); the circuit's runtime sends each probe as a
 * PROBE datagram that fills such a packet and turns the result into its fragmenting's datagram limit.
 *
 * `good` is the largest size known to arrive (at first the floor: the family's minimum MTU, assumed),
 * `bad` the smallest known lost (none at first). The first probe is the ceiling (the route's MTU, which
 * holds what the kernel has learnt from ICMP), so that a path as large as its first hop settles in one
 * round trip; a lost one starts a binary search between good and bad.
 *
 *   state      event                                   actions                                   next
 *   idle       start (floor, ceiling above it)         probe the ceiling, timer +timeout         searching
 *   idle       start (ceiling at or below the floor)   path-mtu ceiling, timer +interval         settled
 *   searching  answered (a size this search sent,      good = size, path-mtu good; good is the   settled
 *              above good, below bad)                  ceiling or bad - good <= RESOLUTION:
 *                                                      timer +interval
 *                                                      else probe (good + bad) / 2,              searching
 *                                                      timer +timeout
 *   searching  timer, tries left                       probe the same size again, timer +timeout searching
 *   searching  timer, no tries left                    bad = size; path-mtu good unless this search
 *                                                      said it already; bad - good <= RESOLUTION:
 *                                                      timer +interval
 *                                                      else probe (good + bad) / 2, timer        searching
 *   settled    timer (the ceiling now)                 start again from it                       searching
 *   any        stop                                    timer off                                 idle
 *
 * Any other (state, event) pair changes nothing. Answers name the probe's id, so that a late answer to a
 * retry still counts and an answer from an earlier search does not.
 */

import { PROBE_INTERVAL_MS, PROBE_TIMEOUT_MS, PROBE_TRIES } from "../timing.ts";

/** The search ends when the largest size known to arrive and the smallest known lost are this close. */
export const PROBE_RESOLUTION = 8;
/** The path MTU every path of a family has (IPv4 hosts must take 576-byte packets, IPv6 links 1280). */
export const MIN_PATH_MTU = { 4: 576, 6: 1280 } as const;

export type PathProbeState = "idle" | "searching" | "settled";

export type PathProbeEvent =
  | { type: "start"; floor: number; ceiling: number }
  | { type: "answered"; id: number; size: number }
  /** `ceiling`: the route's MTU now, for a settled path's next search. */
  | { type: "timer"; ceiling: number }
  | { type: "stop" };

export type PathProbeAction =
  | { type: "probe"; id: number; size: number }
  | { type: "path-mtu"; mtu: number }
  | { type: "timer"; at: number | undefined };

export class PathProbe {
  #state: PathProbeState = "idle";
  #floor = 0;
  #ceiling = 0;
  #good = 0;
  #bad: number | undefined;
  /** The size being probed, and how many times it has been sent. */
  #size = 0;
  #tries = 0;
  #nextId = 1;
  /** The size of each probe this search sent, by id. */
  readonly #sizes = new Map<number, number>();
  /** The path MTU last said in this search. */
  #said: number | undefined;

  get state(): PathProbeState {
    return this.#state;
  }
  /** The largest path MTU known to arrive (the floor until a probe is answered). */
  get good(): number {
    return this.#good;
  }

  handle(event: PathProbeEvent, now: number): PathProbeAction[] {
    switch (event.type) {
      case "stop":
        this.#state = "idle";
        this.#sizes.clear();
        return [{ type: "timer", at: undefined }];
      case "start":
        if (this.#state !== "idle") return [];
        this.#floor = event.floor;
        return this.#search(event.ceiling, now);
      case "timer":
        if (this.#state === "settled") return this.#search(event.ceiling, now);
        if (this.#state !== "searching") return [];
        if (this.#tries < PROBE_TRIES) return this.#send(this.#size, now);
        this.#bad = this.#size;
        return this.#next(now);
      case "answered": {
        const size = this.#sizes.get(event.id);
        if (this.#state !== "searching" || size === undefined || event.size !== size) return [];
        if (size <= this.#good || (this.#bad !== undefined && size >= this.#bad)) return [];
        this.#good = size;
        return this.#next(now);
      }
    }
  }

  #search(ceiling: number, now: number): PathProbeAction[] {
    this.#ceiling = ceiling;
    this.#good = this.#floor;
    this.#bad = undefined;
    this.#said = undefined;
    this.#sizes.clear();
    if (ceiling <= this.#floor) {
      this.#good = ceiling;
      return this.#settle(now, [{ type: "path-mtu", mtu: ceiling }]);
    }
    this.#state = "searching";
    this.#tries = 0;
    return this.#send(ceiling, now);
  }

  /** After an answer or a lost size: say what is known to arrive, then settle or probe half way. */
  #next(now: number): PathProbeAction[] {
    const actions: PathProbeAction[] = [];
    if (this.#good !== this.#said) {
      actions.push({ type: "path-mtu", mtu: this.#good });
      this.#said = this.#good;
    }
    const bad = this.#bad ?? this.#ceiling + 1;
    if (this.#good >= this.#ceiling || bad - this.#good <= PROBE_RESOLUTION) {
      return this.#settle(now, actions);
    }
    this.#tries = 0;
    return [...actions, ...this.#send(Math.floor((this.#good + bad) / 2), now)];
  }

  #settle(now: number, actions: PathProbeAction[]): PathProbeAction[] {
    this.#state = "settled";
    return [...actions, { type: "timer", at: now + PROBE_INTERVAL_MS }];
  }

  #send(size: number, now: number): PathProbeAction[] {
    this.#size = size;
    this.#tries++;
    const id = this.#nextId++;
    if (this.#nextId > 0xffff_ffff) this.#nextId = 1;
    this.#sizes.set(id, size);
    return [{ type: "probe", id, size }, { type: "timer", at: now + PROBE_TIMEOUT_MS }];
  }
}
