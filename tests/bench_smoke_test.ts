/**
 * The benchmark's one-shot smoke mode (`bench/run.ts --smoke`), so that the benchmark cannot rot: it must
 * exit 0, print a table whose vela-tap row moved TCP data, and leave bench/results/ untouched.
 */

import assert from "node:assert/strict";
import { hasProgram, namespaceSupport } from "../testbed/netns.ts";

const PROJECT_DIR = new URL("..", import.meta.url).pathname;
const RESULTS_DIR = `${PROJECT_DIR}bench/results`;

const support = await namespaceSupport();
if (!support.ok) {
  console.warn(`\n!!! SKIPPING the benchmark smoke test: ${support.reason} !!!\n`);
}

/** The harness's tools; in CI (CI=true) a missing one fails the test, elsewhere it is skipped loudly. */
async function missingTools(): Promise<string[]> {
  const missing = [];
  for (const [program, pkg] of [["iperf3", "iperf3"], ["jq", "jq"], ["bc", "bc"], ["flock", "util-linux"]]) {
    if (!(await hasProgram(program))) missing.push(`${program} (apt-get install ${pkg})`);
  }
  return missing;
}

async function listing(dir: string): Promise<string[]> {
  const names: string[] = [];
  const walk = async (path: string, depth: number) => {
    if (depth > 8) return;
    try {
      for await (const entry of Deno.readDir(path)) {
        const full = `${path}/${entry.name}`;
        names.push(full);
        if (entry.isDirectory) await walk(full, depth + 1);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  };
  await walk(dir, 0);
  return names.sort();
}

Deno.test({
  name: "bench/run.ts --smoke: one VELA tap run through the benchmark, nothing written to bench/results",
  ignore: !support.ok,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const missing = await missingTools();
    if (missing.length > 0) {
      const message = `the benchmark needs ${missing.join(", ")}`;
      if (Deno.env.get("CI")) throw new Error(message);
      console.warn(`!!! SKIPPING the benchmark smoke test: ${message} !!!`);
      return;
    }
    const before = await listing(RESULTS_DIR);
    const started = Date.now();
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${PROJECT_DIR}bench/run.ts`, "--smoke"],
      cwd: PROJECT_DIR,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(90_000),
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const context = `--- stdout:\n${stdout}\n--- stderr:\n${stderr}`;
    assert.equal(output.code, 0, `bench/run.ts --smoke exited ${output.code}\n${context}`);

    const header = stdout.split("\n").find((line) => line.startsWith("system "));
    assert(header, `no table header in the output\n${context}`);
    const row = stdout.split("\n").find((line) => line.startsWith("vela-tap "));
    assert(row, `no vela-tap row in the table\n${context}`);
    const columns = header.trim().split(/\s+/);
    const cells = row.trim().split(/\s+/);
    const tcpFwd = Number(cells[columns.indexOf("tcp_fwd")]);
    assert(tcpFwd > 0, `vela-tap tcp_fwd is not a positive number: ${row}\n${context}`);

    assert.deepEqual(await listing(RESULTS_DIR), before, "the smoke run wrote into bench/results/");
    const written = /^wrote (\S+)/m.exec(stdout)?.[1];
    assert(
      written && !written.startsWith(RESULTS_DIR),
      `smoke results not in a temporary directory: ${written}`,
    );
    const tempDir = written.slice(0, written.lastIndexOf("/"));
    await Deno.remove(tempDir, { recursive: true });
    console.log(
      `bench smoke: vela-tap tcp_fwd ${tcpFwd} Mbit/s, ${Math.round((Date.now() - started) / 1000)} s`,
    );
  },
});
