/**
 * What the daemon checks of the host before it listens anywhere: that it can make interfaces at all.
 * A daemon that cannot would otherwise listen, answer IREQs and fail on the first circuit; it stops at
 * start instead, with the sentence that says what is missing.
 */

import { RuntimeFailure } from "./errors.ts";
import { readProcFile } from "../ffi/libc.ts";

/** The capability that TUNSETIFF, addresses and links need (linux/capability.h). */
const CAP_NET_ADMIN = 12;

/** What the check reads of the host (the real one unless a test gives another). */
export interface HostFacts {
  /** The effective capability mask (the CapEff line of /proc/self/status), undefined if unreadable. */
  effectiveCapabilities?: bigint;
  /** What /dev/net/tun is: a character device, something else, missing, or unknown (not readable here). */
  tunDevice: "character-device" | "other" | "missing" | "unknown";
}

/** The sentence for a host on which no interface can be made, or undefined when one can. Pure. */
export function interfaceProblem(facts: HostFacts): string | undefined {
  if (facts.tunDevice === "missing") {
    return "Cannot make interfaces: /dev/net/tun does not exist; load the tun module (modprobe tun) or create the device node (mknod /dev/net/tun c 10 200)";
  }
  if (facts.tunDevice === "other") {
    return "Cannot make interfaces: /dev/net/tun is not the TUN/TAP character device; recreate it (mknod /dev/net/tun c 10 200)";
  }
  if (
    facts.effectiveCapabilities !== undefined &&
    (facts.effectiveCapabilities & (1n << BigInt(CAP_NET_ADMIN))) === 0n
  ) {
    return "Cannot make interfaces: vela lacks CAP_NET_ADMIN; run it as root (or give it CAP_NET_ADMIN)";
  }
  return undefined;
}

/** Reads the host's facts. */
export function readHostFacts(): HostFacts {
  let effectiveCapabilities: bigint | undefined;
  try {
    const match = /^CapEff:\s*([0-9a-f]+)$/m.exec(readProcFile("/proc/self/status"));
    if (match) effectiveCapabilities = BigInt(`0x${match[1]}`);
  } catch {
    // Not Linux, or /proc is not mounted: the device check stands alone.
  }
  let tunDevice: HostFacts["tunDevice"];
  try {
    tunDevice = Deno.statSync("/dev/net/tun").isCharDevice ? "character-device" : "other";
  } catch (error) {
    // Deno's narrower permissions may keep the daemon from stat()ing it: opening it will tell.
    tunDevice = error instanceof Deno.errors.NotFound ? "missing" : "unknown";
  }
  return { effectiveCapabilities, tunDevice };
}

/** Throws RuntimeFailure when this host cannot make interfaces. */
export function checkCanMakeInterfaces(facts: HostFacts = readHostFacts()): void {
  const problem = interfaceProblem(facts);
  if (problem) throw new RuntimeFailure(problem);
}
