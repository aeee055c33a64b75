import assert from "node:assert/strict";
import type { CircuitSpec, DaemonConfig } from "../src/daemon.ts";
import { parseCidr, parseIp } from "../src/ip.ts";
import { encode } from "../src/wire.ts";
import { startFakeDaemon, until } from "./fakes/fake_daemon.ts";
import { FakeWire } from "./fakes/fake_underlay.ts";

const A = "198.18.0.1";
const B = "198.18.0.2";

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

function established(daemon: { circuits(): { state: string }[] }): boolean {
  return daemon.circuits().some((c) => c.state === "established");
}

Deno.test("a circuit comes up over fakes, configures the far side and carries frames both ways", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
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
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a burst of frames is drained and delivered in order", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    const near = a.network.live("vela3")!;
    for (let i = 0; i < 300; i++) near.device.inject(frame(0xbb, 0xaa, i & 0xff));
    const written = await b.network.live("vela3")!.device.waitWritten(300);
    written.forEach((f, i) => assert.equal(f[20], i & 0xff));
    const counters = a.daemon.datapath!.circuitCounters(B, 3)!;
    assert.equal(counters.txPackets, 300);
    assert.equal(counters.txBytes, 300 * 74);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
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
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    await a.daemon.stop();
    assert.equal(a.network.live("vela3"), undefined, "the initiator removed its interface");
    await until(() => b.network.live("vela3") === undefined, "the listener to remove vela3");
    assert.equal(b.daemon.circuits().length, 0);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a clean stop of the listener makes the initiator ask again, keeping its interface", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
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
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("strangers' datagrams are dropped and counted while the circuit keeps working", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
    const stranger = { address: "198.18.0.66", port: 999 };
    const target = { address: B, port: 4455 };
    wire.inject(stranger, target, new Uint8Array([3, 1, 2, 3])); // data for an unknown circuit
    wire.inject({ address: A, port: 1 }, target, new Uint8Array([9, 1, 2])); // known address, unknown vid
    wire.inject(stranger, target, new Uint8Array([0, 1, 1])); // truncated header
    wire.inject(stranger, target, new Uint8Array([0, 99, 1, 3, 0, 0, 0, 0])); // unknown code
    wire.inject(stranger, target, new Uint8Array(0)); // empty
    wire.inject(stranger, target, encode({ type: "ICON", vid: 3, initiatorNonce: 1n, responderNonce: 2n }));
    await until(() => b.daemon.datapath!.counters.unknownCircuit === 2, "two unknown-circuit drops");
    await until(() => b.daemon.controlDrops["unknown-code"] === 1, "the unknown code counted");
    assert.equal(b.daemon.controlDrops["truncated"], 1);
    assert.equal(b.daemon.controlDrops["no-session"], 1);
    assert.equal(b.daemon.datapath!.counters.empty, 1);
    a.network.live("vela3")!.device.inject(frame(0xbb, 0xaa, 7));
    await b.network.live("vela3")!.device.waitWritten(1);
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
});

Deno.test("a device that fails under the datapath closes its circuit, and the circuit comes back", async () => {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listener());
  const a = startFakeDaemon(wire, A, initiator());
  try {
    await until(() => established(a.daemon) && established(b.daemon), "both ends established");
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
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
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
