import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, createHmac } from "node:crypto";
import {
  type Ephemeral,
  ephemeralFrom,
  type HandshakeTranscript,
  SESSION_KEY_BYTES,
  sessionKeys,
  transcriptHash,
  x25519,
  X25519_BYTES,
  x25519Handshake,
} from "../../src/crypto/handshake.ts";

function fromHex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "hex"));
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

// RFC 7748 section 6.1.
const ALICE_PRIVATE = fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
const ALICE_PUBLIC = fromHex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
const BOB_PRIVATE = fromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
const BOB_PUBLIC = fromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
const SHARED = fromHex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

/** The worked example of docs/PROTOCOL.md: Alice is the initiator, Bob the responder. */
const PSK = Uint8Array.from({ length: 32 }, (_, i) => i);
const TRANSCRIPT: HandshakeTranscript = {
  vid: 3,
  handshake: 0,
  cipher: "aes-256-gcm",
  mode: "tap",
  initiatorNonce: 0x0102030405060708n,
  responderNonce: 0x1112131415161718n,
  initiatorEphemeral: ALICE_PUBLIC,
  responderEphemeral: BOB_PUBLIC,
};
const EXAMPLE_TRANSCRIPT_HASH = "eeab924c6e90cbcf759c5283e29aaff136040b92ea5f24bb80086b758ad7e96c";
const EXAMPLE_KEYS = {
  dataInitiatorToResponder: "296ed0e1bce9626b618df59fb37e24dbe3ce5bb28006160778daa0415e6a5f9a",
  dataResponderToInitiator: "63a063b9e823c3bc647ea25cb2b68151f08a0eb4d5a1befa83e98d36b40c8254",
  controlInitiatorToResponder: "f1c72d3605d9dc7f512eecead99ef643379dd1a398bc93c81b1c74d436383a0c",
  controlResponderToInitiator: "57d9c3fb818fed2cf621719e42632cc4a02453696abc539cc71d893804a90f8f",
};

// --- an independent computation (RFC 5869 HKDF with HMAC, the transcript with one SHA-256) ----------

function independentTranscriptHash(t: HandshakeTranscript): Buffer {
  const cipherCode = { clear: 0, "aes-256-gcm": 1, "chacha20-poly1305": 2 }[t.cipher];
  const modeCode = { tap: 1, tun: 2 }[t.mode];
  const nonces = Buffer.alloc(16);
  nonces.writeBigUInt64BE(t.initiatorNonce, 0);
  nonces.writeBigUInt64BE(t.responderNonce, 8);
  return createHash("sha256")
    .update(Buffer.from("VELA v2 handshake", "utf8"))
    .update(Buffer.from([t.vid, t.handshake & 0xff, cipherCode, modeCode]))
    .update(nonces)
    .update(t.initiatorEphemeral)
    .update(t.responderEphemeral)
    .digest();
}

