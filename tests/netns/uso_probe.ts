/**
 * Test helper for uso_test.ts, run as its own process inside a test namespace:
 *
 *   deno run --allow-all --unstable-net tests/netns/uso_probe.ts
 *
 * Opens a tun device with offload, gives it 198.18.207.33/30, joins four UDP datagrams from
 * 198.18.207.34 to 198.18.207.33:9000 into one superframe with UdpCoalescer and writes it to the device
 * in one write, then prints as JSON whether the device took UDP superframes, the write's errno (0) and
 * the datagrams a socket on 198.18.207.33:9000 received (hex), and exits.
 */

import { TunDevice } from "../../ffi/tun.ts";
import { UdpCoalescer } from "../../src/link/coalescing.ts";

const SIZES = [1000, 1000, 1000, 400];

/** An IPv4 UDP datagram from .34:4000 to .33:9000 whose payload is `payload` (checksums left to the kernel). */
function datagram(id: number, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(28 + payload.length);
  const total = frame.length;
  frame.set([0x45, 0, total >> 8, total & 0xff, id >> 8, id & 0xff, 0x40, 0, 64, 17, 0, 0]);
  frame.set([198, 18, 207, 34, 198, 18, 207, 33], 12);
  frame.set([
    4000 >> 8,
    4000 & 0xff,
    9000 >> 8,
    9000 & 0xff,
    (8 + payload.length) >> 8,
    (8 + payload.length) & 0xff,
  ], 20);
  frame.set(payload, 28);
  return frame;
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const payloads = SIZES.map((size, k) => crypto.getRandomValues(new Uint8Array(size)).fill(k, 0, 1));

const device = TunDevice.open("velauso%d", "tun", { offload: true });
try {
  for (
    const args of [["addr", "add", "198.18.207.33/30", "dev", device.name], [
      "link",
      "set",
      device.name,
      "up",
    ]]
  ) {
    const result = await new Deno.Command("ip", { args }).output();
    if (!result.success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(result.stderr)}`);
  }
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "198.18.207.33", port: 9000 });
  const coalescer = new UdpCoalescer();
  const offers = payloads.map((payload, k) => {
    const frame = datagram(100 + k, payload);
    return coalescer.offer(frame, 0, frame.length, 0, "probe");
  });
  const length = coalescer.finish();
  const written = device.frames.write(coalescer.buffer.slice(0, length), 0, length, false);
  const writeError = written ? 0 : 1; // 0 when the device took it
  const received: string[] = [];
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, 3000));
  const receiving = (async () => {
    while (received.length < payloads.length) received.push(hex((await socket.receive())[0]));
  })();
  await Promise.race([receiving, timeout]);
  console.log(JSON.stringify({
    udpOffload: device.udpOffload,
    offers,
    length,
    writeError,
    sent: payloads.map(hex),
    received,
  }));
  socket.close();
  Deno.exit(0);
} finally {
  device.close();
}
