import assert from "node:assert/strict";
import { parseCidr } from "../src/ip.ts";
import {
  MIN_LINK_MTU,
  Session,
  type SessionAction,
  type SessionConfig,
  type SessionState,
} from "../src/session.ts";
import { IREQ_FIRST_RETRY_MS, IREQ_MAX_RETRY_MS, NAK_RETRY_MS } from "../src/timing.ts";
import type { ControlMessage, Iack, Icon, Ireq, Nonce } from "../src/wire.ts";
import { NakReason } from "../src/wire.ts";

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

/** A session driven to `state`; the time after the last step is T0. */
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

function responderIn(state: "acknowledged" | "established", config: Partial<SessionConfig> = {}): Session {
  const session = responder(config);
  session.handle(received(ireqMessage()), T0);
  if (state === "established") session.handle(received(icon()), T0);
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

Deno.test("initiator: requesting + timer resends the IREQ with backoff 500, 1000, 2000, 4000, 8000, 8000", () => {
  const session = initiator();
  const intervals = [500, 1000, 2000, 4000, 8000, 8000, 8000];
  let now = T0;
  assert.deepEqual(session.handle({ type: "start" }, now), request(now + intervals[0]));
  for (let i = 1; i < intervals.length; i++) {
    now += intervals[i - 1];
    assert.deepEqual(session.handle({ type: "timer" }, now), request(now + intervals[i]), `retry ${i}`);
    assert.equal(session.state, "requesting");
  }
  assert.equal(IREQ_MAX_RETRY_MS, 8000);
});

Deno.test("initiator: requesting + timer sends exactly an IREQ and a timer at now + backoff", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 500), request(T0 + 500 + 1000));
  assert.deepEqual(session.handle({ type: "timer" }, T0 + 1500), request(T0 + 1500 + 2000));
});

Deno.test("initiator: requesting + IACK sets the agreed MTU, sends ICON, forwards and is established", () => {
  const session = initiatorIn("requesting");
  assert.deepEqual(session.handle(received(iack({ mtu: 1300 })), T0 + 10), [
    { type: "set-mtu", mtu: 1300 },
    sendIcon(),
    { type: "forward", enabled: true },
    { type: "established", mtu: 1300 },
    { type: "timer", at: undefined },
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
    { type: "timer", at: undefined },
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
  assert.deepEqual(session.handle({ type: "timer" }, retryAt), request(retryAt + 500));
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

Deno.test("initiator: a timer while idle or established is dropped", () => {
  const idle = initiator();
  assertDrop(idle.handle({ type: "timer" }, T0), /timer in idle/);
  assert.equal(idle.state, "idle");
  const established = initiatorIn("established");
  assertDrop(established.handle({ type: "timer" }, T0), /timer in established/);
  assert.equal(established.state, "established");
});

Deno.test("initiator: IREQ, ICON, KEEPALIVE and NOP are not for an initiator and are dropped", () => {
  const session = initiatorIn("established");
  for (
    const message of [
      ireqMessage(),
      icon(),
      { type: "KEEPALIVE", vid: VID, senderNonce: R, receiverNonce: I, sentAt: 1n, echo: 0n },
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
        received(iack()),
        received(nak(0, "x")),
        received(creq(R, I)),
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

Deno.test("responder: idle + IREQ creates the device, forwards, sends IACK and is acknowledged", () => {
  const session = responder();
  assert.deepEqual(session.handle(received(ireqMessage({ mtu: 1400 })), T0), [
    { type: "create-device", mtu: 1400, mode: "tap", plan: PLAN },
    { type: "forward", enabled: true },
    sendAck("IACK", 1400),
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

for (const state of ["acknowledged", "established"] as const) {
  Deno.test(`responder: ${state} + IREQ with a new nonce and the same mode takes the new session`, () => {
    const session = responderIn(state);
    const fresh = I + 10n;
    assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mtu: 1300 })), T0), [
      { type: "set-mtu", mtu: 1300 },
      sendAck("IACK", 1300, fresh),
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

  Deno.test(`responder: ${state} + IREQ with a new nonce and an unchanged MTU only resends IACK`, () => {
    const session = responderIn(state);
    const fresh = I + 10n;
    assert.deepEqual(session.handle(received(ireqMessage({ initiatorNonce: fresh, mtu: 1400 })), T0), [
      sendAck("IACK", 1400, fresh),
    ]);
    assert.equal(session.state, "acknowledged");
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

Deno.test("responder: start and timer events are dropped", () => {
  const session = responderIn("acknowledged");
  assertDrop(session.handle({ type: "start" }, T0), /start for a responder/);
  assertDrop(session.handle({ type: "timer" }, T0), /timer for a responder/);
  assert.equal(session.state, "acknowledged");
});

Deno.test("responder: IACK, IRDY, NAK, KEEPALIVE and NOP are not for a responder and are dropped", () => {
  const session = responderIn("established");
  for (
    const message of [
      iack(),
      iack({ type: "IRDY" }),
      nak(0, "x"),
      { type: "KEEPALIVE", vid: VID, senderNonce: I, receiverNonce: R, sentAt: 1n, echo: 0n },
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

for (const state of ["acknowledged", "established"] as const) {
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
