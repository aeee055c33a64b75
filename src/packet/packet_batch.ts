/**
 * A batch of packets in one ArrayBuffer, the unit every part of the datapath works on (wireguard-go
 * passes `bufs, sizes, offset` the same way). The memory holds `buffers` buffers of `bufferSize` bytes;
 * an entry is a packet: `offset[i]` (from the start of `memory`) and `length[i]`. A packet starts
 * HEADROOM bytes into its buffer, so that the vid byte, stage headers and a virtio-net header can be put
 * in front of it without a copy, and TAILROOM bytes stay free after the largest one for stage trailers.
 *
 * Entries are not buffers: a received UDP GRO message is one buffer holding many entries. On the send
 * side each entry has a buffer of its own, `home[i]`, and `home[buffers - 1]` is a spare one that a TCP
 * superframe is swapped into before it is cut into entries. A stage drops an entry by setting its length
 * to DROPPED. Nothing here allocates after construction.
 */

/** Bytes kept free in front of every packet. */
export const HEADROOM = 64;
/** Bytes kept free after the largest packet. */
export const TAILROOM = 64;
/** The length of an entry a stage dropped. */
export const DROPPED = -1;

export class PacketBatch {
  /** The whole memory: buffers, then the extra area (see reserve()). */
  readonly memory: Uint8Array<ArrayBuffer>;
  readonly buffers: number;
  readonly bufferSize: number;
  /** Entries the batch can hold. */
  readonly capacity: number;
  /**
   * Entries a link read fills at most: `buffers` less the spare on a send batch made with `readLimit`,
   * whose further entries are for the fragments its frames may become (src/datapath/fragmentation.ts).
   */
  readonly readLimit: number;
  readonly offset: Int32Array<ArrayBuffer>;
  readonly length: Int32Array<ArrayBuffer>;
  /** Received entries: the address id of the sender (see UnderlayBatch), or -1 for an unknown one. */
  readonly source: Int32Array<ArrayBuffer>;
  /** Send side: the buffer each entry is read into; the last one is the spare. */
  readonly home: Int32Array<ArrayBuffer>;
  /** Entries in use, from 0. */
  count = 0;
  readonly #extraStart: number;
  #extraUsed = 0;
  /** Per buffer: a view of the whole buffer, and of its packet area (from HEADROOM). */
  readonly #bufferViews: Uint8Array<ArrayBuffer>[];
  readonly #packetViews: Uint8Array<ArrayBuffer>[];

  /** `maxPacket` is the largest packet a buffer holds; `extraBytes` is room for reserve(). */
  constructor(
    { buffers, maxPacket, entries = buffers, readLimit = entries, extraBytes = 0 }: {
      buffers: number;
      maxPacket: number;
      entries?: number;
      readLimit?: number;
      extraBytes?: number;
    },
  ) {
    // Buffers start on 64-byte boundaries (cache lines).
    this.bufferSize = Math.ceil((HEADROOM + maxPacket + TAILROOM) / 64) * 64;
    this.buffers = buffers;
    this.capacity = entries;
    this.readLimit = Math.min(readLimit, entries);
    this.#extraStart = buffers * this.bufferSize;
    this.memory = new Uint8Array(this.#extraStart + extraBytes);
    this.offset = new Int32Array(entries);
    this.length = new Int32Array(entries);
    this.source = new Int32Array(entries);
    this.home = new Int32Array(buffers);
    for (let k = 0; k < buffers; k++) this.home[k] = k;
    this.#bufferViews = Array.from(
      { length: buffers },
      (_, k) => this.memory.subarray(k * this.bufferSize, (k + 1) * this.bufferSize),
    );
    this.#packetViews = this.#bufferViews.map((view) => view.subarray(HEADROOM));
  }

  /** Where a packet in buffer `k` starts, from the start of `memory`. */
  packetStart(k: number): number {
    return k * this.bufferSize + HEADROOM;
  }

  /** The largest packet a buffer takes. */
  get maxPacket(): number {
    return this.bufferSize - HEADROOM - TAILROOM;
  }

  /** Buffer `k`, whole. */
  bufferView(k: number): Uint8Array<ArrayBuffer> {
    return this.#bufferViews[k];
  }

  /** Buffer `k` from where its packet starts. */
  packetView(k: number): Uint8Array<ArrayBuffer> {
    return this.#packetViews[k];
  }

  /**
   * `size` bytes of the extra area, in the same ArrayBuffer as the packets (so that copies between them
   * allocate nothing: src/bytes.ts). Throws when the area is used up.
   */
  reserve(size: number): Uint8Array<ArrayBuffer> {
    const start = this.#extraStart + this.#extraUsed;
    if (start + size > this.memory.length) throw new RangeError("The packet batch has no extra room left");
    this.#extraUsed += size;
    return this.memory.subarray(start, start + size);
  }

  /** A copy of entry `i`'s bytes (for the rare packet that leaves the datapath, such as a control one). */
  copy(i: number): Uint8Array<ArrayBuffer> {
    return this.memory.slice(this.offset[i], this.offset[i] + this.length[i]);
  }

  /** Removes dropped entries from [start, count), keeping the order; returns how many were removed. */
  compact(start = 0): number {
    let to = start;
    for (let i = start; i < this.count; i++) {
      if (this.length[i] < 0) continue;
      if (to !== i) {
        this.offset[to] = this.offset[i];
        this.length[to] = this.length[i];
        this.source[to] = this.source[i];
      }
      to++;
    }
    const removed = this.count - to;
    this.count = to;
    return removed;
  }
}
