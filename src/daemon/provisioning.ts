/**
 * Device provisioning: a circuit's interface created and configured (MTU, MAC, addresses, link up) in one
 * step that leaves nothing behind when it fails, and the addresses VELA derives for a circuit.
 */

import { createHash } from "node:crypto";
import { explainDeviceError, RuntimeFailure } from "../errors.ts";
import type { HostNetwork } from "../host_network.ts";
import { formatCidr, type IpPrefix } from "../ip.ts";
import type { LinkDevice, LinkMode } from "../link/link_device.ts";

/**
 * Opens a device and sets MTU, addresses and link up; throws RuntimeFailure and leaves nothing behind.
 * On a host with IPv6 turned off the IPv6 addresses are left out, each with a `warn`ing, and the link comes
 * up with the rest.
 */
export function openConfiguredDevice(
  network: HostNetwork,
  offload: boolean,
  { name, mode, mtu, addresses, mac, bridge }: {
    name: string;
    mode: LinkMode;
    mtu: number;
    addresses: readonly IpPrefix[];
    mac: Uint8Array;
    /** An existing Linux bridge the device joins (a tap). */
    bridge?: string;
  },
  warn: (text: string) => void = () => {},
): LinkDevice {
  let device: LinkDevice;
  try {
    device = network.openDevice(name, mode, offload);
  } catch (error) {
    throw new RuntimeFailure(explainDeviceError(error, `create interface ${name}`), { cause: error });
  }
  try {
    network.setMtu(device.name, mtu);
    if (mode === "tap") network.setHardwareAddress(device.name, mac);
    for (const address of addresses) {
      if (address.family === 6 && !network.ipv6Enabled(device.name)) {
        warn(
          `IPv6 is turned off on this host (net.ipv6.conf.${device.name}.disable_ipv6 = 1, or no IPv6): ${device.name} comes up without ${
            formatCidr(address)
          }`,
        );
        continue;
      }
      network.addAddress(device.name, address);
    }
    if (bridge !== undefined) {
      try {
        network.addToBridge(device.name, bridge);
      } catch (error) {
        throw new RuntimeFailure(
          `Cannot put ${device.name} into bridge ${bridge}: ${
            (error as Error).message
          }; is ${bridge} an existing Linux bridge?`,
          { cause: error },
        );
      }
    }
    network.setUp(device.name);
  } catch (error) {
    if (error instanceof RuntimeFailure) {
      device.close();
      throw error;
    }
    device.close();
    throw new RuntimeFailure(explainDeviceError(error, `configure interface ${device.name}`), {
      cause: error,
    });
  }
  return device;
}

/**
 * The IPv6 pair of a circuit given no IPv6 address: a ULA /64 derived from both underlay addresses and
 * the vid (fd, then 40 bits of SHA-256 of "vela <initiator> <responder> <vid>", then the vid as subnet
 * id); the initiator is ::1, the responder ::2. The same two hosts always derive the same pair.
 */
export function derivedIPv6(localAddress: string, peerAddress: string, vid: number): IpPrefix {
  const digest = createHash("sha256").update(`vela ${localAddress} ${peerAddress} ${vid}`).digest();
  const bytes = new Uint8Array(16);
  bytes[0] = 0xfd;
  bytes.set(digest.subarray(0, 5), 1);
  bytes[7] = vid;
  bytes[15] = 1;
  return { family: 6, bytes, prefixLength: 64 };
}

/**
 * A tap's MAC address, the same every time for the same side of the same circuit (locally administered,
 * unicast), so that a restarted daemon's interface keeps the address its neighbours have cached.
 */
export function derivedMac(side: "initiator" | "responder", peerAddress: string, vid: number): Uint8Array {
  const digest = createHash("sha256").update(`vela mac ${side} ${peerAddress} ${vid}`).digest();
  const mac = new Uint8Array(digest.subarray(0, 6));
  mac[0] = (mac[0] & 0xfe) | 0x02;
  return mac;
}
