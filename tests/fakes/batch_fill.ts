import type { PacketBatch } from "../../src/packet/packet_batch.ts";

/**
 * Puts `packets` into `batch`, one to a buffer, each starting `before` bytes ahead of its buffer's packet start
 * (1 for a datagram whose vid byte sits in the headroom), and sets the count.
 */
export function fillBatch(batch: PacketBatch, packets: ArrayLike<number>[], before = 0): PacketBatch {
  packets.forEach((packet, i) => {
    const at = batch.packetStart(i) - before;
    batch.memory.set(packet, at);
    batch.offset[i] = at;
    batch.length[i] = packet.length;
  });
  batch.count = packets.length;
  return batch;
}
