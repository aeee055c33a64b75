/** Daemons on fakes: a FakeHostNetwork each, all on one FakeWire. */

import { Daemon, type DaemonConfig } from "../../src/daemon/daemon.ts";
import { type IpAddress, parseIp } from "../../src/ip.ts";
import { FakeHostNetwork } from "./fake_host_network.ts";
import { FakeUnderlay, type FakeWire } from "./fake_underlay.ts";
import type { FakeClock } from "./fake_clock.ts";

let nonce = 0x1000n;

/** Names the fake daemons resolve, to change in tests. */
export const resolver = new Map<string, IpAddress>();

/**
 * Starts a daemon on fakes; with `clock`, its time and timers are the clock's (tests/fakes/fake_clock.ts);
 * `prepare` sets up its host network before it starts (bridges that exist already).
 */
export function startFakeDaemon(
  wire: FakeWire,
  address: string,
  config: DaemonConfig,
  clock?: FakeClock,
  prepare?: (network: FakeHostNetwork) => void,
): { daemon: Daemon; network: FakeHostNetwork } {
  const network = new FakeHostNetwork();
  network.localAddress = parseIp(address)!;
  prepare?.(network);
  const daemon = new Daemon(config, {
    network,
    bindUnderlay: (port) => new FakeUnderlay(wire, address, port),
    now: clock?.now ?? (() => performance.now()),
    timers: clock,
    wallClock: () => Date.now(),
    newNonce: () => nonce++,
    random: () => 0.5,
    resolve: (name) => {
      const address = resolver.get(name) ?? parseIp(name);
      return address ? Promise.resolve(address) : Promise.reject(new Error(`Cannot resolve ${name}`));
    },
  });
  daemon.start();
  return { daemon, network };
}

/** Polls `condition` every few milliseconds until it holds; throws with `what` after `ms`. */
export async function until(condition: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
