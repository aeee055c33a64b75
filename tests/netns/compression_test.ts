/**
 * Compressed circuits between two namespaces (issue 20): text crosses in fewer bytes than it carries, as
 * a capture of the underlay shows, with every byte intact (sha256); random data crosses intact and the
 * stage stops trying; and compression with encryption only on both ends' explicit word.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess } from "../../testbed/netns.ts";
import type { CircuitStatus, DaemonStatus } from "../../src/daemon/daemon.ts";
import { netnsTest, requireProgram } from "./support.ts";
import { keyFile, LISTEN, shaTransfer, velaLinks, watchExit } from "./circuit_support.ts";
import { startCapture } from "./capture.ts";

const NEAR = "198.18.207.1";
const FAR = "198.18.207.2";

/** A listener in b and an initiator in a (vid 3, NEAR/30), both with --compress and `extra` flags each. */
function compressedCircuit(bed: Bed, listenerExtra: string[], initiatorExtra: string[]) {
  return {
    listener: bed.vela(bed.b, [...LISTEN, "--compress", ...listenerExtra]),
    initiator: bed.vela(bed.a, [
      "--peer",
      bed.b4,
      "--vid",
      "3",
      "--address",
      `${NEAR}/30`,
      "--compress",
      ...initiatorExtra,
    ]),
  };
}

async function circuitOf(bed: Bed, ns: string, daemon: BedProcess): Promise<CircuitStatus | undefined> {
  const result = await bed.velaCommand(ns, ["status", "--control", daemon.control!, "--json"]);
  if (result.code !== 0) return undefined;
  return (JSON.parse(result.stdout) as DaemonStatus).circuits[0];
}

async function established(bed: Bed, ns: string, daemon: BedProcess): Promise<CircuitStatus> {
  let circuit: CircuitStatus | undefined;
  await bed.until(async () => {
    circuit = await circuitOf(bed, ns, daemon);
    return circuit?.state === "established";
  }, `the circuit in ${ns} established`);
  return circuit!;
}

/** Sends MIB mebibytes from a to b over the circuit (text or random) and checks every byte arrived. */
function transfer(bed: Bed, mib: number, kind: "text" | "random"): Promise<void> {
  return shaTransfer(bed, bed.a, bed.b, FAR, mib, kind);
}

netnsTest(
  "a compressed circuit carries text intact in fewer underlay bytes than it carries, as a capture shows",
  async () => {
    if (!await requireProgram("tshark", "tshark")) return;
    await using bed = await Bed.create();
    // No UDP GSO, so that the capture holds one datagram per frame.
    const { listener, initiator } = compressedCircuit(bed, ["--no-offload"], ["--no-offload"]);
    const before = await established(bed, bed.a, initiator);
    assert.equal(before.compression, "dictionary", "the default mode when both offer it");
    assert.equal((await established(bed, bed.b, listener)).compression, "dictionary");
    assert.match(initiator.output(), /established on vela3, MTU \d+, clear, compressed/);
    await bed.waitPing(bed.a, FAR);

    const capture = await startCapture(bed, bed.a, bed.vethA);
    await transfer(bed, 4, "text");
    const datagrams = (await capture.stop()).filter((d) => d.from === bed.a4 && d.payload[0] === 3);
    const after = (await circuitOf(bed, bed.a, initiator))!;
    const carried = after.compressIn! - (before.compressIn ?? 0);
    const packed = after.compressOut! - (before.compressOut ?? 0);
    const onWire = datagrams.reduce((total, d) => total + d.payload.length, 0);
    assert.ok(carried > 4 * 1024 * 1024, `${carried} bytes carried (the text and TCP/IP headers)`);
    assert.ok(packed < 0.7 * carried, `the stage made ${packed} bytes of ${carried}`);
    // The capture saw the data datagrams: the stage's bytes and a vid byte each (a frame or two sent
    // before it started may be missing).
    assert.ok(onWire >= 0.99 * packed, `${onWire} bytes captured, ${packed} sent`);
    assert.ok(onWire < 0.7 * carried, `${onWire} bytes on the underlay for ${carried} carried`);
    const far = (await circuitOf(bed, bed.b, listener))!;
    assert.equal(far.drops.badCompression, 0);
    // A frame the initiator sent after its counters were read (a neighbour probe, say) may still be on
    // its way, so the two ends are read again until they agree or the bed's patience runs out.
    let counted = { sent: after.txBytes, received: far.rxBytes };
    await bed.until(async () => {
      const near = await circuitOf(bed, bed.a, initiator);
      const farNow = await circuitOf(bed, bed.b, listener);
      if (near && farNow) counted = { sent: near.txBytes, received: farNow.rxBytes };
      return counted.sent === counted.received;
    }, "both ends to count the same bytes").catch(() => {});
    assert.equal(counted.received, counted.sent, "both ends count the same bytes");
  },
);

