/** Prometheus metrics: the text exposition of a status, and the HTTP endpoint on loopback (no root). */

import { circuitStatus, daemonStatus } from "./fakes/status_fixture.ts";
import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import type { CircuitStatus } from "../src/daemon/daemon.ts";
import { RuntimeFailure } from "../src/errors.ts";
import { formatMetrics, serveMetrics } from "../src/metrics.ts";

const SAMPLE = /^[a-z_]+(\{.*\})? [0-9.e+-]+$/;

function circuit(overrides: Partial<CircuitStatus> = {}): CircuitStatus {
  return circuitStatus({ uptimeSeconds: 65, rttMs: 1.5, rxBytes: 1400, ...overrides });
}

const status = daemonStatus;

/** A label set `{a="x",b="y"}` as an object, with the text format's escapes undone. */
function labels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const pattern = /([a-z_]+)="((?:[^"\\]|\\.)*)"(,|$)/gy;
  let match: RegExpExecArray | null;
  while ((match = pattern.exec(text)) !== null) {
    out[match[1]] = match[2].replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
    if (match[3] === "") break;
  }
  assert.equal(pattern.lastIndex, text.length, `the labels ${text} parse to the end`);
  return out;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Checks `text` against the Prometheus text format as VELA uses it and returns the samples: every line
 * is a HELP, a TYPE or a sample; each family has HELP then TYPE before its samples; the text ends with a
 * newline.
 */
function checkExposition(text: string): Sample[] {
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const samples: Sample[] = [];
  const helped = new Set<string>();
  const typed = new Map<string, string>();
  let current: string | undefined;
  for (const line of text.slice(0, -1).split("\n")) {
    const comment = /^# (HELP|TYPE) ([a-z_]+) (.+)$/.exec(line);
    if (comment) {
      const [, kind, name, rest] = comment;
      if (kind === "HELP") {
        assert.ok(!helped.has(name), `one HELP for ${name}`);
        assert.ok(!typed.has(name), `HELP before TYPE for ${name}`);
        helped.add(name);
      } else {
        assert.ok(helped.has(name), `HELP before TYPE for ${name}`);
        assert.ok(["counter", "gauge"].includes(rest), `TYPE of ${name} is ${rest}`);
        typed.set(name, rest);
        current = name;
      }
      continue;
    }
    assert.match(line, SAMPLE, `a sample line: ${JSON.stringify(line)}`);
    const [, name, labelText, value] = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)!;
    assert.ok(typed.has(name), `HELP and TYPE precede the samples of ${name}`);
    assert.equal(name, current, `the samples of ${name} follow its TYPE line`);
    if (typed.get(name) === "counter") assert.match(name, /_total$/, "a counter's name ends in _total");
    assert.ok(Number.isFinite(Number(value)), `the value of ${line}`);
    samples.push({ name, labels: labelText === undefined ? {} : labels(labelText), value: Number(value) });
  }
  return samples;
}

