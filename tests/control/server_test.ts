/**
 * The control socket: a Unix socket under a temporary directory (no root), with a trivial handler and
 * with answerControl over daemons on fakes.
 */

import assert from "node:assert/strict";
import denoJson from "../../deno.json" with { type: "json" };
import { sendControl } from "../../src/control/client.ts";
import { answerControl } from "../../src/control/commands.ts";
import type { Resolve } from "../../src/startup.ts";
import { MAX_COMMAND_LENGTH, parseReply, replyLineCount } from "../../src/control/protocol.ts";
import { ControlServer, MAX_CONTROL_CLIENTS } from "../../src/control/server.ts";
import type { DaemonConfig, DaemonStatus } from "../../src/daemon/daemon.ts";
import { RuntimeFailure } from "../../src/errors.ts";
import { type IpAddress, parseCidr, parseIp } from "../../src/ip.ts";
import { startFakeDaemon, until } from "../fakes/fake_daemon.ts";
import { FakeWire } from "../fakes/fake_underlay.ts";

const A = "198.18.0.1";
const B = "198.18.0.2";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The handler that answers each line with "OK echo <line>". */
const echo = (line: string) => Promise.resolve(`OK echo ${line}`);

/** A fresh socket path in a directory that does not exist yet; removes the directory afterwards. */
async function withSocketPath(use: (path: string, directory: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "vela-control-test-" });
  try {
    await use(`${root}/run/vela.sock`, `${root}/run`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A client of the control socket that reads replies line by line. */
class Client implements Disposable {
  readonly #conn: Deno.UnixConn;
  #buffered = "";
  #eof = false;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  static async connect(path: string): Promise<Client> {
    return new Client(await Deno.connect({ transport: "unix", path }));
  }

  async write(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    for (let offset = 0; offset < bytes.length;) offset += await this.#conn.write(bytes.subarray(offset));
  }

  /** The next line (without its newline), or null at the end of the stream; throws after `ms`. */
  async line(ms = 3000): Promise<string | null> {
    const deadline = Date.now() + ms;
    const chunk = new Uint8Array(65536);
    for (;;) {
      const newline = this.#buffered.indexOf("\n");
      if (newline >= 0) {
        const line = this.#buffered.slice(0, newline);
        this.#buffered = this.#buffered.slice(newline + 1);
        return line;
      }
      if (this.#eof) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) =>
        timer = setTimeout(() => resolve("late"), Math.max(0, deadline - Date.now()))
      );
      const n = await Promise.race([this.#conn.read(chunk).catch(() => null), late]);
      clearTimeout(timer);
      if (n === "late") throw new Error(`no line within ${ms} ms (have ${JSON.stringify(this.#buffered)})`);
      if (n === null) this.#eof = true;
      else this.#buffered += decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  }

  /** A whole reply: its first line and the lines it announces. */
  async reply(): Promise<string> {
    const first = await this.line();
    if (first === null) throw new Error("the server closed the connection instead of replying");
    const lines = [first];
    for (let i = replyLineCount(first); i > 0; i--) {
      const next = await this.line();
      if (next === null) throw new Error(`the reply ${first} ended early`);
      lines.push(next);
    }
    return lines.join("\n");
  }

  /** Sends one command line and returns its whole reply. */
  async ask(line: string): Promise<string> {
    await this.write(line + "\n");
    return await this.reply();
  }

  /** Whether the server closed the connection (end of stream or reset) within `ms`. */
  async closedWithin(ms = 3000): Promise<boolean> {
    try {
      return (await this.line(ms)) === null;
    } catch {
      return false;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Leaves a stale socket file at `path`: a process binds it and exits without removing it. */
async function staleSocket(path: string): Promise<void> {
  const made = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} }); Deno.exit(0);`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(made.code, 0, decoder.decode(made.stderr));
  assert.ok(Deno.lstatSync(path).isSocket, "the stale socket file is there");
  await assert.rejects(Deno.connect({ transport: "unix", path }), "nothing answers on the stale socket");
}

// --- the server with a trivial handler --------------------------------------------------------------

Deno.test("ControlServer.listen() makes the directory 0700 and the socket 0600, and answers a line", async () => {
  await withSocketPath(async (path, directory) => {
    await using server = await ControlServer.listen(path, echo);
    assert.equal(server.path, path);
    const info = Deno.lstatSync(path);
    assert.ok(info.isSocket);
    assert.equal(info.mode! & 0o777, 0o600, `socket mode ${(info.mode! & 0o777).toString(8)}`);
    assert.equal(Deno.statSync(directory).mode! & 0o777, 0o700, "the directory it made");
    using client = await Client.connect(path);
    assert.equal(await client.ask("hello"), "OK echo hello");
    assert.equal(await sendControl(path, "via the client"), "OK echo via the client");
  });
});

Deno.test("ControlServer.listen() leaves an existing directory's mode alone", async () => {
  await withSocketPath(async (path, directory) => {
    Deno.mkdirSync(directory, { mode: 0o755 });
    Deno.chmodSync(directory, 0o755);
    await using _server = await ControlServer.listen(path, echo);
    assert.equal(Deno.statSync(directory).mode! & 0o777, 0o755);
    assert.equal(Deno.lstatSync(path).mode! & 0o777, 0o600);
  });
});

Deno.test("ControlServer answers many commands on one connection, in order, also when they arrive at once", async () => {
  await withSocketPath(async (path) => {
    await using _server = await ControlServer.listen(path, echo);
    using client = await Client.connect(path);
    for (let i = 0; i < 50; i++) assert.equal(await client.ask(`one ${i}`), `OK echo one ${i}`);
    await client.write(Array.from({ length: 200 }, (_, i) => `batch ${i}\n`).join(""));
    for (let i = 0; i < 200; i++) assert.equal(await client.line(), `OK echo batch ${i}`);
    // A line split across writes is one command; CRLF is taken like LF; an empty line is a command.
    await client.write("spl");
    await new Promise((resolve) => setTimeout(resolve, 20));
    await client.write("it\r\n\n");
    assert.equal(await client.line(), "OK echo split");
    assert.equal(await client.line(), "OK echo ");
  });
});

Deno.test("ControlServer answers NOK internal error when the handler throws, and keeps the connection", async () => {
  await withSocketPath(async (path) => {
    await using _server = await ControlServer.listen(
      path,
      (line) => line === "boom" ? Promise.reject(new Error("kaboom")) : echo(line),
    );
    using client = await Client.connect(path);
    assert.equal(await client.ask("boom"), "NOK internal error");
    assert.equal(await client.ask("after"), "OK echo after");
  });
});

Deno.test("ControlServer.listen() throws RuntimeFailure naming 'Another vela daemon' while the first one is up", async () => {
  await withSocketPath(async (path) => {
    await using first = await ControlServer.listen(path, echo);
    await assert.rejects(
      ControlServer.listen(path, echo),
      (error: unknown) =>
        error instanceof RuntimeFailure && error.message.includes("Another vela daemon") &&
        error.message.includes(path),
    );
    // The first server is untouched and still answers.
    assert.ok(Deno.lstatSync(path).isSocket);
    assert.equal(await sendControl(first.path, "still here"), "OK echo still here");
  });
});

Deno.test("ControlServer.close() removes the socket file, is safe twice, and a new listen() works", async () => {
  await withSocketPath(async (path) => {
    const server = await ControlServer.listen(path, echo);
    await server.close();
    assert.equal(exists(path), false, "the socket file is gone");
    await server.close();
    await assert.rejects(sendControl(path, "x"), /No vela daemon is listening/);
    await using again = await ControlServer.listen(path, (line) => Promise.resolve(`OK again ${line}`));
    assert.equal(await sendControl(again.path, "x"), "OK again x");
  });
});

Deno.test("ControlServer.close() disconnects connected clients", async () => {
  await withSocketPath(async (path) => {
    const server = await ControlServer.listen(path, echo);
    using client = await Client.connect(path);
    assert.equal(await client.ask("hi"), "OK echo hi");
    await server.close();
    assert.equal(await client.closedWithin(), true, "the client sees the end of the stream");
  });
});

Deno.test("ControlServer.listen() replaces a stale socket that nothing answers on", async () => {
  await withSocketPath(async (path, directory) => {
    Deno.mkdirSync(directory, { mode: 0o700 });
    await staleSocket(path);
    await using server = await ControlServer.listen(path, echo);
    assert.equal(Deno.lstatSync(path).mode! & 0o777, 0o600);
    assert.equal(await sendControl(server.path, "fresh"), "OK echo fresh");
  });
});

Deno.test("ControlServer.listen() refuses a path that is not a socket and leaves the file alone", async () => {
  await withSocketPath(async (path, directory) => {
    Deno.mkdirSync(directory, { mode: 0o700 });
    Deno.writeTextFileSync(path, "precious");
    await assert.rejects(
      ControlServer.listen(path, echo),
      (error: unknown) => error instanceof RuntimeFailure && /is not a socket/.test(error.message),
    );
    assert.equal(Deno.readTextFileSync(path), "precious");
  });
});

Deno.test("ControlServer.listen() throws RuntimeFailure when it cannot make the directory", async () => {
  await withSocketPath(async (_path, directory) => {
    Deno.writeTextFileSync(directory, "a file where the directory should be");
    await assert.rejects(
      ControlServer.listen(`${directory}/vela.sock`, echo),
      (error: unknown) => error instanceof RuntimeFailure && error.message.includes(directory),
    );
  });
});

Deno.test("ControlServer refuses a line longer than MAX_COMMAND_LENGTH with NOK and closes the connection", async () => {
  await withSocketPath(async (path) => {
    const seen: number[] = [];
    await using _server = await ControlServer.listen(path, (line) => {
      seen.push(line.length);
      return echo(line.slice(0, 10));
    });
    // Without a newline: the server does not wait for one forever.
    using endless = await Client.connect(path);
    await endless.write("A".repeat(MAX_COMMAND_LENGTH * 3));
    const reply = await endless.line();
    assert.match(reply ?? "", /^NOK .*longer than 4096/);
    assert.equal(await endless.closedWithin(), true, "the connection is closed after the NOK");

    // With a newline after it.
    using long = await Client.connect(path);
    await long.write("STATUS? " + "x".repeat(MAX_COMMAND_LENGTH * 4) + "\n").catch(() => undefined);
    assert.match((await long.line()) ?? "", /^NOK .*longer than/);
    assert.equal(await long.closedWithin(), true);
    assert.deepEqual(seen, [], "the handler never saw the long lines");

    // A line of exactly MAX_COMMAND_LENGTH is still a command, and others are served on.
    using client = await Client.connect(path);
    assert.equal(await client.ask("B".repeat(MAX_COMMAND_LENGTH)), "OK echo BBBBBBBBBB");
    assert.equal(await client.ask("short"), "OK echo short");
  });
});

// A line just over the limit that ends in a newline arrives whole in one or two reads: it is refused too.
Deno.test({
  name: "ControlServer refuses a line of MAX_COMMAND_LENGTH + 1 bytes that ends in a newline",

  fn: async () => {
    await withSocketPath(async (path) => {
      const seen: number[] = [];
      await using _server = await ControlServer.listen(path, (line) => {
        seen.push(line.length);
        return echo("");
      });
      for (const length of [MAX_COMMAND_LENGTH + 1, 5000, 8000]) {
        using client = await Client.connect(path);
        await client.write("A".repeat(length) + "\n").catch(() => undefined);
        assert.match((await client.line()) ?? "", /^NOK .*longer than/, `a line of ${length} bytes`);
        assert.equal(await client.closedWithin(), true);
      }
      assert.deepEqual(seen, []);
    });
  },
});

Deno.test("a client that connects and sends nothing does not hold up another client", async () => {
  await withSocketPath(async (path) => {
    await using _server = await ControlServer.listen(path, echo);
    using silent = await Client.connect(path);
    using half = await Client.connect(path);
    await half.write("a command without its newline");
    const started = Date.now();
    for (let i = 0; i < 5; i++) assert.equal(await sendControl(path, `busy ${i}`), `OK echo busy ${i}`);
    assert.ok(Date.now() - started < 2000, "served at once");
    // The silent clients are still connected and served when they speak.
    assert.equal(await silent.ask("late"), "OK echo late");
    await half.write("\n");
    assert.equal(await half.line(), "OK echo a command without its newline");
  });
});

Deno.test("a client over MAX_CONTROL_CLIENTS gets NOK too many control clients and is closed; a freed place is served", async () => {
  await withSocketPath(async (path) => {
    await using server = await ControlServer.listen(path, echo);
    const clients: Client[] = [];
    try {
      for (let i = 0; i < MAX_CONTROL_CLIENTS; i++) {
        const client = await Client.connect(path);
        clients.push(client);
        assert.equal(await client.ask(`hello ${i}`), `OK echo hello ${i}`);
      }
      using extra = await Client.connect(path);
      assert.equal(await extra.line(), "NOK too many control clients");
      assert.equal(await extra.closedWithin(), true);
      assert.equal(server.refusedClients, 1);
      clients.pop()!.close();
      await new Promise((resolve) => setTimeout(resolve, 50));
      using next = await Client.connect(path);
      assert.equal(await next.ask("again"), "OK echo again");
    } finally {
      for (const client of clients) client.close();
    }
  });
});

Deno.test("a client whose command line trickles in is closed at the fixed command deadline", async () => {
  await withSocketPath(async (path) => {
    await using _server = await ControlServer.listen(path, echo, { commandMs: 600 });
    using slow = await Client.connect(path);
    const started = Date.now();
    let closed = false;
    for (let i = 0; i < 20 && !closed; i++) {
      try {
        await slow.write("x");
      } catch {
        closed = true;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      if (!closed) closed = await slow.closedWithin(1);
    }
    const elapsed = Date.now() - started;
    assert.equal(closed, true, "the trickling client was disconnected");
    assert.ok(elapsed < 1500, `at the deadline, not reset by each byte (${elapsed} ms)`);
    // A client that keeps to the deadline is served again and again.
    using prompt = await Client.connect(path);
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await prompt.ask(`tick ${i}`), `OK echo tick ${i}`);
    }
  });
});

/** A Unix socket at `path` that accepts connections and never answers; close the listener to end it. */
function silentSocket(path: string): Deno.UnixListener {
  const listener = Deno.listen({ transport: "unix", path });
  const held: Deno.UnixConn[] = [];
  (async () => {
    for await (const conn of listener) held.push(conn);
    for (const conn of held) conn.close();
  })();
  return listener;
}

Deno.test("listen() takes over a socket whose owner accepts but never answers, once it stops accepting", async () => {
  await withSocketPath(async (path, directory) => {
    Deno.mkdirSync(directory, { mode: 0o700 });
    const dying = silentSocket(path);
    // The owner goes away a moment later, as a daemon killed with kill -9 does once its descriptors close.
    setTimeout(() => dying.close(), 400);
    await using server = await ControlServer.listen(path, echo, { probeMs: 100, takeoverMs: 3000 });
    assert.equal(await sendControl(server.path, "mine"), "OK echo mine");
  });
});

Deno.test("listen() leaves alone a socket that keeps accepting without answering (a stopped daemon)", async () => {
  await withSocketPath(async (path, directory) => {
    Deno.mkdirSync(directory, { mode: 0o700 });
    const stopped = silentSocket(path);
    try {
      await assert.rejects(
        ControlServer.listen(path, echo, { probeMs: 100, takeoverMs: 500 }),
        (error: Error) =>
          error instanceof RuntimeFailure && /does not answer \(stopped\?\)/.test(error.message),
      );
      assert.equal(exists(path), true, "the socket file is still there");
    } finally {
      stopped.close();
    }
  });
});

Deno.test("listen() leaves alone a socket whose backlog is full (connect fails with EAGAIN)", async () => {
  await withSocketPath(async (path, directory) => {
    Deno.mkdirSync(directory, { mode: 0o700 });
    // A listener that never accepts: its backlog fills, and then a connect fails at once (WouldBlock).
    const busy = Deno.listen({ transport: "unix", path });
    const queued: Deno.UnixConn[] = [];
    try {
      for (let full = false; !full && queued.length < 5000;) {
        try {
          queued.push(await Deno.connect({ transport: "unix", path }));
        } catch (error) {
          assert.ok(error instanceof Deno.errors.WouldBlock, String(error));
          full = true;
        }
      }
      await assert.rejects(
        ControlServer.listen(path, echo, { probeMs: 100, takeoverMs: 300 }),
        (error: Error) =>
          error instanceof RuntimeFailure && /does not answer \(stopped\?\)/.test(error.message),
      );
      assert.equal(exists(path), true, "the socket file is still there");
    } finally {
      for (const conn of queued) conn.close();
      busy.close();
    }
  });
});

Deno.test("a slow handler for one client does not hold up another client", async () => {
  await withSocketPath(async (path) => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => release = resolve);
    await using _server = await ControlServer.listen(
      path,
      async (line) => {
        if (line === "slow") await gate;
        return `OK echo ${line}`;
      },
    );
    using slow = await Client.connect(path);
    await slow.write("slow\n");
    assert.equal(await sendControl(path, "quick"), "OK echo quick");
    release();
    assert.equal(await slow.line(), "OK echo slow");
  });
});

Deno.test("sendControl() says no daemon is listening when there is no socket", async () => {
  await withSocketPath(async (path) => {
    await assert.rejects(
      sendControl(path, "STATUS?"),
      (error: unknown) =>
        error instanceof RuntimeFailure && error.message.includes("No vela daemon is listening") &&
        error.message.includes(path),
    );
  });
});

Deno.test("sendControl() reads exactly the announced lines of a multi-line reply", async () => {
  await withSocketPath(async (path) => {
    await using _server = await ControlServer.listen(
      path,
      (line) => Promise.resolve(line === "many" ? "OK 3 lines\none\ntwo\nthree" : "OK one line"),
    );
    assert.equal(await sendControl(path, "many"), "OK 3 lines\none\ntwo\nthree");
    assert.equal(await sendControl(path, "other"), "OK one line");
  });
});

// --- the server with answerControl over daemons on fakes --------------------------------------------

function listenerConfig(): DaemonConfig {
  return {
    port: 4455,
    listen: true,
    allow: [parseCidr("198.18.0.0/24")!],
    insecureAcceptAny: false,
    circuits: [],
  };
}

function initiatorConfig(): DaemonConfig {
  return {
    port: 0,
    listen: false,
    allow: [],
    insecureAcceptAny: false,
    circuits: [{
      peerName: B,
      peer: parseIp(B)!,
      port: 4455,
      vid: 3,
      mode: "tap",
      addresses: [parseCidr("198.18.207.1/30")!],
    }],
  };
}

/** The daemon's resolver on fakes: literals, and "peer-b" for B. */
const resolve: Resolve = (host: string): Promise<IpAddress> => {
  const address = host === "peer-b" ? parseIp(B) : parseIp(host);
  return address
    ? Promise.resolve(address)
    : Promise.reject(new RuntimeFailure(`Cannot resolve peer ${host}`));
};

type FakeDaemon = ReturnType<typeof startFakeDaemon>;

/** A listener at B, an initiator at A (circuit 3) established, and A's control socket; all stopped after. */
async function withControlledLink(
  use: (client: Client, a: FakeDaemon, b: FakeDaemon, path: string) => Promise<void>,
): Promise<void> {
  const wire = new FakeWire();
  const b = startFakeDaemon(wire, B, listenerConfig());
  const a = startFakeDaemon(wire, A, initiatorConfig());
  try {
    await until(
      () =>
        a.daemon.status().circuits.some((c) => c.state === "established") &&
        b.daemon.status().circuits.some((c) => c.state === "established"),
      "circuit 3 established on both ends",
    );
    await withSocketPath(async (path) => {
      await using _server = await ControlServer.listen(
        path,
        (line) => answerControl(a.daemon, resolve, line),
      );
      using client = await Client.connect(path);
      await use(client, a, b, path);
    });
  } finally {
    await a.daemon.stop();
    await b.daemon.stop();
  }
}

async function statusOf(client: Client): Promise<DaemonStatus> {
  const reply = parseReply(await client.ask("STATUS? JSON"));
  assert.equal(reply.ok, true, reply.text);
  return reply.json as DaemonStatus;
}

Deno.test("STATUS? JSON over the socket lists the established circuit with its counters", async () => {
  await withControlledLink(async (client, a) => {
    const status = await statusOf(client);
    assert.equal(status.listen, false);
    assert.equal(status.port, a.daemon.port);
    assert.equal(status.circuits.length, 1);
    const [circuit] = status.circuits;
    assert.equal(circuit.peer, B);
    assert.equal(circuit.address, B);
    assert.equal(circuit.port, 4455);
    assert.equal(circuit.vid, 3);
    assert.equal(circuit.role, "initiator");
    assert.equal(circuit.state, "established");
    assert.equal(circuit.ifname, "vela3");
    assert.equal(circuit.mode, "tap");
    assert.equal(circuit.mtu, 1457);
    assert.equal(typeof circuit.uptimeSeconds, "number");
    for (const counter of ["txPackets", "txBytes", "rxPackets", "rxBytes"] as const) {
      assert.equal(typeof circuit[counter], "number", counter);
    }
    assert.deepEqual(circuit.drops, {
      sendFailed: 0,
      deviceRefused: 0,
      badTag: 0,
      replayedData: 0,
      tooOld: 0,
      noKey: 0,
      keyExhausted: 0,
      filtered: 0,
      reassembly: 0,
      badCompression: 0,
      dictionaryMissing: 0,
    });
    assert.deepEqual(status, JSON.parse(JSON.stringify(a.daemon.status())), "the daemon's own status");
  });
});

Deno.test("STATUS? text over the socket has the announced lines", async () => {
  await withControlledLink(async (client) => {
    const lines = (await client.ask("STATUS?")).split("\n");
    assert.equal(lines[0], "OK 2 lines");
    assert.match(lines[1], /^peer=198\.18\.0\.2 address=198\.18\.0\.2 port=4455 vid=3 ifname=vela3 /);
    assert.match(lines[1], / state=established /);
    assert.match(lines[2], /^drops /);
    assert.equal(await client.ask("VERSION?"), `OK vela ${denoJson.version}`);
  });
});

Deno.test("DEVICES? over the socket lists vela3, in text and JSON", async () => {
  await withControlledLink(async (client) => {
    assert.equal(
      await client.ask("DEVICES?"),
      "OK 1 devices\nvela3 tap mtu=1457 peer=198.18.0.2 vid=3 state=established",
    );
    assert.deepEqual(parseReply(await client.ask("devices? json")).json, [
      { ifname: "vela3", mode: "tap", mtu: 1457, peer: B, vid: 3, state: "established" },
    ]);
  });
});

Deno.test("VERSION? JSON over the socket gives deno.json's version", async () => {
  await withControlledLink(async (client) => {
    assert.deepEqual(parseReply(await client.ask("VERSION? JSON")).json, { version: denoJson.version });
  });
});

Deno.test("CONNECT over the socket starts a second circuit that STATUS? then shows; CLOSE takes it down", async () => {
  await withControlledLink(async (client, a, b) => {
    assert.equal(
      await client.ask("CONNECT 198.18.0.2 4 address=198.18.207.5/30"),
      "OK circuit 4 to 198.18.0.2 started on vela4",
    );
    await until(
      () => a.daemon.status().circuits.filter((c) => c.state === "established").length === 2,
      "circuit 4 established",
    );
    const status = await statusOf(client);
    assert.deepEqual(status.circuits.map((c) => [c.vid, c.ifname, c.state]).sort(), [
      [3, "vela3", "established"],
      [4, "vela4", "established"],
    ]);
    assert.deepEqual(a.network.live("vela4")?.addresses.slice(0, 1), ["198.18.207.5/30"]);
    await until(() => b.network.live("vela4") !== undefined, "the listener's vela4");
    assert.deepEqual(b.network.live("vela4")!.addresses.slice(0, 1), ["198.18.207.6/30"]);

    assert.equal(await client.ask("CLOSE 198.18.0.2 4"), "OK closed circuit 4");
    assert.deepEqual((await statusOf(client)).circuits.map((c) => c.vid), [3]);
    assert.equal(a.network.live("vela4"), undefined, "the initiator's vela4 is removed");
    await until(() => b.network.live("vela4") === undefined, "the listener to remove vela4 after CREQ");
    assert.ok(a.network.live("vela3") && b.network.live("vela3"), "circuit 3 is untouched");
  });
});

Deno.test("CONNECT JSON, by peer name, with options; CLOSE JSON by that name", async () => {
  await withControlledLink(async (client, a) => {
    const reply = parseReply(
      await client.ask("connect peer-b 9 mode=tun mtu=1300 ifname=uplink9 port=4455 family=4 json"),
    );
    assert.deepEqual(reply, {
      ok: true,
      text: `{"started":true,"ifname":"uplink9"}`,
      json: { started: true, ifname: "uplink9" },
    });
    await until(
      () => a.daemon.status().circuits.some((c) => c.vid === 9 && c.state === "established"),
      "circuit 9 established",
    );
    const circuit = (await statusOf(client)).circuits.find((c) => c.vid === 9)!;
    assert.equal(circuit.peer, "peer-b", "the peer as the operator named it");
    assert.equal(circuit.address, B);
    assert.equal(circuit.ifname, "uplink9");
    assert.equal(circuit.mode, "tun");
    assert.equal(circuit.mtu, 1300);
    assert.deepEqual(parseReply(await client.ask("CLOSE peer-b 9 JSON")).json, { closed: true });
    assert.equal(a.network.live("uplink9"), undefined);
  });
});

Deno.test("CONNECT of a circuit that exists, or to a name that does not resolve, is NOK and changes nothing", async () => {
  await withControlledLink(async (client, a) => {
    assert.match(await client.ask("CONNECT 198.18.0.2 3"), /^NOK .*exists already/);
    assert.match(await client.ask("CONNECT no-such-peer 5"), /^NOK Cannot resolve peer no-such-peer/);
    assert.match(await client.ask("CONNECT 198.18.0.2 0"), /^NOK vid /);
    assert.deepEqual(a.daemon.status().circuits.map((c) => c.vid), [3]);
    assert.equal(a.network.live("vela5"), undefined);
  });
});

Deno.test("CLOSE of a circuit that does not exist is NOK", async () => {
  await withControlledLink(async (client, a) => {
    assert.equal(await client.ask("CLOSE 198.18.0.2 4"), "NOK no circuit 4 with 198.18.0.2");
    assert.equal(await client.ask("CLOSE 198.18.0.9 3"), "NOK no circuit 3 with 198.18.0.9");
    assert.equal(await client.ask("CLOSE h 300"), "NOK vid must be 1 to 255, not 300");
    assert.equal(a.daemon.status().circuits.length, 1);
  });
});

Deno.test("an unknown or malformed command is NOK and the connection goes on", async () => {
  await withControlledLink(async (client) => {
    assert.equal(await client.ask("FROBNICATE"), "NOK unknown command FROBNICATE");
    assert.equal(await client.ask(""), "NOK empty command");
    assert.equal(await client.ask("STATUS? now"), "NOK STATUS? takes no arguments");
    assert.equal(await client.ask("CONNECT 198.18.0.2 5 colour=red"), "NOK unknown option colour");
    assert.equal(await client.ask("\u0000\u0001\u00ff"), "NOK unknown command \u0000\u0001\u00ff");
    assert.equal((await statusOf(client)).circuits.length, 1);
  });
});

Deno.test("many commands on one connection to a daemon are each answered", async () => {
  await withControlledLink(async (client, _a, _b, path) => {
    for (let i = 0; i < 30; i++) {
      const command = ["STATUS?", "DEVICES?", "VERSION?", "STATUS? JSON", "NOPE"][i % 5];
      const reply = await client.ask(command);
      assert.equal(reply.startsWith(command === "NOPE" ? "NOK " : "OK "), true, `${command}: ${reply}`);
    }
    // And sendControl, as the subcommands use it, on its own connections at the same time.
    const replies = await Promise.all(Array.from({ length: 10 }, () => sendControl(path, "STATUS? JSON")));
    for (const reply of replies) assert.equal((parseReply(reply).json as DaemonStatus).circuits.length, 1);
  });
});
