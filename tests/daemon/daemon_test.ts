import assert from "node:assert/strict";
import { type CircuitSpec, type DaemonConfig, derivedIPv6, derivedMac } from "../../src/daemon/daemon.ts";
import { formatCidr, parseCidr, parseIp } from "../../src/ip.ts";
import { generateKey, parseKey, verifyControl } from "../../src/keys.ts";
import { AEAD_OVERHEAD } from "../../src/crypto/data_keys.ts";

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}
import { encode, HEADER_LENGTH, NakReason, VcCode } from "../../src/wire.ts";
import { PROBE_RESOLUTION } from "../../src/daemon/path_probe.ts";
import { parseFilter } from "../../src/datapath/filter_stage.ts";
import { resolver, startFakeDaemon, until } from "../fakes/fake_daemon.ts";
import { FakeWire } from "../fakes/fake_underlay.ts";
import { FakeClock } from "../fakes/fake_clock.ts";
import {
  DEAD_PEER_MS,
  IREQ_MAX_RETRY_MS,
  KEEPALIVE_INTERVAL_MS,
  SHUTDOWN_GRACE_MS,
} from "../../src/timing.ts";

const A = "198.18.0.1";
const B = "198.18.0.2";
const C = "198.18.0.3";

function listener(extra: Partial<DaemonConfig> = {}): DaemonConfig {
  return {
    port: 4455,
    listen: true,
    allow: [parseCidr("198.18.0.0/24")!],
    insecureAcceptAny: false,
    circuits: [],
    ...extra,
  };
}

function initiator(spec: Partial<CircuitSpec> = {}): DaemonConfig {
  return {
    port: 0,
    listen: false,
    allow: [],
    insecureAcceptAny: false,
    circuits: [{
      peerName: B,
      peer: parseIp(B)!,
      port: 4455,
      vid: 3,
      mode: "tap",
      addresses: [parseCidr("198.18.207.1/30")!, parseCidr("fd00:207::1/126")!],
      ...spec,
    }],
  };
}

/** An Ethernet frame from `src` to `dst` with `payload` bytes of `fill`. */
function frame(dst: number, src: number, fill: number, payload = 60): Uint8Array {
  const bytes = new Uint8Array(14 + payload).fill(fill);
  bytes.fill(dst, 0, 6);
  bytes.fill(src, 6, 12);
  bytes.set([0x08, 0x00], 12);
  return bytes;
}

/** An IREQ for `vid` as a key-less initiator sends it. */
function ireqFor(vid: number, initiatorNonce: bigint): Uint8Array {
  return encode({
    type: "IREQ",
    vid,
    initiatorNonce,
    timestamp: BigInt(Date.now()),
    mode: "tap",
    mtu: 1457,
    handshake: 0,
    offers: 1,
    flags: 0,
    ephemeral: new Uint8Array(32),
    plan: [],
  });
}

function established(daemon: { circuits(): { state: string }[] }): boolean {
  return daemon.circuits().some((c) => c.state === "established");
}

type FakeDaemon = ReturnType<typeof startFakeDaemon>;

/** Starts a listener at B and an initiator at A on one wire, waits until both are established, runs `use`, stops both. */
async function withLink(
  listenerConfig: DaemonConfig,
  initiatorConfig: DaemonConfig,
  use: (wire: FakeWire, a: FakeDaemon, b: FakeDaemon) => Promise<void> | void,
  clock?: FakeClock,
): Promise<void> {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listenerConfig, clock);
  const a = startFakeDaemon(wire, A, initiatorConfig, clock);
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    await use(wire, a, b);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
}

