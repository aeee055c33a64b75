import assert from "node:assert/strict";
import { AeadStage } from "../../src/datapath/aead_stage.ts";
import { CIRCUIT_FIELDS, Counter } from "../../src/datapath/counters.ts";
import { AEAD_OVERHEAD, type DataKey, KEY_STATE_BYTES, SEAL_LIMIT } from "../../src/crypto/data_keys.ts";
import { DROPPED, PacketBatch } from "../../src/packet/packet_batch.ts";
import { fillBatch } from "../fakes/batch_fill.ts";

const VID = 3;

function key(epoch: number, fill: number, state?: SharedArrayBuffer): DataKey {
  return { epoch, cipher: "aes-256-gcm", key: new Uint8Array(32).fill(fill), state };
}

function counts() {
  return { values: new Float64Array(CIRCUIT_FIELDS), base: 0 };
}

/** A batch of `frames`, each at the start of its own buffer. */
function batchOf(frames: Uint8Array[]): PacketBatch {
  return fillBatch(
    new PacketBatch({ buffers: frames.length + 1, maxPacket: 2048, entries: frames.length }),
    frames,
  );
}

/** What the core does between the stages: the vid byte in front on the way out, off on the way in. */
function wire(from: PacketBatch): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < from.count; i++) {
    if (from.length[i] < 0) continue;
    const datagram = new Uint8Array(from.length[i] + 1);
    datagram[0] = VID;
    datagram.set(from.memory.subarray(from.offset[i], from.offset[i] + from.length[i]), 1);
    out.push(datagram);
  }
  return out;
}

function received(datagrams: Uint8Array[]): PacketBatch {
  const batch = batchOf(datagrams);
  for (let i = 0; i < batch.count; i++) {
    batch.offset[i]++;
    batch.length[i]--;
  }
  return batch;
}

function frames(batch: PacketBatch): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < batch.count; i++) {
    if (batch.length[i] >= 0) {
      out.push(batch.memory.slice(batch.offset[i], batch.offset[i] + batch.length[i]));
    }
  }
  return out;
}

function pair(): { sender: AeadStage; receiver: AeadStage; rx: ReturnType<typeof counts> } {
  const rx = counts();
  const sender = new AeadStage({ id: "aead", vid: VID, keys: { tx: key(0, 7), rx: [key(0, 9)] } }, {
    counts: counts(),
  });
  const receiver = new AeadStage({ id: "aead", vid: VID, keys: { tx: key(0, 9), rx: [key(0, 7)] } }, {
    counts: rx,
  });
  return { sender, receiver, rx };
}

const SAMPLE = [new Uint8Array(60).fill(1), new Uint8Array(1400).fill(2), new Uint8Array(1).fill(3)];

Deno.test("AeadStage seals frames 21 bytes longer and the far stage opens them back", () => {
  const { sender, receiver, rx } = pair();
  const out = batchOf(SAMPLE);
  sender.encode(out, 0, out.count);
  const datagrams = wire(out);
  assert.deepEqual(datagrams.map((d) => d.length), SAMPLE.map((f) => 1 + f.length + AEAD_OVERHEAD));
  assert.deepEqual(datagrams.map((d) => d[1]), [0, 0, 0], "epoch 0");
  assert.deepEqual(datagrams.map((d) => d[5]), [0, 1, 2], "counters 0, 1, 2");
  assert.ok(!datagrams[1].subarray(6, 1406).every((b) => b === 2), "the payload is not in clear");
  const back = received(datagrams);
  receiver.decode(back, 0, back.count);
  assert.deepEqual(frames(back), SAMPLE);
  assert.equal(rx.values[Counter.OPENED], 3);
});

Deno.test("AeadStage drops a replayed, a forged, a short and an unknown-epoch frame, each by its reason", () => {
  const { sender, receiver, rx } = pair();
  const out = batchOf(SAMPLE);
  sender.encode(out, 0, out.count);
  const datagrams = wire(out);
  const first = received(datagrams);
  receiver.decode(first, 0, first.count);
  const forged = datagrams[0].slice();
  forged[2] ^= 0x40; // a counter far ahead: fresh to the window, so the tag decides
  const otherEpoch = datagrams[1].slice();
  otherEpoch[1] = 5;
  const again = received([datagrams[2], forged, otherEpoch, new Uint8Array([VID, 0, 0, 0, 0, 9])]);
  receiver.decode(again, 0, again.count);
  assert.deepEqual(Array.from(again.length), [DROPPED, DROPPED, DROPPED, DROPPED]);
  assert.equal(rx.values[Counter.REPLAYED_DATA], 1);
  assert.equal(rx.values[Counter.BAD_TAG], 1);
  assert.equal(rx.values[Counter.NO_KEY], 2);
});

