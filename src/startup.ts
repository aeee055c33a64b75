/** From the command line (and --config, --key-file) to a daemon configuration, peers resolved. */

import type { CircuitArgs, DaemonArgs } from "./cli.ts";
import type { IpAddress } from "./ip.ts";
import { ConfigError, type FileConfig, readConfigFile } from "./config_file.ts";
import type { CircuitSpec, DaemonConfig } from "./daemon/daemon.ts";
import { RuntimeFailure } from "./errors.ts";
import { KeyError, readKeyFile } from "./keys.ts";
import { resolvePeer } from "./resolve.ts";
import { DEFAULT_PORT } from "./cli.ts";

/** Resolves a peer name to one address of the wanted family (resolvePeer, or a fake in tests). */
export type Resolve = (host: string, family?: 4 | 6) => Promise<IpAddress>;

/** A circuit as given (flags, config file or CONNECT) with its peer resolved: what the daemon starts. */
export async function circuitSpec(
  circuit: CircuitArgs,
  port: number,
  resolve: Resolve,
): Promise<CircuitSpec> {
  return {
    peerName: circuit.host,
    peer: await resolve(circuit.host, circuit.family),
    port,
    vid: circuit.vid,
    mode: circuit.mode,
    addresses: circuit.addresses,
    mtu: circuit.mtu,
    ifname: circuit.ifname,
    bridge: circuit.bridge,
    farBridge: circuit.farBridge,
    filter: circuit.filter,
    family: circuit.family,
    cipher: circuit.cipher,
  };
}

/** The settings of a daemon as a config file would give them. */
function fromArgs(args: DaemonArgs): FileConfig {
  const peer = args.peer;
  return {
    listen: args.listen,
    allow: args.allow,
    insecureAcceptAny: args.insecureAcceptAny,
    port: args.listen ? args.port : args.localPort,
    keyFile: args.keyFile,
    keyFiles: args.extraKeyFiles,
    cipher: args.cipher,
    rekeyAfterMs: args.rekeyAfterMs,
    maxCircuits: args.maxCircuits,
    maxCircuitsPerPeer: args.maxCircuitsPerPeer,
    bridge: args.bridge,
    offerBridges: args.offerBridges,
    up: args.up,
    down: args.down,
    circuits: peer ? [{ ...peer, peer: peer.host, port: args.port }] : [],
  };
}

/** Reads a key file; throws RuntimeFailure with the KeyError's sentence. */
function readKey(path: string, warn: (text: string) => void): Uint8Array {
  try {
    const read = readKeyFile(path);
    if (read.warning) warn(read.warning);
    return read.key;
  } catch (error) {
    if (error instanceof KeyError) throw new RuntimeFailure(error.message);
    throw error;
  }
}

/**
 * Builds the daemon configuration: reads --config or takes the flags, reads the key file, resolves
 * each peer. Throws RuntimeFailure with an operator's sentence. `warn` gets non-fatal findings.
 */
export async function buildDaemonConfig(
  args: DaemonArgs,
  warn: (text: string) => void,
): Promise<DaemonConfig> {
  let settings: FileConfig;
  if (args.configFile !== undefined) {
    try {
      settings = readConfigFile(args.configFile);
    } catch (error) {
      if (error instanceof ConfigError) throw new RuntimeFailure(error.message);
      throw error;
    }
  } else {
    settings = fromArgs(args);
  }
  const key = settings.keyFile === undefined ? undefined : readKey(settings.keyFile, warn);
  const extraKeys = (settings.keyFiles ?? []).map((path) => readKey(path, warn));
  const localPort = settings.port ?? (settings.listen ? DEFAULT_PORT : 0);
  const circuits: CircuitSpec[] = [];
  for (const circuit of settings.circuits) {
    const spec = await circuitSpec(
      { ...circuit, host: circuit.peer },
      circuit.port ?? DEFAULT_PORT,
      resolvePeer,
    );
    if (circuit.keyFile !== undefined) spec.key = readKey(circuit.keyFile, warn);
    circuits.push(spec);
  }
  return {
    port: localPort,
    listen: settings.listen,
    allow: settings.allow,
    insecureAcceptAny: settings.insecureAcceptAny,
    key,
    extraKeys,
    cipher: settings.cipher,
    rekeyAfterMs: settings.rekeyAfterMs,
    maxCircuits: settings.maxCircuits,
    maxCircuitsPerPeer: settings.maxCircuitsPerPeer,
    bridge: settings.bridge,
    bridges: settings.bridges,
    offerBridges: settings.offerBridges,
    up: settings.up,
    down: settings.down,
    circuits,
  };
}
