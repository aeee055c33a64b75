/**
 * Remote control over loopback TCP (127.0.0.1 only): RemoteControlServer with a handler that records what
 * it ran, sendRemoteControl, and raw connections that replay, alter, flood or send garbage.
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { configureSync, type LogRecord, resetSync } from "@logtape/logtape";
import { RemoteControlServer } from "../../src/control/remote_server.ts";
import { sendRemoteControl } from "../../src/control/remote_client.ts";
import {
  ANSWER_BYTES,
  connectChannel,
  HELLO_BYTES,
  KEY_REFUSED,
  keyIdOf,
  MAX_RECORD_BYTES,
} from "../../src/control/secure_channel.ts";
import type { ControlAccess } from "../../src/control/protocol.ts";
import { MAX_COMMAND_LENGTH } from "../../src/control/protocol.ts";
import { RuntimeFailure } from "../../src/errors.ts";
import { closeQuietly, readToEnd, Tap, writeAll } from "./conn_support.ts";

const HOST = "127.0.0.1";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ADMIN = new Uint8Array(randomBytes(32));
const READER = new Uint8Array(randomBytes(32));
const STRANGER = new Uint8Array(randomBytes(32));
const KEYS = [{ key: ADMIN, access: "admin" as const }, { key: READER, access: "read" as const }];

/** A handler that records each line and its access; "LINES? n" answers with n lines. */
function recordingHandler() {
  const calls: { line: string; access: ControlAccess }[] = [];
  const handler = (line: string, access: ControlAccess) => {
    calls.push({ line, access });
    const lines = /^LINES\? (\d+)$/.exec(line);
    if (lines) {
      const n = Number(lines[1]);
      return Promise.resolve(
        [`OK ${n} lines`, ...Array.from({ length: n }, (_, i) => `line ${i}`)].join("\n"),
      );
    }
    return Promise.resolve(`OK ${access} ${line}`);
  };
  return { calls, handler };
}

