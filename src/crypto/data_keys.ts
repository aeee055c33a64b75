/**
 * The data keys of a circuit as the session hands them to the datapath's AEAD stage
 * (src/datapath/aead_stage.ts), and the numbers that bound one key's use. Pure data, no crypto.
 */

import type { CipherName } from "../wire.ts";

export type AeadCipher = Exclude<CipherName, "clear">;

/** The header the AEAD stage puts after the vid byte: the key epoch (1 byte), the counter's low 4 bytes. */
export const AEAD_HEADER = 5;
export const AEAD_TAG = 16;
/** Bytes a sealed frame carries beyond a clear one. */
export const AEAD_OVERHEAD = AEAD_HEADER + AEAD_TAG;

/** One key in one direction, and the epoch (handshake number mod 256) that names it on the wire. */
export interface DataKey {
  readonly epoch: number;
  readonly cipher: AeadCipher;
  readonly key: Uint8Array;
  /**
   * The key's counter state, KEY_STATE_BYTES of shared memory made once per key (src/daemon/
   * circuit_runtime.ts): a sealing key's next counter, an opening key's replay window. A circuit whose
   * stage is made again (it moved, its MTU changed) goes on from there, so a key never seals one counter
   * twice and never takes a replayed frame again. Absent: the stage keeps the state itself.
   */
  readonly state?: SharedArrayBuffer;
}

/** The size of a key's state: a float64 counter, then the replay window's bitmap. */
export const KEY_STATE_BYTES = 8 + 4 * 128;

/** What the stage holds: the key it seals with, and up to two it opens with (the newest first). */
export interface DataKeys {
  readonly tx?: DataKey;
  readonly rx: readonly DataKey[];
}

/**
 * Packets one key may seal (RFC 9001 section 6.6, confidentiality limit): 2^23 for AES-GCM; for
 * ChaCha20-Poly1305 the limit is beyond any count, so 2^32 keeps the wire counter unambiguous. The stage
 * drops (and counts) what would go past it; the session asks for new keys at half of it.
 */
export const SEAL_LIMIT: Readonly<Record<AeadCipher, number>> = {
  "aes-256-gcm": 2 ** 23,
  "chacha20-poly1305": 2 ** 32,
};

/** New keys are asked for when the current ones have sealed or opened this many packets. */
export function rekeyAfterPackets(cipher: AeadCipher): number {
  return SEAL_LIMIT[cipher] / 2;
}
