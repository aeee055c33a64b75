/** What the datapath needs of a tap or tun device; ffi/tun.ts is the kernel one, tests/fakes/ has a fake. */

/** TAP carries Ethernet frames (layer 2), TUN carries IP packets (layer 3). */
export type LinkMode = "tap" | "tun";

export interface LinkDevice extends Disposable {
  /** The interface name, such as "vela3". */
  readonly name: string;
  readonly mode: LinkMode;
  /** Resolves true once at least one frame can be read, false once the device is closed. */
  waitReadable(): Promise<boolean>;
  /** Reads one frame into `buffer` without blocking: its length, or 0 when no frame is ready. */
  tryRead(buffer: Uint8Array): number;
  /** Writes one frame without blocking: 0 when the kernel took it, otherwise the errno it refused it with. */
  write(frame: Uint8Array): number;
  /** Releases the device; a device VELA created disappears with it. Safe to call twice. */
  close(): void;
}
