/** What the datapath needs of the UDP underlay; src/deno_underlay.ts is the Deno one, tests/fakes/ has a fake. */

/** A UDP endpoint; `address` is canonical IP text (IPv4-mapped IPv6 is given as IPv4). */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** Called for each received datagram; `datagram` is valid only during the call. */
export type DeliverDatagram = (datagram: Uint8Array, from: Endpoint) => void;

export interface Underlay extends Disposable {
  /** The local UDP port. */
  readonly port: number;
  /**
   * Waits for at least one datagram, then delivers every datagram that is ready. Resolves true after a
   * batch, false once the underlay is closed. Never rejects for a single bad datagram.
   */
  receiveBatch(deliver: DeliverDatagram): Promise<boolean>;
  /**
   * Sends `count` datagrams to `to`: datagram i is the first `lengths[i]` bytes of `buffers[i]`.
   * Resolves with the number that could not be sent (a full or unreachable underlay), never rejects.
   */
  sendBatch(
    buffers: readonly Uint8Array[],
    lengths: ArrayLike<number>,
    count: number,
    to: Endpoint,
  ): Promise<number>;
  /** Safe to call twice. */
  close(): void;
}

/** Sends one datagram through sendBatch. */
export function sendOne(underlay: Underlay, datagram: Uint8Array, to: Endpoint): Promise<number> {
  return underlay.sendBatch([datagram], [datagram.length], 1, to);
}
