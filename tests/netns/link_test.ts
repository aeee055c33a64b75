/** VELA as real processes in two namespaces: a link that carries frames both ways, in every shape. */

import assert from "node:assert/strict";
import { Bed } from "../../testbed/netns.ts";
import type { DaemonStatus } from "../../src/daemon/daemon.ts";
import { iperf3Udp, netnsTest, requireProgram, startIperf3Server } from "./support.ts";
import { NO_OFFLOAD_TIME_SLICE_MS } from "../../src/timing.ts";

/**
 * The datapaths: the libc Workers with offloads (the default: two Workers on two CPUs or more), the same
 * without offloads, one libc Worker doing both directions, and Deno's own UDP socket. Every test here
 * runs over each.
 */
const DATAPATHS = {
  "libc": ["--underlay", "libc"],
  "libc --no-offload": ["--underlay", "libc", "--no-offload"],
  "libc --datapath-threads 1": ["--underlay", "libc", "--datapath-threads", "1"],
  "deno": ["--underlay", "deno"],
} as const;
type Underlay = keyof typeof DATAPATHS;

/** Starts a listener in b and an initiator in a (for circuit `vid`), waits until both have the interface. */
async function linkWith(bed: Bed, initiatorArgs: string[], vid: number, underlay: Underlay) {
  const listener = bed.vela(bed.b, [
    "--listen",
    "--allow",
    "198.18.0.0/15",
    "--allow",
    "fd00::/8",
    ...DATAPATHS[underlay],
  ]);
  const initiator = bed.vela(bed.a, ["--vid", String(vid), ...initiatorArgs, ...DATAPATHS[underlay]]);
  const ifname = `vela${vid}`;
  await bed.until(
    async () => (await bed.hasLink(bed.a, ifname)) && (await bed.hasLink(bed.b, ifname)),
    ifname,
  );
  return { listener, initiator, ifname };
}

/**
 * Waits until `ifname` in `ns` has MTU `expected` (the listener's interface appears a moment before the
 * handshake configures it); throws, with the daemons' output, if it never does.
 */
async function expectMtu(bed: Bed, ns: string, ifname: string, expected: number): Promise<void> {
  await bed.until(
    async () => (await bed.link(ns, ifname)).mtu === expected,
    `${ifname} in ${ns} to have MTU ${expected}`,
  );
}

/** A full-size IPv4 packet for `mtu` crosses from a to `address` without fragmentation (don't fragment). */
async function expectFullSizePing(bed: Bed, address: string, mtu: number): Promise<void> {
  const ping = await bed.exec(bed.a, [
    "ping",
    "-c",
    "2",
    "-W",
    "2",
    "-M",
    "do",
    "-s",
    String(mtu - 28),
    address,
  ]);
  assert.equal(ping.code, 0, ping.stdout + ping.stderr);
}

/** Stops both daemons with SIGTERM: each exits 0 and its interface is gone. */
async function stopCleanly(
  bed: Bed,
  processes: { listener: ReturnType<Bed["vela"]>; initiator: ReturnType<Bed["vela"]> },
  ifname: string,
) {
  const initiatorStatus = await bed.stop(processes.initiator);
  assert.equal(initiatorStatus.code, 0, processes.initiator.output());
  assert.equal(await bed.hasLink(bed.a, ifname), false, "the initiator removed its interface");
  await bed.until(
    async () => !(await bed.hasLink(bed.b, ifname)),
    "the listener to remove its interface after CREQ",
  );
  const listenerStatus = await bed.stop(processes.listener);
  assert.equal(listenerStatus.code, 0, processes.listener.output());
}

