/**
 * The datapath's counters: per circuit, CIRCUIT_FIELDS float64 values per slot in one Float64Array
 * (shared memory when the datapath runs on Workers), and datapath-wide counts in another. Each value is
 * written by one thread only.
 */

/** The fields of one circuit's counters, at slot * CIRCUIT_FIELDS. */
export const Counter = {
  /**
   * Frames from the device sent to the peer, and their bytes. A frame is one on the wire (a TCP superframe
   * the device gave counts as the segments it was cut into); its bytes are the inner Ethernet frame (tap)
   * or IP packet (tun), headers included, without the virtio-net header, a stage's overhead (AEAD header
   * and tag), the vid byte or fragment headers. Frames that were dropped count in TX_DROPPED only.
   */
  TX_PACKETS: 0,
  TX_BYTES: 1,
  /**
   * Frames from the peer written to the device, and their bytes, as TX_* counts them: each frame as it came
   * from the peer, before it was joined into a superframe for the device, so that one end's RX equals the
   * other's TX for the frames that crossed.
   */
  RX_PACKETS: 2,
  RX_BYTES: 3,
  /** Frames that could not be sent, or that were malformed on the way out. */
  TX_DROPPED: 4,
  /** Frames the device refused, or that a stage dropped on the way in. */
  RX_DROPPED: 5,
  /** The AEAD stage (src/datapath/aead_stage.ts): frames dropped on the way in, by reason. */
  BAD_TAG: 6,
  REPLAYED_DATA: 7,
  TOO_OLD: 8,
  /** A frame for a key epoch the circuit does not hold, or too short to be sealed. */
  NO_KEY: 9,
  /** Frames sealed and opened, in all (the session renews keys by how many one key has done). */
  SEALED: 10,
  OPENED: 11,
  /** Frames not sent because the key had sealed all it may (RFC 9001 limits), or there was none yet. */
  KEY_EXHAUSTED: 12,
  /** Frames the circuit's filter stage kept from crossing, both ways (src/datapath/filter_stage.ts). */
  FILTERED: 13,
  /** Frames sent in fragments, frames joined from them, and partly received frames given up (src/datapath/fragmentation.ts). */
  FRAGMENTED: 14,
  REASSEMBLED: 15,
  REASSEMBLY_DROPPED: 16,
  /**
   * The compression stage (src/datapath/compress_stage.ts): the bytes of the frames it was given on the way
   * out and the bytes they went out as (code bytes counted), frames sent uncompressed (not tried, or not
   * shrunk), windows after which it stopped trying for a while, and frames dropped on the way in because
   * they did not decompress (an unknown code, a malformed block).
   */
  COMPRESS_IN: 17,
  COMPRESS_OUT: 18,
  SENT_UNCOMPRESSED: 19,
  COMPRESSION_PAUSES: 20,
  BAD_COMPRESSION: 21,
  /**
   * Delayed dictionaries (the dictionary mode): written by the receiving side, the newest dictionary of
   * the peer's frames it holds whole (its epoch, 0 for none, and the first 8 bytes of its SHA-256 as two
   * 32-bit halves: what the daemon tells the peer in a DACK) and the epoch the peer's frames use; frames
   * that named an epoch it does not hold. Written by the sending side: the epoch its frames use (0: none
   * yet, stateless blocks) and how many dictionaries it has taken into use.
   */
  DICTIONARY_READY: 22,
  DICTIONARY_READY_HASH_HIGH: 23,
  DICTIONARY_READY_HASH_LOW: 24,
  DICTIONARY_PEER_USES: 25,
  DICTIONARY_MISSING: 26,
  DICTIONARY_IN_USE: 27,
  DICTIONARIES_USED: 28,
} as const;
export const CIRCUIT_FIELDS = 29;

/** Datapath-wide counts: drops by reason, control datagrams handed up, moderated wake-ups. */
export const DatapathCount = {
  UNKNOWN_CIRCUIT: 0,
  RUNT: 1,
  EMPTY: 2,
  CONTROL: 3,
  MODERATED_WAKEUPS: 4,
  /** Control datagrams too short or long for any message, or of no known protocol version. */
  CONTROL_MALFORMED: 5,
  /** Control datagrams not handed up: the queue to the daemon was full, or strangers' budget spent. */
  CONTROL_OVERFLOW: 6,
  /** Errors a Worker caught in forwarding a batch (a bug): it counted the error and went on. */
  DATAPATH_ERRORS: 7,
  /** UDP GSO messages the kernel refused: each batch went again without (src/underlay/kernel_underlay.ts). */
  GSO_REFUSALS: 8,
  /** Fragments refused: malformed, duplicated, or for a circuit that does not fragment. */
  FRAGMENT_REFUSED: 9,
} as const;
export const DATAPATH_COUNT_FIELDS = 10;

/** One circuit's counters: `values[base + Counter.X]`. */
export interface CircuitCounts {
  readonly values: Float64Array<ArrayBufferLike>;
  readonly base: number;
}

/** A circuit's counters as the daemon shows them. */
export interface CircuitCounters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  txDropped: number;
  rxDropped: number;
  badTag: number;
  replayedData: number;
  tooOld: number;
  noKey: number;
  sealed: number;
  opened: number;
  keyExhausted: number;
  filtered: number;
  fragmented: number;
  reassembled: number;
  reassemblyDropped: number;
  compressIn: number;
  compressOut: number;
  sentUncompressed: number;
  compressionPauses: number;
  badCompression: number;
  /** State, not counts (read as they are, not added to an offset): see Counter.DICTIONARY_*. */
  dictionaryReady: number;
  dictionaryReadyHash: bigint;
  dictionaryPeerUses: number;
  dictionaryInUse: number;
  dictionaryMissing: number;
  dictionariesUsed: number;
}

