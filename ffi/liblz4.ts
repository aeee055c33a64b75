/**
 * The one place that opens liblz4 (1.9 and later) through Deno FFI: LZ4 blocks for the datapath's
 * compression stage, one block per frame, with or without a dictionary. Only the block format: no LZ4
 * frame header, no checksum, so a block says neither its decompressed size nor which dictionary it needs.
 *
 * Addresses, as in ffi/libcrypto.ts (whose header gives the measurements and the reasons): every
 * per-frame call takes its pointers as "usize", each one the cached base address of its Uint8Array plus
 * `BigInt(offset | 0)`, and has no "buffer" or "pointer" parameter; LZ4 takes and returns C ints, so
 * nothing else is a BigInt and nothing is allocated per call once optimized. Each role (source,
 * destination, dictionary) caches its last array, which also keeps that array alive while its address is
 * remembered.
 *
 * Compression without a dictionary does not call LZ4_compress_fast(): that one clears a 16 KiB hash table
 * on the stack at every call. One LZ4_stream_t made on first use is restarted per frame with
 * LZ4_resetStream_fast() (which, for a table of 32-bit positions, only moves the stream's position on by
 * 64 KiB so that older positions are out of reach) and then LZ4_compress_fast_continue() makes an
 * independent block, the way lz4.h documents for reusing a stream. Measured with Deno 2.9.6 and liblz4
 * 1.9.4 on x86_64, HTTP-like text: about 130 ns for 64 bytes and 600 ns for 1400 bytes, against 400 and
 * 730 ns through LZ4_compress_fast().
 *
 * Compression against a dictionary. lz4.h's fast way, LZ4_resetStream_fast() and then
 * LZ4_attach_dictionary() per frame, is not available: LZ4_attach_dictionary() is LZ4LIB_STATIC_API,
 * which liblz4.so.1 does not export unless built with LZ4_PUBLISH_STATIC_FUNCTIONS (Debian's 1.9.4 is
 * not). lz4.h names the alternative it replaces, copying a pre-loaded dictionary's LZ4_stream_t into a
 * working LZ4_stream_t, which is also what liblz4 itself does for an attached dictionary and an input
 * above 4 KiB. So Lz4DictionaryCompressor holds two streams made once with LZ4_createStream(): a
 * dictionary stream that LZ4_loadDict() fills once per dictionary (hashing every third position of its
 * last 64 KiB), and a working stream into which each frame first copies the dictionary stream (16 KiB, a
 * plain memmove between two views of the C memory made once) before LZ4_compress_fast_continue(). Every
 * frame starts from the same state, so each block decodes with the dictionary alone, in any order, and
 * no state is carried from frame to frame. The copy costs some 200 to 300 ns a frame; LZ4_loadDict() per
 * frame instead would cost about 11 us for a 64 KiB dictionary.
 *
 * Decoding is LZ4_decompress_safe() and LZ4_decompress_safe_usingDict(), which never read outside the
 * source block or the dictionary and never write outside the destination, whatever the bytes: a
 * malformed block gives a negative result. Not every wrong block is malformed, though, as a block has
 * no checksum. A block decoded against another dictionary than its own can decode, to the wrong bytes,
 * with no sign of it: the stage must decode a block only against the dictionary that the frame names.
 * A block cut short right after a run of literals decodes to a shorter output (21 of the 398 cuts of a
 * 1400-byte frame of text did): a stage that knows the length to expect should compare. And liblz4 1.9
 * takes a match offset of 0, which the format calls invalid, and writes zeros for it (so the old bytes
 * of the destination do not come out).
 */

