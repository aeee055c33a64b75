/**
 * Byte work for the datapath that allocates nothing per call: copies between views of one ArrayBuffer,
 * and the Internet checksum's sum read 32 bits at a time. Both go through views of the whole buffer,
 * made once per ArrayBuffer (a `subarray()` or a `DataView` made per frame would be garbage per frame).
 */

interface WholeViews {
  readonly bytes: Uint8Array;
  readonly data: DataView;
}

const wholeViews = new WeakMap<ArrayBufferLike, WholeViews>();

function whole(buffer: ArrayBufferLike): WholeViews {
  let views = wholeViews.get(buffer);
  if (views === undefined) {
    views = { bytes: new Uint8Array(buffer), data: new DataView(buffer) };
    wholeViews.set(buffer, views);
  }
  return views;
}

/** Whether two byte arrays hold the same bytes (keys, ephemerals; not constant-time). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Copies `src[from, to)` to `dst` at `dstAt` (overlap allowed). Without allocating when both are views
 * of one ArrayBuffer, as the datapath Worker's buffers are.
 */
export function copyBytes(dst: Uint8Array, dstAt: number, src: Uint8Array, from: number, to: number): void {
  if (dst.buffer === src.buffer) {
    whole(dst.buffer).bytes.copyWithin(dst.byteOffset + dstAt, src.byteOffset + from, src.byteOffset + to);
  } else {
    dst.set(src.subarray(from, to), dstAt);
  }
}

/**
 * The 16-bit ones' complement sum of bytes [start, end), big-endian words as on the wire, added to `sum`
 * (not folded). Read as little-endian 32-bit words and byte-swapped once at the end: ones' complement
 * addition does not care in which order the bytes of a word are taken (RFC 1071, 2.B).
 */
export function onesSum(bytes: Uint8Array, start: number, end: number, sum = 0): number {
  const data = whole(bytes.buffer).data;
  const stop = bytes.byteOffset + end;
  let i = bytes.byteOffset + start;
  let little = 0; // Under 2^53 for any frame: 2^14 words of under 2^32 each per 64 KiB.
  for (; i + 4 <= stop; i += 4) little += data.getUint32(i, true);
  if (i + 2 <= stop) {
    little += data.getUint16(i, true);
    i += 2;
  }
  if (i < stop) little += data.getUint8(i); // An odd last byte is the high byte of a big-endian word.
  // 2^16 = 1 modulo 2^16 - 1, so folding the high halves in keeps the sum.
  while (little > 0xffff) little = (little & 0xffff) + Math.floor(little / 0x10000);
  return sum + (((little & 0xff) << 8) | (little >> 8));
}
