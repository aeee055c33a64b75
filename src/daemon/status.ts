/** What the daemon reports of itself: `vela status`, the control protocol and the metrics read these. */

import type { Role, SessionState } from "../session.ts";
import type { Compression } from "../wire.ts";
import type { LinkMode } from "../link/link_device.ts";

/** Counted drops of control traffic, by reason. */
export type ControlDrops = Record<string, number>;

/** One circuit as `vela status` shows it. */
export interface CircuitStatus {
  /** The peer as the operator named it (initiator), or its address (responder). */
  peer: string;
  address: string;
  port: number;
  vid: number;
  role: Role;
  state: SessionState;
  ifname: string | null;
  mode: LinkMode;
  mtu: number;
  /** Seconds since the circuit was established, null while it is not. */
  uptimeSeconds: number | null;
  /** The last keepalive round trip in milliseconds, null before one was measured. */
  rttMs: number | null;
  /**
   * Frames sent to the peer and their bytes; frames from the peer written to the device and theirs. A frame
   * is one on the wire: what the device gave as a TCP superframe counts as the segments it was cut into,
   * and frames joined into a superframe for the device count one by one. A byte is one of the inner
   * Ethernet frame (tap) or IP packet (tun), headers included; the virtio-net header, the vid byte, the
   * AEAD header and tag, fragment headers and the underlay's UDP and IP are not counted. So one end's tx
   * equals the other's rx for the frames that crossed; dropped frames are counted in `drops` only.
   */
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** The data cipher: "aes-256-gcm", "chacha20-poly1305", "clear", or "-" while a keyed circuit has no keys. */
  cipher: string;
  /** Seconds since the session keys in use were made, null without keys. */
  keyAgeSeconds: number | null;
  /** How many times the keys were renewed (or a restarted peer's new handshake took over). */
  rotations: number;
  /**
   * Frames sent in fragments (too long for one datagram on the path) and frames joined from the peer's
   * fragments; absent where the circuit does not fragment.
   */
  fragmented?: number;
  reassembled?: number;
  /**
   * What the handshake agreed on of compression (src/datapath/compress_stage.ts): "lz4" per frame,
   * "dictionary" with delayed dictionaries too, or "off".
   */
  compression: Compression;
  /** In the dictionary mode: the epoch of the dictionary this side's frames use (0: none yet), and how many it used. */
  dictionaryEpoch?: number;
  dictionariesUsed?: number;
  /**
   * With compression: the bytes of the frames the stage was given on the way out (as txBytes counts them),
   * the bytes they went out as (code bytes included, before the seal), the frames sent uncompressed (not
   * tried, or not smaller), and how often it stopped trying for a while on traffic that did not compress.
   * Absent when compression is off.
   */
  compressIn?: number;
  compressOut?: number;
  sentUncompressed?: number;
  compressionPauses?: number;
  /** The largest datagram sent whole to the peer, from the path MTU (0: the circuit does not fragment). */
  datagramLimit?: number;
  /** The path MTU to the peer as probing found it; absent until a probe has settled something. */
  pathMtu?: number;
  /** The addresses on the interface (CIDR), those VELA derived included; empty on a bridged tap. */
  addresses: string[];
  /** Which of `addresses` VELA derived (the IPv6 pair of a circuit given none), not the operator. */
  derivedAddresses: string[];
  /** Seconds since the peer was last heard, null before it was. */
  lastHeardSeconds: number | null;
  /** Seconds since the circuit went down (or started) while it is not established, else null. */
  downSinceSeconds: number | null;
  /** Why the peer refused the circuit (its NAK's text), while it is refused; else null. */
  refusal: string | null;
  /** The handshake number of the keys in use (0 before the first). */
  handshake: number;
  /**
   * Frames dropped by reason: the underlay could not send them, the device refused them; the AEAD stage:
   * a tag that does not verify, a counter seen already, one older than the replay window, a key epoch the
   * circuit does not hold, and frames not sent because the key had sealed all it may.
   */
  drops: {
    sendFailed: number;
    deviceRefused: number;
    badTag: number;
    replayedData: number;
    tooOld: number;
    noKey: number;
    keyExhausted: number;
    /** Frames the circuit's filter kept from crossing (a circuit without a filter: 0 or absent). */
    filtered?: number;
    /** Frames from the peer of which only some fragments came in time (given up by reassembly). */
    reassembly?: number;
    /** Frames from the peer that did not decompress (an unknown code, a malformed block). */
    badCompression?: number;
    /** Frames from the peer that named a dictionary this side does not hold. */
    dictionaryMissing?: number;
  };
}

export interface DaemonStatus {
  port: number;
  listen: boolean;
  circuits: CircuitStatus[];
  /** Datagrams dropped on the way in, by reason. */
  drops: Record<string, number>;
  /** Wake-ups of the sending Worker that waited for more frames under bulk traffic (--moderation-us). */
  moderatedWakeups: number;
  /** UDP GSO sends the kernel refused, each resent without GSO (none: no datapath that uses GSO). */
  gsoRefusals?: number;
}