for (const underlay of Object.keys(DATAPATHS) as Underlay[]) {
  const link = (bed: Bed, initiatorArgs: string[], vid = 3) => linkWith(bed, initiatorArgs, vid, underlay);

  netnsTest(
    `a tap link over IPv4 answers ping over IPv4 and IPv6, carries iperf3 TCP, and cleans up (${underlay} underlay)`,
    async () => {
      await using bed = await Bed.create();
      const processes = await link(bed, [
        "--peer",
        bed.b4,
        "--address",
        "198.18.207.1/30",
        "--address",
        "fd00:207::1/126",
      ]);
      await expectMtu(bed, bed.a, processes.ifname, 1500 - 20 - 8 - 1 - 14);
      await expectMtu(bed, bed.b, processes.ifname, 1500 - 20 - 8 - 1 - 14);
      await bed.until(async () => {
        const addrs = (await bed.link(bed.b, processes.ifname)).addrs;
        return addrs.includes("198.18.207.2/30") && addrs.includes("fd00:207::2/126");
      }, "the listener's interface to get the other address of each pair");
      const near = await bed.link(bed.a, processes.ifname);
      const far = await bed.link(bed.b, processes.ifname);
      assert.ok(
        near.addrs.includes("198.18.207.1/30") && near.addrs.includes("fd00:207::1/126"),
        near.addrs.join(),
      );
      assert.ok(
        far.addrs.includes("198.18.207.2/30") && far.addrs.includes("fd00:207::2/126"),
        far.addrs.join(),
      );

      await bed.waitPing(bed.a, "198.18.207.2");
      await bed.waitPing(bed.a, "fd00:207::2");
      await bed.waitPing(bed.b, "198.18.207.1");
      await bed.waitPing(bed.b, "fd00:207::1");
      await expectFullSizePing(bed, "198.18.207.2", near.mtu);

      if (await requireProgram("iperf3", "iperf3")) {
        const server = await startIperf3Server(bed, "198.18.207.2");
        const client = await bed.exec(bed.a, ["iperf3", "-c", "198.18.207.2", "-t", "2", "-J"]);
        assert.equal(client.code, 0, client.stderr);
        const report = JSON.parse(client.stdout);
        const received = report.end.sum_received.bytes as number;
        console.log(
          `iperf3 through the tap link: ${(report.end.sum_received.bits_per_second / 1e6).toFixed(0)} Mbit/s`,
        );
        assert.ok(received > 1_000_000, `iperf3 moved only ${received} bytes`);
        await bed.stop(server);
      }
      await stopCleanly(bed, processes, processes.ifname);
    },
  );

  netnsTest(
    `every data datagram on the wire is one vid byte followed by the Ethernet frame (${underlay} underlay)`,
    async () => {
      if (!(await requireProgram("tshark", "tshark"))) return;
      await using bed = await Bed.create();
      const processes = await link(bed, ["--peer", bed.b4, "--address", "198.18.207.5/30"], 42);
      await bed.waitPing(bed.a, "198.18.207.6");
      const capture = `/tmp/vela-${Deno.pid}-wire.pcap`;
      try {
        const tshark = bed.spawn(bed.a, [
          "tshark",
          "-i",
          bed.vethA,
          "-f",
          "udp port 4455",
          "-w",
          capture,
          "-q",
        ]);
        await bed.until(
          () => Promise.resolve(tshark.output().includes("Capturing on")),
          "tshark to start capturing",
        );
        // tshark prints "Capturing on" a little before its filter is live; on a loaded machine more so.
        await new Promise((resolve) => setTimeout(resolve, 1500));
        // Ten echoes, of which five each way must be captured: the filter may miss the first few.
        const ping = await bed.exec(bed.a, ["ping", "-c", "10", "-i", "0.2", "198.18.207.6"]);
        assert.equal(ping.code, 0, ping.stdout);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        await bed.stop(tshark, "SIGINT");
        const fields = await bed.exec(bed.a, [
          "tshark",
          "-r",
          capture,
          "-T",
          "fields",
          "-e",
          "ip.src",
          "-e",
          "udp.payload",
        ]);
        assert.equal(fields.code, 0, fields.stderr);
        const macA = (await bed.link(bed.a, processes.ifname)).address.replaceAll(":", "");
        const macB = (await bed.link(bed.b, processes.ifname)).address.replaceAll(":", "");
        const data = fields.stdout.trim().split("\n").map((line) => line.split("\t")).filter(([, hex]) =>
          !hex.startsWith("00")
        );
        assert.ok(data.length >= 10, `only ${data.length} data datagrams captured`);
        for (const [source, hex] of data) {
          assert.equal(hex.slice(0, 2), "2a", "the first byte is the vid, 42");
          const [dst, src, type] = [hex.slice(2, 14), hex.slice(14, 26), hex.slice(26, 30)];
          const [from, to] = source === bed.a4 ? [macA, macB] : [macB, macA];
          assert.equal(src, from, "the inner frame's source MAC is the sending tap's");
          assert.ok(
            dst === to || dst === "ffffffffffff" || dst.startsWith("3333"),
            `inner destination ${dst}`,
          );
          assert.ok(["0800", "0806", "86dd"].includes(type), `inner EtherType ${type}`);
        }
        const icmp = data.filter(([, hex]) =>
          hex.slice(26, 30) === "0800" && hex.slice(2 * (1 + 14 + 9), 2 * (1 + 14 + 10)) === "01"
        );
        const fromA = icmp.filter(([source]) => source === bed.a4).length;
        const fromB = icmp.length - fromA;
        assert.ok(
          fromA >= 5 && fromB >= 5,
          `${fromA} requests and ${fromB} replies of the ten echoes captured, five of each wanted; ping said: ${ping.stdout}`,
        );
      } finally {
        await Deno.remove(capture).catch(() => undefined);
      }
      await stopCleanly(bed, processes, processes.ifname);
    },
  );

  netnsTest(
    `--mode tun gives an L3 link with the tun MTU (${underlay} underlay)`,
    async () => {
      await using bed = await Bed.create();
      const processes = await link(bed, [
        "--peer",
        bed.b4,
        "--mode",
        "tun",
        "--address",
        "198.18.207.9/30",
        "--address",
        "fd00:207::9/126",
      ]);
      await expectMtu(bed, bed.a, processes.ifname, 1500 - 29);
      await expectMtu(bed, bed.b, processes.ifname, 1500 - 29);
      const shown = await bed.exec(bed.b, ["ip", "-d", "link", "show", processes.ifname]);
      assert.match(shown.stdout, /tun type tun/);
      await bed.waitPing(bed.a, "198.18.207.10");
      await bed.waitPing(bed.a, "fd00:207::a");
      await stopCleanly(bed, processes, processes.ifname);
    },
  );

  for (const mode of ["tap", "tun"] as const) {
    netnsTest(
      `a UDP stream over a ${mode} link arrives with no frame refused by the device (${underlay} underlay)`,
      async () => {
        if (!(await requireProgram("iperf3", "iperf3"))) return;
        await using bed = await Bed.create();
        // Equal datagrams in a stream are what the offload path sends as one UDP GSO message and receives
        // as one GRO message, then writes to the device frame by frame.
        const processes = await link(bed, [
          "--peer",
          bed.b4,
          "--mode",
          mode,
          "--address",
          "198.18.207.21/30",
        ]);
        await bed.waitPing(bed.a, "198.18.207.22");
        const { sent, delivered } = await iperf3Udp(bed, "198.18.207.22", "50M", 1200);
        const status = await bed.velaCommand(bed.b, [
          "status",
          "--control",
          processes.listener.control!,
          "--json",
        ]);
        assert.equal(status.code, 0, status.stderr);
        const [circuit] = (JSON.parse(status.stdout) as DaemonStatus).circuits;
        console.log(
          `UDP over ${mode}: ${delivered} of ${sent} datagrams delivered; the listener wrote ` +
            `${circuit.rxPackets} frames, the device refused ${circuit.drops.deviceRefused}`,
        );
        assert.equal(circuit.drops.deviceRefused, 0, JSON.stringify(circuit));
        assert.ok(circuit.rxPackets >= delivered, JSON.stringify(circuit));
        assert.ok(delivered > sent / 2, `only ${delivered} of ${sent} datagrams arrived`);
        await stopCleanly(bed, processes, processes.ifname);
      },
    );
  }

  netnsTest(
    `an IPv6 underlay with an IPv6 peer literal carries the link (${underlay} underlay)`,
    async () => {
      await using bed = await Bed.create();
      const processes = await link(bed, [
        "--peer",
        bed.b6,
        "--address",
        "198.18.207.13/30",
        "--address",
        "fd00:207::d/126",
      ]);
      await expectMtu(bed, bed.a, processes.ifname, 1500 - 40 - 8 - 1 - 14);
      await bed.waitPing(bed.a, "198.18.207.14");
      await bed.waitPing(bed.a, "fd00:207::e");
      await stopCleanly(bed, processes, processes.ifname);
    },
  );

  netnsTest(
    `a jumbo underlay (veth MTU 9000) gives a jumbo link (${underlay} underlay)`,
    async () => {
      await using bed = await Bed.create({ mtu: 9000 });
      const processes = await link(bed, ["--peer", bed.b4, "--address", "198.18.207.17/30"]);
      const mtu = 9000 - 29 - 14;
      await expectMtu(bed, bed.a, processes.ifname, mtu);
      await expectMtu(bed, bed.b, processes.ifname, mtu);
      await bed.waitPing(bed.a, "198.18.207.18");
      await expectFullSizePing(bed, "198.18.207.18", mtu);
      await stopCleanly(bed, processes, processes.ifname);
    },
  );
}

