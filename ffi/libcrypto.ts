/**
 * The one place that opens OpenSSL 3's libcrypto through Deno FFI: the AEAD ciphers of the datapath's
 * encryption stage, AES-256-GCM and ChaCha20-Poly1305, each with a 32-byte key, a 12-byte nonce and a
 * 16-byte tag, through the EVP interface.
 *
 * An EVP_CIPHER_CTX is made once per key and direction, with the key; per packet only the nonce changes.
 * A seal is five calls: the nonce (EVP_CipherInit_ex with no cipher and no key), the associated data
 * (EVP_CipherUpdate with no output), the payload in place (EVP_CipherUpdate), EVP_CipherFinal_ex, and the
 * tag out (EVP_CIPHER_CTX_ctrl GET_TAG). An open is the same five with the expected tag set in (SET_TAG)
 * before the data, and EVP_CipherFinal_ex checks it. An empty associated data or payload skips its call.
 * From here the five cost some 60 to 80 ns more than from C. OpenSSL 3.0 itself spends far more: the
 * same calls from C take about 275 ns for an empty AES-256-GCM packet and 380 ns for a 64-byte one on
 * the machine this was measured on, mostly looking up OSSL_PARAM names (every IV set asks the provider
 * for the IV length, every ctrl goes through parameters), which no way of calling it from here avoids.
 *
 * Addresses. The packet, its associated data and its tag lie inside one large buffer, so per packet they
 * are given to C as "usize" parameters: the buffer's base address plus an offset. Measured with Deno 2.9.6
 * (V8 15.0) on x86_64:
 * - A 64-bit FFI parameter stays on the fast path only as a BigInt (its type says bigint too). A plain JS
 *   number makes the optimized caller deoptimize ("not a BigInt", again each time it is optimized anew)
 *   and the call take the slow path: about 180 ns a call against 7, with garbage for the scavenger.
 * - So the base is a BigInt, made once per buffer, and each address is `base + BigInt(offset | 0)`, which
 *   optimized code adds as 64-bit integers in registers without making a heap BigInt, on two conditions
 *   that this module keeps. The call has no "pointer" or "buffer" parameter: one there made V8 box every
 *   computed BigInt argument, so the per-packet calls take the context's address as "usize" too. And the
 *   offset is visibly an int32 (`| 0`): an offset that V8 could not prove to be one, such as `i % n` or a
 *   loop variable of the caller's once seal() is inlined there, made BigInt() a builtin call that
 *   allocates, and the call slow (about 100 ns more per seal). Kept, 2 million seals of a mock libcrypto
 *   ran in about 100 ns each with a handful of scavenges in all, those of the unoptimized start.
 * - The costlier ways: a subarray per call for a "buffer" parameter (about 65 ns and an object), or
 *   Deno.UnsafePointer.offset() for a "pointer" one (about 95 ns and an object).
 *
 * Why a cached base address stays right: an ArrayBuffer's or SharedArrayBuffer's bytes live in a backing
 * store that V8 allocates outside its garbage-collected heap, through the embedder's allocator; the
 * collector moves only the small JS objects that point to it, never the store, which is freed only when
 * the buffer is collected or detached. The cache holds the Uint8Array itself, so the buffer cannot be
 * collected while its address is remembered; a detached buffer's views have length 0, so the bounds
 * checks refuse them. (A resizable buffer does not move either: V8 reserves its maximum length up front.)
 * A typed array made small with `new Uint8Array(n)` (up to 64 bytes) may start inside the heap, where it
 * does move; Deno.UnsafePointer.of() makes V8 give it a backing store for good (a 16-byte array's address
 * stayed put, outside the heap, through a million allocations and a full GC). This module's own scratch
 * bytes get an explicit ArrayBuffer all the same.
 */

