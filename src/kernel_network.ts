/** The host's network stack through ffi/: /dev/net/tun devices and ioctl configuration. */

import { TunDevice } from "../ffi/tun.ts";
import {
  addIPv4Address,
  addIPv6Address,
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
  setHardwareAddress: setInterfaceHardwareAddress,
  addAddress(name: string, prefix: IpPrefix): void {
    if (prefix.family === 4) addIPv4Address(name, prefix.bytes, prefix.prefixLength);
    else addIPv6Address(name, prefix.bytes, prefix.prefixLength);
  },
  setUp: setInterfaceUp,
  routeSource(address: IpAddress): IpAddress {
    return { family: address.family, bytes: routeSource(address.bytes) };
  },
  routeMtu(address: IpAddress): number {
    return routeMtu(address.bytes);
  },
};
