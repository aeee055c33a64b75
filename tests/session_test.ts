import assert from "node:assert/strict";
import { parseCidr } from "../src/ip.ts";
import {
  MIN_LINK_MTU,
  Session,
  type SessionAction,
  type SessionConfig,
  type SessionState,
} from "../src/session.ts";
import {
  DEAD_PEER_MS,
  IREQ_FIRST_RETRY_MS,
  IREQ_MAX_RETRY_MS,
  KEEPALIVE_INTERVAL_MS,
  NAK_RETRY_MS,
  RESPONDER_LINGER_MS,
} from "../src/timing.ts";
import type { ControlMessage, Iack, Icon, Ireq, Keepalive, Nonce } from "../src/wire.ts";
import { decode, encode, NakReason } from "../src/wire.ts";

const VID = 3;
const T0 = 1_000_000;
const WALL = 1_700_000_000_123;
const PLAN = [parseCidr("198.18.207.2/30")!, parseCidr("fd00:1::2/126")!];

/** The initiator's nonces come from 100 on, the responder's from 500 on. */
const I = 100n;
const R = 500n;
/** A nonce neither side has issued. */
const STRANGER = 999n;

function counter(first: Nonce): () => Nonce {
  let next = first;
  return () => next++;
}

function initiator(config: Partial<SessionConfig> = {}): Session {
  return new Session({
    role: "initiator",
    vid: VID,
    mode: "tap",
    mtu: 1400,
    plan: PLAN,
    newNonce: counter(I),
    wallClock: () => WALL,
    ...config,
  });
}

function responder(config: Partial<SessionConfig> = {}): Session {
  return new Session({
    role: "responder",
    vid: VID,
    mode: "tap",
    mtu: 1500,
    plan: [],
    newNonce: counter(R),
    wallClock: () => WALL,
    ...config,
  });
}

function received(message: ControlMessage) {
  return { type: "received" as const, message };
}

function ireqMessage(fields: Partial<Ireq> = {}): Ireq {
  return {
    type: "IREQ",
    vid: VID,
    initiatorNonce: I,
    timestamp: BigInt(WALL),
    mode: "tap",
    mtu: 1400,
    options: 0,
    plan: PLAN,
    ...fields,
  };
}

function iack(fields: Partial<Iack> = {}): Iack {
  return {
    type: "IACK",
    vid: VID,
    responderNonce: R,
    initiatorNonce: I,
    mtu: 1300,
    mode: "tap",
    options: 0,
    ...fields,
  };
}

function icon(fields: Partial<Icon> = {}): Icon {
  return { type: "ICON", vid: VID, initiatorNonce: I, responderNonce: R, ...fields };
}

function nak(reason: number, text: string, initiatorNonce = I): ControlMessage {
  return { type: "NAK", vid: VID, initiatorNonce, reason, text };
}

function creq(senderNonce: Nonce, receiverNonce: Nonce): ControlMessage {
  return { type: "CREQ", vid: VID, senderNonce, receiverNonce };
}

function keepalive(senderNonce: Nonce, receiverNonce: Nonce, sentAt: bigint, echo = 0n): Keepalive {
  return { type: "KEEPALIVE", vid: VID, senderNonce, receiverNonce, sentAt, echo };
}

/** A KEEPALIVE the session sends: its own nonce first, stamped with `now` in whole milliseconds. */
function sendKeepalive(senderNonce: Nonce, receiverNonce: Nonce, now: number, echo = 0n): SessionAction {
  return { type: "send", message: keepalive(senderNonce, receiverNonce, BigInt(now), echo) };
}

/** The two actions an initiator takes to ask: send the IREQ and arm the retry timer. */
function request(at: number, mtu = 1400, mode: "tap" | "tun" = "tap"): SessionAction[] {
  return [
    {
      type: "send",
      message: {
        type: "IREQ",
        vid: VID,
        initiatorNonce: I,
        timestamp: BigInt(WALL),
        mode,
        mtu,
        options: 0,
        plan: PLAN,
      },
    },
    { type: "timer", at },
  ];
}

function sendIcon(): SessionAction {
  return { type: "send", message: { type: "ICON", vid: VID, initiatorNonce: I, responderNonce: R } };
}

function sendAck(
  type: "IACK" | "IRDY",
  mtu: number,
  initiatorNonce = I,
  mode: "tap" | "tun" = "tap",
): SessionAction {
  return {
    type: "send",
    message: { type, vid: VID, responderNonce: R, initiatorNonce, mtu, mode, options: 0 },
  };
}

function sendNak(initiatorNonce: Nonce, reason: number, text: string): SessionAction {
  return { type: "send", message: { type: "NAK", vid: VID, initiatorNonce, reason, text } };
}

function assertDrop(actions: SessionAction[], reason?: RegExp): void {
  assert.equal(actions.length, 1, JSON.stringify(actions, (_, v) => typeof v === "bigint" ? `${v}n` : v));
  const [action] = actions;
  assert.equal(action.type, "drop");
  if (action.type === "drop") {
    assert.ok(action.reason.length > 0);
    if (reason) assert.match(action.reason, reason);
  }
}

/** A session driven to `state`; the time of the last step is T0. */
function initiatorIn(
  state: "requesting" | "refused" | "established",
  config: Partial<SessionConfig> = {},
): Session {
  const session = initiator(config);
  session.handle({ type: "start" }, T0);
  if (state === "refused") session.handle(received(nak(NakReason.NOT_ALLOWED, "no")), T0);
  if (state === "established") session.handle(received(iack()), T0);
  assert.equal(session.state, state);
  return session;
}

/**
 * A responder driven to `state`; the time of the last step is T0. A lost responder was established at
 * T0 - DEAD_PEER_MS and found the initiator silent at T0.
 */
function responderIn(
  state: "acknowledged" | "established" | "lost",
  config: Partial<SessionConfig> = {},
): Session {
  const session = responder(config);
  const start = state === "lost" ? T0 - DEAD_PEER_MS : T0;
  session.handle(received(ireqMessage()), start);
  if (state !== "acknowledged") session.handle(received(icon()), start);
  if (state === "lost") session.handle({ type: "timer" }, T0);
  assert.equal(session.state, state);
  return session;
}

// =================================================================================================
// Initiator
// =================================================================================================

Deno.test("a new initiator is idle with its own nonce and no agreed MTU", () => {
  const session = initiator();
  assert.equal(session.state, "idle");
  assert.equal(session.role, "initiator");
  assert.equal(session.vid, VID);
  assert.equal(session.nonce, I);
  assert.equal(session.peerNonce, 0n);
  assert.equal(session.mtu, 0);
  assert.equal(session.mode, "tap");
});

