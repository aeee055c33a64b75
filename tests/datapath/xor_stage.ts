/**
 * A test stage: encode() XORs every byte of the frame with `key` and appends one byte (`key`), decode()
 * checks and takes the byte off and XORs back, dropping a frame whose last byte is not `key`. It shows
 * that a stage changes what is on the wire and that the far end undoes it.
 */

import type { Stage } from "../../src/datapath/stage.ts";
import { DROPPED, type PacketBatch } from "../../src/packet/packet_batch.ts";

export function xorStage(key: number): Stage {
  return {
    id: "xor-test",
    overhead: 1,
    encode(batch: PacketBatch, start: number, end: number): void {
      const memory = batch.memory;
      for (let i = start; i < end; i++) {
        const at = batch.offset[i];
        const length = batch.length[i];
        for (let j = at; j < at + length; j++) memory[j] ^= key;
        memory[at + length] = key; // in the tailroom
        batch.length[i] = length + 1;
      }
    },
    decode(batch: PacketBatch, start: number, end: number): void {
      const memory = batch.memory;
      for (let i = start; i < end; i++) {
        const at = batch.offset[i];
        const length = batch.length[i] - 1;
        if (length < 0 || memory[at + length] !== key) {
          batch.length[i] = DROPPED;
          continue;
        }
        for (let j = at; j < at + length; j++) memory[j] ^= key;
        batch.length[i] = length;
      }
    },
  };
}
