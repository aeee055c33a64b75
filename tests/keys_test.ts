import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import { parseCidr } from "../src/ip.ts";
import {
  generateKey,
  KEY_BYTES,
  KeyError,
  MAC_LENGTH,
  parseKey,
  RateLimiter,
  readKeyFile,
  ReplayGuard,
  signControl,
  verifyControl,
} from "../src/keys.ts";
import {
  type ControlMessage,
  decode,
  encode,
  HEADER_LENGTH,
  MAC_LENGTH as WIRE_MAC_LENGTH,
} from "../src/wire.ts";

const KEY = parseKey(generateKey());
const OTHER_KEY = parseKey(generateKey());

const IREQ: ControlMessage = {
  type: "IREQ",
  vid: 3,
  initiatorNonce: 0x0102030405060708n,
  timestamp: 1_700_000_000_123n,
  mode: "tap",
  mtu: 1400,
  handshake: 0,
  offers: 1,
  flags: 0,
  ephemeral: new Uint8Array(32),
  plan: [parseCidr("198.18.207.1/30")!, parseCidr("fd00:1::1/126")!],
};
const KEEPALIVE: ControlMessage = {
  type: "KEEPALIVE",
  vid: 7,
  senderNonce: 5n,
  receiverNonce: 6n,
  sentAt: 1000n,
  echo: 999n,
  sequence: 1n,
};
const MESSAGES = [IREQ, KEEPALIVE];

function signed(message: ControlMessage, key = KEY): Uint8Array {
  const datagram = encode(message, MAC_LENGTH);
  signControl(key, datagram);
  return datagram;
}

/** An independent computation of the control MAC. */
function hmac16(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest().subarray(0, 16));
}

function assertKeyError(action: () => unknown, pattern: RegExp): void {
  assert.throws(action, (error: unknown) => {
    assert.ok(error instanceof KeyError, `expected a KeyError, got ${error}`);
    assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, /\.$/, "sentence case without a final period");
    return true;
  });
}

/** A temporary file holding `text` with permission bits `mode`; removed after `body`. */
function withKeyFile(text: string, mode: number, body: (path: string) => void): void {
  const path = Deno.makeTempFileSync({ prefix: "vela_key_" });
  try {
    Deno.writeTextFileSync(path, text);
    Deno.chmodSync(path, mode);
    body(path);
  } finally {
    Deno.removeSync(path);
  }
}

// Keys

Deno.test("MAC_LENGTH is 16 and equals the wire codec's", () => {
  assert.equal(MAC_LENGTH, 16);
  assert.equal(MAC_LENGTH, WIRE_MAC_LENGTH);
  assert.equal(KEY_BYTES, 32);
});

Deno.test("generateKey() returns one line of 44 base64 characters holding 32 bytes", () => {
  const key = generateKey();
  assert.equal(key.length, 44);
  assert.match(key, /^[A-Za-z0-9+/]{43}=$/);
  assert.equal(Buffer.from(key, "base64").length, 32);
});

Deno.test("generateKey() returns a different key each time", () => {
  const keys = new Set(Array.from({ length: 100 }, () => generateKey()));
  assert.equal(keys.size, 100);
});

Deno.test("parseKey() returns the 32 bytes of a generated key", () => {
  const text = generateKey();
  const key = parseKey(text);
  assert.equal(key.length, 32);
  assert.deepEqual(key, new Uint8Array(Buffer.from(text, "base64")));
  assert.equal(Buffer.from(key).toString("base64"), text);
});

Deno.test("parseKey() accepts surrounding whitespace and a final newline", () => {
  const text = generateKey();
  assert.deepEqual(parseKey(`${text}\n`), parseKey(text));
  assert.deepEqual(parseKey(`  \t${text} \r\n\n`), parseKey(text));
});

Deno.test("parseKey() rejects an empty or blank key", () => {
  assertKeyError(() => parseKey(""), /is empty; make a new key with vela genkey/);
  assertKeyError(() => parseKey(" \n"), /is empty/);
});