/** The log records of the "vela" category while the returned object lives. */
function captureLogs(): { lines: () => string[] } & Disposable {
  const records: LogRecord[] = [];
  configureSync({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      { category: ["vela"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  return {
    lines: () => records.map((r) => `${r.level} ${r.message.map(String).join("")}`),
    [Symbol.dispose]: () => resetSync(),
  };
}

async function rejects(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof RuntimeFailure, String(error));
    assert.match(error.message, pattern);
    return true;
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("listen() answers a client that proves the admin key, a multi-line reply whole", async () => {
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  const address = { hostname: HOST, port: server.port };
  assert.equal(await sendRemoteControl(address, ADMIN, "VERSION?"), "OK admin VERSION?");
  const reply = await sendRemoteControl(address, ADMIN, "LINES? 3");
  assert.equal(reply, "OK 3 lines\nline 0\nline 1\nline 2");
  // A reply over several records (more than 64 KiB) comes whole too.
  const long = await sendRemoteControl(address, ADMIN, "LINES? 20000");
  assert.equal(long.split("\n").length, 20001);
  assert.deepEqual(calls.map((c) => c.access), ["admin", "admin", "admin"]);
});

Deno.test("listen() hands the handler the access of the read key", async () => {
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  assert.equal(
    await sendRemoteControl({ hostname: HOST, port: server.port }, READER, "STATUS?"),
    "OK read STATUS?",
  );
  assert.deepEqual(calls, [{ line: "STATUS?", access: "read" }]);
});

Deno.test("listen() serves several commands on one connection", async () => {
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  const conn = await Deno.connect({ hostname: HOST, port: server.port });
  using channel = await connectChannel(conn, ADMIN);
  await channel.write(encoder.encode("ONE\nTWO\n"));
  let text = "";
  while (text.split("\n").length < 3) text += decoder.decode((await channel.read())!);
  assert.equal(text, "OK admin ONE\nOK admin TWO\n");
  assert.equal(calls.length, 2);
});

Deno.test("listen() refuses a client whose key it does not hold", async () => {
  using logs = captureLogs();
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  await rejects(
    sendRemoteControl({ hostname: HOST, port: server.port }, STRANGER, "CLOSE 198.18.0.2 5"),
    new RegExp(`^The daemon on 127\\.0\\.0\\.1:${server.port} refused the key$`),
  );
  assert.equal(calls.length, 0);
  assert.equal(server.refusedHandshakes, 1);
  const refusal = logs.lines().filter((l) => l.includes("refused"));
  assert.equal(refusal.length, 1, logs.lines().join("\n"));
  assert.match(refusal[0], /^warning Remote control from 127\.0\.0\.1:\d+ refused: .*does not hold/);
  assert.ok(refusal[0].includes(keyIdOf(STRANGER)));
});

Deno.test("listen() does not run a command replayed from a recorded session", async () => {
  using logs = captureLogs();
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  const first = await Deno.connect({ hostname: HOST, port: server.port });
  const tap = new Tap(first);
  const channel = await connectChannel(tap, ADMIN);
  await channel.write(encoder.encode("CLOSE 198.18.0.2 5\n"));
  assert.equal(decoder.decode((await channel.read())!), "OK admin CLOSE 198.18.0.2 5\n");
  channel.close();
  assert.equal(calls.length, 1);

  const replay = await Deno.connect({ hostname: HOST, port: server.port });
  await writeAll(replay, new Uint8Array(tap.sent));
  const answer = await readToEnd(replay);
  closeQuietly(replay);
  assert.equal(decoder.decode(answer.subarray(ANSWER_BYTES)), `NOK ${KEY_REFUSED}\n`);
  assert.equal(calls.length, 1, "the replayed command did not run");
  assert.ok(
    logs.lines().some((l) => /refused: failed to prove it holds the key/.test(l)),
    logs.lines().join("\n"),
  );
});

Deno.test("listen() ends a connection whose record has a flipped bit, without running its command", async () => {
  using logs = captureLogs();
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  const target = HELLO_BYTES + 20 + 4 + 3; // a byte of the command record's payload
  const conn = await Deno.connect({ hostname: HOST, port: server.port });
  const tap = new Tap(conn, (bytes, offset) => {
    if (offset <= target && target < offset + bytes.length) bytes[target - offset] ^= 0x01;
  });
  using channel = await connectChannel(tap, ADMIN);
  await channel.write(encoder.encode("CLOSE 198.18.0.2 5\n"));
  assert.equal(await channel.read(), null, "the server hangs up");
  assert.equal(calls.length, 0);
  assert.equal(server.brokenRecords, 1);
  assert.ok(logs.lines().some((l) => /did not verify.*disconnected/.test(l)), logs.lines().join("\n"));
});

Deno.test("listen() ends a connection that sends a record over the size limit", async () => {
  using _logs = captureLogs();
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  const conn = await Deno.connect({ hostname: HOST, port: server.port });
  using channel = await connectChannel(conn, ADMIN);
  const huge = new Uint8Array(4 + 1000);
  new DataView(huge.buffer).setUint32(0, MAX_RECORD_BYTES + 1);
  await writeAll(conn, huge);
  assert.equal(await channel.read(), null);
  assert.equal(calls.length, 0);
  assert.equal(server.brokenRecords, 1);
});

Deno.test("listen() survives garbage, truncated and stalled hellos, and still serves", async () => {
  using logs = captureLogs();
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler, {
    handshakeMs: 200,
  });
  const garbage = [
    encoder.encode("STATUS?\n"),
    encoder.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    new Uint8Array(randomBytes(3000)),
    new Uint8Array([0x56, 0x52, 0x43, 0x01, 1, 2, 3]), // half a hello, then hang up
    new Uint8Array(0),
  ];
  for (const bytes of garbage) {
    const conn = await Deno.connect({ hostname: HOST, port: server.port });
    await writeAll(conn, bytes);
    await conn.closeWrite();
    const answer = decoder.decode(await readToEnd(conn));
    closeQuietly(conn);
    assert.ok(answer === "" || answer.startsWith("NOK "), answer);
  }
  // A hello cut short that then says nothing: cut off at the handshake deadline.
  const stalled = await Deno.connect({ hostname: HOST, port: server.port });
  await writeAll(stalled, new Uint8Array([0x56, 0x52, 0x43, 0x01]));
  const started = performance.now();
  assert.equal((await readToEnd(stalled)).length, 0);
  closeQuietly(stalled);
  assert.ok(performance.now() - started < 2000);
  assert.ok(logs.lines().some((l) => /no handshake within 200 ms/.test(l)), logs.lines().join("\n"));
  assert.equal(
    await sendRemoteControl({ hostname: HOST, port: server.port }, ADMIN, "VERSION?"),
    "OK admin VERSION?",
  );
  assert.equal(calls.length, 1);
});

Deno.test("listen() refuses connections over the rate from one address", async () => {
  using logs = captureLogs();
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler, {
    ratePerSecond: 0.001,
    burst: 2,
  });
  const address = { hostname: HOST, port: server.port };
  await sendRemoteControl(address, ADMIN, "ONE");
  await sendRemoteControl(address, ADMIN, "TWO");
  await rejects(sendRemoteControl(address, ADMIN, "THREE"), /refused remote control: too many connections/);
  assert.equal(server.rateLimited, 1);
  assert.deepEqual(calls.map((c) => c.line), ["ONE", "TWO"]);
  assert.ok(logs.lines().some((l) => /connections a second from 127\.0\.0\.1/.test(l)));
});

Deno.test("listen() refuses clients over its caps, and serves again once they leave", async () => {
  using _logs = captureLogs();
  const { handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler, {
    maxClients: 2,
    maxClientsPerAddress: 2,
    ratePerSecond: 1000,
    burst: 1000,
  });
  const address = { hostname: HOST, port: server.port };
  const idle = [
    await Deno.connect({ hostname: HOST, port: server.port }),
    await Deno.connect({ hostname: HOST, port: server.port }),
  ];
  await sleep(50);
  await rejects(
    sendRemoteControl(address, ADMIN, "ONE"),
    /refused remote control: too many remote control clients/,
  );
  assert.equal(server.refusedClients, 1);
  for (const conn of idle) closeQuietly(conn);
  // The server frees their places as it sees them hang up.
  let reply: string | undefined;
  for (let tries = 0; reply === undefined && tries < 40; tries++) {
    reply = await sendRemoteControl(address, ADMIN, "TWO").catch(() => sleep(50).then(() => undefined));
  }
  assert.equal(reply, "OK admin TWO");
});

Deno.test("listen() cuts off a proven client that sends no command within commandMs", async () => {
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler, {
    commandMs: 150,
  });
  const conn = await Deno.connect({ hostname: HOST, port: server.port });
  using channel = await connectChannel(conn, ADMIN);
  await channel.write(encoder.encode("STATUS")); // no newline, ever
  const started = performance.now();
  assert.equal(await channel.read(), null);
  assert.ok(performance.now() - started < 2000);
  assert.equal(calls.length, 0);
});

Deno.test("listen() refuses a command line longer than MAX_COMMAND_LENGTH", async () => {
  const { calls, handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  const reply = await sendRemoteControl(
    { hostname: HOST, port: server.port },
    ADMIN,
    "X".repeat(MAX_COMMAND_LENGTH + 1),
  );
  assert.match(reply, /^NOK command longer than/);
  assert.equal(calls.length, 0);
});

Deno.test("close() is safe twice and disconnects clients, even one whose command still runs", async () => {
  let started!: () => void;
  const running = new Promise<void>((resolve) => started = resolve);
  const server = await RemoteControlServer.listen(
    { hostname: HOST, port: 0 },
    KEYS,
    () => {
      started();
      return new Promise<string>(() => {});
    },
  );
  const conn = await Deno.connect({ hostname: HOST, port: server.port });
  using channel = await connectChannel(conn, ADMIN);
  await channel.write(encoder.encode("STATUS?\n"));
  await running;
  await server.close();
  await server.close();
  assert.equal(await channel.read(), null);
  await rejects(
    sendRemoteControl({ hostname: HOST, port: server.port }, ADMIN, "VERSION?"),
    /^No vela daemon listens for remote control on 127\.0\.0\.1:\d+/,
  );
});

Deno.test("listen() throws RuntimeFailure when the port is in use, or without a usable key", async () => {
  const { handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler);
  await rejects(
    RemoteControlServer.listen({ hostname: HOST, port: server.port }, KEYS, handler),
    new RegExp(
      `^Cannot listen for remote control on 127\\.0\\.0\\.1:${server.port}: port ${server.port} is in use`,
    ),
  );
  await rejects(RemoteControlServer.listen({ hostname: HOST, port: 0 }, [], handler), /needs a key/);
  await rejects(
    RemoteControlServer.listen(
      { hostname: HOST, port: 0 },
      [...KEYS, { key: ADMIN, access: "read" }],
      handler,
    ),
    /given twice/,
  );
  await rejects(
    RemoteControlServer.listen(
      { hostname: HOST, port: 0 },
      [{ key: new Uint8Array(8), access: "admin" }],
      handler,
    ),
    /32 bytes, not 8/,
  );
});

Deno.test("sendRemoteControl says who does not answer, and what is not a daemon", async () => {
  // Nobody on the port.
  const free = Deno.listen({ hostname: HOST, port: 0 });
  const port = free.addr.port;
  free.close();
  await rejects(
    sendRemoteControl({ hostname: HOST, port }, ADMIN, "VERSION?"),
    new RegExp(`^No vela daemon listens for remote control on 127\\.0\\.0\\.1:${port}`),
  );
  // Something that accepts and never answers.
  {
    using silent = Deno.listen({ hostname: HOST, port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = silent.accept().then((c) => held.push(c), () => undefined);
    await rejects(
      sendRemoteControl({ hostname: HOST, port: silent.addr.port }, ADMIN, "VERSION?", { replyMs: 200 }),
      /^No answer from the daemon on 127\.0\.0\.1:\d+ within 0\.2 s/,
    );
    await accepting;
    for (const c of held) closeQuietly(c);
  }
  // Something that is not a vela daemon.
  {
    using other = Deno.listen({ hostname: HOST, port: 0 });
    const serving = other.accept().then(async (c) => {
      await writeAll(c, encoder.encode("SSH-2.0-OpenSSH_9.6\r\n"));
      await readToEnd(c, 1000);
      closeQuietly(c);
    });
    await rejects(
      sendRemoteControl({ hostname: HOST, port: other.addr.port }, ADMIN, "VERSION?"),
      /does not speak vela's remote control/,
    );
    await serving;
  }
});

Deno.test("listen() logs at most a burst of refusals, however many come", async () => {
  using logs = captureLogs();
  const { handler } = recordingHandler();
  await using server = await RemoteControlServer.listen({ hostname: HOST, port: 0 }, KEYS, handler, {
    ratePerSecond: 1000,
    burst: 1000,
  });
  for (let i = 0; i < 30; i++) {
    await rejects(
      sendRemoteControl({ hostname: HOST, port: server.port }, STRANGER, "STATUS?"),
      /refused the key/,
    );
  }
  assert.equal(server.refusedHandshakes, 30);
  const refusals = logs.lines().filter((l) => l.includes("refused"));
  assert.ok(refusals.length >= 20 && refusals.length < 25, `${refusals.length} lines`);
});

/** Whether this host has an IPv6 loopback to listen on. */
function hasIPv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "listen() and sendRemoteControl work over the IPv6 loopback, naming it [::1]:PORT",
  ignore: !hasIPv6Loopback(),
  async fn() {
    using logs = captureLogs();
    const { handler } = recordingHandler();
    await using server = await RemoteControlServer.listen({ hostname: "::1", port: 0 }, KEYS, handler);
    const address = { hostname: "::1", port: server.port };
    assert.equal(await sendRemoteControl(address, READER, "STATUS?"), "OK read STATUS?");
    await rejects(
      sendRemoteControl(address, STRANGER, "STATUS?"),
      new RegExp(`^The daemon on \\[::1\\]:${server.port} refused the key$`),
    );
    assert.ok(
      logs.lines().some((l) => /Remote control from \[::1\]:\d+ refused/.test(l)),
      logs.lines().join("\n"),
    );
  },
});
