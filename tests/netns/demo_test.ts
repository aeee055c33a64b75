/**
 * `deno task demo` end to end, as a user runs it: the link comes up, each daemon's log is labelled as it
 * comes, vela status and the metrics scrape show the circuit, the closing advice names only subcommands and
 * options that exist, and nothing is left behind.
 */

import assert from "node:assert/strict";
import { run, VELA_PERMISSIONS } from "../../testbed/netns.ts";
import { netnsTest, requireProgram } from "./support.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const decoder = new TextDecoder();

netnsTest(
  "deno task demo: labelled logs, vela status, a metrics scrape, what to try next, no leftovers",
  async () => {
    if (!await requireProgram("iperf3", "iperf3")) return;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "testbed/demo.ts"],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = await child.output();
    const stdout = decoder.decode(output.stdout);
    const shown = `--- stdout:\n${stdout}\n--- stderr:\n${decoder.decode(output.stderr)}`;
    assert.equal(output.code, 0, shown);

    // Each daemon's log, labelled, printed as it came: the handshake before the next section, the stop after.
    for (const label of ["router1", "router2"]) {
      const established = stdout.search(new RegExp(`^\\[${label}\\] .*Circuit 3 with \\S+ established`, "m"));
      assert.ok(established >= 0 && established < stdout.indexOf("== The interfaces"), `${label}\n${shown}`);
      const stopped = stdout.search(new RegExp(`^\\[${label}\\] .*VELA stopped`, "m"));
      assert.ok(stopped > stdout.indexOf("== Stopping both daemons"), `${label}\n${shown}`);
      // stderr lines (the log) and stdout lines both carry the label.
      assert.match(stdout, new RegExp(`^\\[${label}\\] vela: SIGTERM received`, "m"), shown);
    }
    assert.doesNotMatch(stdout, /^\d{4}-\d\d-\d\d .*\[INF\]/m, `an unlabelled log line\n${shown}`);

    // vela status's table from both sides, and the scrape's circuit lines.
    assert.match(stdout, /^IFACE +VID +PEER +STATE/m, shown);
    assert.match(stdout, /^vela3 +3 +\S+ +established \(i\)/m, shown);
    assert.match(stdout, /^vela3 +3 +\S+ +established \(r\)/m, shown);
    assert.match(stdout, /^vela_circuit_up\{[^}]*vid="3"[^}]*\} 1$/m, shown);
    const txPackets = stdout.match(/^vela_circuit_tx_packets_total\{[^}]*\} (\d+)$/m);
    assert.ok(txPackets && Number(txPackets[1]) > 1000, `iperf3's packets are counted\n${shown}`);
    assert.doesNotMatch(stdout, /^# (HELP|TYPE)/m, `only a few lines of the page\n${shown}`);

    // What to try next names only subcommands and options that exist today.
    const next = stdout.slice(stdout.indexOf("== What to try next"));
    assert.ok(next.length > 20 && next.includes("deno task test"), shown);
    const help = decoder.decode(
      (await new Deno.Command(Deno.execPath(), {
        args: ["run", ...VELA_PERMISSIONS, "--quiet", `${ROOT}main.ts`, "--help"],
        stdout: "piped",
      }).output()).stdout,
    );
    const subcommands = [...next.matchAll(/vela ([a-z][a-z-]*)/g)].map((m) => m[1]);
    assert.ok(subcommands.includes("status") && subcommands.includes("genkey"), next);
    for (const name of subcommands) assert.ok(help.includes(`vela ${name}`), `vela ${name} is not in --help`);
    const options = [...next.matchAll(/ (--[a-z][a-z-]*)/g)].map((m) => m[1]);
    for (const option of options) assert.ok(help.includes(option), `${option} is not in --help`);

    // Nothing left behind: the demo's namespaces (named after its PID) and control sockets are gone.
    const namespaces = await run(["ip", "netns", "list"], { check: true });
    assert.doesNotMatch(namespaces.stdout, new RegExp(`^vela-${child.pid}-`, "m"));
    const sockets = [...Deno.readDirSync("/tmp")].filter((e) => e.name.startsWith(`vela-${child.pid}-`));
    assert.deepEqual(sockets, []);
  },
);