Deno.test("a circuit comes up over fakes, configures the far side and carries frames both ways", async () => {
  await withLink(listener(), initiator(), async (wire, a, b) => {
    const near = a.network.live("vela3")!;
    const far = b.network.live("vela3")!;
    assert.deepEqual(near.addresses, ["198.18.207.1/30", "fd00:207::1/126"]);
    assert.deepEqual(far.addresses, ["198.18.207.2/30", "fd00:207::2/126"]);
    assert.equal(near.mtu, 1457);
    assert.equal(far.mtu, 1457);
    assert.ok(near.up && far.up);

    near.device.inject(frame(0xbb, 0xaa, 1));
    const [arrived] = await far.device.waitWritten(1);
    assert.deepEqual(arrived, frame(0xbb, 0xaa, 1));
    far.device.inject(frame(0xaa, 0xbb, 2, 1400));
    const [back] = await near.device.waitWritten(1);
    assert.deepEqual(back, frame(0xaa, 0xbb, 2, 1400));

    const data = wire.log.filter((entry) => entry.datagram[0] !== 0);
    assert.equal(data.length, 2);
    for (const entry of data) {
      assert.equal(entry.datagram[0], 3, "one header byte, the vid");
      assert.equal(entry.datagram.length, 1 + 14 + (entry.from.address === A ? 60 : 1400));
    }
    const controls = wire.log.filter((e) => e.datagram[0] === 0).map((e) => e.datagram[1]);
    assert.deepEqual(controls.slice(0, 3), [1, 2, 3], "IREQ, IACK, ICON");
  });
});

Deno.test("a burst of frames is drained and delivered in order", async () => {
  await withLink(listener(), initiator(), async (_wire, a, b) => {
    const near = a.network.live("vela3")!;
    for (let i = 0; i < 300; i++) near.device.inject(frame(0xbb, 0xaa, i & 0xff));
    const written = await b.network.live("vela3")!.device.waitWritten(300);
    written.forEach((f, i) => assert.equal(f[20], i & 0xff));
    const [circuit] = a.daemon.status().circuits;
    assert.equal(circuit.txPackets, 300);
    assert.equal(circuit.txBytes, 300 * 74);
  });
});

Deno.test("the smaller MTU proposal wins on both ends", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  b.network.underlayMtu = 1400;
  const a = startFakeDaemon(wire, A, initiator({ mode: "tun" }));
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    assert.equal(a.network.live("vela3")!.mtu, 1400 - 29);
    assert.equal(b.network.live("vela3")!.mtu, 1400 - 29);
    assert.equal(b.network.live("vela3")!.device.mode, "tun");
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a listener refuses an IREQ from outside --allow with a NAK and creates nothing", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ allow: [parseCidr("198.19.0.0/16")!] }));
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => a.daemon.circuits()[0].state === "refused", "the initiator to be refused");
    assert.equal(b.network.interfaces.size, 0);
    assert.equal(b.daemon.controlDrops["not-allowed"], 1);
    assert.ok(a.network.live("vela3"), "the initiator keeps its interface");
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a clean stop of the initiator sends CREQ and the listener removes its interface", async () => {
  await withLink(listener(), initiator(), async (_wire, a, b) => {
    await a.daemon.stop();
    assert.equal(a.network.live("vela3"), undefined, "the initiator removed its interface");
    await until(() => b.network.live("vela3") === undefined, "the listener to remove vela3");
    assert.equal(b.daemon.circuits().length, 0);
  });
});

Deno.test("a clean stop of the listener makes the initiator ask again, keeping its interface", async () => {
  await withLink(listener(), initiator(), async (wire, a, b) => {
    await b.daemon.stop();
    assert.equal(b.network.live("vela3"), undefined);
    await until(() => a.daemon.circuits()[0].state === "requesting", "the initiator to ask again");
    assert.ok(a.network.live("vela3"));
    const b2 = startFakeDaemon(wire, B, listener());
    try {
      await until(() => established(a.daemon) && established(b2.daemon), "the circuit back", 5000);
    } finally {
      await b2.daemon.stop();
    }
  });
});

