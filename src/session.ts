/**
 * The session state machine of one circuit, pure: `handle(event, now)` returns the actions to take and
 * touches nothing else. The clock, the nonce source and the key exchange are injected.
 *
 * A session is keyed when it has a pre-shared key (`psk`): then IREQ and IACK carry X25519 ephemerals,
 * every handshake makes new session keys (src/crypto/handshake.ts), ICON proves the initiator holds them
 * (its MAC is made with the handshake's control key), KEEPALIVE and CREQ are signed with the control keys
 * and a KEEPALIVE is taken only with a sequence number above the last one. A keyed responder creates its
 * interface, or switches an existing circuit to a new handshake, only once that proof has arrived. The
 * rows marked (keyed) apply to keyed sessions only; a session without a key works as protocol v1 did.
 *
 * Initiator (the side run with --peer):
 *
 *   state        event                                  actions                                      next
 *   idle         start                                  send IREQ (handshake h, new ephemeral),      requesting
 *                                                       timer +first retry
 *   requesting   timer                                  send IREQ, timer +backoff (doubling,         requesting
 *                                                       capped); after UNANSWERED_IREQS, unanswered
 *   requesting   IACK or IRDY (our nonce, h, our mode)  (keyed) derive keys, keys; set-mtu agreed,   established
 *                                                       send ICON, forward on, established,
 *                                                       timer +keepalive
 *   requesting   IACK or IRDY with another mode         refused, timer +NAK retry                    refused
 *   requesting   NAK (our nonce)                        refused, timer +NAK retry                    refused
 *   refused      timer                                  send IREQ (h + 1), timer +first retry        requesting
 *   established  timer, peer heard within dead time     send KEEPALIVE, timer +keepalive; (keyed)    established
 *                                                       keys due for renewal: send IREQ (h + 1);
 *                                                       previous keys past the overlap: keys
 *   established  timer, peer silent for the dead time   forward off, dead-peer, resolve, send IREQ   requesting
 *                                                       (h + 1), timer +first retry
 *   established  KEEPALIVE (both nonces, fresh, signed) peer heard; an echo gives the RTT, a         established
 *                                                       periodic one is answered: send KEEPALIVE
 *   established  IACK or IRDY (our nonce, h, same peer) send ICON (our ICON was lost)                established
 *   established  IACK (our nonce, renewal h, same peer) (keyed) derive keys, keys (new and previous),  established
 *                                                       rotated, send ICON
 *   established  NAK (our nonce; no key)                forward off, refused, timer +NAK retry       refused
 *                (a keyed listener says CREQ instead: a NAK can be replayed, a signed CREQ cannot)
 *   established  CREQ (our nonces, signed)              forward off, send IREQ (h + 1), timer        requesting
 *   any but idle moved (the peer's name points elsewhere) forward off, send IREQ (h + 1), timer       requesting
 *   any          close                                  send CREQ (once the peer's nonce is known),  closed
 *                                                       forward off, timer off
 *
 * Responder (the listener's side, made by the daemon for an IREQ it accepts):
 *
 *   state        event                                  actions                                      next
 *   idle         IREQ (no key)                          create-device (agreed MTU, mode, plan),      acknowledged
 *                                                       forward on, send IACK, timer +keepalive
 *   idle         IREQ (keyed)                           choose the cipher, derive keys (pending),    acknowledged
 *                                                       send IACK, timer +keepalive; no device yet
 *   idle         IREQ with MTU below the minimum        send NAK MTU_TOO_SMALL                       closed
 *   idle         IREQ (keyed) offering no cipher we take send NAK CIPHER_MISMATCH                    closed
 *   acknowledged IREQ (same nonce and handshake)        send IACK again (our IACK was lost)          acknowledged
 *   acknowledged ICON, or a KEEPALIVE signed with the   (keyed, no device) create-device, keys,      established
 *                pending keys                           forward on; established
 *   acknowledged KEEPALIVE (both nonces)                answer it as below, established              established
 *   established  IREQ (same nonce and handshake)        send IRDY                                    established
 *   established  KEEPALIVE (both nonces, fresh, signed) peer heard; an echo gives the RTT, a         established
 *                                                       periodic one is answered: send KEEPALIVE
 *   ack./estab./lost IREQ (keyed; renewal, or a new     derive pending keys, keys (open with them    unchanged
 *                nonce: the peer restarted)             too), send IACK; the current keys stay
 *   ack./estab./lost ICON or KEEPALIVE signed with the  (keyed) the pending handshake becomes the     established
 *                pending keys                           session: set-mtu (if it changed), keys,
 *                                                       rotated
 *   ack./estab.  timer, peer heard within dead time     send KEEPALIVE (established only),           unchanged
 *                                                       timer +keepalive; previous keys past the
 *                                                       overlap: keys
 *   acknowledged timer, silent, no device (keyed)       forget it                                    closed
 *   ack./estab.  timer, peer silent for the dead time   dead-peer, timer +linger                     lost
 *   lost         IREQ (same initiator nonce, no key)    send IACK, timer +keepalive                  acknowledged
 *   lost         KEEPALIVE (both nonces, fresh, signed) answer it, established, timer +keepalive     established
 *   lost         timer (lingered)                       forward off, remove-device                   closed
 *   ack./estab./lost IREQ (new nonce, same mode, no key) the peer restarted: set-mtu (if it changed), acknowledged
 *                                                       send IACK, timer +keepalive
 *   ack./estab./lost IREQ (new nonce, MTU below min)    send NAK MTU_TOO_SMALL                       unchanged
 *   ack./estab./lost IREQ (new nonce, other mode)       send NAK MODE_MISMATCH                       unchanged
 *   ack./estab./lost CREQ (both nonces, signed)         forward off, remove-device                   closed
 *   any          close                                  send CREQ and remove-device (unless idle),   closed
 *                                                       forward off, timer off
 *
 * Either role (path MTU probing, src/daemon/path_probe.ts; compression dictionaries, docs/PROTOCOL.md 2.8):
 *
 *   state        event                                  actions                                      next
 *   established  probe (id, size)                       send PROBE (signed; padded to size)          established
 *   not idle     PROBE (both nonces, signed)            send PROBE_ACK naming its id and size        unchanged
 *   established  PROBE_ACK (both nonces, signed)        probe-answered (id, size)                    established
 *   established  dictionary-ready (epoch, hash)         send DACK (signed; dictionary mode only)     established
 *   established  DACK (both nonces, signed)             dictionary-acknowledged (epoch, hash)        established
 *
 * An initiator also asks for `resolve` (its peer's name looked up again) when it sends an IREQ and has
 * been asking for the dead time or longer since the last lookup.
 *
 * Compression (docs/PROTOCOL.md 2.7): an initiator with `compress` sets IREQ_FLAG_COMPRESS (keyed, only
 * with "with-encryption"); a responder with `compress` answers IACK_FLAG_COMPRESS when the IREQ asks and
 * the circuit is clear or both say "with-encryption" (a keyed responder cannot tell, so it accepts a
 * keyed circuit's offer only with "with-encryption" of its own). An initiator takes an IACK that agrees
 * to compression it did not offer as a refusal. Both reserve COMPRESSION_OVERHEAD of the MTU for it.
 *
 * Closed is final: every event after it is dropped.
 * Any other (state, event) pair, and any message whose signature or sequence number does not check, is
 * ignored and reported as a `drop` action with the reason.
 */

