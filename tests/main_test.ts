/** The vela command as a process: help, version, usage errors and their exit codes (no root needed). */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { HELP } from "../src/cli_help.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function vela(...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

Deno.test("vela --help prints the help on stdout and exits 0", async () => {
  const result = await vela("--help");
  assert.equal(result.code, 0);
  assert.equal(result.stdout.trim(), HELP.trim());
  assert.equal(result.stderr, "");
});

Deno.test("vela --version prints the version from deno.json", async () => {
  const result = await vela("--version");
  assert.equal(result.code, 0);
  assert.equal(result.stdout.trim(), `vela ${denoJson.version}`);
});

Deno.test("a usage error prints one clear line and a hint to stderr and exits 2", async () => {
  for (const args of [["--peer", "h", "--vid", "0"], ["--listen"], ["--frobnicate"], []]) {
    const result = await vela(...args);
    assert.equal(result.code, 2, args.join(" "));
    assert.equal(result.stdout, "");
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 2, result.stderr);
    assert.match(lines[0], /^vela: [A-Z-]/);
    assert.doesNotMatch(lines[0], /\.$/);
    assert.equal(lines[1], "Try 'vela --help' for more information.");
  }
});
