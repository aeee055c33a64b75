/**
 * The admission policy: which control datagrams the daemon listens to, and which IREQs may open a
 * circuit. With keys, a datagram needs a valid MAC made with one of them (ICON, KEEPALIVE and CREQ are
 * signed with a session's own keys: here they need only the flag, their session checks them); an IREQ
 * must, with a key, be fresh (not replayed, clock within REPLAY_WINDOW_MS), and then keep under the rate
 * limit per source, so that forged or replayed IREQs spend no source's tokens; a new circuit needs a
 * listening daemon and a source the key or an --allow prefix admits. Each refusal says why, in a reason
 * (the drop counter) and a sentence for the log.
 */

import { type IpPrefix, parseIp, prefixContains } from "../ip.ts";
import { RateLimiter, ReplayGuard, verifyControl } from "../keys.ts";
import {
  IREQ_BURST,
  IREQ_RATE_PER_SECOND,
  REPLAY_WINDOW_MS,
  STRANGER_BURST,
  STRANGER_RATE_PER_SECOND,
  TRUSTED_IREQ_BURST,
  TRUSTED_IREQ_RATE_PER_SECOND,
} from "../timing.ts";
import type { Endpoint } from "../underlay/underlay.ts";
import {
  type ControlMessage,
  type Creq,
  FLAG_MAC,
  type Icon,
  type Ireq,
  type Keepalive,
  type Probe,
} from "../wire.ts";

export type Verdict =
  /** `key`: the pre-shared key whose MAC the message carries (keyed daemons, PSK-signed messages). */
  | { readonly admit: true; readonly key?: Uint8Array }
  | {
    readonly admit: false;
    readonly reason: string;
    readonly text: string;
    readonly level: "debug" | "warning";
  };

/** The parts of the daemon's configuration the policy reads. */
export interface AdmissionRules {
  /** Every pre-shared key this daemon holds (none: a daemon without a key). */
  readonly keys: readonly Uint8Array[];
  readonly listen: boolean;
  readonly allow: readonly IpPrefix[];
  readonly insecureAcceptAny?: boolean;
}

const ADMIT: Verdict = { admit: true };

const SESSION_SIGNED: ReadonlySet<string> = new Set([
  "ICON",
  "KEEPALIVE",
  "CREQ",
  "PROBE",
  "PROBE_ACK",
  "DACK",
]);

/** Whether a message is signed with the session's own control keys, which only the session can check. */
export function sessionSigned(message: ControlMessage): message is Icon | Keepalive | Creq | Probe {
  return SESSION_SIGNED.has(message.type);
}

function refuse(reason: string, text: string, level: "debug" | "warning" = "debug"): Verdict {
  return { admit: false, reason, text, level };
}

