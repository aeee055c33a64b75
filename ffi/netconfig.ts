/**
 * Interface configuration through ioctl on a datagram socket, the way ifconfig does it: MTU, link
 * state, IPv4 and IPv6 addresses, queue length. No shell command is spawned.
 */

import { check, libc } from "./libc.ts";
import {
  IfReq,
  ifreq,
  ifreqFlags,
  ifreqInt,
  ifreqWithFlags,
  ifreqWithHardwareAddress,
  ifreqWithInet4,
  ifreqWithInt,
  in6Ifreq,
  Linux,
  SockaddrIn,
  sockaddrIn,
  SockaddrIn6,
  sockaddrIn6,
} from "./structs.ts";

/** A socket of `family` for configuration ioctls, closed after `use`. */
function withSocket<T>(family: number, use: (fd: number) => T, what: string): T {
  const c = libc();
  const fd = check(c.socket(family, Linux.SOCK_DGRAM | Linux.SOCK_CLOEXEC, 0), `socket(${what})`);
  try {
    return use(fd);
  } finally {
    c.close(fd);
  }
}

function ioctl(family: number, request: number, argument: Uint8Array<ArrayBuffer>, what: string): void {
  withSocket(family, (fd) => check(libc().ioctl(fd, BigInt(request), argument), what), what);
}

export function interfaceIndex(name: string): number {
  const request = ifreq(name).bytes;
  ioctl(Linux.AF_INET, Linux.SIOCGIFINDEX, request, `ioctl(SIOCGIFINDEX, ${name})`);
  return ifreqInt(request);
}

/**
 * Makes interface `name` a port of the existing Linux bridge `bridge` (SIOCBRADDIF: ifr_name the bridge,
 * ifr_ifindex the port), as `ip link set NAME master BRIDGE` does. Throws SyscallError (ENODEV: no such
 * bridge; EINVAL: `bridge` is not a bridge; EBUSY: `name` is a port of another one).
 */
export function addToBridge(bridge: string, name: string): void {
  const index = interfaceIndex(name);
  ioctl(
    Linux.AF_INET,
    Linux.SIOCBRADDIF,
    ifreqWithInt(bridge, index),
    `ioctl(SIOCBRADDIF, ${bridge}, ${name})`,
  );
}

export function interfaceMtu(name: string): number {
  const request = ifreq(name).bytes;
  ioctl(Linux.AF_INET, Linux.SIOCGIFMTU, request, `ioctl(SIOCGIFMTU, ${name})`);
  return ifreqInt(request);
}

export function setInterfaceMtu(name: string, mtu: number): void {
  ioctl(Linux.AF_INET, Linux.SIOCSIFMTU, ifreqWithInt(name, mtu), `ioctl(SIOCSIFMTU, ${name}, ${mtu})`);
}

export function setInterfaceQueueLength(name: string, length: number): void {
  ioctl(Linux.AF_INET, Linux.SIOCSIFTXQLEN, ifreqWithInt(name, length), `ioctl(SIOCSIFTXQLEN, ${name})`);
}

/** The 6-byte hardware address of an interface (a tap's MAC). */
export function interfaceHardwareAddress(name: string): Uint8Array {
  const request = ifreq(name).bytes;
  ioctl(Linux.AF_INET, Linux.SIOCGIFHWADDR, request, `ioctl(SIOCGIFHWADDR, ${name})`);
  // ifr_hwaddr is a struct sockaddr: family (2 bytes), then the address bytes.
  return request.slice(IfReq.UNION + 2, IfReq.UNION + 8);
}

/**
 * Sets a tap's MAC address (SIOCSIFHWADDR, while the link is down) and asks the kernel to announce it
 * with a gratuitous ARP when the link comes up (arp_notify).
 */
export function setInterfaceHardwareAddress(name: string, mac: Uint8Array): void {
  ioctl(
    Linux.AF_INET,
    Linux.SIOCSIFHWADDR,
    ifreqWithHardwareAddress(name, mac),
    `ioctl(SIOCSIFHWADDR, ${name})`,
  );
  try {
    Deno.writeTextFileSync(`/proc/sys/net/ipv4/conf/${name}/arp_notify`, "1");
  } catch {
    // Best effort: without it neighbours learn the address at their next ARP.
  }
}