netnsTest(
  "random data crosses a compressed circuit intact, mostly uncompressed, and the stage pauses its tries",
  async () => {
    await using bed = await Bed.create();
    const { listener, initiator } = compressedCircuit(bed, [], []);
    await established(bed, bed.a, initiator);
    await established(bed, bed.b, listener);
    await bed.waitPing(bed.a, FAR);
    await transfer(bed, 32, "random");
    const circuit = (await circuitOf(bed, bed.a, initiator))!;
    assert.ok(circuit.compressionPauses! >= 1, JSON.stringify(circuit));
    assert.ok(circuit.sentUncompressed! > 0.9 * circuit.txPackets, JSON.stringify(circuit));
    assert.ok(
      circuit.compressOut! <= circuit.compressIn! + circuit.txPackets,
      "never more than a byte a frame",
    );
  },
);

netnsTest(
  "compression with encryption needs both ends' word: refused at start, declined by a listener, or on",
  async () => {
    await using bed = await Bed.create();
    const key = await keyFile("compress");
    try {
      const keyed = ["--key-file", key];
      const circuit = ["--peer", bed.b4, "--vid", "3", "--address", `${NEAR}/30`, ...keyed];
      // An initiator that says --compress on an encrypted circuit stops before it makes its interface.
      const refused = bed.vela(bed.a, [...circuit, "--compress"]);
      const refusedStatus = await refused.status;
      assert.equal(refusedStatus.code, 1, refused.output());
      assert.match(
        refused.output(),
        /lets the sizes of the frames tell what they hold .*--compress-with-encryption/,
      );
      assert.deepEqual(await velaLinks(bed.a), []);

      // A keyed listener with --compress alone declines to compress an encrypted circuit.
      const listener = bed.vela(bed.b, ["--listen", ...keyed, "--compress"]);
      const initiator = bed.vela(bed.a, [...circuit, "--compress-with-encryption"]);
      const declined = await established(bed, bed.a, initiator);
      assert.equal(declined.compression, "off");
      assert.match(declined.cipher, /^(aes-256-gcm|chacha20-poly1305)$/);
      await bed.until(
        () => Promise.resolve(/not compressed: the peer declined/.test(initiator.output())),
        "the initiator saying it is not compressed",
      );
      assert.match(listener.output(), /encrypted ones need --compress-with-encryption/);
      await bed.waitPing(bed.a, FAR);
      const exit = watchExit(initiator);
      await bed.stop(initiator);
      await bed.stop(listener);
      assert.ok(exit.exited);

      // Both ends say it: the circuit is encrypted and compressed.
      const both = bed.vela(bed.b, ["--listen", ...keyed, "--compress-with-encryption"]);
      const withBoth = bed.vela(bed.a, [...circuit, "--compress-with-encryption"]);
      const on = await established(bed, bed.a, withBoth);
      assert.equal(on.compression, "dictionary");
      assert.match(on.cipher, /^(aes-256-gcm|chacha20-poly1305)$/);
      assert.equal((await established(bed, bed.b, both)).compression, "dictionary");
      await bed.waitPing(bed.a, FAR);
      await transfer(bed, 2, "text");
      const after = (await circuitOf(bed, bed.a, withBoth))!;
      assert.ok(after.compressOut! < 0.7 * after.compressIn!, JSON.stringify(after));
    } finally {
      await Deno.remove(key).catch(() => undefined);
    }
  },
);