Deno.test("strangers' datagrams are dropped and counted while the circuit keeps working", async () => {
  await withLink(listener(), initiator(), async (wire, a, b) => {
    const stranger = { address: "198.18.0.66", port: 999 };
    const target = { address: B, port: 4455 };
    wire.inject(stranger, target, new Uint8Array([3, 1, 2, 3])); // data for an unknown circuit
    wire.inject({ address: A, port: 1 }, target, new Uint8Array([9, 1, 2])); // known address, unknown vid
    wire.inject(stranger, target, new Uint8Array([0, 1, 1])); // truncated header
    wire.inject(stranger, target, new Uint8Array([0, 99, 2, 3, 0, 0, 0, 0])); // unknown code
    wire.inject(stranger, target, new Uint8Array(0)); // empty
    wire.inject(
      stranger,
      target,
      encode({ type: "ICON", vid: 3, initiatorNonce: 1n, responderNonce: 2n, handshake: 0 }),
    );
    await until(() => b.daemon.datapath!.counters.unknownCircuit === 2, "two unknown-circuit drops");
    await until(() => b.daemon.controlDrops["unknown-code"] === 1, "the unknown code counted");
    assert.equal(b.daemon.status().drops["malformed-control"], 1, "the datapath drops a header cut short");
    assert.equal(b.daemon.controlDrops["no-session"], 1);
    assert.equal(b.daemon.datapath!.counters.empty, 1);
    a.network.live("vela3")!.device.inject(frame(0xbb, 0xaa, 7));
    await b.network.live("vela3")!.device.waitWritten(1);
  });
});

Deno.test("a device that fails under the datapath closes its circuit, and the circuit comes back", async () => {
  await withLink(listener(), initiator(), async (_wire, a, b) => {
    const far = b.network.live("vela3")!.device;
    far.failRead = new Error("read(vela3) failed: File descriptor in bad state (EBADFD)");
    far.inject(frame(1, 2, 3));
    await until(() => far.closed, "the failed device closed");
    // The listener's CREQ makes the initiator ask again, and the listener makes a new vela3.
    await until(() => b.network.live("vela3") !== undefined && established(b.daemon), "a new vela3", 5000);
    const fresh = b.network.live("vela3")!.device;
    assert.notEqual(fresh, far);
    await until(() => established(a.daemon), "the initiator established again");
    a.network.live("vela3")!.device.inject(frame(0xbb, 0xaa, 9));
    await fresh.waitWritten(1);
  });
});

