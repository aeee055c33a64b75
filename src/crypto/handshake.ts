/**
 * The key exchange of protocol v2 (docs/PROTOCOL.md section 9), modelled on Noise NNpsk0: each side
 * sends an ephemeral X25519 public key in its handshake message (IREQ, IACK), both compute the X25519
 * result, and HKDF-SHA-256 mixes it with the pre-shared key into four keys for this handshake alone: data
 * and control, one of each per direction. The ephemeral private keys are dropped once the keys are made,
 * so a key file that leaks later opens no recorded traffic (forward secrecy).
 *
 *   th   = SHA-256("VELA v2 handshake" || vid || handshake || cipher || mode || Ni || Nr || Ei || Er)
 *   okm  = HKDF-SHA-256(ikm = X25519(e, E'), salt = psk, info = "VELA v2 keys" || th, length = 128)
 *   keys = okm[0, 32) data i->r, [32, 64) data r->i, [64, 96) control i->r, [96, 128) control r->i
 *
 * Everything here is synchronous (node:crypto), as the session state machine that calls it is.
 */

import { Buffer } from "node:buffer";
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  randomBytes,
} from "node:crypto";
import { CipherCode, type CipherName, ModeCode, type Nonce } from "../wire.ts";
import type { LinkMode } from "../link/link_device.ts";

export const X25519_BYTES = 32;
export const SESSION_KEY_BYTES = 32;
const TRANSCRIPT_LABEL = new TextEncoder().encode("VELA v2 handshake");
const KEYS_LABEL = new TextEncoder().encode("VELA v2 keys");

/** One side's ephemeral key pair for one handshake. */
export interface Ephemeral {
  readonly publicKey: Uint8Array;
  readonly privateKey: Uint8Array;
}

/** What both sides bind into the keys: the two messages' fields that make this handshake. */
export interface HandshakeTranscript {
  readonly vid: number;
  readonly handshake: number;
  readonly cipher: CipherName;
  readonly mode: LinkMode;
  readonly initiatorNonce: Nonce;
  readonly responderNonce: Nonce;
  readonly initiatorEphemeral: Uint8Array;
  readonly responderEphemeral: Uint8Array;
}

/** The four keys of one handshake. */
export interface SessionKeys {
  readonly dataInitiatorToResponder: Uint8Array;
  readonly dataResponderToInitiator: Uint8Array;
  readonly controlInitiatorToResponder: Uint8Array;
  readonly controlResponderToInitiator: Uint8Array;
}

/** What a session needs to make keys; the daemon uses x25519Handshake, tests may give fixed ephemerals. */
export interface HandshakeCrypto {
  newEphemeral(): Ephemeral;
  /** The keys, or undefined when the peer's public key gives an all-zero X25519 result (a low-order point). */
  derive(psk: Uint8Array, own: Ephemeral, peerPublic: Uint8Array, transcript: HandshakeTranscript):
    | SessionKeys
    | undefined;
}

/** The ephemeral key pair whose private key is `privateKey` (32 bytes, clamped by X25519 itself). */
export function ephemeralFrom(privateKey: Uint8Array): Ephemeral {
  const key = createPrivateKey({
    key: { kty: "OKP", crv: "X25519", d: Buffer.from(privateKey).toString("base64url"), x: "" },
    format: "jwk",
  });
  const jwk = createPublicKey(key).export({ format: "jwk" }) as { x: string };
  return { publicKey: new Uint8Array(Buffer.from(jwk.x, "base64url")), privateKey: privateKey.slice() };
}

/** X25519(own private, peer public). */
export function x25519(privateKey: Uint8Array, peerPublic: Uint8Array): Uint8Array {
  const own = createPrivateKey({
    key: { kty: "OKP", crv: "X25519", d: Buffer.from(privateKey).toString("base64url"), x: "" },
    format: "jwk",
  });
  const peer = createPublicKey({
    key: { kty: "OKP", crv: "X25519", x: Buffer.from(peerPublic).toString("base64url") },
    format: "jwk",
  });
  return new Uint8Array(diffieHellman({ privateKey: own, publicKey: peer }));
}

/** th, the hash of the handshake's fields (see the top of this file). */
export function transcriptHash(t: HandshakeTranscript): Uint8Array {
  const fields = new Uint8Array(4 + 16 + 2 * X25519_BYTES);
  const view = new DataView(fields.buffer);
  fields[0] = t.vid;
  fields[1] = t.handshake & 0xff;
  fields[2] = CipherCode[t.cipher];
  fields[3] = ModeCode[t.mode];
  view.setBigUint64(4, t.initiatorNonce);
  view.setBigUint64(12, t.responderNonce);
  fields.set(t.initiatorEphemeral, 20);
  fields.set(t.responderEphemeral, 20 + X25519_BYTES);
  return new Uint8Array(createHash("sha256").update(TRANSCRIPT_LABEL).update(fields).digest());
}

/** The four keys from the X25519 result, the pre-shared key and the transcript. */
export function sessionKeys(
  shared: Uint8Array,
  psk: Uint8Array,
  transcript: HandshakeTranscript,
): SessionKeys {
  const info = new Uint8Array(KEYS_LABEL.length + 32);
  info.set(KEYS_LABEL);
  info.set(transcriptHash(transcript), KEYS_LABEL.length);
  const okm = new Uint8Array(hkdfSync("sha256", shared, psk, info, 4 * SESSION_KEY_BYTES));
  const part = (k: number) => okm.slice(k * SESSION_KEY_BYTES, (k + 1) * SESSION_KEY_BYTES);
  return {
    dataInitiatorToResponder: part(0),
    dataResponderToInitiator: part(1),
    controlInitiatorToResponder: part(2),
    controlResponderToInitiator: part(3),
  };
}

/** The real thing: random ephemerals, X25519 and HKDF. */
export const x25519Handshake: HandshakeCrypto = {
  newEphemeral: () => ephemeralFrom(new Uint8Array(randomBytes(X25519_BYTES))),
  derive(psk, own, peerPublic, transcript) {
    if (peerPublic.length !== X25519_BYTES) return undefined;
    let shared: Uint8Array;
    try {
      shared = x25519(own.privateKey, peerPublic);
    } catch {
      return undefined;
    }
    if (shared.every((byte) => byte === 0)) return undefined;
    return sessionKeys(shared, psk, transcript);
  },
};
