/**
 * A link device as the daemon holds it: a tap or tun interface it created. ffi/tun.ts (TunDevice) is the
 * kernel one, tests/fakes/ has an in-memory one. The datapath reads and writes it through `frames` in
 * the main isolate, or through its descriptor on a Worker (retained while the Worker uses it).
 */

import type { FrameIo, LinkMode } from "./packet_link.ts";

export type { LinkMode };

export interface LinkDevice extends Disposable {
  /** The interface name, such as "vela3". */
  readonly name: string;
  readonly mode: LinkMode;
  /** Frames carry a virtio-net header and reads may be TCP superframes (see src/link/device_link.ts). */
  readonly offload: boolean;
  /** Writes may be UDP superframes too. */
  readonly udpOffload: boolean;
  /** The descriptor, for a datapath Worker; -1 for a device that has none (an in-memory one). */
  readonly fd: number;
  /** Keeps the descriptor open while a Worker uses it; release() lets it go. */
  retain(): void;
  release(): void;
  /** Frames in and out of the device in this isolate. */
  readonly frames: FrameIo;
  /** Resolves true once a frame can be read, false once the device is closed. */
  waitReadable(): Promise<boolean>;
  /** Releases the device; a device VELA created disappears with it. Safe to call twice. */
  close(): void;
}
