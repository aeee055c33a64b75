/** What the daemon answers on its control socket: each parsed request carried out against the Daemon. */

import denoJson from "../deno.json" with { type: "json" };
import { type DeviceInfo, formatDevices, formatStatus, nok, parseRequest } from "./control_protocol.ts";
import type { Daemon } from "./daemon.ts";
import { RuntimeFailure } from "./errors.ts";
import type { IpAddress } from "./ip.ts";
import { DEFAULT_PORT } from "./cli.ts";

/** Resolves a peer name for CONNECT (the daemon's resolver). */
export type Resolve = (host: string, family?: 4 | 6) => Promise<IpAddress>;

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

/** Answers one command line. Never throws for anything a client can send. */
export async function answerControl(daemon: Daemon, resolve: Resolve, line: string): Promise<string> {
  const request = parseRequest(line);
  if ("error" in request) return nok(request.error);
  switch (request.command) {
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
        daemon.connect({
          peerName: circuit.host,
          peer: await resolve(circuit.host, circuit.family),
          port: request.port ?? DEFAULT_PORT,
          vid: circuit.vid,
          mode: circuit.mode,
          addresses: circuit.addresses,
          mtu: circuit.mtu,
          ifname: circuit.ifname,
          family: circuit.family,
        });
      } catch (error) {
        if (error instanceof RuntimeFailure) return nok(error.message);
        throw error;
      }
      const ifname = circuit.ifname ?? `vela${circuit.vid}`;
      return request.json
        ? `OK ${JSON.stringify({ started: true, ifname })}`
        : `OK circuit ${circuit.vid} to ${circuit.host} started on ${ifname}`;
    }
  }
}
