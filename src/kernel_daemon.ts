/** A daemon on the real kernel: /dev/net/tun devices, ioctl configuration, Deno's UDP socket. */

import { Daemon, type DaemonConfig } from "./daemon.ts";
import { DenoUnderlay } from "./deno_underlay.ts";
import { kernelNetwork } from "./kernel_network.ts";
import { newNonce } from "./wire.ts";
import { resolvePeer } from "./resolve.ts";

/** Starts a daemon on the kernel; throws RuntimeFailure with an operator's sentence. */
export function startKernelDaemon(config: DaemonConfig): Daemon {
  const daemon = new Daemon(config, {
    network: kernelNetwork,
    bindUnderlay: (port) => DenoUnderlay.bind(port),
    now: () => performance.now(),
    wallClock: () => Date.now(),
    newNonce,
    resolve: resolvePeer,
  });
  daemon.start();
  return daemon;
}
