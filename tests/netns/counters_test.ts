/**
 * Counters that agree (issue 19, point 5): after an iperf3 TCP run through a circuit, what one end counts
 * as sent is what the other counts as received, in packets and in bytes. A byte is a byte of the inner
 * frame as the device saw it, counted per frame on the wire: after TCP segmentation on the way out, before
 * receive coalescing on the way in, without the virtio-net header, the vid byte or the AEAD's overhead.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess } from "../../testbed/netns.ts";
import type { DaemonStatus } from "../../src/daemon/status.ts";
import { netnsTest, requireProgram, startIperf3Server } from "./support.ts";
import { keyFile, LISTEN, sleep } from "./circuit_support.ts";

const NEAR = "198.18.207.1";
const FAR = "198.18.207.2";
/** How far apart the two ends' counts of one direction may be. */
const TOLERANCE = 0.001;

interface Counts {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

async function countsOf(bed: Bed, ns: string, daemon: BedProcess): Promise<Counts> {
  const shown = await bed.velaCommand(ns, ["status", "--json", "--control", daemon.control!]);
  assert.equal(shown.code, 0, shown.stdout + shown.stderr);
  const status = JSON.parse(shown.stdout) as DaemonStatus;
  assert.equal(status.circuits.length, 1, shown.stdout);
  const { txPackets, txBytes, rxPackets, rxBytes } = status.circuits[0];
  return { txPackets, txBytes, rxPackets, rxBytes };
}

/** Both ends' counters once they have stopped moving (nothing in flight between two reads). */
async function settled(bed: Bed, initiator: BedProcess, listener: BedProcess): Promise<[Counts, Counts]> {
  let last = "";
  for (let attempt = 0; attempt < 20; attempt++) {
    const both: [Counts, Counts] = [
      await countsOf(bed, bed.a, initiator),
      await countsOf(bed, bed.b, listener),
    ];
    const now = JSON.stringify(both);
    if (now === last) return both;
    last = now;
    await sleep(300);
  }
  throw new Error(`the counters kept moving: ${last}`);
}

function assertClose(what: string, sent: number, received: number): void {
  const off = Math.abs(sent - received) / Math.max(sent, 1);
  assert.ok(
    off <= TOLERANCE,
    `${what}: ${sent} sent, ${received} received (${(off * 100).toFixed(3)}% apart)`,
  );
}

async function countersAgree(initiatorExtra: string[], listenerExtra: string[]): Promise<void> {
  if (!await requireProgram("iperf3", "iperf3")) return;
  await using bed = await Bed.create();
  const listener = bed.vela(bed.b, [...LISTEN, ...listenerExtra]);
  const initiator = bed.vela(bed.a, [
    "--peer",
    bed.b4,
    "--vid",
    "3",
    "--address",
    `${NEAR}/30`,
    ...initiatorExtra,
  ]);
  await bed.waitPing(bed.a, FAR, 30_000);
  const server = await startIperf3Server(bed, FAR);
  const client = await bed.exec(bed.a, ["iperf3", "-c", FAR, "-t", "3", "-J"]);
  assert.equal(client.code, 0, client.stdout + client.stderr);
  await bed.stop(server);
  const moved = JSON.parse(client.stdout).end.sum_received.bytes as number;
  assert.ok(moved > 1_000_000, `iperf3 moved only ${moved} bytes`);

  const [near, far] = await settled(bed, initiator, listener);
  console.log(
    `initiator tx ${near.txPackets} packets ${near.txBytes} bytes, listener rx ${far.rxPackets} packets ` +
      `${far.rxBytes} bytes; listener tx ${far.txPackets} packets ${far.txBytes} bytes, initiator rx ` +
      `${near.rxPackets} packets ${near.rxBytes} bytes (iperf3: ${moved} bytes)`,
  );
  // The frames carried the stream and its headers: at least what iperf3 moved.
  assert.ok(near.txBytes >= moved, `${near.txBytes} bytes sent for the ${moved} iperf3 moved`);
  assertClose("initiator to listener, packets", near.txPackets, far.rxPackets);
  assertClose("initiator to listener, bytes", near.txBytes, far.rxBytes);
  assertClose("listener to initiator, packets", far.txPackets, near.rxPackets);
  assertClose("listener to initiator, bytes", far.txBytes, near.rxBytes);
}

netnsTest("the two ends of a clear circuit count the same packets and bytes after iperf3 TCP", async () => {
  await countersAgree([], []);
});

netnsTest("the two ends of a keyed circuit count the same packets and bytes after iperf3 TCP", async () => {
  const key = await keyFile();
  try {
    await countersAgree(["--key-file", key], ["--key-file", key]);
  } finally {
    await Deno.remove(key);
  }
});