export interface DatapathCounters {
  /** Data datagrams for no known circuit. */
  unknownCircuit: number;
  /** Data datagrams with a vid and nothing after it. */
  runt: number;
  /** Empty datagrams. */
  empty: number;
  /** Control datagrams handed up. */
  control: number;
  /** Control datagrams dropped before they were handed up: malformed, or over a bound (see DatapathCount). */
  controlMalformed: number;
  controlOverflow: number;
  datapathErrors: number;
  gsoRefusals: number;
  fragmentRefused: number;
  /** Wake-ups of a sending Worker that waited for more frames under bulk traffic (src/datapath/send_moderation.ts). */
  moderatedWakeups: number;
}

export function zeroCounters(): CircuitCounters {
  return {
    txPackets: 0,
    txBytes: 0,
    rxPackets: 0,
    rxBytes: 0,
    txDropped: 0,
    rxDropped: 0,
    badTag: 0,
    replayedData: 0,
    tooOld: 0,
    noKey: 0,
    sealed: 0,
    opened: 0,
    keyExhausted: 0,
    filtered: 0,
    fragmented: 0,
    reassembled: 0,
    reassemblyDropped: 0,
    compressIn: 0,
    compressOut: 0,
    sentUncompressed: 0,
    compressionPauses: 0,
    badCompression: 0,
    dictionaryReady: 0,
    dictionaryReadyHash: 0n,
    dictionaryPeerUses: 0,
    dictionaryInUse: 0,
    dictionaryMissing: 0,
    dictionariesUsed: 0,
  };
}

/** `into` = `offset` + the slot's values. */
export function readCounters(counts: CircuitCounts, offset: CircuitCounters, into: CircuitCounters): void {
  const v = counts.values;
  const b = counts.base;
  into.txPackets = offset.txPackets + v[b + Counter.TX_PACKETS];
  into.txBytes = offset.txBytes + v[b + Counter.TX_BYTES];
  into.rxPackets = offset.rxPackets + v[b + Counter.RX_PACKETS];
  into.rxBytes = offset.rxBytes + v[b + Counter.RX_BYTES];
  into.txDropped = offset.txDropped + v[b + Counter.TX_DROPPED];
  into.rxDropped = offset.rxDropped + v[b + Counter.RX_DROPPED];
  into.badTag = offset.badTag + v[b + Counter.BAD_TAG];
  into.replayedData = offset.replayedData + v[b + Counter.REPLAYED_DATA];
  into.tooOld = offset.tooOld + v[b + Counter.TOO_OLD];
  into.noKey = offset.noKey + v[b + Counter.NO_KEY];
  into.sealed = offset.sealed + v[b + Counter.SEALED];
  into.opened = offset.opened + v[b + Counter.OPENED];
  into.keyExhausted = offset.keyExhausted + v[b + Counter.KEY_EXHAUSTED];
  into.filtered = offset.filtered + v[b + Counter.FILTERED];
  into.fragmented = offset.fragmented + v[b + Counter.FRAGMENTED];
  into.reassembled = offset.reassembled + v[b + Counter.REASSEMBLED];
  into.reassemblyDropped = offset.reassemblyDropped + v[b + Counter.REASSEMBLY_DROPPED];
  into.compressIn = offset.compressIn + v[b + Counter.COMPRESS_IN];
  into.compressOut = offset.compressOut + v[b + Counter.COMPRESS_OUT];
  into.sentUncompressed = offset.sentUncompressed + v[b + Counter.SENT_UNCOMPRESSED];
  into.compressionPauses = offset.compressionPauses + v[b + Counter.COMPRESSION_PAUSES];
  into.badCompression = offset.badCompression + v[b + Counter.BAD_COMPRESSION];
  into.dictionaryReady = v[b + Counter.DICTIONARY_READY];
  into.dictionaryReadyHash = (BigInt(v[b + Counter.DICTIONARY_READY_HASH_HIGH]) << 32n) |
    BigInt(v[b + Counter.DICTIONARY_READY_HASH_LOW]);
  into.dictionaryPeerUses = v[b + Counter.DICTIONARY_PEER_USES];
  into.dictionaryInUse = v[b + Counter.DICTIONARY_IN_USE];
  into.dictionaryMissing = offset.dictionaryMissing + v[b + Counter.DICTIONARY_MISSING];
  into.dictionariesUsed = offset.dictionariesUsed + v[b + Counter.DICTIONARIES_USED];
}

export function readDatapathCounters(values: Float64Array<ArrayBufferLike>): DatapathCounters {
  return {
    unknownCircuit: values[DatapathCount.UNKNOWN_CIRCUIT],
    runt: values[DatapathCount.RUNT],
    empty: values[DatapathCount.EMPTY],
    control: values[DatapathCount.CONTROL],
    controlMalformed: values[DatapathCount.CONTROL_MALFORMED],
    controlOverflow: values[DatapathCount.CONTROL_OVERFLOW],
    datapathErrors: values[DatapathCount.DATAPATH_ERRORS],
    gsoRefusals: values[DatapathCount.GSO_REFUSALS],
    fragmentRefused: values[DatapathCount.FRAGMENT_REFUSED],
    moderatedWakeups: values[DatapathCount.MODERATED_WAKEUPS],
  };
}
