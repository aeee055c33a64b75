/**
 * Encrypted circuits on real kernel devices (issue 16): what a capture of the underlay shows, what forged
 * and replayed datagrams do, a wrong key, new keys across restarts and renewals under load, an initiator
 * whose address changes, and the replays of handshake and keepalive messages an attacker on the path
 * can send. The key files are made with `vela genkey`.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess } from "../../testbed/netns.ts";
import { netnsTest, requireProgram, startIperf3Server } from "./support.ts";
import { keyFile, sleep, velaLinks } from "./circuit_support.ts";
import { type CapturedDatagram, contains, startCapture } from "./capture.ts";
import { AEAD_OVERHEAD } from "../../src/crypto/data_keys.ts";
import { HEADER_LENGTH, VcCode } from "../../src/wire.ts";

const NEAR = "198.18.207.1";
const FAR = "198.18.207.2";
/** ping -p fills the payload with this pattern: "VELA" over and over. */
const PATTERN = "56454c41";
const MARKER = new TextEncoder().encode("VELAVELAVELAVELA");
const TCP_MARKER = "tcp-marker-through-the-tunnel";
const UDP_MARKER = "udp-marker-through-the-tunnel";

interface Status {
  circuits: {
    state: string;
    cipher: string;
    rotations: number;
    keyAgeSeconds: number | null;
    port: number;
    address: string;
    drops: Record<string, number>;
  }[];
  drops: Record<string, number>;
}

async function status(bed: Bed, ns: string, daemon: BedProcess): Promise<Status> {
  const shown = await bed.velaCommand(ns, ["status", "--json", "--control", daemon.control!]);
  assert.equal(shown.code, 0, shown.stdout + shown.stderr);
  return JSON.parse(shown.stdout);
}

/** The kernel's packet counters of an interface. */
async function linkStats(bed: Bed, ns: string, name: string): Promise<{ rx: number; tx: number }> {
  const shown = await bed.exec(ns, ["ip", "-j", "-s", "link", "show", name], { check: true });
  const [entry] = JSON.parse(shown.stdout);
  return { rx: entry.stats64.rx.packets, tx: entry.stats64.tx.packets };
}

interface KeyedCircuit {
  listener: BedProcess;
  initiator: BedProcess;
  key: string;
  initiatorArgs: string[];
}

/** A keyed listener in b and a keyed initiator in a for circuit 3, pinging. */
async function keyedCircuit(
  bed: Bed,
  options: {
    mode?: "tap" | "tun";
    family?: 4 | 6;
    extra?: string[];
    initiatorExtra?: string[];
    key?: string;
  } = {},
): Promise<KeyedCircuit> {
  const key = options.key ?? await keyFile();
  const extra = options.extra ?? [];
  const peer = options.family === 6 ? bed.b6 : bed.b4;
  const listener = bed.vela(bed.b, ["--listen", "--key-file", key, ...extra]);
  const initiatorArgs = [
    "--peer",
    peer,
    "--vid",
    "3",
    "--mode",
    options.mode ?? "tap",
    "--address",
    `${NEAR}/30`,
    "--key-file",
    key,
    ...extra,
    ...(options.initiatorExtra ?? []),
  ];
  const initiator = bed.vela(bed.a, initiatorArgs);
  await bed.waitPing(bed.a, FAR, 30_000);
  return { listener, initiator, key, initiatorArgs };
}

