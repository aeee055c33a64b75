/** From the command line (and --config, --key-file) to a daemon configuration, peers resolved. */

import type { CircuitArgs, DaemonArgs } from "./cli.ts";
import type { IpAddress } from "./ip.ts";
import { ConfigError, type FileConfig, readConfigFile } from "./config_file.ts";
import type { CircuitSpec, DaemonConfig } from "./daemon/daemon.ts";
import { RuntimeFailure } from "./errors.ts";
import { KeyError, readKeyFile } from "./keys.ts";
import { resolvePeer } from "./resolve.ts";
import { DEFAULT_PORT } from "./cli.ts";
import type { RemoteControlKey } from "./control/remote_server.ts";

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
    compress: circuit.compress,
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
    compress: args.compress,
    compressMode: args.compressMode,
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

/** A path made absolute against the working directory, so that vela showconf's file works from anywhere. */
function absolutePath(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path.replace(/^\.\//, "")}`;
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
  if (settings.listen && key !== undefined && settings.compress === "on") {
    warn(
      "--compress on a keyed listener compresses only the circuits that are in clear (--cipher none); encrypted ones need --compress-with-encryption",
    );
  }
  const localPort = settings.port ?? (settings.listen ? DEFAULT_PORT : 0);
  const circuits: CircuitSpec[] = [];
  for (const circuit of settings.circuits) {
    const spec = await circuitSpec(
      { ...circuit, host: circuit.peer },
      circuit.port ?? DEFAULT_PORT,
      resolvePeer,
    );
    if (circuit.keyFile !== undefined) {
      spec.key = readKey(circuit.keyFile, warn);
      spec.keyFilePath = absolutePath(circuit.keyFile);
    }
    circuits.push(spec);
  }
  return {
    port: localPort,
    listen: settings.listen,
    allow: settings.allow,
    insecureAcceptAny: settings.insecureAcceptAny,
    key,
    extraKeys,
    keyFilePath: settings.keyFile === undefined ? undefined : absolutePath(settings.keyFile),
    extraKeyFilePaths: settings.keyFiles?.map(absolutePath),
    cipher: settings.cipher,
    compress: settings.compress,
    compressMode: settings.compressMode,
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

/**
 * `vela check-config`: reads the file and every key file it names exactly as a daemon started with it
 * would (missing, unreadable, not a key: RuntimeFailure; open to other users: a `warn`ing). Peers are not
 * looked up. Returns the settings.
 */
export function checkConfigFile(path: string, warn: (text: string) => void): FileConfig {
  let settings: FileConfig;
  try {
    settings = readConfigFile(path);
  } catch (error) {
    if (error instanceof ConfigError) throw new RuntimeFailure(error.message);
    throw error;
  }
  const files = [
    settings.keyFile,
    ...(settings.keyFiles ?? []),
    ...settings.circuits.map((c) => c.keyFile),
  ].filter((file): file is string => file !== undefined);
  for (const file of new Set(files)) readKey(file, warn);
  return settings;
}

/**
 * The keys of --control-listen: each --control-key file may run every command, each --control-read-key
 * file only those that read; without --control-key the daemon's own key (the first --key-file, or the
 * config's key_file) is the one that may run every command. Throws RuntimeFailure when there is none.
 */
export function remoteControlKeys(
  args: DaemonArgs,
  config: DaemonConfig,
  warn: (text: string) => void,
): RemoteControlKey[] {
  const admin = args.controlKeyFiles?.map((file) => readKey(file, warn)) ??
    (config.key === undefined ? [] : [config.key]);
  if (admin.length === 0) {
    throw new RuntimeFailure(
      "--control-listen needs a key: give --control-key FILE, or a key_file in the --config file",
    );
  }
  const readers = (args.controlReadKeyFiles ?? []).map((file) => readKey(file, warn));
  return [
    ...admin.map((key) => ({ key, access: "admin" as const })),
    ...readers.map((key) => ({ key, access: "read" as const })),
  ];
}
