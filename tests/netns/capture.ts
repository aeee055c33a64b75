/**
 * An underlay capture for the namespace tests: tshark writes a classic pcap of the UDP datagrams on VELA's
 * port on one interface; `stop()` ends it and returns each datagram's source, destination and payload.
 * With UDP GSO a capture on the sending veth may hold a run of datagrams as one (the segments back to
 * back), so size checks use traffic that leaves one datagram per send (ping).
 */

import type { Bed } from "../../testbed/netns.ts";

export interface CapturedDatagram {
  readonly from: string;
  readonly to: string;
  readonly sourcePort: number;
  readonly payload: Uint8Array;
}

export interface Capture {
  stop(): Promise<CapturedDatagram[]>;
}

/** Starts tshark in `ns` on `iface` (udp port `port`) and waits until it captures. */
export async function startCapture(bed: Bed, ns: string, iface: string, port = 4455): Promise<Capture> {
  const file = await Deno.makeTempFile({ prefix: "vela-capture-", suffix: ".pcap" });
  await Deno.chmod(file, 0o666);
  const tshark = bed.spawn(ns, [
    "tshark",
    "-i",
    iface,
    "-f",
    `udp port ${port}`,
    "-F",
    "pcap",
    "-w",
    file,
    "-q",
  ]);
  await bed.until(
    () => Promise.resolve(tshark.output().includes("Capturing on")),
    "tshark to capture",
    20_000,
  );
  return {
    async stop() {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await bed.stop(tshark, "SIGINT");
      const bytes = await Deno.readFile(file);
      await Deno.remove(file).catch(() => undefined);
      return readPcap(bytes);
    },
  };
}

/** The UDP datagrams (IPv4 or IPv6 in Ethernet) of a classic little-endian pcap file. */
export function readPcap(bytes: Uint8Array): CapturedDatagram[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 24 || view.getUint32(0, true) !== 0xa1b2c3d4) {
    throw new Error("Not a little-endian pcap file");
  }
  const out: CapturedDatagram[] = [];
  for (let at = 24; at + 16 <= bytes.length;) {
    const length = view.getUint32(at + 8, true);
    const frame = bytes.subarray(at + 16, at + 16 + length);
    at += 16 + length;
    const datagram = udpOf(frame);
    if (datagram) out.push(datagram);
  }
  return out;
}

function udpOf(frame: Uint8Array): CapturedDatagram | undefined {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (frame.length < 14) return undefined;
  const type = view.getUint16(12);
  const ip = 14;
  let from: string, to: string, udp: number, end: number;
  if (type === 0x0800) {
    if (frame[ip + 9] !== 17) return undefined;
    from = frame.subarray(ip + 12, ip + 16).join(".");
    to = frame.subarray(ip + 16, ip + 20).join(".");
    udp = ip + (frame[ip] & 0x0f) * 4;
    end = ip + view.getUint16(ip + 2);
  } else if (type === 0x86dd) {
    if (frame[ip + 6] !== 17) return undefined;
    const hex = (a: Uint8Array) =>
      Array.from({ length: 8 }, (_, i) => ((a[2 * i] << 8) | a[2 * i + 1]).toString(16)).join(":");
    from = hex(frame.subarray(ip + 8, ip + 24));
    to = hex(frame.subarray(ip + 24, ip + 40));
    udp = ip + 40;
    end = udp + view.getUint16(ip + 4);
  } else {
    return undefined;
  }
  return {
    from,
    to,
    sourcePort: view.getUint16(udp),
    payload: frame.slice(udp + 8, Math.min(end, frame.length)),
  };
}

/** Whether `needle` occurs in `haystack`. */
export function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}
