/** What the CPU offers that changes the choice of cipher. */

import { readProcFile } from "../../ffi/libc.ts";

let cached: boolean | undefined;

/**
 * Whether this CPU has AES instructions (x86 "aes" in /proc/cpuinfo's flags, Arm "aes" in its
 * Features): with them AES-256-GCM is the faster cipher, without them ChaCha20-Poly1305 is. False when
 * /proc/cpuinfo cannot be read.
 */
export function cpuHasAes(): boolean {
  if (cached !== undefined) return cached;
  try {
    const text = readProcFile("/proc/cpuinfo");
    cached = /^(flags|Features)\s*:.*\baes\b/m.test(text);
  } catch {
    cached = false;
  }
  return cached;
}
