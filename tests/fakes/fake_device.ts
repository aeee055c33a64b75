/**
 * An in-memory link device: frames injected on the "kernel side" are read by VELA, frames VELA writes are
 * recorded. With `offload` it behaves as a device opened with virtio-net headers: every frame read comes
 * after a header (a zero one unless inject() is given one, such as a TCP superframe's), and every frame
 * written is taken apart into its header and the frame.
 */

import type { LinkDevice, LinkMode } from "../../src/link/link_device.ts";
import type { FrameIo } from "../../src/link/packet_link.ts";
import { VnetHdr } from "../../ffi/structs.ts";

export class FakeDevice implements LinkDevice, FrameIo {
  readonly name: string;
  readonly mode: LinkMode;
  readonly offload: boolean;
  readonly udpOffload: boolean;
  readonly fd = -1;
  /** Frames VELA wrote into the device, oldest first (without their virtio-net header). */
  readonly written: Uint8Array[] = [];
  /** With offload, the virtio-net header of each written frame. */
  readonly writtenHeaders: Uint8Array[] = [];
  /** Frames waiting for VELA to read them (with their header, with offload). */
  readonly #pending: Uint8Array[] = [];
  /** Every pending waitReadable() resolver (a replaced pump may still be waiting). */
  readonly #waiters: ((ready: boolean) => void)[] = [];
  closed = false;
  /** When set, writes are refused. */
  refuseWith = 0;
  /** When set, reading fails (a device removed under VELA's feet). */
  failRead: Error | undefined;

  constructor(name: string, mode: LinkMode, { offload = false, udpOffload = false } = {}) {
    this.name = name;
    this.mode = mode;
    this.offload = offload;
    this.udpOffload = udpOffload;
  }

  get frames(): FrameIo {
    return this;
  }

  retain(): void {}
  release(): void {}

  /** The kernel side sends a frame (after `header` with offload): VELA will read it. */
  inject(frame: Uint8Array, header: Uint8Array = new Uint8Array(VnetHdr.SIZE)): void {
    if (this.offload) {
      const whole = new Uint8Array(VnetHdr.SIZE + frame.length);
      whole.set(header.subarray(0, VnetHdr.SIZE));
      whole.set(frame, VnetHdr.SIZE);
      this.#pending.push(whole);
    } else {
      this.#pending.push(frame.slice());
    }
    this.#release(true);
  }

  waitReadable(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.#pending.length > 0 || this.failRead) return Promise.resolve(true);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #release(ready: boolean): void {
    for (const resolve of this.#waiters.splice(0)) resolve(ready);
  }

  read(into: Uint8Array, max: number): number {
    if (this.failRead) return -1;
    const frame = this.#pending.shift();
    if (!frame) return 0;
    const length = Math.min(frame.length, max, into.length);
    into.set(frame.subarray(0, length));
    return length;
  }

  write(memory: Uint8Array, at: number, length: number, header: boolean): boolean {
    if (this.refuseWith) return false;
    const bytes = memory.slice(at, at + length);
    if (header) {
      this.writtenHeaders.push(new Uint8Array(VnetHdr.SIZE));
      this.written.push(bytes);
    } else if (this.offload) {
      // A superframe from the coalescers: its header is the first bytes.
      this.writtenHeaders.push(bytes.slice(0, VnetHdr.SIZE));
      this.written.push(bytes.slice(VnetHdr.SIZE));
    } else {
      this.written.push(bytes);
    }
    return true;
  }

  writeView(view: Uint8Array, length: number): boolean {
    return this.write(
      view,
      this.offload ? VnetHdr.SIZE : 0,
      this.offload ? length - VnetHdr.SIZE : length,
      this.offload,
    );
  }

  /** Resolves once `count` frames have been written (or rejects after `ms`). */
  async waitWritten(count: number, ms = 2000): Promise<Uint8Array[]> {
    const deadline = Date.now() + ms;
    while (this.written.length < count) {
      if (Date.now() > deadline) {
        throw new Error(`${this.name}: ${this.written.length} of ${count} frames written`);
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return this.written;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#release(false);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
