/**
 * Pre-shared keys and the defences of the control channel (DESIGN.md sections 2 and 8): the key file,
 * the MAC on control messages, the replay guard on IREQ timestamps and the IREQ rate limiter.
 *
 * Everything here is synchronous (node:crypto, not WebCrypto) because the receive loop that uses it is.
 * Clocks are injected, so the timing constants live with the caller (src/timing.ts).
 */

import { Buffer } from "node:buffer";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { CONTROL_MARKER, FLAG_MAC, HEADER_LENGTH, MAC_LENGTH } from "./wire.ts";

export { MAC_LENGTH };

/** A pre-shared key is this many random bytes. */
export const KEY_BYTES = 32;

/** A key file larger than this cannot hold one line of base64 key, so it is not read. */
const MAX_KEY_FILE_BYTES = 4096;

const BASE64_PATTERN = /^[A-Za-z0-9+/]+={0,2}$/;

/** A key that cannot be used: the message says what is wrong and what to do, and never holds key bytes. */
export class KeyError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KeyError";
  }
}

/** A new random key as one line of standard base64 (44 characters), what `vela genkey` prints. */
export function generateKey(): string {
  return randomBytes(KEY_BYTES).toString("base64");
}

/** The key in `text` (one base64 line, surrounding whitespace allowed). Throws a KeyError otherwise. */
export function parseKey(text: string): Uint8Array {
  return decodeKey(text, "The key");
}

function decodeKey(text: string, subject: string): Uint8Array {
  const line = text.trim();
  const remedy = "make a new key with vela genkey";
  if (line === "") throw new KeyError(`${subject} is empty; ${remedy}`);
  if (line.length % 4 !== 0 || !BASE64_PATTERN.test(line)) {
    throw new KeyError(`${subject} is not one line of base64; ${remedy}`);
  }
  const decoded = Buffer.from(line, "base64");
  // Buffer ignores stray trailing bits; a key written by generateKey() re-encodes to the same text.
  if (decoded.toString("base64") !== line) {
    throw new KeyError(`${subject} is not canonical base64; ${remedy}`);
  }
  if (decoded.length !== KEY_BYTES) {
    throw new KeyError(`${subject} holds ${decoded.length} bytes, not ${KEY_BYTES}; ${remedy}`);
  }
  return new Uint8Array(decoded);
}

/**
 * Reads the key file at `path`. `warning` is set when group or others have any permission on it.
 * Throws a KeyError when the file is missing, unreadable or does not hold a key.
 */
export function readKeyFile(path: string): { key: Uint8Array; warning?: string } {
  let info: Deno.FileInfo;
  let text: string;
  try {
    info = Deno.statSync(path);
    if (!info.isFile) {
      throw new KeyError(
        `The key file ${path} is not a regular file; give the path of a file vela genkey wrote`,
      );
    }
    if (info.size > MAX_KEY_FILE_BYTES) {
      throw new KeyError(
        `The key file ${path} is ${info.size} bytes, too long for a key; make a new key with vela genkey`,
      );
    }
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw error instanceof KeyError ? error : new KeyError(explainReadError(error, path), { cause: error });
  }
  const key = decodeKey(text, `The key file ${path}`);
  const mode = info.mode;
  if (mode === null || (mode & 0o077) === 0) return { key };
  const octal = (mode & 0o777).toString(8).padStart(3, "0");
  return {
    key,
    warning: `The key file ${path} has mode ${octal}, so other users may read it; run chmod 600 ${path}`,
  };
}

function explainReadError(error: unknown, path: string): string {
  if (error instanceof Deno.errors.NotFound) {
    return `The key file ${path} does not exist; create it with vela genkey > ${path} and chmod 600 ${path}`;
  }
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable) {
    return `Cannot read the key file ${path}: permission denied; run vela as a user that can read it`;
  }
  const reason = error instanceof Error ? error.message : String(error);
  return `Cannot read the key file ${path}: ${reason}`;
}

/** HMAC-SHA-256 of everything before the last MAC_LENGTH bytes, truncated to MAC_LENGTH bytes. */
function controlMac(key: Uint8Array, datagram: Uint8Array): Uint8Array {
  const signed = datagram.subarray(0, datagram.length - MAC_LENGTH);
  return createHmac("sha256", key).update(signed).digest().subarray(0, MAC_LENGTH);
}

/**
 * Fills the last MAC_LENGTH bytes of a datagram made by `encode(message, MAC_LENGTH)` with its MAC.
 * Throws a RangeError when the datagram has no MAC flag or no room for a MAC (a bug, not input).
 */
export function signControl(key: Uint8Array, datagram: Uint8Array): void {
  if (datagram.length < HEADER_LENGTH + MAC_LENGTH || (datagram[6] & FLAG_MAC) === 0) {
    throw new RangeError("Datagram was not encoded with room for a MAC");
  }
  datagram.set(controlMac(key, datagram), datagram.length - MAC_LENGTH);
}

