/**
 * The session state machine of one circuit, pure: `handle(event, now)` returns the actions to take and
 * touches nothing else. The clock and the nonce source are injected.
 *
 * Initiator (the side run with --peer):
 *
 *   state        event                                  actions                                      next
 *   idle         start                                  send IREQ, timer +first retry                requesting
 *   requesting   timer                                  send IREQ, timer +backoff (doubling, capped) requesting
 *   requesting   IACK or IRDY (our nonce, our mode)     set-mtu agreed, send ICON, forward on,       established
 *                                                       established, timer +keepalive
 *   requesting   IACK or IRDY with another mode         refused, timer +NAK retry                    refused
 *   requesting   NAK (our nonce)                        refused, timer +NAK retry                    refused
 *   refused      timer                                  send IREQ, timer +first retry                requesting
 *   established  timer, peer heard within dead time     send KEEPALIVE, timer +keepalive             established
 *   established  timer, peer silent for the dead time   forward off, dead-peer, resolve, send IREQ,  requesting
 *                                                       timer +first retry
 *   established  KEEPALIVE (both nonces)                peer heard; an echo gives the RTT, a         established
 *                                                       periodic one is answered: send KEEPALIVE
 *   established  IACK or IRDY (our nonce, same peer)    send ICON (our ICON was lost)                established
 *   established  CREQ (our nonces)                      forward off, send IREQ, timer +first retry   requesting
 *   any but idle moved (the peer's name points elsewhere) forward off, send IREQ, timer +first retry requesting
 *   any          close                                  send CREQ (once the peer's nonce is known),  closed
 *                                                       forward off, timer off
 *
 * Responder (the listener's side, made by the daemon for an IREQ it accepts):
 *
 *   state        event                                  actions                                      next
 *   idle         IREQ                                   create-device (agreed MTU, mode, plan),      acknowledged
 *                                                       forward on, send IACK, timer +keepalive
 *   idle         IREQ with MTU below the minimum        send NAK MTU_TOO_SMALL                       closed
 *   acknowledged IREQ (same initiator nonce)            send IACK (our IACK was lost)                acknowledged
 *   acknowledged ICON                                   established                                  established
 *   acknowledged KEEPALIVE (both nonces)                answer it as below, established              established
 *   established  IREQ (same initiator nonce)            send IRDY                                    established
 *   established  KEEPALIVE (both nonces)                peer heard; an echo gives the RTT, a         established
 *                                                       periodic one is answered: send KEEPALIVE
 *   ack./estab.  timer, peer heard within dead time     send KEEPALIVE (established only),           unchanged
 *                                                       timer +keepalive
 *   ack./estab.  timer, peer silent for the dead time   dead-peer, timer +linger                     lost
 *   lost         IREQ (same initiator nonce)            send IACK, timer +keepalive                  acknowledged
 *   lost         KEEPALIVE (both nonces)                answer it, established, timer +keepalive     established
 *   lost         timer (lingered)                       forward off, remove-device                   closed
 *   ack./estab./lost IREQ (new nonce, same mode)        the peer restarted: set-mtu (if it changed), acknowledged
 *                                                       send IACK, timer +keepalive
 *   ack./estab./lost IREQ (new nonce, MTU below min)    send NAK MTU_TOO_SMALL                       unchanged
 *   ack./estab./lost IREQ (new nonce, other mode)       send NAK MODE_MISMATCH                       unchanged
 *   ack./estab./lost CREQ (both nonces)                 forward off, remove-device                   closed
 *   any          close                                  send CREQ and remove-device (unless idle),   closed
 *                                                       forward off, timer off
 *
 * An initiator also asks for `resolve` (its peer's name looked up again) when it sends an IREQ and has
 * been asking for the dead time or longer since the last lookup.
 *
 * Closed is final: every event after it is dropped.
 * Any other (state, event) pair is ignored and reported as a `drop` action with the reason.
 */