Deno.test("parseKey() rejects text that is not base64", () => {
  const text = generateKey();
  for (
    const bad of [
      "not a key at all",
      `${text.slice(0, 40)}!!!=`,
      text.slice(0, 43), // padding missing
      `${text.slice(0, 22)}\n${text.slice(22)}`, // broken over two lines
      `${text.slice(0, 43)}-`, // URL-safe alphabet
      "=".repeat(44),
    ]
  ) {
    assertKeyError(() => parseKey(bad), /base64; make a new key with vela genkey/);
  }
});

Deno.test("parseKey() rejects base64 of 31 and 33 bytes, saying how many it holds", () => {
  const short = Buffer.alloc(31, 7).toString("base64");
  const long = Buffer.alloc(33, 7).toString("base64");
  assertKeyError(() => parseKey(short), /^The key holds 31 bytes, not 32; make a new key with vela genkey$/);
  assertKeyError(() => parseKey(long), /^The key holds 33 bytes, not 32; make a new key with vela genkey$/);
  assertKeyError(() => parseKey(Buffer.alloc(12).toString("base64")), /holds 12 bytes, not 32/);
});

Deno.test("parseKey() error messages never contain the key text", () => {
  const text = Buffer.alloc(31, 0xab).toString("base64");
  assert.throws(() => parseKey(text), (error: Error) => !error.message.includes(text));
});

Deno.test("readKeyFile() reads a mode 600 key file without a warning", () => {
  const text = generateKey();
  withKeyFile(`${text}\n`, 0o600, (path) => {
    const result = readKeyFile(path);
    assert.deepEqual(result.key, parseKey(text));
    assert.equal(result.warning, undefined);
  });
});

Deno.test("readKeyFile() warns about a mode 644 key file, naming the path, the mode and chmod 600", () => {
  const text = generateKey();
  withKeyFile(`${text}\n`, 0o644, (path) => {
    const result = readKeyFile(path);
    assert.deepEqual(result.key, parseKey(text));
    assert.ok(result.warning);
    assert.match(result.warning, /chmod 600/);
    assert.ok(result.warning.includes(path));
    assert.match(result.warning, /\b644\b/);
    assert.ok(!result.warning.includes(text));
    assert.doesNotMatch(result.warning, /\.$/);
  });
});

Deno.test("readKeyFile() warns about any group or other permission bit", () => {
  withKeyFile(generateKey(), 0o640, (path) => assert.match(readKeyFile(path).warning ?? "", /640/));
  withKeyFile(generateKey(), 0o601, (path) => assert.match(readKeyFile(path).warning ?? "", /601/));
  withKeyFile(generateKey(), 0o400, (path) => assert.equal(readKeyFile(path).warning, undefined));
});

