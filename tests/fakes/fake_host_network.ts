/** An in-memory HostNetwork: fake devices by name, with the MTU, addresses and link state set on them. */

import type { HostNetwork } from "../../src/host_network.ts";
import { formatCidr, type IpAddress, type IpPrefix, parseIp } from "../../src/ip.ts";
import type { LinkMode } from "../../src/link/link_device.ts";
import { FakeDevice } from "./fake_device.ts";

export interface FakeInterface {
  device: FakeDevice;
  mtu: number;
  mac?: Uint8Array;
  addresses: string[];
  up: boolean;
}

export class FakeHostNetwork implements HostNetwork {
  readonly interfaces = new Map<string, FakeInterface>();
  /** What routeMtu() answers. */
  underlayMtu = 1500;
  /** What routeSource() answers. */
  localAddress: IpAddress = parseIp("198.18.0.1")!;
  /** What ipv6Enabled() answers (a host with IPv6 turned off: false). */
  ipv6 = true;

  ipv6Enabled(): boolean {
    return this.ipv6;
  }

  /** The MTU of interfaces VELA did not make (bridges), for interfaceMtu(). */
  readonly otherMtus = new Map<string, number>();

  interfaceMtu(name: string): number {
    const mtu = this.interfaces.get(name)?.mtu ?? this.otherMtus.get(name);
    if (mtu === undefined) throw new Error(`ioctl(SIOCGIFMTU, ${name}) failed: no such device`);
    return mtu;
  }

  /** Each interface's bridge, as addToBridge() set it. */
  readonly bridges = new Map<string, string>();

  addToBridge(name: string, bridge: string): void {
    if (!this.live(name)) throw new Error(`ioctl(SIOCBRADDIF, ${bridge}, ${name}) failed: no such device`);
    this.bridges.set(name, bridge);
  }

  openDevice(pattern: string, mode: LinkMode): FakeDevice {
    let name = pattern;
    // Like the kernel, number a "%d" name with the first free number.
    for (let n = 0; pattern.includes("%d"); n++) {
      name = pattern.replace("%d", String(n));
      if (!this.live(name)) break;
    }
    const existing = this.interfaces.get(name);
    if (existing && !existing.device.closed) throw new Error(`ioctl(TUNSETIFF) failed: ${name} is busy`);
    const device = new FakeDevice(name, mode);
    this.interfaces.set(name, { device, mtu: 1500, addresses: [], up: false });
    return device;
  }

  #get(name: string): FakeInterface {
    const entry = this.interfaces.get(name);
    if (!entry || entry.device.closed) throw new Error(`no interface ${name}`);
    return entry;
  }

  setMtu(name: string, mtu: number): void {
    this.#get(name).mtu = mtu;
  }

  setHardwareAddress(name: string, mac: Uint8Array): void {
    this.#get(name).mac = mac.slice();
  }

  addAddress(name: string, prefix: IpPrefix): void {
    this.#get(name).addresses.push(formatCidr(prefix));
  }

  setUp(name: string): void {
    this.#get(name).up = true;
  }

  routeSource(_address: IpAddress): IpAddress {
    return this.localAddress;
  }

  routeMtu(_address: IpAddress): number {
    return this.underlayMtu;
  }

  /** The live (not closed) interface of that name, if any. */
  live(name: string): FakeInterface | undefined {
    const entry = this.interfaces.get(name);
    return entry && !entry.device.closed ? entry : undefined;
  }
}
