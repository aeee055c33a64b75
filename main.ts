/** vela: the command-line entry point. */

import denoJson from "./deno.json" with { type: "json" };
import { type Command, HELP, parseCommandLine, UsageError } from "./src/cli.ts";
import { type Daemon, type DaemonConfig } from "./src/daemon.ts";
import { RuntimeFailure } from "./src/errors.ts";
import { setupLogging } from "./src/log.ts";
import { resolvePeer } from "./src/resolve.ts";
import { startKernelDaemon } from "./src/kernel_daemon.ts";

export const VERSION: string = denoJson.version;

function fail(code: number, message: string): never {
  console.error(`vela: ${message}`);
  if (code === 2) console.error("Try 'vela --help' for more information.");
  Deno.exit(code);
}

async function main(argv: string[]): Promise<void> {
  let command: Command;
  try {
    command = parseCommandLine(argv);
  } catch (error) {
    if (error instanceof UsageError) fail(2, error.message);
    throw error;
  }
  if (command.kind === "help") {
    console.log(HELP);
    return;
  }
  if (command.kind === "version") {
    console.log(`vela ${VERSION}`);
    return;
  }
  const args = command.args;
  setupLogging(args.verbosity);
  let daemon: Daemon;
  try {
    const config: DaemonConfig = {
      port: args.localPort,
      listen: args.listen,
      allow: args.allow,
      insecureAcceptAny: args.insecureAcceptAny,
      circuits: [],
    };
    if (args.peer) {
      const peer = args.peer;
      config.circuits.push({
        peerName: peer.host,
        peer: await resolvePeer(peer.host, peer.family),
        port: args.port,
        vid: peer.vid,
        mode: peer.mode,
        addresses: peer.addresses,
        mtu: peer.mtu,
        ifname: peer.ifname,
      });
    }
    daemon = startKernelDaemon(config);
  } catch (error) {
    if (error instanceof RuntimeFailure) fail(1, error.message);
    throw error;
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`vela: ${signal} received, stopping`);
    await daemon.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

if (import.meta.main) await main(Deno.args);
