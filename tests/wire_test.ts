import assert from "node:assert/strict";
import { parseCidr } from "../src/ip.ts";
import {
  type ControlMessage,
  datagramKind,
  decode,
  type Decoded,
  type DropReason,
  encode,
  HEADER_LENGTH,
  MAC_LENGTH,
  MAX_CONTROL_LENGTH,
  MAX_NAK_TEXT,
  NakReason,
  newNonce,
} from "../src/wire.ts";

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

const SAMPLES: ControlMessage[] = [
  { type: "NOP", vid: 0 },
  {
    type: "IREQ",
    vid: 3,
    initiatorNonce: 0x0102030405060708n,
    timestamp: 1_700_000_000_123n,
    mode: "tap",
    mtu: 1400,
    options: 0,
    plan: [V4, V6],
  },
  {
    type: "IACK",
    vid: 3,
    responderNonce: 0xfedcba9876543210n,
    initiatorNonce: 0x0102030405060708n,
    mtu: 1400,
    mode: "tap",
    options: 0,
  },
  {
    type: "IRDY",
    vid: 4,
    responderNonce: 77n,
    initiatorNonce: 88n,
    mtu: 9000,
    mode: "tun",
    options: 0,
  },
  { type: "ICON", vid: 5, initiatorNonce: 1n, responderNonce: 2n },
  { type: "CREQ", vid: 6, senderNonce: 3n, receiverNonce: 4n },
  { type: "KEEPALIVE", vid: 7, senderNonce: 5n, receiverNonce: 6n, sentAt: 1000n, echo: 999n },
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
function ireq(plan = [V4]): ControlMessage {
  return {
    type: "IREQ",
    vid: 9,
    initiatorNonce: 42n,
    timestamp: 1234n,
    mode: "tun",
    mtu: 1500,
    options: 0,
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
  assert.deepEqual(Array.from(datagram.subarray(0, HEADER_LENGTH)), [0, 3, 1, 5, 0, 16, 0, 0]);
  assert.equal(datagram.length, HEADER_LENGTH + 16);
});

Deno.test("a NOP round-trips, with vid 0 or a circuit's vid", () => {
  assert.deepEqual(roundTrip({ type: "NOP", vid: 0 }), { type: "NOP", vid: 0 });
  assert.deepEqual(roundTrip({ type: "NOP", vid: 200 }), { type: "NOP", vid: 200 });
  assert.equal(encode({ type: "NOP", vid: 0 }).length, HEADER_LENGTH);
});

Deno.test("decode() accepts a NOP with padding in its body", () => {
  const datagram = withBodyLength(new Uint8Array([0, 0, 1, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc]));
  assert.deepEqual(decodeOk(datagram).message, { type: "NOP", vid: 0 });
});

Deno.test("an IREQ with an empty plan round-trips", () => {
  const message = ireq([]);
  assert.equal(encode(message).length, HEADER_LENGTH + 24);
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("an IREQ with one IPv4 plan address round-trips", () => {
  const message = ireq([V4]);
  assert.equal(encode(message).length, HEADER_LENGTH + 24 + 2 + 4);
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("an IREQ with one IPv6 plan address round-trips", () => {
  const message = ireq([V6]);
  assert.equal(encode(message).length, HEADER_LENGTH + 24 + 2 + 16);
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
      options: 0xbeef,
      plan: [],
    };
    assert.deepEqual(roundTrip(message), message);
  }
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
  for (const cut of [1, 8, 23]) {
    assertDrop(decode(withBodyLength(full.slice(0, full.length - cut))), "truncated");
  }
});

Deno.test("decode() rejects a truncated IREQ whose plan is cut in the middle", () => {
  const full = encode(ireq([V6]));
  // Cut inside the address bytes, and right after the family byte.
  assertDrop(decode(withBodyLength(full.slice(0, full.length - 5))), "truncated");
  assertDrop(decode(withBodyLength(full.slice(0, HEADER_LENGTH + 24 + 1))), "truncated");
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

Deno.test("decode() rejects an IREQ with its reserved bytes set", () => {
  const datagram = encode(ireq([]));
  datagram[HEADER_LENGTH + 23] = 1;
  assertDrop(decode(datagram), "bad-field");
});

Deno.test("decode() rejects a datagram over 512 bytes as oversize", () => {
  const big = withBodyLength(new Uint8Array(MAX_CONTROL_LENGTH + 1).fill(0, 0, 8));
  big[2] = 1;
  assertDrop(decode(big), "oversize");
  const edge = withBodyLength(new Uint8Array(MAX_CONTROL_LENGTH));
  edge[2] = 1;
  assert.ok(decode(edge).ok, "a 512-byte NOP is accepted");
});

Deno.test("decode() rejects a bad protocol version", () => {
  for (const version of [0, 2, 255]) {
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
  new DataView(datagram.buffer).setUint16(4, 17);
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

Deno.test("decode() rejects IACK and IRDY with reserved bytes set", () => {
  for (const offset of [19, 22, 23]) {
    const datagram = encode(SAMPLES[2]);
    datagram[HEADER_LENGTH + offset] = 1;
    assertDrop(decode(datagram), "bad-field");
  }
});

Deno.test("decode() rejects a plan address family other than 4 or 6", () => {
  for (const family of [0, 5, 41]) {
    const datagram = encode(ireq([V4]));
    datagram[HEADER_LENGTH + 24] = family;
    assertDrop(decode(datagram), "bad-field");
  }
});

Deno.test("decode() rejects an IPv4 plan prefix length over 32 and an IPv6 one over 128", () => {
  const v4 = encode(ireq([V4]));
  v4[HEADER_LENGTH + 25] = 33;
  assertDrop(decode(v4), "bad-field");
  v4[HEADER_LENGTH + 25] = 32;
  assert.ok(decode(v4).ok, "/32 is accepted");
  const v6 = encode(ireq([V6]));
  v6[HEADER_LENGTH + 25] = 129;
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

/** mulberry32: a small seeded PRNG, so every run sees the same datagrams. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
  return decoded;
}

Deno.test("decode() never throws on 2000 random datagrams and only returns known drop reasons", () => {
  const random = prng(0x5eed);
  const byte = () => Math.floor(random() * 256);
  let accepted = 0;
  for (let i = 0; i < 2000; i++) {
    const length = Math.floor(random() * 80);
    const datagram = new Uint8Array(length).map(byte);
    // Mostly plausible headers, so that the body decoders are reached too.
    if (length > 0 && random() < 0.8) datagram[0] = 0;
    if (length > 2 && random() < 0.8) datagram[2] = 1;
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
  const random = prng(0xc0ffee);
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
