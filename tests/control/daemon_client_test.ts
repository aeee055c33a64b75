/**
 * daemonClient() over remote control: one session (one handshake) for many commands, a new one when
 * the daemon ended an idle session, the key file read once, and its mistakes said in one sentence.
 */

import assert from "node:assert/strict";
import { daemonClient } from "../../src/control/daemon_client.ts";
import { RemoteControlServer } from "../../src/control/remote_server.ts";
import type { ControlAccess } from "../../src/control/protocol.ts";
import { parseKey } from "../../src/keys.ts";
import { RuntimeFailure } from "../../src/errors.ts";
import { generateKey } from "../../src/keys.ts";

const HOST = "127.0.0.1";

async function keyFileWith(text: string, mode = 0o600): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "vela-client-key-" });
  await Deno.writeTextFile(path, text + "\n", { mode });
  await Deno.chmod(path, mode);
  return path;
}

Deno.test("daemonClient() sends many commands over one remote session", async () => {
  const text = generateKey();
  const path = await keyFileWith(text);
  const seen: { line: string; access: ControlAccess }[] = [];
  await using server = await RemoteControlServer.listen(
    { hostname: HOST, port: 0 },
    [{ key: parseKey(text), access: "read" }],
    (line, access) => {
      seen.push({ line, access });
      return Promise.resolve(`OK ${line.toLowerCase()}`);
    },
  );
  try {
    using client = daemonClient({ remote: { hostname: HOST, port: server.port }, keyFile: path }, () => {});
    assert.equal(client.where, `${HOST}:${server.port}`);
    for (let i = 0; i < 12; i++) assert.equal(await client.send(`STATUS? ${i}`), `OK status? ${i}`);
    assert.equal(seen.length, 12);
    assert.ok(seen.every((s) => s.access === "read"));
    // Twelve commands over one connection: the per-address rate (2 a second, a burst of 10) never bit.
    assert.equal(server.rateLimited, 0);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("daemonClient() opens a new session when the daemon ended an idle one", async () => {
  const text = generateKey();
  const path = await keyFileWith(text);
  await using server = await RemoteControlServer.listen(
    { hostname: HOST, port: 0 },
    [{ key: parseKey(text), access: "admin" }],
    (line) => Promise.resolve(`OK ${line}`),
    { commandMs: 200 },
  );
  try {
    using client = daemonClient({ remote: { hostname: HOST, port: server.port }, keyFile: path }, () => {});
    assert.equal(await client.send("ONE"), "OK ONE");
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(await client.send("TWO"), "OK TWO");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("daemonClient() says what is wrong with the key file, and warns of one open to others", async () => {
  const missing = daemonClient(
    { remote: { hostname: HOST, port: 9 }, keyFile: "/nonexistent/vela.key" },
    () => {},
  );
  await assert.rejects(missing.send("STATUS?"), (error: unknown) => {
    assert.ok(error instanceof RuntimeFailure);
    assert.match(error.message, /^The key file \/nonexistent\/vela\.key does not exist/);
    return true;
  });
  const text = generateKey();
  const open = await keyFileWith(text, 0o644);
  const warnings: string[] = [];
  await using server = await RemoteControlServer.listen(
    { hostname: HOST, port: 0 },
    [{ key: parseKey(text), access: "admin" }],
    (line) => Promise.resolve(`OK ${line}`),
  );
  try {
    using client = daemonClient(
      { remote: { hostname: HOST, port: server.port }, keyFile: open },
      (warning) => warnings.push(warning),
    );
    assert.equal(await client.send("A"), "OK A");
    assert.equal(await client.send("B"), "OK B");
    assert.equal(warnings.length, 1, "read once");
    assert.match(warnings[0], /has mode 644, so other users may read it; run chmod 600/);
  } finally {
    await Deno.remove(open);
  }
});
