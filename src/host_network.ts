/**
 * What the daemon needs of the host's network stack: devices, their configuration and route MTUs.
 * src/kernel_network.ts is the real one (ffi/), tests/fakes/ has an in-memory one.
 */

import type { IpAddress, IpPrefix } from "./ip.ts";
import type { LinkDevice, LinkMode } from "./link/link_device.ts";

export interface HostNetwork {
  /**
   * Creates a device; `name` may hold "%d" for the kernel to number it. With `offload` the device is
   * opened for the datapath Worker with virtio-net headers and TCP segmentation offload, when the
   * kernel allows it.
   */
  openDevice(name: string, mode: LinkMode, offload?: boolean): LinkDevice;
  setMtu(name: string, mtu: number): void;
  /** The MTU of interface `name` (a bridge's: its LAN's); throws when there is no such interface. */
  interfaceMtu(name: string): number;
  /** Sets a tap's MAC address (6 bytes). */
  setHardwareAddress(name: string, mac: Uint8Array): void;
  addAddress(name: string, prefix: IpPrefix): void;
  /** Whether interface `name` can take IPv6 addresses (false: IPv6 is turned off, or absent). */
  ipv6Enabled(name: string): boolean;
  setUp(name: string): void;
  /** Makes interface `name` a port of the existing bridge `bridge`. */
  addToBridge(name: string, bridge: string): void;
  /** The local address the route towards `address` uses. */
  routeSource(address: IpAddress): IpAddress;
  /** The MTU of the route towards `address` (the underlay MTU). */
  routeMtu(address: IpAddress): number;
}
