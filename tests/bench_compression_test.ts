/**
 * The compression benchmark's pure parts (bench/compression.ts): the workload generators (deterministic,
 * of the size asked, shaped like their kind, compressible as such text is), the judgement of the targets
 * (median and the 90% rule), the sums and ratios, the tables and the command line. No root, no namespaces.
 */

import assert from "node:assert/strict";
import {
  addRatios,
  COLUMNS,
  evaluateTargets,
  fieldDeltas,
  frameRatio,
  generate,
  judge,
  markdownTable,
  type Measurement,
  median,
  medianCells,
  medianRows,
  mixRow,
  type ModeName,
  type ModeRun,
  MODES,
  numericFields,
  parseOptions,
  Prng,
  roundOrder,
  RUN_COLUMNS,
  runCells,
  runInfoCells,
  sha256,
  STREAMS,
  type Target,
  textTable,
  wireShare,
} from "../bench/compression.ts";
import { lz4Available, lz4Compress, lz4CompressBound } from "../ffi/liblz4.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const MIB = 1024 * 1024;

Deno.test("Prng: the same seed gives the same numbers, within the asked ranges", () => {
  const a = new Prng(42);
  const b = new Prng(42);
  const c = new Prng(43);
  const xs = Array.from({ length: 1000 }, () => a.next());
  assert.deepEqual(Array.from({ length: 1000 }, () => b.next()), xs);
  assert.notDeepEqual(Array.from({ length: 1000 }, () => c.next()), xs);
  assert.ok(xs.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32));
  const r = new Prng(7);
  for (let i = 0; i < 10_000; i++) {
    const n = r.between(3, 9);
    assert.ok(n >= 3 && n <= 9 && Number.isInteger(n));
    const f = r.float();
    assert.ok(f >= 0 && f < 1);
  }
  assert.match(r.hex(43), /^[0-9a-f]{43}$/);
  // Skewed picks favour the first items but reach the last.
  const counts = new Map<number, number>();
  for (let i = 0; i < 20_000; i++) {
    const k = r.skewed([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  assert.ok(counts.get(0)! > 2 * counts.get(9)!, JSON.stringify([...counts]));
  assert.ok(counts.get(9)! > 0);
});

Deno.test("generate() gives exactly the bytes asked, the same for the same seed, others for another", () => {
  for (const { kind, seed } of STREAMS) {
    for (const size of [0, 1, 1000, 65_537, MIB + 3]) {
      assert.equal(generate(kind, seed, size).length, size, `${kind} ${size}`);
    }
    const one = generate(kind, seed, 300_000);
    assert.deepEqual(generate(kind, seed, 300_000), one, `${kind}: two calls with one seed`);
    assert.notDeepEqual(generate(kind, seed + 1, 300_000), one, `${kind}: another seed`);
    // A shorter stream is the start of a longer one (the last record is cut, not changed).
    assert.deepEqual(generate(kind, seed, 100_001), one.subarray(0, 100_001));
    assert.equal(sha256(generate(kind, seed, 300_000)), sha256(one));
  }
});

Deno.test("the text workloads are ASCII, and random bytes are spread evenly", () => {
  for (const kind of ["http", "syslog", "prose"] as const) {
    const data = generate(kind, 1, 200_000);
    assert.ok(data.every((b) => b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f)), kind);
  }
  const random = generate("random", 1, 256 * 1024);
  const histogram = new Array(256).fill(0);
  for (const b of random) histogram[b]++;
  assert.ok(Math.min(...histogram) > 800 && Math.max(...histogram) < 1250, JSON.stringify(histogram));
});

Deno.test("the HTTP workload is HTTP/1.1 requests and responses whose Content-Length fits their JSON body", () => {
  const stream = text(generate("http", 20_001, 400_000));
  let requests = 0;
  let responses = 0;
  let bodies = 0;
  const cookies = new Set<string>();
  // Read it as a client or server would: a head up to the blank line, then Content-Length bytes of body.
  let at = 0;
  while (true) {
    const end = stream.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const [start, ...lines] = stream.slice(at, end).split("\r\n");
    const headers = new Map(
      lines.map((line) => [line.slice(0, line.indexOf(": ")), line.slice(line.indexOf(": ") + 2)]),
    );
    const length = Number(headers.get("Content-Length") ?? 0);
    if (end + 4 + length > stream.length) break; // the last message is cut off
    const body = stream.slice(end + 4, end + 4 + length);
    at = end + 4 + length;
    if (start.startsWith("HTTP/1.1 ")) {
      responses++;
      assert.match(start, /^HTTP\/1\.1 (200 OK|201 Created|204 No Content|404 Not Found)$/);
      for (const name of ["Date", "Set-Cookie", "Server", "X-Request-Id"]) {
        assert.ok(headers.has(name), start);
      }
      assert.match(headers.get("Date")!, /^\w{3}, \d\d \w{3} 2026 \d\d:\d\d:\d\d GMT$/);
      cookies.add(headers.get("Set-Cookie")!.split(";")[0]);
    } else {
      requests++;
      assert.match(start, /^(GET|POST|PUT|DELETE) \/api\/v2\/\S+ HTTP\/1\.1$/);
      for (const name of ["Host", "User-Agent", "Accept", "Cookie"]) assert.ok(headers.has(name), start);
    }
    if (length > 0) {
      assert.ok(headers.get("Content-Type")?.startsWith("application/json"), start);
      assert.equal(typeof JSON.parse(body), "object", "a whole JSON body");
      bodies++;
    }
  }
  assert.ok(stream.length - at < 20_000, "every message but the last one read");
  assert.ok(
    requests > 50 && Math.abs(requests - responses) <= 1,
    `${requests} requests, ${responses} responses`,
  );
  assert.ok(bodies > responses / 2);
  assert.ok(cookies.size > 10, "session ids vary");
  assert.match(stream, /"items":\[\{"sku":"[A-Z]{3}-\d{4}"/, "nested arrays of objects");
  assert.match(stream, /"history":\[\["2026-\d\d-\d\dT[\d:.]+Z","\w+"\]/, "nested arrays");
});

Deno.test("the syslog workload is RFC 3164 lines with varying hosts, tags and pids", () => {
  const lines = text(generate("syslog", 20_002, 300_000)).split("\n").slice(0, -1);
  assert.ok(lines.length > 1000);
  const hosts = new Set<string>();
  const pids = new Set<string>();
  const tags = new Set<string>();
  for (const line of lines) {
    const match =
      /^<(\d{1,3})>(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d (\S+) ([\w/]+)(\[\d+\])?: \S.*$/
        .exec(line);
    assert.ok(match, line);
    assert.ok(Number(match[1]) < 192, line);
    hosts.add(match[3]);
    tags.add(match[4]);
    if (match[5]) pids.add(match[5]);
  }
  assert.ok(hosts.size >= 8 && tags.size >= 8 && pids.size > 30, `${hosts.size} ${tags.size} ${pids.size}`);
});

Deno.test("the prose workload is wrapped sentences of words", () => {
  const prose = text(generate("prose", 20_003, 200_000));
  const lines = prose.split("\n");
  assert.ok(lines.every((line) => line.length <= 72), "wrapped at 72 columns");
  assert.match(prose, /^Chapter 1\n\n[A-Z]/);
  const sentences = prose.replace(/\s+/g, " ").split(/(?<=[.?!]) /).slice(1, -1);
  assert.ok(sentences.length > 1000);
  assert.ok(
    sentences.every((s) => /^(Chapter \d+ )?[A-Z][a-z]*( [a-zA-Z]+)* ?[a-z]+[.?!]$/.test(s)),
    "sentences",
  );
  const vocabulary = new Set(prose.toLowerCase().match(/[a-z]+/g));
  assert.ok(vocabulary.size > 150 && vocabulary.size < 400, `${vocabulary.size} words`);
});

Deno.test("frameRatio() counts each piece compressed or raw, with its code byte", () => {
  const data = new Uint8Array(1000);
  // Half of each piece: 10 pieces of 100 bytes, each 50 + 1.
  assert.equal(frameRatio(data, 100, (p) => p.length / 2), 0.51);
  // Not smaller (0 or the same size): raw + 1.
  assert.equal(frameRatio(data, 100, () => 0), 1.01);
  assert.equal(frameRatio(data, 100, (p) => p.length), 1.01);
  // A last, shorter piece.
  assert.equal(frameRatio(new Uint8Array(250), 100, () => 10), 33 / 250);
  assert.equal(frameRatio(new Uint8Array(0), 100, () => 0), 0);
});

Deno.test({
  name: "the text workloads compress per frame with LZ4 as such text does, random data does not",
  ignore: !lz4Available(),
  fn() {
    const dst = new Uint8Array(lz4CompressBound(2048));
    const lz4 = (p: Uint8Array) => lz4Compress(p, 0, p.length, dst, 0, p.length - 1);
    const ratios = Object.fromEntries(
      STREAMS.map((s) => [s.kind, frameRatio(generate(s.kind, s.seed, MIB), 1348, lz4)]),
    );
    // Real English text (the licences in /usr/share/common-licenses) gives 0.68-0.76 so cut; JSON with
    // its ids and hashes, and syslog lines with their addresses, about the same.
    for (const kind of ["http", "syslog", "prose"]) {
      assert.ok(ratios[kind] > 0.6 && ratios[kind] < 0.85, `${kind} ${ratios[kind]}`);
    }
    // Never smaller: each piece raw, with its code byte.
    assert.ok(ratios.random > 1 && ratios.random < 1.001, `random ${ratios.random}`);
  },
});

Deno.test("median() of odd and even counts", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([5]), 5);
  assert.ok(Number.isNaN(median([])));
});

const atLeast: Target = { name: "t", kind: "atLeast", limit: 0.95, unit: "x" };
const atMost: Target = { name: "t", kind: "atMost", limit: 0.6, unit: "%" };

Deno.test("judge(): met when the median meets the target and no run is below 90% of it", () => {
  assert.equal(judge(atLeast, [0.97, 0.96, 1.02]).met, true);
  // The median misses.
  assert.equal(judge(atLeast, [0.94, 0.93, 1.2]).met, false);
  // The median meets it, one run falls below 0.855.
  const low = judge(atLeast, [0.99, 0.85, 1.0]);
  assert.equal(low.met, false);
  assert.equal(low.worst, 0.85);
  assert.ok(Math.abs(low.runBound - 0.855) < 1e-12);
  assert.match(low.detail, /worst run 0\.850 beyond the 90% bound 0\.855/);
  assert.equal(judge(atLeast, [0.96, 0.86, 1.0]).met, true);
  // An upper limit: each run at most limit / 0.9 (66.7% for 60%).
  assert.equal(judge(atMost, [0.55, 0.58, 0.6]).met, true);
  assert.equal(judge(atMost, [0.55, 0.58, 0.67]).met, false);
  assert.equal(judge(atMost, [0.55, 0.61, 0.62]).met, false);
  assert.match(judge(atMost, [0.5]).detail, /median 50\.0% meets ≤ 60\.0%/);
  // Strictly below.
  const below: Target = { name: "t", kind: "atMost", limit: 1, strict: true, unit: "x" };
  assert.equal(judge(below, [1, 1, 1]).met, false);
  assert.equal(judge(below, [0.9, 1.05, 0.99]).met, true);
  // Nothing measured: not judged, with the reason.
  const none = judge(atLeast, [], "dictionary did not run: exited 2");
  assert.equal(none.met, null);
  assert.equal(none.detail, "dictionary did not run: exited 2");
});

function row(workload: Measurement["workload"], over: Partial<Measurement> = {}): Measurement {
  return {
    workload,
    status: "ok",
    note: "",
    payloadBytes: 16 * MIB,
    txBytes: 16.75 * MIB,
    txPackets: 12_000,
    compressIn: null,
    compressOut: null,
    sentUncompressed: null,
    compressionPauses: null,
    wireBytes: 16.8 * MIB,
    wirePackets: 500,
    datagramBytes: 17.2 * MIB,
    seconds: 0.2,
    mbps: 671,
    cpuSeconds: 0.1,
    cpuStatSeconds: 0.1,
    cpuPerGB: 0.1 / (16 * MIB / 1e9),
    sha: "ok",
    ...over,
  };
}

function modeRun(
  mode: ModeName,
  round: number,
  rows: Measurement[],
  status: ModeRun["status"] = "ok",
): ModeRun {
  const run: ModeRun = {
    round,
    mode,
    args: [...MODES[mode].args],
    status,
    reason: status === "skip" ? "the listener (vela --listen) exited 2: unknown option --compress-mode" : "",
    compression: MODES[mode].compression,
    mtu: 1453,
    started: "2026-12-04T18:00:00.000Z",
    load: "0.50 0.40 0.30",
    busy: "",
    otherCpuSeconds: 0.2,
    rows,
  };
  const mix = mixRow(rows);
  if (mix) run.rows.push(mix);
  return run;
}

Deno.test("mixRow() sums the three text workloads, and is null while one is missing or failed", () => {
  const rows = [
    row("http", { wireBytes: 12 * MIB, seconds: 0.5, cpuSeconds: 0.3, compressIn: 10, compressOut: 6 }),
    row("syslog", { wireBytes: 10 * MIB, seconds: 0.25, cpuSeconds: 0.2, compressIn: 10, compressOut: 5 }),
    row("prose", { wireBytes: 8 * MIB, seconds: 0.25, cpuSeconds: 0.1, compressIn: 10, compressOut: 4 }),
    row("random"),
  ];
  const mix = mixRow(rows)!;
  assert.equal(mix.payloadBytes, 48 * MIB);
  assert.equal(mix.wireBytes, 30 * MIB);
  assert.equal(wireShare(mix), 30 / 48);
  assert.equal(mix.seconds, 1);
  assert.equal(mix.mbps, (48 * MIB * 8) / 1e6);
  assert.ok(Math.abs(mix.cpuPerGB! - 0.6 / (48 * MIB / 1e9)) < 1e-9);
  assert.equal(mix.compressOut, 15);
  assert.equal(mixRow(rows.slice(1)), null);
  assert.equal(mixRow([...rows.slice(1), row("http", { status: "fail" })]), null);
  assert.equal(mixRow([rows[0], rows[1], row("prose", { sha: "mismatch" })])!.sha, "mismatch");
  // Off has no stage counters.
  assert.equal(mixRow([row("http"), row("syslog"), row("prose")])!.compressOut, null);
});

Deno.test("addRatios() divides by the off run of the same round; evaluateTargets() judges the issue's targets", () => {
  // Each 16 MiB in `seconds`.
  const text = (share: number, seconds: number) =>
    (["http", "syslog", "prose"] as const).map((w) =>
      row(w, { wireBytes: share * 16 * MIB, seconds, mbps: (16 * MIB * 8) / seconds / 1e6 })
    );
  const runs = [
    modeRun("off", 1, [...text(1.05, 0.15), row("iperf3", { mbps: 4000, cpuPerGB: 2 })]),
    modeRun("stateless", 1, [...text(0.8, 0.4), row("iperf3", { mbps: 3900, cpuPerGB: 2.2 })]),
    modeRun("dictionary", 1, [], "skip"),
    modeRun("stateless", 2, [...text(0.81, 0.42), row("iperf3", { mbps: 3000, cpuPerGB: 2.1 })]),
    modeRun("off", 2, [...text(1.05, 0.16), row("iperf3", { mbps: 4200, cpuPerGB: 2 })]),
    modeRun("dictionary", 2, [], "skip"),
  ];
  addRatios(runs);
  const iperf = (run: ModeRun) => run.rows.find((r) => r.workload === "iperf3")!;
  assert.equal(iperf(runs[1]).throughputVsOff, 3900 / 4000);
  assert.ok(Math.abs(iperf(runs[1]).cpuVsOff! - 1.1) < 1e-12);
  assert.equal(iperf(runs[3]).throughputVsOff, 3000 / 4200);
  assert.equal(iperf(runs[0]).throughputVsOff, 1);
  const mix = runs[1].rows.find((r) => r.workload === "mix")!;
  assert.ok(Math.abs(mix.throughputVsOff! - 0.15 / 0.4) < 1e-12);

  const verdicts = evaluateTargets(runs, ["off", "stateless", "dictionary"]);
  assert.equal(verdicts.length, 4);
  const [wire, belowStateless, stateless, dictionary] = verdicts;
  assert.equal(wire.met, null);
  assert.match(wire.detail, /dictionary did not run: the listener .* exited 2/);
  assert.equal(belowStateless.met, null);
  assert.equal(dictionary.met, null);
  // Stateless: 0.975 and 0.714, median 0.845: not met.
  assert.deepEqual(stateless.values, [3900 / 4000, 3000 / 4200]);
  assert.equal(stateless.met, false);
  // Not asked for.
  assert.match(evaluateTargets(runs, ["off", "stateless"])[0].detail, /dictionary was not asked for/);
});

Deno.test("evaluateTargets(): dictionary at most 60% of carried on the mix and below stateless", () => {
  const text = (share: number) =>
    (["http", "syslog", "prose"] as const).map((w) => row(w, { wireBytes: share * 16 * MIB }));
  const runs: ModeRun[] = [];
  [[0.55, 0.8], [0.58, 0.79], [0.62, 0.81]].forEach(([dictionary, stateless], i) => {
    runs.push(modeRun("off", i + 1, [...text(1.05), row("iperf3", { mbps: 4000 })]));
    runs.push(modeRun("stateless", i + 1, [...text(stateless), row("iperf3", { mbps: 3950 })]));
    runs.push(modeRun("dictionary", i + 1, [...text(dictionary), row("iperf3", { mbps: 3700 })]));
  });
  addRatios(runs);
  const [wire, below, stateless, dictionary] = evaluateTargets(runs, ["off", "stateless", "dictionary"]);
  assert.equal(wire.met, true, wire.detail);
  assert.ok(Math.abs(wire.median! - 0.58) < 1e-12);
  assert.equal(below.met, true);
  assert.equal(stateless.met, true);
  assert.ok(Math.abs(dictionary.median! - 0.925) < 1e-12);
  assert.equal(dictionary.met, false);
});

Deno.test("the tables: every run's rows, a skipped mode's reason, the medians, Markdown and text", () => {
  const runs = [
    modeRun("off", 1, [
      row("http"),
      row("syslog"),
      row("prose"),
      row("iperf3", { payloadBytes: 2000 * MIB }),
    ]),
    modeRun("stateless", 1, [
      row("http", { compressOut: 12 * MIB, wireBytes: 12.5 * MIB, note: "a | b" }),
      row("syslog"),
      row("prose"),
      row("random", { status: "fail", note: "the random stream failed" }),
    ]),
    modeRun("dictionary", 1, [], "skip"),
  ];
  addRatios(runs);
  const cells = runCells(runs);
  assert.ok(cells.every((c) => c.length === COLUMNS.length), "every row has every column");
  assert.deepEqual(cells.map((c) => `${c[1]} ${c[2]}`), [
    "off http",
    "off syslog",
    "off prose",
    "off mix",
    "off iperf3",
    "stateless http",
    "stateless syslog",
    "stateless prose",
    "stateless mix",
    "stateless random",
    "dictionary -",
  ]);
  const http = cells[5];
  assert.deepEqual(http.slice(3, 12), [
    "16.00",
    "16.75",
    "12.00",
    "12.50",
    "78.1",
    "671",
    "5.96",
    "1.00",
    "1.00",
  ]);
  assert.equal(cells[0][5], "-", "no stage counters when off");
  assert.match(cells[9].at(-1)!, /^FAIL: the random stream failed$/);
  assert.match(cells[10].at(-1)!, /^skipped: the listener/);

  const medians = medianRows([...runs, modeRun("off", 2, [row("http", { mbps: 700, wireBytes: 18 * MIB })])]);
  const offHttp = medians.find((m) => m.mode === "off" && m.row.workload === "http")!;
  assert.equal(offHttp.rounds, 2);
  assert.equal(offHttp.row.mbps, (671 + 700) / 2);
  assert.ok(Math.abs(offHttp.wireShare - (16.8 + 18) / 2 / 16) < 1e-12);
  assert.ok(medianCells(runs).every((c) => c[0] === "median" && c.length === COLUMNS.length));

  const md = markdownTable(COLUMNS, cells).split("\n");
  assert.equal(md[0], `| ${COLUMNS.join(" | ")} |`);
  assert.equal(
    md[1],
    "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  );
  assert.equal(md.length, cells.length + 2);
  assert.ok(md[7].endsWith("| a \\| b |"), md[7]);
  assert.ok(md.slice(2).every((line) => line.split(/(?<!\\)\|/).length === COLUMNS.length + 2), "no stray |");

  const info = runInfoCells(runs);
  assert.ok(info.every((c) => c.length === RUN_COLUMNS.length));
  assert.deepEqual(info[0], [
    "1",
    "off",
    "2026-12-04T18:00:00Z",
    "0.50 0.40 0.30",
    "0.2",
    "off",
    "1453",
    "ok",
    "",
  ]);
  assert.match(info[2].at(-1)!, /exited 2: unknown option --compress-mode/);

  const plain = textTable(COLUMNS, cells).split("\n");
  assert.equal(plain.length, cells.length + 1);
  // Numbers are aligned right: the Mbit/s column ends at the same place in every measured row.
  const end = plain[0].indexOf("Mbit/s") + "Mbit/s".length;
  assert.equal(plain[1].slice(end - 3, end), "671");
});

Deno.test("parseOptions(): defaults, --quick, and what it refuses", () => {
  assert.deepEqual(parseOptions([]), {
    modes: ["off", "stateless", "dictionary"],
    mib: 16,
    rounds: 3,
    quick: false,
    iperfSeconds: 5,
    quietWaitMs: 600_000,
  });
  assert.deepEqual(parseOptions(["--quick"]), {
    modes: ["off", "stateless", "dictionary"],
    mib: 2,
    rounds: 1,
    quick: true,
    iperfSeconds: 2,
    quietWaitMs: 0,
  });
  const some = parseOptions(["--modes", "stateless,off", "--mib", "4", "--rounds", "5"]);
  assert.ok(typeof some === "object");
  assert.deepEqual([some.modes, some.mib, some.rounds], [["stateless", "off"], 4, 5]);
  assert.equal(parseOptions(["--help"]), "help");
  assert.match(parseOptions(["--modes", "off,gzip"]) as string, /unknown mode gzip/);
  assert.match(parseOptions(["--modes", "off,off"]) as string, /twice/);
  assert.match(parseOptions(["--mib", "0"]) as string, /--mib takes a whole number/);
  assert.match(parseOptions(["--rounds", "x"]) as string, /--rounds takes a whole number/);
  assert.equal(typeof parseOptions(["--bogus"]), "string");
});

Deno.test("roundOrder() alternates the order of the modes between rounds", () => {
  const modes: ModeName[] = ["off", "stateless", "dictionary"];
  assert.deepEqual(roundOrder(modes, 1), modes);
  assert.deepEqual(roundOrder(modes, 2), ["dictionary", "stateless", "off"]);
  assert.deepEqual(roundOrder(modes, 3), modes);
});

Deno.test("numericFields() and fieldDeltas() read a circuit's counters, drops included", () => {
  const before = numericFields({ vid: 3, txBytes: 100, state: "established", drops: { badCompression: 0 } });
  assert.deepEqual(before, { vid: 3, txBytes: 100, "drops.badCompression": 0 });
  const after = numericFields({
    vid: 3,
    txBytes: 250,
    compressOut: 40,
    uptimeSeconds: 9,
    rttMs: 0.2,
    drops: { badCompression: 2 },
  });
  assert.deepEqual(fieldDeltas(before, after), { txBytes: 150, compressOut: 40, "drops.badCompression": 2 });
});

Deno.test("the modes table: off adds nothing, the others compress and say how", () => {
  assert.deepEqual(MODES.off, { args: [], compression: "off" });
  for (const mode of ["stateless", "dictionary"] as const) {
    assert.equal(MODES[mode].args[0], "--compress");
    assert.notEqual(MODES[mode].compression, "off");
  }
});