export class Admission {
  readonly #replays = new ReplayGuard({ windowMs: REPLAY_WINDOW_MS });
  readonly #ireqLimiter = new RateLimiter({ ratePerSecond: IREQ_RATE_PER_SECOND, burst: IREQ_BURST });
  readonly #trustedIreqLimiter = new RateLimiter({
    ratePerSecond: TRUSTED_IREQ_RATE_PER_SECOND,
    burst: TRUSTED_IREQ_BURST,
  });
  readonly #strangers = new RateLimiter({ ratePerSecond: STRANGER_RATE_PER_SECOND, burst: STRANGER_BURST });

  /**
   * Whether to act on `message` (decoded from `datagram`) from `from`, at monotonic `now` and `wallClock`;
   * `known`: the datapath forwards for a circuit of that address. The cheap checks come first, what costs
   * later, and the IREQ rate limit last, so that forged or replayed IREQs spend no token of the source
   * they claim: with a key, an IREQ's timestamp window; then a stranger's budget (datagrams a second
   * from one address without a circuit here), before the MAC, which costs most; then an IREQ's nonce
   * (replayed?), then its rate limit: one that proved itself (a verified MAC, or a known address) gets
   * the trusted allowance, a stranger the small one. ICON, KEEPALIVE, CREQ, PROBE and PROBE_ACK only need
   * the MAC flag here; their session checks them with its own keys.
   */
  control(
    rules: AdmissionRules,
    datagram: Uint8Array,
    message: ControlMessage,
    from: Endpoint,
    now: number,
    wallClock: number,
    known = false,
  ): Verdict {
    const keyed = rules.keys.length > 0;
    if (keyed && message.type === "IREQ" && !this.#replays.inWindow(message.timestamp, wallClock)) {
      return refuse(
        "stale",
        `Dropped a stale IREQ from ${from.address}: its clock is over ${REPLAY_WINDOW_MS / 1000} s off ours`,
        "warning",
      );
    }
    if (!known && !this.#strangers.allow(from.address, now)) {
      return refuse(
        "stranger-budget",
        `Dropped ${message.type} from ${from.address}: over ${STRANGER_RATE_PER_SECOND} control datagrams a second from an address without a circuit`,
      );
    }
    let key: Uint8Array | undefined;
    if (keyed) {
      const flagged = (datagram[6] & FLAG_MAC) !== 0;
      if (sessionSigned(message)) {
        if (flagged) return ADMIT;
      } else if (flagged) {
        key = rules.keys.find((candidate) => verifyControl(candidate, datagram));
      }
      if (!key) {
        return refuse(
          "bad-mac",
          `Dropped ${message.type} from ${from.address}: no valid MAC (a different key, or none)`,
          "warning",
        );
      }
    }
    if (message.type !== "IREQ") return key ? { admit: true, key } : ADMIT;
    if (key) {
      const verdict = this.#replays.check(message.initiatorNonce, message.timestamp, wallClock);
      if (verdict === "stale") {
        return refuse(
          verdict,
          `Dropped a stale IREQ from ${from.address}: its clock is over ${
            REPLAY_WINDOW_MS / 1000
          } s off ours`,
          "warning",
        );
      }
      if (verdict !== "fresh") {
        return refuse(verdict, `Dropped a replayed IREQ from ${from.address}`, "warning");
      }
    }
    const trusted = key !== undefined || known;
    const limiter = trusted ? this.#trustedIreqLimiter : this.#ireqLimiter;
    if (!limiter.allow(from.address, now)) {
      return refuse(
        "rate-limited",
        `Dropped IREQ from ${from.address}: more than ${limiter.ratePerSecond} a second`,
      );
    }
    return key ? { admit: true, key } : ADMIT;
  }

  /**
   * Whether a v1 IREQ may be answered (with a NAK that says to upgrade): only by a listener, only for a
   * source it would admit (its MAC with a key, else --allow), and under the rate limit.
   */
  oldVersion(rules: AdmissionRules, datagram: Uint8Array, from: Endpoint, now: number): Verdict {
    if (!rules.listen) {
      return refuse("not-listening", `Ignored a v1 IREQ from ${from.address}: this daemon does not listen`);
    }
    let key: Uint8Array | undefined;
    if (rules.keys.length > 0) {
      key = rules.keys.find((candidate) => verifyControl(candidate, datagram));
      if (!key) return refuse("bad-mac", `Dropped a v1 IREQ from ${from.address}: no valid MAC`, "warning");
    } else {
      const source = parseIp(from.address);
      const allowed = rules.insecureAcceptAny ||
        (source !== undefined && rules.allow.some((prefix) => prefixContains(prefix, source)));
      if (!allowed) return refuse("not-allowed", `Ignored a v1 IREQ from ${from.address}: not in --allow`);
    }
    if (!this.#ireqLimiter.allow(from.address, now)) {
      return refuse(
        "rate-limited",
        `Dropped IREQ from ${from.address}: more than ${IREQ_RATE_PER_SECOND} a second`,
      );
    }
    return key ? { admit: true, key } : ADMIT;
  }

  /**
   * Whether an IREQ for no known circuit may open one: the daemon listens, and the key (checked already)
   * or an --allow prefix admits the source; with both, it needs both. "not-allowed" is answered with a NAK.
   */
  newCircuit(rules: AdmissionRules, request: Ireq, from: Endpoint): Verdict {
    if (!rules.listen) {
      return refuse("not-listening", `Ignored IREQ from ${from.address}: this daemon does not listen`);
    }
    const source = parseIp(from.address);
    const allowed = rules.insecureAcceptAny || (rules.allow.length === 0 && rules.keys.length > 0) ||
      (source !== undefined && rules.allow.some((prefix) => prefixContains(prefix, source)));
    if (!allowed || !source) {
      return refuse(
        "not-allowed",
        `Refused IREQ for circuit ${request.vid} from ${from.address}: not in --allow`,
      );
    }
    return ADMIT;
  }
}
