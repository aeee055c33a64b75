/** A circuit's and a daemon's status as the daemon reports them, for the tests of what reads them. */

import type { CircuitStatus, DaemonStatus } from "../../src/daemon/daemon.ts";

/** An established clear tap circuit vela3 to 198.18.100.2, with a few packets and drops. */
export function circuitStatus(overrides: Partial<CircuitStatus> = {}): CircuitStatus {
  return {
    peer: "198.18.100.2",
    address: "198.18.100.2",
    port: 4455,
    vid: 3,
    role: "initiator",
    state: "established",
    ifname: "vela3",
    mode: "tap",
    mtu: 1457,
    uptimeSeconds: 3725,
    rttMs: 0.456,
    txPackets: 12,
    txBytes: 1536,
    rxPackets: 11,
    rxBytes: 100,
    cipher: "clear",
    keyAgeSeconds: null,
    rotations: 0,
    compression: "off",
    addresses: ["198.18.207.1/30", "fd00:5a:1b2c:3d4e::1/64"],
    derivedAddresses: ["fd00:5a:1b2c:3d4e::1/64"],
    lastHeardSeconds: 3,
    downSinceSeconds: null,
    refusal: null,
    handshake: 1,
    drops: {
      sendFailed: 1,
      deviceRefused: 2,
      badTag: 0,
      replayedData: 0,
      tooOld: 0,
      noKey: 0,
      keyExhausted: 0,
    },
    ...overrides,
  };
}

/** A listener's status on port 4455 with these circuits and drops. */
export function daemonStatus(circuits: CircuitStatus[], drops: Record<string, number> = {}): DaemonStatus {
  return { port: 4455, listen: true, circuits, drops, moderatedWakeups: 0 };
}