/**
 * True only for a control datagram with the MAC flag set whose last MAC_LENGTH bytes are the MAC of the
 * rest under `key` (compared in constant time). Never throws.
 */
export function verifyControl(key: Uint8Array, datagram: Uint8Array): boolean {
  try {
    if (datagram.length < HEADER_LENGTH + MAC_LENGTH) return false;
    if (datagram[0] !== CONTROL_MARKER || (datagram[6] & FLAG_MAC) === 0) return false;
    const expected = controlMac(key, datagram);
    return timingSafeEqual(expected, datagram.subarray(datagram.length - MAC_LENGTH));
  } catch {
    return false;
  }
}

export type ReplayVerdict = "fresh" | "stale" | "replayed";

/**
 * Accepts each (nonce, timestamp) pair once, and only while its timestamp is within `windowMs` of the wall
 * clock. Pairs are remembered for twice the window after acceptance, at most `maxEntries` of them.
 */
export class ReplayGuard {
  readonly windowMs: number;
  readonly maxEntries: number;
  /** "nonce/timestamp" to the wall clock at acceptance, oldest acceptance first. */
  #accepted = new Map<string, number>();

  constructor(options: { windowMs: number; maxEntries?: number }) {
    const { windowMs, maxEntries = 65536 } = options;
    if (!(windowMs > 0) || !Number.isFinite(windowMs)) {
      throw new RangeError(`Replay window of ${windowMs} ms is not a positive number`);
    }
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`Replay guard size of ${maxEntries} is not a positive integer`);
    }
    this.windowMs = windowMs;
    this.maxEntries = maxEntries;
  }

  /** How many pairs are remembered now. */
  get size(): number {
    return this.#accepted.size;
  }

  /** Whether `timestamp` lies within the window around `wallNow` (the cheap half of check(); remembers nothing). */
  inWindow(timestamp: bigint, wallNow: number): boolean {
    return Math.abs(Number(timestamp) - wallNow) <= this.windowMs;
  }

  /** `timestamp` and `wallNow` are milliseconds since the Unix epoch. */
  check(nonce: bigint, timestamp: bigint, wallNow: number): ReplayVerdict {
    this.#forgetBefore(wallNow - 2 * this.windowMs);
    if (Math.abs(Number(timestamp) - wallNow) > this.windowMs) return "stale";
    const id = `${nonce}/${timestamp}`;
    if (this.#accepted.has(id)) return "replayed";
    while (this.#accepted.size >= this.maxEntries) this.#dropOldest();
    this.#accepted.set(id, wallNow);
    return "fresh";
  }

  /**
   * Acceptance times only grow while the wall clock does, so the scan stops at the first kept entry. A
   * pair accepted at time A has a timestamp of at least A - window, so it is stale before A + 2 × window.
   */
  #forgetBefore(cutoff: number): void {
    for (const [id, acceptedAt] of this.#accepted) {
      if (acceptedAt >= cutoff) return;
      this.#accepted.delete(id);
    }
  }

  #dropOldest(): void {
    const oldest = this.#accepted.keys().next();
    if (!oldest.done) this.#accepted.delete(oldest.value);
  }
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/**
 * A token bucket per key (such as a source address): `burst` requests at once, refilled at
 * `ratePerSecond`. At most `maxKeys` buckets are kept; when full, the least recently seen key is forgotten.
 */
export class RateLimiter {
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly maxKeys: number;
  /** Least recently seen first. */
  #buckets = new Map<string, Bucket>();

  constructor(options: { ratePerSecond: number; burst: number; maxKeys?: number }) {
    const { ratePerSecond, burst, maxKeys = 4096 } = options;
    if (!(ratePerSecond >= 0) || !Number.isFinite(ratePerSecond)) {
      throw new RangeError(`Rate of ${ratePerSecond} per second is not a non-negative number`);
    }
    if (!(burst >= 1) || !Number.isFinite(burst)) throw new RangeError(`Burst of ${burst} is below 1`);
    if (!Number.isInteger(maxKeys) || maxKeys < 1) {
      throw new RangeError(`Rate limiter size of ${maxKeys} is not a positive integer`);
    }
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
    this.maxKeys = maxKeys;
  }

  /** How many keys have a bucket now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes a token from `key`'s bucket if it has one. `nowMs` is a monotonic clock in milliseconds. */
  allow(key: string, nowMs: number): boolean {
    let bucket = this.#buckets.get(key);
    if (bucket) {
      this.#buckets.delete(key);
      const elapsedMs = Math.max(0, nowMs - bucket.updatedMs);
      bucket.tokens = Math.min(this.burst, bucket.tokens + (elapsedMs * this.ratePerSecond) / 1000);
      bucket.updatedMs = Math.max(bucket.updatedMs, nowMs);
    } else {
      while (this.#buckets.size >= this.maxKeys) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = { tokens: this.burst, updatedMs: nowMs };
    }
    this.#buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}