Deno.test("initiator: idle + start sends an IREQ and arms the first retry, then is requesting", () => {
  const session = initiator();
  assert.deepEqual(session.handle({ type: "start" }, T0), request(T0 + IREQ_FIRST_RETRY_MS));
  assert.equal(session.state, "requesting");
  assert.equal(IREQ_FIRST_RETRY_MS, 500);
});

Deno.test("initiator: the IREQ carries mode, MTU, plan and the wall clock in whole milliseconds", () => {
  const session = initiator({ mode: "tun", mtu: 9000, wallClock: () => WALL + 0.9 });
  assert.deepEqual(session.handle({ type: "start" }, T0), request(T0 + 500, 9000, "tun"));
});

Deno.test("initiator: requesting + timer resends the IREQ with backoff 500, 1000, 2000, 4000, 8000, 8000, and asks for a resolve every dead time", () => {
  const session = initiator();
  const intervals = [500, 1000, 2000, 4000, 8000, 8000, 8000];
  let now = T0;
  assert.deepEqual(session.handle({ type: "start" }, now), request(now + intervals[0]));
  let resolvedAt = now;
  const resolves: number[] = [];
  for (let i = 1; i < intervals.length; i++) {
    now += intervals[i - 1];
    const resolve = now - resolvedAt >= DEAD_PEER_MS;
    if (resolve) {
      resolvedAt = now;
      resolves.push(now - T0);
    }
    const expected = [...(resolve ? [{ type: "resolve" } as const] : []), ...request(now + intervals[i])];
    assert.deepEqual(session.handle({ type: "timer" }, now), expected, `retry ${i}`);
    assert.equal(session.state, "requesting");
  }
  assert.deepEqual(resolves, [7500, 15500, 23500], "a lookup at the first IREQ after each dead time");
  assert.equal(IREQ_MAX_RETRY_MS, 8000);
});

Deno.test("initiator: requesting + timer sends exactly an IREQ and a timer at now + backoff", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 500), request(T0 + 500 + 1000));
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 1500), request(T0 + 1500 + 2000));
});

Deno.test("initiator: requesting + IACK sets the MTU, sends ICON, forwards, is established, arms the keepalive", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle(received(iack({ mtu: 1300 })), T0 + 10), [
    { type: "set-mtu", mtu: 1300 },
    sendIcon(),
    { type: "forward", enabled: true },
    { type: "established", mtu: 1300 },
    { type: "timer", at: T0 + 10 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "established");
  assert.equal(session.mtu, 1300);
  assert.equal(session.peerNonce, R);
});

Deno.test("initiator: requesting + IRDY is taken like an IACK", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle(received(iack({ type: "IRDY", mtu: 1300 })), T0), [
    { type: "set-mtu", mtu: 1300 },
    sendIcon(),
    { type: "forward", enabled: true },
    { type: "established", mtu: 1300 },
    { type: "timer", at: T0 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "established");
});

Deno.test("initiator: the agreed MTU is the smaller of both proposals", () => {
  const smallerHere = initiatorIn("requesting", { mtu: 1280 });
  const actions = smallerHere.handle(received(iack({ mtu: 9000 })), T0);
  assert.deepEqual(actions[0], { type: "set-mtu", mtu: 1280 });
  assert.deepEqual(actions[3], { type: "established", mtu: 1280 });
  assert.equal(smallerHere.mtu, 1280);

  const smallerThere = initiatorIn("requesting", { mtu: 9000 });
  smallerThere.handle(received(iack({ mtu: 1420 })), T0);
  assert.equal(smallerThere.mtu, 1420);
});

Deno.test("initiator: requesting + IACK in another mode is refused and retried after the NAK delay", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle(received(iack({ mode: "tun" })), T0 + 7), [
    { type: "refused", reason: NakReason.MODE_MISMATCH, text: "the peer answered in tun mode" },
    { type: "timer", at: T0 + 7 + NAK_RETRY_MS },
  ]);
  assert.equal(session.state, "refused");
  assert.equal(session.mtu, 0);
  assert.equal(NAK_RETRY_MS, 30_000);
});

Deno.test("initiator: requesting + IRDY in another mode is refused too", () => {
  const session = initiatorIn("requesting");
  const actions = session.handle(received(iack({ type: "IRDY", mode: "tun" })), T0);
  assert.deepEqual(actions.map((a) => a.type), ["refused", "timer"]);
  assert.equal(session.state, "refused");
});

Deno.test("initiator: requesting + NAK for our nonce is refused with its reason and retried after the NAK delay", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle(received(nak(NakReason.BAD_PLAN, "198.18.207.2 is in use")), T0 + 3), [
    { type: "refused", reason: NakReason.BAD_PLAN, text: "198.18.207.2 is in use" },
    { type: "timer", at: T0 + 3 + NAK_RETRY_MS },
  ]);
  assert.equal(session.state, "refused");
});

Deno.test("initiator: refused + timer asks again from the first retry interval", () => {
  const session = initiator();
  session.handle({ type: "start" }, T0);
  session.handle({ type: "timer" }, T0 + 500);
  session.handle({ type: "timer" }, T0 + 1500); // backoff is now at 4000
  session.handle(received(nak(NakReason.NOT_ALLOWED, "no")), T0 + 2000);
  const retryAt = T0 + 2000 + NAK_RETRY_MS;
  assert.deepEqual(session.handle({ type: "timer" }, retryAt), [
    { type: "resolve" },
    ...request(retryAt + 500),
  ]);
  assert.equal(session.state, "requesting");
  assert.deepEqual(session.handle({ type: "timer" }, retryAt + 500), request(retryAt + 500 + 1000));
});

Deno.test("initiator: established + IACK for our session (our ICON was lost) resends the ICON", () => {
  const session = initiatorIn("established");
  assert.deepEqual(session.handle(received(iack()), T0 + 100), [sendIcon()]);
  assert.equal(session.state, "established");
  assert.equal(session.mtu, 1300);
});

Deno.test("initiator: established + IRDY for our session resends the ICON", () => {
  const session = initiatorIn("established");
  assert.deepEqual(session.handle(received(iack({ type: "IRDY" })), T0 + 100), [sendIcon()]);
  assert.equal(session.state, "established");
});

Deno.test("initiator: established + CREQ for our nonces stops forwarding and asks again", () => {
  const session = initiatorIn("established");
  assert.deepEqual(session.handle(received(creq(R, I)), T0 + 50), [
    { type: "forward", enabled: false },
    ...request(T0 + 50 + IREQ_FIRST_RETRY_MS),
  ]);
  assert.equal(session.state, "requesting");
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 550), request(T0 + 550 + 1000));
});

