/**
 * What the FFI bindings' no-allocation tests count: a script run in its own Deno with V8's GC and
 * deoptimization traces on, the scavenges and deoptimizations it printed.
 */

import assert from "node:assert/strict";

/**
 * Runs `script` with `count` as its one argument (FFI and read allowed) and counts the scavenges and
 * deoptimizations V8 traced; the script must exit 0 and print "done".
 */
export async function traceRun(
  script: string,
  count: number,
): Promise<{ scavenges: number; deopts: number }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", "--v8-flags=--trace-gc,--trace-deopt", script, `${count}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, text);
  assert.match(text, /done/);
  return {
    scavenges: text.match(/Scavenge/g)?.length ?? 0,
    deopts: text.match(/deoptimizing/g)?.length ?? 0,
  };
}
