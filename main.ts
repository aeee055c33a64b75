/** vela: the command-line entry point. */

import denoJson from "./deno.json" with { type: "json" };
import { type Command, type DaemonArgs, parseCommandLine, UsageError } from "./src/cli.ts";
import { COMMAND_HELP, HELP } from "./src/cli_help.ts";
import { bashCompletion, manPage, zshCompletion } from "./src/cli_docs.ts";
import { defaultControlPath } from "./src/control/socket_path.ts";
import { checkCanMakeInterfaces } from "./src/host_checks.ts";
import { generateKey } from "./src/keys.ts";
import { answerControl } from "./src/control/commands.ts";
import { type DaemonClient, daemonClient } from "./src/control/daemon_client.ts";
import { RemoteControlServer } from "./src/control/remote_server.ts";
import {
  type ControlAccess,
  type DeviceInfo,
  formatConnect,
  nok,
  parseReply,
} from "./src/control/protocol.ts";
import { ControlServer } from "./src/control/server.ts";
import type { CircuitStatus, Daemon, DaemonStatus } from "./src/daemon/daemon.ts";
import { RuntimeFailure } from "./src/errors.ts";
import { startKernelDaemon } from "./src/daemon/kernel_daemon.ts";
import { logger, setupLogging } from "./src/log.ts";
import { serveMetrics } from "./src/metrics.ts";
import { resolvePeer } from "./src/resolve.ts";
import { findCircuit, renderCircuit, renderStatus, renderTop } from "./src/status_table.ts";
import { buildDaemonConfig, checkConfigFile, remoteControlKeys } from "./src/startup.ts";
import { CONNECT_POLL_MS, CONNECT_WAIT_MS } from "./src/timing.ts";

export const VERSION: string = denoJson.version;

function fail(code: number, message: string): never {
  console.error(`vela: ${message}`);
  if (code === 2) console.error("Try 'vela --help' for more information.");
  Deno.exit(code);
}

/** Sends a command to the daemon and returns the reply's body; a NOK exits 1 with its reason. */
async function ask(client: DaemonClient, line: string): Promise<{ text: string; json?: unknown }> {
  const reply = parseReply(await client.send(line));
  if (!reply.ok) throw new RuntimeFailure(reply.text);
  return reply;
}

async function runDaemon(args: DaemonArgs): Promise<void> {
  setupLogging(args.verbosity);
  const log = logger("main");
  const config = await buildDaemonConfig(args, (text) => log.warn(text));
  // What can fail without touching anything comes first: the host's ability to make interfaces, then
  // each listening socket, and only then the daemon and its interfaces.
  checkCanMakeInterfaces();
  const remoteKeys = args.controlListen ? remoteControlKeys(args, config, (text) => log.warn(text)) : [];
  let daemon: Daemon | undefined;
  const handler = (line: string, access: ControlAccess = "admin") =>
    daemon
      ? answerControl(daemon, resolvePeer, line, access)
      : Promise.resolve(nok("the daemon is starting"));
  // The control socket first: a second daemon on the same path is told so before it touches anything.
  const control = await ControlServer.listen(args.control, (line) => handler(line));
  let remote: RemoteControlServer | undefined;
  let metrics: { close(): Promise<void> } | undefined;
  const closeListeners = async () => {
    await control.close();
    await remote?.close();
    await metrics?.close();
  };
  try {
    if (args.controlListen) {
      remote = await RemoteControlServer.listen(args.controlListen, remoteKeys, handler);
    }
    if (args.metrics) metrics = serveMetrics(args.metrics, () => daemon!.status());
    daemon = startKernelDaemon(config, args.underlay, {
      offload: args.offload,
      datapathThreads: args.datapathThreads,
      moderationUs: args.moderationUs,
    });
  } catch (error) {
    await closeListeners();
    await daemon?.stop();
    throw error;
  }
  const running = daemon;
  const readers = remoteKeys.filter((k) => k.access === "read").length;
  const remoteText = remote
    ? `, remote control on ${hostPortText(remote)} (${remoteKeys.length - readers} admin key${
      remoteKeys.length - readers === 1 ? "" : "s"
    }, ${readers} read-only)`
    : "";
  log.info(
    `Control socket ${args.control}${remoteText}${
      args.metrics ? `, metrics on ${hostPortText(args.metrics)}` : ""
    }`,
  );
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`vela: ${signal} received, stopping`);
    await closeListeners();
    await running.stop();
    Deno.exit(0);
  };
  // A datapath that died (a Worker crashed) has stopped the daemon and removed its interfaces: exit 1.
  running.failed.then(async (error) => {
    stopping = true;
    await closeListeners();
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
      const next = await buildDaemonConfig(args, (text) => log.warn(text));
      for (const spec of running.runningConfig().circuits) {
        const kept = next.circuits.some((c) => c.vid === spec.vid && c.peerName === spec.peerName);
        if (!kept && !config.circuits.some((c) => c.vid === spec.vid && c.peerName === spec.peerName)) {
          log.warn(
            `SIGHUP: circuit ${spec.vid} to ${spec.peerName} was added with vela connect and is not in ${args.configFile}; it closes (vela showconf prints a file that keeps it)`,
          );
        }
      }
      const changed = running.reload(next);
      log.info(
        `SIGHUP: read ${args.configFile} again; ${changed.added} circuits added, ${changed.removed} removed, ${changed.kept} unchanged`,
      );
    } catch (error) {
      log.error(`SIGHUP: kept the running configuration: ${(error as Error).message}`);
    }
  });
}