const symbols = {
  /** EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void); */
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  /** void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx); */
  EVP_CIPHER_CTX_free: { parameters: ["pointer"], result: "void" },
  /** const EVP_CIPHER *EVP_aes_256_gcm(void); */
  EVP_aes_256_gcm: { parameters: [], result: "pointer" },
  /** const EVP_CIPHER *EVP_chacha20_poly1305(void); */
  EVP_chacha20_poly1305: { parameters: [], result: "pointer" },
  /**
   * int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl,
   *                       const unsigned char *key, const unsigned char *iv, int enc);
   * once per context, with the cipher, the key and the direction
   */
  EVP_CipherInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "pointer", "i32"],
    result: "i32",
  },
  // Per packet, every pointer is given as its address ("usize"), the context's too: see above.
  /** EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1): only the nonce, the rest kept */
  cipher_set_nonce: {
    name: "EVP_CipherInit_ex",
    parameters: ["usize", "usize", "usize", "usize", "usize", "i32"],
    result: "i32",
  },
  /**
   * int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
   *                      const unsigned char *in, int inl);
   * the associated data with out NULL, then the payload in place
   */
  cipher_update: {
    name: "EVP_CipherUpdate",
    parameters: ["usize", "usize", "usize", "usize", "i32"],
    result: "i32",
  },
  /** int EVP_CipherFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl); */
  cipher_final: { name: "EVP_CipherFinal_ex", parameters: ["usize", "usize", "usize"], result: "i32" },
  /** int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr); GET_TAG and SET_TAG */
  cipher_ctrl: { name: "EVP_CIPHER_CTX_ctrl", parameters: ["usize", "i32", "i32", "usize"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libcrypto = Deno.DynamicLibrary<typeof symbols>["symbols"];

const LIBRARY = "libcrypto.so.3";

/** EVP_CIPHER_CTX_ctrl requests (openssl/evp.h). */
const EVP_CTRL_AEAD_GET_TAG = 0x10;
const EVP_CTRL_AEAD_SET_TAG = 0x11;

/** Where in a context's scratch bytes libcrypto writes its output lengths: after the nonce, aligned. */
const OUTL_OFFSET = 12n;
const SCRATCH_BYTES = 16;

export type AeadCipherName = "aes-256-gcm" | "chacha20-poly1305";
export const AEAD_KEY_BYTES = 32;
export const AEAD_TAG_BYTES = 16;
export const AEAD_NONCE_BYTES = 12;

/** libcrypto.so.3 cannot be opened; the message says what to install. */
export class LibcryptoMissing extends Error {
  constructor(options?: ErrorOptions) {
    super(
      "Encryption needs OpenSSL 3's libcrypto.so.3, which this host lacks: install libssl3 (Debian, Ubuntu) or openssl-libs (Fedora, RHEL)",
      options,
    );
    this.name = "LibcryptoMissing";
  }
}

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

/** The libcrypto symbols, opened on first use so that a daemon without keys needs no libcrypto. */
function libcrypto(): Libcrypto {
  if (!library) {
    try {
      library = Deno.dlopen(LIBRARY, symbols);
    } catch (error) {
      throw new LibcryptoMissing({ cause: error });
    }
  }
  return library.symbols;
}

/**
 * Opens libcrypto now (throws LibcryptoMissing), so that a keyed daemon finds out at start. With `name`,
 * only tries that file and closes it again (a test shows the failure with a name that does not exist).
 */
export function loadLibcrypto(name?: string): void {
  if (name === undefined || name === LIBRARY) {
    libcrypto();
    return;
  }
  try {
    Deno.dlopen(name, symbols).close();
  } catch (error) {
    throw new LibcryptoMissing({ cause: error });
  }
}

function addressOf(memory: Uint8Array): bigint {
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(memory));
}

/** The calls of a seal, by the number #seal() returns when one fails (a bug: throws). */
const SEAL_CALLS = [
  "",
  "EVP_CipherInit_ex(nonce)",
  "EVP_CipherUpdate(aad)",
  "EVP_CipherUpdate",
  "EVP_CipherFinal_ex",
  "EVP_CIPHER_CTX_ctrl(GET_TAG)",
] as const;

/**
 * Whether memory[start, start + length + extra) is a range inside memory, every number of it an int32
 * (so that `x | 0` is x for each offset the calls are given).
 */
function inside(memory: Uint8Array, start: number, length: number, extra: number): boolean {
  const end = start + length + extra;
  return (start | 0) === start && (length | 0) === length && start >= 0 && length >= 0 &&
    end <= memory.length && end <= 0x7fff_ffff;
}

/**
 * One key in one direction. seal() throws only for arguments out of range or a libcrypto failure (both
 * bugs); open() returns false for anything that does not verify, and never throws for packet data.
 */
export class AeadContext implements Disposable {
  readonly cipher: AeadCipherName;
  readonly #sealing: boolean;
  #context: Deno.PointerValue;
  /** The context's address for the per-packet calls. */
  readonly #contextAddress: bigint;
  readonly #c: Libcrypto;
  /** The nonce (4 zero bytes, then the counter), then room for libcrypto's output lengths. */
  readonly #scratch = new Uint8Array(new ArrayBuffer(SCRATCH_BYTES));
  readonly #nonceView = new DataView(this.#scratch.buffer);
  readonly #nonceAddress: bigint;
  readonly #outlAddress: bigint;
  /** The last memory given, and the address of its first byte. */
  #memory: Uint8Array | undefined;
  #memoryBase = 0n;

  constructor(cipher: AeadCipherName, key: Uint8Array, direction: "seal" | "open") {
    if (cipher !== "aes-256-gcm" && cipher !== "chacha20-poly1305") {
      throw new RangeError(`Unknown AEAD cipher ${cipher}`);
    }
    if (key.length !== AEAD_KEY_BYTES) {
      throw new RangeError(`An AEAD key is ${AEAD_KEY_BYTES} bytes, not ${key.length}`);
    }
    this.cipher = cipher;
    this.#sealing = direction === "seal";
    const c = this.#c = libcrypto();
    const type = cipher === "aes-256-gcm" ? c.EVP_aes_256_gcm() : c.EVP_chacha20_poly1305();
    if (type === null) throw new Error(`EVP_${cipher.replaceAll("-", "_")} failed`);
    const context = c.EVP_CIPHER_CTX_new();
    if (context === null) throw new Error("EVP_CIPHER_CTX_new failed");
    if (c.EVP_CipherInit_ex(context, type, null, key, null, this.#sealing ? 1 : 0) !== 1) {
      c.EVP_CIPHER_CTX_free(context);
      throw new Error(`EVP_CipherInit_ex(${cipher}) failed`);
    }
    this.#context = context;
    this.#contextAddress = Deno.UnsafePointer.value(context);
    this.#nonceAddress = addressOf(this.#scratch);
    this.#outlAddress = this.#nonceAddress + OUTL_OFFSET;
  }

  /**
   * Encrypts memory[at, at+length) in place and writes the 16-byte tag at memory[at+length, +16). The
   * associated data is memory[aadAt, aadAt+aadLength); the nonce is 4 zero bytes, then `counter` (an
   * integer from 0 to 2**53 - 1) as 64 bits, big endian.
   */
  seal(
    memory: Uint8Array,
    aadAt: number,
    aadLength: number,
    at: number,
    length: number,
    counter: number,
  ): void {
    if (!this.#setCounter(counter)) throw new RangeError(`AEAD counter ${counter} is out of range`);
    const failed = this.#seal(memory, aadAt, aadLength, at, length);
    if (failed !== 0) throw new Error(`${SEAL_CALLS[failed]} failed`);
  }

  /**
   * Decrypts memory[at, at+length) in place (length without the tag), checking the tag at
   * memory[at+length, +16). False when it does not verify, or a range or the counter is out of bounds;
   * the bytes at memory[at, at+length) are garbage then.
   */
  open(
    memory: Uint8Array,
    aadAt: number,
    aadLength: number,
    at: number,
    length: number,
    counter: number,
  ): boolean {
    return this.#setCounter(counter) && this.#open(memory, aadAt, aadLength, at, length);
  }

  /** seal() with an explicit 12-byte nonce, for known-answer tests whose nonce is not ours. */
  sealWithNonce(
    memory: Uint8Array,
    nonce: Uint8Array,
    aadAt: number,
    aadLength: number,
    at: number,
    length: number,
  ): void {
    this.#setNonce(nonce);
    const failed = this.#seal(memory, aadAt, aadLength, at, length);
    if (failed !== 0) throw new Error(`${SEAL_CALLS[failed]} failed`);
  }

  /** open() with an explicit 12-byte nonce, for known-answer tests whose nonce is not ours. */
  openWithNonce(
    memory: Uint8Array,
    nonce: Uint8Array,
    aadAt: number,
    aadLength: number,
    at: number,
    length: number,
  ): boolean {
    this.#setNonce(nonce);
    return this.#open(memory, aadAt, aadLength, at, length);
  }

  #setNonce(nonce: Uint8Array): void {
    if (nonce.length !== AEAD_NONCE_BYTES) {
      throw new RangeError(`An AEAD nonce is ${AEAD_NONCE_BYTES} bytes, not ${nonce.length}`);
    }
    this.#scratch.set(nonce);
  }

  /** Writes the nonce for `counter`; false when the counter is not an integer from 0 to 2**53 - 1. */
  #setCounter(counter: number): boolean {
    if (!(counter >= 0 && counter <= Number.MAX_SAFE_INTEGER) || Math.floor(counter) !== counter) {
      return false;
    }
    const view = this.#nonceView;
    view.setUint32(0, 0);
    view.setUint32(4, Math.floor(counter / 0x1_0000_0000));
    view.setUint32(8, counter >>> 0);
    return true;
  }

  /** The address of memory[0], computed again only when the memory is another one than last time. */
  #base(memory: Uint8Array): bigint {
    if (memory !== this.#memory) {
      this.#memoryBase = addressOf(memory);
      this.#memory = memory;
    }
    return this.#memoryBase;
  }

  /** The seal itself: 0, or which call failed (an index into SEAL_CALLS). Addresses: see the top. */
  #seal(memory: Uint8Array, aadAt: number, aadLength: number, at: number, length: number): number {
    if (!this.#sealing) throw new Error("An opening AEAD context cannot seal");
    if (this.#context === null) throw new Error("The AEAD context is closed");
    if (!inside(memory, aadAt, aadLength, 0) || !inside(memory, at, length, AEAD_TAG_BYTES)) {
      throw new RangeError("The AEAD ranges lie outside the memory");
    }
    const c = this.#c;
    const context = this.#contextAddress;
    const base = this.#base(memory);
    const outl = this.#outlAddress;
    const tagAt = at + length;
    if (c.cipher_set_nonce(context, 0n, 0n, 0n, this.#nonceAddress, -1) !== 1) return 1;
    if (aadLength > 0 && c.cipher_update(context, 0n, outl, base + BigInt(aadAt | 0), aadLength) !== 1) {
      return 2;
    }
    if (
      length > 0 && c.cipher_update(context, base + BigInt(at | 0), outl, base + BigInt(at | 0), length) !== 1
    ) {
      return 3;
    }
    if (c.cipher_final(context, base + BigInt(tagAt | 0), outl) !== 1) return 4;
    if (c.cipher_ctrl(context, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_BYTES, base + BigInt(tagAt | 0)) !== 1) {
      return 5;
    }
    return 0;
  }

  #open(memory: Uint8Array, aadAt: number, aadLength: number, at: number, length: number): boolean {
    if (this.#sealing) throw new Error("A sealing AEAD context cannot open");
    if (this.#context === null) throw new Error("The AEAD context is closed");
    if (!inside(memory, aadAt, aadLength, 0) || !inside(memory, at, length, AEAD_TAG_BYTES)) return false;
    const c = this.#c;
    const context = this.#contextAddress;
    const base = this.#base(memory);
    const outl = this.#outlAddress;
    const tagAt = at + length;
    if (c.cipher_set_nonce(context, 0n, 0n, 0n, this.#nonceAddress, -1) !== 1) return false;
    if (c.cipher_ctrl(context, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_BYTES, base + BigInt(tagAt | 0)) !== 1) {
      return false;
    }
    if (aadLength > 0 && c.cipher_update(context, 0n, outl, base + BigInt(aadAt | 0), aadLength) !== 1) {
      return false;
    }
    if (
      length > 0 && c.cipher_update(context, base + BigInt(at | 0), outl, base + BigInt(at | 0), length) !== 1
    ) {
      return false;
    }
    // Final writes no bytes for these ciphers, and fails when the tag does not verify.
    return c.cipher_final(context, base + BigInt(tagAt | 0), outl) === 1;
  }

  /** Frees the context; safe to call twice. */
  close(): void {
    if (this.#context === null) return;
    this.#c.EVP_CIPHER_CTX_free(this.#context);
    this.#context = null;
    this.#memory = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