Deno.test("AeadStage made again over a key's shared state goes on with its counter and replay window", () => {
  const txState = new SharedArrayBuffer(KEY_STATE_BYTES);
  const rxState = new SharedArrayBuffer(KEY_STATE_BYTES);
  const spec = (tx: SharedArrayBuffer | undefined, rx: SharedArrayBuffer | undefined) => ({
    id: "aead" as const,
    vid: VID,
    keys: { tx: key(0, 7, tx), rx: [key(0, 7, rx)] },
  });
  const first = new AeadStage(spec(txState, rxState), { counts: counts() });
  const out = batchOf(SAMPLE.slice(0, 2));
  first.encode(out, 0, out.count);
  const before = wire(out);
  first.decode(received(before), 0, 2);
  first.close();
  const rxCounts = counts();
  const second = new AeadStage(spec(txState, rxState), { counts: rxCounts });
  const more = batchOf(SAMPLE.slice(0, 1));
  second.encode(more, 0, 1);
  assert.equal(wire(more)[0][5], 2, "the counter goes on at 2, not 0");
  const replay = received(before);
  second.decode(replay, 0, replay.count);
  assert.equal(rxCounts.values[Counter.REPLAYED_DATA], 2, "the new window remembers what the old one took");
});

Deno.test("AeadStage keeps the previous epoch's key for frames still on their way, and updates keep state", () => {
  const rx = counts();
  const sender0 = new AeadStage({ id: "aead", vid: VID, keys: { tx: key(0, 7), rx: [] } }, {
    counts: counts(),
  });
  const sender1 = new AeadStage({ id: "aead", vid: VID, keys: { tx: key(1, 8), rx: [] } }, {
    counts: counts(),
  });
  const receiver = new AeadStage({ id: "aead", vid: VID, keys: { rx: [key(0, 7)] } }, { counts: rx });
  const old = batchOf(SAMPLE.slice(0, 1));
  sender0.encode(old, 0, 1);
  receiver.update({ id: "aead", vid: VID, keys: { rx: [key(1, 8), key(0, 7)] } } as never);
  const fresh = batchOf(SAMPLE.slice(1, 2));
  sender1.encode(fresh, 0, 1);
  const both = received([...wire(fresh), ...wire(old)]);
  receiver.decode(both, 0, 2);
  assert.deepEqual(frames(both), [SAMPLE[1], SAMPLE[0]]);
  receiver.update({ id: "aead", vid: VID, keys: { rx: [key(1, 8)] } } as never);
  const late = received(wire(old));
  receiver.decode(late, 0, 1);
  assert.equal(late.length[0], DROPPED, "the retired key opens nothing");
  assert.equal(rx.values[Counter.NO_KEY], 1);
});

Deno.test("AeadStage seals nothing past the cipher's limit and without a key, and counts it", () => {
  const state = new SharedArrayBuffer(KEY_STATE_BYTES);
  new Float64Array(state, 0, 1)[0] = SEAL_LIMIT["aes-256-gcm"] - 1;
  const tx = counts();
  const stage = new AeadStage({ id: "aead", vid: VID, keys: { tx: key(0, 7, state), rx: [] } }, {
    counts: tx,
  });
  const out = batchOf(SAMPLE);
  stage.encode(out, 0, out.count);
  assert.deepEqual(Array.from(out.length).map((l) => l === DROPPED), [false, true, true]);
  assert.equal(tx.values[Counter.KEY_EXHAUSTED], 2);
  const keyless = new AeadStage({ id: "aead", vid: VID, keys: { rx: [] } }, { counts: tx });
  const none = batchOf(SAMPLE.slice(0, 1));
  keyless.encode(none, 0, 1);
  assert.equal(none.length[0], DROPPED);
  stage.close();
  stage.close();
});
