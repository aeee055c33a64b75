/**
 * Test helper for robustness_test.ts, run as its own process inside a test namespace:
 *
 *   deno run --allow-net --unstable-net tests/netns/flood.ts HOST [PORT] [COUNT]
 *
 * Sends COUNT (default 5000) bad datagrams to HOST:PORT (default 4455), paced over about three seconds,
 * then prints how many of each kind it sent as JSON and exits. The kinds: random bytes, truncated IREQs,
 * control messages with wrong lengths, unknown VC codes, data for unknown vids (200 to 255), spoofed
 * ICON, CREQ and KEEPALIVE for vid 3 with random nonces, and mutated control messages.
 *
 * It never sends a well-formed IREQ: without a key, an IREQ from the initiator's address with a new nonce
 * is, by design, that initiator restarting, which is not what this flood is about.
 */

import { type ControlMessage, encode, HEADER_LENGTH, PROTOCOL_VERSION, VcCode } from "../../src/wire.ts";

const [host, portText = "4455", countText = "5000"] = Deno.args;
if (!host) throw new Error("usage: flood.ts HOST [PORT] [COUNT]");
const port = Number(portText);
const count = Number(countText);
const VID = 3;
const BATCH = 50;
const PAUSE_MS = 30;

const int = (low: number, high: number) => low + Math.floor(Math.random() * (high - low + 1));
const bytes = (length: number) => crypto.getRandomValues(new Uint8Array(length));
const nonce = () => crypto.getRandomValues(new BigUint64Array(1))[0];

function ireq(): Uint8Array {
  return encode({
    type: "IREQ",
    vid: VID,
    initiatorNonce: nonce(),
    timestamp: BigInt(Date.now()),
    mode: "tap",
    mtu: 1400,
    handshake: 0,
    offers: 1,
    flags: 0,
    ephemeral: new Uint8Array(32),
    plan: [{ family: 4, bytes: new Uint8Array([198, 18, 207, 2]), prefixLength: 30 }],
  });
}

function spoofed(): Uint8Array {
  const messages: ControlMessage[] = [
    { type: "ICON", vid: VID, initiatorNonce: nonce(), responderNonce: nonce(), handshake: 0 },
    { type: "CREQ", vid: VID, senderNonce: nonce(), receiverNonce: nonce() },
    {
      type: "KEEPALIVE",
      vid: VID,
      senderNonce: nonce(),
      receiverNonce: nonce(),
      sentAt: BigInt(int(1, 1e9)),
      echo: BigInt(int(0, 1)),
      sequence: BigInt(int(1, 1e9)),
    },
  ];
  return encode(messages[int(0, messages.length - 1)]);
}

const kinds: Record<string, () => Uint8Array> = {
  random: () => bytes(int(0, 600)),
  "truncated-ireq": () => {
    const whole = ireq();
    return whole.slice(0, int(1, whole.length - 1));
  },
  "wrong-length": () => {
    const whole = spoofed();
    const out = new Uint8Array(whole.length + int(1, 40));
    out.set(whole);
    return out;
  },
  "unknown-code": () => {
    const out = new Uint8Array(HEADER_LENGTH + int(0, 32));
    out.set([0, int(8, 255), PROTOCOL_VERSION, VID]);
    new DataView(out.buffer).setUint16(4, out.length - HEADER_LENGTH);
    return out;
  },
  "unknown-vid": () => {
    const out = bytes(int(1, 600));
    out[0] = int(200, 255);
    return out;
  },
  spoofed,
  mutated: () => {
    const out = spoofed();
    for (let i = int(1, 4); i > 0; i--) out[int(0, out.length - 1)] = int(0, 255);
    // Never a well-formed IREQ (see above).
    if (out[0] === 0 && out[1] === VcCode.IREQ) out[1] = VcCode.KEEPALIVE;
    return out;
  },
};
const names = Object.keys(kinds);

const conn = Deno.listenDatagram({ hostname: "0.0.0.0", port: 0, transport: "udp" });
const target: Deno.NetAddr = { transport: "udp", hostname: host, port };
const sent: Record<string, number> = Object.fromEntries(names.map((name) => [name, 0]));
let failed = 0;
for (let i = 0; i < count; i++) {
  const name = names[i % names.length];
  try {
    await conn.send(kinds[name](), target);
    sent[name]++;
  } catch {
    failed++;
  }
  if (i % BATCH === BATCH - 1) await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
}
conn.close();
console.log(JSON.stringify({ sent, failed }));