Deno.test("readKeyFile() throws a KeyError naming the path for a missing file", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vela_key_" });
  try {
    const path = `${dir}/missing.key`;
    assertKeyError(() => readKeyFile(path), /does not exist; create it with vela genkey/);
    assertKeyError(() => readKeyFile(path), new RegExp(path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("readKeyFile() throws a KeyError for a directory", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vela_key_" });
  try {
    assertKeyError(() => readKeyFile(dir), /is not a regular file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("readKeyFile() throws a KeyError naming the file when it holds no key", () => {
  withKeyFile(Buffer.alloc(12).toString("base64"), 0o600, (path) => {
    assertKeyError(() => readKeyFile(path), /^The key file .* holds 12 bytes, not 32; make a new key/);
  });
  withKeyFile("", 0o600, (path) => assertKeyError(() => readKeyFile(path), /is empty/));
  withKeyFile("x".repeat(10_000), 0o600, (path) => assertKeyError(() => readKeyFile(path), /too long/));
});

// MAC

Deno.test("verifyControl() accepts an IREQ and a KEEPALIVE signed with the same key", () => {
  for (const message of MESSAGES) {
    const datagram = signed(message);
    assert.ok(datagram.subarray(-MAC_LENGTH).some((byte) => byte !== 0), "MAC bytes were written");
    assert.equal(verifyControl(KEY, datagram), true, message.type);
  }
});

Deno.test("signControl() writes only the last 16 bytes", () => {
  for (const message of MESSAGES) {
    const unsigned = encode(message, MAC_LENGTH);
    const datagram = signed(message);
    assert.deepEqual(datagram.subarray(0, -MAC_LENGTH), unsigned.subarray(0, -MAC_LENGTH));
  }
});

Deno.test("signControl() is deterministic for the same key and message", () => {
  assert.deepEqual(signed(IREQ), signed(IREQ));
  assert.notDeepEqual(signed(IREQ), signed(IREQ, OTHER_KEY));
});

Deno.test("signControl() throws a RangeError for a datagram encoded without a MAC", () => {
  assert.throws(() => signControl(KEY, encode(KEEPALIVE)), RangeError);
  assert.throws(() => signControl(KEY, new Uint8Array(4)), RangeError);
});

Deno.test("verifyControl() rejects a datagram whose MAC was made with another key", () => {
  for (const message of MESSAGES) {
    assert.equal(verifyControl(KEY, signed(message, OTHER_KEY)), false, message.type);
  }
});

Deno.test("verifyControl() rejects a datagram with any one bit flipped", () => {
  for (const message of MESSAGES) {
    const datagram = signed(message);
    for (let at = 0; at < datagram.length; at++) {
      for (let bit = 0; bit < 8; bit++) {
        const tampered = datagram.slice();
        tampered[at] ^= 1 << bit;
        assert.equal(verifyControl(KEY, tampered), false, `${message.type} byte ${at} bit ${bit}`);
      }
    }
  }
});

Deno.test("verifyControl() rejects a datagram without the MAC flag, even with a correct MAC", () => {
  for (const message of MESSAGES) {
    const datagram = encode(message, MAC_LENGTH);
    datagram[6] = 0;
    datagram.set(hmac16(KEY, datagram.subarray(0, -MAC_LENGTH)), datagram.length - MAC_LENGTH);
    assert.equal(verifyControl(KEY, datagram), false, message.type);
    assert.equal(verifyControl(KEY, encode(message)), false, message.type);
  }
});

Deno.test("signControl() writes HMAC-SHA-256 of the rest of the datagram, truncated to 16 bytes", () => {
  for (const message of MESSAGES) {
    const datagram = signed(message);
    assert.deepEqual(datagram.subarray(-MAC_LENGTH), hmac16(KEY, datagram.subarray(0, -MAC_LENGTH)));
  }
});

Deno.test("verifyControl() rejects a truncated datagram", () => {
  const datagram = signed(KEEPALIVE);
  for (let length = 0; length < datagram.length; length++) {
    assert.equal(verifyControl(KEY, datagram.subarray(0, length)), false, `${length} bytes`);
  }
  assert.equal(verifyControl(KEY, datagram.subarray(1)), false, "first byte dropped");
});

Deno.test("verifyControl() rejects an empty array and the shortest MAC-flagged datagram of zeros", () => {
  assert.equal(verifyControl(KEY, new Uint8Array(0)), false);
  const zeros = new Uint8Array(HEADER_LENGTH + MAC_LENGTH);
  zeros[6] = 1;
  assert.equal(verifyControl(KEY, zeros), false);
});

Deno.test("verifyControl() never throws, whatever the key or datagram", () => {
  const datagram = signed(IREQ);
  assert.equal(verifyControl(new Uint8Array(0), datagram), false);
  assert.equal(verifyControl(undefined as unknown as Uint8Array, datagram), false);
  assert.equal(verifyControl(KEY, undefined as unknown as Uint8Array), false);
  assert.equal(verifyControl(KEY, "text" as unknown as Uint8Array), false);
  for (let i = 0; i < 200; i++) {
    const random = crypto.getRandomValues(new Uint8Array(i));
    assert.equal(verifyControl(KEY, random), false);
  }
});

Deno.test("verifyControl() accepts a signed datagram that is a view into a larger buffer", () => {
  const datagram = signed(KEEPALIVE);
  const buffer = new Uint8Array(datagram.length + 10);
  buffer.set(datagram, 5);
  assert.equal(verifyControl(KEY, buffer.subarray(5, 5 + datagram.length)), true);
});

Deno.test("a signed datagram still decodes and its mac field is the last 16 bytes", () => {
  for (const message of MESSAGES) {
    const datagram = signed(message);
    const decoded = decode(datagram);
    assert.ok(decoded.ok, decoded.ok ? "" : decoded.detail);
    assert.deepEqual(decoded.message, message);
    assert.ok(decoded.mac);
    assert.deepEqual(decoded.mac, datagram.slice(-MAC_LENGTH));
  }
});

// Replay guard

const NOW = 1_700_000_000_000;
const WINDOW = 30_000;

Deno.test("ReplayGuard accepts a pair once, then reports it replayed", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW });
  assert.equal(guard.check(1n, BigInt(NOW), NOW), "fresh");
  assert.equal(guard.check(1n, BigInt(NOW), NOW + 10), "replayed");
  assert.equal(guard.check(1n, BigInt(NOW), NOW + WINDOW), "replayed");
});

Deno.test("ReplayGuard treats another nonce or another timestamp as a new pair", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW });
  assert.equal(guard.check(1n, BigInt(NOW), NOW), "fresh");
  assert.equal(guard.check(2n, BigInt(NOW), NOW), "fresh");
  assert.equal(guard.check(1n, BigInt(NOW + 1), NOW), "fresh");
  assert.equal(guard.size, 3);
});

Deno.test("ReplayGuard reports timestamps beyond the window either way as stale, and keeps none", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW });
  assert.equal(guard.check(1n, BigInt(NOW - WINDOW - 1), NOW), "stale");
  assert.equal(guard.check(1n, BigInt(NOW + WINDOW + 1), NOW), "stale");
  assert.equal(guard.check(1n, 0n, NOW), "stale");
  assert.equal(guard.check(1n, 2n ** 64n - 1n, NOW), "stale");
  assert.equal(guard.size, 0);
  assert.equal(guard.check(1n, BigInt(NOW - WINDOW), NOW), "fresh");
  assert.equal(guard.check(1n, BigInt(NOW + WINDOW), NOW), "fresh");
});

