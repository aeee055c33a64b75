import assert from "node:assert/strict";
import { parseCidr } from "../src/ip.ts";
import {
  CipherCode,
  type CipherName,
  controlLength,
  type ControlMessage,
  datagramKind,
  decode,
  type Decoded,
  type DropReason,
  encode,
  encodeOldNak,
  EPHEMERAL_LENGTH,
  HEADER_LENGTH,
  type Iack,
  IACK_FLAG_FRAGMENTS,
  type Ireq,
  IREQ_FLAG_AES,
  IREQ_FLAG_BRIDGE,
  MAC_LENGTH,
  MAX_CONTROL_LENGTH,
  MAX_NAK_TEXT,
  MIN_PROBE_SIZE,
  NakReason,
  newNonce,
  offerBit,
  offeredCiphers,
  OLD_PROTOCOL_VERSION,
  oldIreq,
  type Probe,
  PROTOCOL_VERSION,
} from "../src/wire.ts";
import { seededRandom } from "../testbed/seeded_random.ts";

const DROP_REASONS: ReadonlySet<DropReason> = new Set<DropReason>([
  "empty",
  "truncated",
  "oversize",
  "bad-version",
  "unknown-code",
  "bad-length",
  "bad-field",
]);

const V4 = parseCidr("198.18.207.1/30")!;
const V6 = parseCidr("fd00:1::1/126")!;

/** A 32-byte stand-in for an X25519 public key: `first`, first + 1, ... */
function key32(first: number): Uint8Array {
  return Uint8Array.from({ length: EPHEMERAL_LENGTH }, (_, i) => (first + i) & 0xff);
}
const NO_KEY = new Uint8Array(EPHEMERAL_LENGTH);

const SAMPLES: ControlMessage[] = [
  { type: "NOP", vid: 0 },
  {
    type: "IREQ",
    vid: 3,
    initiatorNonce: 0x0102030405060708n,
    timestamp: 1_700_000_000_123n,
    mode: "tap",
    mtu: 1400,
    handshake: 7,
    offers: offerBit("aes-256-gcm") | offerBit("chacha20-poly1305"),
    flags: IREQ_FLAG_AES,
    ephemeral: key32(0x40),
    plan: [V4, V6],
  },
  {
    type: "IACK",
    vid: 3,
    responderNonce: 0xfedcba9876543210n,
    initiatorNonce: 0x0102030405060708n,
    mtu: 1400,
    mode: "tap",
    handshake: 7,
    cipher: "aes-256-gcm",
    ephemeral: key32(0x80),
  },
  {
    type: "IRDY",
    vid: 4,
    responderNonce: 77n,
    initiatorNonce: 88n,
    mtu: 9000,
    mode: "tun",
    handshake: 0,
    cipher: "clear",
    ephemeral: NO_KEY,
  },
  { type: "ICON", vid: 5, initiatorNonce: 1n, responderNonce: 2n, handshake: 200 },
  { type: "CREQ", vid: 6, senderNonce: 3n, receiverNonce: 4n },
  { type: "KEEPALIVE", vid: 7, senderNonce: 5n, receiverNonce: 6n, sentAt: 1000n, echo: 999n, sequence: 3n },
  { type: "NAK", vid: 8, initiatorNonce: 9n, reason: NakReason.VID_IN_USE, text: "vid 8 is in use" },
];

function decodeOk(datagram: Uint8Array): { message: ControlMessage; mac?: Uint8Array } {
  const decoded = decode(datagram);
  assert.ok(decoded.ok, `expected ok, got ${decoded.ok ? "" : `${decoded.reason}: ${decoded.detail}`}`);
  return decoded;
}

function assertDrop(decoded: Decoded, reason: DropReason): void {
  assert.equal(decoded.ok, false, "expected a drop");
  if (!decoded.ok) {
    assert.equal(decoded.reason, reason, decoded.detail);
    assert.equal(typeof decoded.detail, "string");
    assert.ok(decoded.detail.length > 0);
  }
}

function roundTrip(message: ControlMessage): ControlMessage {
  const datagram = encode(message);
  const { message: decoded, mac } = decodeOk(datagram);
  assert.equal(mac, undefined);
  return decoded;
}

/** An IREQ with `plan`, for the plan tests. */
function ireq(plan = [V4]): Ireq {
  return {
    type: "IREQ",
    vid: 9,
    initiatorNonce: 42n,
    timestamp: 1234n,
    mode: "tun",
    mtu: 1500,
    handshake: 0,
    offers: offerBit("clear"),
    flags: 0,
    ephemeral: NO_KEY,
    plan,
  };
}

/** The encoding of `message` with its body-length field set to the body actually present. */
function withBodyLength(datagram: Uint8Array): Uint8Array {
  new DataView(datagram.buffer, datagram.byteOffset).setUint16(4, datagram.length - HEADER_LENGTH);
  return datagram;
}

/** A NAK datagram whose text bytes are `text` verbatim (encode() would cut or re-encode them). */
function rawNak(text: Uint8Array, lengthByte = text.length): Uint8Array {
  const out = encode({ type: "NAK", vid: 1, initiatorNonce: 1n, reason: 0, text: "" });
  const full = new Uint8Array(out.length + text.length);
  full.set(out);
  full.set(text, out.length);
  full[HEADER_LENGTH + 9] = lengthByte;
  return withBodyLength(full);
}

// --- round trips ---------------------------------------------------------------------------------

Deno.test("encode() lays out the 8-byte control header", () => {
  const datagram = encode(SAMPLES[4]);
  assert.deepEqual(Array.from(datagram.subarray(0, HEADER_LENGTH)), [0, 3, 2, 5, 0, 24, 0, 0]);
  assert.equal(datagram.length, HEADER_LENGTH + 24);
  assert.equal(PROTOCOL_VERSION, 2);
  assert.equal(OLD_PROTOCOL_VERSION, 1);
});