Deno.test("initiator: after a CREQ a new responder session is accepted", () => {
  const session = initiatorIn("established");
  session.handle(received(creq(R, I)), T0);
  const actions = session.handle(received(iack({ responderNonce: R + 1n, mtu: 1200 })), T0 + 1);
  assert.deepEqual(actions[1], {
    type: "send",
    message: { type: "ICON", vid: VID, initiatorNonce: I, responderNonce: R + 1n },
  });
  assert.equal(session.state, "established");
  assert.equal(session.peerNonce, R + 1n);
  assert.equal(session.mtu, 1200);
});

// --- initiator keepalives, dead peer, moved ---------------------------------------------------------

Deno.test("timing: keepalive every 2000 ms, dead after 6000 ms, a lost responder lingers 60000 ms", () => {
  assert.equal(KEEPALIVE_INTERVAL_MS, 2000);
  assert.equal(DEAD_PEER_MS, 6000);
  assert.equal(RESPONDER_LINGER_MS, 60_000);
});

Deno.test("initiator: established + timer with the peer heard sends a periodic KEEPALIVE and rearms", () => {
  const session = initiatorIn("established");
  const at = T0 + KEEPALIVE_INTERVAL_MS;
  assert.deepEqual(session.handle({ type: "timer" }, at), [
    sendKeepalive(I, R, at),
    { type: "timer", at: at + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "established");
  // Still heard at 4000 ms of silence, and at 5999.
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 4000), [
    sendKeepalive(I, R, T0 + 4000),
    { type: "timer", at: T0 + 6000 },
  ]);
  assert.deepEqual(session.handle({ type: "timer" }, T0 + DEAD_PEER_MS - 1).map((a) => a.type), [
    "send",
    "timer",
  ]);
  assert.equal(session.state, "established");
});

Deno.test("initiator: a periodic KEEPALIVE has echo 0 and sentAt in whole milliseconds, never below 1", () => {
  const atZero = initiator();
  atZero.handle({ type: "start" }, 0);
  atZero.handle(received(iack()), 0);
  assert.deepEqual(atZero.handle({ type: "timer" }, 0), [
    { type: "send", message: keepalive(I, R, 1n, 0n) },
    { type: "timer", at: KEEPALIVE_INTERVAL_MS },
  ]);

  const fractional = initiatorIn("established");
  const [send] = fractional.handle({ type: "timer" }, T0 + 2000.7);
  assert.deepEqual(send, { type: "send", message: keepalive(I, R, BigInt(T0 + 2000), 0n) });
});

Deno.test("initiator: established + timer after 6000 ms of silence reports the dead peer and asks again", () => {
  const session = initiatorIn("established");
  session.handle({ type: "timer" }, T0 + 2000);
  session.handle({ type: "timer" }, T0 + 4000);
  const at = T0 + DEAD_PEER_MS;
  assert.deepEqual(session.handle({ type: "timer" }, at), [
    { type: "forward", enabled: false },
    { type: "dead-peer", silentMs: DEAD_PEER_MS },
    { type: "resolve" },
    ...request(at + IREQ_FIRST_RETRY_MS),
  ]);
  assert.equal(session.state, "requesting");
  // Asking again starts from the first retry interval, and backs off from there.
  assert.deepEqual(session.handle({ type: "timer" }, at + 500), request(at + 500 + 1000));
});

Deno.test("initiator: the dead-peer silence is measured from the last KEEPALIVE heard", () => {
  const session = initiatorIn("established");
  session.handle({ type: "timer" }, T0 + 2000);
  session.handle(received(keepalive(R, I, 77n)), T0 + 3000);
  assert.equal(session.handle({ type: "timer" }, T0 + 6000)[0].type, "send");
  assert.equal(session.handle({ type: "timer" }, T0 + 8000)[0].type, "send");
  assert.equal(session.state, "established");
  const actions = session.handle({ type: "timer" }, T0 + 9500);
  assert.deepEqual(actions.slice(0, 2), [
    { type: "forward", enabled: false },
    { type: "dead-peer", silentMs: 6500 },
  ]);
  assert.equal(session.state, "requesting");
});

Deno.test("initiator: after a dead peer the same or a new responder session is accepted again", () => {
  const session = initiatorIn("established");
  session.handle({ type: "timer" }, T0 + DEAD_PEER_MS);
  assert.equal(session.state, "requesting");
  // A late KEEPALIVE of the old circuit does not revive it.
  assertDrop(session.handle(received(keepalive(R, I, 5n)), T0 + DEAD_PEER_MS + 1), /KEEPALIVE in requesting/);
  const actions = session.handle(received(iack({ responderNonce: R + 1n })), T0 + DEAD_PEER_MS + 2);
  assert.deepEqual(actions.map((a) => a.type), ["set-mtu", "send", "forward", "established", "timer"]);
  assert.deepEqual(actions[4], { type: "timer", at: T0 + DEAD_PEER_MS + 2 + KEEPALIVE_INTERVAL_MS });
  assert.equal(session.state, "established");
  assert.equal(session.peerNonce, R + 1n);
});

Deno.test("initiator: established + a periodic KEEPALIVE (echo 0) is answered with one echoing its sentAt", () => {
  const session = initiatorIn("established");
  assert.deepEqual(session.handle(received(keepalive(R, I, 123_456n)), T0 + 40), [
    sendKeepalive(I, R, T0 + 40, 123_456n),
  ]);
  assert.equal(session.state, "established");
  assert.equal(session.rttMs, undefined, "a periodic KEEPALIVE gives no round trip");
});

Deno.test("initiator: established + a KEEPALIVE echoing our sentAt sets the RTT and takes no action", () => {
  const session = initiatorIn("established");
  assert.equal(session.rttMs, undefined);
  const sentAt = T0 + 2000;
  session.handle({ type: "timer" }, sentAt);
  assert.deepEqual(session.handle(received(keepalive(R, I, 999n, BigInt(sentAt))), sentAt + 35), []);
  assert.equal(session.rttMs, 35);
  assert.equal(session.state, "established");
  assert.deepEqual(session.handle(received(keepalive(R, I, 999n, BigInt(T0 + 4000))), T0 + 4012), []);
  assert.equal(session.rttMs, 12);
});