import type { LinkMode } from "./link/link_device.ts";
import type { IpPrefix } from "./ip.ts";
import { type ControlMessage, NakReason, type Nonce } from "./wire.ts";
import {
  DEAD_PEER_MS,
  IREQ_FIRST_RETRY_MS,
  IREQ_MAX_RETRY_MS,
  KEEPALIVE_INTERVAL_MS,
  NAK_RETRY_MS,
  RESPONDER_LINGER_MS,
} from "./timing.ts";

/** The smallest link MTU VELA agrees to (IPv4's minimum datagram). */
import { MIN_LINK_MTU } from "./circuit_rules.ts";

export { MIN_LINK_MTU };

export type Role = "initiator" | "responder";
export type SessionState =
  | "idle"
  | "requesting"
  | "refused"
  | "acknowledged"
  | "established"
  | "lost"
  | "closed";

export type SessionEvent =
  | { type: "start" }
  | { type: "timer" }
  | { type: "close" }
  | { type: "moved" }
  | { type: "received"; message: ControlMessage };

export type SessionAction =
  | { type: "send"; message: ControlMessage }
  | { type: "create-device"; mtu: number; mode: LinkMode; plan: IpPrefix[] }
  | { type: "set-mtu"; mtu: number }
  | { type: "forward"; enabled: boolean }
  | { type: "remove-device" }
  | { type: "established"; mtu: number }
  | { type: "refused"; reason: number; text: string }
  | { type: "dead-peer"; silentMs: number }
  /** Look the peer's name up again (an initiator that has heard nothing for a while). */
  | { type: "resolve" }
  | { type: "timer"; at: number | undefined }
  | { type: "drop"; reason: string };

export interface SessionConfig {
  role: Role;
  vid: number;
  /** The mode this side wants (the responder takes the initiator's). */
  mode: LinkMode;
  /** This side's MTU proposal, from its route to the peer or --mtu. */
  mtu: number;
  /** The initiator's plan for the responder's addresses. */
  plan: IpPrefix[];
  /** A fresh session nonce (wire.newNonce in the daemon, a counter in tests). */
  newNonce: () => Nonce;
  /** Milliseconds since the Unix epoch, for the IREQ timestamp. */
  wallClock: () => number;
}

export class Session {
  readonly role: Role;
  readonly vid: number;
  #state: SessionState = "idle";
  #mode: LinkMode;
  readonly #localMtu: number;
  #agreedMtu = 0;
  readonly #plan: IpPrefix[];
  readonly #ownNonce: Nonce;
  #peerNonce: Nonce = 0n;
  #retryMs = IREQ_FIRST_RETRY_MS;
  /** When the initiator last asked for its peer's name to be looked up (monotonic ms); undefined before. */
  #resolvedAt: number | undefined;
  /** When the peer was last heard (monotonic ms). */
  #lastHeard = 0;
  #rttMs: number | undefined;
  readonly #wallClock: () => number;

  constructor(config: SessionConfig) {
    this.role = config.role;
    this.vid = config.vid;
    this.#mode = config.mode;
    this.#localMtu = config.mtu;
    this.#plan = config.plan;
    this.#ownNonce = config.newNonce();
    this.#wallClock = config.wallClock;
  }

  get state(): SessionState {
    return this.#state;
  }
  get mode(): LinkMode {
    return this.#mode;
  }
  /** The MTU both ends agreed on, 0 before they have. */
  get mtu(): number {
    return this.#agreedMtu;
  }
  get nonce(): Nonce {
    return this.#ownNonce;
  }
  get peerNonce(): Nonce {
    return this.#peerNonce;
  }
  /** The last keepalive round-trip time in milliseconds, once measured. */
  get rttMs(): number | undefined {
    return this.#rttMs;
  }