/** Sends the TCP and UDP markers from a to b through the circuit. */
async function sendMarkers(bed: Bed): Promise<void> {
  const server = bed.spawn(bed.b, [
    Deno.execPath(),
    "eval",
    `const l = Deno.listen({ hostname: "${FAR}", port: 7070 }); const c = await l.accept();` +
    ` let n = 0; for await (const chunk of c.readable) n += chunk.length; console.log("got", n); l.close();`,
  ]);
  await bed.until(
    async () => (await bed.exec(bed.b, ["ss", "-ltn", "sport = :7070"])).stdout.includes("7070"),
    "the TCP marker server",
  );
  const tcp = await bed.exec(bed.a, [
    "bash",
    "-c",
    `exec 3<>/dev/tcp/${FAR}/7070; for i in $(seq 200); do printf '${TCP_MARKER}' >&3; done; exec 3>&-`,
  ]);
  assert.equal(tcp.code, 0, tcp.stderr);
  await bed.until(() => Promise.resolve(server.output().includes("got")), "the TCP marker to arrive");
  assert.match(server.output(), new RegExp(`got ${200 * TCP_MARKER.length}`));
  await bed.exec(bed.a, [
    "bash",
    "-c",
    `for i in $(seq 20); do printf '${UDP_MARKER}' > /dev/udp/${FAR}/7071; done`,
  ]);
}

function dataDatagrams(captured: CapturedDatagram[]): CapturedDatagram[] {
  return captured.filter((d) => d.payload.length > 0 && d.payload[0] !== 0);
}

/**
 * One keyed circuit: a capture of b's underlay while ping (with the marker pattern, 600 bytes), TCP and
 * UDP carry markers. Sealed: no marker on the wire, the ping is the frame plus AEAD_OVERHEAD; clear
 * (--cipher none): the marker is there, and both ends warned.
 */
async function sealedCircuitCase(
  options: { mode: "tap" | "tun"; family: 4 | 6; extra?: string[]; cipher: string },
): Promise<void> {
  if (!await requireProgram("tshark", "tshark")) return;
  await using bed = await Bed.create();
  const circuit = await keyedCircuit(bed, options);
  const capture = await startCapture(bed, bed.b, bed.vethB);
  const ping = await bed.exec(bed.a, ["ping", "-c", "3", "-i", "0.2", "-s", "600", "-p", PATTERN, FAR]);
  assert.equal(ping.code, 0, ping.stdout);
  await sendMarkers(bed);
  const captured = await capture.stop();
  const data = dataDatagrams(captured);
  assert.ok(data.length >= 6, `${data.length} data datagrams captured`);
  for (const d of captured) {
    assert.ok(d.payload[0] === 0 || d.payload[0] === 3, `a datagram starting with ${d.payload[0]}`);
  }
  const clear = options.cipher === "clear";
  const sealed = clear ? 0 : AEAD_OVERHEAD;
  const frame = (options.mode === "tap" ? 14 : 0) + 20 + 8 + 600;
  const sizes = new Set(data.map((d) => d.payload.length));
  assert.ok(
    sizes.has(1 + frame + sealed),
    `a ${1 + frame + sealed}-byte datagram for a 600-byte ping (${[...sizes]})`,
  );
  const wire = (text: string) => new TextEncoder().encode(text);
  const seen = (needle: Uint8Array) => data.some((d) => contains(d.payload, needle));
  assert.equal(seen(MARKER), clear, clear ? "the ping marker in clear" : "no ping marker on the underlay");
  assert.equal(seen(wire(TCP_MARKER)), clear, "the TCP marker");
  assert.equal(seen(wire(UDP_MARKER)), clear, "the UDP marker");
  const near = await status(bed, bed.a, circuit.initiator);
  const far = await status(bed, bed.b, circuit.listener);
  assert.equal(near.circuits[0].cipher, options.cipher);
  assert.equal(far.circuits[0].cipher, options.cipher);
  if (clear) {
    for (const daemon of [circuit.initiator, circuit.listener]) {
      assert.match(daemon.output(), /in clear \(--cipher none\)/, daemon.output());
    }
  }
}

netnsTest(
  "a keyed tap circuit over IPv4 seals every frame: no marker on the underlay",
  () => sealedCircuitCase({ mode: "tap", family: 4, cipher: "aes-256-gcm" }),
);

netnsTest(
  "a keyed tun circuit over IPv6 seals every frame: no marker on the underlay",
  () => sealedCircuitCase({ mode: "tun", family: 6, cipher: "aes-256-gcm" }),
);

