/** The host's network stack through ffi/: /dev/net/tun devices and ioctl configuration. */

import { TunDevice } from "../ffi/tun.ts";
import { readProcFile } from "../ffi/libc.ts";
import {
  addIPv4Address,
  addIPv6Address,
  addToBridge,
  interfaceMtu,
  routeMtu,
  routeSource,
  setInterfaceHardwareAddress,
  setInterfaceMtu,
  setInterfaceQueueLength,
  setInterfaceUp,
} from "../ffi/netconfig.ts";
import type { HostNetwork } from "./host_network.ts";
import type { IpAddress, IpPrefix } from "./ip.ts";
import type { LinkDevice, LinkMode } from "./link/link_device.ts";

/** Transmit queue of a VELA device: deeper than the default 500 so bursts wait instead of dropping. */
const DEVICE_QUEUE_LENGTH = 1000;

export const kernelNetwork: HostNetwork = {
  openDevice(name: string, mode: LinkMode, offload = false): LinkDevice {
    const device = TunDevice.open(name, mode, { offload });
    try {
      setInterfaceQueueLength(device.name, DEVICE_QUEUE_LENGTH);
    } catch (error) {
      device.close();
      throw error;
    }
    return device;
  },
  setMtu: setInterfaceMtu,
  interfaceMtu,
  setHardwareAddress: setInterfaceHardwareAddress,
  addAddress(name: string, prefix: IpPrefix): void {
    if (prefix.family === 4) addIPv4Address(name, prefix.bytes, prefix.prefixLength);
    else addIPv6Address(name, prefix.bytes, prefix.prefixLength);
  },
  ipv6Enabled(name: string): boolean {
    try {
      return readProcFile(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`).trim() === "0";
    } catch {
      return false; // No such file: a kernel without IPv6, or booted with ipv6.disable=1.
    }
  },
  setUp: setInterfaceUp,
  addToBridge(name: string, bridge: string): void {
    addToBridge(bridge, name);
  },
  routeSource(address: IpAddress): IpAddress {
    return { family: address.family, bytes: routeSource(address.bytes) };
  },
  routeMtu(address: IpAddress): number {
    return routeMtu(address.bytes);
  },
};
