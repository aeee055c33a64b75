/** vela: the command-line entry point. */

import denoJson from "./deno.json" with { type: "json" };
import { type Command, HELP, parseCommandLine, UsageError } from "./src/cli.ts";
import type { Daemon } from "./src/daemon.ts";
import { RuntimeFailure } from "./src/errors.ts";
import { generateKey } from "./src/keys.ts";
import { logger, setupLogging } from "./src/log.ts";
import { buildDaemonConfig } from "./src/startup.ts";
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
  if (command.kind === "genkey") {
    console.log(generateKey());
    return;
  }
  const args = command.args;
  setupLogging(args.verbosity);
  const log = logger("main");
  let daemon: Daemon;
  try {
    daemon = startKernelDaemon(await buildDaemonConfig(args, (text) => log.warn(text)));
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
