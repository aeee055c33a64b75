/**
 * Wire protocol v2 (docs/PROTOCOL.md is the byte-by-byte specification).
 *
 * Every datagram starts with one byte: 1..255 is data on circuit `vid` = that byte, followed by one
 * Ethernet frame (tap) or IP packet (tun), in clear, or sealed by the circuit's AEAD stage
 * (src/datapath/aead_stage.ts). 0 is a control message:
 *
 *   offset 0  u8   0 (control marker)
 *   offset 1  u8   VC code (NOP 0, IREQ 1, IACK 2, ICON 3, CREQ 4, KEEPALIVE 5, IRDY 6, NAK 7, PROBE 9,
 *                  PROBE_ACK 10, DACK 11; 8 starts a fragment, src/datapath/fragmentation.ts)
 *   offset 2  u8   protocol version, 2
 *   offset 3  u8   vid (0 only in NOP)
 *   offset 4  u16  body length, big endian
 *   offset 6  u8   flags: bit 0 = a 16-byte MAC follows the body; other bits 0
 *   offset 7  u8   reserved, 0
 *   offset 8  ...  body, then the MAC when flagged
 *
 * A PROBE is followed, after its MAC, by zero padding up to the size it names (a path MTU probe); the
 * datapath checks that size and hands up only the message (controlLength()).
 *
 * decode() never throws: a datagram it cannot accept comes back with a drop reason.
 */

import type { LinkMode } from "./link/link_device.ts";
import type { Family, IpPrefix } from "./ip.ts";

export const PROTOCOL_VERSION = 2;
/** The version before this one: its IREQs are answered with a v1 NAK that says to upgrade. */
export const OLD_PROTOCOL_VERSION = 1;
/** An X25519 public key. */
export const EPHEMERAL_LENGTH = 32;
export const CONTROL_MARKER = 0;
export const HEADER_LENGTH = 8;
export const MAC_LENGTH = 16;
export const FLAG_MAC = 0x01;
/** No valid control message is longer; a longer one is dropped as oversize. */
export const MAX_CONTROL_LENGTH = 512;
/** At most this many addresses travel in one IREQ's plan. */
export const MAX_PLAN_ADDRESSES = 4;
/** At most this many bytes of NAK text. */
export const MAX_NAK_TEXT = 200;
/**
 * How many of the `length` bytes at memory[at] to hand up as a control message: the cheap test the
 * datapath makes before it copies a control datagram up (decode() checks the rest). All of them for one of
 * a version this side answers and at most MAX_CONTROL_LENGTH bytes; for a PROBE whose length is the size
 * it names, the message without its padding; 0 for anything else. Reads at most the header and a PROBE's
 * size field; allocates nothing.
 */
export function controlLength(memory: Uint8Array, at: number, length: number): number {
  if (length < HEADER_LENGTH) return 0;
  const version = memory[at + 2];
  if (memory[at + 1] === VcCode.PROBE && version === PROTOCOL_VERSION) {
    const message = HEADER_LENGTH + PROBE_BODY + (memory[at + 6] === FLAG_MAC ? MAC_LENGTH : 0);
    if (length < message || memory[at + 4] !== 0 || memory[at + 5] !== PROBE_BODY) return 0;
    const named = memory[at + HEADER_LENGTH + PROBE_SIZE_AT] * 256 +
      memory[at + HEADER_LENGTH + PROBE_SIZE_AT + 1];
    return named === length ? message : 0;
  }
  if (length > MAX_CONTROL_LENGTH) return 0;
  return version === PROTOCOL_VERSION || version === OLD_PROTOCOL_VERSION ? length : 0;
}

/** The body of PROBE and PROBE_ACK: sender nonce, receiver nonce, probe id (u32), size (u16), 2 reserved. */
const PROBE_BODY = 24;
/** Where a PROBE's body names the whole datagram's size. */
const PROBE_SIZE_AT = 20;
/** The smallest PROBE: header, body and MAC. */
export const MIN_PROBE_SIZE = HEADER_LENGTH + PROBE_BODY + MAC_LENGTH;

/** The vid byte of a data datagram is followed by at least this much payload. */
export const MIN_DATA_PAYLOAD = 1;

