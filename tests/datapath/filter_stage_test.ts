import assert from "node:assert/strict";
import { FilterStage, parseFilter, parseMac } from "../../src/datapath/filter_stage.ts";
import { Counter } from "../../src/datapath/counters.ts";
import { DROPPED, PacketBatch } from "../../src/packet/packet_batch.ts";
import { fillBatch } from "../fakes/batch_fill.ts";

const LOCAL = "02:00:00:00:0a:01";
const REMOTE = "02:00:00:00:0b:01";
const OTHER = "02:00:00:00:0a:02";
const BROADCAST = "ff:ff:ff:ff:ff:ff";
const MULTICAST = "33:33:00:00:00:01";

const mac = (text: string) => text.split(":").map((h) => parseInt(h, 16));

/** An Ethernet frame from `src` to `dst` of EtherType `type` (60 bytes). */
function frame(dst: string, src: string, type = 0x0800, payload: number[] = []): number[] {
  const bytes = [...mac(dst), ...mac(src), type >> 8, type & 0xff, ...payload];
  while (bytes.length < 60) bytes.push(0);
  return bytes;
}

/** Which of `frames` pass the stage, one way. */
function passing(filter: ReturnType<typeof parseFilter>, frames: number[][], out: boolean) {
  const batch = fillBatch(new PacketBatch({ buffers: frames.length, maxPacket: 128 }), frames);
  const counts = { values: new Float64Array(32), base: 0 };
  const stage = new FilterStage({ id: "filter", filter } as never, { counts });
  if (out) stage.encode(batch, 0, frames.length);
  else stage.decode(batch, 0, frames.length);
  const passed = frames.map((_, i) => batch.length[i] !== DROPPED);
  return { passed, filtered: counts.values[Counter.FILTERED] };
}

const names = { local: "--local-mac", remote: "--remote-mac", block: "--block" };

Deno.test("a filter with local and remote MACs lets out what a local host sends or a remote one gets, and in the reverse", () => {
  const filter = parseFilter({ local: [LOCAL], remote: [REMOTE] }, names);
  const frames = [frame(REMOTE, LOCAL), frame(REMOTE, OTHER), frame(OTHER, LOCAL), frame(OTHER, OTHER)];
  assert.deepEqual(passing(filter, frames, true).passed, [true, true, true, false]);
  const inbound = [frame(LOCAL, REMOTE), frame(OTHER, REMOTE), frame(LOCAL, OTHER), frame(OTHER, OTHER)];
  const { passed, filtered } = passing(filter, inbound, false);
  assert.deepEqual(passed, [true, true, true, false]);
  assert.equal(filtered, 1, "the dropped frame is counted");
});

Deno.test("broadcast and multicast cross from a listed host unless blocked", () => {
  const open = parseFilter({ local: [LOCAL] }, names);
  assert.deepEqual(
    passing(open, [frame(BROADCAST, LOCAL), frame(MULTICAST, LOCAL), frame(BROADCAST, OTHER)], true).passed,
    [true, true, false],
  );
  const closed = parseFilter({ block: ["broadcast", "multicast"] }, names);
  assert.deepEqual(
    passing(closed, [frame(BROADCAST, LOCAL), frame(MULTICAST, LOCAL), frame(REMOTE, LOCAL)], false).passed,
    [false, false, true],
  );
});

Deno.test("--block ipv6 and stp keep those frames off, also behind a VLAN tag", () => {
  const filter = parseFilter({ block: ["ipv6", "stp"] }, names);
  const tagged = frame(REMOTE, LOCAL, 0x8100, [0, 7, 0x86, 0xdd]);
  const bpdu = frame("01:80:c2:00:00:00", LOCAL, 38, [0x42, 0x42, 0x03]);
  const frames = [frame(REMOTE, LOCAL, 0x86dd), tagged, bpdu, frame(REMOTE, LOCAL, 0x0800)];
  assert.deepEqual(passing(filter, frames, true).passed, [false, false, false, true]);
});

Deno.test("parseFilter() and parseMac() refuse what is not a MAC or a kind, naming the option", () => {
  assert.equal(parseMac("02-00-00-00-0A-01"), 0x02000000_0a01);
  assert.equal(parseMac("02:00:00:00:0a"), undefined);
  assert.throws(() => parseFilter({ local: ["nope"] }, names), /--local-mac "nope" is not a MAC address/);
  assert.throws(() => parseFilter({ block: ["0x05dc"] }, names), /--block "0x05dc" is none of/);
  assert.deepEqual(parseFilter({ block: ["0x88B5"] }, names).block, [0x88b5]);
});