Deno.test("initiator: a KEEPALIVE with the wrong nonces is dropped and does not count as hearing the peer", () => {
  const session = initiatorIn("established");
  for (const [sender, receiver] of [[STRANGER, I], [R, STRANGER], [I, R], [R, 0n]]) {
    assertDrop(session.handle(received(keepalive(sender, receiver, 1n)), T0 + 5000), /KEEPALIVE/);
    assert.equal(session.state, "established");
  }
  assert.equal(session.rttMs, undefined);
  const actions = session.handle({ type: "timer" }, T0 + DEAD_PEER_MS);
  assert.deepEqual(actions[1], { type: "dead-peer", silentMs: DEAD_PEER_MS });
});

Deno.test("initiator: a KEEPALIVE while idle, requesting or refused is dropped", () => {
  for (const state of ["idle", "requesting", "refused"] as const) {
    const session = state === "idle" ? initiator() : initiatorIn(state);
    assertDrop(session.handle(received(keepalive(R, I, 1n)), T0), new RegExp(`KEEPALIVE in ${state}`));
    assert.equal(session.state, state);
  }
});

for (const state of ["requesting", "refused", "established"] as const) {
  Deno.test(`initiator: ${state} + moved stops forwarding and asks again from the first retry`, () => {
    const session = initiatorIn(state);
    if (state === "requesting") session.handle({ type: "timer" }, T0); // backoff is now at 2000
    assert.deepEqual(session.handle({ type: "moved" }, T0 + 9), [
      { type: "forward", enabled: false },
      ...request(T0 + 9 + IREQ_FIRST_RETRY_MS),
    ]);
    assert.equal(session.state, "requesting");
    assert.deepEqual(session.handle({ type: "timer" }, T0 + 509), request(T0 + 509 + 1000));
  });
}

Deno.test("initiator: moved while idle is dropped", () => {
  const session = initiator();
  assertDrop(session.handle({ type: "moved" }, T0), /moved/);
  assert.equal(session.state, "idle");
});

// --- initiator drops --------------------------------------------------------------------------------

Deno.test("initiator: an IACK or IRDY for another initiator nonce is dropped", () => {
  const session = initiatorIn("requesting");
  assertDrop(session.handle(received(iack({ initiatorNonce: STRANGER })), T0), /another session/);
  assertDrop(
    session.handle(received(iack({ type: "IRDY", initiatorNonce: STRANGER })), T0),
    /another session/,
  );
  assert.equal(session.state, "requesting");
  const established = initiatorIn("established");
  assertDrop(established.handle(received(iack({ initiatorNonce: STRANGER })), T0));
  assert.equal(established.state, "established");
});

Deno.test("initiator: established + IACK from another responder session is dropped", () => {
  const session = initiatorIn("established");
  assertDrop(session.handle(received(iack({ responderNonce: STRANGER })), T0), /another responder/);
  assert.equal(session.state, "established");
  assert.equal(session.peerNonce, R);
});

Deno.test("initiator: an IACK while idle or refused is dropped", () => {
  const idle = initiator();
  assertDrop(idle.handle(received(iack()), T0), /idle/);
  assert.equal(idle.state, "idle");
  const refused = initiatorIn("refused");
  assertDrop(refused.handle(received(iack()), T0), /refused/);
  assert.equal(refused.state, "refused");
});

Deno.test("initiator: a NAK for another nonce, or outside requesting, is dropped", () => {
  const requesting = initiatorIn("requesting");
  assertDrop(requesting.handle(received(nak(0, "x", STRANGER)), T0), /another session/);
  assert.equal(requesting.state, "requesting");
  const established = initiatorIn("established");
  assertDrop(established.handle(received(nak(0, "x")), T0), /established/);
  assert.equal(established.state, "established");
  const refused = initiatorIn("refused");
  assertDrop(refused.handle(received(nak(0, "x")), T0));
  assert.equal(refused.state, "refused");
});

Deno.test("initiator: a CREQ with the wrong nonces, or outside established, is dropped", () => {
  const established = initiatorIn("established");
  for (const [sender, receiver] of [[STRANGER, I], [R, STRANGER], [I, R], [R, 0n]]) {
    assertDrop(established.handle(received(creq(sender, receiver)), T0), /CREQ/);
    assert.equal(established.state, "established");
  }
  const requesting = initiatorIn("requesting");
  assertDrop(requesting.handle(received(creq(0n, I)), T0), /CREQ/);
  assert.equal(requesting.state, "requesting");
});

Deno.test("initiator: a second start is dropped", () => {
  const session = initiatorIn("requesting");
  assertDrop(session.handle({ type: "start" }, T0), /start/);
  assert.equal(session.state, "requesting");
});

Deno.test("initiator: a timer while idle is dropped", () => {
  const idle = initiator();
  assertDrop(idle.handle({ type: "timer" }, T0), /timer in idle/);
  assert.equal(idle.state, "idle");
});

Deno.test("initiator: IREQ, ICON and NOP are not for an initiator and are dropped", () => {
  const session = initiatorIn("established");
  for (
    const message of [
      ireqMessage(),
      icon(),
      { type: "NOP", vid: VID },
    ] as ControlMessage[]
  ) {
    assertDrop(session.handle(received(message), T0), /not for an initiator/);
    assert.equal(session.state, "established");
  }
});

// --- initiator close --------------------------------------------------------------------------------

Deno.test("initiator: close while idle stops forwarding and the timer and sends nothing", () => {
  const session = initiator();
  assert.deepEqual(session.handle({ type: "close" }, T0), [
    { type: "forward", enabled: false },
    { type: "timer", at: undefined },
  ]);
  assert.equal(session.state, "closed");
});

Deno.test("initiator: close while requesting, before any answer, has no peer nonce for a CREQ", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle({ type: "close" }, T0), [
    { type: "forward", enabled: false },
    { type: "timer", at: undefined },
  ]);
  assert.equal(session.state, "closed");
});

Deno.test("initiator: close while refused stops forwarding and the timer", () => {
  const session = initiatorIn("refused");
  assert.deepEqual(session.handle({ type: "close" }, T0), [
    { type: "forward", enabled: false },
    { type: "timer", at: undefined },
  ]);
  assert.equal(session.state, "closed");
});

Deno.test("initiator: close while established sends a CREQ, stops forwarding and the timer", () => {
  const session = initiatorIn("established");
  assert.deepEqual(session.handle({ type: "close" }, T0), [
    { type: "send", message: { type: "CREQ", vid: VID, senderNonce: I, receiverNonce: R } },
    { type: "forward", enabled: false },
    { type: "timer", at: undefined },
  ]);
  assert.equal(session.state, "closed");
});