export const VcCode = {
  NOP: 0,
  IREQ: 1,
  IACK: 2,
  ICON: 3,
  CREQ: 4,
  KEEPALIVE: 5,
  IRDY: 6,
  NAK: 7,
  PROBE: 9,
  PROBE_ACK: 10,
  DACK: 11,
} as const;
export type VcName = keyof typeof VcCode;
const VC_NAMES = Object.fromEntries(Object.entries(VcCode).map(([k, v]) => [v, k])) as Record<number, VcName>;

/** Mode byte in IREQ, IACK and IRDY. */
export const ModeCode = { tap: 1, tun: 2 } as const satisfies Record<LinkMode, number>;

/** Reason byte of a NAK. */
export const NakReason = {
  UNSPECIFIED: 0,
  NOT_ALLOWED: 1,
  VID_IN_USE: 2,
  MODE_MISMATCH: 3,
  BAD_PLAN: 4,
  DEVICE_FAILED: 5,
  BAD_KEY: 6,
  MTU_TOO_SMALL: 7,
  /** No cipher both ends accept (--cipher). */
  CIPHER_MISMATCH: 8,
  /** The peer speaks an older protocol version. */
  UPGRADE: 9,
  /** The listener holds as many circuits as it may, in all or for this source address. */
  CIRCUIT_LIMIT: 10,
} as const;

/** The data cipher of a circuit, as IREQ offers and IACK names it. */
export const CipherCode = { clear: 0, "aes-256-gcm": 1, "chacha20-poly1305": 2 } as const;
export type CipherName = keyof typeof CipherCode;
const CIPHER_NAMES = Object.fromEntries(Object.entries(CipherCode).map(([k, v]) => [v, k])) as Record<
  number,
  CipherName
>;
/** The IREQ offer bit of a cipher. */
export function offerBit(cipher: CipherName): number {
  return 1 << CipherCode[cipher];
}
/** The ciphers an offer bitmask names, in code order. */
export function offeredCiphers(offers: number): CipherName[] {
  return Object.values(CipherCode).filter((code) => offers & (1 << code)).map((code) => CIPHER_NAMES[code]);
}
/** IREQ flag: the initiator's CPU has AES instructions. */
export const IREQ_FLAG_AES = 0x01;
/** IREQ flag: the initiator fragments frames over the path and joins fragments (docs/PROTOCOL.md 2.6). */
export const IREQ_FLAG_FRAGMENTS = 0x02;
/**
 * IREQ flag, with IREQ_FLAG_FRAGMENTS: the proposed MTU is the link's own (--mtu, or a bridge's LAN), not
 * the path's; a responder that fragments takes it whatever its path, up to its own link limit.
 */
export const IREQ_FLAG_LINK_MTU = 0x04;
/** IACK/IRDY flag: the responder does too, so the circuit fragments (only sent to an IREQ with the flag). */
export const IACK_FLAG_FRAGMENTS = 0x01;
/** IREQ flag: the initiator asks for its tap to join a bridge of the listener's, named after the plan. */
export const IREQ_FLAG_BRIDGE = 0x08;
/** IREQ flag: the initiator offers the compression stage (docs/PROTOCOL.md 2.7). */
export const IREQ_FLAG_COMPRESS = 0x10;
/** IREQ flag, with IREQ_FLAG_COMPRESS: it offers the delayed-dictionary mode too (docs/PROTOCOL.md 2.8). */
export const IREQ_FLAG_COMPRESS_DICTIONARY = 0x20;
/** IACK/IRDY flag: the responder agrees, so every frame carries the compression code (only to an IREQ with the flag). */
export const IACK_FLAG_COMPRESS = 0x02;
/** IACK/IRDY flag, with IACK_FLAG_COMPRESS: in the delayed-dictionary mode (only to an IREQ that offered it). */
export const IACK_FLAG_COMPRESS_DICTIONARY = 0x04;
/**
 * The code byte in front of every frame of a compressing circuit (docs/PROTOCOL.md 2.7, 2.8): its kind
 * (RAW, LZ4, LZ4 against a dictionary, which an epoch byte follows) in the low bits, and SAMPLE: the frame
 * is also a piece of the next dictionary (its epoch and index byte follow).
 */