/** Sets the link up (IFF_UP), keeping the other flags. */
export function setInterfaceUp(name: string): void {
  const request = ifreq(name).bytes;
  ioctl(Linux.AF_INET, Linux.SIOCGIFFLAGS, request, `ioctl(SIOCGIFFLAGS, ${name})`);
  const flags = ifreqFlags(request) | Linux.IFF_UP;
  ioctl(Linux.AF_INET, Linux.SIOCSIFFLAGS, ifreqWithFlags(name, flags), `ioctl(SIOCSIFFLAGS, ${name})`);
}

/** The netmask of an IPv4 prefix length, as 4 bytes. */
export function ipv4Netmask(prefixLength: number): Uint8Array {
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return new Uint8Array([mask >>> 24, (mask >>> 16) & 0xff, (mask >>> 8) & 0xff, mask & 0xff]);
}

/** Adds an IPv4 address with its prefix (SIOCSIFADDR, then SIOCSIFNETMASK, which also sets the route). */
export function addIPv4Address(name: string, address: Uint8Array, prefixLength: number): void {
  ioctl(Linux.AF_INET, Linux.SIOCSIFADDR, ifreqWithInet4(name, address), `ioctl(SIOCSIFADDR, ${name})`);
  ioctl(
    Linux.AF_INET,
    Linux.SIOCSIFNETMASK,
    ifreqWithInet4(name, ipv4Netmask(prefixLength)),
    `ioctl(SIOCSIFNETMASK, ${name})`,
  );
}

/**
 * Adds an IPv6 address (SIOCSIFADDR with struct in6_ifreq on an AF_INET6 socket). Duplicate address
 * detection is switched off for the interface first: the far end's address is agreed by the handshake,
 * and DAD would hold the address back for a second or more.
 */
export function addIPv6Address(name: string, address: Uint8Array, prefixLength: number): void {
  const index = interfaceIndex(name);
  try {
    Deno.writeTextFileSync(`/proc/sys/net/ipv6/conf/${name}/accept_dad`, "0");
  } catch {
    // IPv6 may be turned off for the interface; the ioctl below then says so.
  }
  ioctl(
    Linux.AF_INET6,
    Linux.SIOCSIFADDR,
    in6Ifreq(address, prefixLength, index),
    `ioctl(SIOCSIFADDR, ${name}, IPv6)`,
  );
}

/**
 * The local address the kernel picks to reach `address` (getsockname on a connected datagram socket;
 * nothing is sent).
 */
export function routeSource(address: Uint8Array): Uint8Array {
  const v4 = address.length === 4;
  return withSocket(v4 ? Linux.AF_INET : Linux.AF_INET6, (fd) => {
    const c = libc();
    const target = v4 ? sockaddrIn(address, 9) : sockaddrIn6(address, 9);
    check(c.connect(fd, target, target.length), "connect(route lookup)");
    const local = new Uint8Array(SockaddrIn6.SIZE);
    const length = new Uint8Array(new Uint32Array([local.length]).buffer);
    check(c.getsockname(fd, local, length), "getsockname(route lookup)");
    return v4
      ? local.slice(SockaddrIn.ADDR, SockaddrIn.ADDR + 4)
      : local.slice(SockaddrIn6.ADDR, SockaddrIn6.ADDR + 16);
  }, "route lookup");
}

/**
 * The MTU of the route towards `address` (IP_MTU or IPV6_MTU on a connected datagram socket): the
 * underlay MTU that the link MTU is derived from.
 */
export function routeMtu(address: Uint8Array): number {
  const v4 = address.length === 4;
  const family = v4 ? Linux.AF_INET : Linux.AF_INET6;
  return withSocket(family, (fd) => {
    const c = libc();
    const target = v4 ? sockaddrIn(address, 9) : sockaddrIn6(address, 9);
    check(c.connect(fd, target, target.length), "connect(route lookup)");
    const value = new Uint8Array(4);
    const length = new Uint8Array(new Uint32Array([4]).buffer);
    const level = v4 ? Linux.SOL_IP : Linux.SOL_IPV6;
    const option = v4 ? Linux.IP_MTU : Linux.IPV6_MTU;
    check(c.getsockopt(fd, level, option, value, length), v4 ? "getsockopt(IP_MTU)" : "getsockopt(IPV6_MTU)");
    return new DataView(value.buffer).getInt32(0, true);
  }, "route lookup");
}
