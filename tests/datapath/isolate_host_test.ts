import assert from "node:assert/strict";
import { IsolateDatapath } from "../../src/datapath/isolate_host.ts";
import { FakeDevice } from "../fakes/fake_device.ts";
import { FakeUnderlay, FakeWire } from "../fakes/fake_underlay.ts";
import { plainFrame } from "./frames.ts";

Deno.test("refreshCounters(address, vid) brings in that circuit's counts only; refreshCounters() all", async () => {
  const wire = new FakeWire();
  const underlay = new FakeUnderlay(wire, "198.18.0.1", 4455);
  const datapath = new IsolateDatapath(underlay, () => {}, () => {});
  const devices = [new FakeDevice("vela3", "tap"), new FakeDevice("vela4", "tap")];
  const near = datapath.addCircuit(3, { address: "198.18.0.2", port: 4455 }, devices[0], 1500);
  const far = datapath.addCircuit(3, { address: "198.18.0.3", port: 4455 }, devices[1], 1500);
  try {
    devices[0].inject(plainFrame(1));
    devices[1].inject(plainFrame(2));
    const deadline = Date.now() + 2000;
    while (wire.log.length < 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(wire.log.length, 2, "both frames sent");

    datapath.refreshCounters("198.18.0.2", 3);
    assert.equal(near.txPackets, 1);
    assert.equal(far.txPackets, 0, "the other circuit's counters are not read");
    datapath.refreshCounters();
    assert.equal(far.txPackets, 1);
  } finally {
    await datapath.stop();
    for (const device of devices) device.close();
    underlay.close();
    await datapath.drained();
  }
});
