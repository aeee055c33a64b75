/**
 * The Wireshark dissector contrib/vela.lua, read back by tshark: a capture of a real tap link and a real tun
 * link (handshake, keepalives and data), and a file of hand-made malformed datagrams.
 */

import assert from "node:assert/strict";
import { Bed, run } from "../../testbed/netns.ts";
import { encode } from "../../src/wire.ts";
import { parseCidr } from "../../src/ip.ts";
import { netnsTest, requireProgram } from "./support.ts";

const SCRIPT = new URL("../../contrib/vela.lua", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A field with several occurrences (outer and inner eth.src, ip.src) comes out as "a;b". */
const AGGREGATOR = ";";

/**
 * tshark -r `pcap` with the dissector loaded, `-Y filter`, one row per packet of the `fields`. The last field
 * may contain commas (the Info column): it takes the rest of the line.
 */
async function dissect(pcap: string, filter: string, fields: string[]): Promise<string[][]> {
  const result = await run([
    "tshark",
    "-r",
    pcap,
    "-X",
    `lua_script:${SCRIPT}`,
    "-Y",
    filter,
    "-T",
    "fields",
    "-E",
    "separator=,",
    "-E",
    `aggregator=${AGGREGATOR}`,
    ...fields.flatMap((field) => ["-e", field]),
  ]);
  assert.equal(result.code, 0, `tshark -Y '${filter}' exited ${result.code}: ${result.stderr}`);
  assert.doesNotMatch(result.stderr, /lua/i, "the script loads without a Lua error");
  return result.stdout.split("\n").filter((line) => line !== "").map((line) => {
    const cells = line.split(",");
    return [...cells.slice(0, fields.length - 1), cells.slice(fields.length - 1).join(",")];
  });
}

/** No packet of `pcap` made the script raise a Lua error or hit its own error guard. */
async function assertNoLuaErrors(pcap: string): Promise<void> {
  const errors = await dissect(pcap, "_ws.lua.error || vela.dissector_error", [
    "frame.number",
    "_ws.expert.message",
  ]);
  assert.deepEqual(errors, [], "Lua errors in the dissector");
}

/** The last occurrence of a repeated field (the inner frame's, after the outer one's). */
const inner = (cell: string) => cell.split(AGGREGATOR).at(-1);

/**
 * Captures on bed.vethA from before the daemons start: a listener in b and an initiator in a (circuit `vid`,
 * `initiatorArgs`), pings `far` until it answers and five more times, then stays up long enough for a
 * KEEPALIVE each way. Returns the interface name; the caller removes `capture`.
 */
async function captureLink(bed: Bed, vid: number, initiatorArgs: string[], far: string, capture: string) {
  const tshark = bed.spawn(bed.a, ["tshark", "-i", bed.vethA, "-f", "udp port 4455", "-w", capture, "-q"]);
  await bed.until(
    () => Promise.resolve(tshark.output().includes("Capturing on")),
    "tshark to start capturing",
  );
  await sleep(500);
  bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
  bed.vela(bed.a, ["--peer", bed.b4, "--vid", String(vid), ...initiatorArgs]);
  const ifname = `vela${vid}`;
  await bed.until(
    async () => (await bed.hasLink(bed.a, ifname)) && (await bed.hasLink(bed.b, ifname)),
    ifname,
  );
  await bed.waitPing(bed.a, far);
  const ping = await bed.exec(bed.a, ["ping", "-c", "5", "-i", "0.2", far]);
  assert.equal(ping.code, 0, ping.stdout + ping.stderr);
  // Each side sends a KEEPALIVE every 2 s once established; the other answers at once.
  await sleep(2500);
  // Let tshark write the last packets before it is told to stop.
  await sleep(500);
  const status = await bed.stop(tshark, "SIGINT");
  assert.equal(status.code, 0, tshark.output());
  assert.ok((await Deno.stat(capture)).size > 0, "the capture is not empty");
  return ifname;
}

/** Control messages of the capture as { code, vid, mtu, plan, mode, info }. */
async function controls(pcap: string) {
  const rows = await dissect(pcap, 'vela.kind == "control"', [
    "vela.code",
    "vela.vid",
    "vela.mtu",
    "vela.plan.ipv4",
    "vela.mode",
    "_ws.col.Info",
  ]);
  return rows.map(([code, vid, mtu, plan, mode, info]) => ({ code, vid, mtu, plan, mode, info }));
}

netnsTest("the dissector decodes a tap link's handshake, keepalives and Ethernet frames", async () => {
  if (!(await requireProgram("tshark", "tshark"))) return;
  await using bed = await Bed.create();
  const capture = `/tmp/vela-${Deno.pid}-dissector-tap.pcap`;
  try {
    const ifname = await captureLink(bed, 3, ["--address", "198.18.207.1/30"], "198.18.207.2", capture);
    const macA = (await bed.link(bed.a, ifname)).address;
    const macB = (await bed.link(bed.b, ifname)).address;
    await assertNoLuaErrors(capture);

    // Every datagram on the port is VELA's.
    const udp = await dissect(capture, "udp.port == 4455", ["frame.number"]);
    const vela = await dissect(capture, "vela", ["frame.number"]);
    assert.ok(udp.length > 0);
    assert.equal(vela.length, udp.length, "every captured datagram is dissected as VELA");

    const control = await controls(capture);
    const ireq = control.find((m) => m.code === "1");
    assert.ok(ireq, `no IREQ among ${JSON.stringify(control)}`);
    assert.equal(ireq.vid, "3");
    assert.equal(ireq.mtu, "1457");
    assert.equal(ireq.plan, "198.18.207.2", "the plan gives the responder 198.18.207.2");
    assert.equal(ireq.mode, "1", "tap");
    assert.match(ireq.info, /^VELA IREQ vid 3 MTU 1457\b/);
    const iack = control.find((m) => m.code === "2");
    assert.ok(iack, `no IACK among ${JSON.stringify(control)}`);
    assert.deepEqual([iack.vid, iack.mtu, iack.mode], ["3", "1457", "1"]);
    assert.match(iack.info, /^VELA IACK vid 3 MTU 1457\b/);
    assert.ok(control.some((m) => m.code === "3" && m.vid === "3"), "an ICON for vid 3");
    const keepalives = control.filter((m) => m.code === "5" && m.vid === "3");
    assert.ok(keepalives.length >= 1, `no KEEPALIVE among ${JSON.stringify(control)}`);
    assert.match(keepalives[0].info, /^VELA KEEPALIVE vid 3\b/);

    // Data: the vid byte, then an Ethernet frame from the sending tap carrying the pings.
    const data = await dissect(capture, 'vela.kind == "data" && icmp', [
      "vela.vid",
      "icmp.type",
      "eth.src",
      "ip.src",
      "_ws.col.Info",
    ]);
    const requests = data.filter(([, type]) => type === "8");
    const replies = data.filter(([, type]) => type === "0");
    assert.ok(requests.length >= 5 && replies.length >= 5, `pings in ${JSON.stringify(data)}`);
    for (const [vid, , ethSrc, ipSrc, info] of requests) {
      assert.equal(vid, "3");
      assert.equal(ethSrc.split(AGGREGATOR).length, 2, "outer and inner Ethernet");
      assert.equal(inner(ethSrc), macA, "an echo request comes from a's tap");
      assert.equal(inner(ipSrc), "198.18.207.1");
      assert.match(info, /^VELA data vid 3: Echo \(ping\) request/);
    }
    for (const [vid, , ethSrc, ipSrc] of replies) {
      assert.equal(vid, "3");
      assert.equal(inner(ethSrc), macB, "an echo reply comes from b's tap");
      assert.equal(inner(ipSrc), "198.18.207.2");
    }
  } finally {
    await Deno.remove(capture).catch(() => undefined);
  }
});

netnsTest("the dissector decodes a tun link's data as IP packets", async () => {
  if (!(await requireProgram("tshark", "tshark"))) return;
  await using bed = await Bed.create();
  const capture = `/tmp/vela-${Deno.pid}-dissector-tun.pcap`;
  try {
    await captureLink(bed, 4, ["--mode", "tun", "--address", "198.18.207.9/30"], "198.18.207.10", capture);
    await assertNoLuaErrors(capture);

    const control = await controls(capture);
    const ireq = control.find((m) => m.code === "1");
    assert.ok(ireq, `no IREQ among ${JSON.stringify(control)}`);
    assert.deepEqual([ireq.vid, ireq.mtu, ireq.plan, ireq.mode], ["4", "1471", "198.18.207.10", "2"]);
    assert.ok(control.some((m) => m.code === "2" && m.vid === "4" && m.mode === "2"), "an IACK for tun");
    assert.ok(control.some((m) => m.code === "3" && m.vid === "4"), "an ICON");
    assert.ok(control.some((m) => m.code === "5" && m.vid === "4"), "a KEEPALIVE");

    const data = await dissect(capture, "vela.vid == 4 && icmp", [
      "vela.kind",
      "icmp.type",
      "eth.src",
      "ip.src",
      "_ws.col.Info",
    ]);
    const types = new Set(data.map(([, type]) => type));
    assert.ok(types.has("8") && types.has("0"), `echo request and reply in ${JSON.stringify(data)}`);
    for (const [kind, type, ethSrc, ipSrc, info] of data) {
      assert.equal(kind, "data");
      assert.equal(ethSrc.split(AGGREGATOR).length, 1, "no inner Ethernet header in tun mode");
      assert.equal(ipSrc.split(AGGREGATOR).length, 2, "outer and inner IP");
      assert.equal(inner(ipSrc), type === "8" ? "198.18.207.9" : "198.18.207.10");
      assert.match(info, /^VELA data vid 4: Echo \(ping\) (request|reply)/);
    }
  } finally {
    await Deno.remove(capture).catch(() => undefined);
  }
});

// ---- Malformed datagrams: a pcap written here, no namespaces needed. ----

/** Ethernet + IPv4 + UDP (198.18.0.1:40000 → 198.18.0.2:4455) around `payload`, checksums 0. */
function udpFrame(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(14 + 20 + 8 + payload.length);
  const view = new DataView(frame.buffer);
  frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  frame.set([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2], 14);
  view.setUint16(16, 20 + 8 + payload.length);
  view.setUint16(34, 40000);
  view.setUint16(36, 4455);
  view.setUint16(38, 8 + payload.length);
  frame.set(payload, 42);
  return frame;
}

/** A classic pcap file (Ethernet) of one frame per payload. */
function pcapOf(payloads: Uint8Array[]): Uint8Array {
  const frames = payloads.map(udpFrame);
  const out = new Uint8Array(24 + frames.reduce((sum, f) => sum + 16 + f.length, 0));
  const view = new DataView(out.buffer);
  view.setUint32(0, 0xa1b2c3d4, true);
  view.setUint16(4, 2, true);
  view.setUint16(6, 4, true);
  view.setUint32(16, 65535, true);
  view.setUint32(20, 1, true);
  let at = 24;
  frames.forEach((frame, i) => {
    view.setUint32(at, 1_760_000_000 + i, true);
    view.setUint32(at + 8, frame.length, true);
    view.setUint32(at + 12, frame.length, true);
    out.set(frame, at + 16);
    at += 16 + frame.length;
  });
  return out;
}

Deno.test({
  name: "the dissector flags malformed datagrams with expert infos and never raises a Lua error",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    if (!(await requireProgram("tshark", "tshark"))) return;
    const nonces = { initiatorNonce: 0x0102030405060708n, responderNonce: 0x1112131415161718n };
    const plan = [parseCidr("198.18.207.2/30")!, parseCidr("fd00:207::2/126")!];
    const ireq = encode({
      type: "IREQ",
      vid: 3,
      initiatorNonce: nonces.initiatorNonce,
      timestamp: 0x0000019a00000000n,
      mode: "tap",
      mtu: 1457,
      options: 0,
      plan,
    });
    const iack = encode({ type: "IACK", vid: 3, ...nonces, mtu: 1457, mode: "tap", options: 0 });
    const keepalive = encode({
      type: "KEEPALIVE",
      vid: 3,
      senderNonce: 1n,
      receiverNonce: 2n,
      sentAt: 4096n,
      echo: 0n,
    });
    const nak = encode({ type: "NAK", vid: 3, initiatorNonce: 1n, reason: 1, text: "not allowed" }, 16);
    const patched = (bytes: Uint8Array, at: number, value: number) => {
      const copy = bytes.slice();
      copy[at] = value;
      return copy;
    };
    // [datagram, the expert field it must raise (or null: none of ours)]
    const cases: [Uint8Array, string | null][] = [
      [ireq, null],
      [iack, null],
      [keepalive, null],
      [nak, null],
      [Uint8Array.of(3), "vela.runt"],
      [Uint8Array.of(0, 1, 1), "vela.truncated"],
      [patched(keepalive, 2, 2), "vela.bad_version"],
      [patched(keepalive, 1, 9), "vela.unknown_code"],
      [Uint8Array.of(...iack, 1, 2, 3), "vela.bad_length"],
      [ireq.slice(0, ireq.length - 3), "vela.truncated"],
      [patched(ireq, 8 + 16, 7), "vela.bad_field"],
      [patched(ireq, 8 + 24, 5), "vela.bad_field"],
      [patched(nak, 8 + 9, 250), "vela.bad_field"],
      [patched(iack, 3, 0), "vela.bad_field"],
      [patched(iack, 7, 1), "vela.bad_field"],
    ];
    // Garbage after a control marker, and mutated real messages: none may break the script.
    let seed = 7;
    const random = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % n;
    const fuzz: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) {
      const base = [ireq, iack, keepalive, nak][random(4)].slice(0, 1 + random(ireq.length + 8));
      for (let j = random(4); j > 0; j--) base[random(base.length)] = random(256);
      if (random(2)) base[0] = 0;
      fuzz.push(base);
    }
    const pcap = await Deno.makeTempFile({ prefix: "vela-dissector-", suffix: ".pcap" });
    try {
      await Deno.writeFile(pcap, pcapOf([...cases.map(([bytes]) => bytes), ...fuzz]));
      await assertNoLuaErrors(pcap);
      const experts = [
        "vela.malformed",
        "vela.truncated",
        "vela.bad_version",
        "vela.unknown_code",
        "vela.bad_length",
        "vela.bad_field",
        "vela.runt",
      ];
      const rows = await dissect(pcap, `frame.number <= ${cases.length}`, [
        "frame.number",
        "vela.code",
        ...experts,
        "_ws.col.Info",
      ]);
      assert.equal(rows.length, cases.length);
      for (const [number, code, ...rest] of rows) {
        const [, expected] = cases[Number(number) - 1];
        const raised = experts.filter((_, i) => rest[i] !== "");
        const what = `frame ${number} (code ${code}, "${rest.at(-1)}") raised ${
          raised.join(" ") || "nothing"
        }`;
        if (expected === null) assert.deepEqual(raised, [], what);
        else assert.ok(raised.includes(expected), `${what}, not ${expected}`);
      }
      const [ireqInfo, iackInfo, keepaliveInfo, nakInfo] = rows.map((row) => row.at(-1));
      assert.equal(ireqInfo, "VELA IREQ vid 3 MTU 1457 tap plan 198.18.207.2/30 fd00:207::2/126");
      assert.equal(iackInfo, "VELA IACK vid 3 MTU 1457 tap");
      assert.equal(keepaliveInfo, "VELA KEEPALIVE vid 3 periodic");
      assert.equal(nakInfo, 'VELA NAK vid 3 NOT_ALLOWED "not allowed"');
      const [mac] = await dissect(pcap, "frame.number == 4", ["vela.flags.mac", "vela.mac", "vela.nak.text"]);
      assert.deepEqual(mac, ["1", "00000000000000000000000000000000", "not allowed"]);
    } finally {
      await Deno.remove(pcap).catch(() => undefined);
    }
  },
});
