/**
 * One body of tests for the forwarding core (src/datapath/core.ts), run over in-memory fakes of both
 * batch interfaces (core_test.ts) and over real tap devices and UDP sockets in a namespace
 * (tests/netns/core_test.ts), as wireguard-go's genTestPair does. A pair is two cores, a and b, each with
 * two circuits to the other (device 0 on vid 3, device 1 on vid 4).
 */

import assert from "node:assert/strict";
import { CIRCUIT_FIELDS, Counter, DatapathCount } from "../../src/datapath/counters.ts";
import type { DatapathCore } from "../../src/datapath/core.ts";
import type { Stage, StageContext, StageSpec } from "../../src/datapath/stage.ts";
import { CompressStage } from "../../src/datapath/compress_stage.ts";
import { CompressionCode } from "../../src/wire.ts";
import { DROPPED } from "../../src/packet/packet_batch.ts";
import type { Endpoint } from "../../src/underlay/underlay.ts";
import { decode, encode, HEADER_LENGTH } from "../../src/wire.ts";
import {
  plainFrame,
  taggedTcpSuperHeader,
  tcpFrame,
  tcpPayload,
  tcpSuperHeader,
  vlanTagged,
} from "./frames.ts";
import { xorStage } from "./xor_stage.ts";

export const VIDS = [3, 4];

/** A side's stages: the same ones for every circuit, or made per circuit from its core's context. */
export type StageList = readonly Stage[] | ((context: StageContext) => readonly Stage[]);

/** The stages of a circuit, made from `list` with its core's context (a 1500-byte link). */
export function circuitStages(list: StageList, core: DatapathCore, slot: number): readonly Stage[] {
  return typeof list === "function" ? list(core.stageContext(slot, 1500)) : list;
}

export interface PairOptions {
  /** The devices carry virtio-net headers (TCP segmentation and receive coalescing). */
  offload: boolean;
  stagesA: StageList;
  stagesB: StageList;
  /** Both ends fragment datagrams longer than this (src/datapath/fragmentation.ts); absent: never. */
  datagramLimit?: number;
}

export interface CorePair extends Disposable {
  readonly a: DatapathCore;
  readonly b: DatapathCore;
  /** Every datapath-wide counter of each core. */
  readonly countsA: Float64Array;
  readonly countsB: Float64Array;
  readonly circuitsA: Float64Array;
  readonly circuitsB: Float64Array;
  /** Control datagrams b's core handed up. */
  readonly controls: { datagram: Uint8Array; from: Endpoint; known: boolean }[];
  /** a's underlay endpoint, as b sees it. */
  readonly endpointA: Endpoint;
  /** The kernel side of a's device `d` sends a frame (after `header`, a virtio-net header, with offload). */
  send(d: number, frame: Uint8Array<ArrayBuffer>, header?: Uint8Array<ArrayBuffer>): void;
  /** A raw datagram from a's underlay address to b. */
  rawFromA(datagram: Uint8Array<ArrayBuffer>): void;
  /** A datagram to b from an address b knows nothing of. */
  fromStranger(datagram: Uint8Array<ArrayBuffer>): void;
  /** Runs a's drain for both circuits, then b's receive until the underlay is empty. */
  forward(): Promise<void>;
  /** The frames b's device `d` has given its kernel side: waits for `count` of them (or a timeout). */
  delivered(d: number, count: number): Promise<Uint8Array[]>;
}

export type PairFactory = (options: PairOptions) => Promise<CorePair>;

export interface CoreCase {
  readonly name: string;
  run(make: PairFactory): Promise<void>;
}

function field(values: Float64Array, slot: number, counter: number): number {
  return values[slot * CIRCUIT_FIELDS + counter];
}

const PLAIN: PairOptions = { offload: false, stagesA: [], stagesB: [] };

/** `count` TCP segments of one flow, 1000 payload bytes each, from sequence 1000. */
function flow(count: number): Uint8Array<ArrayBuffer>[] {
  return Array.from({ length: count }, (_, k) => tcpFrame(1000 + k * 1000, 1000));
}

function concat(parts: Uint8Array[]): number[] {
  return parts.flatMap((part) => [...part]);
}

