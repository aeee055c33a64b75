/** `vela showconf`'s file: a running configuration written as a config file reads back the same (no root). */

import assert from "node:assert/strict";
import { parseCommandLine } from "../src/cli.ts";
import { parseConfig } from "../src/config_file.ts";
import { configFileObject, formatConfigFile } from "../src/show_config.ts";
import { buildDaemonConfig, checkConfigFile } from "../src/startup.ts";
import { generateKey } from "../src/keys.ts";
import { RuntimeFailure } from "../src/errors.ts";

async function withFiles(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "vela-showconf-" });
  try {
    await body(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function writeKey(path: string, mode = 0o600): void {
  Deno.writeTextFileSync(path, generateKey() + "\n");
  Deno.chmodSync(path, mode);
}

Deno.test("formatConfigFile() of a config file's daemon reads back as the same file", async () => {
  await withFiles(async (dir) => {
    writeKey(`${dir}/site.key`);
    writeKey(`${dir}/other.key`);
    const original = {
      listen: true,
      allow: ["198.18.0.0/15"],
      port: 4500,
      key_file: `${dir}/site.key`,
      key_files: [`${dir}/other.key`],
      cipher: "chacha20-poly1305",
      rekey_after: 60,
      max_circuits: 50,
      bridge: "br0",
      bridges: [{ bridge: "br1", vid: 7, allow: "198.18.5.0/24", filter: { block: ["stp", "0x88b5"] } }],
      offer_bridges: ["br2"],
      up: "logger up $VELA_IFNAME",
      circuits: [
        {
          peer: "198.18.0.2",
          vid: 3,
          mode: "tap",
          address: ["198.18.207.1/30", "fd00:207::1/126"],
          mtu: 1400,
          ifname: "uplink3",
          port: 4600,
          family: 4,
          key_file: `${dir}/other.key`,
          cipher: "none",
          far_bridge: "br2",
          filter: { local: ["02:00:5e:10:00:01"], block: ["lldp", "broadcast"] },
        },
        { peer: "fd00::9", vid: 9, mode: "tun", address: ["198.18.209.1/31"] },
      ],
    };
    Deno.writeTextFileSync(`${dir}/vela.json`, JSON.stringify(original));
    const command = parseCommandLine(["--config", `${dir}/vela.json`]);
    assert.equal(command.kind, "daemon");
    if (command.kind !== "daemon") return;
    const running = await buildDaemonConfig(command.args, () => {});
    const shown = formatConfigFile(running);
    assert.deepEqual(JSON.parse(shown), original);
    assert.deepEqual(parseConfig(shown), parseConfig(JSON.stringify(original)));
    assert.ok(shown.endsWith("}\n"));
    assert.doesNotMatch(
      shown,
      new RegExp(Deno.readTextFileSync(`${dir}/site.key`).trim()),
      "no key material",
    );
  });
});

Deno.test("configFileObject() of a flags-only initiator gives its circuit with the key file made absolute", async () => {
  await withFiles(async (dir) => {
    writeKey(`${dir}/k`);
    const cwd = Deno.cwd();
    Deno.chdir(dir);
    try {
      const command = parseCommandLine(["--peer", "198.18.0.2", "--vid", "3", "--key-file", "k"]);
      if (command.kind !== "daemon") throw new Error("not a daemon");
      const file = configFileObject(await buildDaemonConfig(command.args, () => {}));
      assert.deepEqual(file, {
        key_file: `${Deno.cwd()}/k`,
        circuits: [{ peer: "198.18.0.2", vid: 3, mode: "tap" }],
      });
    } finally {
      Deno.chdir(cwd);
    }
  });
});

Deno.test("checkConfigFile() reads the key files the config names: missing, garbage, too open", async () => {
  await withFiles((dir) => {
    const config = (keyFile: string) => {
      Deno.writeTextFileSync(
        `${dir}/vela.json`,
        JSON.stringify({ key_file: keyFile, circuits: [{ peer: "198.18.0.2", vid: 3 }] }),
      );
      return `${dir}/vela.json`;
    };
    assert.throws(
      () => checkConfigFile(config(`${dir}/missing.key`), () => {}),
      (error: Error) => error instanceof RuntimeFailure && /missing\.key does not exist/.test(error.message),
    );
    Deno.writeTextFileSync(`${dir}/garbage.key`, "not a key\n");
    Deno.chmodSync(`${dir}/garbage.key`, 0o600);
    assert.throws(
      () => checkConfigFile(config(`${dir}/garbage.key`), () => {}),
      (error: Error) => error instanceof RuntimeFailure && /garbage\.key/.test(error.message),
    );
    writeKey(`${dir}/open.key`, 0o644);
    const warnings: string[] = [];
    const settings = checkConfigFile(config(`${dir}/open.key`), (text) => warnings.push(text));
    assert.equal(settings.circuits.length, 1);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /mode 644, so other users may read it; run chmod 600/);
    writeKey(`${dir}/good.key`);
    const none: string[] = [];
    checkConfigFile(config(`${dir}/good.key`), (text) => none.push(text));
    assert.deepEqual(none, []);
  });
});