Deno.test("initiator: close while asking again after a CREQ names the last responder session", () => {
  const session = initiatorIn("established");
  session.handle(received(creq(R, I)), T0);
  assert.deepEqual(session.handle({ type: "close" }, T0)[0], {
    type: "send",
    message: { type: "CREQ", vid: VID, senderNonce: I, receiverNonce: R },
  });
  assert.equal(session.state, "closed");
});

Deno.test("initiator: every event after close is dropped", () => {
  for (const state of ["idle", "requesting", "refused", "established"] as const) {
    const session = state === "idle" ? initiator() : initiatorIn(state);
    session.handle({ type: "close" }, T0);
    for (
      const event of [
        { type: "start" },
        { type: "timer" },
        { type: "close" },
        { type: "moved" },
        received(iack()),
        received(nak(0, "x")),
        received(creq(R, I)),
        received(keepalive(R, I, 1n)),
      ] as const
    ) {
      assertDrop(session.handle(event, T0 + 1), /after close/);
      assert.equal(session.state, "closed", state);
    }
  }
});

// =================================================================================================
// Responder
// =================================================================================================

Deno.test("a new responder is idle with its own nonce", () => {
  const session = responder();
  assert.equal(session.state, "idle");
  assert.equal(session.role, "responder");
  assert.equal(session.nonce, R);
  assert.equal(session.peerNonce, 0n);
  assert.equal(session.mtu, 0);
});

Deno.test("responder: idle + IREQ creates the device, forwards, sends IACK, arms the keepalive, is acknowledged", () => {
  const session = responder();
  assert.deepEqual(session.handle(received(ireqMessage({ mtu: 1400 })), T0), [
    { type: "create-device", mtu: 1400, mode: "tap", plan: PLAN },
    { type: "forward", enabled: true },
    sendAck("IACK", 1400),
    { type: "timer", at: T0 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "acknowledged");
  assert.equal(session.peerNonce, I);
  assert.equal(session.mtu, 1400);
});

Deno.test("responder: idle + IREQ takes the initiator's mode and the smaller MTU", () => {
  const session = responder({ mode: "tap", mtu: 1280 });
  assert.deepEqual(session.handle(received(ireqMessage({ mode: "tun", mtu: 9000, plan: [] })), T0), [
    { type: "create-device", mtu: 1280, mode: "tun", plan: [] },
    { type: "forward", enabled: true },
    sendAck("IACK", 1280, I, "tun"),
    { type: "timer", at: T0 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.mode, "tun");
  assert.equal(session.mtu, 1280);
});

Deno.test("responder: idle + IREQ with an MTU below 576 sends NAK MTU_TOO_SMALL and is closed", () => {
  const session = responder();
  assert.deepEqual(session.handle(received(ireqMessage({ mtu: 575 })), T0), [
    sendNak(I, NakReason.MTU_TOO_SMALL, "MTU 575 is below 576"),
  ]);
  assert.equal(session.state, "closed");
  assert.equal(MIN_LINK_MTU, 576);
});

Deno.test("responder: idle + IREQ is refused when its own MTU is below 576", () => {
  const session = responder({ mtu: 500 });
  assert.deepEqual(session.handle(received(ireqMessage({ mtu: 1400 })), T0), [
    sendNak(I, NakReason.MTU_TOO_SMALL, "MTU 500 is below 576"),
  ]);
  assert.equal(session.state, "closed");
});

Deno.test("responder: idle + IREQ with an MTU of exactly 576 is accepted", () => {
  const session = responder();
  const actions = session.handle(received(ireqMessage({ mtu: 576 })), T0);
  assert.deepEqual(actions[0], { type: "create-device", mtu: 576, mode: "tap", plan: PLAN });
  assert.equal(session.state, "acknowledged");
});

Deno.test("responder: acknowledged + IREQ with the same initiator nonce resends the IACK", () => {
  const session = responderIn("acknowledged");
  assert.deepEqual(session.handle(received(ireqMessage()), T0 + 500), [sendAck("IACK", 1400)]);
  assert.equal(session.state, "acknowledged");
});

Deno.test("responder: acknowledged + ICON with both nonces is established", () => {
  const session = responderIn("acknowledged");
  assert.deepEqual(session.handle(received(icon()), T0), [{ type: "established", mtu: 1400 }]);
  assert.equal(session.state, "established");
});

Deno.test("responder: established + IREQ with the same initiator nonce answers IRDY", () => {
  const session = responderIn("established");
  assert.deepEqual(session.handle(received(ireqMessage()), T0), [sendAck("IRDY", 1400)]);
  assert.equal(session.state, "established");
});

for (const state of ["acknowledged", "established", "lost"] as const) {
  Deno.test(`responder: ${state} + IREQ with a new nonce and the same mode takes the new session`, () => {
    const session = responderIn(state);
    const fresh = I + 10n;
    assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mtu: 1300 })), T0), [
      { type: "set-mtu", mtu: 1300 },
      sendAck("IACK", 1300, fresh),
      { type: "timer", at: T0 + KEEPALIVE_INTERVAL_MS },
    ]);
    assert.equal(session.state, "acknowledged");
    assert.equal(session.peerNonce, fresh);
    assert.equal(session.mtu, 1300);
    assert.equal(session.nonce, R, "the responder keeps its own nonce");
    // The new session completes with its own ICON; one naming the old session is dropped.
    assertDrop(session.handle(received(icon()), T0));
    assert.deepEqual(session.handle(received(icon({ initiatorNonce: fresh })), T0), [
      { type: "established", mtu: 1300 },
    ]);
  });

  Deno.test(`responder: ${state} + IREQ with a new nonce and an unchanged MTU sends IACK and arms the keepalive`, () => {
    const session = responderIn(state);
    const fresh = I + 10n;
    assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mtu: 1400 })), T0 + 7), [
      sendAck("IACK", 1400, fresh),
      { type: "timer", at: T0 + 7 + KEEPALIVE_INTERVAL_MS },
    ]);
    assert.equal(session.state, "acknowledged");
    assert.equal(session.peerNonce, fresh);
  });

  Deno.test(`responder: ${state} + IREQ with a new nonce in another mode sends NAK MODE_MISMATCH`, () => {
    const session = responderIn(state);
    const fresh = I + 10n;
    assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mode: "tun" })), T0), [
      sendNak(fresh, NakReason.MODE_MISMATCH, "circuit is in tap mode"),
    ]);
    assert.equal(session.state, state);
    assert.equal(session.peerNonce, I);
    assert.equal(session.mode, "tap");
  });

  // Not in the transition table (its row for a new nonce and the same mode says IACK); the code NAKs.
  // Kept for acknowledged and established, where it predates the keepalive change; not asserted for lost.
  if (state !== "lost") {
    Deno.test(`responder: ${state} + IREQ with a new nonce and too small an MTU sends NAK MTU_TOO_SMALL`, () => {
      const session = responderIn(state);
      const fresh = I + 10n;
      assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mtu: 400 })), T0), [
        sendNak(fresh, NakReason.MTU_TOO_SMALL, "MTU 400 is below 576"),
      ]);
      assert.equal(session.state, state);
      assert.equal(session.peerNonce, I);
      assert.equal(session.mtu, 1400);
    });
  }

  Deno.test(`responder: ${state} + CREQ with both nonces stops forwarding, removes the device and closes`, () => {
    const session = responderIn(state);
    assert.deepEqual(session.handle(received(creq(I, R)), T0), [
      { type: "forward", enabled: false },
      { type: "remove-device" },
    ]);
    assert.equal(session.state, "closed");
  });

  Deno.test(`responder: ${state} + CREQ with the wrong nonces is dropped`, () => {
    const session = responderIn(state);
    for (const [sender, receiver] of [[STRANGER, R], [I, STRANGER], [R, I], [I, 0n]]) {
      assertDrop(session.handle(received(creq(sender, receiver)), T0), /CREQ/);
      assert.equal(session.state, state);
    }
  });
}