Deno.test("a listener that refused an IREQ for a too small MTU hears the next IREQ afresh", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator({ mtu: 500 }));
  try {
    await until(() => a.daemon.circuits()[0].state === "refused", "the small MTU refused");
    assert.equal(b.daemon.circuits().length, 0, "no closed session left behind");
    await a.daemon.stop();
    const a2 = startFakeDaemon(wire, A, initiator());
    try {
      await until(() => established(a2.daemon) && established(b.daemon), "a circuit with a good MTU");
    } finally {
      await a2.daemon.stop();
    }
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("without an IPv6 --address both ends get a derived ULA pair", async () => {
  await withLink(listener(), initiator({ addresses: [] }), (_wire, a, b) => {
    const [near] = a.network.live("vela3")!.addresses;
    const [far] = b.network.live("vela3")!.addresses;
    const expected = derivedIPv6(A, B, 3);
    assert.equal(near, formatCidr(expected));
    assert.match(near, /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:3::1\/64$/);
    assert.equal(far, near.replace("::1/64", "::2/64"));
  });
});

Deno.test("a listener serves two initiators that use the same vid, on two interfaces", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  const c = startFakeDaemon(wire, "198.18.0.3", initiator({ addresses: [parseCidr("198.18.207.5/30")!] }));
  try {
    await until(
      () => b.daemon.circuits().filter((x) => x.state === "established").length === 2,
      "two circuits",
    );
    assert.deepEqual(b.daemon.circuits().map((x) => x.ifname).sort(), ["vela3", "vela3-0"]);
    c.network.live("vela3")!.device.inject(frame(0xbb, 0xcc, 5));
    const [arrived] = await b.network.live("vela3-0")!.device.waitWritten(1);
    assert.equal(arrived[20], 5);
    assert.equal(b.network.live("vela3")!.device.written.length, 0);
  } finally {
    await a.daemon.stop();
    await c.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("an IREQ for a vid this side initiates to that peer gets NAK vid in use", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon), "a's circuit up");
    // b asks a for vid 3 too: a initiates vid 3 to b, so a refuses.
    const started = wire.log.length;
    const nak = until(
      () => wire.log.slice(started).some((e) => e.datagram[0] === 0 && e.datagram[1] === 7),
      "a NAK",
    );
    wire.inject(
      { address: B, port: 4455 },
      { address: A, port: a.daemon.port },
      ireqFor(3, 77n),
    );
    await nak;
    const sent = wire.log.slice(started).find((e) => e.datagram[0] === 0 && e.datagram[1] === 7)!;
    assert.equal(sent.datagram[HEADER_LENGTH + 8], NakReason.VID_IN_USE);
    assert.equal(a.daemon.controlDrops["vid-in-use"], 1);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("with the same key on both sides the circuit comes up, every control message carries a MAC and frames cross sealed", async () => {
  const wire = new FakeWire();
  const key = parseKey(generateKey());
  const b = startFakeDaemon(wire, B, listener({ allow: [], key }));
  const a = startFakeDaemon(wire, A, { ...initiator(), key });
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    const controls = wire.log.filter((e) => e.datagram[0] === 0);
    assert.ok(controls.length >= 3);
    for (const entry of controls) {
      assert.equal(entry.datagram[6] & 1, 1, "the MAC flag");
      // IREQ, IACK and IRDY carry the pre-shared key's MAC; ICON, KEEPALIVE and CREQ the session's.
      const byPsk = [1, 2, 6, 7].includes(entry.datagram[1]);
      assert.equal(verifyControl(key, entry.datagram), byPsk, `code ${entry.datagram[1]}`);
    }
    const sent = frame(0xbb, 0xaa, 9);
    const before = wire.log.length;
    a.network.live("vela3")!.device.inject(sent);
    const [got] = await b.network.live("vela3")!.device.waitWritten(1);
    assert.deepEqual(got, sent, "the frame arrives as it was sent");
    const onWire = wire.log.slice(before).find((e) => e.datagram[0] === 3)!;
    assert.equal(onWire.datagram.length, 1 + sent.length + AEAD_OVERHEAD, "sealed: 21 bytes more");
    assert.ok(!contains(onWire.datagram, sent.subarray(14)), "the payload is not on the wire in clear");
    assert.equal(a.daemon.status().circuits[0].cipher, b.daemon.status().circuits[0].cipher);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a listener with several keys serves an initiator of each, and each circuit answers with its own key", async () => {
  const wire = new FakeWire();
  const [one, two, three] = [generateKey(), generateKey(), generateKey()].map(parseKey);
  const b = startFakeDaemon(wire, B, listener({ allow: [], key: one, extraKeys: [two] }));
  const a = startFakeDaemon(wire, A, { ...initiator(), key: two });
  const c = startFakeDaemon(wire, C, { ...initiator({ vid: 4 }), key: three });
  try {
    await until(() => established(a.daemon), "the initiator with the second key established");
    await until(() => (b.daemon.controlDrops["bad-mac"] ?? 0) >= 2, "the third key's IREQs dropped");
    assert.equal(b.daemon.circuits().length, 1, "no circuit for the key the listener does not hold");
    const answers = wire.log.filter((e) =>
      e.from.address === B && e.datagram[0] === 0 && e.datagram[1] === 2
    );
    assert.ok(answers.length > 0);
    for (const answer of answers) {
      assert.ok(verifyControl(two, answer.datagram), "the IACK signed with the key the IREQ was");
      assert.ok(!verifyControl(one, answer.datagram));
    }
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
    await c.daemon.stop();
  }
});

Deno.test("a protocol v1 IREQ gets a v1 NAK that says to upgrade, and no circuit", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  try {
    const v1 = new Uint8Array(8 + 24);
    v1.set([0, 1, 1, 3, 0, 24, 0, 0]);
    new DataView(v1.buffer).setBigUint64(8, 0x0102030405060708n);
    v1[8 + 16] = 1; // tap
    const started = wire.log.length;
    wire.inject({ address: A, port: 5000 }, { address: B, port: 4455 }, v1);
    await until(() => wire.log.slice(started).some((e) => e.from.address === B), "an answer");
    const answer = wire.log.slice(started).find((e) => e.from.address === B)!.datagram;
    assert.deepEqual([...answer.subarray(0, 4)], [0, 7, 1, 3], "a NAK, version 1, vid 3");
    assert.equal(new DataView(answer.buffer, answer.byteOffset).getBigUint64(8), 0x0102030405060708n);
    assert.match(new TextDecoder().decode(answer.subarray(18)), /upgrade VELA/);
    assert.equal(b.daemon.circuits().length, 0);
    assert.equal(b.daemon.controlDrops["bad-version"], 1);
  } finally {
    await b.daemon.stop();
  }
});

Deno.test("a wrong key gets no interface, only counted drops", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ allow: [], key: parseKey(generateKey()) }));
  const a = startFakeDaemon(wire, A, { ...initiator(), key: parseKey(generateKey()) });
  try {
    await until(() => (b.daemon.controlDrops["bad-mac"] ?? 0) >= 2, "two IREQs dropped for their MAC", 3000);
    assert.equal(b.network.interfaces.size, 0);
    assert.equal(a.daemon.circuits()[0].state, "requesting");
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a replayed IREQ is refused when a key is set", async () => {
  const wire = new FakeWire();
  const key = parseKey(generateKey());
  const b = startFakeDaemon(wire, B, listener({ allow: [], key }));
  const a = startFakeDaemon(wire, A, { ...initiator(), key });
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    await a.daemon.stop();
    await until(() => b.network.live("vela3") === undefined, "the circuit closed");
    const ireq = wire.log.find((e) => e.datagram[0] === 0 && e.datagram[1] === 1)!;
    wire.inject(ireq.from, ireq.to, ireq.datagram);
    await until(() => b.daemon.controlDrops["replayed"] === 1, "the replay counted");
    assert.equal(b.network.live("vela3"), undefined, "no interface for a replay");
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("an underlay cut longer than the dead time heals by itself (on a fake clock)", async () => {
  const clock = new FakeClock();
  await withLink(listener(), initiator(), async (wire, a, b) => {
    const farDevice = b.network.live("vela3")!.device;
    wire.connected = false;
    await clock.until(
      () => a.daemon.circuits()[0].state === "requesting",
      "the initiator to see the peer dead",
      DEAD_PEER_MS + 2 * KEEPALIVE_INTERVAL_MS,
    );
    await clock.until(
      () => b.daemon.circuits()[0].state === "lost",
      "the listener to see its initiator lost",
      2 * KEEPALIVE_INTERVAL_MS,
    );
    wire.connected = true;
    await clock.until(
      () => established(a.daemon) && established(b.daemon),
      "the circuit back",
      IREQ_MAX_RETRY_MS + 1000,
    );
    assert.equal(b.network.live("vela3")!.device, farDevice, "the listener kept its interface");
    a.network.live("vela3")!.device.inject(frame(0xbb, 0xaa, 4));
    await farDevice.waitWritten(1);
  }, clock);
});

Deno.test("when the peer's name points to a new address the circuit moves there and keeps its interface (on a fake clock)", async () => {
  const wire = new FakeWire();
  const clock = new FakeClock();
  resolver.set("router2.test", parseIp(B)!);
  const b = startFakeDaemon(wire, B, listener(), clock);
  const a = startFakeDaemon(wire, A, initiator({ peerName: "router2.test" }), clock);
  const c = startFakeDaemon(wire, "198.18.0.3", listener(), clock);
  try {
    await until(() => established(a.daemon) && established(b.daemon), "circuit to b");
    const nearDevice = a.network.live("vela3")!.device;
    resolver.set("router2.test", parseIp("198.18.0.3")!);
    const stopping = b.daemon.stop();
    await clock.advance(SHUTDOWN_GRACE_MS);
    await stopping;
    await clock.until(
      () => c.daemon.circuits().some((x) => x.state === "established"),
      "the circuit moved to c",
      2 * DEAD_PEER_MS + IREQ_MAX_RETRY_MS,
    );
    assert.equal(a.daemon.circuits()[0].remote.address, "198.18.0.3");
    assert.equal(a.network.live("vela3")!.device, nearDevice, "the interface never went away");
  } finally {
    resolver.delete("router2.test");
    const stops = [a.daemon.stop(), b.daemon.stop(), c.daemon.stop()];
    await clock.advance(SHUTDOWN_GRACE_MS);
    await Promise.all(stops);
  }
});

Deno.test("each side's tap gets a MAC derived from the circuit, the same after a restart", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  let a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    const far = b.network.live("vela3")!.mac!;
    const near = a.network.live("vela3")!.mac!;
    assert.deepEqual(far, derivedMac("responder", A, 3));
    assert.deepEqual(near, derivedMac("initiator", B, 3));
    assert.notDeepEqual(far, near);
    assert.equal(far[0] & 0x03, 0x02, "locally administered unicast");
    await a.daemon.stop();
    a = startFakeDaemon(wire, A, initiator());
    await until(() => established(a.daemon), "the initiator back");
    assert.deepEqual(a.network.live("vela3")!.mac, near);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("an IREQ flood from one source is rate-limited, and other sources still get through", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ insecureAcceptAny: true }));
  try {
    const flooder = { address: "198.18.0.66", port: 999 };
    for (let i = 0; i < 50; i++) {
      wire.inject(
        flooder,
        { address: B, port: 4455 },
        encode({
          type: "IREQ",
          vid: 1 + (i % 200),
          initiatorNonce: BigInt(1000 + i),
          timestamp: BigInt(Date.now()),
          mode: "tap",
          mtu: 1457,
          handshake: 0,
          offers: 1,
          flags: 0,
          ephemeral: new Uint8Array(32),
          plan: [],
        }),
      );
    }
    await until(() => (b.daemon.controlDrops["rate-limited"] ?? 0) >= 40, "the flood limited");
    assert.ok(
      b.network.interfaces.size <= 10,
      `${b.network.interfaces.size} interfaces for one flooding source`,
    );
    const a = startFakeDaemon(wire, A, initiator());
    try {
      await until(() => established(a.daemon), "another source's circuit");
    } finally {
      await a.daemon.stop();
    }
  } finally {
    await b.daemon.stop();
  }
});

