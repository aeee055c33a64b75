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
 *                                                       established, timer off
 *   requesting   IACK or IRDY with another mode         refused, timer +NAK retry                    refused
 *   requesting   NAK (our nonce)                        refused, timer +NAK retry                    refused
 *   refused      timer                                  send IREQ, timer +first retry                requesting
 *   established  IACK or IRDY (our nonce, same peer)    send ICON (our ICON was lost)                established
 *   established  CREQ (our nonces)                      forward off, send IREQ, timer +first retry   requesting
 *   any          close                                  send CREQ (once the peer's nonce is known),  closed
 *                                                       forward off, timer off
 *
 * Responder (the listener's side, made by the daemon for an IREQ it accepts):
 *
 *   state        event                                  actions                                      next
 *   idle         IREQ                                   create-device (agreed MTU, mode, plan),      acknowledged
 *                                                       forward on, send IACK
 *   idle         IREQ with MTU below the minimum        send NAK MTU_TOO_SMALL, closed               closed
 *   acknowledged IREQ (same initiator nonce)            send IACK (our IACK was lost)                acknowledged
 *   acknowledged ICON (both nonces)                     established                                  established
 *   established  IREQ (same initiator nonce)            send IRDY                                    established
 *   ack./estab.  IREQ (new initiator nonce, same mode)  the peer restarted: set-mtu (if it changed),  acknowledged
 *                                                       send IACK
 *   ack./estab.  IREQ (new initiator nonce, other mode) send NAK MODE_MISMATCH                       unchanged
 *   ack./estab.  CREQ (both nonces)                     forward off, remove-device                   closed
 *   any          close                                  send CREQ, forward off, timer off,           closed
 *                                                       remove-device
 *
 * Any other (state, event) pair is ignored and reported as a `drop` action with the reason.
 */

import type { LinkMode } from "./link_device.ts";
import type { IpPrefix } from "./ip.ts";
import { type ControlMessage, NakReason, type Nonce } from "./wire.ts";
import { IREQ_FIRST_RETRY_MS, IREQ_MAX_RETRY_MS, NAK_RETRY_MS } from "./timing.ts";

/** The smallest link MTU VELA agrees to (IPv4's minimum datagram). */
export const MIN_LINK_MTU = 576;

export type Role = "initiator" | "responder";
export type SessionState = "idle" | "requesting" | "refused" | "acknowledged" | "established" | "closed";

export type SessionEvent =
  | { type: "start" }
  | { type: "timer" }
  | { type: "close" }
  | { type: "received"; message: ControlMessage };

export type SessionAction =
  | { type: "send"; message: ControlMessage }
  | { type: "create-device"; mtu: number; mode: LinkMode; plan: IpPrefix[] }
  | { type: "set-mtu"; mtu: number }
  | { type: "forward"; enabled: boolean }
  | { type: "remove-device" }
  | { type: "established"; mtu: number }
  | { type: "refused"; reason: number; text: string }
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

  handle(event: SessionEvent, now: number): SessionAction[] {
    if (this.#state === "closed") return [{ type: "drop", reason: `${describe(event)} after close` }];
    if (event.type === "close") return this.#close();
    return this.role === "initiator" ? this.#initiator(event, now) : this.#responder(event);
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
      return [{ type: "drop", reason: `timer in ${state}` }];
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
        return [
          { type: "set-mtu", mtu: this.#agreedMtu },
          this.#icon(),
          { type: "forward", enabled: true },
          { type: "established", mtu: this.#agreedMtu },
          { type: "timer", at: undefined },
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
      default:
        return [{ type: "drop", reason: `${message.type} is not for an initiator` }];
    }
  }

  #responder(event: Exclude<SessionEvent, { type: "close" }>): SessionAction[] {
    const state = this.#state;
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
          return [
            { type: "create-device", mtu, mode: message.mode, plan: message.plan },
            { type: "forward", enabled: true },
            this.#ack("IACK"),
          ];
        }
        if (message.initiatorNonce === this.#peerNonce) {
          return [this.#ack(state === "established" ? "IRDY" : "IACK")];
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
        return [...actions, this.#ack("IACK")];
      }
      case "ICON": {
        if (message.initiatorNonce !== this.#peerNonce || message.responderNonce !== this.#ownNonce) {
          return [{ type: "drop", reason: "ICON for another session" }];
        }
        if (state !== "acknowledged") return [{ type: "drop", reason: `ICON in ${state}` }];
        this.#state = "established";
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

  /** A CREQ is ours when its sender is our peer's session and it names ours. */
  #ownsCreq(sender: Nonce, receiver: Nonce): boolean {
    return sender === this.#peerNonce && receiver === this.#ownNonce;
  }

  #request(now: number, fromStart: boolean): SessionAction[] {
    if (fromStart) this.#retryMs = IREQ_FIRST_RETRY_MS;
    const at = now + this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, IREQ_MAX_RETRY_MS);
    this.#state = "requesting";
    return [{
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