// --- responder keepalives, dead peer, lost ----------------------------------------------------------

Deno.test("responder: acknowledged + a periodic KEEPALIVE (our ICON's place) is answered and established", () => {
  const session = responderIn("acknowledged");
  assert.deepEqual(session.handle(received(keepalive(I, R, 4242n)), T0 + 20), [
    sendKeepalive(R, I, T0 + 20, 4242n),
    { type: "established", mtu: 1400 },
  ]);
  assert.equal(session.state, "established");
  // The ICON that arrives late is no longer needed.
  assertDrop(session.handle(received(icon()), T0 + 21), /ICON in established/);
});

Deno.test("responder: acknowledged + a KEEPALIVE echo sets the RTT and is established", () => {
  const session = responderIn("acknowledged");
  assert.deepEqual(session.handle(received(keepalive(I, R, 4242n, BigInt(T0 - 100))), T0 + 20), [
    { type: "established", mtu: 1400 },
  ]);
  assert.equal(session.rttMs, 120);
  assert.equal(session.state, "established");
});

Deno.test("responder: established + a periodic KEEPALIVE is answered with one echoing its sentAt", () => {
  const session = responderIn("established");
  assert.deepEqual(session.handle(received(keepalive(I, R, 31n)), T0 + 5), [
    sendKeepalive(R, I, T0 + 5, 31n),
  ]);
  assert.equal(session.state, "established");
  assert.equal(session.rttMs, undefined);
});

Deno.test("responder: established + a KEEPALIVE echoing our sentAt sets the RTT and takes no action", () => {
  const session = responderIn("established");
  const sentAt = T0 + KEEPALIVE_INTERVAL_MS;
  session.handle({ type: "timer" }, sentAt);
  assert.deepEqual(session.handle(received(keepalive(I, R, 31n, BigInt(sentAt))), sentAt + 8), []);
  assert.equal(session.rttMs, 8);
  assert.equal(session.state, "established");
});

Deno.test("responder: a KEEPALIVE with the wrong nonces, or while idle, is dropped", () => {
  for (const state of ["acknowledged", "established", "lost"] as const) {
    const session = responderIn(state);
    for (const [sender, receiver] of [[STRANGER, R], [I, STRANGER], [R, I], [I, 0n]]) {
      assertDrop(session.handle(received(keepalive(sender, receiver, 1n)), T0 + 1), /KEEPALIVE/);
      assert.equal(session.state, state);
    }
  }
  const idle = responder();
  assertDrop(idle.handle(received(keepalive(I, R, 1n)), T0), /KEEPALIVE/);
  assert.equal(idle.state, "idle");
});

