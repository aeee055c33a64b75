/** A daemon on the real kernel: /dev/net/tun devices, ioctl configuration, a libc or Deno UDP socket. */

import { Daemon, type DaemonConfig } from "./daemon.ts";
import { DenoUnderlay } from "./deno_underlay.ts";
import { kernelNetwork } from "./kernel_network.ts";
import { newNonce } from "./wire.ts";
import { resolvePeer } from "./resolve.ts";
import { LibcUdpSocket } from "../ffi/udp_socket.ts";
import { WorkerDatapath } from "./worker_datapath.ts";

/**
 * Which underlay carries the datagrams: "libc", a socket made through libc and served by the datapath
 * Worker (recvmmsg/sendmmsg, large buffers), or "deno", Deno.listenDatagram served in the main isolate.
 */
export type UnderlayKind = "libc" | "deno";

/** Starts a daemon on the kernel; throws RuntimeFailure with an operator's sentence. */
export function startKernelDaemon(
  config: DaemonConfig,
  underlay: UnderlayKind = "libc",
  options: { offload?: boolean; datapathThreads?: 1 | 2; moderationUs?: number } = {},
): Daemon {
  const daemon = new Daemon(config, {
    network: kernelNetwork,
    // Offloads need the Worker, which knows the virtio-net header; on by default, --no-offload turns them off.
    offload: underlay === "libc" && (options.offload ?? true),
    bindUnderlay: (port) => underlay === "libc" ? LibcUdpSocket.bind(port) : DenoUnderlay.bind(port),
    createDatapath: underlay === "libc"
      ? (socket, onControl, onDeviceFailure) =>
        new WorkerDatapath(socket as LibcUdpSocket, onControl, onDeviceFailure, {
          offload: options.offload,
          threads: options.datapathThreads,
          moderationUs: options.moderationUs,
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