/** RFC 5869: PRK = HMAC(salt, IKM); T(i) = HMAC(PRK, T(i-1) || info || i). */
function independentHkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  const prk = createHmac("sha256", salt).update(ikm).digest();
  const blocks: Buffer[] = [];
  let previous: Buffer = Buffer.alloc(0);
  for (let i = 1; blocks.length * 32 < length; i++) {
    previous = createHmac("sha256", prk).update(previous).update(info).update(Buffer.from([i])).digest();
    blocks.push(previous);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

function independentKeys(
  shared: Uint8Array,
  psk: Uint8Array,
  t: HandshakeTranscript,
): Record<string, string> {
  const info = Buffer.concat([Buffer.from("VELA v2 keys", "utf8"), independentTranscriptHash(t)]);
  const okm = independentHkdf(shared, psk, info, 128);
  return {
    dataInitiatorToResponder: okm.subarray(0, 32).toString("hex"),
    dataResponderToInitiator: okm.subarray(32, 64).toString("hex"),
    controlInitiatorToResponder: okm.subarray(64, 96).toString("hex"),
    controlResponderToInitiator: okm.subarray(96, 128).toString("hex"),
  };
}

function keysHex(keys: ReturnType<typeof sessionKeys>): Record<string, string> {
  return {
    dataInitiatorToResponder: hex(keys.dataInitiatorToResponder),
    dataResponderToInitiator: hex(keys.dataResponderToInitiator),
    controlInitiatorToResponder: hex(keys.controlInitiatorToResponder),
    controlResponderToInitiator: hex(keys.controlResponderToInitiator),
  };
}

// --- X25519 ------------------------------------------------------------------------------------------

Deno.test("ephemeralFrom() gives the RFC 7748 section 6.1 public keys of Alice and Bob", () => {
  const alice = ephemeralFrom(ALICE_PRIVATE);
  const bob = ephemeralFrom(BOB_PRIVATE);
  assert.equal(hex(alice.publicKey), hex(ALICE_PUBLIC));
  assert.equal(hex(bob.publicKey), hex(BOB_PUBLIC));
  assert.equal(hex(alice.privateKey), hex(ALICE_PRIVATE));
  assert.equal(alice.publicKey.length, X25519_BYTES);
});

Deno.test("ephemeralFrom() keeps a copy of the private key", () => {
  const privateKey = ALICE_PRIVATE.slice();
  const alice = ephemeralFrom(privateKey);
  privateKey.fill(0);
  assert.equal(hex(alice.privateKey), hex(ALICE_PRIVATE));
});

Deno.test("x25519() gives the RFC 7748 section 6.1 shared secret from either side", () => {
  assert.equal(hex(x25519(ALICE_PRIVATE, BOB_PUBLIC)), hex(SHARED));
  assert.equal(hex(x25519(BOB_PRIVATE, ALICE_PUBLIC)), hex(SHARED));
});

Deno.test("x25519Handshake.newEphemeral() makes a fresh key pair each time, consistent with ephemeralFrom()", () => {
  const a = x25519Handshake.newEphemeral();
  const b = x25519Handshake.newEphemeral();
  assert.equal(a.publicKey.length, X25519_BYTES);
  assert.equal(a.privateKey.length, X25519_BYTES);
  assert.notEqual(hex(a.privateKey), hex(b.privateKey));
  assert.notEqual(hex(a.publicKey), hex(b.publicKey));
  assert.equal(hex(ephemeralFrom(a.privateKey).publicKey), hex(a.publicKey));
  assert.equal(hex(x25519(a.privateKey, b.publicKey)), hex(x25519(b.privateKey, a.publicKey)));
});

// --- derive ------------------------------------------------------------------------------------------

Deno.test("x25519Handshake.derive() gives both sides the same four keys", () => {
  const alice = ephemeralFrom(ALICE_PRIVATE);
  const bob = ephemeralFrom(BOB_PRIVATE);
  const initiator = x25519Handshake.derive(PSK, alice, BOB_PUBLIC, TRANSCRIPT);
  const responder = x25519Handshake.derive(PSK, bob, ALICE_PUBLIC, TRANSCRIPT);
  assert.ok(initiator && responder);
  assert.deepEqual(keysHex(initiator), keysHex(responder));
  assert.deepEqual(keysHex(initiator), EXAMPLE_KEYS);
  for (const key of Object.values(initiator)) assert.equal(key.length, SESSION_KEY_BYTES);
  assert.equal(new Set(Object.values(keysHex(initiator))).size, 4, "four different keys");
});

Deno.test("x25519Handshake.derive() is undefined for an all-zero public key and other low-order points", () => {
  const alice = ephemeralFrom(ALICE_PRIVATE);
  const one = new Uint8Array(32);
  one[0] = 1;
  // u = 2^255 - 19 - 1 (p - 1), of order 2.
  const minusOne = fromHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
  for (const peer of [new Uint8Array(32), one, minusOne]) {
    assert.equal(x25519Handshake.derive(PSK, alice, peer, TRANSCRIPT), undefined, hex(peer));
  }
});

Deno.test("x25519Handshake.derive() is undefined for a public key that is not 32 bytes", () => {
  const alice = ephemeralFrom(ALICE_PRIVATE);
  for (const length of [0, 31, 33, 64]) {
    assert.equal(x25519Handshake.derive(PSK, alice, new Uint8Array(length).fill(9), TRANSCRIPT), undefined);
  }
});

// --- the key schedule, against an independent computation ---------------------------------------------

Deno.test("transcriptHash() is SHA-256 of the label, vid, handshake, cipher, mode, nonces and ephemerals", () => {
  assert.equal(hex(transcriptHash(TRANSCRIPT)), independentTranscriptHash(TRANSCRIPT).toString("hex"));
  assert.equal(hex(transcriptHash(TRANSCRIPT)), EXAMPLE_TRANSCRIPT_HASH);
});

Deno.test("sessionKeys() is HKDF-SHA-256 (salt psk, info label || th) split in four, as an independent HKDF computes", () => {
  assert.deepEqual(keysHex(sessionKeys(SHARED, PSK, TRANSCRIPT)), independentKeys(SHARED, PSK, TRANSCRIPT));
});

Deno.test("the worked example: psk 00..1f, vid 3, handshake 0, aes-256-gcm, tap, RFC 7748 keys", () => {
  assert.deepEqual(keysHex(sessionKeys(SHARED, PSK, TRANSCRIPT)), EXAMPLE_KEYS);
  assert.deepEqual(independentKeys(SHARED, PSK, TRANSCRIPT), EXAMPLE_KEYS);
});

Deno.test("the independent HKDF agrees with RFC 5869 test case 1", () => {
  const okm = independentHkdf(
    fromHex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
    fromHex("000102030405060708090a0b0c"),
    fromHex("f0f1f2f3f4f5f6f7f8f9"),
    42,
  );
  assert.equal(
    okm.toString("hex"),
    "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
  );
});

Deno.test("every transcript field, the shared secret and the key change all four keys", () => {
  const base = keysHex(sessionKeys(SHARED, PSK, TRANSCRIPT));
  const otherKey = (byte: number) => {
    const key = ALICE_PUBLIC.slice();
    key[31] ^= byte;
    return key;
  };
  const variants: Array<[string, Uint8Array, Uint8Array, HandshakeTranscript]> = [
    ["vid", SHARED, PSK, { ...TRANSCRIPT, vid: 4 }],
    ["handshake", SHARED, PSK, { ...TRANSCRIPT, handshake: 1 }],
    ["cipher", SHARED, PSK, { ...TRANSCRIPT, cipher: "chacha20-poly1305" }],
    ["clear", SHARED, PSK, { ...TRANSCRIPT, cipher: "clear" }],
    ["mode", SHARED, PSK, { ...TRANSCRIPT, mode: "tun" }],
    ["initiator nonce", SHARED, PSK, { ...TRANSCRIPT, initiatorNonce: TRANSCRIPT.initiatorNonce + 1n }],
    ["responder nonce", SHARED, PSK, { ...TRANSCRIPT, responderNonce: TRANSCRIPT.responderNonce + 1n }],
    ["nonces swapped", SHARED, PSK, {
      ...TRANSCRIPT,
      initiatorNonce: TRANSCRIPT.responderNonce,
      responderNonce: TRANSCRIPT.initiatorNonce,
    }],
    ["initiator ephemeral", SHARED, PSK, { ...TRANSCRIPT, initiatorEphemeral: otherKey(1) }],
    ["responder ephemeral", SHARED, PSK, { ...TRANSCRIPT, responderEphemeral: otherKey(2) }],
    ["ephemerals swapped", SHARED, PSK, {
      ...TRANSCRIPT,
      initiatorEphemeral: BOB_PUBLIC,
      responderEphemeral: ALICE_PUBLIC,
    }],
    ["shared secret", otherKey(4), PSK, TRANSCRIPT],
    ["psk", SHARED, PSK.map((b) => b ^ 0x80), TRANSCRIPT],
  ];
  for (const [what, shared, psk, transcript] of variants) {
    const keys = keysHex(sessionKeys(shared, psk, transcript));
    assert.deepEqual(keys, independentKeys(shared, psk, transcript), what);
    for (const name of Object.keys(base)) assert.notEqual(keys[name], base[name], `${what}: ${name}`);
  }
});

Deno.test("the handshake number enters the transcript mod 256", () => {
  assert.equal(hex(transcriptHash({ ...TRANSCRIPT, handshake: 256 })), EXAMPLE_TRANSCRIPT_HASH);
  assert.notEqual(hex(transcriptHash({ ...TRANSCRIPT, handshake: 255 })), EXAMPLE_TRANSCRIPT_HASH);
});

Deno.test("a handshake with random ephemerals on both sides agrees and differs from the next", () => {
  const run = (): Record<string, string> => {
    const i: Ephemeral = x25519Handshake.newEphemeral();
    const r: Ephemeral = x25519Handshake.newEphemeral();
    const transcript = { ...TRANSCRIPT, initiatorEphemeral: i.publicKey, responderEphemeral: r.publicKey };
    const a = x25519Handshake.derive(PSK, i, r.publicKey, transcript);
    const b = x25519Handshake.derive(PSK, r, i.publicKey, transcript);
    assert.ok(a && b);
    assert.deepEqual(keysHex(a), keysHex(b));
    return keysHex(a);
  };
  const first = run();
  const second = run();
  assert.notEqual(first.dataInitiatorToResponder, second.dataInitiatorToResponder);
});