Deno.test("formatMetrics() with no circuits gives vela_info and every family's HELP and TYPE", () => {
  const text = formatMetrics(status([]));
  const samples = checkExposition(text);
  assert.deepEqual(samples, [
    { name: "vela_info", labels: { version: denoJson.version }, value: 1 },
    { name: "vela_moderated_wakeups_total", labels: {}, value: 0 },
    { name: "vela_udp_gso_refusals_total", labels: {}, value: 0 },
  ]);
  for (
    const name of [
      "vela_info",
      "vela_circuit_up",
      "vela_circuit_tx_packets_total",
      "vela_circuit_tx_bytes_total",
      "vela_circuit_rx_packets_total",
      "vela_circuit_rx_bytes_total",
      "vela_circuit_send_failed_total",
      "vela_circuit_device_refused_total",
      "vela_circuit_rtt_seconds",
      "vela_circuit_uptime_seconds",
      "vela_dropped_datagrams_total",
      "vela_moderated_wakeups_total",
      "vela_udp_gso_refusals_total",
    ]
  ) {
    assert.match(text, new RegExp(`^# HELP ${name} \\S`, "m"), name);
    assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge)$`, "m"), name);
  }
});

Deno.test("formatMetrics() gives each circuit's counters with its labels and is valid exposition text", () => {
  const text = formatMetrics(status([
    circuit(),
    circuit({
      peer: "fd00:198:18:100::2",
      address: "fd00:198:18:100::2",
      vid: 4,
      state: "requesting",
      ifname: null,
      uptimeSeconds: null,
      rttMs: null,
      txPackets: 0,
      txBytes: 0,
      rxPackets: 0,
      rxBytes: 0,
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
  ], { "bad-mac": 7, runt: 0 }));
  const samples = checkExposition(text);
  const value = (name: string, vid: string) =>
    samples.find((s) => s.name === name && s.labels.vid === vid)?.value;
  assert.deepEqual(samples.find((s) => s.name === "vela_circuit_up" && s.labels.vid === "3")?.labels, {
    peer: "198.18.100.2",
    address: "198.18.100.2",
    vid: "3",
    ifname: "vela3",
  });
  assert.equal(value("vela_circuit_up", "3"), 1);
  assert.equal(value("vela_circuit_up", "4"), 0);
  assert.equal(value("vela_circuit_tx_packets_total", "3"), 12);
  assert.equal(value("vela_circuit_tx_bytes_total", "3"), 1536);
  assert.equal(value("vela_circuit_rx_packets_total", "3"), 11);
  assert.equal(value("vela_circuit_rx_bytes_total", "3"), 1400);
  assert.equal(value("vela_circuit_send_failed_total", "3"), 1);
  assert.equal(value("vela_circuit_device_refused_total", "3"), 2);
  assert.equal(value("vela_circuit_rtt_seconds", "3"), 0.0015);
  assert.equal(value("vela_circuit_uptime_seconds", "3"), 65);
  // Unknown values are left out rather than written as a number.
  assert.equal(value("vela_circuit_rtt_seconds", "4"), undefined);
  assert.equal(value("vela_circuit_uptime_seconds", "4"), undefined);
  assert.equal(
    samples.find((s) => s.name === "vela_circuit_up" && s.labels.vid === "4")?.labels.ifname,
    "",
    "a circuit without an interface has an empty ifname label",
  );
  const drops = samples.filter((s) => s.name === "vela_dropped_datagrams_total");
  assert.deepEqual(drops.map((s) => [s.labels.reason, s.value]), [["bad-mac", 7], ["runt", 0]]);
});

Deno.test("formatMetrics() gives the sending Worker's moderated wake-ups", () => {
  const samples = checkExposition(formatMetrics({ ...status([]), moderatedWakeups: 1234 }));
  assert.deepEqual(samples.find((s) => s.name === "vela_moderated_wakeups_total"), {
    name: "vela_moderated_wakeups_total",
    labels: {},
    value: 1234,
  });
});

Deno.test("formatMetrics() escapes quotes, backslashes and newlines in label values", () => {
  const nasty = 'a"b\\c\nd';
  const text = formatMetrics(status([circuit({ peer: nasty, ifname: 'x"0' })], { [nasty]: 1 }));
  const samples = checkExposition(text);
  assert.ok(text.includes('peer="a\\"b\\\\c\\nd"'), "the peer label is escaped as the text format asks");
  assert.ok(text.includes('ifname="x\\"0"'));
  assert.ok(text.includes('reason="a\\"b\\\\c\\nd"'));
  const up = samples.find((s) => s.name === "vela_circuit_up")!;
  assert.equal(up.labels.peer, nasty, "the escaped label reads back as the original");
  assert.equal(up.labels.ifname, 'x"0');
  assert.equal(samples.find((s) => s.name === "vela_dropped_datagrams_total")!.labels.reason, nasty);
  for (const line of text.split("\n")) assert.ok(!line.startsWith("d"), "no raw newline splits a sample");
});

Deno.test("formatMetrics() writes large counters as plain numbers", () => {
  const text = formatMetrics(status([circuit({ txBytes: 2 ** 53 - 1, rxBytes: 1e21, rttMs: 0.001 })]));
  const samples = checkExposition(text);
  assert.equal(samples.find((s) => s.name === "vela_circuit_tx_bytes_total")!.value, 2 ** 53 - 1);
  assert.equal(samples.find((s) => s.name === "vela_circuit_rx_bytes_total")!.value, 1e21);
  assert.equal(samples.find((s) => s.name === "vela_circuit_rtt_seconds")!.value, 0.000001);
});

/** A TCP port on 127.0.0.1 that was free a moment ago. */
function freePort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  return port;
}

Deno.test("serveMetrics() answers GET /metrics with the current status, 404 elsewhere, and closes twice safely", async () => {
  let current = status([circuit()]);
  const port = freePort();
  const server = serveMetrics({ hostname: "127.0.0.1", port }, () => current);
  try {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
    const body = await response.text();
    checkExposition(body);
    assert.match(body, /^vela_circuit_up\{.*vid="3".*\} 1$/m);

    current = status([circuit({ rxPackets: 99 })]);
    const again = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(again, /^vela_circuit_rx_packets_total\{.*\} 99$/m, "each scrape reads the status afresh");

    const head = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "HEAD" });
    assert.equal(head.status, 200);
    await head.body?.cancel();

    const other = await fetch(`http://127.0.0.1:${port}/other`);
    assert.equal(other.status, 404);
    await other.body?.cancel();
    const root = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(root.status, 404);
    await root.body?.cancel();

    const post = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await server.close();
    await server.close();
  }
  await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`), "nothing listens after close()");
});

Deno.test("serveMetrics() throws RuntimeFailure naming --metrics when the port is taken", () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  try {
    assert.throws(
      () => serveMetrics({ hostname: "127.0.0.1", port }, () => status([])),
      (error: unknown) =>
        error instanceof RuntimeFailure && error.message.includes(`127.0.0.1:${port}`) &&
        error.message.includes("--metrics"),
    );
  } finally {
    taken.close();
  }
});