import type { LinkMode } from "./link/link_device.ts";
import type { IpPrefix } from "./ip.ts";
import {
  type CipherName,
  type Compression,
  COMPRESSION_OVERHEAD,
  type ControlMessage,
  type Dack,
  DICTIONARY_OVERHEAD,
  EPHEMERAL_LENGTH,
  type Iack,
  IACK_FLAG_COMPRESS,
  IACK_FLAG_COMPRESS_DICTIONARY,
  IACK_FLAG_FRAGMENTS,
  type Ireq,
  IREQ_FLAG_AES,
  IREQ_FLAG_COMPRESS,
  IREQ_FLAG_COMPRESS_DICTIONARY,
  IREQ_FLAG_FRAGMENTS,
  IREQ_FLAG_LINK_MTU,
  NakReason,
  type Nonce,
  offerBit,
  offeredCiphers,
  type Probe,
} from "./wire.ts";
import {
  DEAD_PEER_MS,
  IREQ_FIRST_RETRY_MS,
  IREQ_MAX_RETRY_MS,
  KEEPALIVE_INTERVAL_MS,
  KEY_OVERLAP_MS,
  NAK_RETRY_MS,
  REKEY_AFTER_MS,
  RESPONDER_LINGER_MS,
  UNANSWERED_IREQS,
} from "./timing.ts";
import {
  type Ephemeral,
  type HandshakeCrypto,
  type SessionKeys,
  x25519Handshake,
} from "./crypto/handshake.ts";
import { AEAD_OVERHEAD, type AeadCipher, type DataKeys, rekeyAfterPackets } from "./crypto/data_keys.ts";
import { verifyControl } from "./keys.ts";
import { equalBytes } from "./packet/bytes.ts";

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

/** What a side asks for with --cipher: a cipher, clear on purpose ("clear", --cipher none), or "auto". */
export type CipherPolicy = CipherName | "auto";

export type SessionEvent =
  | { type: "start" }
  /** `keyUse`: packets the current data keys have sealed or opened, whichever is more (keyed sessions). */
  | { type: "timer"; keyUse?: number }
  | { type: "close" }
  | { type: "moved" }
  /** Send a path MTU probe of `size` bytes (src/daemon/path_probe.ts). */
  | { type: "probe"; id: number; size: number }
  /** The datapath holds the peer's dictionary `epoch` (its SHA-256 begins with `hash`): tell the peer (DACK). */
  | { type: "dictionary-ready"; epoch: number; hash: bigint }
  /** `datagram`: the bytes the message was decoded from, for the signature of a keyed session. */
  | { type: "received"; message: ControlMessage; datagram?: Uint8Array };

export type SessionAction =
  /** `sign`: the key to make the message's MAC with (none: unsigned). */
  | { type: "send"; message: ControlMessage; sign?: Uint8Array }
  | { type: "create-device"; mtu: number; mode: LinkMode; plan: IpPrefix[] }
  | { type: "set-mtu"; mtu: number }
  | { type: "forward"; enabled: boolean }
  | { type: "remove-device" }
  | { type: "established"; mtu: number }
  | { type: "refused"; reason: number; text: string }
  | { type: "dead-peer"; silentMs: number }
  /** Look the peer's name up again (an initiator that has heard nothing for a while). */
  | { type: "resolve" }
  /** The data keys the datapath holds from now on (keyed sessions with a cipher). */
  | { type: "keys"; cipher: CipherName; keys: DataKeys }
  /** New session keys are in use (a renewal, or a restarted peer's handshake). */
  | { type: "rotated"; handshake: number }
  /** The peer's signed PROBE_ACK: probe `id` of `size` bytes arrived. */
  | { type: "probe-answered"; id: number; size: number }
  /** The peer's signed DACK: it holds dictionary `epoch` of our frames, hashed `hash`. */
  | { type: "dictionary-acknowledged"; epoch: number; hash: bigint }
  /** An initiator's IREQs got no answer `tries` times in a row. */
  | { type: "unanswered"; tries: number }
  | { type: "timer"; at: number | undefined }
  | { type: "drop"; reason: string };

export interface SessionConfig {
  role: Role;
  vid: number;
  /** The mode this side wants (the responder takes the initiator's). */
  mode: LinkMode;
  /**
   * This side's MTU proposal for a clear circuit, from its route to the peer; with a cipher the session
   * takes AEAD_OVERHEAD off it, unless `fixedMtu` (the operator's --mtu, the link MTU itself).
   */
  mtu: number;
  fixedMtu?: boolean;
  /** The initiator's plan for the responder's addresses. */
  plan: IpPrefix[];
  /** A fresh session nonce (wire.newNonce in the daemon, a counter in tests). */
  newNonce: () => Nonce;
  /** Milliseconds since the Unix epoch, for the IREQ timestamp. */
  wallClock: () => number;
  /** The pre-shared key: a keyed session (the responder's is the key its IREQ was signed with). */
  psk?: Uint8Array;
  /** --cipher (default "auto"). */
  cipher?: CipherPolicy;
  /** This host has AES instructions (src/crypto/cpu.ts). */
  aesHardware?: boolean;
  /**
   * This side fragments frames that do not fit a datagram and joins fragments (docs/PROTOCOL.md 2.6): an
   * initiator says so in its IREQ, a responder agrees in its IACK when the IREQ said so. Default false.
   */
  fragments?: boolean;
  /** An initiator's ask that the responder's tap join this bridge of the listener's (IREQ_FLAG_BRIDGE). */
  farBridge?: string;
  /**
   * Compression (--compress): "off" (default), "on" (clear circuits only), or "with-encryption" (also on a
   * keyed circuit: --compress-with-encryption). An initiator offers it, a responder accepts it.
   */
  compress?: CompressPolicy;
  /** With compression: "dictionary" (default) offers or accepts the delayed-dictionary mode too. */
  compressMode?: CompressMode;
  /** The key exchange (default: X25519 and HKDF). */
  handshakeCrypto?: HandshakeCrypto;
  /** New keys this long after the current ones (default REKEY_AFTER_MS). */
  rekeyAfterMs?: number;
  /**
   * A number in [0, 1) for each IREQ retry: the wait is the backoff times 0.75 to 1.25 by it, so that
   * many circuits started together do not ask again all at once (Math.random in the daemon; default
   * 0.5, no jitter, for tests that count milliseconds).
   */
  jitter?: () => number;
}