netnsTest(
  "a keyed tap circuit over IPv6 with --no-offload and ChaCha20-Poly1305 seals every frame",
  () =>
    sealedCircuitCase({
      mode: "tap",
      family: 6,
      extra: ["--no-offload", "--cipher", "chacha20-poly1305"],
      cipher: "chacha20-poly1305",
    }),
);

netnsTest(
  "a keyed tun circuit over IPv4 with --no-offload seals every frame",
  () => sealedCircuitCase({ mode: "tun", family: 4, extra: ["--no-offload"], cipher: "aes-256-gcm" }),
);

netnsTest(
  "--cipher none carries a keyed circuit in clear, and both ends warn",
  () => sealedCircuitCase({ mode: "tap", family: 4, extra: ["--cipher", "none"], cipher: "clear" }),
);

/** Sends each payload (base64) from `ns`, from `source` (any port), to `to`:4455. */
async function inject(
  bed: Bed,
  ns: string,
  source: string,
  to: string,
  payloads: Uint8Array[],
): Promise<void> {
  const file = await Deno.makeTempFile({ prefix: "vela-inject-" });
  await Deno.writeTextFile(file, JSON.stringify(payloads.map((p) => btoa(String.fromCharCode(...p)))));
  const script = `const list = JSON.parse(await Deno.readTextFile(${JSON.stringify(file)}));` +
    ` const s = Deno.listenDatagram({ transport: "udp", hostname: ${JSON.stringify(source)}, port: 0 });` +
    ` for (const b of list) { await s.send(Uint8Array.from(atob(b), (c) => c.charCodeAt(0)),` +
    ` { transport: "udp", hostname: ${
      JSON.stringify(to)
    }, port: 4455 }); await new Promise((r) => setTimeout(r, 2)); }` +
    ` s.close();`;
  const sent = await bed.exec(ns, [Deno.execPath(), "eval", "--unstable-net", script]);
  await Deno.remove(file);
  assert.equal(sent.code, 0, sent.stderr);
}

netnsTest(
  "replayed, bit-flipped and random data datagrams from the peer's address reach no device and are counted",
  async () => {
    if (!await requireProgram("tshark", "tshark")) return;
    await using bed = await Bed.create();
    const circuit = await keyedCircuit(bed);
    const capture = await startCapture(bed, bed.b, bed.vethB);
    const ping = await bed.exec(bed.a, ["ping", "-c", "20", "-i", "0.05", FAR]);
    assert.equal(ping.code, 0, ping.stdout);
    const captured = dataDatagrams(await capture.stop()).filter((d) => d.from === bed.a4);
    assert.ok(captured.length >= 20, `${captured.length} datagrams from a`);
    const replays = captured.slice(0, 20).map((d) => d.payload);
    // A counter moved far ahead (fresh to the replay window) with the tag unchanged: the tag fails.
    const flipped = replays.map((p) => {
      const copy = p.slice();
      copy[2] ^= 0x40;
      return copy;
    });
    const random = Array.from({ length: 50 }, () => {
      const bytes = crypto.getRandomValues(new Uint8Array(120));
      bytes[0] = 3;
      return bytes;
    });
    const farBefore = await linkStats(bed, bed.b, "vela3");
    const nearBefore = await linkStats(bed, bed.a, "vela3");
    await inject(bed, bed.a, bed.a4, bed.b4, [...replays, ...flipped, ...random]);
    await sleep(500);
    const farAfter = await linkStats(bed, bed.b, "vela3");
    const nearAfter = await linkStats(bed, bed.a, "vela3");
    assert.equal(
      farAfter.rx - farBefore.rx,
      nearAfter.tx - nearBefore.tx,
      "b's vela3 received only what a's vela3 sent meanwhile",
    );
    const drops = (await status(bed, bed.b, circuit.listener)).circuits[0].drops;
    assert.ok(drops.replayedData >= 20, `replayed-data ${drops.replayedData}`);
    assert.ok(drops.badTag >= 20, `bad-tag ${drops.badTag}`);
    assert.ok(
      drops.badTag + drops.noKey + drops.replayedData + drops.tooOld >= 90,
      `every forged datagram counted: ${JSON.stringify(drops)}`,
    );
    await bed.waitPing(bed.a, FAR);
  },
);

