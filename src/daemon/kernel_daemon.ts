/** A daemon on the real kernel: /dev/net/tun devices, ioctl configuration, a libc or Deno UDP socket. */

import { Daemon, type DaemonConfig } from "./daemon.ts";
import { DenoUnderlay } from "../underlay/deno_underlay.ts";
import { LibcUnderlay } from "../underlay/libc_underlay.ts";
import { kernelNetwork } from "../kernel_network.ts";
import { newNonce } from "../wire.ts";
import { resolvePeer } from "../resolve.ts";
import { WorkerDatapath } from "../datapath/worker_datapath.ts";

/**
 * Which underlay carries the datagrams: "libc", a socket made through libc and served by the datapath
 * Workers (recvmmsg/sendmmsg, large buffers), or "deno", Deno.listenDatagram served in the main isolate.
 * Both run the same forwarding core (src/datapath/core.ts).
 */
export type UnderlayKind = "libc" | "deno";

/** Starts a daemon on the kernel; throws RuntimeFailure with an operator's sentence. */
export function startKernelDaemon(
  config: DaemonConfig,
  underlay: UnderlayKind = "libc",
  options: { offload?: boolean; datapathThreads?: 1 | 2; moderationUs?: number; workerModule?: URL } = {},
): Daemon {
  const daemon = new Daemon(config, {
    network: kernelNetwork,
    // Offloads need the Workers' UDP GSO and GRO; on by default, --no-offload turns them off.
    offload: underlay === "libc" && (options.offload ?? true),
    bindUnderlay: (port) => underlay === "libc" ? LibcUnderlay.bind(port) : DenoUnderlay.bind(port),
    createDatapath: underlay === "libc"
      ? (socket, onControl, onDeviceFailure) =>
        new WorkerDatapath(socket as LibcUnderlay, onControl, onDeviceFailure, {
          offload: options.offload,
          threads: options.datapathThreads,
          moderationUs: options.moderationUs,
          workerModule: options.workerModule,
        })
      : undefined,
    now: () => performance.now(),
    wallClock: () => Date.now(),
    newNonce,
    resolve: resolvePeer,
  });
  daemon.start();
  return daemon;
}
