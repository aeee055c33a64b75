/** `vela status` as a table for people: byte and duration formats, the table itself (no I/O, no root). */

import assert from "node:assert/strict";
import type { CircuitStatus, DaemonStatus } from "../src/daemon/daemon.ts";
import { humanBytes, humanDuration, renderStatus } from "../src/status_table.ts";

const HEADER = ["PEER", "ADDRESS", "VID", "IFACE", "STATE", "CIPHER", "UPTIME", "RTT", "TX", "RX", "DROPS"];

function circuit(overrides: Partial<CircuitStatus> = {}): CircuitStatus {
  return {
    peer: "198.18.100.2",
    address: "198.18.100.2",
    port: 4455,
    vid: 3,
    role: "initiator",
    state: "established",
    ifname: "vela3",
    mode: "tap",
    mtu: 1457,
    uptimeSeconds: 3725,
    rttMs: 0.456,
    txPackets: 12,
    txBytes: 1536,
    rxPackets: 11,
    rxBytes: 100,
    cipher: "clear",
    keyAgeSeconds: null,
    rotations: 0,
    drops: {
      sendFailed: 1,
      deviceRefused: 2,
      badTag: 0,
      replayedData: 0,
      tooOld: 0,
      noKey: 0,
      keyExhausted: 0,
    },
    ...overrides,
  };
}

Deno.test("humanBytes() prints bytes below 1 KiB as they are", () => {
  assert.equal(humanBytes(0), "0 B");
  assert.equal(humanBytes(1), "1 B");
  assert.equal(humanBytes(1023), "1023 B");
});

Deno.test("humanBytes() prints larger counts in binary units with one decimal", () => {
  assert.equal(humanBytes(1024), "1.0 KiB");
  assert.equal(humanBytes(1536), "1.5 KiB");
  assert.equal(humanBytes(10 * 1024 + 102), "10.1 KiB");
  assert.equal(humanBytes(1024 ** 2), "1.0 MiB");
  assert.equal(humanBytes(5.25 * 1024 ** 3), "5.3 GiB");
  assert.equal(humanBytes(1024 ** 4), "1.0 TiB");
});

Deno.test("humanBytes() stays in TiB beyond the last unit", () => {
  assert.equal(humanBytes(1024 ** 5), "1024.0 TiB");
  assert.equal(humanBytes(3 * 1024 ** 5), "3072.0 TiB");
});

Deno.test("humanDuration() prints seconds, minutes and hours with zero-padded parts", () => {
  assert.equal(humanDuration(0), "0s");
  assert.equal(humanDuration(59), "59s");
  assert.equal(humanDuration(60), "1m00s");
  assert.equal(humanDuration(61), "1m01s");
  assert.equal(humanDuration(3599), "59m59s");
  assert.equal(humanDuration(3600), "1h00m00s");
  assert.equal(humanDuration(3725), "1h02m05s");
  assert.equal(humanDuration(90061), "25h01m01s");
});

Deno.test("humanDuration() prints a dash for a circuit that is not up", () => {
  assert.equal(humanDuration(null), "-");
});

Deno.test("renderStatus() with no circuits gives the summary and the drops, no table", () => {
  const text = renderStatus({ port: 4455, listen: true, circuits: [], drops: {}, moderatedWakeups: 0 });
  assert.equal(text, "VELA listening on UDP port 4455, 0 circuits\nDropped on the way in: none");
  assert.equal(text.includes("PEER"), false, "no header without rows");
  const quiet = renderStatus({
    port: 40001,
    listen: false,
    circuits: [],
    drops: { runt: 0 },
    moderatedWakeups: 0,
  });
  assert.equal(quiet, "VELA running on UDP port 40001, 0 circuits\nDropped on the way in: none");
});

Deno.test("renderStatus() with 2 circuits gives a header, one aligned row each and the drops line", () => {
  const status: DaemonStatus = {
    port: 4455,
    listen: true,
    circuits: [
      circuit(),
      circuit({
        peer: "peer.example",
        address: "fd00:198:18:100::2",
        port: 4456,
        vid: 42,
        role: "responder",
        state: "requesting",
        ifname: null,
        uptimeSeconds: null,
        rttMs: null,
        txPackets: 0,
        txBytes: 0,
        rxPackets: 3,
        rxBytes: 3 * 1024 * 1024,
        cipher: "clear",
        keyAgeSeconds: null,
        rotations: 0,
        drops: {
          sendFailed: 0,
          deviceRefused: 0,
          badTag: 0,
          replayedData: 0,
          tooOld: 0,
          noKey: 0,
          keyExhausted: 0,
        },
      }),
    ],
    drops: { "bad-mac": 4, runt: 0, "not-allowed": 1 },
    moderatedWakeups: 0,
  };
  const lines = renderStatus(status).split("\n");
  assert.equal(lines.length, 5, lines.join("\n"));
  assert.equal(lines[0], "VELA listening on UDP port 4455, 2 circuits");
  assert.deepEqual(lines[1].split(/\s{2,}/), HEADER);
  assert.equal(lines[4], "Dropped on the way in: bad-mac 4, not-allowed 1");

  // Every column starts where its header starts.
  const starts = HEADER.map((name) => lines[1].indexOf(name));
  const cells = (line: string) =>
    starts.map((start, i) => line.slice(start, starts[i + 1] ?? line.length).trim());
  for (const row of lines.slice(2, 4)) {
    for (const start of starts.slice(1)) {
      assert.equal(row[start - 1], " ", `a column boundary at ${start}: ${row}`);
    }
  }
  assert.deepEqual(cells(lines[2]), [
    "198.18.100.2",
    "198.18.100.2:4455",
    "3",
    "vela3",
    "established (initiator)",
    "clear",
    "1h02m05s",
    "0.5 ms",
    "12 pkts / 1.5 KiB",
    "11 pkts / 100 B",
    "send 1, device 2",
  ]);
  assert.deepEqual(cells(lines[3]), [
    "peer.example",
    "fd00:198:18:100::2:4456",
    "42",
    "-",
    "requesting (responder)",
    "clear",
    "-",
    "-",
    "0 pkts / 0 B",
    "3 pkts / 3.0 MiB",
    "send 0, device 0",
  ]);
  for (const line of lines) assert.equal(line, line.trimEnd(), "no trailing blanks");
});

Deno.test("renderStatus() says '1 circuit' in the singular", () => {
  const text = renderStatus({
    port: 4455,
    listen: false,
    circuits: [circuit()],
    drops: {},
    moderatedWakeups: 0,
  });
  assert.match(text.split("\n")[0], /^VELA running on UDP port 4455, 1 circuit$/);
});