/** Each thread of process `pid` with its name and its time slice in ns (null where the kernel shows none). */
async function threadSlices(pid: number): Promise<{ tid: number; name: string; slice: number | null }[]> {
  const threads = [];
  for await (const entry of Deno.readDir(`/proc/${pid}/task`)) {
    const tid = Number(entry.name);
    const name = (await Deno.readTextFile(`/proc/${pid}/task/${tid}/comm`)).trim();
    const sched = await Deno.readTextFile(`/proc/${pid}/task/${tid}/sched`).catch(() => "");
    const slice = /^se\.slice\s*:\s*(\d+)/m.exec(sched);
    threads.push({ tid, name, slice: slice ? Number(slice[1]) : null });
  }
  return threads;
}

/** Linux 6.12 and later take a thread's own time slice through sched_setattr. */
function kernelTakesTimeSlices(): boolean {
  const [major, minor] = Deno.osRelease().split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 12);
}

for (const [underlay, workersWithSlice] of [["libc --no-offload", true], ["libc", false]] as const) {
  netnsTest(
    `the datapath Workers ${
      workersWithSlice ? `ask for a ${NO_OFFLOAD_TIME_SLICE_MS} ms time slice` : "keep the default time slice"
    } (${underlay} underlay)`,
    async () => {
      if (!kernelTakesTimeSlices()) {
        console.warn(
          `SKIPPED: kernel ${Deno.osRelease()} has no per-thread time slice (Linux 6.12 and later)`,
        );
        return;
      }
      await using bed = await Bed.create();
      const processes = await linkWith(bed, ["--peer", bed.b4, "--address", "198.18.207.21/30"], 3, underlay);
      await bed.waitPing(bed.a, "198.18.207.22");
      const slice = NO_OFFLOAD_TIME_SLICE_MS * 1_000_000;
      for (const daemon of [processes.initiator, processes.listener]) {
        const threads = await threadSlices(daemon.pid);
        const report = JSON.stringify(threads);
        if (threads.every((t) => t.slice === null)) {
          console.warn("SKIPPED: this kernel does not show se.slice in /proc/PID/task/TID/sched");
          return;
        }
        const main = threads.find((t) => t.tid === daemon.pid);
        assert.ok(
          main && main.slice !== null && main.slice !== slice,
          `the main thread keeps the default: ${report}`,
        );
        const expected = !workersWithSlice ? 0 : navigator.hardwareConcurrency >= 2 ? 2 : 1;
        assert.equal(
          threads.filter((t) => t.slice === slice).length,
          expected,
          `${expected} thread(s) with a ${NO_OFFLOAD_TIME_SLICE_MS} ms slice: ${report}`,
        );
        assert.ok(
          threads.every((t) => t.slice === slice || t.slice === main.slice),
          `no other thread has a slice of its own: ${report}`,
        );
      }
      await stopCleanly(bed, processes, processes.ifname);
    },
  );
}