/** What a side says of compression (SessionConfig.compress). */
export type CompressPolicy = "off" | "on" | "with-encryption";
/** Which compression a side offers or accepts at most: per frame only, or with delayed dictionaries. */
export type CompressMode = "stateless" | "dictionary";

/** One handshake's outcome: its number, cipher, keys and when it was made. */
interface KeyEpoch {
  readonly handshake: number;
  readonly cipher: CipherName;
  readonly keys: SessionKeys;
  readonly since: number;
}

/** A responder's handshake that waits for the initiator's proof (ICON or a signed KEEPALIVE). */
interface PendingHandshake {
  readonly initiatorNonce: Nonce;
  readonly handshake: number;
  readonly initiatorEphemeral: Uint8Array;
  readonly epoch: KeyEpoch;
  readonly mtu: number;
  readonly mode: LinkMode;
  readonly plan: IpPrefix[];
  readonly answer: Iack;
}

const NO_EPHEMERAL = new Uint8Array(EPHEMERAL_LENGTH);

export class Session {
  readonly role: Role;
  readonly vid: number;
  #state: SessionState = "idle";
  #mode: LinkMode;
  readonly #localMtu: number;
  readonly #fixedMtu: boolean;
  #agreedMtu = 0;
  readonly #plan: IpPrefix[];
  readonly #ownNonce: Nonce;
  #peerNonce: Nonce = 0n;
  #retryMs = IREQ_FIRST_RETRY_MS;
  readonly #jitter: () => number;
  /** When the initiator last asked for its peer's name to be looked up (monotonic ms); undefined before. */
  #resolvedAt: number | undefined;
  /** When the peer was last heard (monotonic ms). */
  #lastHeard = 0;
  #rttMs: number | undefined;
  readonly #wallClock: () => number;
  readonly #psk: Uint8Array | undefined;
  readonly #policy: CipherPolicy;
  readonly #aesHardware: boolean;
  readonly #fragments: boolean;
  readonly #farBridge: string | undefined;
  /** Both ends fragment: the handshake in use agreed on it. */
  #fragmenting = false;
  readonly #compress: CompressPolicy;
  readonly #compressMode: CompressMode;
  /** What the handshake in use agreed on of compression. */
  #compression: Compression = "off";
  readonly #crypto: HandshakeCrypto;
  readonly #rekeyAfterMs: number;
  /** The initiator's handshake in flight or in use; the responder's in use. */
  #handshake = 0;
  #started = false;
  /** The initiator's ephemeral key pair for the handshake in flight. */
  #ephemeral: Ephemeral | undefined;
  /** The initiator has asked for new keys and waits for the IACK. */
  #renewing = false;
  #current: KeyEpoch | undefined;
  #previous: KeyEpoch | undefined;
  /** The responder's answer to the handshake in use, and the initiator's ephemeral in it. */
  #currentAnswer: Iack | undefined;
  #currentInitiatorEphemeral: Uint8Array | undefined;
  #pending: PendingHandshake | undefined;
  #pendingSince = 0;
  #keepalivesSent = 0n;
  #peerSequence = 0n;
  #unanswered = 0;
  #rotations = 0;