Deno.test("responder: established + timer with the peer heard sends a periodic KEEPALIVE and rearms", () => {
  const session = responderIn("established");
  const at = T0 + KEEPALIVE_INTERVAL_MS;
  assert.deepEqual(session.handle({ type: "timer" }, at), [
    sendKeepalive(R, I, at),
    { type: "timer", at: at + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.deepEqual(session.handle({ type: "timer" }, T0 + DEAD_PEER_MS - 1), [
    sendKeepalive(R, I, T0 + DEAD_PEER_MS - 1),
    { type: "timer", at: T0 + DEAD_PEER_MS - 1 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "established");
});

Deno.test("responder: acknowledged + timer with the peer heard only rearms, sending no KEEPALIVE", () => {
  const session = responderIn("acknowledged");
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 2000), [{ type: "timer", at: T0 + 4000 }]);
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 4000), [{ type: "timer", at: T0 + 6000 }]);
  assert.equal(session.state, "acknowledged");
});

for (const state of ["acknowledged", "established"] as const) {
  Deno.test(`responder: ${state} + timer after 6000 ms of silence reports the dead peer and lingers, lost`, () => {
    const session = responderIn(state);
    session.handle({ type: "timer" }, T0 + 2000);
    session.handle({ type: "timer" }, T0 + 4000);
    const at = T0 + DEAD_PEER_MS;
    assert.deepEqual(session.handle({ type: "timer" }, at), [
      { type: "dead-peer", silentMs: DEAD_PEER_MS },
      { type: "timer", at: at + RESPONDER_LINGER_MS },
    ]);
    assert.equal(session.state, "lost");
    assert.equal(session.peerNonce, I, "a lost responder still knows its initiator");
  });
}

Deno.test("responder: the silence is measured from the last IREQ, ICON or KEEPALIVE heard", () => {
  const byKeepalive = responderIn("established");
  byKeepalive.handle(received(keepalive(I, R, 1n)), T0 + 3000);
  assert.equal(byKeepalive.handle({ type: "timer" }, T0 + 6000)[0].type, "send");
  assert.deepEqual(byKeepalive.handle({ type: "timer" }, T0 + 9100)[0], {
    type: "dead-peer",
    silentMs: 6100,
  });

  const byIcon = responder();
  byIcon.handle(received(ireqMessage()), T0);
  byIcon.handle(received(icon()), T0 + 1000);
  assert.equal(byIcon.handle({ type: "timer" }, T0 + 6000)[0].type, "send");
  assert.equal(byIcon.state, "established");

  const byIreq = responderIn("acknowledged");
  byIreq.handle(received(ireqMessage()), T0 + 1000);
  assert.deepEqual(byIreq.handle({ type: "timer" }, T0 + 6000), [{ type: "timer", at: T0 + 8000 }]);
  assert.equal(byIreq.state, "acknowledged");
});

Deno.test("responder: lost + IREQ with the same initiator nonce resends IACK, arms the keepalive, acknowledged", () => {
  const session = responderIn("lost");
  assert.deepEqual(session.handle(received(ireqMessage()), T0 + 300), [
    sendAck("IACK", 1400),
    { type: "timer", at: T0 + 300 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "acknowledged");
  assert.equal(session.peerNonce, I);
  // The IREQ counts as hearing the peer; the initiator's ICON then completes the circuit again.
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 2300), [{ type: "timer", at: T0 + 4300 }]);
  assert.deepEqual(session.handle(received(icon()), T0 + 2400), [{ type: "established", mtu: 1400 }]);
  assert.equal(session.state, "established");
});

Deno.test("responder: lost + a periodic KEEPALIVE is answered, established again, keepalive armed", () => {
  const session = responderIn("lost");
  assert.deepEqual(session.handle(received(keepalive(I, R, 555n)), T0 + 700), [
    sendKeepalive(R, I, T0 + 700, 555n),
    { type: "established", mtu: 1400 },
    { type: "timer", at: T0 + 700 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.state, "established");
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 2700), [
    sendKeepalive(R, I, T0 + 2700),
    { type: "timer", at: T0 + 4700 },
  ]);
});

Deno.test("responder: lost + a KEEPALIVE echo is established again with the keepalive armed", () => {
  const session = responderIn("lost");
  assert.deepEqual(session.handle(received(keepalive(I, R, 555n, BigInt(T0 + 650))), T0 + 700), [
    { type: "established", mtu: 1400 },
    { type: "timer", at: T0 + 700 + KEEPALIVE_INTERVAL_MS },
  ]);
  assert.equal(session.rttMs, 50);
  assert.equal(session.state, "established");
});

Deno.test("responder: lost + timer (lingered) stops forwarding, removes the device and closes", () => {
  const session = responderIn("lost");
  assert.deepEqual(session.handle({ type: "timer" }, T0 + RESPONDER_LINGER_MS), [
    { type: "forward", enabled: false },
    { type: "remove-device" },
  ]);
  assert.equal(session.state, "closed");
});

Deno.test("responder: lost + IREQ with a new nonce in another mode sends NAK MODE_MISMATCH and stays lost", () => {
  const session = responderIn("lost");
  const fresh = I + 10n;
  assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mode: "tun" })), T0 + 1), [
    sendNak(fresh, NakReason.MODE_MISMATCH, "circuit is in tap mode"),
  ]);
  assert.equal(session.state, "lost");
  assert.equal(session.peerNonce, I);
});

Deno.test("responder: lost + ICON is dropped", () => {
  const session = responderIn("lost");
  assertDrop(session.handle(received(icon()), T0 + 1), /ICON in lost/);
  assert.equal(session.state, "lost");
});

// --- responder drops --------------------------------------------------------------------------------

Deno.test("responder: an ICON with either nonce wrong is dropped", () => {
  const session = responderIn("acknowledged");
  assertDrop(session.handle(received(icon({ initiatorNonce: STRANGER })), T0), /another session/);
  assertDrop(session.handle(received(icon({ responderNonce: STRANGER })), T0), /another session/);
  assert.equal(session.state, "acknowledged");
});

Deno.test("responder: a second ICON once established is dropped", () => {
  const session = responderIn("established");
  assertDrop(session.handle(received(icon()), T0), /ICON in established/);
  assert.equal(session.state, "established");
});

Deno.test("responder: ICON and CREQ while idle are dropped", () => {
  const session = responder();
  assertDrop(session.handle(received(icon()), T0));
  assertDrop(session.handle(received(creq(I, R)), T0), /CREQ/);
  assertDrop(session.handle(received(creq(0n, 0n)), T0), /CREQ/);
  assert.equal(session.state, "idle");
});

Deno.test("responder: start and moved events are dropped in every state", () => {
  for (const state of ["idle", "acknowledged", "established", "lost"] as const) {
    const session = state === "idle" ? responder() : responderIn(state);
    assertDrop(session.handle({ type: "start" }, T0 + 1), /start for a responder/);
    assertDrop(session.handle({ type: "moved" }, T0 + 1), /moved for a responder/);
    assert.equal(session.state, state);
  }
});

Deno.test("responder: a timer while idle is dropped", () => {
  const session = responder();
  assertDrop(session.handle({ type: "timer" }, T0), /timer in idle/);
  assert.equal(session.state, "idle");
});

Deno.test("responder: IACK, IRDY, NAK and NOP are not for a responder and are dropped", () => {
  const session = responderIn("established");
  for (
    const message of [
      iack(),
      iack({ type: "IRDY" }),
      nak(0, "x"),
      { type: "NOP", vid: VID },
    ] as ControlMessage[]
  ) {
    assertDrop(session.handle(received(message), T0), /not for a responder/);
    assert.equal(session.state, "established");
  }
});

// --- responder close --------------------------------------------------------------------------------

Deno.test("responder: close while idle stops forwarding and the timer, and has no device to remove", () => {
  const session = responder();
  assert.deepEqual(session.handle({ type: "close" }, T0), [
    { type: "forward", enabled: false },
    { type: "timer", at: undefined },
  ]);
  assert.equal(session.state, "closed");
});

for (const state of ["acknowledged", "established", "lost"] as const) {
  Deno.test(`responder: close while ${state} sends a CREQ, stops forwarding and removes the device`, () => {
    const session = responderIn(state);
    assert.deepEqual(session.handle({ type: "close" }, T0), [
      { type: "send", message: { type: "CREQ", vid: VID, senderNonce: R, receiverNonce: I } },
      { type: "forward", enabled: false },
      { type: "timer", at: undefined },
      { type: "remove-device" },
    ]);
    assert.equal(session.state, "closed");
  });
}

