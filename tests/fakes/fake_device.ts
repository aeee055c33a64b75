/** An in-memory LinkDevice: frames injected on the "kernel side" are read by VELA, writes are recorded. */

import type { LinkDevice, LinkMode } from "../../src/link_device.ts";

export class FakeDevice implements LinkDevice {
  readonly name: string;
  readonly mode: LinkMode;
  /** Frames VELA wrote into the device, oldest first. */
  readonly written: Uint8Array[] = [];
  /** Frames waiting for VELA to read them. */
  readonly #pending: Uint8Array[] = [];
  /** Every pending waitReadable() resolver (a replaced pump may still be waiting). */
  readonly #waiters: ((ready: boolean) => void)[] = [];
  closed = false;
  /** When set, write() refuses frames with this errno. */
  refuseWith = 0;
  /** When set, the next tryRead() throws it (a device removed under VELA's feet). */
  failRead: Error | undefined;

  constructor(name: string, mode: LinkMode) {
    this.name = name;
    this.mode = mode;
  }

  /** The kernel side sends a frame: VELA will read it. */
  inject(frame: Uint8Array): void {
    this.#pending.push(frame.slice());
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

  tryRead(buffer: Uint8Array): number {
    if (this.failRead) throw this.failRead;
    const frame = this.#pending.shift();
    if (!frame) return 0;
    const length = Math.min(frame.length, buffer.length);
    buffer.set(frame.subarray(0, length));
    return length;
  }

  write(frame: Uint8Array): number {
    if (this.refuseWith) return this.refuseWith;
    this.written.push(frame.slice());
    return 0;
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