export const CompressionCode = { RAW: 0x00, LZ4: 0x01, DICTIONARY: 0x02, KIND: 0x03, SAMPLE: 0x80 } as const;
/** What a circuit's handshake agreed on of compression: none, LZ4 per frame, or delayed dictionaries too. */
export type Compression = "off" | "lz4" | "dictionary";
/** The bytes compression adds to a frame at most (the link MTU leaves room for them): stateless, dictionary. */
export const COMPRESSION_OVERHEAD = 1;
export const DICTIONARY_OVERHEAD = 4;
/** The longest bridge name an IREQ carries (a Linux interface name). */
export const MAX_BRIDGE_NAME = 15;

/** Whether `name` can be a Linux interface name: 1 to 15 printable ASCII bytes, no '/', ':' or space. */
export function validBridgeName(name: string): boolean {
  return /^[\x21-\x7e]{1,15}$/.test(name) && !/[/:]/.test(name);
}

export type Nonce = bigint;

export interface Nop {
  type: "NOP";
  vid: number;
}
export interface Ireq {
  type: "IREQ";
  vid: number;
  initiatorNonce: Nonce;
  /** Milliseconds since the Unix epoch at sending. */
  timestamp: bigint;
  mode: LinkMode;
  mtu: number;
  /** Which handshake of this initiator session this is (0, 1, ... mod 256): the key epoch it makes. */
  handshake: number;
  /** Bitmask of the data ciphers offered (offerBit). */
  offers: number;
  /** IREQ_FLAG_AES and future flags. */
  flags: number;
  /** The initiator's X25519 ephemeral public key; all zero without a pre-shared key. */
  ephemeral: Uint8Array;
  /** The addresses the responder's interface takes. */
  plan: IpPrefix[];
  /** The listener's bridge the initiator asks its tap to join (IREQ_FLAG_BRIDGE); absent: none asked. */
  bridge?: string;
}
export interface Iack {
  type: "IACK" | "IRDY";
  vid: number;
  responderNonce: Nonce;
  initiatorNonce: Nonce;
  mtu: number;
  mode: LinkMode;
  /** The handshake of the IREQ answered. */
  handshake: number;
  /** The data cipher the responder chose. */
  cipher: CipherName;
  /** The responder's X25519 ephemeral public key; all zero without a pre-shared key. */
  ephemeral: Uint8Array;
  /** IACK_FLAG_FRAGMENTS, IACK_FLAG_COMPRESS; absent: 0. */
  flags?: number;
}
export interface Icon {
  type: "ICON";
  vid: number;
  initiatorNonce: Nonce;
  responderNonce: Nonce;
  /** The handshake confirmed (with a key, the MAC is made with its initiator's control key). */
  handshake: number;
}
export interface Creq {
  type: "CREQ";
  vid: number;
  senderNonce: Nonce;
  receiverNonce: Nonce;
}
export interface Keepalive {
  type: "KEEPALIVE";
  vid: number;
  senderNonce: Nonce;
  receiverNonce: Nonce;
  sentAt: bigint;
  echo: bigint;
  /** Counts the sender's KEEPALIVEs in this session from 1; a receiver takes each number once, rising. */
  sequence: bigint;
}
/**
 * A path MTU probe (PROBE, padded to `size` bytes on the wire) or its answer (PROBE_ACK, which names the
 * size that arrived). Signed like KEEPALIVE.
 */
export interface Probe {
  type: "PROBE" | "PROBE_ACK";
  vid: number;
  senderNonce: Nonce;
  receiverNonce: Nonce;
  id: number;
  size: number;
}
export interface Nak {
  type: "NAK";
  vid: number;
  initiatorNonce: Nonce;
  reason: number;
  text: string;
}
/**
 * A compression dictionary's acknowledgment (docs/PROTOCOL.md 2.8): the sender holds the dictionary of
 * epoch `epoch` of the frames it receives, whose SHA-256 begins with `hash` (8 bytes), and the other side
 * may compress against it. Signed like KEEPALIVE.
 */
export interface Dack {
  type: "DACK";
  vid: number;
  senderNonce: Nonce;
  receiverNonce: Nonce;
  epoch: number;
  hash: bigint;
}
export type ControlMessage = Nop | Ireq | Iack | Icon | Creq | Keepalive | Probe | Nak | Dack;

export type DropReason =
  | "empty"
  | "truncated"
  | "oversize"
  | "bad-version"
  | "unknown-code"
  | "bad-length"
  | "bad-field";

