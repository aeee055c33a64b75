/** The core pair of core_cases.ts over the fakes: FakeDevices and FakeUnderlays on one FakeWire. */

import { DatapathCore } from "../../src/datapath/core.ts";
import { CIRCUIT_FIELDS, DATAPATH_COUNT_FIELDS } from "../../src/datapath/counters.ts";
import { DeviceLink } from "../../src/link/device_link.ts";
import type { Endpoint } from "../../src/underlay/underlay.ts";
import { FakeDevice } from "../fakes/fake_device.ts";
import { FakeUnderlay, FakeWire } from "../fakes/fake_underlay.ts";
import type { PairFactory, StageList } from "./core_cases.ts";
import { circuitStages, VIDS } from "./core_cases.ts";
import { TEST_MAC } from "./frames.ts";

export const fakeCorePair: PairFactory = (options) => {
  const wire = new FakeWire();
  const underlayA = new FakeUnderlay(wire, "198.18.0.1", 0);
  const underlayB = new FakeUnderlay(wire, "198.18.0.2", 0);
  const controls: { datagram: Uint8Array; from: Endpoint; known: boolean }[] = [];
  const side = (underlay: FakeUnderlay, peer: FakeUnderlay, stages: StageList) => {
    const circuits = new Float64Array(CIRCUIT_FIELDS * VIDS.length);
    const counts = new Float64Array(DATAPATH_COUNT_FIELDS);
    const core = new DatapathCore(
      underlay,
      (datagram, from, known) => {
        controls.push({ datagram, from, known });
      },
      { circuits, datapath: counts },
    );
    const devices = VIDS.map((vid, slot) => {
      const device = new FakeDevice(`vela${vid}`, "tap", { offload: options.offload });
      const link = new DeviceLink(
        device,
        { mode: "tap", offload: options.offload, udpOffload: false, mtu: 1500 },
        core.writer,
        core.countsOf(slot),
      );
      const route = underlay.attach(peer.endpointSelf);
      core.addCircuit({
        slot,
        vid,
        route,
        link,
        stages: circuitStages(stages, core, slot),
        datagramLimit: options.datagramLimit,
      });
      return device;
    });
    return { core, circuits, counts, devices };
  };
  const a = side(underlayA, underlayB, options.stagesA);
  const b = side(underlayB, underlayA, options.stagesB);
  const isTest = (frame: Uint8Array) => TEST_MAC.every((byte, i) => frame[i] === byte);
  return Promise.resolve({
    a: a.core,
    b: b.core,
    countsA: a.counts,
    countsB: b.counts,
    circuitsA: a.circuits,
    circuitsB: b.circuits,
    controls,
    endpointA: underlayA.endpointSelf,
    send(d, frame, header) {
      a.devices[d].inject(frame, header);
    },
    rawFromA(datagram) {
      wire.inject(underlayA.endpointSelf, underlayB.endpointSelf, datagram);
    },
    fromStranger(datagram) {
      wire.inject({ address: "198.18.0.99", port: 4455 }, underlayB.endpointSelf, datagram);
    },
    forward() {
      for (let slot = 0; slot < VIDS.length; slot++) a.core.drain(slot);
      while (b.core.receive(0) > 0);
      return Promise.resolve();
    },
    delivered(d) {
      return Promise.resolve(b.devices[d].written.filter(isTest));
    },
    [Symbol.dispose]() {
      underlayA.close();
      underlayB.close();
    },
  });
};
