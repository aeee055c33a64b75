/** What the daemon reports of itself: `vela status`, the control protocol and the metrics read these. */

import type { Role, SessionState } from "../session.ts";
import type { LinkMode } from "../link/link_device.ts";

/** Counted drops of control traffic, by reason. */
export type ControlDrops = Record<string, number>;

/** One circuit as `vela status` shows it. */
export interface CircuitStatus {
  /** The peer as the operator named it (initiator), or its address (responder). */
  peer: string;
  address: string;
  port: number;
  vid: number;
  role: Role;
  state: SessionState;
  ifname: string | null;
  mode: LinkMode;
  mtu: number;
  /** Seconds since the circuit was established, null while it is not. */
  uptimeSeconds: number | null;
  /** The last keepalive round trip in milliseconds, null before one was measured. */
  rttMs: number | null;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** Frames dropped by reason: the underlay could not send them, the device refused them. */
  drops: { sendFailed: number; deviceRefused: number };
}

export interface DaemonStatus {
  port: number;
  listen: boolean;
  circuits: CircuitStatus[];
  /** Datagrams dropped on the way in, by reason. */
  drops: Record<string, number>;
  /** Wake-ups of the sending Worker that waited for more frames under bulk traffic (--moderation-us). */
  moderatedWakeups: number;
}