Deno.test("responder: every event after close is dropped", () => {
  const closedBy: Array<[string, () => Session]> = [
    ["close while idle", () => {
      const s = responder();
      s.handle({ type: "close" }, T0);
      return s;
    }],
    ["close while established", () => {
      const s = responderIn("established");
      s.handle({ type: "close" }, T0);
      return s;
    }],
    ["a CREQ", () => {
      const s = responderIn("established");
      s.handle(received(creq(I, R)), T0);
      return s;
    }],
    ["an IREQ with too small an MTU", () => {
      const s = responder();
      s.handle(received(ireqMessage({ mtu: 100 })), T0);
      return s;
    }],
    ["lingering out while lost", () => {
      const s = responderIn("lost");
      s.handle({ type: "timer" }, T0 + RESPONDER_LINGER_MS);
      return s;
    }],
  ];
  for (const [how, make] of closedBy) {
    const session = make();
    assert.equal(session.state, "closed" as SessionState, how);
    for (
      const event of [
        { type: "close" },
        { type: "timer" },
        received(ireqMessage()),
        received(ireqMessage({ initiatorNonce: STRANGER })),
        received(icon()),
        received(creq(I, R)),
        received(keepalive(I, R, 1n)),
      ] as const
    ) {
      assertDrop(session.handle(event, T0 + 1), /after close/);
      assert.equal(session.state, "closed", how);
    }
  }
});

Deno.test("an initiator and a responder wired together agree on the smaller MTU and both are established", () => {
  const a = initiator({ mtu: 1400 });
  const b = responder({ mtu: 1380 });
  const sent = (actions: SessionAction[]) =>
    actions.filter((x): x is Extract<SessionAction, { type: "send" }> => x.type === "send").map((x) =>
      x.message
    );
  const [ireq] = sent(a.handle({ type: "start" }, T0));
  const [ack] = sent(b.handle(received(ireq), T0));
  const [con] = sent(a.handle(received(ack), T0));
  assert.deepEqual(b.handle(received(con), T0), [{ type: "established", mtu: 1380 }]);
  assert.equal(a.state, "established");
  assert.equal(b.state, "established");
  assert.equal(a.mtu, 1380);
  assert.equal(b.mtu, 1380);
  assert.equal(a.peerNonce, b.nonce);
  assert.equal(b.peerNonce, a.nonce);
});

Deno.test("end to end: keepalives flow for 20 s, then the initiator finds the silent responder dead in 6-8 s", () => {
  const STEP = 50;
  const LATENCY = 120;
  const a = initiator({ mtu: 1400 });
  const b = responder({ mtu: 1380 });
  type End = {
    name: "initiator" | "responder";
    session: Session;
    timerAt: number | undefined;
    deadPeers: Array<{ at: number; silentMs: number }>;
  };
  const ends: Record<"initiator" | "responder", End> = {
    initiator: { name: "initiator", session: a, timerAt: undefined, deadPeers: [] },
    responder: { name: "responder", session: b, timerAt: undefined, deadPeers: [] },
  };
  const peerOf = (end: End) => end.name === "initiator" ? ends.responder : ends.initiator;
  /** Datagrams in flight, encoded on the wire as the daemon would send them. */
  let inFlight: Array<{ to: End; datagram: Uint8Array; deliverAt: number }> = [];
  let now = T0;
  let deliverToInitiator = true;
  let lastKeepaliveToInitiator = -Infinity;
  const periodic = { initiator: 0, responder: 0 };
  const answers = { initiator: 0, responder: 0 };

  const apply = (end: End, actions: SessionAction[]) => {
    for (const action of actions) {
      if (action.type === "send") {
        inFlight.push({ to: peerOf(end), datagram: encode(action.message), deliverAt: now + LATENCY });
        if (action.message.type === "KEEPALIVE") {
          if (action.message.echo === 0n) periodic[end.name]++;
          else answers[end.name]++;
        }
      } else if (action.type === "timer") {
        end.timerAt = action.at;
      } else if (action.type === "dead-peer") {
        end.deadPeers.push({ at: now, silentMs: action.silentMs });
      } else if (action.type === "drop") {
        assert.fail(`${end.name} dropped at ${now - T0}: ${action.reason}`);
      }
    }
  };
  const step = () => {
    now += STEP;
    const due = inFlight.filter((d) => d.deliverAt <= now);
    inFlight = inFlight.filter((d) => d.deliverAt > now);
    for (const { to, datagram } of due) {
      if (to === ends.initiator && !deliverToInitiator) continue;
      const decoded = decode(datagram);
      if (!decoded.ok) assert.fail(`undecodable datagram: ${decoded.reason} ${decoded.detail}`);
      if (to === ends.initiator && decoded.message.type === "KEEPALIVE") lastKeepaliveToInitiator = now;
      apply(to, to.session.handle(received(decoded.message), now));
    }
    for (const end of [ends.initiator, ends.responder]) {
      if (end.timerAt !== undefined && end.timerAt <= now) {
        end.timerAt = undefined;
        apply(end, end.session.handle({ type: "timer" }, now));
      }
    }
  };

  apply(ends.initiator, a.handle({ type: "start" }, now));
  const start = now;
  while (now < start + 20_000) step();

  assert.equal(a.state, "established");
  assert.equal(b.state, "established");
  assert.equal(ends.initiator.deadPeers.length, 0, "no dead-peer while keepalives flow");
  assert.equal(ends.responder.deadPeers.length, 0, "no dead-peer while keepalives flow");
  assert.equal(a.mtu, 1380);
  // About one periodic KEEPALIVE each way every 2 s, each answered by the other end.
  assert.ok(periodic.initiator >= 9, `initiator sent ${periodic.initiator} periodic keepalives`);
  assert.ok(periodic.responder >= 9, `responder sent ${periodic.responder} periodic keepalives`);
  assert.ok(answers.responder >= 9 && answers.initiator >= 9, JSON.stringify(answers));
  // Each round trip is two deliveries, each on the first step at least LATENCY after sending.
  const oneWay = Math.ceil(LATENCY / STEP) * STEP;
  assert.equal(a.rttMs, 2 * oneWay);
  assert.equal(b.rttMs, 2 * oneWay);

  // Now nothing from the responder reaches the initiator any more.
  deliverToInitiator = false;
  const cutAt = now;
  assert.ok(lastKeepaliveToInitiator > cutAt - KEEPALIVE_INTERVAL_MS);
  while (ends.initiator.deadPeers.length === 0 && now < cutAt + 20_000) step();

  assert.equal(ends.initiator.deadPeers.length, 1);
  const [dead] = ends.initiator.deadPeers;
  const sinceLast = dead.at - lastKeepaliveToInitiator;
  assert.ok(
    sinceLast >= DEAD_PEER_MS && sinceLast <= DEAD_PEER_MS + KEEPALIVE_INTERVAL_MS,
    `dead-peer ${sinceLast} ms after the last delivered keepalive`,
  );
  assert.equal(dead.silentMs, sinceLast);
  assert.equal(a.state, "requesting");
  // The responder still hears the initiator's keepalives, so it never lost its peer.
  assert.equal(ends.responder.deadPeers.length, 0);
  assert.equal(b.state, "established");
});