export type Decoded =
  | { ok: true; message: ControlMessage; mac?: Uint8Array }
  | { ok: false; reason: DropReason; detail: string };

/** Body lengths of the fixed-size messages; IREQ adds its plan, NAK its text, NOP may carry padding. */
const FIXED_BODY: Record<Exclude<VcName, "NOP">, number> = {
  IREQ: 56,
  IACK: 56,
  IRDY: 56,
  ICON: 24,
  CREQ: 16,
  KEEPALIVE: 40,
  NAK: 10,
  PROBE: PROBE_BODY,
  PROBE_ACK: PROBE_BODY,
  DACK: 32,
};

/** What the first byte says a datagram is. */
export function datagramKind(datagram: Uint8Array): "control" | "data" | "empty" {
  if (datagram.length === 0) return "empty";
  return datagram[0] === CONTROL_MARKER ? "control" : "data";
}

function modeFrom(byte: number): LinkMode | undefined {
  return byte === ModeCode.tap ? "tap" : byte === ModeCode.tun ? "tun" : undefined;
}

function fail(reason: DropReason, detail: string): Decoded {
  return { ok: false, reason, detail };
}

/** Decodes a control datagram (first byte 0). Never throws. */
export function decode(datagram: Uint8Array): Decoded {
  if (datagram.length === 0) return fail("empty", "empty datagram");
  if (datagram[0] !== CONTROL_MARKER) return fail("bad-field", "not a control datagram");
  if (datagram.length > MAX_CONTROL_LENGTH) {
    return fail("oversize", `${datagram.length} bytes is over ${MAX_CONTROL_LENGTH}`);
  }
  if (datagram.length < HEADER_LENGTH) return fail("truncated", `${datagram.length}-byte header`);
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  const code = datagram[1];
  const name = VC_NAMES[code];
  if (datagram[2] !== PROTOCOL_VERSION) return fail("bad-version", `version ${datagram[2]}`);
  if (name === undefined) return fail("unknown-code", `VC code ${code}`);
  const vid = datagram[3];
  const bodyLength = view.getUint16(4);
  const flags = datagram[6];
  if ((flags & ~FLAG_MAC) !== 0 || datagram[7] !== 0) return fail("bad-field", "reserved header bits set");
  const macLength = flags & FLAG_MAC ? MAC_LENGTH : 0;
  const expected = HEADER_LENGTH + bodyLength + macLength;
  if (datagram.length < expected) return fail("truncated", `${datagram.length} of ${expected} bytes`);
  if (datagram.length > expected) {
    return fail("bad-length", `${datagram.length - expected} bytes past the end`);
  }
  if (name !== "NOP" && vid === 0) return fail("bad-field", `${name} for vid 0`);
  const body = new DataView(datagram.buffer, datagram.byteOffset + HEADER_LENGTH, bodyLength);
  const mac = macLength ? datagram.slice(HEADER_LENGTH + bodyLength) : undefined;
  if (name !== "NOP" && bodyLength < FIXED_BODY[name]) {
    return fail("truncated", `${name} body of ${bodyLength} bytes, needs ${FIXED_BODY[name]}`);
  }
  const result = decodeBody(name, vid, body);
  if (typeof result === "string") {
    return fail(result.startsWith("truncated") ? "truncated" : "bad-field", result);
  }
  return mac ? { ok: true, message: result, mac } : { ok: true, message: result };
}