/** "198.18.0.1:4456", "[fd00::1]:4456". */
function hostPortText(address: { hostname: string; port: number }): string {
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}

/** Polls STATUS? until the circuit is established, or gives up after CONNECT_WAIT_MS. */
async function waitEstablished(
  client: DaemonClient,
  host: string,
  vid: number,
): Promise<CircuitStatus | undefined> {
  const deadline = Date.now() + CONNECT_WAIT_MS;
  while (Date.now() < deadline) {
    const status = (await ask(client, "STATUS? JSON")).json as DaemonStatus;
    const circuit = status.circuits.find((c) => c.vid === vid && (c.peer === host || c.address === host));
    if (circuit?.state === "established") return circuit;
    await new Promise((resolve) => setTimeout(resolve, CONNECT_POLL_MS));
  }
  return undefined;
}

/** `vela top`: the live view, redrawn every interval (the screen cleared only on a terminal). */
async function watch(client: DaemonClient, intervalS: number, count?: number): Promise<void> {
  const where = client.where;
  const terminal = Deno.stdout.isTerminal();
  let previous: { status: DaemonStatus; at: number } | undefined;
  for (let n = 0; count === undefined || n < count; n++) {
    if (n > 0) await new Promise((resolve) => setTimeout(resolve, intervalS * 1000));
    const status = (await ask(client, "STATUS? JSON")).json as DaemonStatus;
    const at = performance.now();
    const seconds = previous ? (at - previous.at) / 1000 : 0;
    const title = `vela top: ${where}, every ${intervalS} s, ${new Date().toISOString().slice(11, 19)} UTC${
      terminal ? " (Ctrl-C ends)" : ""
    }`;
    const view = renderTop(status, previous?.status, seconds, title);
    console.log(terminal ? `\x1b[H\x1b[2J${view}` : `${view}\n`);
    previous = { status, at };
  }
}

/** The commands that talk to a daemon, through the control socket or remote control. */
type ClientCommand = Extract<Command, { target: unknown }>;

async function run(command: Command): Promise<void> {
  if ("target" in command) {
    using client = daemonClient(command.target, (text) => console.error(`vela: warning: ${text}`));
    await runClient(command, client);
    return;
  }
  switch (command.kind) {
    case "help":
      console.log(command.command === undefined ? HELP : COMMAND_HELP[command.command]);
      return;
    case "version":
      console.log(`vela ${VERSION}`);
      return;
    case "genkey":
      console.log(generateKey());
      return;
    case "completion":
      console.log(command.shell === "bash" ? bashCompletion() : zshCompletion());
      return;
    case "man":
      console.log(manPage(VERSION));
      return;
    case "check-config": {
      const warnings: string[] = [];
      const config = checkConfigFile(command.file, (text) => warnings.push(text));
      for (const warning of warnings) console.error(`vela: warning: ${warning}`);
      const keys = [config.keyFile, ...(config.keyFiles ?? []), ...config.circuits.map((c) => c.keyFile)]
        .filter((k) => k !== undefined).length;
      console.log(
        `${command.file}: valid (${
          config.listen ? "listener, " : ""
        }${config.circuits.length} circuits, ${keys} key file${keys === 1 ? "" : "s"} read)`,
      );
      return;
    }
    case "daemon":
      await runDaemon(command.args);
      return;
  }
}

async function runClient(command: ClientCommand, client: DaemonClient): Promise<void> {
  switch (command.kind) {
    case "status": {
      const reply = await ask(client, "STATUS? JSON");
      const status = reply.json as DaemonStatus;
      if (command.circuit !== undefined) {
        const circuit = findCircuit(status, command.circuit);
        if (!circuit) {
          const names = status.circuits.map((c) => c.ifname ?? `${c.vid}@${c.peer}`);
          throw new RuntimeFailure(
            `No circuit ${command.circuit} here; the circuits are ${names.join(", ") || "none"}`,
          );
        }
        console.log(command.json ? JSON.stringify(circuit, null, 2) : renderCircuit(circuit));
        return;
      }
      console.log(command.json ? JSON.stringify(status, null, 2) : renderStatus(status));
      return;
    }
    case "top":
      await watch(client, command.intervalS, command.count);
      return;
    case "showconf": {
      const reply = await ask(client, "CONFIG? JSON");
      console.log(JSON.stringify(reply.json, null, 2));
      return;
    }
    case "devices": {
      const reply = await ask(client, "DEVICES? JSON");
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
      await ask(client, `CLOSE ${command.peer} ${command.vid}${command.json ? " JSON" : ""}`);
      if (!command.json) console.log(`Closed circuit ${command.vid} with ${command.peer}`);
      else console.log(JSON.stringify({ closed: true }));
      return;
    }
    case "connect": {
      const circuit = command.circuit;
      await ask(client, formatConnect(circuit, command.port) + " JSON");
      const established = await waitEstablished(client, circuit.host, circuit.vid);
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
  }
}

if (import.meta.main) {
  let command: Command;
  try {
    command = parseCommandLine(Deno.args, defaultControlPath());
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
