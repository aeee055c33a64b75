/**
 * The Wireshark dissector contrib/vela.lua, read back by tshark: a capture of a real tap link, a real tun
 * link and a real keyed (sealed) link (handshake, keepalives and data), and a file of hand-made datagrams:
 * protocol v2 messages, v1 messages of an older peer, sealed and clear data frames, and malformed ones.
 */

import assert from "node:assert/strict";
import { Bed, run } from "../../testbed/netns.ts";
import { encode, encodeOldNak, IREQ_FLAG_AES, NakReason, offerBit } from "../../src/wire.ts";
import { parseCidr } from "../../src/ip.ts";
import { netnsTest, requireProgram } from "./support.ts";
import { LISTEN, MAIN } from "./circuit_support.ts";

const SCRIPT = new URL("../../contrib/vela.lua", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A field with several occurrences (outer and inner eth.src, ip.src) comes out as "a;b". */
const AGGREGATOR = ";";

/**
 * tshark -r `pcap` with the dissector loaded, `-Y filter`, one row per packet of the `fields`. The last field
 * may contain commas (the Info column): it takes the rest of the line. `preferences` go to tshark as -o.
 */
async function dissect(
  pcap: string,
  filter: string,
  fields: string[],
  preferences: string[] = [],
): Promise<string[][]> {
  const result = await run([
    "tshark",
    "-r",
    pcap,
    "-X",
    `lua_script:${SCRIPT}`,
    ...preferences.flatMap((preference) => ["-o", preference]),
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

/** tshark's VELA tree (-V -O vela) of the packets `filter` selects. */
async function treeOf(pcap: string, filter: string): Promise<string> {
  const result = await run([
    "tshark",
    "-r",
    pcap,
    "-X",
    `lua_script:${SCRIPT}`,
    "-Y",
    filter,
    "-V",
    "-O",
    "vela",
  ]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
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
 * Captures on bed.vethA from before the daemons start: a listener in b (`listenerArgs`) and an initiator in a
 * (circuit `vid`, `initiatorArgs`), pings `far` until it answers and five more times, then stays up long
 * enough for a KEEPALIVE each way. Returns the interface name; the caller removes `capture`.
 */
async function captureLink(
  bed: Bed,
  vid: number,
  initiatorArgs: string[],
  far: string,
  capture: string,
  listenerArgs = LISTEN,
) {
  const tshark = bed.spawn(bed.a, ["tshark", "-i", bed.vethA, "-f", "udp port 4455", "-w", capture, "-q"]);
  await bed.until(
    () => Promise.resolve(tshark.output().includes("Capturing on")),
    "tshark to start capturing",
  );
  await sleep(500);
  bed.vela(bed.b, listenerArgs);
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

/** Control messages of the capture as { code, version, vid, mtu, plan, mode, ... info }. */
async function controls(pcap: string) {
  const rows = await dissect(pcap, 'vela.kind == "control"', [
    "vela.code",
    "vela.version",
    "vela.vid",
    "vela.mtu",
    "vela.plan.ipv4",
    "vela.mode",
    "vela.handshake",
    "vela.offers",
    "vela.cipher",
    "vela.ephemeral",
    "vela.keepalive_sequence",
    "vela.flags.mac",
    "_ws.col.Info",
  ]);
  return rows.map((
    [code, version, vid, mtu, plan, mode, handshake, offers, cipher, ephemeral, sequence, mac, info],
  ) => ({ code, version, vid, mtu, plan, mode, handshake, offers, cipher, ephemeral, sequence, mac, info }));
}

/** A key file made with `vela genkey`; the caller removes it. */
async function keyFile(): Promise<string> {
  const made = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--quiet", MAIN, "genkey"] })
    .output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
  const path = await Deno.makeTempFile({ prefix: "vela-dissector-key-" });
  await Deno.writeFile(path, made.stdout, { mode: 0o600 });
  return path;
}

const NO_EPHEMERAL = "00".repeat(32);

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
    assert.ok(control.every((m) => m.version === "2"), `all version 2: ${JSON.stringify(control)}`);
    const ireq = control.find((m) => m.code === "1");
    assert.ok(ireq, `no IREQ among ${JSON.stringify(control)}`);
    assert.equal(ireq.vid, "3");
    assert.equal(ireq.mtu, "1457");
    assert.equal(ireq.plan, "198.18.207.2", "the plan gives the responder 198.18.207.2");
    assert.equal(ireq.mode, "1", "tap");
    assert.equal(ireq.ephemeral, NO_EPHEMERAL, "no key, no ephemeral");
    assert.match(ireq.info, /^VELA IREQ vid 3 MTU 1457 tap handshake \d+ offers /);
    const iack = control.find((m) => m.code === "2");
    assert.ok(iack, `no IACK among ${JSON.stringify(control)}`);
    assert.deepEqual([iack.vid, iack.mtu, iack.mode, iack.cipher], ["3", "1457", "1", "0"]);
    assert.equal(iack.handshake, ireq.handshake, "the IACK answers the IREQ's handshake");
    assert.match(iack.info, /^VELA IACK vid 3 MTU 1457 tap handshake \d+ clear$/);
    assert.ok(control.some((m) => m.code === "3" && m.vid === "3"), "an ICON for vid 3");
    const keepalives = control.filter((m) => m.code === "5" && m.vid === "3");
    assert.ok(keepalives.length >= 1, `no KEEPALIVE among ${JSON.stringify(control)}`);
    assert.match(keepalives[0].info, /^VELA KEEPALIVE vid 3 sequence \d+ (periodic|answer)/);
    assert.ok(keepalives.every((m) => /^\d+$/.test(m.sequence) && m.sequence !== "0"), "numbered from 1");

    // Without a key the frames are clear: the heuristic takes none of them for sealed.
    assert.deepEqual(await dissect(capture, "vela.sealed", ["frame.number"]), [], "no sealed frames");

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
    assert.deepEqual(await dissect(capture, "vela.sealed", ["frame.number"]), [], "no sealed frames");
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

netnsTest("the dissector shows a keyed link's data as sealed frames and its handshake's keys", async () => {
  if (!(await requireProgram("tshark", "tshark"))) return;
  await using bed = await Bed.create();
  const capture = `/tmp/vela-${Deno.pid}-dissector-keyed.pcap`;
  const key = await keyFile();
  try {
    await captureLink(
      bed,
      5,
      ["--address", "198.18.207.17/30", "--key-file", key],
      "198.18.207.18",
      capture,
      ["--listen", "--key-file", key],
    );
    await assertNoLuaErrors(capture);

    const control = await controls(capture);
    assert.ok(
      control.every((m) => m.version === "2" && m.mac === "1"),
      `all v2 with a MAC: ${JSON.stringify(control)}`,
    );
    const ireq = control.find((m) => m.code === "1");
    assert.ok(ireq, `no IREQ among ${JSON.stringify(control)}`);
    assert.match(ireq.ephemeral, /^[0-9a-f]{64}$/);
    assert.notEqual(ireq.ephemeral, NO_EPHEMERAL, "a keyed IREQ carries an ephemeral key");
    const iack = control.find((m) => m.code === "2");
    assert.ok(iack, `no IACK among ${JSON.stringify(control)}`);
    assert.notEqual(iack.ephemeral, NO_EPHEMERAL, "so does the IACK");
    assert.ok(["1", "2"].includes(iack.cipher), `IACK cipher ${iack.cipher}`);
    assert.ok(
      Number(ireq.offers) & (1 << Number(iack.cipher)),
      `${iack.cipher} among the offers ${ireq.offers}`,
    );
    const cipherName = iack.cipher === "1" ? "aes-256-gcm" : "chacha20-poly1305";
    assert.match(
      iack.info,
      new RegExp(`^VELA IACK vid 5 MTU \\d+ tap handshake ${iack.handshake} ${cipherName}$`),
    );
    const handshakes = new Set(control.map((m) => m.handshake).filter((h) => h !== ""));

    // No pings dissect: every data datagram is taken for a sealed frame, its counter rising each way.
    assert.deepEqual(await dissect(capture, 'vela.kind == "data" && icmp', ["frame.number"]), []);
    const data = await dissect(capture, 'vela.kind == "data"', [
      "ip.src",
      "vela.vid",
      "vela.sealed.epoch",
      "vela.sealed.counter",
      "vela.sealed.length",
      "vela.sealed.tag",
      "_ws.col.Info",
    ]);
    assert.ok(data.length >= 10, `sealed pings in ${JSON.stringify(data)}`);
    const last = new Map<string, number>();
    for (const [source, vid, epoch, counter, length, tag, info] of data) {
      assert.equal(vid, "5");
      assert.ok(handshakes.has(epoch), `epoch ${epoch} is a handshake of ${[...handshakes]}`);
      assert.match(tag, /^[0-9a-f]{32}$/);
      assert.equal(
        info,
        `VELA data vid 5: sealed, epoch ${epoch}, counter ${counter} (${length} bytes encrypted)`,
      );
      const previous = last.get(source);
      assert.ok(
        previous === undefined || Number(counter) > previous,
        `${source}: counter ${counter} after ${previous}`,
      );
      last.set(source, Number(counter));
    }
    assert.equal(last.size, 2, "sealed frames both ways");
    // An echo request or reply in a tap frame: 14 + 20 + 8 + 56 bytes.
    assert.ok(
      data.filter(([, , , , length]) => length === "98").length >= 10,
      "the pings' frames, encrypted",
    );
    // The dissector knew from the IACK in the capture.
    const iackFrame = (await dissect(capture, "vela.code == 2", ["frame.number"]))[0][0];
    assert.match(
      await treeOf(capture, 'vela.kind == "data"'),
      new RegExp(`\\[Sealed with ${cipherName}: the circuit's IACK in frame ${iackFrame}\\]`),
    );

    // Without the handshake in the capture, the heuristic decides: random bytes look like an Ethernet frame
    // with a common EtherType about once in 4000 frames, so one miss is allowed.
    const dataOnly = `${capture}.data.pcap`;
    try {
      const cut = await run([
        "tshark",
        "-r",
        capture,
        "-X",
        `lua_script:${SCRIPT}`,
        "-Y",
        'vela.kind == "data"',
        "-w",
        dataOnly,
      ]);
      assert.equal(cut.code, 0, cut.stderr);
      const guessed = await dissect(dataOnly, "vela", ["vela.sealed.epoch", "vela.sealed.counter"]);
      assert.equal(guessed.length, data.length);
      const missed = guessed.filter(([epoch]) => epoch === "");
      assert.ok(missed.length <= 1, `${missed.length} of ${guessed.length} sealed frames taken for clear`);
      assert.match(
        await treeOf(dataOnly, "frame.number == 1"),
        /\[Taken for sealed: no IACK of this circuit/,
      );
    } finally {
      await Deno.remove(dataOnly).catch(() => undefined);
    }
  } finally {
    await Deno.remove(capture).catch(() => undefined);
    await Deno.remove(key).catch(() => undefined);
  }
});

// ---- Hand-made datagrams: a pcap written here, no namespaces needed. ----

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

/** Deterministic pseudo-random bytes (an LCG seeded with `seed`). */
function pseudoRandom(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
  return out;
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** A protocol v1 IREQ (24-byte body, options and reserved 0, then the plan), as an older peer sends it. */
function oldIreq(vid: number, initiatorNonce: bigint, plan: [number, number, number[]][]): Uint8Array {
  const planLength = plan.reduce((sum, [, , bytes]) => sum + 2 + bytes.length, 0);
  const out = new Uint8Array(8 + 24 + planLength);
  const view = new DataView(out.buffer);
  out.set([0, 1, 1, vid]);
  view.setUint16(4, 24 + planLength);
  view.setBigUint64(8, initiatorNonce);
  view.setBigUint64(16, 0x0000019a00000000n);
  out[24] = 1;
  out[25] = plan.length;
  view.setUint16(26, 1457);
  let at = 32;
  for (const [family, prefixLength, bytes] of plan) {
    out.set([family, prefixLength, ...bytes], at);
    at += 2 + bytes.length;
  }
  return out;
}

Deno.test({
  name: "the dissector decodes v2 and v1 messages and sealed frames, flags malformed datagrams, never raises",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    if (!(await requireProgram("tshark", "tshark"))) return;
    const nonces = { initiatorNonce: 0x0102030405060708n, responderNonce: 0x1112131415161718n };
    const plan = [parseCidr("198.18.207.2/30")!, parseCidr("fd00:207::2/126")!];
    const ephemeralI = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
    const ephemeralR = Uint8Array.from({ length: 32 }, (_, i) => 0xe0 + (i % 16));
    const ireq = encode({
      type: "IREQ",
      vid: 3,
      initiatorNonce: nonces.initiatorNonce,
      timestamp: 0x0000019a00000000n,
      mode: "tap",
      mtu: 1457,
      handshake: 2,
      offers: offerBit("aes-256-gcm") | offerBit("chacha20-poly1305"),
      flags: IREQ_FLAG_AES,
      ephemeral: ephemeralI,
      plan,
    }, 16);
    const iack = encode({
      type: "IACK",
      vid: 3,
      ...nonces,
      mtu: 1457,
      mode: "tap",
      handshake: 2,
      cipher: "chacha20-poly1305",
      ephemeral: ephemeralR,
    });
    const icon = encode({ type: "ICON", vid: 3, ...nonces, handshake: 2 }, 16);
    const keepalive = encode({
      type: "KEEPALIVE",
      vid: 3,
      senderNonce: 1n,
      receiverNonce: 2n,
      sentAt: 4096n,
      echo: 0n,
      sequence: 7n,
    });
    const nak = encode({ type: "NAK", vid: 3, initiatorNonce: 1n, reason: 1, text: "not allowed" }, 16);
    const cipherNak = encode({
      type: "NAK",
      vid: 3,
      initiatorNonce: 1n,
      reason: NakReason.CIPHER_MISMATCH,
      text: "no common cipher",
    });
    const upgrade = "this peer speaks VELA protocol version 2: upgrade";
    const oldNak = encodeOldNak(3, nonces.initiatorNonce, upgrade);
    const v1Ireq = oldIreq(3, nonces.initiatorNonce, [[4, 30, [198, 18, 207, 2]]]);
    // A sealed frame: vid 5, epoch 3, counter 0x01020304, 40 bytes of "ciphertext", a 16-byte tag.
    const ciphertext = pseudoRandom(11, 40);
    const tag = pseudoRandom(12, 16);
    const sealed = Uint8Array.of(5, 3, 1, 2, 3, 4, ...ciphertext, ...tag);
    const short = sealed.slice(0, 1 + 5 + 16);
    // A clear tap frame on vid 5: broadcast ARP request from 02:00:00:00:00:05.
    const arp = Uint8Array.of(
      5,
      ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 5, 0x08, 0x06],
      ...[0, 1, 0x08, 0x00, 6, 4, 0, 1, 2, 0, 0, 0, 0, 5, 198, 18, 207, 1, 0, 0, 0, 0, 0, 0, 198, 18, 207, 2],
    );
    // Circuits whose IACK is in the file: vid 3 (chacha20-poly1305 above), vid 6 (clear), vid 7 (version 1).
    const arpOnKeyed = Uint8Array.of(3, ...arp.subarray(1));
    const clearIack = encode({
      type: "IACK",
      vid: 6,
      ...nonces,
      mtu: 1457,
      mode: "tap",
      handshake: 0,
      cipher: "clear",
      ephemeral: new Uint8Array(32),
    });
    const oldIack = new Uint8Array(8 + 24);
    oldIack.set([0, 2, 1, 7, 0, 24]);
    new DataView(oldIack.buffer).setUint16(24, 1457);
    oldIack[26] = 1;
    // 62 bytes that look like no frame, on vid 6, 7 and 8.
    const opaque = [6, 7, 8].map((vid) => Uint8Array.of(vid, 3, ...pseudoRandom(13, 60)));
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
      [icon, null],
      [cipherNak, null],
      [oldNak, "vela.old_version"],
      [v1Ireq, "vela.old_version"],
      [sealed, null],
      [arp, null],
      [arpOnKeyed, null],
      [clearIack, null],
      [opaque[0], null],
      [oldIack, "vela.old_version"],
      [opaque[1], null],
      [opaque[2], null],
      [Uint8Array.of(3), "vela.runt"],
      [Uint8Array.of(0, 1, 2), "vela.truncated"],
      [patched(keepalive, 2, 3), "vela.bad_version"],
      [patched(keepalive, 2, 0), "vela.bad_version"],
      [patched(keepalive, 2, 1), "vela.bad_length"],
      [patched(keepalive, 1, 9), "vela.unknown_code"],
      [Uint8Array.of(...iack, 1, 2, 3), "vela.bad_length"],
      [ireq.slice(0, ireq.length - 3), "vela.truncated"],
      [patched(ireq, 8 + 16, 7), "vela.bad_field"],
      [patched(ireq, 8 + 23, 1), "vela.bad_field"],
      [patched(ireq, 8 + 56, 5), "vela.bad_field"],
      [patched(iack, 8 + 20, 9), "vela.bad_field"],
      [patched(iack, 8 + 21, 1), "vela.bad_field"],
      [patched(icon, 8 + 19, 1), "vela.bad_field"],
      [patched(nak, 8 + 9, 250), "vela.bad_field"],
      [patched(iack, 3, 0), "vela.bad_field"],
      [patched(iack, 7, 1), "vela.bad_field"],
      // Too short for a sealed frame (21 bytes after the vid byte): auto hands it to Ethernet.
      [short, null],
    ];
    // Garbage after a control marker, and mutated real messages: none may break the script.
    let seed = 7;
    const random = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % n;
    const fuzz: Uint8Array[] = [];
    const bases = [ireq, iack, icon, keepalive, nak, oldNak, v1Ireq, sealed];
    for (let i = 0; i < 400; i++) {
      const base = bases[random(bases.length)].slice(0, 1 + random(ireq.length + 8));
      for (let j = random(4); j > 0; j--) base[random(base.length)] = random(256);
      if (random(2)) base[0] = 0;
      fuzz.push(base);
    }
    const pcap = await Deno.makeTempFile({ prefix: "vela-dissector-", suffix: ".pcap" });
    const frame = (datagram: Uint8Array) => cases.findIndex(([bytes]) => bytes === datagram) + 1;
    try {
      await Deno.writeFile(pcap, pcapOf([...cases.map(([bytes]) => bytes), ...fuzz]));
      await assertNoLuaErrors(pcap);
      for (const sealedPreference of ["clear", "sealed"]) {
        const errors = await dissect(pcap, "_ws.lua.error || vela.dissector_error", [
          "frame.number",
          "_ws.expert.message",
        ], [`vela.sealed:${sealedPreference}`]);
        assert.deepEqual(errors, [], `Lua errors with vela.sealed:${sealedPreference}`);
      }
      const experts = [
        "vela.malformed",
        "vela.truncated",
        "vela.bad_version",
        "vela.old_version",
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
      const info = (datagram: Uint8Array) => rows[frame(datagram) - 1].at(-1);
      assert.equal(
        info(ireq),
        "VELA IREQ vid 3 MTU 1457 tap handshake 2 offers aes-256-gcm,chacha20-poly1305 " +
          "plan 198.18.207.2/30 fd00:207::2/126",
      );
      assert.equal(info(iack), "VELA IACK vid 3 MTU 1457 tap handshake 2 chacha20-poly1305");
      assert.equal(info(icon), "VELA ICON vid 3 handshake 2");
      assert.equal(info(keepalive), "VELA KEEPALIVE vid 3 sequence 7 periodic");
      assert.equal(info(nak), 'VELA NAK vid 3 NOT_ALLOWED "not allowed"');
      assert.equal(info(cipherNak), 'VELA NAK vid 3 CIPHER_MISMATCH "no common cipher"');
      assert.equal(info(oldNak), `VELA v1 NAK vid 3 UNSPECIFIED "${upgrade}"`);
      assert.equal(info(v1Ireq), "VELA v1 IREQ vid 3 MTU 1457 tap plan 198.18.207.2/30");
      assert.equal(info(sealed), "VELA data vid 5: sealed, epoch 3, counter 16909060 (40 bytes encrypted)");
      assert.match(info(arp)!, /^VELA data vid 5: Who has 198\.18\.207\.2\? Tell 198\.18\.207\.1$/);

      const fieldsOf = async (datagram: Uint8Array, fields: string[], preferences: string[] = []) => {
        const found = await dissect(pcap, `frame.number == ${frame(datagram)}`, fields, preferences);
        assert.equal(found.length, 1);
        return Object.fromEntries(fields.map((field, i) => [field, found[0][i]]));
      };
      assert.deepEqual(
        await fieldsOf(ireq, [
          "vela.version",
          "vela.handshake",
          "vela.offers",
          "vela.offers.clear",
          "vela.offers.aes_256_gcm",
          "vela.offers.chacha20_poly1305",
          "vela.ireq_flags",
          "vela.ireq_flags.aes",
          "vela.ephemeral",
          "vela.plan.count",
          "vela.mac",
        ]),
        {
          "vela.version": "2",
          "vela.handshake": "2",
          "vela.offers": "0x06",
          "vela.offers.clear": "0",
          "vela.offers.aes_256_gcm": "1",
          "vela.offers.chacha20_poly1305": "1",
          "vela.ireq_flags": "0x01",
          "vela.ireq_flags.aes": "1",
          "vela.ephemeral": hex(ephemeralI),
          "vela.plan.count": "2",
          "vela.mac": "00".repeat(16),
        },
      );
      assert.deepEqual(
        await fieldsOf(iack, ["vela.version", "vela.handshake", "vela.cipher", "vela.ephemeral", "vela.mtu"]),
        {
          "vela.version": "2",
          "vela.handshake": "2",
          "vela.cipher": "2",
          "vela.ephemeral": hex(ephemeralR),
          "vela.mtu": "1457",
        },
      );
      assert.deepEqual(
        await fieldsOf(keepalive, [
          "vela.keepalive_sequence",
          "vela.keepalive.sent_at",
          "vela.keepalive.echo",
        ]),
        { "vela.keepalive_sequence": "7", "vela.keepalive.sent_at": "4096", "vela.keepalive.echo": "0" },
      );
      assert.deepEqual(
        await fieldsOf(oldNak, [
          "vela.version",
          "vela.code",
          "vela.nak.reason",
          "vela.nak.text",
          "vela.flags.mac",
        ]),
        {
          "vela.version": "1",
          "vela.code": "7",
          "vela.nak.reason": "0",
          "vela.nak.text": upgrade,
          "vela.flags.mac": "0",
        },
      );
      assert.deepEqual(
        await fieldsOf(v1Ireq, [
          "vela.version",
          "vela.options",
          "vela.handshake",
          "vela.ephemeral",
          "vela.plan.ipv4",
        ]),
        {
          "vela.version": "1",
          "vela.options": "0x0000",
          "vela.handshake": "",
          "vela.ephemeral": "",
          "vela.plan.ipv4": "198.18.207.2",
        },
      );
      const sealedFields = [
        "vela.kind",
        "vela.vid",
        "vela.sealed.epoch",
        "vela.sealed.counter",
        "vela.sealed.length",
        "vela.sealed.ciphertext",
        "vela.sealed.tag",
        "eth.src",
      ];
      assert.deepEqual(await fieldsOf(sealed, sealedFields), {
        "vela.kind": "data",
        "vela.vid": "5",
        "vela.sealed.epoch": "3",
        "vela.sealed.counter": "16909060",
        "vela.sealed.length": "40",
        "vela.sealed.ciphertext": hex(ciphertext),
        "vela.sealed.tag": hex(tag),
        "eth.src": "02:00:00:00:00:01",
      });
      // The file's IACKs decide for their circuits: vid 3 is sealed even where a frame looks clear, vids 6 and
      // 7 (clear, and version 1) are clear even where it looks sealed; vid 8 has no IACK: the heuristic.
      assert.equal(info(oldIack), "VELA v1 IACK vid 7 MTU 1457 tap");
      assert.deepEqual(
        await fieldsOf(arpOnKeyed, ["vela.sealed.epoch", "vela.sealed.counter", "arp.opcode"]),
        {
          "vela.sealed.epoch": "255",
          "vela.sealed.counter": "4294967295",
          "arp.opcode": "",
        },
      );
      assert.match(
        await treeOf(pcap, `frame.number == ${frame(arpOnKeyed)}`),
        new RegExp(`\\[Sealed with chacha20-poly1305: the circuit's IACK in frame ${frame(iack)}\\]`),
      );
      for (const datagram of opaque) {
        const vid = datagram[0];
        const found = await fieldsOf(datagram, ["vela.vid", "vela.sealed.epoch", "eth.dst"]);
        assert.equal(found["vela.vid"], String(vid));
        assert.equal(found["vela.sealed.epoch"], vid === 8 ? "3" : "", `vid ${vid}: sealed or not`);
        assert.equal(
          found["eth.dst"].split(AGGREGATOR).length,
          vid === 8 ? 1 : 2,
          `vid ${vid}: inner Ethernet`,
        );
      }
      // The clear ARP frame is not taken for sealed, unless the preference says every frame is.
      assert.equal((await fieldsOf(arp, ["vela.sealed.epoch", "arp.opcode"]))["arp.opcode"], "1");
      assert.deepEqual(
        await fieldsOf(arp, ["vela.sealed.epoch", "vela.sealed.counter", "arp.opcode"], [
          "vela.sealed:sealed",
        ]),
        { "vela.sealed.epoch": "255", "vela.sealed.counter": "4294967295", "arp.opcode": "" },
      );
      assert.deepEqual(await fieldsOf(short, ["vela.sealed", "vela.malformed"]), {
        "vela.sealed": "",
        "vela.malformed": "",
      });
      const forced = await fieldsOf(short, [
        "vela.sealed.epoch",
        "vela.sealed.counter",
        "vela.malformed",
        "_ws.col.Info",
      ], [
        "vela.sealed:sealed",
      ]);
      assert.deepEqual(forced, {
        "vela.sealed.epoch": "3",
        "vela.sealed.counter": "16909060",
        "vela.malformed": "1",
        "_ws.col.Info": "VELA data vid 5: sealed, epoch 3, counter 16909060",
      });
      // With vela.sealed:clear the sealed frame is handed to Ethernet instead.
      const clear = await fieldsOf(sealed, ["vela.sealed.epoch", "eth.dst"], ["vela.sealed:clear"]);
      assert.equal(clear["vela.sealed.epoch"], "");
      assert.equal(clear["eth.dst"].split(AGGREGATOR).length, 2, "outer and inner Ethernet");
    } finally {
      await Deno.remove(pcap).catch(() => undefined);
    }
  },
});
