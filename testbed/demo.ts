/**
 * deno task demo: VELA working between two network namespaces on this machine. Creates the namespaces,
 * starts a listener and an initiator as real processes, shows the interfaces, a ping and a 5-second
 * iperf3 result, and removes everything again.
 */

import { Bed, hasProgram, namespaceSupport } from "./netns.ts";

function say(text: string): void {
  console.log(`\n== ${text}`);
}

const support = await namespaceSupport();
if (!support.ok) {
  console.error(`The demo cannot run: ${support.reason}.`);
  Deno.exit(1);
}
const missing = [];
for (const [program, pkg] of [["ping", "iputils-ping"], ["iperf3", "iperf3"]]) {
  if (!(await hasProgram(program))) missing.push(`${program} (apt-get install ${pkg})`);
}
if (missing.length > 0) {
  console.error(`The demo needs ${missing.join(" and ")}.`);
  Deno.exit(1);
}

const bed = await Bed.create();
const cleanup = async () => {
  await bed.destroy();
};
Deno.addSignalListener("SIGINT", async () => {
  await cleanup();
  Deno.exit(130);
});
let failed = false;
try {
  say(`Namespaces ${bed.a} (${bed.a4}) and ${bed.b} (${bed.b4}), joined by a veth pair`);
  const listenerArgs = ["--listen", "--allow", "198.18.0.0/15"];
  const initiatorArgs = [
    "--peer",
    bed.b4,
    "--vid",
    "3",
    "--address",
    "198.18.207.1/30",
    "--address",
    "fd00:207::1/126",
  ];
  console.log(`${bed.b}# vela ${listenerArgs.join(" ")}`);
  const listener = bed.vela(bed.b, listenerArgs);
  console.log(`${bed.a}# vela ${initiatorArgs.join(" ")}`);
  const initiator = bed.vela(bed.a, initiatorArgs);
  await bed.until(
    async () => (await bed.hasLink(bed.a, "vela3")) && (await bed.hasLink(bed.b, "vela3")),
    "vela3",
  );
  await bed.waitPing(bed.a, "198.18.207.2");

  say("The interfaces (the listener's side was configured by the handshake)");
  for (const ns of [bed.a, bed.b]) {
    console.log(`${ns}:`);
    console.log((await bed.exec(ns, ["ip", "addr", "show", "vela3"])).stdout.trimEnd());
  }

  say("ping over IPv4 and IPv6");
  console.log((await bed.exec(bed.a, ["ping", "-c", "3", "198.18.207.2"])).stdout.trimEnd());
  await bed.waitPing(bed.a, "fd00:207::2");
  console.log((await bed.exec(bed.a, ["ping", "-c", "3", "fd00:207::2"])).stdout.trimEnd());

  say("iperf3, one TCP stream for 5 seconds through vela3");
  const server = bed.spawn(bed.b, ["iperf3", "-s", "-1", "-B", "198.18.207.2"]);
  await bed.until(
    async () => (await bed.exec(bed.b, ["ss", "-ltn", "sport = :5201"])).stdout.includes("5201"),
    "iperf3",
  );
  const client = await bed.exec(bed.a, ["iperf3", "-c", "198.18.207.2", "-t", "5"]);
  console.log(client.stdout.trimEnd());
  await bed.stop(server);

  say("Stopping both daemons with SIGTERM");
  await bed.stop(initiator);
  await bed.stop(listener);
  console.log(initiator.output().trimEnd());
  console.log(listener.output().trimEnd());
  const left = (await bed.hasLink(bed.a, "vela3")) || (await bed.hasLink(bed.b, "vela3"));
  console.log(left ? "vela3 is still there: that is a bug" : "Both vela3 interfaces are gone.");
  failed = left;
} catch (error) {
  console.error(`The demo failed: ${(error as Error).message}`);
  failed = true;
} finally {
  await cleanup();
  say("Namespaces removed");
}
Deno.exit(failed ? 1 : 0);