netnsTest("a wrong key makes no interface on the listener, and both ends say why", async () => {
  await using bed = await Bed.create();
  const listener = bed.vela(bed.b, ["--listen", "--key-file", await keyFile("one")]);
  const initiator = bed.vela(bed.a, [
    "--peer",
    bed.b4,
    "--vid",
    "3",
    "--address",
    `${NEAR}/30`,
    "--key-file",
    await keyFile("two"),
  ]);
  await bed.until(
    () => Promise.resolve(/No answer from/.test(initiator.output())),
    "the initiator to say so",
    20_000,
  );
  assert.match(initiator.output(), /check the key/);
  assert.match(listener.output(), /no valid MAC \(a different key, or none\)/);
  assert.deepEqual(await velaLinks(bed.b), []);
});

/** The ephemeral public key of a captured IREQ or IACK (body offset 24). */
function ephemeralOf(d: CapturedDatagram): string {
  return Array.from(d.payload.subarray(HEADER_LENGTH + 24, HEADER_LENGTH + 56)).join(",");
}

function handshakes(captured: CapturedDatagram[], code: number): CapturedDatagram[] {
  return captured.filter((d) => d.payload[0] === 0 && d.payload[1] === code);
}

netnsTest("a restart of either end makes new keys: new ephemerals in every handshake", async () => {
  if (!await requireProgram("tshark", "tshark")) return;
  await using bed = await Bed.create();
  const capture = await startCapture(bed, bed.b, bed.vethB);
  const circuit = await keyedCircuit(bed);
  await bed.stop(circuit.initiator, "SIGKILL");
  const initiator = bed.vela(bed.a, circuit.initiatorArgs);
  await bed.waitPing(bed.a, FAR, 30_000);
  await bed.stop(circuit.listener, "SIGKILL");
  const listener = bed.vela(bed.b, ["--listen", "--key-file", circuit.key]);
  await bed.waitPing(bed.a, FAR, 30_000);
  const captured = await capture.stop();
  const ireqs = new Set(handshakes(captured, VcCode.IREQ).map(ephemeralOf));
  const iacks = new Set(handshakes(captured, VcCode.IACK).map(ephemeralOf));
  assert.ok(ireqs.size >= 3, `${ireqs.size} initiator ephemerals for three handshakes`);
  assert.ok(iacks.size >= 3, `${iacks.size} responder ephemerals for three handshakes`);
  for (const e of iacks) assert.ok(!ireqs.has(e), "no ephemeral used by both sides");
  const zero = Array(32).fill(0).join(",");
  assert.ok(!ireqs.has(zero) && !iacks.has(zero), "no empty ephemeral");
  // Each key seals from counter 0: the sealed datagrams' (epoch, counter) pairs repeat across the
  // restarts, and none of those repeats carries the same bytes (the same key and nonce would).
  const sealed = new Map<string, string>();
  let repeats = 0;
  for (const d of dataDatagrams(captured).filter((d) => d.from === bed.a4)) {
    const id = Array.from(d.payload.subarray(1, 6)).join(",");
    const bytes = Array.from(d.payload.subarray(6, 22)).join(",");
    if (sealed.has(id)) {
      repeats++;
      assert.notEqual(sealed.get(id), bytes, `counter ${id} sealed twice with the same key`);
    }
    sealed.set(id, bytes);
  }
  assert.ok(repeats > 0, "the counters started again after the restarts");
  await bed.stop(initiator);
  await bed.stop(listener);
});

/** The byte count of each 0.1 s interval of an iperf3 -J report. */
function intervalBytes(report: string): number[] {
  return JSON.parse(report).intervals.map((i: { sum: { bytes: number } }) => i.sum.bytes);
}