  constructor(config: SessionConfig) {
    this.role = config.role;
    this.vid = config.vid;
    this.#mode = config.mode;
    this.#localMtu = config.mtu;
    this.#fixedMtu = config.fixedMtu ?? false;
    this.#plan = config.plan;
    this.#ownNonce = config.newNonce();
    this.#wallClock = config.wallClock;
    this.#jitter = config.jitter ?? (() => 0.5);
    this.#psk = config.psk;
    this.#policy = config.cipher ?? "auto";
    this.#aesHardware = config.aesHardware ?? false;
    this.#fragments = config.fragments ?? false;
    this.#farBridge = config.farBridge;
    this.#compress = config.compress ?? "off";
    this.#compressMode = config.compressMode ?? "dictionary";
    this.#crypto = config.handshakeCrypto ?? x25519Handshake;
    this.#rekeyAfterMs = config.rekeyAfterMs ?? REKEY_AFTER_MS;
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
  /** Both ends fragment frames that do not fit a datagram (the handshake in use agreed on it). */
  get fragmenting(): boolean {
    return this.#fragmenting;
  }
  /** Both ends compress (the handshake in use agreed on it). */
  get compressing(): boolean {
    return this.#compression !== "off";
  }
  /** The compression the handshake in use agreed on. */
  get compression(): Compression {
    return this.#compression;
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
  /** Whether the session has a pre-shared key. */
  get keyed(): boolean {
    return this.#psk !== undefined;
  }
  /** The data cipher in use: "clear" without a key, undefined while a keyed session has no keys yet. */
  get cipher(): CipherName | undefined {
    return this.#psk ? this.#current?.cipher : "clear";
  }
  /** When the keys in use were made (monotonic ms), undefined without. */
  get keysSince(): number | undefined {
    return this.#current?.since;
  }
  /** How many times the keys changed after the first handshake of the circuit. */
  get rotations(): number {
    return this.#rotations;
  }
  /** When the peer was last heard (monotonic ms), undefined before it was. */
  get lastHeard(): number | undefined {
    return this.#lastHeard > 0 ? this.#lastHeard : undefined;
  }
  /** The handshake number of the keys in use. */
  get handshake(): number {
    return this.#current?.handshake ?? this.#handshake;
  }

  handle(event: SessionEvent, now: number): SessionAction[] {
    if (this.#state === "closed") return [{ type: "drop", reason: `${describe(event)} after close` }];
    if (event.type === "close") return this.#close();
    if (event.type === "probe") return this.#probe("PROBE", event.id, event.size);
    if (event.type === "dictionary-ready") return this.#dictionaryAck(event.epoch, event.hash);
    if (event.type === "received" && event.message.type === "DACK") {
      return this.#dackReceived(event.message, event.datagram);
    }
    if (event.type === "received" && (event.message.type === "PROBE" || event.message.type === "PROBE_ACK")) {
      return this.#probeReceived(event.message, event.datagram);
    }
    return this.role === "initiator" ? this.#initiator(event, now) : this.#responder(event, now);
  }

  // ---------------------------------------------------------------- path MTU probes (both roles)

  /** A PROBE or PROBE_ACK to the peer, signed like KEEPALIVE; nothing before the session is up. */
  #probe(type: Probe["type"], id: number, size: number): SessionAction[] {
    const up = this.#state === "established" || (type === "PROBE_ACK" && this.#state !== "idle");
    if (!up || this.#peerNonce === 0n || (this.#psk && !this.#current)) {
      return type === "PROBE" ? [] : [{ type: "drop", reason: `PROBE in ${this.#state}` }];
    }
    return [{
      type: "send",
      sign: this.#ownControlKey(),
      message: { type, vid: this.vid, senderNonce: this.#ownNonce, receiverNonce: this.#peerNonce, id, size },
    }];
  }

  #probeReceived(message: Probe, datagram: Uint8Array | undefined): SessionAction[] {
    if (!this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
      return [{ type: "drop", reason: `${message.type} for another session` }];
    }
    if (!this.#signedByPeer(datagram)) return [{ type: "drop", reason: `${message.type} not signed` }];
    if (message.type === "PROBE") return this.#probe("PROBE_ACK", message.id, message.size);
    if (this.#state !== "established") return [{ type: "drop", reason: `PROBE_ACK in ${this.#state}` }];
    return [{ type: "probe-answered", id: message.id, size: message.size }];
  }

  // ---------------------------------------------------------------- dictionary acknowledgments (both roles)

  /** A DACK to the peer, signed like KEEPALIVE; only on an established circuit in the dictionary mode. */
  #dictionaryAck(epoch: number, hash: bigint): SessionAction[] {
    if (this.#state !== "established" || this.#compression !== "dictionary" || this.#peerNonce === 0n) {
      return [];
    }
    return [{
      type: "send",
      sign: this.#ownControlKey(),
      message: {
        type: "DACK",
        vid: this.vid,
        senderNonce: this.#ownNonce,
        receiverNonce: this.#peerNonce,
        epoch,
        hash,
      },
    }];
  }

  #dackReceived(message: Dack, datagram: Uint8Array | undefined): SessionAction[] {
    if (!this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
      return [{ type: "drop", reason: "DACK for another session" }];
    }
    if (!this.#signedByPeer(datagram)) return [{ type: "drop", reason: "DACK not signed" }];
    if (this.#state !== "established" || this.#compression !== "dictionary") {
      return [{ type: "drop", reason: `DACK in ${this.#state} without dictionaries` }];
    }
    return [{ type: "dictionary-acknowledged", epoch: message.epoch, hash: message.hash }];
  }

  // ---------------------------------------------------------------- initiator

  #initiator(
    event: Exclude<SessionEvent, { type: "close" | "probe" | "dictionary-ready" }>,
    now: number,
  ): SessionAction[] {
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
          return [
            this.#keepalive(now),
            ...this.#retireKeys(now),
            ...this.#renewal(now, event.keyUse ?? 0),
            { type: "timer", at: now + KEEPALIVE_INTERVAL_MS },
          ];
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
      case "IRDY":
        return this.#initiatorAck(message, now);
      case "NAK": {
        if (message.initiatorNonce !== this.#ownNonce) {
          return [{ type: "drop", reason: "NAK for another session" }];
        }
        if (state === "established" && !this.#psk) {
          this.#state = "refused";
          return [
            { type: "forward", enabled: false },
            { type: "refused", reason: message.reason, text: message.text },
            { type: "timer", at: now + NAK_RETRY_MS },
          ];
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
        if (!this.#signedByPeer(event.datagram)) return [{ type: "drop", reason: "CREQ not signed" }];
        return [{ type: "forward", enabled: false }, ...this.#request(now, true)];
      }
      case "KEEPALIVE":
        if (state !== "established" || !this.#ownsCreq(message.senderNonce, message.receiverNonce)) {
          return [{ type: "drop", reason: `KEEPALIVE in ${state} or for another session` }];
        }
        if (!this.#signedByPeer(event.datagram)) return [{ type: "drop", reason: "KEEPALIVE not signed" }];
        if (message.sequence <= this.#peerSequence) return [{ type: "drop", reason: "KEEPALIVE replayed" }];
        this.#peerSequence = message.sequence;
        return this.#heard(message.sentAt, message.echo, now);
      default:
        return [{ type: "drop", reason: `${message.type} is not for an initiator` }];
    }
  }

  #initiatorAck(message: Iack, now: number): SessionAction[] {
    const state = this.#state;
    if (message.initiatorNonce !== this.#ownNonce) {
      return [{ type: "drop", reason: `${message.type} for another session` }];
    }
    const handshake = this.#handshake & 0xff;
    if (state === "established") {
      if (message.responderNonce !== this.#peerNonce) {
        return [{ type: "drop", reason: "IACK from another responder session" }];
      }
      if (this.#renewing && message.handshake === handshake) {
        const epoch = this.#deriveInitiator(message, now);
        if (!epoch) return [{ type: "drop", reason: `${message.type} with an unusable key` }];
        this.#previous = this.#current;
        this.#current = epoch;
        this.#renewing = false;
        this.#ephemeral = undefined;
        this.#rotations++;
        return [...this.#keysAction(), { type: "rotated", handshake: epoch.handshake }, this.#icon()];
      }
      if (message.handshake === ((this.#current?.handshake ?? this.#handshake) & 0xff)) return [this.#icon()];
      return [{ type: "drop", reason: `${message.type} for handshake ${message.handshake}` }];
    }
    if (state !== "requesting") return [{ type: "drop", reason: `${message.type} in ${state}` }];
    if (message.handshake !== handshake) {
      return [{
        type: "drop",
        reason: `${message.type} for handshake ${message.handshake}, not ${handshake}`,
      }];
    }
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
    if (!(this.#offers() & offerBit(message.cipher))) {
      this.#state = "refused";
      return [
        {
          type: "refused",
          reason: NakReason.CIPHER_MISMATCH,
          text: `the peer chose ${message.cipher}, which was not offered`,
        },
        { type: "timer", at: now + NAK_RETRY_MS },
      ];
    }
    const agreedCompression = compressionOf(message.flags ?? 0);
    if (
      (agreedCompression !== "off" && !this.#offersCompression()) ||
      (agreedCompression === "dictionary" && this.#compressMode !== "dictionary")
    ) {
      this.#state = "refused";
      return [
        {
          type: "refused",
          reason: NakReason.UNSPECIFIED,
          text: "the peer agreed to compression, which was not offered",
        },
        { type: "timer", at: now + NAK_RETRY_MS },
      ];
    }
    let epoch: KeyEpoch | undefined;
    if (this.#psk) {
      epoch = this.#deriveInitiator(message, now);
      if (!epoch) return [{ type: "drop", reason: `${message.type} with an unusable key` }];
    }
    this.#current = epoch;
    this.#previous = undefined;
    this.#ephemeral = undefined;
    this.#renewing = false;
    this.#peerNonce = message.responderNonce;
    this.#peerSequence = 0n;
    this.#agreedMtu = Math.min(this.#proposedMtu(), message.mtu);
    this.#fragmenting = this.#fragments && ((message.flags ?? 0) & IACK_FLAG_FRAGMENTS) !== 0;
    this.#compression = agreedCompression;
    this.#state = "established";
    this.#lastHeard = now;
    return [
      { type: "set-mtu", mtu: this.#agreedMtu },
      ...this.#keysAction(),
      this.#icon(),
      { type: "forward", enabled: true },
      { type: "established", mtu: this.#agreedMtu },
      { type: "timer", at: now + KEEPALIVE_INTERVAL_MS },
    ];
  }

  #deriveInitiator(message: Iack, now: number): KeyEpoch | undefined {
    const own = this.#ephemeral;
    if (!this.#psk || !own) return undefined;
    const keys = this.#crypto.derive(this.#psk, own, message.ephemeral, {
      vid: this.vid,
      handshake: message.handshake,
      cipher: message.cipher,
      mode: message.mode,
      initiatorNonce: this.#ownNonce,
      responderNonce: message.responderNonce,
      initiatorEphemeral: own.publicKey,
      responderEphemeral: message.ephemeral,
    });
    return keys && { handshake: this.#handshake, cipher: message.cipher, keys, since: now };
  }

  /** Keys due for renewal (keyed, established): the renewal IREQ, sent again at each tick until answered. */
  #renewal(now: number, keyUse: number): SessionAction[] {
    const current = this.#current;
    if (!this.#psk || !current) return [];
    if (!this.#renewing) {
      const old = now - current.since >= this.#rekeyAfterMs;
      const used = current.cipher !== "clear" && keyUse >= rekeyAfterPackets(current.cipher as AeadCipher);
      if (!old && !used) return [];
      this.#handshake++;
      this.#ephemeral = this.#crypto.newEphemeral();
      this.#renewing = true;
    }
    return [this.#ireq()];
  }

  #request(now: number, fromStart: boolean, resolveNow = false): SessionAction[] {
    const actions: SessionAction[] = [];
    if (this.#resolvedAt === undefined && !resolveNow) this.#resolvedAt = now;
    else if (resolveNow || now - this.#resolvedAt! >= DEAD_PEER_MS) {
      this.#resolvedAt = now;
      actions.push({ type: "resolve" });
    }
    if (fromStart) {
      this.#retryMs = IREQ_FIRST_RETRY_MS;
      if (this.#started) this.#handshake++;
      this.#started = true;
      this.#ephemeral = this.#psk ? this.#crypto.newEphemeral() : undefined;
      this.#renewing = false;
      this.#unanswered = 0;
    }
    const at = now + Math.round(this.#retryMs * (0.75 + 0.5 * this.#jitter()));
    this.#retryMs = Math.min(this.#retryMs * 2, IREQ_MAX_RETRY_MS);
    this.#state = "requesting";
    if (this.#unanswered++ === UNANSWERED_IREQS) {
      actions.push({ type: "unanswered", tries: UNANSWERED_IREQS });
    }
    return [...actions, this.#ireq(), { type: "timer", at }];
  }

  #ireq(): SessionAction {
    return {
      type: "send",
      sign: this.#psk,
      message: {
        type: "IREQ",
        vid: this.vid,
        initiatorNonce: this.#ownNonce,
        timestamp: BigInt(Math.floor(this.#wallClock())),
        mode: this.#mode,
        mtu: this.#proposedMtu(),
        handshake: this.#handshake & 0xff,
        offers: this.#offers(),
        flags: (this.#aesHardware ? IREQ_FLAG_AES : 0) |
          (this.#fragments ? IREQ_FLAG_FRAGMENTS | (this.#fixedMtu ? IREQ_FLAG_LINK_MTU : 0) : 0) |
          (this.#offersCompression()
            ? IREQ_FLAG_COMPRESS | (this.#compressMode === "dictionary" ? IREQ_FLAG_COMPRESS_DICTIONARY : 0)
            : 0),
        ephemeral: this.#ephemeral?.publicKey ?? NO_EPHEMERAL,
        plan: this.#plan,
        ...(this.#farBridge === undefined ? {} : { bridge: this.#farBridge }),
      },
    };
  }

  /** The ciphers an initiator offers: clear only without a key or with --cipher none. */
  #offers(): number {
    if (!this.#psk) return offerBit("clear");
    if (this.#policy === "auto") return offerBit("aes-256-gcm") | offerBit("chacha20-poly1305");
    return offerBit(this.#policy);
  }

  /**
   * The initiator's MTU proposal: a sealed frame is AEAD_OVERHEAD bytes longer, and one that may be
   * compressed COMPRESSION_OVERHEAD, unless --mtu fixed it.
   */
  #proposedMtu(): number {
    if (this.#fixedMtu) return this.#localMtu;
    const compression = this.#compressMode === "dictionary" ? "dictionary" : "lz4";
    return this.#localMtu - (this.#offers() === offerBit("clear") ? 0 : AEAD_OVERHEAD) -
      (this.#offersCompression() ? compressionOverhead(compression) : 0);
  }

  /** An initiator offers compression with --compress: on a keyed circuit only with-encryption. */
  #offersCompression(): boolean {
    if (this.#compress === "off") return false;
    return this.#offers() === offerBit("clear") || this.#compress === "with-encryption";
  }

  /** What a responder agrees to of an IREQ's offer of compression, for a circuit with `cipher`. */
  #agreesToCompress(request: Ireq, cipher: CipherName): Compression {
    if (this.#compress === "off" || (request.flags & IREQ_FLAG_COMPRESS) === 0) return "off";
    if (cipher !== "clear" && this.#compress !== "with-encryption") return "off";
    return this.#compressMode === "dictionary" && (request.flags & IREQ_FLAG_COMPRESS_DICTIONARY) !== 0
      ? "dictionary"
      : "lz4";
  }

  #icon(): SessionAction {
    const current = this.#current;
    return {
      type: "send",
      sign: current?.keys.controlInitiatorToResponder,
      message: {
        type: "ICON",
        vid: this.vid,
        initiatorNonce: this.#ownNonce,
        responderNonce: this.#peerNonce,
        handshake: (current?.handshake ?? this.#handshake) & 0xff,
      },
    };
  }

  // ---------------------------------------------------------------- responder

  #responder(
    event: Exclude<SessionEvent, { type: "close" | "probe" | "dictionary-ready" }>,
    now: number,
  ): SessionAction[] {
    const state = this.#state;
    if (event.type === "timer") return this.#responderTimer(now);
    if (event.type !== "received") return [{ type: "drop", reason: `${event.type} for a responder` }];
    const message = event.message;
    switch (message.type) {
      case "IREQ":
        return this.#psk ? this.#keyedIreq(message, now) : this.#clearIreq(message, now);
      case "KEEPALIVE": {
        if (message.receiverNonce !== this.#ownNonce || state === "idle") {
          return [{ type: "drop", reason: "KEEPALIVE for another session" }];
        }
        const actions: SessionAction[] = [];
        if (this.#psk) {
          const pending = this.#pending;
          if (
            pending && message.senderNonce === pending.initiatorNonce &&
            verifyControl(pending.epoch.keys.controlInitiatorToResponder, event.datagram ?? new Uint8Array())
          ) {
            actions.push(...this.#promote(now));
          } else if (message.senderNonce !== this.#peerNonce || !this.#current) {
            return [{ type: "drop", reason: "KEEPALIVE for another session" }];
          } else if (!this.#signedByPeer(event.datagram)) {
            return [{ type: "drop", reason: "KEEPALIVE not signed" }];
          }
        } else if (message.senderNonce !== this.#peerNonce) {
          return [{ type: "drop", reason: "KEEPALIVE for another session" }];
        }
        if (message.sequence <= this.#peerSequence) {
          return [...actions, { type: "drop", reason: "KEEPALIVE replayed" }];
        }
        this.#peerSequence = message.sequence;
        actions.push(...this.#heard(message.sentAt, message.echo, now));
        if (this.#state === "established") return actions;
        if (this.#state === "lost") actions.push({ type: "timer", at: now + KEEPALIVE_INTERVAL_MS });
        this.#state = "established";
        actions.push({ type: "established", mtu: this.#agreedMtu });
        return actions;
      }
      case "ICON": {
        if (message.responderNonce !== this.#ownNonce) {
          return [{ type: "drop", reason: "ICON for another session" }];
        }
        if (this.#psk) {
          const pending = this.#pending;
          if (
            !pending || message.initiatorNonce !== pending.initiatorNonce ||
            message.handshake !== (pending.handshake & 0xff)
          ) {
            return [{ type: "drop", reason: "ICON for no pending handshake" }];
          }
          if (
            !verifyControl(pending.epoch.keys.controlInitiatorToResponder, event.datagram ?? new Uint8Array())
          ) {
            return [{ type: "drop", reason: "ICON not signed with the handshake's key" }];
          }
          return this.#promote(now);
        }
        if (message.initiatorNonce !== this.#peerNonce) {
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
        if (this.#psk && (!this.#current || !this.#signedByPeer(event.datagram))) {
          return [{ type: "drop", reason: "CREQ not signed" }];
        }
        this.#state = "closed";
        return [{ type: "forward", enabled: false }, { type: "remove-device" }];
      }
      default:
        return [{ type: "drop", reason: `${message.type} is not for a responder` }];
    }
  }

  /** An IREQ to a responder without a key: protocol v1's rules. */
  #clearIreq(message: Ireq, now: number): SessionAction[] {
    const state = this.#state;
    if (!(message.offers & offerBit("clear"))) {
      if (state === "idle") this.#state = "closed";
      return [this.#nak(message, NakReason.CIPHER_MISMATCH, "this listener has no key; only clear circuits")];
    }
    const compressing = this.#agreesToCompress(message, "clear");
    const compressCost = compressionOverhead(compressing);
    if (state === "idle") {
      const mtu = Math.min(this.#localMtu - compressCost, message.mtu);
      if (mtu < MIN_LINK_MTU) {
        this.#state = "closed";
        return [this.#nak(message, NakReason.MTU_TOO_SMALL, `MTU ${mtu} is below ${MIN_LINK_MTU}`)];
      }
      this.#mode = message.mode;
      this.#peerNonce = message.initiatorNonce;
      this.#handshake = message.handshake;
      this.#agreedMtu = mtu;
      this.#fragmenting = this.#agreesToFragment(message);
      this.#compression = compressing;
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
      this.#handshake = message.handshake;
      if (state === "established") return [this.#ack("IRDY")];
      if (state === "acknowledged") return [this.#ack("IACK")];
      this.#state = "acknowledged";
      return [this.#ack("IACK"), { type: "timer", at: now + KEEPALIVE_INTERVAL_MS }];
    }
    if (message.mode !== this.#mode) {
      return [this.#nak(message, NakReason.MODE_MISMATCH, `circuit is in ${this.#mode} mode`)];
    }
    // A new initiator nonce: the peer restarted. Keep the device, take the new session.
    const mtu = Math.min(this.#localMtu - compressCost, message.mtu);
    if (mtu < MIN_LINK_MTU) {
      return [this.#nak(message, NakReason.MTU_TOO_SMALL, `MTU ${mtu} is below ${MIN_LINK_MTU}`)];
    }
    const actions: SessionAction[] = mtu === this.#agreedMtu ? [] : [{ type: "set-mtu", mtu }];
    this.#peerNonce = message.initiatorNonce;
    this.#peerSequence = 0n;
    this.#handshake = message.handshake;
    this.#agreedMtu = mtu;
    this.#fragmenting = this.#agreesToFragment(message);
    this.#compression = compressing;
    this.#state = "acknowledged";
    this.#lastHeard = now;
    return [...actions, this.#ack("IACK"), { type: "timer", at: now + KEEPALIVE_INTERVAL_MS }];
  }

  /** An IREQ to a keyed responder: a pending handshake, until the initiator proves it holds its keys. */
  #keyedIreq(message: Ireq, now: number): SessionAction[] {
    const state = this.#state;
    const pending = this.#pending;
    const sameHandshake = (nonce: Nonce, handshake: number, ephemeral: Uint8Array | undefined) =>
      message.initiatorNonce === nonce && message.handshake === (handshake & 0xff) &&
      ephemeral !== undefined && equalBytes(message.ephemeral, ephemeral);
    if (pending && sameHandshake(pending.initiatorNonce, pending.handshake, pending.initiatorEphemeral)) {
      // A fresh, signed retransmission (the replay guard let it through): the initiator is still there.
      if (!this.#current) this.#lastHeard = now;
      return [this.#sendAnswer(pending.answer, "IACK")];
    }
    if (
      this.#current && this.#currentAnswer &&
      sameHandshake(this.#peerNonce, this.#current.handshake, this.#currentInitiatorEphemeral)
    ) {
      return [this.#sendAnswer(this.#currentAnswer, state === "established" ? "IRDY" : "IACK")];
    }
    if (this.#current && message.mode !== this.#mode) {
      return [this.#nak(message, NakReason.MODE_MISMATCH, `circuit is in ${this.#mode} mode`)];
    }
    const cipher = this.#chooseCipher(message);
    if (cipher === undefined) {
      if (state === "idle") this.#state = "closed";
      return [
        this.#nak(
          message,
          NakReason.CIPHER_MISMATCH,
          `no offered cipher is allowed here (${this.#policy === "auto" ? "a cipher" : this.#policy} needed)`,
        ),
      ];
    }
    // An initiator's own link MTU with fragments: the responder's MTU is then a limit of its link (a
    // bridge's LAN), not of the path, and the seal costs it nothing.
    const linkMtu = this.#agreesToFragment(message) && (message.flags & IREQ_FLAG_LINK_MTU) !== 0;
    const sealCost = cipher === "clear" || linkMtu ? 0 : AEAD_OVERHEAD;
    const compressing = this.#agreesToCompress(message, cipher);
    const compressCost = linkMtu ? 0 : compressionOverhead(compressing);
    const mtu = Math.min(this.#localMtu - sealCost - compressCost, message.mtu);
    if (mtu < MIN_LINK_MTU) {
      if (state === "idle") this.#state = "closed";
      return [this.#nak(message, NakReason.MTU_TOO_SMALL, `MTU ${mtu} is below ${MIN_LINK_MTU}`)];
    }
    const own = this.#crypto.newEphemeral();
    const answer: Iack = {
      type: "IACK",
      vid: this.vid,
      responderNonce: this.#ownNonce,
      initiatorNonce: message.initiatorNonce,
      mtu,
      mode: message.mode,
      handshake: message.handshake,
      cipher,
      ephemeral: own.publicKey,
      ...answerFlags(this.#agreesToFragment(message), compressing),
    };
    const keys = this.#crypto.derive(this.#psk!, own, message.ephemeral, {
      vid: this.vid,
      handshake: message.handshake,
      cipher,
      mode: message.mode,
      initiatorNonce: message.initiatorNonce,
      responderNonce: this.#ownNonce,
      initiatorEphemeral: message.ephemeral,
      responderEphemeral: own.publicKey,
    });
    if (!keys) {
      if (state === "idle") this.#state = "closed";
      return [{ type: "drop", reason: "IREQ with an unusable key" }];
    }
    this.#pending = {
      initiatorNonce: message.initiatorNonce,
      handshake: message.handshake,
      initiatorEphemeral: message.ephemeral,
      epoch: { handshake: message.handshake, cipher, keys, since: now },
      mtu,
      mode: message.mode,
      plan: message.plan,
      answer,
    };
    this.#pendingSince = now;
    const actions: SessionAction[] = [];
    if (state === "idle") {
      this.#state = "acknowledged";
      this.#lastHeard = now;
      actions.push({ type: "timer", at: now + KEEPALIVE_INTERVAL_MS });
    } else {
      // Frames sealed with the pending keys may come before the proof does: open them too.
      actions.push(...this.#keysAction());
    }
    return [this.#sendAnswer(answer, "IACK"), ...actions];
  }

  /** The pending handshake is proven: it becomes the session (the first one creates the interface). */
  #promote(now: number): SessionAction[] {
    const pending = this.#pending!;
    this.#pending = undefined;
    const first = this.#current === undefined;
    const newPeer = pending.initiatorNonce !== this.#peerNonce;
    const previous = this.#current;
    this.#previous = previous && (previous.handshake & 1) !== (pending.handshake & 1) ? previous : undefined;
    this.#current = { ...pending.epoch, since: now };
    this.#currentAnswer = pending.answer;
    this.#fragmenting = ((pending.answer.flags ?? 0) & IACK_FLAG_FRAGMENTS) !== 0;
    this.#compression = compressionOf(pending.answer.flags ?? 0);
    this.#currentInitiatorEphemeral = pending.initiatorEphemeral;
    this.#handshake = pending.handshake;
    this.#peerNonce = pending.initiatorNonce;
    if (newPeer) this.#peerSequence = 0n;
    this.#mode = pending.mode;
    const wasLost = this.#state === "lost";
    const wasEstablished = this.#state === "established";
    this.#state = "established";
    this.#lastHeard = now;
    const actions: SessionAction[] = [];
    if (first) {
      this.#agreedMtu = pending.mtu;
      actions.push(
        { type: "create-device", mtu: pending.mtu, mode: pending.mode, plan: pending.plan },
        ...this.#keysAction(),
        { type: "forward", enabled: true },
      );
    } else {
      if (pending.mtu !== this.#agreedMtu) {
        this.#agreedMtu = pending.mtu;
        actions.push({ type: "set-mtu", mtu: pending.mtu });
      }
      this.#rotations++;
      actions.push(...this.#keysAction(), { type: "rotated", handshake: pending.handshake });
    }
    if (!wasEstablished) actions.push({ type: "established", mtu: this.#agreedMtu });
    if (wasLost) actions.push({ type: "timer", at: now + KEEPALIVE_INTERVAL_MS });
    return actions;
  }

  /** The responder's cipher for an IREQ: --cipher if offered, else AES-GCM where both have AES. */
  #chooseCipher(message: Ireq): CipherName | undefined {
    const offered = offeredCiphers(message.offers);
    if (this.#policy !== "auto") return offered.includes(this.#policy) ? this.#policy : undefined;
    const aes = offered.includes("aes-256-gcm");
    const chacha = offered.includes("chacha20-poly1305");
    if (aes && (!chacha || (this.#aesHardware && (message.flags & IREQ_FLAG_AES) !== 0))) {
      return "aes-256-gcm";
    }
    if (chacha) return "chacha20-poly1305";
    return offered.includes("clear") ? "clear" : undefined;
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
    if (this.#psk && !this.#current) {
      // A handshake nobody proved: no interface was made, nothing to keep.
      if (silent < DEAD_PEER_MS) return [{ type: "timer", at: now + KEEPALIVE_INTERVAL_MS }];
      this.#state = "closed";
      this.#pending = undefined;
      return [];
    }
    if (silent >= DEAD_PEER_MS) {
      this.#state = "lost";
      return [{ type: "dead-peer", silentMs: silent }, { type: "timer", at: now + RESPONDER_LINGER_MS }];
    }
    const actions: SessionAction[] = [];
    if (this.#pending && now - this.#pendingSince >= DEAD_PEER_MS) {
      this.#pending = undefined;
      actions.push(...this.#keysAction());
    }
    actions.push(...this.#retireKeys(now));
    const next: SessionAction = { type: "timer", at: now + KEEPALIVE_INTERVAL_MS };
    return state === "established" ? [this.#keepalive(now), ...actions, next] : [...actions, next];
  }

  #ack(type: "IACK" | "IRDY"): SessionAction {
    return this.#sendAnswer({
      type,
      vid: this.vid,
      responderNonce: this.#ownNonce,
      initiatorNonce: this.#peerNonce,
      mtu: this.#agreedMtu,
      mode: this.#mode,
      handshake: this.#handshake & 0xff,
      cipher: "clear",
      ephemeral: NO_EPHEMERAL,
      ...answerFlags(this.#fragmenting, this.#compression),
    }, type);
  }

  /** A responder that fragments agrees to an IREQ that says its sender does too. */
  #agreesToFragment(request: Ireq): boolean {
    return this.#fragments && (request.flags & IREQ_FLAG_FRAGMENTS) !== 0;
  }

  #sendAnswer(answer: Iack, type: "IACK" | "IRDY"): SessionAction {
    return { type: "send", sign: this.#psk, message: { ...answer, type } };
  }

  #nak(request: Ireq, reason: number, text: string): SessionAction {
    return {
      type: "send",
      sign: this.#psk,
      message: { type: "NAK", vid: this.vid, initiatorNonce: request.initiatorNonce, reason, text },
    };
  }

  // ---------------------------------------------------------------- both

  /** The previous keys, once past the overlap, are dropped. */
  #retireKeys(now: number): SessionAction[] {
    if (!this.#previous || !this.#current || now - this.#current.since < KEY_OVERLAP_MS) return [];
    this.#previous = undefined;
    return this.#keysAction();
  }

  /** The data keys for the datapath, when the circuit has a cipher. */
  #keysAction(): SessionAction[] {
    const current = this.#current;
    if (!current || current.cipher === "clear") return [];
    const cipher = current.cipher as AeadCipher;
    const initiator = this.role === "initiator";
    const sending = (e: KeyEpoch) =>
      initiator ? e.keys.dataInitiatorToResponder : e.keys.dataResponderToInitiator;
    const receiving = (e: KeyEpoch) =>
      initiator ? e.keys.dataResponderToInitiator : e.keys.dataInitiatorToResponder;
    const rx: KeyEpoch[] = [];
    const pending = this.#pending?.epoch;
    if (pending && pending.cipher !== "clear" && (pending.handshake & 1) !== (current.handshake & 1)) {
      rx.push(pending);
    }
    rx.push(current);
    if (rx.length < 2 && this.#previous && this.#previous.cipher !== "clear") rx.push(this.#previous);
    return [{
      type: "keys",
      cipher,
      keys: {
        tx: { epoch: current.handshake & 0xff, cipher, key: sending(current) },
        rx: rx.map((e) => ({ epoch: e.handshake & 0xff, cipher: e.cipher as AeadCipher, key: receiving(e) })),
      },
    }];
  }

  /** Whether a datagram carries the MAC of the peer's control key (current or previous); true without a key. */
  #signedByPeer(datagram: Uint8Array | undefined): boolean {
    if (!this.#psk) return true;
    if (!datagram) return false;
    const initiator = this.role === "initiator";
    for (const epoch of [this.#current, this.#previous]) {
      if (!epoch) continue;
      const key = initiator ? epoch.keys.controlResponderToInitiator : epoch.keys.controlInitiatorToResponder;
      if (verifyControl(key, datagram)) return true;
    }
    return false;
  }

  /** The key this side signs its session messages (KEEPALIVE, CREQ) with; none without a key. */
  #ownControlKey(): Uint8Array | undefined {
    const epoch = this.#current ?? this.#pending?.epoch;
    if (!this.#psk || !epoch) return undefined;
    return this.role === "initiator"
      ? epoch.keys.controlInitiatorToResponder
      : epoch.keys.controlResponderToInitiator;
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
      sign: this.#ownControlKey(),
      message: {
        type: "KEEPALIVE",
        vid: this.vid,
        senderNonce: this.#ownNonce,
        receiverNonce: this.#peerNonce,
        // Monotonic milliseconds, at least 1 so that it is never mistaken for "no echo".
        sentAt: BigInt(Math.max(1, Math.floor(now))),
        echo,
        sequence: ++this.#keepalivesSent,
      },
    };
  }

  /** A CREQ is ours when its sender is our peer's session and it names ours. */
  #ownsCreq(sender: Nonce, receiver: Nonce): boolean {
    return sender === this.#peerNonce && receiver === this.#ownNonce;
  }

  #close(): SessionAction[] {
    const wasLive = this.#state !== "idle";
    const actions: SessionAction[] = [];
    const sign = this.#ownControlKey();
    if (wasLive && this.#peerNonce !== 0n && (!this.#psk || sign)) {
      actions.push({
        type: "send",
        sign,
        message: { type: "CREQ", vid: this.vid, senderNonce: this.#ownNonce, receiverNonce: this.#peerNonce },
      });
    }
    actions.push({ type: "forward", enabled: false }, { type: "timer", at: undefined });
    if (this.role === "responder" && wasLive && (!this.#psk || this.#current)) {
      actions.push({ type: "remove-device" });
    }
    this.#state = "closed";
    this.#pending = undefined;
    this.#ephemeral = undefined;
    return actions;
  }
}

function describe(event: SessionEvent): string {
  return event.type === "received" ? event.message.type : event.type;
}

/** The flags of an IACK or IRDY (absent when none). */
function answerFlags(fragmenting: boolean, compression: Compression): { flags?: number } {
  const flags = (fragmenting ? IACK_FLAG_FRAGMENTS : 0) |
    (compression === "off" ? 0 : IACK_FLAG_COMPRESS) |
    (compression === "dictionary" ? IACK_FLAG_COMPRESS_DICTIONARY : 0);
  return flags === 0 ? {} : { flags };
}

/** The compression an IACK's flags agree on. */
function compressionOf(flags: number): Compression {
  if ((flags & IACK_FLAG_COMPRESS) === 0) return "off";
  return (flags & IACK_FLAG_COMPRESS_DICTIONARY) !== 0 ? "dictionary" : "lz4";
}

/** The bytes a frame's compression header takes at most, by mode. */
export function compressionOverhead(compression: Compression): number {
  return compression === "off"
    ? 0
    : compression === "dictionary"
    ? DICTIONARY_OVERHEAD
    : COMPRESSION_OVERHEAD;
}
