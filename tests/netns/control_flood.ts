/**
 * Test helper for hardening_test.ts, run as its own process inside a test namespace:
 *
 *   deno run --allow-all tests/netns/control_flood.ts SOURCE HOST PORT RATE SECONDS [--ireqs]
 *
 * Sends control datagrams (first byte 0) from SOURCE to HOST:PORT at RATE a second for SECONDS, through
 * a libc socket (sendto per datagram: Deno's own UDP send cannot keep up with tens of thousands a
 * second on a small machine), then prints {"sent": n, "failed": n} and exits. The datagrams come from a
 * pool made at the start: random bytes behind the marker (most of them malformed), headers that look
 * right around random bodies (most fail to decode, some decode to a message with random fields),
 * KEEPALIVE, ICON and CREQ for vid 3 with random nonces and a random MAC, and, with --ireqs, IREQs with
 * a fresh timestamp and a random MAC (for a keyed listener: each costs a MAC check unless a budget
 * stops it first; without --ireqs none is sent, since a key-less listener would rightly make circuits
 * for a stranger inside --allow).
 */

import { check, libc } from "../../ffi/libc.ts";
import { Linux, sockaddrIn } from "../../ffi/structs.ts";
import { type ControlMessage, encode, FLAG_MAC, MAC_LENGTH, PROTOCOL_VERSION } from "../../src/wire.ts";

const [source, host, portText, rateText, secondsText, ...flags] = Deno.args;
if (!source || !host || !portText || !rateText || !secondsText) {
  throw new Error("usage: control_flood.ts SOURCE HOST PORT RATE SECONDS [--ireqs]");
}
const withIreqs = flags.includes("--ireqs");
const rate = Number(rateText);
const seconds = Number(secondsText);
const POOL = 8192;
const VID = 3;

const int = (low: number, high: number) => low + Math.floor(Math.random() * (high - low + 1));
const random = (length: number) => crypto.getRandomValues(new Uint8Array(length));
const nonce = () => crypto.getRandomValues(new BigUint64Array(1))[0];
const ipv4 = (text: string) => new Uint8Array(text.split(".").map(Number));

/** `message` with the MAC flag and 16 random bytes where the MAC goes. */
function falselySigned(message: ControlMessage): Uint8Array {
  const datagram = encode(message, MAC_LENGTH);
  datagram.set(random(MAC_LENGTH), datagram.length - MAC_LENGTH);
  return datagram;
}

const kinds: (() => Uint8Array)[] = [
  () => {
    const out = random(int(2, 600));
    out[0] = 0;
    return out;
  },
  () => {
    const mac = int(0, 1) === 1;
    const out = random(int(8 + (mac ? MAC_LENGTH : 0), 200));
    out.set([0, int(0, 9), PROTOCOL_VERSION, int(1, 255)]);
    new DataView(out.buffer).setUint16(4, out.length - 8 - (mac ? MAC_LENGTH : 0));
    out[6] = mac ? FLAG_MAC : 0;
    out[7] = 0;
    if (!withIreqs && out[1] === 1) out[1] = 5;
    return out;
  },
  () =>
    falselySigned({
      type: "KEEPALIVE",
      vid: VID,
      senderNonce: nonce(),
      receiverNonce: nonce(),
      sentAt: BigInt(int(1, 1e9)),
      echo: 0n,
      sequence: BigInt(int(1, 1e9)),
    }),
  () =>
    falselySigned({ type: "ICON", vid: VID, initiatorNonce: nonce(), responderNonce: nonce(), handshake: 0 }),
  () => falselySigned({ type: "CREQ", vid: VID, senderNonce: nonce(), receiverNonce: nonce() }),
];
if (withIreqs) {
  kinds.push(() =>
    falselySigned({
      type: "IREQ",
      vid: int(1, 255),
      initiatorNonce: nonce(),
      timestamp: BigInt(Date.now()),
      mode: "tap",
      mtu: 1400,
      handshake: 0,
      offers: 2,
      flags: 0,
      ephemeral: random(32),
      plan: [],
    })
  );
}
const pool = Array.from({ length: POOL }, (_, i) => kinds[i % kinds.length]());

const c = libc();
const fd = check(c.socket(Linux.AF_INET, Linux.SOCK_DGRAM, 0), "socket(AF_INET, SOCK_DGRAM)");
const local = sockaddrIn(ipv4(source), 0);
check(c.bind(fd, local, local.length), "bind");
const target = sockaddrIn(ipv4(host), Number(portText));
let sent = 0;
let failed = 0;
const start = performance.now();
const end = start + seconds * 1000;
for (let now = start; now < end; now = performance.now()) {
  const due = Math.floor(((now - start) / 1000) * rate);
  while (sent + failed < due) {
    const datagram = pool[(sent + failed) % POOL];
    if (c.sendto(fd, datagram, BigInt(datagram.length), 0, target, target.length) < 0) failed++;
    else sent++;
  }
  await new Promise((resolve) => setTimeout(resolve, 2));
}
c.close(fd);
console.log(JSON.stringify({ sent, failed }));
