/** Several circuits with real processes: a --config file with two, one listener for two initiators, keys. */

import assert from "node:assert/strict";
import { Bed, VELA_PERMISSIONS } from "../../testbed/netns.ts";
import { netnsTest } from "./support.ts";
import { LISTEN, MAIN, sleep, velaLinks, watchExit } from "./circuit_support.ts";

netnsTest("one --config file runs two circuits to the same peer", async () => {
  await using bed = await Bed.create();
  const config = await Deno.makeTempFile({ prefix: "vela-config-", suffix: ".json" });
  try {
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        circuits: [
          { peer: bed.b4, vid: 3, address: ["198.18.207.1/30"] },
          { peer: bed.b4, vid: 4, address: ["198.18.207.5/30"] },
        ],
      }),
    );
    bed.vela(bed.b, LISTEN);
    bed.vela(bed.a, ["--config", config]);
    await Promise.all([bed.waitPing(bed.a, "198.18.207.2"), bed.waitPing(bed.a, "198.18.207.6")]);
    assert.deepEqual(await velaLinks(bed.b), ["vela3", "vela4"]);
    assert.deepEqual(await velaLinks(bed.a), ["vela3", "vela4"]);
  } finally {
    await Deno.remove(config);
  }
});

netnsTest("one listener serves two initiators at once", async () => {
  await using bed = await Bed.create();
  bed.vela(bed.b, LISTEN);
  bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30"]);
  bed.vela(bed.a, ["--peer", bed.b4, "--vid", "9", "--ifname", "vela9", "--address", "198.18.207.9/30"]);
  await Promise.all([bed.waitPing(bed.a, "198.18.207.2"), bed.waitPing(bed.a, "198.18.207.10")]);
  assert.deepEqual(await velaLinks(bed.b), ["vela3", "vela9"]);
});

/** `vela genkey` into a new temporary file with `mode`. */
async function genkey(bed: Bed, mode: number, text?: string): Promise<string> {
  if (text === undefined) {
    const made = await bed.exec(bed.a, [
      Deno.execPath(),
      "run",
      ...VELA_PERMISSIONS,
      "--quiet",
      MAIN,
      "genkey",
    ], {
      check: true,
    });
    text = made.stdout;
    assert.match(text, /^[A-Za-z0-9+/]{43}=\n$/, "genkey prints one line of base64");
  }
  const path = await Deno.makeTempFile({ prefix: "vela-key-" });
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, mode); // After the write: a creation mode would pass through the umask.
  return path;
}

netnsTest("keys: the same key on both sides links, a wrong key gets nothing", async () => {
  const keysModule = new URL("../../src/keys.ts", import.meta.url);
  if (!(await Deno.stat(keysModule).then(() => true, () => false))) {
    console.warn("!!! SKIPPING the key test: src/keys.ts does not exist yet !!!");
    return;
  }
  await using bed = await Bed.create();
  const files: string[] = [];
  try {
    const right = await genkey(bed, 0o600);
    const wrong = await genkey(bed, 0o600);
    files.push(right, wrong);
    assert.notEqual(await Deno.readTextFile(right), await Deno.readTextFile(wrong), "two keys differ");
    const open = await genkey(bed, 0o644, await Deno.readTextFile(right));
    files.push(open);

    const listener = bed.vela(bed.b, ["--listen", "--key-file", right]);
    bed.vela(bed.a, ["--peer", bed.b4, "--vid", "3", "--address", "198.18.207.1/30", "--key-file", right]);
    await bed.waitPing(bed.a, "198.18.207.2");

    const started = Date.now();
    const stranger = bed.vela(bed.a, [
      "--peer",
      bed.b4,
      "--vid",
      "7",
      "--ifname",
      "vela7",
      "--address",
      "198.18.207.5/30",
      "--key-file",
      wrong,
    ]);
    const careless = bed.vela(bed.a, [
      "--peer",
      bed.b4,
      "--vid",
      "8",
      "--address",
      "198.18.207.9/30",
      "--key-file",
      open,
    ]);
    const strangerRunning = watchExit(stranger);
    // The right key in a file others may read: a warning, and the circuit still links.
    await bed.waitPing(bed.a, "198.18.207.10");
    assert.match(careless.output(), /WRN.*chmod 600/);
    await sleep(5_000 - (Date.now() - started));

    assert.equal(await bed.hasLink(bed.b, "vela7"), false, "no interface for the wrong key");
    assert.deepEqual(await velaLinks(bed.b), ["vela3", "vela8"]);
    assert.match(listener.output(), /WRN.*MAC/, "the listener warns about the MAC");
    assert.equal(strangerRunning.exited, false, "the wrong key's initiator keeps asking");
  } finally {
    for (const file of files) await Deno.remove(file);
  }
});