Deno.test("ReplayGuard reports a replay stale once its timestamp leaves the window", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW });
  assert.equal(guard.check(1n, BigInt(NOW), NOW), "fresh");
  assert.equal(guard.check(1n, BigInt(NOW), NOW + WINDOW + 1), "stale");
});

Deno.test("ReplayGuard forgets pairs accepted more than twice the window ago", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW });
  for (let i = 0; i < 100; i++) guard.check(BigInt(i), BigInt(NOW), NOW);
  assert.equal(guard.size, 100);
  assert.equal(guard.check(1000n, BigInt(NOW + WINDOW + 10), NOW + WINDOW), "fresh");
  assert.equal(guard.size, 101, "nothing is forgotten within twice the window");
  assert.equal(guard.check(1001n, BigInt(NOW + 2 * WINDOW + 1), NOW + 2 * WINDOW + 1), "fresh");
  assert.equal(guard.size, 2, "the first 100 pairs are forgotten");
  assert.equal(guard.check(1000n, BigInt(NOW + WINDOW + 10), NOW + 2 * WINDOW + 1), "replayed");
});

Deno.test("ReplayGuard never lets a pair be fresh twice while its timestamp is in the window", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW });
  // Accepted at the earliest allowed timestamp, then retried every second until stale.
  assert.equal(guard.check(9n, BigInt(NOW + WINDOW), NOW), "fresh");
  for (let now = NOW; now <= NOW + 2 * WINDOW; now += 1000) {
    assert.equal(guard.check(9n, BigInt(NOW + WINDOW), now), "replayed", `at +${now - NOW} ms`);
  }
  assert.equal(guard.check(9n, BigInt(NOW + WINDOW), NOW + 2 * WINDOW + 1), "stale");
});

Deno.test("ReplayGuard holds at most maxEntries pairs, dropping the oldest", () => {
  const guard = new ReplayGuard({ windowMs: WINDOW, maxEntries: 10 });
  for (let i = 0; i < 25; i++) assert.equal(guard.check(BigInt(i), BigInt(NOW), NOW), "fresh");
  assert.equal(guard.size, 10);
  assert.equal(guard.check(24n, BigInt(NOW), NOW), "replayed");
  assert.equal(guard.check(15n, BigInt(NOW), NOW), "replayed");
  assert.equal(guard.check(0n, BigInt(NOW), NOW), "fresh", "the oldest was dropped");
});

Deno.test("ReplayGuard refuses a window that is not a positive number", () => {
  assert.throws(() => new ReplayGuard({ windowMs: 0 }), RangeError);
  assert.throws(() => new ReplayGuard({ windowMs: NaN }), RangeError);
  assert.throws(() => new ReplayGuard({ windowMs: WINDOW, maxEntries: 0 }), RangeError);
});

