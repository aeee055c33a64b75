/**
 * The control socket of a real daemon under pressure (issue 17): out of file descriptors it logs, goes
 * on and answers again; a daemon started again right after a kill -9 takes over its socket.
 */

import assert from "node:assert/strict";
import { Bed, type BedProcess } from "../../testbed/netns.ts";
import { netnsTest, requireProgram } from "./support.ts";
import { sleep } from "./circuit_support.ts";

/** Whether `process` exits within `ms`. */
async function exitedWithin(process: BedProcess, ms: number): Promise<boolean> {
  return await Promise.race([process.status.then(() => true), sleep(ms).then(() => false)]);
}

/** Whether `vela status` gets an answer from the daemon at `control` (run in `ns`). */
async function statusAnswers(bed: Bed, ns: string, control: string): Promise<boolean> {
  const shown = await bed.velaCommand(ns, ["status", "--control", control]);
  return shown.code === 0;
}

netnsTest(
  "out of file descriptors, the control socket logs the failed accept, goes on, and answers once some are free",
  async () => {
    if (!await requireProgram("prlimit", "util-linux")) return;
    await using bed = await Bed.create();
    const daemon = bed.vela(bed.b, ["--listen", "--allow", "198.18.0.0/15"]);
    await bed.until(() => statusAnswers(bed, bed.b, daemon.control!), "the daemon's control socket");
    const open = [...Deno.readDirSync(`/proc/${daemon.pid}/fd`)].length;
    const limits = await Deno.readTextFile(`/proc/${daemon.pid}/limits`);
    const [, soft, hard] = /Max open files\s+(\d+)\s+(\d+)/.exec(limits)!;
    const limit = open + 4;
    // Only the soft limit changes: raising a hard limit again needs CAP_SYS_RESOURCE, which a container may lack.
    await bed.exec(bed.b, ["prlimit", "--pid", String(daemon.pid), `--nofile=${limit}:${hard}`], {
      check: true,
    });
    const clients: Deno.UnixConn[] = [];
    try {
      // Silent clients take the daemon's last descriptors; the next connections wait in the backlog.
      for (let i = 0; i < 12; i++) {
        clients.push(await Deno.connect({ transport: "unix", path: daemon.control! }));
      }
      await bed.until(
        () => Promise.resolve(daemon.output().includes("could not accept a client")),
        "the warning about the failed accept",
      );
      assert.equal(daemon.output().includes("Too many open files"), true, daemon.output());
      assert.equal(await exitedWithin(daemon, 0), false, `the daemon runs on: ${daemon.output()}`);
    } finally {
      for (const client of clients) client.close();
    }
    // Still under the low limit: the descriptors the clients held are free again, and accept() works.
    await bed.until(() => statusAnswers(bed, bed.b, daemon.control!), "the control socket answering again");
    assert.equal(await exitedWithin(daemon, 0), false, `the daemon runs on: ${daemon.output()}`);
    await bed.exec(bed.b, ["prlimit", "--pid", String(daemon.pid), `--nofile=${soft}:${hard}`], {
      check: true,
    });
    assert.equal(await statusAnswers(bed, bed.b, daemon.control!), true);
  },
);

netnsTest(
  "a listener started again at once after a kill -9 takes over its control socket and its circuits come back",
  async () => {
    await using bed = await Bed.create();
    const control = `/tmp/vela-${Deno.pid}-${bed.index}-takeover.sock`;
    const config = await Deno.makeTempFile({ prefix: "vela-config-", suffix: ".json" });
    try {
      // Many interfaces make a killed daemon's teardown last: its control socket accepts meanwhile.
      await Deno.writeTextFile(
        config,
        JSON.stringify({ circuits: Array.from({ length: 32 }, (_, i) => ({ peer: bed.b4, vid: i + 1 })) }),
      );
      const listenArgs = ["--listen", "--allow", "198.18.0.0/15", "--control", control];
      const first = bed.vela(bed.b, listenArgs);
      bed.vela(bed.a, ["--config", config]);
      await bed.until(async () => {
        const shown = await bed.velaCommand(bed.b, ["status", "--json", "--control", control]);
        if (shown.code !== 0) return false;
        const circuits = (JSON.parse(shown.stdout) as { circuits: { state: string }[] }).circuits;
        return circuits.filter((c) => c.state === "established").length === 32;
      }, "32 circuits up");
      first.child.kill("SIGKILL");
      const second = bed.vela(bed.b, listenArgs);
      await bed.until(() => statusAnswers(bed, bed.b, control), "the restarted listener's control socket");
      assert.equal(await exitedWithin(second, 500), false, `the restarted listener runs: ${second.output()}`);
      assert.doesNotMatch(second.output(), /Another vela daemon/);
      // Counted on the new listener: the initiator's own view is the old one until it notices the kill.
      await bed.until(
        async () => {
          const shown = await bed.velaCommand(bed.b, ["status", "--json", "--control", control]);
          if (shown.code !== 0) return false;
          const circuits = (JSON.parse(shown.stdout) as { circuits: { state: string }[] }).circuits;
          return circuits.filter((c) => c.state === "established").length === 32;
        },
        "the circuits back",
        30_000,
      );
    } finally {
      await bed.destroy();
      await Deno.remove(config);
      await Deno.remove(control).catch(() => undefined);
    }
  },
);