/** The message, or a string saying what is wrong with the body. */
function decodeBody(name: VcName, vid: number, body: DataView): ControlMessage | string {
  const exact = (n: number) =>
    body.byteLength === n ? undefined : `${name} body of ${body.byteLength} bytes, not ${n}`;
  switch (name) {
    case "NOP":
      return { type: "NOP", vid };
    case "IREQ": {
      const mode = modeFrom(body.getUint8(16));
      if (!mode) return `IREQ mode ${body.getUint8(16)}`;
      const count = body.getUint8(17);
      if (count > MAX_PLAN_ADDRESSES) return `IREQ plan of ${count} addresses`;
      if (body.getUint8(23) !== 0) return "IREQ reserved byte set";
      const plan: IpPrefix[] = [];
      let at = FIXED_BODY.IREQ;
      for (let i = 0; i < count; i++) {
        if (at + 2 > body.byteLength) return "truncated IREQ plan";
        const family = body.getUint8(at);
        if (family !== 4 && family !== 6) return `IREQ plan address family ${family}`;
        const size = family === 4 ? 4 : 16;
        const prefixLength = body.getUint8(at + 1);
        if (prefixLength > size * 8) return `IREQ plan prefix length ${prefixLength}`;
        if (at + 2 + size > body.byteLength) return "truncated IREQ plan";
        const bytes = new Uint8Array(body.buffer, body.byteOffset + at + 2, size).slice();
        plan.push({ family: family as Family, bytes, prefixLength });
        at += 2 + size;
      }
      let bridge: string | undefined;
      if (body.getUint8(22) & IREQ_FLAG_BRIDGE) {
        if (at + 1 > body.byteLength) return "truncated IREQ bridge name";
        const length = body.getUint8(at);
        if (at + 1 + length > body.byteLength) return "truncated IREQ bridge name";
        bridge = String.fromCharCode(...new Uint8Array(body.buffer, body.byteOffset + at + 1, length));
        if (!validBridgeName(bridge)) return "IREQ bridge name is not an interface name";
        at += 1 + length;
      }
      if (at !== body.byteLength) return `IREQ body has ${body.byteLength - at} bytes past its plan`;
      return {
        type: "IREQ",
        vid,
        initiatorNonce: body.getBigUint64(0),
        timestamp: body.getBigUint64(8),
        mode,
        mtu: body.getUint16(18),
        handshake: body.getUint8(20),
        offers: body.getUint8(21),
        flags: body.getUint8(22),
        ephemeral: bytesAt(body, 24, EPHEMERAL_LENGTH),
        plan,
        ...(bridge === undefined ? {} : { bridge }),
      };
    }
    case "IACK":
    case "IRDY": {
      const wrong = exact(FIXED_BODY[name]);
      if (wrong) return wrong;
      const mode = modeFrom(body.getUint8(18));
      if (!mode) return `${name} mode ${body.getUint8(18)}`;
      const cipher = CIPHER_NAMES[body.getUint8(20)];
      if (cipher === undefined) return `${name} cipher ${body.getUint8(20)}`;
      const flags = body.getUint8(21);
      const known = IACK_FLAG_FRAGMENTS | IACK_FLAG_COMPRESS | IACK_FLAG_COMPRESS_DICTIONARY;
      if ((flags & ~known) !== 0 || body.getUint16(22) !== 0) {
        return `${name} reserved bytes set`;
      }
      const iack: Iack = {
        type: name,
        vid,
        responderNonce: body.getBigUint64(0),
        initiatorNonce: body.getBigUint64(8),
        mtu: body.getUint16(16),
        mode,
        handshake: body.getUint8(19),
        cipher,
        ephemeral: bytesAt(body, 24, EPHEMERAL_LENGTH),
      };
      if (flags !== 0) iack.flags = flags;
      return iack;
    }
    case "ICON": {
      const wrong = exact(FIXED_BODY.ICON);
      if (wrong) return wrong;
      if (body.getUint8(17) !== 0 || body.getUint16(18) !== 0 || body.getUint32(20) !== 0) {
        return "ICON reserved bytes set";
      }
      return {
        type: "ICON",
        vid,
        initiatorNonce: body.getBigUint64(0),
        responderNonce: body.getBigUint64(8),
        handshake: body.getUint8(16),
      };
    }
    case "CREQ":
      return exact(16) ??
        { type: "CREQ", vid, senderNonce: body.getBigUint64(0), receiverNonce: body.getBigUint64(8) };
    case "KEEPALIVE":
      return exact(FIXED_BODY.KEEPALIVE) ?? {
        type: "KEEPALIVE",
        vid,
        senderNonce: body.getBigUint64(0),
        receiverNonce: body.getBigUint64(8),
        sentAt: body.getBigUint64(16),
        echo: body.getBigUint64(24),
        sequence: body.getBigUint64(32),
      };
    case "DACK": {
      const wrong = exact(FIXED_BODY.DACK);
      if (wrong) return wrong;
      if (body.getUint8(16) === 0) return "DACK epoch 0";
      for (let i = 17; i < 24; i++) if (body.getUint8(i) !== 0) return "DACK reserved bytes set";
      return {
        type: "DACK",
        vid,
        senderNonce: body.getBigUint64(0),
        receiverNonce: body.getBigUint64(8),
        epoch: body.getUint8(16),
        hash: body.getBigUint64(24),
      };
    }
    case "PROBE":
    case "PROBE_ACK": {
      const wrong = exact(PROBE_BODY);
      if (wrong) return wrong;
      if (body.getUint16(22) !== 0) return `${name} reserved bytes set`;
      return {
        type: name,
        vid,
        senderNonce: body.getBigUint64(0),
        receiverNonce: body.getBigUint64(8),
        id: body.getUint32(16),
        size: body.getUint16(PROBE_SIZE_AT),
      };
    }
    case "NAK": {
      const textLength = body.getUint8(9);
      if (textLength > MAX_NAK_TEXT) return `NAK text of ${textLength} bytes`;
      const wrong = exact(FIXED_BODY.NAK + textLength);
      if (wrong) return wrong;
      const raw = new Uint8Array(body.buffer, body.byteOffset + 10, textLength);
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
      } catch {
        return "NAK text is not UTF-8";
      }
      return { type: "NAK", vid, initiatorNonce: body.getBigUint64(0), reason: body.getUint8(8), text };
    }
  }
}