/** The kernel's count of TCP and UDP datagrams with bad checksums in `ns` (/proc/net/snmp InCsumErrors). */
async function checksumErrors(bed: Bed, ns: string): Promise<number> {
  const snmp = (await bed.exec(ns, ["cat", "/proc/net/snmp"], { check: true })).stdout.split("\n");
  let total = 0;
  for (const protocol of ["Tcp:", "Udp:"]) {
    const [names, values] = snmp.filter((line) => line.startsWith(protocol)).map((line) => line.split(/\s+/));
    total += Number(values[names.indexOf("InCsumErrors")]);
  }
  return total;
}

netnsTest(
  "the dictionary mode: the peer's DACK turns dictionaries on, and text crosses in fewer bytes than per frame",
  async () => {
    await using bed = await Bed.create();
    const run = async (mode: "stateless" | "dictionary") => {
      const { listener, initiator } = compressedCircuit(bed, [], ["--compress-mode", mode]);
      const up = await established(bed, bed.a, initiator);
      assert.equal(up.compression, mode === "dictionary" ? "dictionary" : "lz4");
      await bed.waitPing(bed.a, FAR);
      await transfer(bed, 8, "text");
      const after = (await circuitOf(bed, bed.a, initiator))!;
      const far = (await circuitOf(bed, bed.b, listener))!;
      await bed.stop(initiator);
      await bed.stop(listener);
      assert.equal(far.drops.badCompression, 0);
      assert.equal(far.drops.dictionaryMissing ?? 0, 0);
      return after;
    };
    const stateless = await run("stateless");
    const dictionary = await run("dictionary");
    assert.ok(dictionary.dictionariesUsed! >= 1, JSON.stringify(dictionary));
    assert.notEqual(dictionary.dictionaryEpoch, 0);
    const share = (c: CircuitStatus) => c.compressOut! / c.compressIn!;
    assert.ok(
      share(dictionary) < share(stateless),
      `dictionary ${share(dictionary).toFixed(3)} of the bytes, stateless ${share(stateless).toFixed(3)}`,
    );
  },
);

netnsTest(
  "under 1% loss and reordering every compressed frame decodes or is counted, and nothing corrupt reaches a device",
  async () => {
    await using bed = await Bed.create({
      impair: { lossPercent: 1, reorderPercent: 1, reorderDelayMs: 3, seed: 7 },
    });
    const { listener, initiator } = compressedCircuit(bed, [], []);
    assert.equal((await established(bed, bed.a, initiator)).compression, "dictionary");
    await bed.waitPing(bed.a, FAR);
    const errorsBefore = await checksumErrors(bed, bed.b);
    // A dictionary whose pieces were all received, acknowledged across the lossy path, comes into use.
    await transfer(bed, 2, "text");
    await bed.until(
      async () => {
        const warm = (await circuitOf(bed, bed.a, initiator))!;
        if (warm.dictionariesUsed! >= 1) return true;
        await transfer(bed, 1, "text");
        return false;
      },
      "a dictionary in use under loss",
      30_000,
    );
    await transfer(bed, 8, "text");
    const sent = (await circuitOf(bed, bed.a, initiator))!;
    const far = (await circuitOf(bed, bed.b, listener))!;
    assert.ok(sent.dictionaryEpoch! > 0, JSON.stringify(sent));
    assert.ok(sent.compressOut! < 0.6 * sent.compressIn!, `under loss: ${JSON.stringify(sent)}`);
    assert.equal(far.drops.badCompression, 0, "no frame failed to decompress");
    assert.equal(await checksumErrors(bed, bed.b), errorsBefore, "no corrupt segment reached b's stack");
    // What was lost on the underlay is missing, not wrong: b got at most what a sent.
    assert.ok(far.rxPackets <= sent.txPackets);
  },
);
