/**
 * deno run -A bench/aead_bench.ts [--seconds S]
 *
 * Micro benchmark of ffi/libcrypto.ts, the per-packet AEAD: for each cipher and for 1400-byte and 64-byte
 * packets, seals a 64 KiB buffer's worth of packets at successive offsets (6 bytes of associated data,
 * the packet, its tag, the next packet), then opens them all, round after round, and prints ns per seal
 * and per open and the payload Gbit/s of each. Also prints the FFI calls per packet, and the nanoseconds
 * of a seal and an open of an empty packet with no associated data (three calls and nothing to encrypt:
 * about the fixed cost of the calls and of libcrypto's per-packet setup).
 *
 * Run with `--v8-flags=--trace-gc` to see that the timed loops allocate nothing (no scavenges after the
 * warm-up), and with `--v8-flags=--trace-deopt` to see that they stay optimized.
 */

import { parseArgs } from "node:util";
import { AEAD_TAG_BYTES, type AeadCipherName, AeadContext } from "../ffi/libcrypto.ts";

const AAD_BYTES = 6;
const BUFFER_BYTES = 65_536;

const { values } = parseArgs({ args: Deno.args, options: { seconds: { type: "string", default: "0.5" } } });
const seconds = Number(values.seconds);

/** Calls per packet, from ffi/libcrypto.ts: nonce, associated data, payload, final, tag (get or set). */
function callsPerPacket(aadLength: number, length: number): number {
  return 3 + (aadLength > 0 ? 1 : 0) + (length > 0 ? 1 : 0);
}

interface Result {
  sealNs: number;
  openNs: number;
  packets: number;
}

/** Seals then opens every packet of the buffer, round after round, for about `seconds` each way. */
function run(cipher: AeadCipherName, size: number, aadLength: number): Result {
  const key = crypto.getRandomValues(new Uint8Array(32));
  using seal = new AeadContext(cipher, key, "seal");
  using open = new AeadContext(cipher, key, "open");
  const memory = new Uint8Array(BUFFER_BYTES);
  const slot = aadLength + size + AEAD_TAG_BYTES;
  const packets = Math.floor(BUFFER_BYTES / slot);
  let counter = 0;
  const sealAll = () => {
    for (let i = 0, at = 0; i < packets; i++, at += slot) {
      seal.seal(memory, at, aadLength, at + aadLength, size, counter + i);
    }
  };
  const openAll = () => {
    let bad = 0;
    for (let i = 0, at = 0; i < packets; i++, at += slot) {
      if (!open.open(memory, at, aadLength, at + aadLength, size, counter + i)) bad++;
    }
    if (bad > 0) throw new Error(`${bad} packets did not open`);
  };
  // Warm-up: long enough for V8 to optimize both loops.
  for (let round = 0; round < 2000 / packets + 20; round++) {
    sealAll();
    openAll();
    counter += packets;
  }
  let sealMs = 0;
  let openMs = 0;
  let rounds = 0;
  while (sealMs < seconds * 1000) {
    const t0 = performance.now();
    sealAll();
    const t1 = performance.now();
    openAll();
    const t2 = performance.now();
    sealMs += t1 - t0;
    openMs += t2 - t1;
    counter += packets;
    rounds++;
  }
  const total = rounds * packets;
  return { sealNs: sealMs * 1e6 / total, openNs: openMs * 1e6 / total, packets };
}

const gbits = (size: number, ns: number) => (size * 8 / ns).toFixed(2);
const pad = (text: string | number, width: number) => String(text).padStart(width);

console.log(`AEAD through ffi/libcrypto.ts, Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`);
console.log(
  `${"cipher".padEnd(18)} ${pad("bytes", 5)} ${pad("packets", 7)} ${pad("calls", 5)}` +
    ` ${pad("ns/seal", 8)} ${pad("Gbit/s", 7)} ${pad("ns/open", 8)} ${pad("Gbit/s", 7)}`,
);
for (const cipher of ["aes-256-gcm", "chacha20-poly1305"] as const) {
  for (const [size, aadLength] of [[1400, AAD_BYTES], [64, AAD_BYTES], [0, 0]]) {
    const { sealNs, openNs, packets } = run(cipher, size, aadLength);
    console.log(
      `${cipher.padEnd(18)} ${pad(size, 5)} ${pad(packets, 7)} ${pad(callsPerPacket(aadLength, size), 5)}` +
        ` ${pad(sealNs.toFixed(0), 8)} ${pad(size ? gbits(size, sealNs) : "-", 7)}` +
        ` ${pad(openNs.toFixed(0), 8)} ${pad(size ? gbits(size, openNs) : "-", 7)}`,
    );
  }
}
console.log(
  "calls: FFI calls per seal and per open (the 0-byte row has no associated data: the fixed cost only)",
);