Deno.test("an IREQ beyond max_circuits_per_peer is refused with a CIRCUIT_LIMIT NAK and counted, and the daemon goes on", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ maxCircuitsPerPeer: 2 }));
  try {
    const from = { address: C, port: 5000 };
    const to = { address: B, port: 4455 };
    for (const vid of [1, 2, 3]) wire.inject(from, to, ireqFor(vid, BigInt(100 + vid)));
    const isNak = (e: { to: { address: string }; datagram: Uint8Array }) =>
      e.to.address === C && e.datagram[0] === 0 && e.datagram[1] === 7;
    await until(() => wire.log.some(isNak), "a NAK to the third IREQ");
    const nak = wire.log.find(isNak)!;
    assert.equal(nak.datagram[3], 3, "the NAK is for the third vid");
    assert.equal(nak.datagram[HEADER_LENGTH + 8], NakReason.CIRCUIT_LIMIT);
    assert.equal(b.daemon.controlDrops["circuit-limit"], 1);
    assert.equal(b.network.live("vela1") !== undefined && b.network.live("vela2") !== undefined, true);
    assert.equal(b.network.live("vela3"), undefined, "no interface for the refused circuit");
    // Another address still has room: the cap is per peer.
    wire.inject({ address: A, port: 5000 }, to, ireqFor(3, 200n));
    await until(() => b.network.live("vela3") !== undefined, "vela3 for the other peer");
  } finally {
    await b.daemon.stop();
  }
});