/** The longest run of intervals that carried nothing. */
function longestStall(bytes: number[]): number {
  let run = 0, longest = 0;
  for (const b of bytes) {
    run = b === 0 ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

netnsTest(
  "keys renewed every 3 s under a 20 s TCP stream: no stall over 200 ms, renewals counted",
  async () => {
    if (!await requireProgram("iperf3", "iperf3")) return;
    await using bed = await Bed.create();
    const circuit = await keyedCircuit(bed, { extra: ["--rekey-after", "3"] });
    const server = await startIperf3Server(bed, FAR);
    const client = await bed.exec(bed.a, ["iperf3", "-c", FAR, "-t", "20", "-i", "0.1", "-J"]);
    assert.equal(client.code, 0, client.stdout + client.stderr);
    await bed.stop(server);
    const bytes = intervalBytes(client.stdout);
    assert.ok(bytes.length >= 190, `${bytes.length} intervals`);
    assert.ok(longestStall(bytes) <= 2, `a stall of ${longestStall(bytes)} intervals of 100 ms: ${bytes}`);
    const near = (await status(bed, bed.a, circuit.initiator)).circuits[0];
    const far = (await status(bed, bed.b, circuit.listener)).circuits[0];
    assert.ok(near.rotations >= 5, `${near.rotations} renewals on the initiator`);
    assert.ok(far.rotations >= 5, `${far.rotations} renewals on the listener`);
    assert.ok((near.keyAgeSeconds ?? 99) <= 4, `keys ${near.keyAgeSeconds} s old`);
    assert.equal(far.drops.badTag, 0, "no frame failed its tag across the renewals");
  },
);

netnsTest(
  "an initiator whose address and port change mid-stream (a NAT rebinding) is followed without a new interface",
  async () => {
    if (!await requireProgram("nft", "nftables") || !await requireProgram("iperf3", "iperf3")) return;
    await using bed = await Bed.create();
    const circuit = await keyedCircuit(bed, { initiatorExtra: ["--local-port", "4460"] });
    const moved = `198.18.${bed.index}.7`;
    await bed.exec(bed.a, ["ip", "addr", "add", `${moved}/24`, "dev", bed.vethA], { check: true });
    const indexBefore = (await bed.link(bed.b, "vela3")).address;
    const server = await startIperf3Server(bed, FAR);
    const client = bed.spawn(bed.a, [
      "iperf3",
      "-c",
      FAR,
      "-t",
      "8",
      "-i",
      "0.5",
      "-J",
      "--connect-timeout",
      "3000",
      "--snd-timeout",
      "5000",
    ]);
    await sleep(2500);
    // Stateless rewriting in a: what leaves for b comes from moved:40000, what b sends there comes back.
    const rules = `table ip rebind {
      chain raw_out { type filter hook output priority -300; udp sport 4460 notrack; }
      chain raw_in { type filter hook prerouting priority -300; udp dport 40000 notrack; }
      chain out { type filter hook postrouting priority 0; ip daddr ${bed.b4} udp sport 4460 ip saddr set ${moved} udp sport set 40000; }
      chain in { type filter hook prerouting priority -200; ip daddr ${moved} udp dport 40000 ip daddr set ${bed.a4} udp dport set 4460; }
    }`;
    const nft = await bed.exec(bed.a, ["nft", "-f", await ruleFile(rules)]);
    assert.equal(nft.code, 0, nft.stderr);
    const finished = await client.status;
    await bed.stop(server);
    assert.equal(finished.code, 0, client.output());
    const bytes = intervalBytes(client.output().slice(client.output().indexOf("{")));
    assert.ok(
      bytes.slice(-4).every((b) => b > 0),
      `traffic after the move: ${bytes}\n${circuit.listener.output()}\n${circuit.initiator.output()}`,
    );
    const far = (await status(bed, bed.b, circuit.listener)).circuits[0];
    assert.equal(far.address, moved);
    assert.equal(far.port, 40000);
    assert.deepEqual(await velaLinks(bed.b), ["vela3"]);
    assert.equal((await bed.link(bed.b, "vela3")).address, indexBefore, "the same interface");
    assert.match(circuit.listener.output(), /moved from .* following/);
    assert.equal(
      far.drops.tooOld + far.drops.replayedData + far.drops.badTag,
      0,
      "no frame refused after the move",
    );
  },
);

async function ruleFile(text: string): Promise<string> {
  const file = await Deno.makeTempFile({ prefix: "vela-nft-", suffix: ".nft" });
  await Deno.writeTextFile(file, text);
  return file;
}

netnsTest(
  "an IREQ replayed from another address to a restarted listener makes no interface and displaces nothing",
  async () => {
    if (!await requireProgram("tshark", "tshark")) return;
    await using bed = await Bed.create();
    const capture = await startCapture(bed, bed.b, bed.vethB);
    const circuit = await keyedCircuit(bed);
    const ireq = handshakes(await capture.stop(), VcCode.IREQ)[0];
    assert.ok(ireq, "an IREQ captured");
    const stranger = `198.18.${bed.index}.9`;
    await bed.exec(bed.a, ["ip", "addr", "add", `${stranger}/24`, "dev", bed.vethA], { check: true });
    await bed.stop(circuit.listener, "SIGKILL");
    const listener = bed.vela(bed.b, ["--listen", "--key-file", circuit.key]);
    await bed.until(
      async () => (await bed.exec(bed.b, ["ss", "-lun", "sport = :4455"])).stdout.includes("4455"),
      "the listener to listen",
    );
    await inject(bed, bed.a, stranger, bed.b4, [ireq.payload]);
    await bed.waitPing(bed.a, FAR, 30_000);
    await sleep(1000);
    const far = await status(bed, bed.b, listener);
    assert.deepEqual(await velaLinks(bed.b), ["vela3"], listener.output());
    const addresses = far.circuits.filter((c) => c.state === "established").map((c) => c.address);
    assert.deepEqual(addresses, [bed.a4], JSON.stringify(far.circuits));
  },
);

netnsTest("a KEEPALIVE replayed every 500 ms keeps no dead initiator's circuit alive", async () => {
  if (!await requireProgram("tshark", "tshark")) return;
  await using bed = await Bed.create();
  const circuit = await keyedCircuit(bed);
  const capture = await startCapture(bed, bed.b, bed.vethB);
  await sleep(4500);
  const keepalive = handshakes(await capture.stop(), VcCode.KEEPALIVE).find((d) => d.from === bed.a4);
  assert.ok(keepalive, "a KEEPALIVE from the initiator captured");
  await bed.stop(circuit.initiator, "SIGKILL");
  const replaying = (async () => {
    for (let i = 0; i < 20; i++) {
      await inject(bed, bed.a, bed.a4, bed.b4, [keepalive.payload]);
      await sleep(500);
    }
  })();
  await bed.until(
    async () => (await status(bed, bed.b, circuit.listener)).circuits[0]?.state === "lost",
    "the listener to call its peer lost",
    20_000,
  );
  await replaying;
  const far = await status(bed, bed.b, circuit.listener);
  assert.equal(far.circuits[0].state, "lost", "still lost after the replays");
  assert.ok((far.drops["session"] ?? 0) >= 20, `the replays dropped: ${JSON.stringify(far.drops)}`);
});

netnsTest("replayed IREQs spend none of the real initiator's rate-limit tokens", async () => {
  if (!await requireProgram("tshark", "tshark")) return;
  await using bed = await Bed.create();
  const capture = await startCapture(bed, bed.b, bed.vethB);
  const circuit = await keyedCircuit(bed);
  const ireq = handshakes(await capture.stop(), VcCode.IREQ)[0];
  assert.ok(ireq, "an IREQ captured");
  await bed.stop(circuit.initiator, "SIGKILL");
  await inject(bed, bed.a, bed.a4, bed.b4, Array(100).fill(ireq.payload));
  const initiator = bed.vela(bed.a, circuit.initiatorArgs);
  await bed.waitPing(bed.a, FAR, 10_000);
  const far = await status(bed, bed.b, circuit.listener);
  assert.ok((far.drops["replayed"] ?? 0) >= 100, JSON.stringify(far.drops));
  assert.equal(far.drops["rate-limited"] ?? 0, 0, JSON.stringify(far.drops));
  await bed.stop(initiator);
});
