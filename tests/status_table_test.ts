/** `vela status` as a table for people: byte and duration formats, the table itself (no I/O, no root). */

import { circuitStatus, daemonStatus } from "./fakes/status_fixture.ts";
import assert from "node:assert/strict";
import type { CircuitStatus, DaemonStatus } from "../src/daemon/daemon.ts";
import {
  endpoint,
  findCircuit,
  humanBytes,
  humanDuration,
  humanRate,
  humanRtt,
  renderCircuit,
  renderStatus,
  renderTop,
  TABLE_WIDTH,
} from "../src/status_table.ts";

const HEADER = ["IFACE", "VID", "PEER", "STATE", "CIPHER", "UPTIME", "RTT", "TX", "RX", "DROPS"];

function circuit(overrides: Partial<CircuitStatus> = {}): CircuitStatus {
  return circuitStatus({ ...overrides });
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
    "vela3",
    "3",
    "198.18.100.2:4455",
    "established (i)",
    "clear",
    "1h02m05s",
    "0.5 ms",
    "1.5 KiB",
    "100 B",
    "3",
  ]);
  assert.deepEqual(cells(lines[3]), [
    "-",
    "42",
    "peer.example [fd00:198:18:100::2]:4456",
    "requesting (r)",
    "clear",
    "-",
    "-",
    "0 B",
    "3.0 MiB",
    "0",
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

Deno.test("endpoint() puts an IPv6 address in brackets before its port", () => {
  assert.equal(endpoint("198.18.0.2", 4455), "198.18.0.2:4455");
  assert.equal(endpoint("fd00::2", 4455), "[fd00::2]:4455");
});

Deno.test("humanRtt() rounds: a decimal below 10 ms, whole milliseconds above", () => {
  assert.equal(humanRtt(null), "-");
  assert.equal(humanRtt(0.456), "0.5 ms");
  assert.equal(humanRtt(12.345), "12 ms");
  assert.equal(humanRtt(250.6), "251 ms");
});

Deno.test("humanRate() prints rates in powers of 1000", () => {
  assert.equal(humanRate(0), "0");
  assert.equal(humanRate(999), "999");
  assert.equal(humanRate(1500), "1.5k");
  assert.equal(humanRate(6_900_000_000), "6.9G");
});

Deno.test("renderStatus() fits 120 columns with long peer names and IPv6 endpoints", () => {
  const long = circuit({
    peer: "a-very-long-router-name.branch-office.example.net",
    address: "fd00:1234:5678:9abc:def0:1234:5678:9abc",
    state: "established",
    cipher: "chacha20-poly1305",
    txBytes: 5.5 * 1024 ** 4,
    rxBytes: 1023 * 1024 ** 3,
  });
  const lines = renderStatus(daemonStatus([long, circuit()])).split("\n");
  for (const line of lines) assert.ok(line.length <= TABLE_WIDTH, `${line.length}: ${line}`);
  assert.match(lines[2], /~/, "the peer column is cut where it does not fit");
});

Deno.test("findCircuit() finds a circuit by interface name or vid@peer", () => {
  const status = daemonStatus([circuit(), circuit({ vid: 4, ifname: null, peer: "r2" })]);
  assert.equal(findCircuit(status, "vela3")?.vid, 3);
  assert.equal(findCircuit(status, "4@r2")?.vid, 4);
  assert.equal(findCircuit(status, "vela9"), undefined);
});

Deno.test("renderCircuit() shows mode, MTU, addresses marking the derived one, cipher and keys", () => {
  const text = renderCircuit(
    circuit({ cipher: "aes-256-gcm", keyAgeSeconds: 65, rotations: 2, handshake: 3 }),
  );
  assert.match(text, /^mode +tap$/m);
  assert.match(text, /^MTU +1457$/m);
  assert.match(text, /^addresses +198\.18\.207\.1\/30, fd00:5a:1b2c:3d4e::1\/64 \(derived\)$/m);
  assert.match(text, /^cipher +aes-256-gcm$/m);
  assert.match(text, /^keys +made 1m05s ago \(handshake 3\), 2 rotations$/m);
  assert.match(text, /^last heard +3s ago$/m);
  assert.match(text, /^up for +1h02m05s$/m);
  assert.match(text, /^drops +send-failed 1, device-refused 2$/m);
});

Deno.test("renderCircuit() of a refused circuit says since when it is down and why", () => {
  const text = renderCircuit(circuit({
    state: "refused",
    uptimeSeconds: null,
    downSinceSeconds: 75,
    refusal: "bridge br9 is not offered here",
    lastHeardSeconds: null,
  }));
  assert.match(text, /^down since +1m15s ago$/m);
  assert.match(text, /^refused +bridge br9 is not offered here$/m);
  assert.match(text, /^last heard +never$/m);
  assert.doesNotMatch(text, /up for/);
});

Deno.test("renderTop() gives rates from two readings and dashes for the first", () => {
  const before = daemonStatus([circuit({ rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 })]);
  const after = daemonStatus([
    circuit({ rxBytes: 2_500_000, txBytes: 125_000, rxPackets: 2000, txPackets: 100 }),
  ]);
  const first = renderTop(before, undefined, 0, "title").split("\n");
  assert.equal(first[0], "title");
  assert.deepEqual(first[2].split(/\s{2,}/).slice(3, 7), ["-", "-", "-", "-"]);
  const lines = renderTop(after, before, 2, "title").split("\n");
  assert.deepEqual(lines[1].split(/\s{2,}/), [
    "IFACE",
    "PEER",
    "STATE",
    "RX bit/s",
    "TX bit/s",
    "RX pkt/s",
    "TX pkt/s",
    "DROPS",
    "RTT",
    "HEARD",
  ]);
  assert.deepEqual(lines[2].split(/\s{2,}/), [
    "vela3",
    "198.18.100.2:4455",
    "established (i)",
    "10.0M",
    "500.0k",
    "1.0k",
    "50",
    "3",
    "0.5 ms",
    "3s ago",
  ]);
  for (const line of lines) assert.ok(line.length <= TABLE_WIDTH);
});