Deno.test("an IREQ beyond max_circuits is refused with a CIRCUIT_LIMIT NAK whatever its source", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ maxCircuits: 1 }));
  try {
    const to = { address: B, port: 4455 };
    wire.inject({ address: A, port: 5000 }, to, ireqFor(1, 1n));
    await until(() => b.network.live("vela1") !== undefined, "vela1");
    wire.inject({ address: C, port: 5000 }, to, ireqFor(2, 2n));
    await until(() => b.daemon.controlDrops["circuit-limit"] === 1, "the refusal counted");
    const nak = wire.log.find((e) => e.to.address === C && e.datagram[1] === 7)!;
    assert.equal(nak.datagram[HEADER_LENGTH + 8], NakReason.CIRCUIT_LIMIT);
    assert.match(
      new TextDecoder().decode(nak.datagram.subarray(HEADER_LENGTH + 10)),
      /maximum of 1 circuits/,
    );
  } finally {
    await b.daemon.stop();
  }
});

Deno.test("a configuration with more circuits than max_circuits does not start, and says why", () => {
  const wire = new FakeWire();
  const config = initiator();
  config.circuits.push({ ...config.circuits[0], vid: 4 });
  assert.throws(
    () => startFakeDaemon(wire, A, { ...config, maxCircuits: 1 }),
    /has 2 circuits, more than max_circuits \(1\)/,
  );
});

