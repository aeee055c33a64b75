/**
 * The core pair of tests/datapath/core_cases.ts over the kernel: tap devices (ffi/tun.ts) and UDP sockets
 * on loopback (KernelUnderlay), inside a namespace of its own (core_probe.ts runs there). The kernel
 * side of each tap is a packet socket (AF_PACKET) bound to it: a frame sent on it is one the tap hands
 * VELA, and a frame VELA writes to the tap is one the packet socket receives. With offload, the sending
 * packet sockets carry virtio-net headers (PACKET_VNET_HDR), so a TCP superframe can be handed to a tap.
 */

import { check, libc } from "../../ffi/libc.ts";
import { TunDevice } from "../../ffi/tun.ts";
import { LibcUdpSocket } from "../../ffi/udp_socket.ts";
import { openPacketSocket } from "../../ffi/packet_socket.ts";
import { VnetHdr } from "../../ffi/structs.ts";
import { DatapathCore } from "../../src/datapath/core.ts";
import { CIRCUIT_FIELDS, DATAPATH_COUNT_FIELDS } from "../../src/datapath/counters.ts";
import { DeviceLink } from "../../src/link/device_link.ts";
import { KernelUnderlay } from "../../src/underlay/kernel_underlay.ts";
import { endpointSockaddr } from "../../src/underlay/sockaddr.ts";
import type { Endpoint } from "../../src/underlay/underlay.ts";
import type { CorePair, PairFactory, StageList } from "../datapath/core_cases.ts";
import { circuitStages, VIDS } from "../datapath/core_cases.ts";
import { TEST_MAC } from "../datapath/frames.ts";

const c = libc();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function ip(...args: string[]): Promise<void> {
  const result = await new Deno.Command("ip", { args, stderr: "piped" }).output();
  if (!result.success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(result.stderr)}`);
}

/** A packet socket bound to interface `name` (ffi/packet_socket.ts). */
function packetSocket(name: string, vnet: boolean): number {
  return openPacketSocket(parseInt(Deno.readTextFileSync(`/sys/class/net/${name}/ifindex`), 10), vnet);
}

/** Makes ready the namespace the probe runs in: loopback up, no IPv6 on new interfaces (no noise). */
export async function prepareNamespace(): Promise<void> {
  await ip("link", "set", "lo", "up");
  await Deno.writeTextFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
}

let serial = 0;

export const kernelCorePair: PairFactory = async (options) => {
  const closers: (() => void)[] = [];
  try {
    const socketA = LibcUdpSocket.bind(0);
    closers.push(() => socketA.close());
    const socketB = LibcUdpSocket.bind(0);
    closers.push(() => socketB.close());
    const stranger = LibcUdpSocket.bind(0);
    closers.push(() => stranger.close());
    const gso = options.offload && socketA.enableGro() && socketB.enableGro();
    const endpointA: Endpoint = { address: "127.0.0.1", port: socketA.port };
    const endpointB: Endpoint = { address: "127.0.0.1", port: socketB.port };
    const controls: { datagram: Uint8Array; from: Endpoint; known: boolean }[] = [];

    const side = async (socket: LibcUdpSocket, peer: Endpoint, stages: StageList, vnet: boolean) => {
      const underlay = new KernelUnderlay(socket.fd, gso);
      const circuits = new Float64Array(CIRCUIT_FIELDS * VIDS.length);
      const counts = new Float64Array(DATAPATH_COUNT_FIELDS);
      const core = new DatapathCore(underlay, (datagram, from, known) => {
        controls.push({ datagram, from, known });
      }, {
        circuits,
        datapath: counts,
      });
      const packets: number[] = [];
      for (const [slot, vid] of VIDS.entries()) {
        const device = TunDevice.open(`vcore${serial++}`, "tap", { offload: options.offload });
        closers.push(() => device.close());
        if (device.offload !== options.offload) throw new Error(`${device.name} has no offload here`);
        await ip("link", "set", device.name, "up");
        const link = new DeviceLink(
          device.frames,
          { mode: "tap", offload: device.offload, udpOffload: false, mtu: 1500 },
          core.writer,
          core.countsOf(slot),
        );
        core.addCircuit({
          slot,
          vid,
          route: underlay.attach(peer),
          link,
          stages: circuitStages(stages, core, slot),
          datagramLimit: options.datagramLimit,
        });
        const fd = packetSocket(device.name, vnet);
        closers.push(() => c.close(fd));
        packets.push(fd);
      }
      return { core, underlay, circuits, counts, packets };
    };
    const a = await side(socketA, endpointB, options.stagesA, options.offload);
    const b = await side(socketB, endpointA, options.stagesB, false);
    const received: Uint8Array[][] = VIDS.map(() => []);
    const buffer = new Uint8Array(70_000);
    const isTest = (frame: Uint8Array) => TEST_MAC.every((byte, i) => frame[i] === byte);
    const collect = () => {
      for (const [d, fd] of b.packets.entries()) {
        for (;;) {
          const n = Number(c.read(fd, buffer, BigInt(buffer.length)));
          if (n <= 0) break;
          const frame = buffer.slice(0, n);
          if (isTest(frame)) received[d].push(frame);
        }
      }
    };
    const pair: CorePair = {
      a: a.core,
      b: b.core,
      countsA: a.counts,
      countsB: b.counts,
      circuitsA: a.circuits,
      circuitsB: b.circuits,
      controls,
      endpointA,
      send(d, frame, header) {
        let bytes = frame;
        if (options.offload) {
          bytes = new Uint8Array(VnetHdr.SIZE + frame.length);
          if (header) bytes.set(header);
          bytes.set(frame, VnetHdr.SIZE);
        }
        check(Number(c.write(a.packets[d], bytes, BigInt(bytes.length))), "write(AF_PACKET)");
      },
      rawFromA(datagram) {
        if (!socketA.sendTo(datagram, datagram.length, endpointSockaddr(endpointB))) {
          throw new Error("sendto failed");
        }
      },
      fromStranger(datagram) {
        const to = endpointSockaddr({ address: "::1", port: socketB.port });
        if (!stranger.sendTo(datagram, datagram.length, to)) throw new Error("sendto ::1 failed");
      },
      async forward() {
        for (let slot = 0; slot < VIDS.length; slot++) a.core.drain(slot);
        // Loopback delivers within sendmmsg; a few rounds in case the kernel is slower.
        for (let idle = 0; idle < 3;) {
          let got = 0;
          for (let which = 0; which < b.underlay.sockets.length; which++) got += b.core.receive(which);
          if (got === 0) {
            idle++;
            await sleep(10);
          } else idle = 0;
        }
      },
      async delivered(d, count) {
        const deadline = Date.now() + (count === 0 ? 200 : 2000);
        do {
          collect();
          if (count > 0 && received[d].length >= count) break;
          await sleep(10);
        } while (Date.now() < deadline);
        return received[d];
      },
      [Symbol.dispose]() {
        for (const close of closers.splice(0).reverse()) close();
      },
    };
    return pair;
  } catch (error) {
    for (const close of closers.splice(0).reverse()) close();
    throw error;
  }
};
