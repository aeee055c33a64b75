/**
 * deno task demo: VELA working between two network namespaces on this machine. Creates the namespaces,
 * starts a listener ("router2") and an initiator ("router1") as real processes, each with its metrics
 * on the namespace's loopback, and prints each daemon's log as it comes, labelled. Shows the interfaces, a
 * ping, a 5-second iperf3 result, `vela status` on both sides and one metrics scrape, removes everything
 * again (also on Ctrl-C or a failure) and ends with what to try next.
 */

import { Bed, type BedProcess, hasProgram, namespaceSupport } from "./netns.ts";

/** The metrics port; each daemon binds it on the loopback of its own namespace. */
const METRICS_PORT = 9455;

function say(text: string): void {
  console.log(`\n== ${text}`);
}

/** Prints a daemon's log line as it arrives, labelled with the daemon's name. */
function labelled(label: string): (line: string) => void {
  return (line) => console.log(`[${label}] ${line}`);
}

/** The lines of a metrics page the demo shows: each circuit's state and counters, and non-zero drops. */
export function interestingMetrics(page: string): string[] {
  return page.split("\n").filter((line) =>
    /^vela_circuit_(up|tx_packets_total|tx_bytes_total|rx_packets_total|rx_bytes_total|rtt_seconds)\{/
      .test(line) ||
    (/^vela_(dropped_datagrams_total|circuit_send_failed_total|circuit_device_refused_total)\{/.test(line) &&
      !/ 0$/.test(line))
  );
}

/** Fetches http://127.0.0.1:PORT/metrics from inside namespace `ns` (Deno's fetch, nothing else needed). */
async function scrape(bed: Bed, ns: string, port: number): Promise<string> {
  const url = `http://127.0.0.1:${port}/metrics`;
  const code =
    `const r = await fetch(${JSON.stringify(url)}); if (!r.ok) throw new Error("HTTP " + r.status); ` +
    `console.log(await r.text());`;
  const result = await bed.exec(ns, [Deno.execPath(), "eval", "--quiet", code]);
  if (result.code !== 0) throw new Error(`scraping ${url} in ${ns} failed: ${result.stderr.trim()}`);
  return result.stdout;
}

const WHAT_NEXT = `
== What to try next
By hand, as root in this checkout (\`deno task vela\` is this checkout's vela; a compiled one is \`vela\`), in two
namespaces like the demo's but with a key; each namespace made by ip netns gets its own default control socket
(/run/vela/r1.sock, /run/vela/r2.sock), so the commands need no --control:
  ip netns add r1; ip netns add r2
  ip link add v1 netns r1 type veth peer name v2 netns r2
  ip -n r1 addr add 198.18.0.1/24 dev v1; ip -n r1 link set v1 up; ip -n r1 link set lo up
  ip -n r2 addr add 198.18.0.2/24 dev v2; ip -n r2 link set v2 up; ip -n r2 link set lo up
  deno task -q vela genkey > /tmp/vela.key; chmod 600 /tmp/vela.key
  ip netns exec r2 deno task -q vela --listen --key-file /tmp/vela.key &
  ip netns exec r1 deno task -q vela --peer 198.18.0.2 --vid 3 --address 198.18.207.1/30 \\
      --key-file /tmp/vela.key --metrics 127.0.0.1:${METRICS_PORT} &
  sleep 2; ip netns exec r1 ping -c 3 198.18.207.2
  ip netns exec r1 deno task -q vela status         # circuits, RTT, counters, drops
  ip netns exec r1 deno task -q vela status vela3   # one circuit in full: addresses, keys, last heard
  ip netns exec r1 deno task -q vela top            # live rates (Ctrl-C ends)
  ip netns exec r1 deno task -q vela connect --peer 198.18.0.2 --vid 4 \\
      --address 198.18.208.1/30   # a second circuit, no restart
  ip netns exec r1 deno task -q vela devices
  ip netns exec r1 deno task -q vela showconf       # the running configuration as a --config file
  ip netns exec r1 deno task -q vela close --peer 198.18.0.2 --vid 4
  ip netns exec r1 busybox wget -qO- http://127.0.0.1:${METRICS_PORT}/metrics | grep -v '^#'   # or curl
  kill %1 %2; ip netns del r1; ip netns del r2
Then: \`deno task vela --help\` for every option, README.md "Quick start on two routers" for real hosts,
and \`deno task test\` for every test (root runs the namespace tests too).`;

/** Runs the demo; returns the exit code. */
export async function main(): Promise<number> {
  const support = await namespaceSupport();
  if (!support.ok) {
    console.error(`The demo cannot run: ${support.reason}.`);
    return 1;
  }
  const missing = [];
  for (const [program, pkg] of [["ping", "iputils-ping"], ["iperf3", "iperf3"]]) {
    if (!(await hasProgram(program))) missing.push(`${program} (apt-get install ${pkg})`);
  }
  if (missing.length > 0) {
    console.error(`The demo needs ${missing.join(" and ")}.`);
    return 1;
  }

  // Ctrl-C (or SIGTERM) at any point removes what exists so far; the one cleanup runs once and everyone
  // who asks for it waits for the same one, so an exit never cuts a cleanup short.
  let bed: Bed | undefined = undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => cleaning ??= bed?.destroy() ?? Promise.resolve();
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      interrupted = true;
      console.error(`\n${signal}: removing the namespaces and their processes`);
      if (bed) {
        await cleanup();
        Deno.exit(130);
      }
    });
  }
  bed = await Bed.create();
  if (interrupted) {
    await cleanup();
    Deno.exit(130);
  }

  // A daemon that exits before the demo stops it is a failure at once, not a timeout later.
  const daemons: { label: string; process: BedProcess; exited: boolean }[] = [];
  let stopping = false;
  const checkDaemons = (): void => {
    const early = daemons.find((d) => d.exited);
    if (early && !stopping) throw new Error(`${early.label}'s vela exited early (its log is above)`);
  };
  const daemon = (label: string, ns: string, args: string[]): BedProcess => {
    console.log(`${label}# vela ${args.join(" ")}`);
    const process = bed!.vela(ns, args, { onLine: labelled(label) });
    const entry = { label, process, exited: false };
    process.status.finally(() => entry.exited = true).catch(() => undefined);
    daemons.push(entry);
    return process;
  };

  // After Ctrl-C the demo starts no new section while the cleanup runs.
  const section = (text: string): void => {
    if (interrupted) throw new Error("interrupted");
    say(text);
  };

  let failed = false;
  try {
    say(`router1 is namespace ${bed.a} (${bed.a4}), router2 is ${bed.b} (${bed.b4}), joined by a veth pair`);
    const metrics = `127.0.0.1:${METRICS_PORT}`;
    const listener = daemon("router2", bed.b, ["--listen", "--allow", "198.18.0.0/15", "--metrics", metrics]);
    const initiator = daemon("router1", bed.a, [
      "--peer",
      bed.b4,
      "--vid",
      "3",
      "--address",
      "198.18.207.1/30",
      "--address",
      "fd00:207::1/126",
      "--metrics",
      metrics,
    ]);
    const b = bed;
    await bed.until(async () => {
      checkDaemons();
      return (await b.hasLink(b.a, "vela3")) && (await b.hasLink(b.b, "vela3"));
    }, "vela3");
    await bed.waitPing(bed.a, "198.18.207.2");
    checkDaemons();

    section("The interfaces (the listener's side was configured by the handshake)");
    for (const [label, ns] of [["router1", bed.a], ["router2", bed.b]]) {
      console.log(`${label}# ip addr show vela3`);
      console.log((await bed.exec(ns, ["ip", "addr", "show", "vela3"])).stdout.trimEnd());
    }

    section("ping over IPv4 and IPv6");
    console.log("router1# ping -c 3 198.18.207.2");
    console.log((await bed.exec(bed.a, ["ping", "-c", "3", "198.18.207.2"])).stdout.trimEnd());
    await bed.waitPing(bed.a, "fd00:207::2");
    console.log("router1# ping -c 3 fd00:207::2");
    console.log((await bed.exec(bed.a, ["ping", "-c", "3", "fd00:207::2"])).stdout.trimEnd());

    section("iperf3, one TCP stream for 5 seconds through vela3");
    const server = bed.spawn(bed.b, ["iperf3", "-s", "-1", "-B", "198.18.207.2"]);
    await bed.until(
      async () => (await b.exec(b.b, ["ss", "-ltn", "sport = :5201"])).stdout.includes("5201"),
      "iperf3",
    );
    console.log("router1# iperf3 -c 198.18.207.2 -t 5");
    const client = await bed.exec(bed.a, ["iperf3", "-c", "198.18.207.2", "-t", "5"]);
    console.log(client.stdout.trimEnd());
    await bed.stop(server);
    checkDaemons();

    section("vela status on both routers (the CLI asks the daemon through its control socket)");
    for (
      const [label, ns, process] of [["router1", bed.a, initiator], ["router2", bed.b, listener]] as const
    ) {
      console.log(`${label}# vela status --control ${process.control}`);
      const status = await bed.velaCommand(ns, ["status", "--control", process.control!]);
      if (status.code !== 0) {
        throw new Error(`vela status in ${label} exited ${status.code}: ${status.stderr.trim()}`);
      }
      console.log(status.stdout.trimEnd());
    }

    section(`One metrics scrape: GET http://${metrics}/metrics inside router1 (circuit state and counters)`);
    for (const line of interestingMetrics(await scrape(bed, bed.a, METRICS_PORT))) console.log(line);

    section("Stopping both daemons with SIGTERM");
    stopping = true;
    await bed.stop(initiator);
    await bed.stop(listener);
    const left = (await bed.hasLink(bed.a, "vela3")) || (await bed.hasLink(bed.b, "vela3"));
    console.log(left ? "vela3 is still there: that is a bug" : "Both vela3 interfaces are gone.");
    failed = left;
  } catch (error) {
    // After Ctrl-C the cleanup kills what the demo was waiting for: that is no failure to report.
    if (!interrupted) console.error(`The demo failed: ${(error as Error).message}`);
    failed = true;
  } finally {
    await cleanup();
    say("Namespaces removed");
  }
  if (!failed) console.log(WHAT_NEXT);
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
