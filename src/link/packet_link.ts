/**
 * What the datapath core needs of a link device, a batch at a time (wireguard-go's tun.Device cut):
 * read frames into a batch, write a range of a batch. DeviceLink (device_link.ts) is the one
 * implementation; what differs between a kernel device and an in-memory one is only its FrameIo.
 */

import type { PacketBatch } from "../packet/packet_batch.ts";

/** TAP carries Ethernet frames (layer 2), TUN carries IP packets (layer 3). */
export type LinkMode = "tap" | "tun";

export interface PacketLink {
  /**
   * Reads ready frames into `batch` from entry `batch.count` on (each into its own buffer, at its
   * packet start) until the batch is full or no frame is ready. Returns how many entries it added, or -1
   * when the device failed before any frame was read.
   */
  read(batch: PacketBatch): number;
  /** Whether a frame read earlier still has segments to give (read() goes on with them first). */
  readonly pending: boolean;
  /** Writes entries [start, end) of `batch` (dropped ones skipped); may hold some back until flush(). */
  write(batch: PacketBatch, start: number, end: number): void;
  /** Writes whatever write() held back (on every link of the isolate). */
  flush(): void;
}

/**
 * One frame at a time in and out of a device: the kernel's tap or tun descriptor (ffi/tun.ts, TunFrames)
 * or an in-memory one (tests/fakes/). With a virtio-net header the header comes first in what read()
 * gives and write() takes.
 */
export interface FrameIo {
  /** Reads one frame into `into` at 0, at most `max` bytes: its length, 0 when none is ready, -1 on failure. */
  read(into: Uint8Array<ArrayBuffer>, max: number): number;
  /**
   * Writes `memory[at, at + length)` as one frame, after a zero virtio-net header when `header` is set;
   * false when the device refused it.
   */
  write(memory: Uint8Array<ArrayBuffer>, at: number, length: number, header: boolean): boolean;
  /**
   * Writes `view[0, length)` as one frame (its header included, for a device with one): the plain write
   * for a frame that starts a view made once, so that no iovec is needed. False when refused.
   */
  writeView(view: Uint8Array<ArrayBuffer>, length: number): boolean;
}
