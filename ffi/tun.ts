/** Tap and tun devices through /dev/net/tun: open, TUNSETIFF, nonblocking read and write, poll. */

import type { LinkDevice, LinkMode } from "../src/link_device.ts";
import { check, cString, Errno, errno, libc, SyscallError } from "./libc.ts";
import { ifreqName, ifreqWithFlags, Linux, pollFds, pollRevents } from "./structs.ts";

const TUN_PATH = "/dev/net/tun";

/** The TUNSETIFF flags for a mode: no packet-information header either way. */
export function tunFlags(mode: LinkMode): number {
  return (mode === "tap" ? Linux.IFF_TAP : Linux.IFF_TUN) | Linux.IFF_NO_PI;
}

/**
 * A kernel tap or tun device owned by this process. It is not persistent: the kernel removes the
 * interface when the descriptor is closed, so a crashed daemon leaks no interface either.
 */
export class TunDevice implements LinkDevice {
  readonly name: string;
  readonly mode: LinkMode;
  readonly #fd: number;
  /** An eventfd that close() signals to wake a pending waitReadable(). */
  readonly #wakeFd: number;
  readonly #pollSet: Uint8Array<ArrayBuffer>;
  #waiting: Promise<boolean> | undefined;
  #closed = false;
  /** Holders of the descriptor besides this object (the datapath Worker); close() waits for them. */
  #leases = 0;
  #released = false;

  /**
   * Whether every frame read or written carries a virtio-net header and the kernel may hand over TCP
   * superframes (only the datapath Worker reads and writes such a device).
   */
  readonly offload: boolean;
  /** Frames written may be UDP superframes (USO): the kernel took TUN_F_USO4 and TUN_F_USO6. */
  readonly udpOffload: boolean;

  private constructor(
    fd: number,
    wakeFd: number,
    name: string,
    mode: LinkMode,
    offload: boolean,
    udpOffload: boolean,
  ) {
    this.offload = offload;
    this.udpOffload = udpOffload;
    this.#fd = fd;
    this.#wakeFd = wakeFd;
    this.name = name;
    this.mode = mode;
    this.#pollSet = pollFds([fd, wakeFd], Linux.POLLIN);
  }

  /** Creates the interface (`name` may hold "%d" for the kernel to number it). */
  static open(name: string, mode: LinkMode, options: { offload?: boolean } = {}): TunDevice {
    if (options.offload) {
      // Probe: a device with virtio-net headers that takes checksum and TCP segmentation offload.
      try {
        return TunDevice.#open(name, mode, true);
      } catch (error) {
        if (!(error instanceof SyscallError) || error.syscall !== "ioctl(TUNSETOFFLOAD)") throw error;
      }
    }
    return TunDevice.#open(name, mode, false);
  }

  static #open(name: string, mode: LinkMode, offload: boolean): TunDevice {
    const c = libc();
    const request = ifreqWithFlags(name, tunFlags(mode) | (offload ? Linux.IFF_VNET_HDR : 0));
    const fd = c.open(cString(TUN_PATH), Linux.O_RDWR | Linux.O_NONBLOCK | Linux.O_CLOEXEC, 0);
    if (fd < 0) throw new SyscallError(`open(${TUN_PATH})`, errno());
    try {
      check(c.ioctl(fd, BigInt(Linux.TUNSETIFF), request), "ioctl(TUNSETIFF)");
      let udpOffload = false;
      if (offload) {
        const features = Linux.TUN_F_CSUM | Linux.TUN_F_TSO4 | Linux.TUN_F_TSO6;
        // A kernel that takes USO here (Linux 6.2 and later) also takes UDP superframes written to the
        // device. Reads stay without them: the flags are set back to TCP only.
        const uso = features | Linux.TUN_F_USO4 | Linux.TUN_F_USO6;
        try {
          check(c.ioctl_value(fd, BigInt(Linux.TUNSETOFFLOAD), BigInt(uso)), "ioctl(TUNSETOFFLOAD)");
          udpOffload = true;
        } catch (error) {
          if (!(error instanceof SyscallError) || error.errno !== Errno.EINVAL) throw error;
        }
        check(c.ioctl_value(fd, BigInt(Linux.TUNSETOFFLOAD), BigInt(features)), "ioctl(TUNSETOFFLOAD)");
      }
      const wakeFd = check(c.eventfd(0, Linux.EFD_NONBLOCK | Linux.EFD_CLOEXEC), "eventfd");
      return new TunDevice(fd, wakeFd, ifreqName(request), mode, offload, udpOffload);
    } catch (error) {
      c.close(fd);
      throw error;
    }
  }

  /** The descriptor, for the datapath Worker (which must retain() the device while it uses it). */
  get fd(): number {
    return this.#fd;
  }

  retain(): void {
    this.#leases++;
  }

  release(): void {
    if (this.#leases > 0) this.#leases--;
    if (this.#closed && this.#leases === 0) this.#releaseDescriptors();
  }

  #releaseDescriptors(): void {
    if (this.#released) return;
    this.#released = true;
    const c = libc();
    c.close(this.#fd);
    c.close(this.#wakeFd);
  }

  waitReadable(): Promise<boolean> {
    this.#waiting ??= this.#poll().finally(() => this.#waiting = undefined);
    return this.#waiting;
  }

  async #poll(): Promise<boolean> {
    while (!this.#closed) {
      // Sleeps on a helper thread without a timeout; close() wakes it through the eventfd.
      const ready = await libc().poll_wait(this.#pollSet, 2n, -1);
      if (this.#closed) return false;
      if (ready > 0 && pollRevents(this.#pollSet, 0) !== 0) return true;
    }
    return false;
  }

  tryRead(buffer: Uint8Array<ArrayBuffer>): number {
    const n = Number(libc().read(this.#fd, buffer, BigInt(buffer.length)));
    if (n >= 0) return n;
    const code = errno();
    if (code === Errno.EAGAIN || code === Errno.EINTR) return 0;
    throw new SyscallError(`read(${this.name})`, code);
  }

  write(frame: Uint8Array<ArrayBuffer>): number {
    const n = Number(libc().write(this.#fd, frame, BigInt(frame.length)));
    return n >= 0 ? 0 : errno();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().write(this.#wakeFd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
    // Closing a descriptor that a helper thread still polls is a race: wait for the poll to return,
    // and for the datapath Worker to let go of it.
    const release = () => {
      if (this.#leases === 0) this.#releaseDescriptors();
    };
    if (this.#waiting) this.#waiting.then(release, release);
    else release();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
