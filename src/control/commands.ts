/** What the daemon answers on its control socket: each parsed request carried out against the Daemon. */

import denoJson from "../../deno.json" with { type: "json" };
import {
  type ControlAccess,
  type DeviceInfo,
  formatDevices,
  formatStatus,
  isMutating,
  nok,
  parseRequest,
} from "./protocol.ts";
import { configFileObject } from "../show_config.ts";
import type { Daemon } from "../daemon/daemon.ts";
import { RuntimeFailure } from "../errors.ts";
import { DEFAULT_PORT } from "../cli.ts";
import { defaultInterfaceName } from "../circuit_rules.ts";
import { circuitSpec, type Resolve } from "../startup.ts";

/** The DEVICES? view of a daemon's status. */
export function devicesOf(daemon: Daemon): DeviceInfo[] {
  return daemon.status().circuits.filter((c) => c.ifname !== null).map((c) => ({
    ifname: c.ifname!,
    mode: c.mode,
    mtu: c.mtu,
    peer: c.peer,
    vid: c.vid,
    state: c.state,
  }));
}

/**
 * Answers one command line, from any transport (the local socket, a remote client): the one handler of
 * the control protocol. A client with `read` access is refused CONNECT and CLOSE. Never throws for
 * anything a client can send.
 */
export async function answerControl(
  daemon: Daemon,
  resolve: Resolve,
  line: string,
  access: ControlAccess = "admin",
): Promise<string> {
  const request = parseRequest(line);
  if ("error" in request) return nok(request.error);
  if (access === "read" && isMutating(request)) {
    return nok(`${request.command} needs the control key; this key may only read`);
  }
  switch (request.command) {
    case "CONFIG?":
      return `OK ${JSON.stringify(configFileObject(daemon.runningConfig()))}`;
    case "STATUS?":
      return formatStatus(daemon.status(), request.json);
    case "DEVICES?":
      return formatDevices(devicesOf(daemon), request.json);
    case "VERSION?":
      return request.json
        ? `OK ${JSON.stringify({ version: denoJson.version })}`
        : `OK vela ${denoJson.version}`;
    case "CLOSE": {
      const closed = daemon.close(request.peer, request.vid);
      if (!closed) return nok(`no circuit ${request.vid} with ${request.peer}`);
      return request.json ? `OK ${JSON.stringify({ closed: true })}` : `OK closed circuit ${request.vid}`;
    }
    case "CONNECT": {
      const circuit = request.circuit;
      try {
        daemon.connect(await circuitSpec(circuit, request.port ?? DEFAULT_PORT, resolve));
      } catch (error) {
        if (error instanceof RuntimeFailure) return nok(error.message);
        throw error;
      }
      const ifname = circuit.ifname ?? defaultInterfaceName(circuit.vid);
      return request.json
        ? `OK ${JSON.stringify({ started: true, ifname })}`
        : `OK circuit ${circuit.vid} to ${circuit.host} started on ${ifname}`;
    }
  }
}
