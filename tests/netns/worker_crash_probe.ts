/**
 * Test helper for failures_test.ts, run as its own process inside a test namespace:
 *
 *   deno run --allow-all tests/netns/worker_crash_probe.ts PEER
 *
 * Starts a kernel daemon (libc underlay, datapath Workers) as an initiator towards PEER (a listener) for
 * vid 3, with Workers that die once the circuit is up (tests/fakes/crashing_worker.ts). Prints as JSON whether vela3
 * existed before, the error the daemon failed with, and whether vela3 exists after; exits 0.
 */

import { parseCommandLine } from "../../src/cli.ts";
import { buildDaemonConfig } from "../../src/startup.ts";
import { startKernelDaemon } from "../../src/daemon/kernel_daemon.ts";

const exists = (name: string) => {
  try {
    Deno.statSync(`/sys/class/net/${name}`);
    return true;
  } catch {
    return false;
  }
};

const command = parseCommandLine([
  "--peer",
  Deno.args[0],
  "--vid",
  "3",
  "--control",
  `/tmp/vela-crash-${Deno.pid}.sock`,
]);
if (command.kind !== "daemon") throw new Error("not a daemon command line");
const config = await buildDaemonConfig(command.args, () => {});
const daemon = startKernelDaemon(config, "libc", {
  workerModule: new URL("../fakes/crashing_worker.ts", import.meta.url),
});
const before = exists("vela3");
const timeout = new Promise<Error>((resolve) => setTimeout(() => resolve(new Error("no failure")), 10_000));
const error = await Promise.race([daemon.failed, timeout]);
console.log(JSON.stringify({ before, error: error.message, after: exists("vela3") }));
Deno.exit(0);
