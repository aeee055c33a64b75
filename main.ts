/** vela: the command-line entry point. */

import denoJson from "./deno.json" with { type: "json" };
import { type Command, type DaemonArgs, HELP, parseCommandLine, UsageError } from "./src/cli.ts";
import { ConfigError, readConfigFile } from "./src/config_file.ts";
import { answerControl } from "./src/control/commands.ts";
import { sendControl } from "./src/control/client.ts";
import { type DeviceInfo, formatConnect, nok, parseReply } from "./src/control/protocol.ts";
import { ControlServer } from "./src/control/server.ts";
import type { CircuitStatus, Daemon, DaemonStatus } from "./src/daemon/daemon.ts";
import { RuntimeFailure } from "./src/errors.ts";
import { startKernelDaemon } from "./src/daemon/kernel_daemon.ts";
import { generateKey } from "./src/keys.ts";
import { logger, setupLogging } from "./src/log.ts";
import { serveMetrics } from "./src/metrics.ts";
import { resolvePeer } from "./src/resolve.ts";
import { renderStatus } from "./src/status_table.ts";
import { buildDaemonConfig } from "./src/startup.ts";
import { CONNECT_POLL_MS, CONNECT_WAIT_MS } from "./src/timing.ts";

export const VERSION: string = denoJson.version;

function fail(code: number, message: string): never {
  console.error(`vela: ${message}`);
  if (code === 2) console.error("Try 'vela --help' for more information.");
  Deno.exit(code);
}

/** Sends a command to the daemon and returns the reply's body; a NOK exits 1 with its reason. */
async function ask(control: string, line: string): Promise<{ text: string; json?: unknown }> {
  const reply = parseReply(await sendControl(control, line));
  if (!reply.ok) throw new RuntimeFailure(reply.text);
  return reply;
}

async function runDaemon(args: DaemonArgs): Promise<void> {
  setupLogging(args.verbosity);
  const log = logger("main");
  const config = await buildDaemonConfig(args, (text) => log.warn(text));
  // The control socket first: a second daemon on the same path is told so before it touches anything.
  let daemon: Daemon | undefined;
  const control = await ControlServer.listen(
    args.control,
    (line) =>
      daemon ? answerControl(daemon, resolvePeer, line) : Promise.resolve(nok("the daemon is starting")),
  );
  let metrics: { close(): Promise<void> } | undefined;
  try {
    daemon = startKernelDaemon(config, args.underlay, {
      offload: args.offload,
      datapathThreads: args.datapathThreads,
      moderationUs: args.moderationUs,
    });
    if (args.metrics) metrics = serveMetrics(args.metrics, () => daemon!.status());
  } catch (error) {
    await control.close();
    await daemon?.stop();
    throw error;
  }
  const running = daemon;
  log.info(
    `Control socket ${args.control}${
      args.metrics ? `, metrics on ${args.metrics.hostname}:${args.metrics.port}` : ""
    }`,
  );
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`vela: ${signal} received, stopping`);
    await control.close();
    await metrics?.close();
    await running.stop();
    Deno.exit(0);
  };
  // A datapath that died (a Worker crashed) has stopped the daemon and removed its interfaces: exit 1.
  running.failed.then(async (error) => {
    stopping = true;
    await control.close();
    await metrics?.close();
    console.error(`vela: ${error.message}; stopped`);
    Deno.exit(1);
  });
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGHUP", async () => {
    if (args.configFile === undefined) {
      log.warn("SIGHUP: there is no --config file to read again");
      return;
    }
    try {
      const changed = running.reload(await buildDaemonConfig(args, (text) => log.warn(text)));
      log.info(
        `SIGHUP: read ${args.configFile} again; ${changed.added} circuits added, ${changed.removed} removed, ${changed.kept} unchanged`,
      );
    } catch (error) {
      log.error(`SIGHUP: kept the running configuration: ${(error as Error).message}`);
    }
  });
}

/** Polls STATUS? until the circuit is established, or gives up after CONNECT_WAIT_MS. */
async function waitEstablished(
  control: string,
  host: string,
  vid: number,
): Promise<CircuitStatus | undefined> {
  const deadline = Date.now() + CONNECT_WAIT_MS;
  while (Date.now() < deadline) {
    const status = (await ask(control, "STATUS? JSON")).json as DaemonStatus;
    const circuit = status.circuits.find((c) => c.vid === vid && (c.peer === host || c.address === host));
    if (circuit?.state === "established") return circuit;
    await new Promise((resolve) => setTimeout(resolve, CONNECT_POLL_MS));
  }
  return undefined;
}

async function run(command: Command): Promise<void> {
  switch (command.kind) {
    case "help":
      console.log(HELP);
      return;
    case "version":
      console.log(`vela ${VERSION}`);
      return;
    case "genkey":
      console.log(generateKey());
      return;
    case "check-config":
      try {
        const config = readConfigFile(command.file);
        console.log(
          `${command.file}: valid (${config.listen ? "listener, " : ""}${config.circuits.length} circuits)`,
        );
      } catch (error) {
        if (error instanceof ConfigError) throw new RuntimeFailure(error.message);
        throw error;
      }
      return;
    case "status": {
      const reply = await ask(command.control, "STATUS? JSON");
      console.log(
        command.json ? JSON.stringify(reply.json, null, 2) : renderStatus(reply.json as DaemonStatus),
      );
      return;
    }
    case "devices": {
      const reply = await ask(command.control, "DEVICES? JSON");
      const devices = reply.json as DeviceInfo[];
      if (command.json) {
        console.log(JSON.stringify(devices, null, 2));
        return;
      }
      for (const d of devices) {
        console.log(`${d.ifname}\t${d.mode}\tmtu ${d.mtu}\t${d.peer} vid ${d.vid}\t${d.state}`);
      }
      return;
    }
    case "close": {
      await ask(command.control, `CLOSE ${command.peer} ${command.vid}${command.json ? " JSON" : ""}`);
      if (!command.json) console.log(`Closed circuit ${command.vid} with ${command.peer}`);
      else console.log(JSON.stringify({ closed: true }));
      return;
    }
    case "connect": {
      const circuit = command.circuit;
      await ask(command.control, formatConnect(circuit, command.port) + " JSON");
      const established = await waitEstablished(command.control, circuit.host, circuit.vid);
      if (!established) {
        throw new RuntimeFailure(
          `Circuit ${circuit.vid} to ${circuit.host} is not established after ${
            CONNECT_WAIT_MS / 1000
          } s; see vela status`,
        );
      }
      if (command.json) console.log(JSON.stringify(established, null, 2));
      else {
        console.log(
          `Circuit ${circuit.vid} to ${circuit.host} established on ${established.ifname}, MTU ${established.mtu}`,
        );
      }
      return;
    }
    case "daemon":
      await runDaemon(command.args);
      return;
  }
}

if (import.meta.main) {
  let command: Command;
  try {
    command = parseCommandLine(Deno.args);
  } catch (error) {
    if (error instanceof UsageError) fail(2, error.message);
    throw error;
  }
  try {
    await run(command);
  } catch (error) {
    if (error instanceof RuntimeFailure) fail(1, error.message);
    throw error;
  }
}