Deno.test("a listener puts each tap it creates into the bridge of the first rule that matches, else its own", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(
    wire,
    B,
    listener({
      bridge: "br0",
      bridges: [{ bridge: "br7", vid: 7 }, { bridge: "brc", allow: parseCidr("198.18.0.3/32")! }],
    }),
  );
  try {
    const to = { address: B, port: 4455 };
    wire.inject({ address: A, port: 5000 }, to, ireqFor(7, 1n));
    wire.inject({ address: A, port: 5000 }, to, ireqFor(3, 2n));
    wire.inject({ address: C, port: 5000 }, to, ireqFor(4, 3n));
    await until(() => b.network.bridges.size === 3, "three taps bridged");
    assert.equal(b.network.bridges.get("vela7"), "br7", "by vid");
    assert.equal(b.network.bridges.get("vela3"), "br0", "the listener's own");
    assert.equal(b.network.bridges.get("vela4"), "brc", "by source prefix");
  } finally {
    await b.daemon.stop();
  }
});

/** A listener at B and an initiator at A, each with its tap in a bridge of 1500-byte LAN ports. */
function bridgedPair(wire: FakeWire, clock?: FakeClock): { a: FakeDaemon; b: FakeDaemon } {
  const b = startFakeDaemon(wire, B, listener({ bridge: "br0" }), clock);
  b.network.otherMtus.set("br0", 1500);
  const a = startFakeDaemon(wire, A, initiator({ bridge: "br9", addresses: [] }), clock, (network) => {
    network.otherMtus.set("br9", 1500);
  });
  return { a, b };
}