// Rate limiter

Deno.test("RateLimiter allows a burst, then refuses until tokens refill", () => {
  const limiter = new RateLimiter({ ratePerSecond: 5, burst: 10 });
  for (let i = 0; i < 10; i++) assert.equal(limiter.allow("198.51.100.1", 0), true, `request ${i}`);
  assert.equal(limiter.allow("198.51.100.1", 0), false);
  assert.equal(limiter.allow("198.51.100.1", 100), false, "half a token after 100 ms");
  assert.equal(limiter.allow("198.51.100.1", 200), true, "one token after 200 ms");
  assert.equal(limiter.allow("198.51.100.1", 200), false);
});

Deno.test("RateLimiter refills at the rate and never above the burst", () => {
  const limiter = new RateLimiter({ ratePerSecond: 5, burst: 10 });
  for (let i = 0; i < 10; i++) limiter.allow("a", 0);
  let allowed = 0;
  for (let i = 0; i < 20; i++) if (limiter.allow("a", 1000)) allowed++;
  assert.equal(allowed, 5, "5 tokens after one second");
  allowed = 0;
  for (let i = 0; i < 20; i++) if (limiter.allow("a", 1_000_000)) allowed++;
  assert.equal(allowed, 10, "capped at the burst after a long pause");
});

Deno.test("RateLimiter keeps a steady sender at the rate", () => {
  const limiter = new RateLimiter({ ratePerSecond: 5, burst: 10 });
  let allowed = 0;
  for (let now = 0; now < 10_000; now += 10) if (limiter.allow("a", now)) allowed++;
  assert.equal(allowed, 10 + 50 - 1);
});

Deno.test("RateLimiter keeps an independent bucket per key", () => {
  const limiter = new RateLimiter({ ratePerSecond: 5, burst: 2 });
  assert.equal(limiter.allow("a", 0), true);
  assert.equal(limiter.allow("a", 0), true);
  assert.equal(limiter.allow("a", 0), false);
  assert.equal(limiter.allow("b", 0), true);
  assert.equal(limiter.allow("b", 0), true);
  assert.equal(limiter.allow("b", 0), false);
});

Deno.test("RateLimiter tolerates a clock that steps back", () => {
  const limiter = new RateLimiter({ ratePerSecond: 5, burst: 1 });
  assert.equal(limiter.allow("a", 1000), true);
  assert.equal(limiter.allow("a", 500), false);
  assert.equal(limiter.allow("a", 1100), false, "no token from the step back");
  assert.equal(limiter.allow("a", 1200), true);
});

Deno.test("RateLimiter holds at most maxKeys buckets, forgetting the least recently seen", () => {
  const limiter = new RateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 3 });
  for (const key of ["a", "b", "c"]) assert.equal(limiter.allow(key, 0), true);
  assert.equal(limiter.allow("a", 0), false, "a is now the most recently seen");
  assert.equal(limiter.allow("d", 0), true);
  assert.equal(limiter.size, 3);
  assert.equal(limiter.allow("a", 0), false, "a was kept");
  assert.equal(limiter.allow("b", 0), true, "b was forgotten, so it starts a new bucket");
  for (let i = 0; i < 10_000; i++) limiter.allow(`198.51.100.${i}`, i);
  assert.equal(limiter.size, 3);
});

Deno.test("RateLimiter defaults to 4096 keys", () => {
  const limiter = new RateLimiter({ ratePerSecond: 5, burst: 10 });
  assert.equal(limiter.maxKeys, 4096);
  for (let i = 0; i < 5000; i++) limiter.allow(`key ${i}`, 0);
  assert.equal(limiter.size, 4096);
});

Deno.test("RateLimiter refuses a burst below 1 or a bad rate", () => {
  assert.throws(() => new RateLimiter({ ratePerSecond: 5, burst: 0 }), RangeError);
  assert.throws(() => new RateLimiter({ ratePerSecond: -1, burst: 10 }), RangeError);
  assert.throws(() => new RateLimiter({ ratePerSecond: NaN, burst: 10 }), RangeError);
  assert.throws(() => new RateLimiter({ ratePerSecond: 5, burst: 10, maxKeys: 0 }), RangeError);
});