/** A copy of `length` body bytes at `at`. */
function bytesAt(body: DataView, at: number, length: number): Uint8Array {
  return new Uint8Array(body.buffer, body.byteOffset + at, length).slice();
}

function ephemeralOf(message: Ireq | Iack): Uint8Array {
  if (message.ephemeral.length !== EPHEMERAL_LENGTH) {
    throw new RangeError(`${message.type} ephemeral key of ${message.ephemeral.length} bytes`);
  }
  return message.ephemeral;
}

function bodyLength(message: ControlMessage): number {
  switch (message.type) {
    case "NOP":
      return 0;
    case "IREQ":
      return FIXED_BODY.IREQ + message.plan.reduce((sum, p) => sum + 2 + p.bytes.length, 0) +
        (message.bridge === undefined ? 0 : 1 + message.bridge.length);
    case "NAK":
      return FIXED_BODY.NAK + nakText(message.text).length;
    default:
      return FIXED_BODY[message.type];
  }
}

/** NAK text as UTF-8, cut to MAX_NAK_TEXT bytes on a character boundary. */
function nakText(text: string): Uint8Array {
  const characters = Array.from(text);
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > MAX_NAK_TEXT) {
    characters.pop();
    bytes = new TextEncoder().encode(characters.join(""));
  }
  return bytes;
}

/**
 * Encodes a control message. With `macLength` the MAC flag is set and that many zero bytes are left at
 * the end for the caller to fill. Throws a RangeError on a field out of range (a bug, not input).
 */