Deno.test("an initiator in a bridge takes its LAN's MTU, the listener agrees whatever its path, and full-size frames cross in fragments", async () => {
  const { a, b } = bridgedPair(new FakeWire());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    assert.equal(a.network.live("vela3")!.mtu, 1500, "the LAN's MTU, not 1457");
    assert.equal(b.network.live("vela3")!.mtu, 1500);
    const near = a.network.live("vela3")!;
    near.device.inject(frame(0xbb, 0xaa, 0x5c, 1500));
    near.device.inject(frame(0xbb, 0xaa, 0x5d, 100));
    const written = await b.network.live("vela3")!.device.waitWritten(2);
    assert.deepEqual(written.map((f) => f.length), [1514, 114]);
    assert.ok(written[0].subarray(14).every((byte) => byte === 0x5c), "every byte of the full-size frame");
    const [sent] = a.daemon.status().circuits;
    assert.equal(sent.fragmented, 1, "only the frame over the 1472-byte datagram limit");
    assert.equal(b.daemon.status().circuits[0].reassembled, 1);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("without a bridge or --mtu the smaller path still wins and nothing is fragmented in steady state", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  b.network.underlayMtu = 1400;
  const a = startFakeDaemon(wire, A, initiator({ mtu: undefined }));
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    assert.equal(a.network.live("vela3")!.mtu, 1400 - 43);
    a.network.live("vela3")!.device.inject(frame(0xbb, 0xaa, 1, 1357));
    await b.network.live("vela3")!.device.waitWritten(1);
    assert.equal(a.daemon.status().circuits[0].fragmented, 0);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("--mtu above the path is the link MTU on both ends when both fragment, sealed or not", async () => {
  const key = parseKey(generateKey());
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ key }));
  const a = startFakeDaemon(wire, A, initiator({ mode: "tun", mtu: 4000, key }));
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    assert.equal(a.network.live("vela3")!.mtu, 4000);
    assert.equal(b.network.live("vela3")!.mtu, 4000);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("probing finds a path smaller than the route and frames that fit the route but not the path still arrive (on a fake clock)", async () => {
  const clock = new FakeClock();
  const wire = new FakeWire();
  // The route says 1500; the path loses every datagram over 1372 bytes (an IPv4 path MTU of 1400) unseen.
  wire.maxDatagram = 1372;
  const { a, b } = bridgedPair(wire, clock);
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    const settled = (daemon: typeof a.daemon) => {
      const limit = daemon.status().circuits[0].datagramLimit ?? 0;
      return limit <= 1372 && limit > 1372 - PROBE_RESOLUTION;
    };
    await clock.until(() => settled(a.daemon) && settled(b.daemon), "both ends to probe the path", 20_000);
    const [near] = a.daemon.status().circuits;
    assert.ok(near.pathMtu! <= 1400 && near.pathMtu! > 1400 - PROBE_RESOLUTION, `path MTU ${near.pathMtu}`);
    // 1414 bytes went whole on the route's word and were lost; now they go in two fragments.
    a.network.live("vela3")!.device.inject(frame(0xbb, 0xaa, 0x5e, 1400));
    const [arrived] = await b.network.live("vela3")!.device.waitWritten(1);
    assert.equal(arrived.length, 1414);
    assert.equal(a.daemon.status().circuits[0].fragmented, 1);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a path as large as its route settles with one probe each way", async () => {
  const clock = new FakeClock();
  await withLink(listener(), initiator(), async (wire, a, b) => {
    await clock.until(
      () => a.daemon.status().circuits[0].pathMtu === 1500 && b.daemon.status().circuits[0].pathMtu === 1500,
      "both ends to probe the path",
      5_000,
    );
    const probes = wire.log.filter((entry) => entry.datagram[0] === 0 && entry.datagram[1] === VcCode.PROBE);
    assert.deepEqual(probes.map((entry) => entry.datagram.length), [1472, 1472]);
    assert.equal(a.daemon.status().circuits[0].datagramLimit, 1472);
  }, clock);
});

Deno.test("a listener's bridges rule filters the tap circuits it matches: one far host's frames cross, another's do not", async () => {
  const aHost = 0x0a;
  const filter = parseFilter({ remote: ["0a:0a:0a:0a:0a:0a"] }, {
    local: "local",
    remote: "remote",
    block: "block",
  });
  const rules = { bridge: "br0", bridges: [{ bridge: "br0", vid: 3, filter }] };
  await withLink(listener(rules), initiator(), async (_wire, a, b) => {
    const near = a.network.live("vela3")!.device;
    near.inject(frame(0xbb, 0x0c, 1)); // from a host the rule does not name: filtered at the listener
    near.inject(frame(0xbb, aHost, 2));
    const [arrived] = await b.network.live("vela3")!.device.waitWritten(1);
    assert.deepEqual(arrived, frame(0xbb, aHost, 2));
    await until(() => b.daemon.status().circuits[0].drops.filtered === 1, "the other host's frame counted");
  });
});

Deno.test("an initiator's --far-bridge puts the far tap into that bridge when the listener offers it, and is refused when not", async () => {
  await withLink(
    listener({ bridge: "br0", offerBridges: ["br5"] }),
    initiator({ farBridge: "br5" }),
    (_wire, _a, b) => {
      assert.equal(b.network.bridges.get("vela3"), "br5", "the bridge asked for, not the listener's own");
    },
  );
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener({ bridge: "br0", offerBridges: ["br5"] }));
  const a = startFakeDaemon(wire, A, initiator({ farBridge: "br6" }));
  try {
    await until(() => a.daemon.circuits()[0]?.state === "refused", "the initiator refused");
    assert.equal(b.daemon.circuits().length, 0, "no circuit, no tap");
    assert.equal(b.daemon.controlDrops["bridge-refused"], 1);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});