Deno.test("the fixed bodies are 56 (IREQ, IACK, IRDY), 24 (ICON), 16 (CREQ), 40 (KEEPALIVE) and 10 (NAK) bytes", () => {
  const expected: Record<string, number> = {
    IREQ: 56,
    IACK: 56,
    IRDY: 56,
    ICON: 24,
    CREQ: 16,
    KEEPALIVE: 40,
    NAK: 10,
  };
  for (const message of [ireq([]), ...SAMPLES.filter((m) => m.type !== "NOP" && m.type !== "IREQ")]) {
    const length = message.type === "NAK"
      ? expected.NAK + new TextEncoder().encode(message.text).length
      : expected[message.type];
    const datagram = encode(message);
    assert.equal(datagram.length, HEADER_LENGTH + length, message.type);
    assert.equal(new DataView(datagram.buffer).getUint16(4), length, message.type);
  }
});

Deno.test("a NOP round-trips, with vid 0 or a circuit's vid", () => {
  assert.deepEqual(roundTrip({ type: "NOP", vid: 0 }), { type: "NOP", vid: 0 });
  assert.deepEqual(roundTrip({ type: "NOP", vid: 200 }), { type: "NOP", vid: 200 });
  assert.equal(encode({ type: "NOP", vid: 0 }).length, HEADER_LENGTH);
});

Deno.test("decode() accepts a NOP with padding in its body", () => {
  const datagram = withBodyLength(new Uint8Array([0, 0, 2, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc]));
  assert.deepEqual(decodeOk(datagram).message, { type: "NOP", vid: 0 });
});