export const CORE_CASES: readonly CoreCase[] = [
  {
    name: "the core carries each vid's frames to its own circuit and counts them",
    async run(make) {
      using pair = await make(PLAIN);
      pair.send(0, plainFrame(0x33));
      pair.send(1, plainFrame(0x44, 200));
      pair.send(1, plainFrame(0x45, 300));
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 1), [plainFrame(0x33)]);
      assert.deepEqual(await pair.delivered(1, 2), [plainFrame(0x44, 200), plainFrame(0x45, 300)]);
      assert.equal(field(pair.circuitsA, 0, Counter.TX_PACKETS), 1);
      assert.equal(field(pair.circuitsA, 0, Counter.TX_BYTES), 114);
      assert.equal(field(pair.circuitsA, 1, Counter.TX_PACKETS), 2);
      assert.equal(field(pair.circuitsA, 1, Counter.TX_BYTES), 214 + 314);
      assert.equal(field(pair.circuitsB, 0, Counter.RX_PACKETS), 1);
      assert.equal(field(pair.circuitsB, 1, Counter.RX_PACKETS), 2);
      assert.equal(field(pair.circuitsB, 1, Counter.RX_BYTES), 214 + 314);
      assert.equal(pair.countsB[DatapathCount.UNKNOWN_CIRCUIT], 0);
    },
  },
  {
    name: "the core counts unknown vids, unknown senders, runts and empty datagrams, and hands control up",
    async run(make) {
      using pair = await make(PLAIN);
      const frame = plainFrame(0x55);
      const datagram = (vid: number) => new Uint8Array([vid, ...frame]);
      pair.rawFromA(datagram(9)); // no circuit for vid 9
      pair.fromStranger(datagram(3)); // vid 3, but not from a
      pair.rawFromA(new Uint8Array([3])); // a vid and nothing after it
      pair.rawFromA(new Uint8Array(0));
      pair.rawFromA(new Uint8Array([0, 1, 2, 3])); // shorter than a control header: never handed up
      pair.rawFromA(new Uint8Array([0, 1, 2, 3, 0, 0, 0, 0]));
      pair.rawFromA(datagram(3));
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 1), [frame], "only the datagram of a known circuit");
      assert.equal(pair.countsB[DatapathCount.UNKNOWN_CIRCUIT], 2);
      assert.equal(pair.countsB[DatapathCount.RUNT], 1);
      assert.equal(pair.countsB[DatapathCount.EMPTY], 1);
      assert.equal(pair.countsB[DatapathCount.CONTROL], 1);
      assert.equal(pair.countsB[DatapathCount.CONTROL_MALFORMED], 1);
      assert.deepEqual(pair.controls.map((c) => [...c.datagram]), [[0, 1, 2, 3, 0, 0, 0, 0]]);
      assert.deepEqual(pair.controls[0].from, pair.endpointA);
      assert.equal(pair.controls[0].known, true, "from the address of a circuit");
      assert.equal((await pair.delivered(1, 0)).length, 0);
    },
  },
  {
    name:
      "the core hands up a path MTU probe without its padding, and drops one cut short or an oversize control datagram",
    async run(make) {
      using pair = await make(PLAIN);
      const probe = (size: number, named: number) => {
        const datagram = new Uint8Array(size);
        datagram.set(
          encode({ type: "PROBE", vid: 3, senderNonce: 1n, receiverNonce: 2n, id: 5, size: named }),
        );
        return datagram;
      };
      pair.rawFromA(probe(1400, 1400));
      pair.rawFromA(probe(1300, 1400)); // cut on the way: not the size it names
      const keepalive = new Uint8Array(1400); // any other control message over 512 bytes
      keepalive.set([0, 5, 2, 3, 0, 40, 0, 0]);
      pair.rawFromA(keepalive);
      await pair.forward();
      assert.deepEqual(pair.controls.map((c) => c.datagram.length), [HEADER_LENGTH + 24]);
      assert.deepEqual(decode(pair.controls[0].datagram), {
        ok: true,
        message: { type: "PROBE", vid: 3, senderNonce: 1n, receiverNonce: 2n, id: 5, size: 1400 },
      });
      assert.equal(pair.countsB[DatapathCount.CONTROL_MALFORMED], 2);
    },
  },
  {
    name: "without offload, TCP segments go through one by one",
    async run(make) {
      using pair = await make(PLAIN);
      const segments = flow(4);
      for (const segment of segments) pair.send(0, segment);
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 4), segments);
    },
  },
  {
    name: "with offload, TCP segments of one flow reach the far device joined into one superframe",
    async run(make) {
      using pair = await make({ ...PLAIN, offload: true });
      const segments = flow(4);
      for (const segment of segments) pair.send(0, segment);
      await pair.forward();
      const delivered = await pair.delivered(0, 1);
      assert.equal(delivered.length, 1, "one superframe");
      assert.deepEqual([...tcpPayload(delivered[0])], concat(segments.map(tcpPayload)));
      assert.equal(field(pair.circuitsB, 0, Counter.RX_PACKETS), 4, "counted as the segments");
      const sent = segments.reduce((sum, segment) => sum + segment.length, 0);
      assert.equal(field(pair.circuitsA, 0, Counter.TX_BYTES), sent);
      assert.equal(field(pair.circuitsB, 0, Counter.RX_BYTES), sent, "each segment's headers too");
    },
  },
  {
    name: "with offload, a TCP superframe from the device is cut into segments on the wire",
    async run(make) {
      using pair = await make({ ...PLAIN, offload: true });
      const superframe = tcpFrame(1000, 4000, 0x18, true);
      pair.send(0, superframe, tcpSuperHeader(1000));
      await pair.forward();
      assert.equal(field(pair.circuitsA, 0, Counter.TX_PACKETS), 4, "four segments sent");
      assert.equal(field(pair.circuitsB, 0, Counter.RX_PACKETS), 4);
      // Bytes of the four segments on the wire (54 bytes of headers each), not of the superframe.
      assert.equal(field(pair.circuitsA, 0, Counter.TX_BYTES), 4 * (54 + 1000));
      assert.equal(field(pair.circuitsB, 0, Counter.RX_BYTES), 4 * (54 + 1000));
      const delivered = await pair.delivered(0, 1);
      assert.deepEqual(concat(delivered.map(tcpPayload)), [...tcpPayload(superframe)]);
    },
  },
  {
    name:
      "with offload, an 802.1Q-tagged TCP superframe is cut at the offset after the tag into tagged segments",
    async run(make) {
      using pair = await make({ ...PLAIN, offload: true });
      const superframe = vlanTagged(tcpFrame(1000, 4000, 0x18, true), 10);
      pair.send(0, superframe, taggedTcpSuperHeader(1000));
      await pair.forward();
      assert.equal(field(pair.circuitsA, 0, Counter.TX_PACKETS), 4, "four segments sent");
      assert.equal(field(pair.circuitsA, 0, Counter.TX_DROPPED), 0, "none dropped");
      const delivered = await pair.delivered(0, 4);
      assert.equal(delivered.length, 4);
      // A packet socket on a real tap gets the tag as metadata, not in the bytes (the kernel takes it off
      // on receive); the fakes hand the bytes over as written. Either way every segment is whole.
      const payloads = delivered.map((segment) => {
        const tagged = segment[12] === 0x81 && segment[13] === 0;
        if (tagged) assert.deepEqual([...segment.subarray(14, 16)], [0, 10], "vid 10");
        else assert.deepEqual([...segment.subarray(12, 14)], [0x08, 0x00], "IPv4 once the tag is off");
        return segment.subarray(tagged ? 58 : 54);
      });
      assert.deepEqual(concat(payloads), [...superframe.subarray(58)]);
    },
  },
  {
    name: "frames over the datagram limit cross in equal fragments and reach the far device whole",
    async run(make) {
      using pair = await make({ ...PLAIN, datagramLimit: 600 });
      const frames = [
        plainFrame(0x21, 100),
        plainFrame(0x22, 1000),
        plainFrame(0x23, 1500),
        plainFrame(0x24, 586),
      ];
      for (const frame of frames) pair.send(0, frame);
      pair.send(1, plainFrame(0x25, 1200));
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 4), frames, "in order, every byte");
      assert.deepEqual(await pair.delivered(1, 1), [plainFrame(0x25, 1200)]);
      // 114 bytes go whole; 1014 take 2 fragments, 1514 take 3, and 600 (601 with the vid byte) take 2.
      assert.equal(field(pair.circuitsA, 0, Counter.FRAGMENTED), 3);
      assert.equal(field(pair.circuitsA, 0, Counter.TX_PACKETS), 4, "frames, not datagrams");
      assert.equal(field(pair.circuitsB, 0, Counter.REASSEMBLED), 3);
      assert.equal(field(pair.circuitsB, 1, Counter.REASSEMBLED), 1);
      assert.equal(field(pair.circuitsB, 0, Counter.RX_PACKETS), 4);
      assert.equal(field(pair.circuitsB, 0, Counter.REASSEMBLY_DROPPED), 0);
      assert.equal(pair.countsB[DatapathCount.FRAGMENT_REFUSED], 0);
      assert.equal(pair.controls.length, 0, "no fragment is handed up as control");
    },
  },
  {
    name: "fragments carry what the stages made, and the far end's stages undo it after joining",
    async run(make) {
      using pair = await make({
        ...PLAIN,
        stagesA: [xorStage(0x5a)],
        stagesB: [xorStage(0x5a)],
        datagramLimit: 700,
      });
      const frames = [plainFrame(0x31, 1400), plainFrame(0x32, 1401), plainFrame(0x33, 50)];
      for (const frame of frames) pair.send(0, frame);
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 3), frames);
      assert.equal(field(pair.circuitsB, 0, Counter.REASSEMBLED), 2);
    },
  },
  {
    name:
      "with offload, a TCP superframe is cut into segments and each segment over the limit into fragments",
    async run(make) {
      using pair = await make({ ...PLAIN, offload: true, datagramLimit: 800 });
      const superframe = tcpFrame(1000, 4000, 0x18, true);
      pair.send(0, superframe, tcpSuperHeader(1000));
      await pair.forward();
      assert.equal(field(pair.circuitsA, 0, Counter.TX_PACKETS), 4, "four segments sent");
      assert.equal(field(pair.circuitsA, 0, Counter.FRAGMENTED), 4, "each in fragments");
      assert.equal(field(pair.circuitsB, 0, Counter.REASSEMBLED), 4);
      const delivered = await pair.delivered(0, 4);
      assert.deepEqual(concat(delivered.map(tcpPayload)), [...tcpPayload(superframe)]);
    },
  },
  {
    name: "frames a stage drops on the way out count as drops, not as bytes sent",
    async run(make) {
      // Drops frames longer than 200 bytes, as the AEAD stage drops what it has no key for.
      const dropLong: Stage = {
        id: "drop-long-test",
        overhead: 0,
        encode(batch, start, end) {
          for (let i = start; i < end; i++) if (batch.length[i] > 200) batch.length[i] = DROPPED;
        },
        decode() {},
      };
      using pair = await make({ ...PLAIN, stagesA: [dropLong], stagesB: [] });
      const frames = [plainFrame(0x41), plainFrame(0x42, 300), plainFrame(0x43)];
      for (const frame of frames) pair.send(0, frame);
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 2), [frames[0], frames[2]]);
      assert.equal(field(pair.circuitsA, 0, Counter.TX_PACKETS), 2);
      assert.equal(field(pair.circuitsA, 0, Counter.TX_BYTES), 2 * 114, "the dropped frame's bytes not");
      assert.equal(field(pair.circuitsA, 0, Counter.TX_DROPPED), 1);
      assert.equal(field(pair.circuitsB, 0, Counter.RX_BYTES), 2 * 114);
    },
  },
  {
    name: "a stage changes the bytes on the wire and the far end's stage undoes them",
    async run(make) {
      const frame = plainFrame(0x66);
      {
        using pair = await make({ ...PLAIN, stagesA: [xorStage(0x5a)], stagesB: [xorStage(0x5a)] });
        pair.send(0, frame);
        await pair.forward();
        assert.deepEqual(await pair.delivered(0, 1), [frame]);
        assert.equal(
          field(pair.circuitsA, 0, Counter.TX_BYTES),
          frame.length,
          "frame bytes, before the stage",
        );
      }
      {
        // Without the stage at b, the device gets what the wire carried: the frame XORed, and the key.
        using pair = await make({ ...PLAIN, stagesA: [xorStage(0x5a)], stagesB: [] });
        pair.send(0, frame.map((b) => b ^ 0x5a));
        await pair.forward();
        assert.deepEqual(await pair.delivered(0, 1), [new Uint8Array([...frame, 0x5a])]);
      }
      {
        using pair = await make({ ...PLAIN, stagesA: [xorStage(0x5a)], stagesB: [xorStage(0x11)] });
        pair.send(0, frame);
        await pair.forward();
        assert.equal((await pair.delivered(0, 0)).length, 0);
        assert.equal(field(pair.circuitsB, 0, Counter.RX_DROPPED), 1, "the stage's drop counted");
      }
    },
  },
  {
    name: "compression: text crosses in fewer bytes and arrives whole, random bytes go as they were",
    async run(make) {
      const compress = (context: StageContext) => [new CompressStage({ id: "compress" }, context)];
      using pair = await make({ ...PLAIN, stagesA: compress, stagesB: compress });
      const text = new TextEncoder().encode(
        "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: example.test\r\nAccept: application/json\r\n\r\n".repeat(
          12,
        ),
      );
      const textFrame = plainFrame(0x70, 0);
      const frames = [
        new Uint8Array([...textFrame, ...text]),
        new Uint8Array([...textFrame, ...crypto.getRandomValues(new Uint8Array(1200))]),
        plainFrame(0x71, 10),
      ];
      for (const frame of frames) pair.send(0, frame);
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 3), frames);
      const carried = frames.reduce((total, f) => total + f.length, 0);
      assert.equal(field(pair.circuitsA, 0, Counter.COMPRESS_IN), carried);
      const wire = field(pair.circuitsA, 0, Counter.COMPRESS_OUT);
      assert.ok(wire < carried - text.length / 2, `${wire} bytes on the wire for ${carried} carried`);
      assert.equal(field(pair.circuitsA, 0, Counter.SENT_UNCOMPRESSED), 2, "the random and the short frame");
      assert.equal(field(pair.circuitsA, 0, Counter.TX_BYTES), carried, "bytes as the device gave them");
      assert.equal(field(pair.circuitsB, 0, Counter.RX_BYTES), carried);
      assert.equal(field(pair.circuitsB, 0, Counter.BAD_COMPRESSION), 0);
    },
  },
  {
    name:
      "compression with dictionaries: once the receiver's dictionary is acknowledged, frames use it and arrive whole; an unknown epoch is dropped and counted",
    async run(make) {
      const stages: CompressStage[] = [];
      const dictionary = (context: StageContext) => {
        const stage = new CompressStage({ id: "compress", mode: "dictionary" }, context);
        stages.push(stage);
        return [stage];
      };
      using pair = await make({ ...PLAIN, stagesA: dictionary, stagesB: dictionary });
      const text = (n: number) =>
        new Uint8Array([
          ...plainFrame(0x74, 0),
          ...new TextEncoder().encode(
            `{"id":${n},"user":"user${n % 13}","status":"active","items":[{"sku":"A-${n}","qty":${n % 9}}]}`
              .repeat(6),
          ),
        ]);
      const sent: Uint8Array<ArrayBuffer>[] = [];
      for (let n = 0; n < 40; n++) {
        sent.push(text(n));
        pair.send(0, sent.at(-1)!);
        await pair.forward();
      }
      const epoch = field(pair.circuitsB, 0, Counter.DICTIONARY_READY);
      assert.notEqual(epoch, 0, "b holds a whole dictionary of a's frames");
      const hash = (BigInt(field(pair.circuitsB, 0, Counter.DICTIONARY_READY_HASH_HIGH)) << 32n) |
        BigInt(field(pair.circuitsB, 0, Counter.DICTIONARY_READY_HASH_LOW));
      // What the daemon does with b's DACK at a: a's stage for vid 3 (the first one made) takes it.
      stages[0].update({ id: "compress", acknowledged: { epoch, hash } } as StageSpec);
      assert.equal(field(pair.circuitsA, 0, Counter.DICTIONARY_IN_USE), epoch);
      for (let n = 40; n < 60; n++) {
        sent.push(text(n));
        pair.send(0, sent.at(-1)!);
        await pair.forward();
      }
      assert.deepEqual(await pair.delivered(0, sent.length), sent);
      assert.equal(field(pair.circuitsB, 0, Counter.DICTIONARY_PEER_USES), epoch);
      pair.rawFromA(new Uint8Array([VIDS[0], CompressionCode.DICTIONARY, (epoch % 255) + 9, 0x10, 0x41]));
      await pair.forward();
      assert.equal(field(pair.circuitsB, 0, Counter.DICTIONARY_MISSING), 1);
      assert.equal(field(pair.circuitsB, 0, Counter.BAD_COMPRESSION), 0);
    },
  },
  {
    name: "compression: a datagram that does not decompress is dropped and counted, and the next one is not",
    async run(make) {
      const compress = (context: StageContext) => [new CompressStage({ id: "compress" }, context)];
      using pair = await make({ ...PLAIN, stagesA: compress, stagesB: compress });
      const vid = VIDS[0];
      pair.rawFromA(new Uint8Array([vid, CompressionCode.LZ4, 0xff, 0xff, 0xff, 0x00, 0x01]));
      pair.rawFromA(new Uint8Array([vid, 0x7e, ...plainFrame(0x72)]));
      pair.rawFromA(new Uint8Array([vid]));
      pair.rawFromA(new Uint8Array([vid, CompressionCode.RAW, ...plainFrame(0x73)]));
      await pair.forward();
      assert.deepEqual(await pair.delivered(0, 1), [plainFrame(0x73)]);
      assert.equal(field(pair.circuitsB, 0, Counter.BAD_COMPRESSION), 2, "the malformed block and the code");
    },
  },
];
