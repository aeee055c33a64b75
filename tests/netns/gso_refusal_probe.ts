/**
 * Test helper for gso_refusal_test.ts, run as its own process inside a test namespace whose loopback has
 * MTU 1500:
 *
 *   deno run --allow-all tests/netns/gso_refusal_probe.ts
 *
 * Sends through a KernelUnderlay with UDP GSO on loopback: a run of four 1504-byte datagrams (over the MTU:
 * the kernel refuses the UDP_SEGMENT message), then 40 runs of four 1000-byte ones; prints as JSON what
 * each send reported, the underlay's refusal count, whether it uses GSO again, and how many datagrams a
 * second socket received, and exits.
 */

import { LibcUdpSocket } from "../../ffi/udp_socket.ts";
import { PacketBatch } from "../../src/packet/packet_batch.ts";
import { KernelUnderlay } from "../../src/underlay/kernel_underlay.ts";

const sender = LibcUdpSocket.bind(0);
const receiver = LibcUdpSocket.bind(0);
const underlay = new KernelUnderlay(sender.fd, true);
const route = underlay.attach({ address: "127.0.0.1", port: receiver.port });
const batch = new PacketBatch({ buffers: 4, maxPacket: 2048 });

function run(size: number): number {
  for (let i = 0; i < 4; i++) {
    batch.offset[i] = batch.packetStart(i);
    batch.length[i] = size;
    batch.memory.fill(i + 1, batch.offset[i], batch.offset[i] + size);
  }
  batch.count = 4;
  return underlay.send(batch, 0, 4, route);
}

const oversize = run(1504);
const after: number[] = [];
for (let i = 0; i < 40; i++) after.push(run(1000));

const inbox = new PacketBatch({ buffers: 64, maxPacket: 2048 });
const reader = new KernelUnderlay(receiver.fd, false);
let received = 0;
for (let tries = 0; tries < 50; tries++) {
  const got = reader.receive(inbox, 0);
  received += got > 0 ? inbox.count : 0;
  if (got <= 0) await new Promise((resolve) => setTimeout(resolve, 10));
}
const gsoActive = underlay.gsoActive;
console.log(JSON.stringify({ oversize, after, refusals: underlay.gsoRefusals, gsoActive, received }));
sender.close();
receiver.close();