  handle(event: SessionEvent, now: number): SessionAction[] {
    if (this.#state === "closed") return [{ type: "drop", reason: `${describe(event)} after close` }];
    if (event.type === "close") return this.#close();
    return this.role === "initiator" ? this.#initiator(event, now) : this.#responder(event, now);
  }

  #initiator(event: Exclude<SessionEvent, { type: "close" }>, now: number): SessionAction[] {
    const state = this.#state;
    if (event.type === "start") {
      if (state !== "idle") return [{ type: "drop", reason: "start twice" }];
      return this.#request(now, true);
    }
    if (event.type === "timer") {
      if (state === "requesting") return this.#request(now, false);
      if (state === "refused") return this.#request(now, true);
      if (state === "established") {
        const silent = now - this.#lastHeard;
        if (silent < DEAD_PEER_MS) {
          return [this.#keepalive(now), { type: "timer", at: now + KEEPALIVE_INTERVAL_MS }];
        }
        return [
          { type: "forward", enabled: false },
          { type: "dead-peer", silentMs: silent },
          ...this.#request(now, true, true),
        ];
      }
      return [{ type: "drop", reason: `timer in ${state}` }];
    }
    if (event.type === "moved") {
      if (state === "idle") return [{ type: "drop", reason: "moved before start" }];
      return [{ type: "forward", enabled: false }, ...this.#request(now, true)];
    }
    const message = event.message;
    switch (message.type) {
      case "IACK":
      case "IRDY": {
        if (message.initiatorNonce !== this.#ownNonce) {
          return [{ type: "drop", reason: `${message.type} for another session` }];
        }
        if (state === "established") {
          if (message.responderNonce !== this.#peerNonce) {
            return [{ type: "drop", reason: "IACK from another responder session" }];
          }
          return [this.#icon()];
        }
        if (state !== "requesting") return [{ type: "drop", reason: `${message.type} in ${state}` }];
        if (message.mode !== this.#mode) {
          this.#state = "refused";
          return [
            {
              type: "refused",
              reason: NakReason.MODE_MISMATCH,
              text: `the peer answered in ${message.mode} mode`,
            },
            { type: "timer", at: now + NAK_RETRY_MS },
          ];
        }
        this.#peerNonce = message.responderNonce;
        this.#agreedMtu = Math.min(this.#localMtu, message.mtu);
        this.#state = "established";
        this.#lastHeard = now;
        return [
          { type: "set-mtu", mtu: this.#agreedMtu },
          this.#icon(),
          { type: "forward", enabled: true },
          { type: "established", mtu: this.#agreedMtu },
          { type: "timer", at: now + KEEPALIVE_INTERVAL_MS },
        ];
      }
      case "NAK": {
        if (message.initiatorNonce !== this.#ownNonce) {
          return [{ type: "drop", reason: "NAK for another session" }];
        }
        if (state !== "requesting") return [{ type: "drop", reason: `NAK in ${state}` }];
        this.#state = "refused";
        return [
          { type: "refused", reason: message.reason, text: message.text },
          { type: "timer", at: now + NAK_RETRY_MS },
        ];
      }
      case "CREQ": {
        if (state !== "established" || !this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
          return [{ type: "drop", reason: `CREQ in ${state} or for another session` }];
        }
        return [{ type: "forward", enabled: false }, ...this.#request(now, true)];
      }
      case "KEEPALIVE":
        if (state !== "established" || !this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
          return [{ type: "drop", reason: `KEEPALIVE in ${state} or for another session` }];
        }
        return this.#heard(message.sentAt, message.echo, now);
      default:
        return [{ type: "drop", reason: `${message.type} is not for an initiator` }];
    }
  }

  #responder(event: Exclude<SessionEvent, { type: "close" }>, now: number): SessionAction[] {
    const state = this.#state;
    if (event.type === "timer") return this.#responderTimer(now);
    if (event.type !== "received") return [{ type: "drop", reason: `${event.type} for a responder` }];
    const message = event.message;
    switch (message.type) {
      case "IREQ": {
        if (state === "idle") {
          const mtu = Math.min(this.#localMtu, message.mtu);
          if (mtu < MIN_LINK_MTU) {
            this.#state = "closed";
            return [
              this.#nak(
                message.initiatorNonce,
                NakReason.MTU_TOO_SMALL,
                `MTU ${mtu} is below ${MIN_LINK_MTU}`,
              ),
            ];
          }
          this.#mode = message.mode;
          this.#peerNonce = message.initiatorNonce;
          this.#agreedMtu = mtu;
          this.#state = "acknowledged";
          this.#lastHeard = now;
          return [
            { type: "create-device", mtu, mode: message.mode, plan: message.plan },
            { type: "forward", enabled: true },
            this.#ack("IACK"),
            { type: "timer", at: now + KEEPALIVE_INTERVAL_MS },
          ];
        }
        if (message.initiatorNonce === this.#peerNonce) {
          this.#lastHeard = now;
          if (state === "established") return [this.#ack("IRDY")];
          if (state === "acknowledged") return [this.#ack("IACK")];
          this.#state = "acknowledged";
          return [this.#ack("IACK"), { type: "timer", at: now + KEEPALIVE_INTERVAL_MS }];
        }
        if (message.mode !== this.#mode) {
          return [
            this.#nak(message.initiatorNonce, NakReason.MODE_MISMATCH, `circuit is in ${this.#mode} mode`),
          ];
        }
        // A new initiator nonce: the peer restarted. Keep the device, take the new session.
        const mtu = Math.min(this.#localMtu, message.mtu);
        if (mtu < MIN_LINK_MTU) {
          return [
            this.#nak(message.initiatorNonce, NakReason.MTU_TOO_SMALL, `MTU ${mtu} is below ${MIN_LINK_MTU}`),
          ];
        }
        const actions: SessionAction[] = mtu === this.#agreedMtu ? [] : [{ type: "set-mtu", mtu }];
        this.#peerNonce = message.initiatorNonce;
        this.#agreedMtu = mtu;
        this.#state = "acknowledged";
        this.#lastHeard = now;
        return [...actions, this.#ack("IACK"), { type: "timer", at: now + KEEPALIVE_INTERVAL_MS }];
      }
      case "KEEPALIVE": {
        if (state === "idle" || !this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
          return [{ type: "drop", reason: "KEEPALIVE for another session" }];
        }
        const answer = this.#heard(message.sentAt, message.echo, now);
        if (state === "established") return answer;
        const actions: SessionAction[] = [...answer, { type: "established", mtu: this.#agreedMtu }];
        if (state === "lost") actions.push({ type: "timer", at: now + KEEPALIVE_INTERVAL_MS });
        this.#state = "established";
        return actions;
      }
      case "ICON": {
        if (message.initiatorNonce !== this.#peerNonce || message.responderNonce !== this.#ownNonce) {
          return [{ type: "drop", reason: "ICON for another session" }];
        }
        if (state !== "acknowledged") return [{ type: "drop", reason: `ICON in ${state}` }];
        this.#state = "established";
        this.#lastHeard = now;
        return [{ type: "established", mtu: this.#agreedMtu }];
      }
      case "CREQ": {
        if (state === "idle" || !this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
          return [{ type: "drop", reason: "CREQ for another session" }];
        }
        this.#state = "closed";
        return [{ type: "forward", enabled: false }, { type: "remove-device" }];
      }
      default:
        return [{ type: "drop", reason: `${message.type} is not for a responder` }];
    }
  }

  #responderTimer(now: number): SessionAction[] {
    const state = this.#state;
    if (state === "lost") {
      this.#state = "closed";
      return [{ type: "forward", enabled: false }, { type: "remove-device" }];
    }
    if (state !== "acknowledged" && state !== "established") {
      return [{ type: "drop", reason: `timer in ${state}` }];
    }
    const silent = now - this.#lastHeard;
    if (silent >= DEAD_PEER_MS) {
      this.#state = "lost";
      return [{ type: "dead-peer", silentMs: silent }, { type: "timer", at: now + RESPONDER_LINGER_MS }];
    }
    const next: SessionAction = { type: "timer", at: now + KEEPALIVE_INTERVAL_MS };
    return state === "established" ? [this.#keepalive(now), next] : [next];
  }

  /**
   * The peer was heard: note when. A periodic KEEPALIVE (echo 0) is answered at once with one that
   * echoes its send time; an answer gives the round trip on the sender's own clock.
   */
  #heard(sentAt: bigint, echo: bigint, now: number): SessionAction[] {
    this.#lastHeard = now;
    if (echo === 0n) return [this.#keepalive(now, sentAt)];
    const rtt = now - Number(echo);
    if (rtt >= 0 && rtt < DEAD_PEER_MS) this.#rttMs = rtt;
    return [];
  }

  #keepalive(now: number, echo = 0n): SessionAction {
    return {
      type: "send",
      message: {
        type: "KEEPALIVE",
        vid: this.vid,
        senderNonce: this.#ownNonce,
        receiverNonce: this.#peerNonce,
        // Monotonic milliseconds, at least 1 so that it is never mistaken for "no echo".
        sentAt: BigInt(Math.max(1, Math.floor(now))),
        echo,
      },
    };
  }

  /** A CREQ is ours when its sender is our peer's session and it names ours. */
  #ownsCreq(sender: Nonce, receiver: Nonce): boolean {
    return sender === this.#peerNonce && receiver === this.#ownNonce;
  }

  #request(now: number, fromStart: boolean, resolveNow = false): SessionAction[] {
    const actions: SessionAction[] = [];
    if (this.#resolvedAt === undefined && !resolveNow) this.#resolvedAt = now;
    else if (resolveNow || now - this.#resolvedAt! >= DEAD_PEER_MS) {
      this.#resolvedAt = now;
      actions.push({ type: "resolve" });
    }
    if (fromStart) this.#retryMs = IREQ_FIRST_RETRY_MS;
    const at = now + this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, IREQ_MAX_RETRY_MS);
    this.#state = "requesting";
    return [...actions, {
      type: "send",
      message: {
        type: "IREQ",
        vid: this.vid,
        initiatorNonce: this.#ownNonce,
        timestamp: BigInt(Math.floor(this.#wallClock())),
        mode: this.#mode,
        mtu: this.#localMtu,
        options: 0,
        plan: this.#plan,
      },
    }, { type: "timer", at }];
  }

  #icon(): SessionAction {
    return {
      type: "send",
      message: {
        type: "ICON",
        vid: this.vid,
        initiatorNonce: this.#ownNonce,
        responderNonce: this.#peerNonce,
      },
    };
  }

  #ack(type: "IACK" | "IRDY"): SessionAction {
    return {
      type: "send",
      message: {
        type,
        vid: this.vid,
        responderNonce: this.#ownNonce,
        initiatorNonce: this.#peerNonce,
        mtu: this.#agreedMtu,
        mode: this.#mode,
        options: 0,
      },
    };
  }

  #nak(initiatorNonce: Nonce, reason: number, text: string): SessionAction {
    return { type: "send", message: { type: "NAK", vid: this.vid, initiatorNonce, reason, text } };
  }

  #close(): SessionAction[] {
    const wasLive = this.#state !== "idle";
    const actions: SessionAction[] = [];
    if (wasLive && this.#peerNonce !== 0n) {
      actions.push({
        type: "send",
        message: { type: "CREQ", vid: this.vid, senderNonce: this.#ownNonce, receiverNonce: this.#peerNonce },
      });
    }
    actions.push({ type: "forward", enabled: false }, { type: "timer", at: undefined });
    if (this.role === "responder" && wasLive) actions.push({ type: "remove-device" });
    this.#state = "closed";
    return actions;
  }
}

function describe(event: SessionEvent): string {
  return event.type === "received" ? event.message.type : event.type;
}
