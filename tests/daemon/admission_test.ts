import assert from "node:assert/strict";
import { Admission, type AdmissionRules } from "../../src/daemon/admission.ts";
import { parseCidr } from "../../src/ip.ts";
import { generateKey, parseKey, signControl } from "../../src/keys.ts";
import { type ControlMessage, encode, MAC_LENGTH } from "../../src/wire.ts";
import { IREQ_BURST, REPLAY_WINDOW_MS, STRANGER_BURST, TRUSTED_IREQ_BURST } from "../../src/timing.ts";

const FROM = { address: "198.18.0.9", port: 4000 };
const NOW = 1_000;
const WALL = 1_800_000_000_000;

function ireq(nonce: bigint, timestamp = WALL): ControlMessage {
  return {
    type: "IREQ",
    vid: 3,
    initiatorNonce: nonce,
    timestamp: BigInt(timestamp),
    mode: "tap",
    mtu: 1400,
    handshake: 0,
    offers: 1,
    flags: 0,
    ephemeral: new Uint8Array(32),
    plan: [],
  };
}

function signed(message: ControlMessage, key: Uint8Array): Uint8Array {
  const datagram = encode(message, MAC_LENGTH);
  signControl(key, datagram);
  return datagram;
}

const keyless: AdmissionRules = { keys: [], listen: true, allow: [parseCidr("198.18.0.0/24")!] };

Deno.test("control() spends a stranger's budget before the MAC, and a known address has none", () => {
  const key = parseKey(generateKey());
  const rules: AdmissionRules = { keys: [key], listen: true, allow: [] };
  const admission = new Admission();
  const forged = encode(ireq(1n), MAC_LENGTH); // flagged, but the MAC is zeros
  const reasons = new Map<string, number>();
  for (let i = 0; i < STRANGER_BURST + 50; i++) {
    const verdict = admission.control(rules, forged, ireq(1n), FROM, NOW, WALL);
    const reason = verdict.admit ? "admitted" : verdict.reason;
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  assert.equal(reasons.get("bad-mac"), STRANGER_BURST, "the MAC checked only within the budget");
  assert.equal(reasons.get("stranger-budget"), 50);
  // From the address of a circuit that is up, the same datagrams are all looked at.
  const known = admission.control(rules, forged, ireq(1n), FROM, NOW, WALL, true);
  assert.equal(!known.admit && known.reason, "bad-mac");
});

Deno.test("control() refuses a keyed IREQ outside the timestamp window before spending the stranger's budget", () => {
  const key = parseKey(generateKey());
  const rules: AdmissionRules = { keys: [key], listen: true, allow: [] };
  const admission = new Admission();
  const old = ireq(5n, WALL - REPLAY_WINDOW_MS - 1);
  for (let i = 0; i < STRANGER_BURST + 10; i++) {
    const verdict = admission.control(rules, signed(old, key), old, FROM, NOW, WALL);
    assert.equal(!verdict.admit && verdict.reason, "stale");
  }
  const fresh = ireq(6n);
  assert.equal(admission.control(rules, signed(fresh, key), fresh, FROM, NOW, WALL).admit, true);
});

Deno.test("control() lets TRUSTED_IREQ_BURST signed IREQs from one address through at once, and a key-less stranger IREQ_BURST", () => {
  const key = parseKey(generateKey());
  const rules: AdmissionRules = { keys: [key], listen: true, allow: [] };
  const admission = new Admission();
  let admitted = 0;
  // Past the stranger budget the datagrams are not looked at; the budget refills over time.
  for (let i = 0; i < TRUSTED_IREQ_BURST + 5; i++) {
    const message = ireq(BigInt(1000 + i));
    const now = NOW + i * 100;
    if (admission.control(rules, signed(message, key), message, FROM, now, WALL).admit) admitted++;
  }
  assert.ok(admitted >= TRUSTED_IREQ_BURST, `${admitted} signed IREQs admitted`);

  const strangerAdmission = new Admission();
  let stranger = 0;
  for (let i = 0; i < IREQ_BURST + 20; i++) {
    const message = ireq(BigInt(i));
    if (strangerAdmission.control(keyless, encode(message), message, FROM, NOW, WALL).admit) stranger++;
  }
  assert.equal(stranger, IREQ_BURST, "a key-less stranger gets the small burst");
  let known = 0;
  for (let i = 0; i < 100; i++) {
    const message = ireq(BigInt(500 + i));
    if (strangerAdmission.control(keyless, encode(message), message, FROM, NOW, WALL, true).admit) known++;
  }
  assert.equal(known, 100, "an address with a circuit up gets the trusted allowance");
});