const symbols = {
  /** int LZ4_versionNumber(void); */
  LZ4_versionNumber: { parameters: [], result: "i32" },
  /** int LZ4_compressBound(int inputSize); 0 when inputSize is above LZ4_MAX_INPUT_SIZE */
  LZ4_compressBound: { parameters: ["i32"], result: "i32" },
  /** int LZ4_sizeofState(void); the size of an LZ4_stream_t */
  LZ4_sizeofState: { parameters: [], result: "i32" },
  /** LZ4_stream_t *LZ4_createStream(void); */
  LZ4_createStream: { parameters: [], result: "pointer" },
  /** int LZ4_freeStream(LZ4_stream_t *streamPtr); */
  LZ4_freeStream: { parameters: ["pointer"], result: "i32" },
  /**
   * int LZ4_loadDict(LZ4_stream_t *streamPtr, const char *dictionary, int dictSize);
   * keeps the dictionary's address: the bytes must stay there, unchanged, while the stream is used
   */
  LZ4_loadDict: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  // Per frame, every pointer is given as its address ("usize"), the stream's too: see ffi/libcrypto.ts.
  /** void LZ4_resetStream_fast(LZ4_stream_t *streamPtr); */
  reset_stream_fast: { name: "LZ4_resetStream_fast", parameters: ["usize"], result: "void" },
  /**
   * int LZ4_compress_fast_continue(LZ4_stream_t *streamPtr, const char *src, char *dst, int srcSize,
   *                                int dstCapacity, int acceleration);
   * the size of the block, or 0 when it does not fit dstCapacity
   */
  compress_fast_continue: {
    name: "LZ4_compress_fast_continue",
    parameters: ["usize", "usize", "usize", "i32", "i32", "i32"],
    result: "i32",
  },
  /**
   * int LZ4_decompress_safe(const char *src, char *dst, int compressedSize, int dstCapacity);
   * the decompressed size, or negative for a malformed block
   */
  decompress_safe: {
    name: "LZ4_decompress_safe",
    parameters: ["usize", "usize", "i32", "i32"],
    result: "i32",
  },
  /**
   * int LZ4_decompress_safe_usingDict(const char *src, char *dst, int srcSize, int dstCapacity,
   *                                   const char *dictStart, int dictSize);
   * as LZ4_decompress_safe, with the dictionary's bytes logically just before dst
   */
  decompress_safe_using_dict: {
    name: "LZ4_decompress_safe_usingDict",
    parameters: ["usize", "usize", "i32", "i32", "usize", "i32"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

type Liblz4 = Deno.DynamicLibrary<typeof symbols>["symbols"];

const LIBRARY = "liblz4.so.1";

/** LZ4_MAX_INPUT_SIZE (lz4.h): the largest block input. */
export const LZ4_MAX_INPUT_SIZE = 0x7e00_0000;
/** How much of a dictionary LZ4 uses: its last 64 KiB. */
export const LZ4_DICTIONARY_WINDOW = 65_536;

/** liblz4.so.1 cannot be opened; the message says what to install. */
export class Lz4Missing extends Error {
  constructor(options?: ErrorOptions) {
    super(
      "LZ4 compression needs liblz4.so.1, which this host lacks: install liblz4-1 (Debian, Ubuntu) or lz4-libs (Fedora, RHEL)",
      options,
    );
    this.name = "Lz4Missing";
  }
}

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

/** The liblz4 symbols, opened on first use so that a daemon that does not compress needs no liblz4. */
function lz4(): Liblz4 {
  if (!library) {
    try {
      library = Deno.dlopen(LIBRARY, symbols);
    } catch (error) {
      throw new Lz4Missing({ cause: error });
    }
  }
  return library.symbols;
}

/**
 * Opens liblz4 now (throws Lz4Missing), so that a daemon configured to compress finds out at start. With
 * `name`, only tries that file and closes it again (a test shows the failure with a name that does not
 * exist).
 */
export function loadLz4(name?: string): void {
  if (name === undefined || name === LIBRARY) {
    lz4();
    return;
  }
  try {
    Deno.dlopen(name, symbols).close();
  } catch (error) {
    throw new Lz4Missing({ cause: error });
  }
}

/** Whether liblz4 can be opened (it is then open). */
export function lz4Available(): boolean {
  try {
    lz4();
    return true;
  } catch (error) {
    if (error instanceof Lz4Missing) return false;
    throw error;
  }
}

/** liblz4's version as major * 10000 + minor * 100 + release, such as 10904. */
export function lz4Version(): number {
  return lz4().LZ4_versionNumber();
}

/**
 * The most bytes a block of `length` input bytes can take, so that a destination this large always
 * fits; 0 for a length above LZ4_MAX_INPUT_SIZE.
 */
export function lz4CompressBound(length: number): number {
  if ((length | 0) !== length || length < 0) {
    throw new RangeError(`LZ4 input length ${length} is out of range`);
  }
  return lz4().LZ4_compressBound(length);
}

/** The address of memory[0]; an empty array has none (0, which C is then given with a length of 0). */
function addressOf(memory: Uint8Array): bigint {
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(memory));
}

/**
 * The last Uint8Array given in one role and the address of its first byte, computed again only when the
 * array is another one than last time. Holding the array keeps its bytes where the address says.
 */
class AddressCache {
  #memory: Uint8Array | undefined;
  #base = 0n;

  base(memory: Uint8Array): bigint {
    if (memory !== this.#memory) {
      this.#base = addressOf(memory);
      this.#memory = memory;
    }
    return this.#base;
  }

  forget(): void {
    this.#memory = undefined;
  }
}

/**
 * Whether memory[start, start + length) is a range inside memory, every number of it an int32 (so that
 * `x | 0` is x for each offset and length the calls are given).
 */
function inside(memory: Uint8Array, start: number, length: number): boolean {
  const end = start + length;
  return (start | 0) === start && (length | 0) === length && start >= 0 && length >= 0 &&
    end <= memory.length && end <= 0x7fff_ffff;
}

/** Whether a[aStart, +aLength) and b[bStart, +bLength), both inside their arrays, share a byte. */
function overlapping(
  a: Uint8Array,
  aStart: number,
  aLength: number,
  b: Uint8Array,
  bStart: number,
  bLength: number,
): boolean {
  if (aLength === 0 || bLength === 0 || a.buffer !== b.buffer) return false;
  const aAt = a.byteOffset + aStart;
  const bAt = b.byteOffset + bStart;
  return aAt < bAt + bLength && bAt < aAt + aLength;
}

function checkAcceleration(acceleration: number): void {
  if ((acceleration | 0) !== acceleration || acceleration < 1) {
    throw new RangeError(`LZ4 acceleration ${acceleration} is not a positive integer`);
  }
}

/** Throws RangeError unless the source and destination ranges lie inside their arrays, apart. */
function checkRanges(
  src: Uint8Array,
  srcOffset: number,
  srcLength: number,
  dst: Uint8Array,
  dstOffset: number,
  dstCapacity: number,
): void {
  if (!inside(src, srcOffset, srcLength)) throw new RangeError("The LZ4 source range lies outside its array");
  if (!inside(dst, dstOffset, dstCapacity)) {
    throw new RangeError("The LZ4 destination range lies outside its array");
  }
  if (overlapping(src, srcOffset, srcLength, dst, dstOffset, dstCapacity)) {
    throw new RangeError("The LZ4 source and destination ranges overlap");
  }
}

/** The module's own stream for compression without a dictionary, and its address (made on first use). */
let plainStream: Deno.PointerValue = null;
let plainStreamAddress = 0n;
const plainSources = new AddressCache();
const plainDestinations = new AddressCache();
const decodeSources = new AddressCache();
const decodeDestinations = new AddressCache();
const decodeDictionaries = new AddressCache();

/**
 * Compresses src[srcOffset, +srcLength) into one LZ4 block at dst[dstOffset, +dstCapacity): the block's
 * size, or 0 when it does not fit dstCapacity. A caller that wants only blocks that shrink passes
 * dstCapacity = srcLength - 1 (srcLength must be at least 1 then: a negative capacity is a RangeError,
 * like every range outside its array and overlapping ranges). `acceleration` is LZ4's (1 is the default
 * and compresses most; each step up is some 3% faster).
 */
export function lz4Compress(
  src: Uint8Array,
  srcOffset: number,
  srcLength: number,
  dst: Uint8Array,
  dstOffset: number,
  dstCapacity: number,
  acceleration = 1,
): number {
  checkRanges(src, srcOffset, srcLength, dst, dstOffset, dstCapacity);
  checkAcceleration(acceleration);
  const c = lz4();
  if (plainStream === null) {
    const stream = c.LZ4_createStream();
    if (stream === null) throw new Error("LZ4_createStream failed");
    plainStream = stream;
    plainStreamAddress = Deno.UnsafePointer.value(stream);
  }
  c.reset_stream_fast(plainStreamAddress);
  return c.compress_fast_continue(
    plainStreamAddress,
    plainSources.base(src) + BigInt(srcOffset | 0),
    plainDestinations.base(dst) + BigInt(dstOffset | 0),
    srcLength,
    dstCapacity,
    acceleration | 0,
  );
}

/**
 * Decompresses the LZ4 block src[srcOffset, +srcLength) (the whole block, exactly) into
 * dst[dstOffset, +dstCapacity): the decompressed size, or a negative number when the block is malformed,
 * decompresses to more than dstCapacity, or needs a dictionary. Never throws for the block's bytes; throws
 * RangeError for ranges outside their arrays or overlapping.
 */
export function lz4Decompress(
  src: Uint8Array,
  srcOffset: number,
  srcLength: number,
  dst: Uint8Array,
  dstOffset: number,
  dstCapacity: number,
): number {
  checkRanges(src, srcOffset, srcLength, dst, dstOffset, dstCapacity);
  return lz4().decompress_safe(
    decodeSources.base(src) + BigInt(srcOffset | 0),
    decodeDestinations.base(dst) + BigInt(dstOffset | 0),
    srcLength,
    dstCapacity,
  );
}

/**
 * lz4Decompress() for a block compressed against the dictionary dict[dictOffset, +dictLength) (of which
 * only the last 64 KiB can matter; giving more or exactly those gives the same result). A block from
 * another dictionary may decode to wrong bytes without a negative result: see the top of this module.
 * The destination must not overlap the dictionary (RangeError).
 */
export function lz4DecompressWithDictionary(
  src: Uint8Array,
  srcOffset: number,
  srcLength: number,
  dst: Uint8Array,
  dstOffset: number,
  dstCapacity: number,
  dict: Uint8Array,
  dictOffset: number,
  dictLength: number,
): number {
  checkRanges(src, srcOffset, srcLength, dst, dstOffset, dstCapacity);
  if (!inside(dict, dictOffset, dictLength)) {
    throw new RangeError("The LZ4 dictionary range lies outside its array");
  }
  if (overlapping(dst, dstOffset, dstCapacity, dict, dictOffset, dictLength)) {
    throw new RangeError("The LZ4 destination and dictionary ranges overlap");
  }
  return lz4().decompress_safe_using_dict(
    decodeSources.base(src) + BigInt(srcOffset | 0),
    decodeDestinations.base(dst) + BigInt(dstOffset | 0),
    srcLength,
    dstCapacity,
    decodeDictionaries.base(dict) + BigInt(dictOffset | 0),
    dictLength,
  );
}

/**
 * Compresses frames into independent LZ4 blocks against one dictionary at a time (one per circuit and
 * direction): each block decodes with lz4DecompressWithDictionary() and the same dictionary alone, in
 * any order. Without a dictionary its blocks are plain ones (lz4Decompress()). How: see the top of this
 * module. compress() throws only for ranges outside their arrays or overlapping, and on a closed
 * compressor (bugs).
 */
export class Lz4DictionaryCompressor implements Disposable {
  /** LZ4's acceleration for every block (1, the default, compresses most). */
  readonly acceleration: number;
  readonly #c: Liblz4;
  /** The working stream, which every frame starts from a copy of the dictionary stream. */
  #working: Deno.PointerValue;
  readonly #workingAddress: bigint;
  /** The stream LZ4_loadDict() fills, never compressed with. */
  #dictionaryStream: Deno.PointerValue;
  /** Views of the two streams' C memory, for the copy; dropped before the streams are freed. */
  #workingBytes: Uint8Array | undefined;
  #dictionaryStreamBytes: Uint8Array | undefined;
  /** The dictionary's array (held, so that its bytes stay where LZ4 remembers them) and its range's end. */
  #dictionary: Uint8Array | undefined;
  #dictionaryEnd = 0;
  #dictionaryStart = 0;
  readonly #sources = new AddressCache();
  readonly #destinations = new AddressCache();

  constructor(acceleration = 1) {
    checkAcceleration(acceleration);
    this.acceleration = acceleration;
    const c = this.#c = lz4();
    const size = c.LZ4_sizeofState();
    const working = c.LZ4_createStream();
    const dictionaryStream = c.LZ4_createStream();
    if (working === null || dictionaryStream === null) {
      c.LZ4_freeStream(working);
      c.LZ4_freeStream(dictionaryStream);
      throw new Error("LZ4_createStream failed");
    }
    this.#working = working;
    this.#workingAddress = Deno.UnsafePointer.value(working);
    this.#dictionaryStream = dictionaryStream;
    this.#workingBytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(working, size));
    this.#dictionaryStreamBytes = new Uint8Array(
      Deno.UnsafePointerView.getArrayBuffer(dictionaryStream, size),
    );
  }

  /**
   * Compresses against dict[offset, +length) from now on (LZ4 uses its last 64 KiB). LZ4 keeps the bytes'
   * address, not a copy: they must stay valid and unchanged until the next setDictionary(),
   * clearDictionary() or close(), and no source or destination of compress() may overlap them.
   */
  setDictionary(dict: Uint8Array, offset: number, length: number): void {
    if (!inside(dict, offset, length)) {
      throw new RangeError("The LZ4 dictionary range lies outside its array");
    }
    if (this.#dictionaryStream === null) throw new Error("The LZ4 compressor is closed");
    const loaded = this.#c.LZ4_loadDict(this.#dictionaryStream, addressOf(dict) + BigInt(offset | 0), length);
    // LZ4_loadDict() uses nothing of a dictionary under 8 bytes (its HASH_UNIT on 64 bits): no dictionary.
    this.#dictionary = loaded > 0 ? dict : undefined;
    this.#dictionaryStart = offset + length - loaded;
    this.#dictionaryEnd = offset + length;
  }

  /** Compresses without a dictionary from now on (blocks for lz4Decompress()). */
  clearDictionary(): void {
    if (this.#dictionaryStream === null) throw new Error("The LZ4 compressor is closed");
    this.#c.LZ4_loadDict(this.#dictionaryStream, 0n, 0);
    this.#dictionary = undefined;
  }

  /**
   * Compresses src[srcOffset, +srcLength) into one block at dst[dstOffset, +dstCapacity): its size, or 0
   * when it does not fit dstCapacity (pass srcLength - 1 to keep only blocks that shrink).
   */
  compress(
    src: Uint8Array,
    srcOffset: number,
    srcLength: number,
    dst: Uint8Array,
    dstOffset: number,
    dstCapacity: number,
  ): number {
    checkRanges(src, srcOffset, srcLength, dst, dstOffset, dstCapacity);
    const working = this.#workingBytes;
    const prepared = this.#dictionaryStreamBytes;
    if (working === undefined || prepared === undefined) throw new Error("The LZ4 compressor is closed");
    const c = this.#c;
    const dictionary = this.#dictionary;
    if (dictionary === undefined) {
      c.reset_stream_fast(this.#workingAddress);
    } else {
      if (dictionary.length < this.#dictionaryEnd) {
        throw new Error("The LZ4 dictionary's buffer was detached or shrunk while in use");
      }
      const start = this.#dictionaryStart;
      const length = this.#dictionaryEnd - start;
      if (
        overlapping(src, srcOffset, srcLength, dictionary, start, length) ||
        overlapping(dst, dstOffset, dstCapacity, dictionary, start, length)
      ) {
        throw new RangeError("The LZ4 source or destination range overlaps the dictionary");
      }
      working.set(prepared);
    }
    return c.compress_fast_continue(
      this.#workingAddress,
      this.#sources.base(src) + BigInt(srcOffset | 0),
      this.#destinations.base(dst) + BigInt(dstOffset | 0),
      srcLength,
      dstCapacity,
      this.acceleration | 0,
    );
  }

  /** Frees both streams and lets go of the dictionary; safe to call twice. */
  close(): void {
    if (this.#working === null) return;
    this.#workingBytes = undefined;
    this.#dictionaryStreamBytes = undefined;
    this.#dictionary = undefined;
    this.#sources.forget();
    this.#destinations.forget();
    this.#c.LZ4_freeStream(this.#working);
    this.#c.LZ4_freeStream(this.#dictionaryStream);
    this.#working = null;
    this.#dictionaryStream = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