Deno.test("an IREQ with an empty plan round-trips", () => {
  const message = ireq([]);
  assert.equal(encode(message).length, HEADER_LENGTH + 56);
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("an IREQ with one IPv4 plan address round-trips", () => {
  const message = ireq([V4]);
  assert.equal(encode(message).length, HEADER_LENGTH + 56 + 2 + 4);
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("an IREQ with one IPv6 plan address round-trips", () => {
  const message = ireq([V6]);
  assert.equal(encode(message).length, HEADER_LENGTH + 56 + 2 + 16);
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("an IREQ with an IPv4 and an IPv6 plan address round-trips, in order", () => {
  const message = ireq([V4, V6]);
  assert.deepEqual(roundTrip(message), message);
  const swapped = ireq([V6, V4]);
  assert.deepEqual(roundTrip(swapped), swapped);
});

Deno.test("an IREQ keeps all 64 bits of its nonce and timestamp, and both modes", () => {
  for (const mode of ["tap", "tun"] as const) {
    const message: ControlMessage = {
      type: "IREQ",
      vid: 255,
      initiatorNonce: 0xffffffffffffffffn,
      timestamp: 0x8000000000000001n,
      mode,
      mtu: 65535,
      handshake: 255,
      offers: 0xff,
      flags: 0xff & ~IREQ_FLAG_BRIDGE,
      ephemeral: new Uint8Array(EPHEMERAL_LENGTH).fill(0xff),
      plan: [],
    };
    assert.deepEqual(roundTrip(message), message);
  }
});

Deno.test("an IREQ carries its handshake, offers, flags and ephemeral key", () => {
  const message: Ireq = {
    ...ireq([V4]),
    handshake: 0x2a,
    offers: offerBit("clear") | offerBit("chacha20-poly1305"),
    flags: IREQ_FLAG_AES,
    ephemeral: key32(0xe0),
  };
  const datagram = encode(message);
  const body = datagram.subarray(HEADER_LENGTH);
  assert.equal(body[20], 0x2a, "handshake at body offset 20");
  assert.equal(body[21], 0b101, "offers at body offset 21");
  assert.equal(body[22], 0x01, "flags at body offset 22");
  assert.equal(body[23], 0, "reserved byte at body offset 23");
  assert.deepEqual(Array.from(body.subarray(24, 56)), Array.from(key32(0xe0)), "ephemeral at body offset 24");
  assert.equal(body[56], 4, "the plan starts at body offset 56");
  const decoded = roundTrip(message);
  assert.deepEqual(decoded, message);
  assert.ok(decoded.type === "IREQ");
  assert.deepEqual(offeredCiphers(decoded.offers), ["clear", "chacha20-poly1305"]);
  // The decoded ephemeral is a copy, not a view into the datagram.
  datagram[HEADER_LENGTH + 24] ^= 0xff;
  assert.equal(decoded.ephemeral[0], 0xe0);
});

Deno.test("encode() writes the handshake number mod 256", () => {
  const decoded = roundTrip({ ...ireq([]), handshake: 256 + 5 });
  assert.ok(decoded.type === "IREQ");
  assert.equal(decoded.handshake, 5);
  const ack = roundTrip({ ...(SAMPLES[2] as Iack), handshake: 511 });
  assert.ok(ack.type === "IACK");
  assert.equal(ack.handshake, 255);
  const icon = roundTrip({ type: "ICON", vid: 1, initiatorNonce: 1n, responderNonce: 2n, handshake: 256 });
  assert.ok(icon.type === "ICON");
  assert.equal(icon.handshake, 0);
});

Deno.test("an IACK carries its handshake, cipher and ephemeral key at body offsets 19, 20 and 24", () => {
  for (const cipher of Object.keys(CipherCode) as CipherName[]) {
    const message: Iack = { ...(SAMPLES[2] as Iack), cipher };
    const body = encode(message).subarray(HEADER_LENGTH);
    assert.equal(body[18], 1, "mode tap");
    assert.equal(body[19], 7, "handshake");
    assert.equal(body[20], CipherCode[cipher], cipher);
    assert.deepEqual(Array.from(body.subarray(21, 24)), [0, 0, 0], "reserved");
    assert.deepEqual(Array.from(body.subarray(24)), Array.from(key32(0x80)));
    assert.deepEqual(roundTrip(message), message);
  }
});

Deno.test("encode() throws a RangeError for an ephemeral key that is not 32 bytes", () => {
  for (const length of [0, 31, 33]) {
    assert.throws(() => encode({ ...ireq([]), ephemeral: new Uint8Array(length) }), RangeError);
    assert.throws(
      () => encode({ ...(SAMPLES[2] as Iack), ephemeral: new Uint8Array(length) }),
      RangeError,
    );
  }
});

Deno.test("offerBit() and offeredCiphers() round-trip every set of ciphers, in code order", () => {
  assert.deepEqual(CipherCode, { clear: 0, "aes-256-gcm": 1, "chacha20-poly1305": 2 });
  assert.equal(offerBit("clear"), 1);
  assert.equal(offerBit("aes-256-gcm"), 2);
  assert.equal(offerBit("chacha20-poly1305"), 4);
  const names = Object.keys(CipherCode) as CipherName[];
  for (let offers = 0; offers < 8; offers++) {
    const ciphers = offeredCiphers(offers);
    assert.deepEqual(ciphers, names.filter((_, i) => offers & (1 << i)), `offers ${offers}`);
    assert.equal(ciphers.reduce((mask, c) => mask | offerBit(c), 0), offers);
  }
  // Bits with no cipher are ignored.
  assert.deepEqual(offeredCiphers(0xf8), []);
  assert.deepEqual(offeredCiphers(0xff), names);
});

Deno.test("IACK, IRDY, ICON, CREQ and KEEPALIVE round-trip", () => {
  for (
    const message of SAMPLES.filter((m) => ["IACK", "IRDY", "ICON", "CREQ", "KEEPALIVE"].includes(m.type))
  ) {
    assert.deepEqual(roundTrip(message), message, message.type);
  }
});

Deno.test("a NAK round-trips with ASCII, empty and multi-byte UTF-8 text", () => {
  for (const text of ["", "bad key", "Schlüssel ungültig — 鍵が違います 🔑"]) {
    const message: ControlMessage = {
      type: "NAK",
      vid: 2,
      initiatorNonce: 123n,
      reason: NakReason.BAD_KEY,
      text,
    };
    assert.deepEqual(roundTrip(message), message);
    assert.equal(encode(message).length, HEADER_LENGTH + 10 + new TextEncoder().encode(text).length);
  }
});

Deno.test("encode() cuts NAK text to 200 bytes", () => {
  const message: ControlMessage = {
    type: "NAK",
    vid: 2,
    initiatorNonce: 1n,
    reason: 0,
    text: "x".repeat(300),
  };
  const datagram = encode(message);
  assert.equal(datagram.length, HEADER_LENGTH + 10 + MAX_NAK_TEXT);
  assert.deepEqual(decodeOk(datagram).message, { ...message, text: "x".repeat(200) });
});

Deno.test("encode() cuts multi-byte NAK text to 200 bytes on a character boundary", () => {
  // "€" is 3 bytes in UTF-8: 66 of them fit in 198 bytes, the 67th would not.
  const message: ControlMessage = {
    type: "NAK",
    vid: 2,
    initiatorNonce: 1n,
    reason: 0,
    text: "€".repeat(100),
  };
  const datagram = encode(message);
  assert.equal(datagram.length, HEADER_LENGTH + 10 + 198);
  assert.deepEqual(decodeOk(datagram).message, { ...message, text: "€".repeat(66) });
  // Four-byte characters that end exactly at 200 bytes.
  const emoji: ControlMessage = { ...message, text: "😀".repeat(60) };
  assert.deepEqual(decodeOk(encode(emoji)).message, { ...message, text: "😀".repeat(50) });
});

// --- MAC -------------------------------------------------------------------------------------------

Deno.test("encode() with macLength 16 sets the MAC flag and decode() returns the 16-byte MAC", () => {
  for (const message of SAMPLES) {
    const datagram = encode(message, MAC_LENGTH);
    assert.equal(datagram[6], 0x01);
    assert.equal(datagram.length, encode(message).length + MAC_LENGTH);
    datagram.set(new Uint8Array(MAC_LENGTH).map((_, i) => i + 1), datagram.length - MAC_LENGTH);
    const decoded = decodeOk(datagram);
    assert.deepEqual(decoded.message, message, message.type);
    assert.ok(decoded.mac instanceof Uint8Array);
    assert.equal(decoded.mac.length, MAC_LENGTH);
    assert.deepEqual(Array.from(decoded.mac), Array.from({ length: 16 }, (_, i) => i + 1));
  }
});

Deno.test("decode() returns no mac when the MAC flag is clear", () => {
  const decoded = decode(encode(SAMPLES[4]));
  assert.ok(decoded.ok);
  assert.equal("mac" in decoded, false);
});

Deno.test("decode() rejects a flagged message whose MAC is cut short as truncated", () => {
  const datagram = encode(SAMPLES[4], MAC_LENGTH);
  assertDrop(decode(datagram.subarray(0, datagram.length - 1)), "truncated");
});

// --- rejections ------------------------------------------------------------------------------------

Deno.test("decode() rejects an empty datagram", () => {
  assertDrop(decode(new Uint8Array(0)), "empty");
});

Deno.test("decode() rejects a header shorter than 8 bytes as truncated", () => {
  const datagram = encode({ type: "NOP", vid: 0 });
  for (let length = 1; length < HEADER_LENGTH; length++) {
    assertDrop(decode(datagram.subarray(0, length)), "truncated");
  }
});

Deno.test("decode() rejects a data datagram (first byte not 0) as bad-field", () => {
  assertDrop(decode(new Uint8Array([3, 0, 1, 3, 0, 0, 0, 0])), "bad-field");
});

Deno.test("decode() rejects a truncated IREQ whose body is shorter than its fixed part", () => {
  const full = encode(ireq([]));
  for (const cut of [1, 8, 32, 55]) {
    assertDrop(decode(withBodyLength(full.slice(0, full.length - cut))), "truncated");
  }
});

Deno.test("decode() rejects a truncated IREQ whose plan is cut in the middle", () => {
  const full = encode(ireq([V6]));
  // Cut inside the address bytes, and right after the family byte.
  assertDrop(decode(withBodyLength(full.slice(0, full.length - 5))), "truncated");
  assertDrop(decode(withBodyLength(full.slice(0, HEADER_LENGTH + 56 + 1))), "truncated");
  // The count says two addresses but only one is there.
  const one = encode(ireq([V4]));
  one[HEADER_LENGTH + 17] = 2;
  assertDrop(decode(one), "truncated");
});

Deno.test("decode() rejects an IREQ with bytes past its plan as bad-field", () => {
  const full = encode(ireq([V4]));
  const longer = new Uint8Array(full.length + 3);
  longer.set(full);
  assertDrop(decode(withBodyLength(longer)), "bad-field");
});

Deno.test("decode() rejects an IREQ whose plan has more than 4 addresses", () => {
  const datagram = encode(ireq([]));
  datagram[HEADER_LENGTH + 17] = 5;
  assertDrop(decode(datagram), "bad-field");
});

Deno.test("decode() rejects an IREQ with its reserved byte set", () => {
  for (const value of [1, 0x80, 0xff]) {
    const datagram = encode(ireq([]));
    datagram[HEADER_LENGTH + 23] = value;
    assertDrop(decode(datagram), "bad-field");
  }
});

Deno.test("decode() takes any offers and flags bytes in an IREQ (future ciphers and flags)", () => {
  const datagram = encode(ireq([]));
  datagram[HEADER_LENGTH + 21] = 0xff;
  datagram[HEADER_LENGTH + 22] = 0xfe & ~IREQ_FLAG_BRIDGE;
  const { message } = decodeOk(datagram);
  assert.ok(message.type === "IREQ");
  assert.equal(message.offers, 0xff);
  assert.equal(message.flags, 0xf6);
});

Deno.test("an IREQ carries the bridge it asks for after its plan, flagged, and decode() rejects a bad or cut name", () => {
  const plan = [parseCidr("198.18.207.2/30")!];
  const datagram = encode({ ...ireq(plan), bridge: "br-lan0" });
  const { message } = decodeOk(datagram);
  assert.ok(message.type === "IREQ");
  assert.equal(message.bridge, "br-lan0");
  assert.deepEqual(message.plan, plan);
  assert.equal(message.flags & IREQ_FLAG_BRIDGE, IREQ_FLAG_BRIDGE);
  assert.equal(datagram[HEADER_LENGTH + 56 + 6], 7, "the name's length right after the plan");
  assert.equal("bridge" in decodeOk(encode(ireq(plan))).message, false, "none asked: no name, no flag");
  const cut = withBodyLength(datagram.slice(0, -1));
  assert.equal((decode(cut) as { reason: string }).reason, "truncated");
  const slash = datagram.slice();
  slash[slash.length - 1] = "/".charCodeAt(0);
  assert.equal((decode(slash) as { reason: string }).reason, "bad-field");
  assert.throws(() => encode({ ...ireq([]), bridge: "a name with spaces" }), RangeError);
});

Deno.test("decode() rejects a datagram over 512 bytes as oversize", () => {
  const big = withBodyLength(new Uint8Array(MAX_CONTROL_LENGTH + 1).fill(0, 0, 8));
  big[2] = 2;
  assertDrop(decode(big), "oversize");
  const edge = withBodyLength(new Uint8Array(MAX_CONTROL_LENGTH));
  edge[2] = 2;
  assert.ok(decode(edge).ok, "a 512-byte NOP is accepted");
});

Deno.test("decode() rejects a bad protocol version", () => {
  for (const version of [0, 1, 3, 255]) {
    const datagram = encode(SAMPLES[4]);
    datagram[2] = version;
    assertDrop(decode(datagram), "bad-version");
  }
});

Deno.test("decode() rejects unknown VC codes 8 and 255", () => {
  for (const code of [8, 255]) {
    const datagram = encode(SAMPLES[4]);
    datagram[1] = code;
    assertDrop(decode(datagram), "unknown-code");
  }
});

Deno.test("decode() rejects a body length larger than the datagram as truncated", () => {
  const datagram = encode(SAMPLES[4]);
  new DataView(datagram.buffer).setUint16(4, 25);
  assertDrop(decode(datagram), "truncated");
  new DataView(datagram.buffer).setUint16(4, 0xffff);
  assertDrop(decode(datagram), "truncated");
});

Deno.test("decode() rejects trailing bytes after the body as bad-length", () => {
  const datagram = encode(SAMPLES[4]);
  const longer = new Uint8Array(datagram.length + 1);
  longer.set(datagram);
  assertDrop(decode(longer), "bad-length");
});

Deno.test("decode() rejects reserved flag bits and a nonzero reserved byte", () => {
  for (const flags of [0x02, 0x80, 0xfe]) {
    const datagram = encode(SAMPLES[4]);
    datagram[6] = flags;
    assertDrop(decode(datagram), "bad-field");
  }
  const datagram = encode(SAMPLES[4]);
  datagram[7] = 1;
  assertDrop(decode(datagram), "bad-field");
});

Deno.test("decode() rejects vid 0 on every message but NOP", () => {
  for (const message of SAMPLES.filter((m) => m.type !== "NOP")) {
    const datagram = encode(message);
    datagram[3] = 0;
    assertDrop(decode(datagram), "bad-field");
  }
});

Deno.test("decode() rejects a fixed-size message whose body has the wrong length", () => {
  for (
    const message of SAMPLES.filter((m) => ["IACK", "IRDY", "ICON", "CREQ", "KEEPALIVE"].includes(m.type))
  ) {
    const datagram = encode(message);
    assertDrop(decode(withBodyLength(datagram.slice(0, datagram.length - 1))), "truncated");
    const longer = new Uint8Array(datagram.length + 1);
    longer.set(datagram);
    assertDrop(decode(withBodyLength(longer)), "bad-field");
  }
});

Deno.test("decode() rejects a bad mode byte in IREQ, IACK and IRDY", () => {
  for (const [message, offset] of [[ireq([]), 16], [SAMPLES[2], 18], [SAMPLES[3], 18]] as const) {
    for (const mode of [0, 3, 255]) {
      const datagram = encode(message);
      datagram[HEADER_LENGTH + offset] = mode;
      assertDrop(decode(datagram), "bad-field");
    }
  }
});

Deno.test("decode() rejects IACK and IRDY with reserved bytes or unknown flags set", () => {
  for (const message of [SAMPLES[2], SAMPLES[3]]) {
    for (const [offset, value] of [[21, 8], [21, 0x80], [22, 1], [23, 1]]) {
      const datagram = encode(message);
      datagram[HEADER_LENGTH + offset] = value;
      assertDrop(decode(datagram), "bad-field");
    }
  }
});

Deno.test("decode() reads the fragments flag of IACK and IRDY, and encode() writes it", () => {
  for (const message of [SAMPLES[2], SAMPLES[3]]) {
    const flagged = { ...message, flags: IACK_FLAG_FRAGMENTS } as ControlMessage;
    const datagram = encode(flagged);
    assert.equal(datagram[HEADER_LENGTH + 21], IACK_FLAG_FRAGMENTS);
    const decoded = decode(datagram);
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.message, flagged);
  }
});

Deno.test("decode() rejects an IACK naming an unknown cipher", () => {
  for (const message of [SAMPLES[2], SAMPLES[3]]) {
    for (const cipher of [3, 4, 0x80, 255]) {
      const datagram = encode(message);
      datagram[HEADER_LENGTH + 20] = cipher;
      assertDrop(decode(datagram), "bad-field");
    }
  }
});

Deno.test("decode() rejects an ICON with its reserved bytes set", () => {
  for (let offset = 17; offset < 24; offset++) {
    const datagram = encode(SAMPLES[4]);
    datagram[HEADER_LENGTH + offset] = 1;
    assertDrop(decode(datagram), "bad-field");
  }
  const datagram = encode(SAMPLES[4]);
  datagram[HEADER_LENGTH + 16] = 0xff;
  assert.ok(decode(datagram).ok, "byte 16 is the handshake");
});

Deno.test("decode() rejects a version-1 datagram as bad-version", () => {
  // A v1 IREQ, IACK, ICON and KEEPALIVE with their v1 body lengths (24, 24, 16, 32), and a v2 one relabelled.
  for (const [code, length] of [[1, 24], [2, 24], [3, 16], [5, 32], [7, 10]]) {
    const datagram = new Uint8Array(HEADER_LENGTH + length);
    datagram.set([0, code, 1, 3]);
    new DataView(datagram.buffer).setUint16(4, length);
    if (code === 1) datagram[HEADER_LENGTH + 16] = 1;
    if (code === 2) datagram[HEADER_LENGTH + 18] = 1;
    assertDrop(decode(datagram), "bad-version");
  }
  for (const message of SAMPLES) {
    const datagram = encode(message);
    datagram[2] = OLD_PROTOCOL_VERSION;
    assertDrop(decode(datagram), "bad-version");
  }
});

Deno.test("decode() rejects a plan address family other than 4 or 6", () => {
  for (const family of [0, 5, 41]) {
    const datagram = encode(ireq([V4]));
    datagram[HEADER_LENGTH + 56] = family;
    assertDrop(decode(datagram), "bad-field");
  }
});

Deno.test("decode() rejects an IPv4 plan prefix length over 32 and an IPv6 one over 128", () => {
  const v4 = encode(ireq([V4]));
  v4[HEADER_LENGTH + 57] = 33;
  assertDrop(decode(v4), "bad-field");
  v4[HEADER_LENGTH + 57] = 32;
  assert.ok(decode(v4).ok, "/32 is accepted");
  const v6 = encode(ireq([V6]));
  v6[HEADER_LENGTH + 57] = 129;
  assertDrop(decode(v6), "bad-field");
});

Deno.test("decode() rejects NAK text that is not UTF-8", () => {
  assertDrop(decode(rawNak(new Uint8Array([0x61, 0xff, 0x62]))), "bad-field");
  assertDrop(decode(rawNak(new Uint8Array([0xe2, 0x82]))), "bad-field");
  assert.ok(decode(rawNak(new Uint8Array([0xe2, 0x82, 0xac]))).ok, "a whole euro sign is accepted");
});

Deno.test("decode() rejects a NAK text length over 200", () => {
  assertDrop(decode(rawNak(new Uint8Array(201).fill(0x61))), "bad-field");
  assert.ok(decode(rawNak(new Uint8Array(200).fill(0x61))).ok, "200 bytes are accepted");
});

Deno.test("decode() rejects a NAK whose text length disagrees with its body", () => {
  assertDrop(decode(rawNak(new Uint8Array(10).fill(0x61), 9)), "bad-field");
  assertDrop(decode(rawNak(new Uint8Array(10).fill(0x61), 11)), "bad-field");
});

// --- encode() preconditions -----------------------------------------------------------------------

Deno.test("encode() throws a RangeError for vid 0 on an IREQ", () => {
  assert.throws(() => encode({ ...ireq([]), vid: 0 }), RangeError);
});

Deno.test("encode() throws a RangeError for vid 0 on any message but NOP, and for vid 256", () => {
  for (const message of SAMPLES.filter((m) => m.type !== "NOP")) {
    assert.throws(() => encode({ ...message, vid: 0 }), RangeError, message.type);
  }
  assert.throws(() => encode({ type: "NOP", vid: 256 }), RangeError);
  assert.throws(() => encode({ type: "NOP", vid: -1 }), RangeError);
});

Deno.test("encode() throws a RangeError for a plan of more than 4 addresses", () => {
  assert.throws(() => encode(ireq([V4, V4, V4, V4, V6])), RangeError);
  assert.doesNotThrow(() => encode(ireq([V4, V6, V4, V6])));
});

// --- protocol v1 peers ----------------------------------------------------------------------------

/** A protocol v1 IREQ as a v1 initiator sends it: 24-byte fixed body (nonce, timestamp, mode, count, MTU, options). */
function v1Ireq(vid: number, nonce: bigint, plan: Uint8Array = new Uint8Array(0), macLength = 0): Uint8Array {
  const bodyLength = 24 + plan.length;
  const datagram = new Uint8Array(HEADER_LENGTH + bodyLength + macLength);
  const view = new DataView(datagram.buffer);
  datagram.set([0, 1, 1, vid]);
  view.setUint16(4, bodyLength);
  datagram[6] = macLength ? 1 : 0;
  view.setBigUint64(HEADER_LENGTH, nonce);
  view.setBigUint64(HEADER_LENGTH + 8, 1_700_000_000_123n);
  datagram[HEADER_LENGTH + 16] = 1;
  datagram[HEADER_LENGTH + 17] = plan.length ? 1 : 0;
  view.setUint16(HEADER_LENGTH + 18, 1400);
  view.setUint16(HEADER_LENGTH + 20, 0xbeef);
  datagram.set(plan, HEADER_LENGTH + 24);
  if (macLength) datagram.fill(0xab, datagram.length - macLength);
  return datagram;
}

/** How a protocol v1 decoder reads a NAK (its header and NAK body are v2's, with version 1). */
function readV1Nak(
  datagram: Uint8Array,
): { vid: number; initiatorNonce: bigint; reason: number; text: string } {
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  assert.equal(datagram[0], 0, "control marker");
  assert.equal(datagram[1], 7, "VC code NAK");
  assert.equal(datagram[2], 1, "version 1");
  assert.equal(datagram[7], 0, "reserved");
  const bodyLength = view.getUint16(4);
  const macLength = datagram[6] & 1 ? 16 : 0;
  assert.equal(datagram[6] & ~1, 0, "no other flags");
  assert.equal(datagram.length, HEADER_LENGTH + bodyLength + macLength);
  const textLength = datagram[HEADER_LENGTH + 9];
  assert.ok(textLength <= 200);
  assert.equal(bodyLength, 10 + textLength);
  const text = new TextDecoder("utf-8", { fatal: true }).decode(
    datagram.subarray(HEADER_LENGTH + 10, HEADER_LENGTH + 10 + textLength),
  );
  return {
    vid: datagram[3],
    initiatorNonce: view.getBigUint64(HEADER_LENGTH),
    reason: datagram[HEADER_LENGTH + 8],
    text,
  };
}

Deno.test("oldIreq() reads a v1 IREQ's vid and nonce and ignores everything else", () => {
  const nonce = 0x0102030405060708n;
  assert.deepEqual(oldIreq(v1Ireq(3, nonce)), { vid: 3, initiatorNonce: nonce });
  assert.deepEqual(oldIreq(v1Ireq(255, 0xffffffffffffffffn)), {
    vid: 255,
    initiatorNonce: 0xffffffffffffffffn,
  });
  // A plan, a MAC, and any garbage in the rest of the body change nothing.
  assert.deepEqual(oldIreq(v1Ireq(9, nonce, new Uint8Array([4, 30, 198, 18, 207, 2]), MAC_LENGTH)), {
    vid: 9,
    initiatorNonce: nonce,
  });
  const garbage = v1Ireq(4, nonce);
  garbage.fill(0xee, HEADER_LENGTH + 8);
  garbage[4] = 0xff; // a body length that does not match
  garbage[7] = 0x55;
  assert.deepEqual(oldIreq(garbage), { vid: 4, initiatorNonce: nonce });
  // A view into a larger buffer.
  const buffer = new Uint8Array(100).fill(0x77);
  buffer.set(v1Ireq(5, nonce), 11);
  assert.deepEqual(oldIreq(buffer.subarray(11, 11 + HEADER_LENGTH + 24)), { vid: 5, initiatorNonce: nonce });
});

Deno.test("oldIreq() is undefined for anything but a v1 IREQ", () => {
  const nonce = 77n;
  assert.equal(oldIreq(encode(ireq([]))), undefined, "a v2 IREQ");
  for (const message of SAMPLES) {
    const datagram = encode(message);
    datagram[2] = OLD_PROTOCOL_VERSION;
    if (message.type !== "IREQ") assert.equal(oldIreq(datagram), undefined, `a v1 ${message.type}`);
  }
  const v1 = v1Ireq(3, nonce);
  assert.equal(oldIreq(v1.subarray(0, HEADER_LENGTH + 23)), undefined, "shorter than a v1 IREQ");
  assert.equal(oldIreq(new Uint8Array(0)), undefined, "empty");
  const data = v1.slice();
  data[0] = 3;
  assert.equal(oldIreq(data), undefined, "a data datagram");
  const vidZero = v1.slice();
  vidZero[3] = 0;
  assert.equal(oldIreq(vidZero), undefined, "vid 0");
  for (const version of [0, 2, 3]) {
    const other = v1.slice();
    other[2] = version;
    assert.equal(oldIreq(other), undefined, `version ${version}`);
  }
  const big = new Uint8Array(MAX_CONTROL_LENGTH + 1);
  big.set(v1);
  assert.equal(oldIreq(big), undefined, "over 512 bytes");
  const edge = new Uint8Array(MAX_CONTROL_LENGTH);
  edge.set(v1);
  assert.deepEqual(oldIreq(edge), { vid: 3, initiatorNonce: nonce }, "512 bytes");
});

Deno.test("encodeOldNak() makes a version-1 NAK whose text a v1 decoder would read", () => {
  const nonce = 0x1122334455667788n;
  const text = "the peer speaks VELA protocol v2: upgrade VELA on this side";
  const datagram = encodeOldNak(6, nonce, text);
  const textBytes = new TextEncoder().encode(text);
  assert.deepEqual(
    Array.from(datagram.subarray(0, HEADER_LENGTH)),
    [0, 7, 1, 6, 0, 10 + textBytes.length, 0, 0],
    "header: control, NAK, version 1, vid, body length, no MAC",
  );
  assert.deepEqual(Array.from(datagram.subarray(HEADER_LENGTH, HEADER_LENGTH + 8)), [
    0x11,
    0x22,
    0x33,
    0x44,
    0x55,
    0x66,
    0x77,
    0x88,
  ]);
  assert.equal(datagram[HEADER_LENGTH + 8], NakReason.UNSPECIFIED, "a reason v1 knows");
  assert.equal(datagram[HEADER_LENGTH + 9], textBytes.length);
  assert.deepEqual(Array.from(datagram.subarray(HEADER_LENGTH + 10)), Array.from(textBytes));
  assert.deepEqual(readV1Nak(datagram), { vid: 6, initiatorNonce: nonce, reason: 0, text });
  // A v2 decoder drops it for its version; with the version byte put back, it is a v2 NAK.
  assertDrop(decode(datagram), "bad-version");
  const relabelled = datagram.slice();
  relabelled[2] = PROTOCOL_VERSION;
  assert.deepEqual(decodeOk(relabelled).message, {
    type: "NAK",
    vid: 6,
    initiatorNonce: nonce,
    reason: NakReason.UNSPECIFIED,
    text,
  });
});

Deno.test("encodeOldNak() with macLength sets the MAC flag and leaves room, and cuts its text to 200 bytes", () => {
  const signed = encodeOldNak(1, 5n, "upgrade", MAC_LENGTH);
  assert.equal(signed[2], 1);
  assert.equal(signed[6], 1);
  assert.equal(signed.length, HEADER_LENGTH + 10 + 7 + MAC_LENGTH);
  assert.deepEqual(Array.from(signed.subarray(signed.length - MAC_LENGTH)), new Array(MAC_LENGTH).fill(0));
  assert.deepEqual(readV1Nak(signed), { vid: 1, initiatorNonce: 5n, reason: 0, text: "upgrade" });
  const long = encodeOldNak(1, 5n, "ü".repeat(150));
  assert.deepEqual(readV1Nak(long).text, "ü".repeat(100));
  assert.throws(() => encodeOldNak(0, 5n, "x"), RangeError);
});

// --- datagramKind() and newNonce() ----------------------------------------------------------------

Deno.test("datagramKind() tells empty, control and data datagrams apart", () => {
  assert.equal(datagramKind(new Uint8Array(0)), "empty");
  assert.equal(datagramKind(new Uint8Array([0])), "control");
  assert.equal(datagramKind(encode(SAMPLES[1])), "control");
  assert.equal(datagramKind(new Uint8Array([1, 0xff])), "data");
  assert.equal(datagramKind(new Uint8Array([255])), "data");
});

Deno.test("newNonce() returns distinct nonzero 64-bit values", () => {
  const seen = new Set<bigint>();
  for (let i = 0; i < 100; i++) {
    const nonce = newNonce();
    assert.ok(nonce > 0n && nonce < 1n << 64n);
    seen.add(nonce);
  }
  assert.equal(seen.size, 100);
});

// --- fuzzing ---------------------------------------------------------------------------------------

function assertWellBehaved(datagram: Uint8Array, what: string): Decoded {
  let decoded: Decoded;
  try {
    decoded = decode(datagram);
  } catch (error) {
    assert.fail(`decode() threw on ${what} [${Array.from(datagram).join(",")}]: ${error}`);
  }
  if (!decoded.ok) {
    assert.ok(DROP_REASONS.has(decoded.reason), `unknown drop reason ${decoded.reason} for ${what}`);
  }
  try {
    oldIreq(datagram);
  } catch (error) {
    assert.fail(`oldIreq() threw on ${what}: ${error}`);
  }
  return decoded;
}

Deno.test("decode() never throws on 2000 random datagrams and only returns known drop reasons", () => {
  const random = seededRandom(0x5eed);
  const byte = () => Math.floor(random() * 256);
  let accepted = 0;
  for (let i = 0; i < 2000; i++) {
    const length = Math.floor(random() * 120);
    const datagram = new Uint8Array(length).map(byte);
    // Mostly plausible headers, so that the body decoders are reached too.
    if (length > 0 && random() < 0.8) datagram[0] = 0;
    if (length > 2 && random() < 0.8) datagram[2] = random() < 0.9 ? PROTOCOL_VERSION : OLD_PROTOCOL_VERSION;
    if (length > 1 && random() < 0.8) datagram[1] = Math.floor(random() * 9);
    if (length > 7 && random() < 0.7) {
      datagram[6] = random() < 0.2 ? 1 : 0;
      datagram[7] = 0;
      const bodyLength = length - HEADER_LENGTH - (datagram[6] ? MAC_LENGTH : 0);
      if (bodyLength >= 0 && random() < 0.8) new DataView(datagram.buffer).setUint16(4, bodyLength);
    }
    if (assertWellBehaved(datagram, `random datagram ${i}`).ok) accepted++;
  }
  assert.ok(accepted > 0, "some random datagrams get through to a body decoder and pass");
});

Deno.test("decode() never throws on 2000 truncations and byte flips of valid encodings", () => {
  const random = seededRandom(0xc0ffee);
  const valid = [...SAMPLES, ireq([]), ireq([V6]), ireq([V4, V6, V4, V6])]
    .flatMap((m) => [encode(m), encode(m, MAC_LENGTH)]);
  for (let i = 0; i < 2000; i++) {
    const original = valid[Math.floor(random() * valid.length)];
    let datagram: Uint8Array;
    const kind = random();
    if (kind < 0.4) {
      datagram = original.slice(0, Math.floor(random() * original.length));
    } else if (kind < 0.9) {
      datagram = original.slice();
      const flips = 1 + Math.floor(random() * 3);
      for (let f = 0; f < flips; f++) {
        datagram[Math.floor(random() * datagram.length)] ^= 1 + Math.floor(random() * 255);
      }
    } else {
      // Cut the body and make the header agree, so that the body decoders see short bodies.
      const length = HEADER_LENGTH + Math.floor(random() * (original.length - HEADER_LENGTH));
      datagram = withBodyLength(original.slice(0, length));
      datagram[6] = 0;
    }
    assertWellBehaved(datagram, `mutation ${i}`);
  }
});

Deno.test("decode() reads a datagram that is a view into a larger buffer", () => {
  const datagram = encode(SAMPLES[6]);
  const buffer = new Uint8Array(datagram.length + 20).fill(0xee);
  buffer.set(datagram, 7);
  assert.deepEqual(decodeOk(buffer.subarray(7, 7 + datagram.length)).message, SAMPLES[6]);
});

Deno.test("encode() cuts NAK text on a character boundary after a one-byte character", () => {
  const bytes = encode({ type: "NAK", vid: 1, initiatorNonce: 1n, reason: 0, text: "a" + "😀".repeat(60) });
  const decoded = decode(bytes);
  assert.ok(decoded.ok);
  assert.equal((decoded.message as { text: string }).text, "a" + "😀".repeat(49));
});

const PROBE: Probe = {
  type: "PROBE",
  vid: 3,
  senderNonce: 11n,
  receiverNonce: 22n,
  id: 0xdead_beef,
  size: 1472,
};

Deno.test("encode() and decode() round-trip PROBE and PROBE_ACK, and decode() rejects their reserved bytes", () => {
  for (const message of [PROBE, { ...PROBE, type: "PROBE_ACK" as const }]) {
    const datagram = encode(message);
    assert.equal(datagram.length, HEADER_LENGTH + 24);
    const decoded = decode(datagram);
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.message, message);
    datagram[HEADER_LENGTH + 23] = 1;
    assert.equal((decode(datagram) as { reason: string }).reason, "bad-field");
  }
});

/** A PROBE signed (room for the MAC) and padded with zeros to the size it names. */
function paddedProbe(size: number, named = size): Uint8Array {
  const message = encode({ ...PROBE, size: named }, MAC_LENGTH);
  const datagram = new Uint8Array(size);
  datagram.set(message);
  return datagram;
}

Deno.test("controlLength() hands up a padded PROBE without its padding, and only when it is the size it names", () => {
  assert.equal(MIN_PROBE_SIZE, HEADER_LENGTH + 24 + MAC_LENGTH);
  for (const size of [MIN_PROBE_SIZE, 600, 1472, 9000]) {
    assert.equal(controlLength(paddedProbe(size), 0, size), MIN_PROBE_SIZE, `${size}`);
  }
  assert.equal(controlLength(paddedProbe(1400, 1472), 0, 1400), 0, "cut on the way");
  assert.equal(controlLength(paddedProbe(1472, 1400), 0, 1472), 0, "longer than it says");
  const unsigned = new Uint8Array(700);
  unsigned.set(encode({ ...PROBE, size: 700 }));
  assert.equal(controlLength(unsigned, 0, 700), HEADER_LENGTH + 24);
  const old = paddedProbe(1000);
  old[2] = OLD_PROTOCOL_VERSION;
  assert.equal(controlLength(old, 0, 1000), 0, "no probes in v1");
  const long = paddedProbe(1000);
  long[5] = 40;
  assert.equal(controlLength(long, 0, 1000), 0, "a PROBE body is 24 bytes");
});

Deno.test("controlLength() takes any other control datagram whole up to MAX_CONTROL_LENGTH, of a version this side answers", () => {
  const keepalive = encode({
    type: "KEEPALIVE",
    vid: 3,
    senderNonce: 1n,
    receiverNonce: 2n,
    sentAt: 3n,
    echo: 0n,
    sequence: 1n,
  });
  assert.equal(controlLength(keepalive, 0, keepalive.length), keepalive.length);
  const big = new Uint8Array(MAX_CONTROL_LENGTH + 1);
  big.set(keepalive);
  assert.equal(controlLength(big, 0, big.length), 0);
  assert.equal(controlLength(keepalive, 0, HEADER_LENGTH - 1), 0);
  const future = keepalive.slice();
  future[2] = PROTOCOL_VERSION + 1;
  assert.equal(controlLength(future, 0, future.length), 0);
  // Read at an offset into a larger buffer, as the datapath does.
  const memory = new Uint8Array(2000);
  memory.set(paddedProbe(900), 100);
  assert.equal(controlLength(memory, 100, 900), MIN_PROBE_SIZE);
});

Deno.test("encode() and decode() carry a DACK; decode() rejects epoch 0, reserved bytes and a wrong length", () => {
  const dack: ControlMessage = {
    type: "DACK",
    vid: 3,
    senderNonce: 0x1111_2222_3333_4444n,
    receiverNonce: 0x5555_6666_7777_8888n,
    epoch: 200,
    hash: 0xfedc_ba98_7654_3210n,
  };
  const datagram = encode(dack);
  assert.equal(datagram.length, HEADER_LENGTH + 32);
  assert.equal(datagram[1], 11);
  const decoded = decode(datagram);
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.message, dack);
  for (const [offset, value] of [[16, 0], [17, 1], [23, 1]]) {
    const bad = encode(dack);
    bad[HEADER_LENGTH + offset] = value;
    assertDrop(decode(bad), "bad-field");
  }
  const short = encode(dack).slice(0, HEADER_LENGTH + 31);
  short[5] = 31;
  assert.equal(decode(short).ok, false);
});
