/** Shared by the namespace tests: skip loudly where namespaces cannot be made, require the tools in CI. */

import assert from "node:assert/strict";
import { type Bed, type BedProcess, hasProgram, namespaceSupport } from "../../testbed/netns.ts";

const support = await namespaceSupport();
if (!support.ok) {
  console.warn(`\n!!! SKIPPING the network namespace tests: ${support.reason} !!!\n`);
}

/** A test on real kernel devices in namespaces; ignored (loudly, above) where they cannot be made. */
export function netnsTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: !support.ok, sanitizeOps: false, sanitizeResources: false, fn });
}

/**
 * Throws when `program` is missing: in CI (CI=true) always; elsewhere it returns false so that the
 * caller skips that one check with a loud line.
 */
export async function requireProgram(program: string, apt: string): Promise<boolean> {
  if (await hasProgram(program)) return true;
  const message = `${program} is not installed (apt-get install ${apt})`;
  if (Deno.env.get("CI")) throw new Error(message);
  console.warn(`!!! SKIPPING a check: ${message} !!!`);
  return false;
}

/** Starts a one-shot `iperf3 -s` in b bound to `address` and waits until it listens. */
export async function startIperf3Server(bed: Bed, address: string): Promise<BedProcess> {
  const server = bed.spawn(bed.b, ["iperf3", "-s", "-1", "-B", address]);
  await bed.until(
    async () => (await bed.exec(bed.b, ["ss", "-ltn", "sport = :5201"])).stdout.includes("5201"),
    "iperf3 -s",
  );
  return server;
}

/**
 * Sends iperf3 UDP from a to a one-shot server at `address` in b for 2 s, at `rate` (as iperf3's -b takes
 * it) in datagrams of `length` bytes; returns how many datagrams were sent and how many arrived.
 */
export async function iperf3Udp(
  bed: Bed,
  address: string,
  rate: string,
  length: number,
): Promise<{ sent: number; delivered: number }> {
  const server = await startIperf3Server(bed, address);
  const client = await bed.exec(bed.a, [
    "iperf3",
    "-c",
    address,
    "-u",
    "-b",
    rate,
    "-l",
    String(length),
    "-t",
    "2",
    "-J",
  ]);
  assert.equal(client.code, 0, client.stdout + client.stderr);
  await bed.stop(server);
  const report = JSON.parse(client.stdout).end.sum;
  return { sent: report.packets, delivered: report.packets - report.lost_packets };
}