export function encode(message: ControlMessage, macLength = 0): Uint8Array<ArrayBuffer> {
  if (message.vid < 0 || message.vid > 255 || (message.type !== "NOP" && message.vid === 0)) {
    throw new RangeError(`vid ${message.vid} out of range for ${message.type}`);
  }
  const length = bodyLength(message);
  const out = new Uint8Array(HEADER_LENGTH + length + macLength);
  const view = new DataView(out.buffer);
  out[0] = CONTROL_MARKER;
  out[1] = VcCode[message.type];
  out[2] = PROTOCOL_VERSION;
  out[3] = message.vid;
  view.setUint16(4, length);
  out[6] = macLength ? FLAG_MAC : 0;
  const at = HEADER_LENGTH;
  switch (message.type) {
    case "NOP":
      break;
    case "IREQ": {
      if (message.plan.length > MAX_PLAN_ADDRESSES) throw new RangeError("Too many plan addresses");
      view.setBigUint64(at, message.initiatorNonce);
      view.setBigUint64(at + 8, message.timestamp);
      out[at + 16] = ModeCode[message.mode];
      out[at + 17] = message.plan.length;
      view.setUint16(at + 18, message.mtu);
      out[at + 20] = message.handshake & 0xff;
      out[at + 21] = message.offers;
      out[at + 22] = message.flags & ~IREQ_FLAG_BRIDGE;
      out.set(ephemeralOf(message), at + 24);
      let p = at + FIXED_BODY.IREQ;
      for (const prefix of message.plan) {
        out[p] = prefix.family;
        out[p + 1] = prefix.prefixLength;
        out.set(prefix.bytes, p + 2);
        p += 2 + prefix.bytes.length;
      }
      if (message.bridge !== undefined) {
        if (!validBridgeName(message.bridge)) throw new RangeError(`Bridge name "${message.bridge}"`);
        out[at + 22] |= IREQ_FLAG_BRIDGE;
        out[p] = message.bridge.length;
        for (let i = 0; i < message.bridge.length; i++) out[p + 1 + i] = message.bridge.charCodeAt(i);
      }
      break;
    }
    case "IACK":
    case "IRDY":
      view.setBigUint64(at, message.responderNonce);
      view.setBigUint64(at + 8, message.initiatorNonce);
      view.setUint16(at + 16, message.mtu);
      out[at + 18] = ModeCode[message.mode];
      out[at + 19] = message.handshake & 0xff;
      out[at + 20] = CipherCode[message.cipher];
      out[at + 21] = message.flags ?? 0;
      out.set(ephemeralOf(message), at + 24);
      break;
    case "ICON":
      view.setBigUint64(at, message.initiatorNonce);
      view.setBigUint64(at + 8, message.responderNonce);
      out[at + 16] = message.handshake & 0xff;
      break;
    case "CREQ":
      view.setBigUint64(at, message.senderNonce);
      view.setBigUint64(at + 8, message.receiverNonce);
      break;
    case "KEEPALIVE":
      view.setBigUint64(at, message.senderNonce);
      view.setBigUint64(at + 8, message.receiverNonce);
      view.setBigUint64(at + 16, message.sentAt);
      view.setBigUint64(at + 24, message.echo);
      view.setBigUint64(at + 32, message.sequence);
      break;
    case "DACK":
      view.setBigUint64(at, message.senderNonce);
      view.setBigUint64(at + 8, message.receiverNonce);
      out[at + 16] = message.epoch;
      view.setBigUint64(at + 24, message.hash);
      break;
    case "PROBE":
    case "PROBE_ACK":
      view.setBigUint64(at, message.senderNonce);
      view.setBigUint64(at + 8, message.receiverNonce);
      view.setUint32(at + 16, message.id);
      view.setUint16(at + PROBE_SIZE_AT, message.size);
      break;
    case "NAK": {
      const text = nakText(message.text);
      view.setBigUint64(at, message.initiatorNonce);
      out[at + 8] = message.reason;
      out[at + 9] = text.length;
      out.set(text, at + 10);
      break;
    }
  }
  return out;
}

/** A fresh random 64-bit session nonce, never 0 (0 means "not known yet" in CREQ). */
export function newNonce(): Nonce {
  const bytes = new BigUint64Array(1);
  do crypto.getRandomValues(bytes); while (bytes[0] === 0n);
  return bytes[0];
}

/**
 * A protocol v1 IREQ, told apart by its version byte: the vid and initiator nonce that a v1 NAK needs, or
 * undefined for anything else. Never throws.
 */
export function oldIreq(datagram: Uint8Array): { vid: number; initiatorNonce: Nonce } | undefined {
  if (datagram.length < HEADER_LENGTH + 24 || datagram.length > MAX_CONTROL_LENGTH) return undefined;
  if (datagram[0] !== CONTROL_MARKER || datagram[1] !== VcCode.IREQ) return undefined;
  if (datagram[2] !== OLD_PROTOCOL_VERSION || datagram[3] === 0) return undefined;
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  return { vid: datagram[3], initiatorNonce: view.getBigUint64(HEADER_LENGTH) };
}

/**
 * A NAK in protocol v1's format (the same header and NAK body, version 1), so that a v1 initiator logs its
 * text: the way to tell it to upgrade. With `macLength` the flag is set and room left, as encode() does.
 */
export function encodeOldNak(
  vid: number,
  initiatorNonce: Nonce,
  text: string,
  macLength = 0,
): Uint8Array<ArrayBuffer> {
  const datagram = encode(
    { type: "NAK", vid, initiatorNonce, reason: NakReason.UNSPECIFIED, text },
    macLength,
  );
  datagram[2] = OLD_PROTOCOL_VERSION;
  return datagram;
}
