/** Tap and tun devices through /dev/net/tun: open, TUNSETIFF, poll, and frames in and out (TunFrames). */

import { check, cString, Errno, errno, libc, SyscallError, usize } from "./libc.ts";
import {
  addressOf,
  ifreqName,
  ifreqWithFlags,
  Iovec,
  Linux,
  pollFds,
  pollRevents,
  VnetHdr,
} from "./structs.ts";

/** TAP carries Ethernet frames (layer 2), TUN carries IP packets (layer 3). */
export type TunMode = "tap" | "tun";

const TUN_PATH = "/dev/net/tun";

/** The TUNSETIFF flags for a mode: no packet-information header either way. */
export function tunFlags(mode: TunMode): number {
  return (mode === "tap" ? Linux.IFF_TAP : Linux.IFF_TUN) | Linux.IFF_NO_PI;
}

/**
 * A kernel tap or tun device owned by this process. It is not persistent: the kernel removes the
 * interface when the descriptor is closed, so a crashed daemon leaks no interface either.
 */
export class TunDevice implements Disposable {
  readonly name: string;
  readonly mode: TunMode;
  readonly #fd: number;
  /** An eventfd that close() signals to wake a pending waitReadable(). */
  readonly #wakeFd: number;
  readonly #pollSet: Uint8Array<ArrayBuffer>;
  #waiting: Promise<boolean> | undefined;
  #closed = false;
  /** Frames in and out of the device in this isolate. */
  readonly frames: TunFrames;
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
    mode: TunMode,
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
    this.frames = new TunFrames(fd);
  }

  /** Creates the interface (`name` may hold "%d" for the kernel to number it). */
  static open(name: string, mode: TunMode, options: { offload?: boolean } = {}): TunDevice {
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

  static #open(name: string, mode: TunMode, offload: boolean): TunDevice {
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

/**
 * Frames in and out of a tap or tun descriptor, one read() or writev() each, with nothing allocated per
 * frame: a write's iovecs point into the caller's memory, their 64-bit bases kept as 32-bit halves. A
 * datapath Worker makes one from the descriptor it is given.
 */
export class TunFrames {
  readonly #fd: number;
  readonly #c = libc();
  /** iovec 0: a zero virtio-net header (stored after the iovecs, so that it lives as long as they do). */
  readonly #memory = new Uint8Array(2 * Iovec.SIZE + VnetHdr.SIZE);
  readonly #view = new DataView(this.#memory.buffer);
  readonly #withHeader = this.#memory.subarray(0, 2 * Iovec.SIZE);
  readonly #withoutHeader = this.#memory.subarray(Iovec.SIZE, 2 * Iovec.SIZE);
  /** The last ArrayBuffer written from, and its address in halves. */
  #lastBuffer: ArrayBufferLike | undefined;
  #low = 0;
  #high = 0;

  constructor(fd: number) {
    this.#fd = fd;
    this.#view.setBigUint64(Iovec.BASE, addressOf(this.#memory) + BigInt(2 * Iovec.SIZE), true);
    this.#view.setBigUint64(Iovec.LEN, BigInt(VnetHdr.SIZE), true);
  }

  /** Reads one frame into `into` (at most `max` bytes): its length, 0 when none is ready, -1 on failure. */
  read(into: Uint8Array<ArrayBuffer>, max: number): number {
    const n = this.#c.read_frame(this.#fd, into, usize(max));
    if (n >= 0) return n;
    const code = errno();
    return code === Errno.EAGAIN || code === Errno.EINTR ? 0 : -1;
  }

  /** Writes `view[0, length)` with one write(); false when refused. */
  writeView(view: Uint8Array<ArrayBuffer>, length: number): boolean {
    return this.#c.write_frame(this.#fd, view, usize(length)) >= 0;
  }

  /** Writes `memory[at, at + length)`, after a zero virtio-net header when `header`; false when refused. */
  write(memory: Uint8Array<ArrayBuffer>, at: number, length: number, header: boolean): boolean {
    if (memory.buffer !== this.#lastBuffer) {
      const whole = new Uint8Array(memory.buffer as ArrayBuffer);
      const address = addressOf(whole);
      this.#lastBuffer = memory.buffer;
      this.#low = Number(address & 0xffffffffn);
      this.#high = Number(address >> 32n);
    }
    const low = this.#low + memory.byteOffset + at;
    this.#view.setUint32(Iovec.SIZE + Iovec.BASE, low >>> 0, true);
    this.#view.setUint32(Iovec.SIZE + Iovec.BASE + 4, this.#high + (low > 0xffffffff ? 1 : 0), true);
    this.#view.setUint32(Iovec.SIZE + Iovec.LEN, length, true);
    const written = header
      ? this.#c.writev_frame(this.#fd, this.#withHeader, 2)
      : this.#c.writev_frame(this.#fd, this.#withoutHeader, 1);
    return written >= 0;
  }
}
