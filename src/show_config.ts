/**
 * `vela showconf`: a running daemon's configuration written as a config file (src/config_file.ts reads
 * it back), its circuits those it initiates now, the ones added with `vela connect` included. Keys appear
 * by the path they were read from, never as key material. Pure.
 */

import { type CircuitSpec, type DaemonConfig } from "./daemon/daemon.ts";
import { formatCidr } from "./ip.ts";
import { describeFilter } from "./datapath/filter_stage.ts";
import type { CipherPolicy, CompressPolicy } from "./session.ts";
import { DEFAULT_PORT } from "./cli.ts";

type JsonObject = Record<string, unknown>;

/** A cipher policy as the file spells it ("none" for clear). */
function cipherWord(cipher: CipherPolicy): string {
  return cipher === "clear" ? "none" : cipher;
}

/** A compression policy as the file spells it. */
function compressWord(compress: CompressPolicy): boolean | string {
  return compress === "with-encryption" ? compress : compress === "on";
}

function circuitObject(spec: CircuitSpec): JsonObject {
  const circuit: JsonObject = { peer: spec.peerName, vid: spec.vid, mode: spec.mode };
  if (spec.addresses.length > 0) circuit.address = spec.addresses.map(formatCidr);
  if (spec.mtu !== undefined) circuit.mtu = spec.mtu;
  if (spec.ifname !== undefined) circuit.ifname = spec.ifname;
  if (spec.port !== DEFAULT_PORT) circuit.port = spec.port;
  if (spec.family !== undefined) circuit.family = spec.family;
  if (spec.keyFilePath !== undefined) circuit.key_file = spec.keyFilePath;
  if (spec.cipher !== undefined) circuit.cipher = cipherWord(spec.cipher);
  if (spec.compress !== undefined) circuit.compress = compressWord(spec.compress);
  if (spec.bridge !== undefined) circuit.bridge = spec.bridge;
  if (spec.farBridge !== undefined) circuit.far_bridge = spec.farBridge;
  if (spec.filter !== undefined) circuit.filter = describeFilter(spec.filter);
  return circuit;
}

/** The config file object for a running configuration (keys in the order the file documents them). */
export function configFileObject(config: DaemonConfig): JsonObject {
  const file: JsonObject = {};
  if (config.listen) file.listen = true;
  if (config.allow.length > 0) file.allow = config.allow.map(formatCidr);
  if (config.insecureAcceptAny) file.insecure_accept_any = true;
  if (config.port !== 0 && !(config.listen && config.port === DEFAULT_PORT)) file.port = config.port;
  if (config.keyFilePath !== undefined) file.key_file = config.keyFilePath;
  if (config.extraKeyFilePaths?.length) file.key_files = config.extraKeyFilePaths;
  if (config.cipher !== undefined) file.cipher = cipherWord(config.cipher);
  if (config.compress !== undefined) file.compress = compressWord(config.compress);
  if (config.rekeyAfterMs !== undefined) file.rekey_after = config.rekeyAfterMs / 1000;
  if (config.maxCircuits !== undefined) file.max_circuits = config.maxCircuits;
  if (config.maxCircuitsPerPeer !== undefined) file.max_circuits_per_peer = config.maxCircuitsPerPeer;
  if (config.bridge !== undefined) file.bridge = config.bridge;
  if (config.bridges?.length) {
    file.bridges = config.bridges.map((rule) => {
      const out: JsonObject = { bridge: rule.bridge };
      if (rule.vid !== undefined) out.vid = rule.vid;
      if (rule.allow !== undefined) out.allow = formatCidr(rule.allow);
      if (rule.filter !== undefined) out.filter = describeFilter(rule.filter);
      return out;
    });
  }
  if (config.offerBridges?.length) file.offer_bridges = config.offerBridges;
  if (config.up !== undefined) file.up = config.up;
  if (config.down !== undefined) file.down = config.down;
  file.circuits = config.circuits.map(circuitObject);
  return file;
}

/** The config file text: JSON, two-space indented, one trailing newline. */
export function formatConfigFile(config: DaemonConfig): string {
  return JSON.stringify(configFileObject(config), null, 2) + "\n";
}
