/**
 * Kernel structs as bytes: each is a Uint8Array with a DataView at named offsets (Linux, x86_64 and
 * aarch64 share these layouts). Pure code, unit-tested without root.
 */

/** Linux constants used with the structs and calls in ffi/. */
export const Linux = {
  O_RDWR: 0o2,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  AF_INET: 2,
  AF_INET6: 10,
  SOCK_DGRAM: 2,
  SOCK_CLOEXEC: 0o2000000,
  SOL_IP: 0,
  IP_MTU: 14,
  SOL_IPV6: 41,
  IPV6_MTU: 24,
  POLLIN: 0x1,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
  SOCK_NONBLOCK: 0o4000,
  SOL_SOCKET: 1,
  SO_SNDBUF: 7,
  SO_RCVBUF: 8,
  SO_REUSEPORT: 15,
  SO_SNDBUFFORCE: 32,
  SO_RCVBUFFORCE: 33,
  IPPROTO_IPV6: 41,
  SOL_UDP: 17,
  UDP_SEGMENT: 103,
  UDP_GRO: 104,
  IPV6_V6ONLY: 26,
  MSG_DONTWAIT: 0x40,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  IFF_TUN: 0x0001,
  IFF_TAP: 0x0002,
  IFF_NO_PI: 0x1000,
  IFF_VNET_HDR: 0x4000,
  /** _IOW('T', 208, unsigned int) */
  TUNSETOFFLOAD: 0x400454d0,
  TUN_F_CSUM: 0x01,
  TUN_F_TSO4: 0x02,
  TUN_F_TSO6: 0x04,
  TUN_F_USO4: 0x20,
  TUN_F_USO6: 0x40,
  IFF_UP: 0x1,
  IFNAMSIZ: 16,
  /** _IOW('T', 202, int) */
  TUNSETIFF: 0x400454ca,
  SIOCGIFFLAGS: 0x8913,
  SIOCSIFFLAGS: 0x8914,
  SIOCSIFADDR: 0x8916,
  SIOCSIFNETMASK: 0x891c,
  SIOCGIFMTU: 0x8921,
  SIOCSIFMTU: 0x8922,
  SIOCGIFHWADDR: 0x8927,
  SIOCSIFHWADDR: 0x8924,
  ARPHRD_ETHER: 1,
  SIOCGIFINDEX: 0x8933,
  SIOCSIFTXQLEN: 0x8943,
  /** Add an interface (ifr_ifindex) to the bridge named in ifr_name (linux/sockios.h). */
  SIOCBRADDIF: 0x89a2,
} as const;

/**
 * struct ifreq (40 bytes): char ifr_name[16] at 0, then a union at 16 of short ifr_flags,
 * int ifr_mtu / ifr_ifindex / ifr_qlen, or struct sockaddr ifr_addr (16 bytes).
 */
export const IfReq = {
  SIZE: 40,
  NAME: 0,
  UNION: 16,
} as const;

/** A valid Linux interface name: 1 to 15 bytes, no slash, colon or white space, not "." or "..". */
export function validInterfaceName(name: string): boolean {
  const bytes = new TextEncoder().encode(name).length;
  return bytes >= 1 && bytes < Linux.IFNAMSIZ && !/[\s/:]/.test(name) && name !== "." && name !== "..";
}

/** A zeroed ifreq with `ifr_name` set. Throws on a name the kernel would refuse. */
export function ifreq(name: string): { bytes: Uint8Array<ArrayBuffer>; view: DataView } {
  if (!validInterfaceName(name)) throw new RangeError(`Invalid interface name "${name}"`);
  const bytes = new Uint8Array(IfReq.SIZE);
  bytes.set(new TextEncoder().encode(name), IfReq.NAME);
  return { bytes, view: new DataView(bytes.buffer) };
}

/** The NUL-terminated `ifr_name` of an ifreq (the kernel fills it in when it picks the name). */
export function ifreqName(bytes: Uint8Array): string {
  const field = bytes.subarray(IfReq.NAME, IfReq.NAME + Linux.IFNAMSIZ);
  const end = field.indexOf(0);
  return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
}

/** ifreq with `ifr_flags` (short at 16), as TUNSETIFF and SIOCSIFFLAGS take it. */
export function ifreqWithFlags(name: string, flags: number): Uint8Array<ArrayBuffer> {
  const { bytes, view } = ifreq(name);
  view.setInt16(IfReq.UNION, flags, true);
  return bytes;
}

/** ifreq with an int in the union (ifr_mtu, ifr_qlen). */
export function ifreqWithInt(name: string, value: number): Uint8Array<ArrayBuffer> {
  const { bytes, view } = ifreq(name);
  view.setInt32(IfReq.UNION, value, true);
  return bytes;
}

/** ifreq with a struct sockaddr_in in `ifr_addr`, as SIOCSIFADDR and SIOCSIFNETMASK take it (IPv4). */
export function ifreqWithInet4(name: string, address: Uint8Array): Uint8Array<ArrayBuffer> {
  const { bytes } = ifreq(name);
  bytes.set(sockaddrIn(address, 0), IfReq.UNION);
  return bytes;
}

/** ifreq with a struct sockaddr in `ifr_hwaddr`: family ARPHRD_ETHER, then the 6-byte MAC (SIOCSIFHWADDR). */
export function ifreqWithHardwareAddress(name: string, mac: Uint8Array): Uint8Array<ArrayBuffer> {
  if (mac.length !== 6) throw new RangeError("A MAC address has 6 bytes");
  const { bytes, view } = ifreq(name);
  view.setUint16(IfReq.UNION, Linux.ARPHRD_ETHER, true);
  bytes.set(mac, IfReq.UNION + 2);
  return bytes;
}

export function ifreqInt(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getInt32(IfReq.UNION, true);
}

export function ifreqFlags(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getInt16(IfReq.UNION, true);
}

/** struct sockaddr_in (16 bytes): sa_family u16 host order at 0, port u16 network order at 2, address at 4. */
export const SockaddrIn = { SIZE: 16, FAMILY: 0, PORT: 2, ADDR: 4 } as const;

/**
 * struct sockaddr_in6 (28 bytes): sa_family at 0, port (network order) at 2, flowinfo u32 at 4,
 * address at 8, scope id u32 at 24.
 */
export const SockaddrIn6 = { SIZE: 28, FAMILY: 0, PORT: 2, FLOWINFO: 4, ADDR: 8, SCOPE_ID: 24 } as const;

export function sockaddrIn(address: Uint8Array, port: number): Uint8Array<ArrayBuffer> {
  if (address.length !== 4) throw new RangeError("An IPv4 address has 4 bytes");
  const bytes = new Uint8Array(SockaddrIn.SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint16(SockaddrIn.FAMILY, Linux.AF_INET, true);
  view.setUint16(SockaddrIn.PORT, port, false);
  bytes.set(address, SockaddrIn.ADDR);
  return bytes;
}

export function sockaddrIn6(address: Uint8Array, port: number, scopeId = 0): Uint8Array<ArrayBuffer> {
  if (address.length !== 16) throw new RangeError("An IPv6 address has 16 bytes");
  const bytes = new Uint8Array(SockaddrIn6.SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint16(SockaddrIn6.FAMILY, Linux.AF_INET6, true);
  view.setUint16(SockaddrIn6.PORT, port, false);
  bytes.set(address, SockaddrIn6.ADDR);
  view.setUint32(SockaddrIn6.SCOPE_ID, scopeId, true);
  return bytes;
}

/** struct in6_ifreq (24 bytes): address at 0, prefix length u32 at 16, interface index i32 at 20. */
export const In6IfReq = { SIZE: 24, ADDR: 0, PREFIXLEN: 16, IFINDEX: 20 } as const;

export function in6Ifreq(
  address: Uint8Array,
  prefixLength: number,
  ifindex: number,
): Uint8Array<ArrayBuffer> {
  if (address.length !== 16) throw new RangeError("An IPv6 address has 16 bytes");
  const bytes = new Uint8Array(In6IfReq.SIZE);
  const view = new DataView(bytes.buffer);
  bytes.set(address, In6IfReq.ADDR);
  view.setUint32(In6IfReq.PREFIXLEN, prefixLength, true);
  view.setInt32(In6IfReq.IFINDEX, ifindex, true);
  return bytes;
}

/**
 * struct virtio_net_hdr (10 bytes, host byte order), in front of every frame of a device opened with
 * IFF_VNET_HDR: flags u8 at 0, gso_type u8 at 1, hdr_len u16 at 2, gso_size u16 at 4, csum_start u16 at
 * 6, csum_offset u16 at 8.
 */
export const VnetHdr = {
  SIZE: 10,
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2,
  GSO_SIZE: 4,
  CSUM_START: 6,
  CSUM_OFFSET: 8,
  F_NEEDS_CSUM: 1,
  F_DATA_VALID: 2,
  GSO_NONE: 0,
  GSO_TCPV4: 1,
  GSO_UDP: 3,
  GSO_TCPV6: 4,
  GSO_UDP_L4: 5,
  GSO_ECN: 0x80,
} as const;

/**
 * struct sched_attr as first published (SCHED_ATTR_SIZE_VER0, 48 bytes): u32 size, u32 sched_policy,
 * u64 sched_flags, s32 sched_nice, u32 sched_priority, u64 sched_runtime, u64 sched_deadline,
 * u64 sched_period. For SCHED_OTHER and SCHED_BATCH, Linux 6.12 and later read sched_runtime as the
 * thread's own time slice (0: the default one); older kernels ignore it there.
 */
export const SchedAttr = {
  SIZE: 48,
  SIZE_FIELD: 0,
  POLICY: 4,
  FLAGS: 8,
  NICE: 16,
  PRIORITY: 20,
  RUNTIME: 24,
  DEADLINE: 32,
  PERIOD: 40,
  SCHED_OTHER: 0,
  SCHED_BATCH: 3,
  /** The one flag kept when a read sched_attr is written back (others need a larger struct). */
  FLAG_RESET_ON_FORK: 0x1,
} as const;

/** A zeroed sched_attr with its size field set, for sched_getattr to fill. */
export function schedAttr(): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(SchedAttr.SIZE);
  new DataView(bytes.buffer).setUint32(SchedAttr.SIZE_FIELD, SchedAttr.SIZE, true);
  return bytes;
}

/**
 * The sched_attr to write back after reading `current`: the same policy, nice and reset-on-fork flag, with
 * `sliceNs` as the time slice; null if the policy is not SCHED_OTHER or SCHED_BATCH (real-time or idle
 * threads are left as the operator made them).
 */
export function schedAttrWithSlice(current: Uint8Array, sliceNs: number): Uint8Array<ArrayBuffer> | null {
  const from = new DataView(current.buffer, current.byteOffset, current.byteLength);
  const policy = from.getUint32(SchedAttr.POLICY, true);
  if (policy !== SchedAttr.SCHED_OTHER && policy !== SchedAttr.SCHED_BATCH) return null;
  const bytes = schedAttr();
  const to = new DataView(bytes.buffer);
  to.setUint32(SchedAttr.POLICY, policy, true);
  to.setBigUint64(
    SchedAttr.FLAGS,
    from.getBigUint64(SchedAttr.FLAGS, true) & BigInt(SchedAttr.FLAG_RESET_ON_FORK),
    true,
  );
  to.setInt32(SchedAttr.NICE, from.getInt32(SchedAttr.NICE, true), true);
  to.setBigUint64(SchedAttr.RUNTIME, BigInt(sliceNs), true);
  return bytes;
}

/** struct pollfd (8 bytes each): fd i32 at 0, events i16 at 4, revents i16 at 6. */
export const PollFd = { SIZE: 8, FD: 0, EVENTS: 4, REVENTS: 6 } as const;

export function pollFds(fds: readonly number[], events: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(PollFd.SIZE * fds.length);
  const view = new DataView(bytes.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(i * PollFd.SIZE + PollFd.FD, fd, true);
    view.setInt16(i * PollFd.SIZE + PollFd.EVENTS, events, true);
  });
  return bytes;
}

export function pollRevents(bytes: Uint8Array, index: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getInt16(index * PollFd.SIZE + PollFd.REVENTS, true);
}

/**
 * struct iovec (16 bytes): void *iov_base at 0, size_t iov_len at 8. struct msghdr (56 bytes): msg_name
 * at 0, msg_namelen u32 at 8, msg_iov at 16, msg_iovlen at 24, msg_control at 32, msg_controllen at 40,
 * msg_flags at 48. struct mmsghdr (64 bytes): the msghdr, then unsigned int msg_len at 56. (LP64 Linux.)
 */
/**
 * struct cmsghdr: size_t cmsg_len at 0, int cmsg_level at 8, int cmsg_type at 12, data at 16. LEN_U16 is
 * CMSG_LEN(sizeof(uint16_t)) and SPACE_U16 CMSG_SPACE of it (a UDP_SEGMENT size).
 */
export const Cmsg = { LEN: 0, LEVEL: 8, TYPE: 12, DATA: 16, LEN_U16: 18, SPACE_U16: 24 } as const;
export const Iovec = { SIZE: 16, BASE: 0, LEN: 8 } as const;
export const MMsgHdr = {
  SIZE: 64,
  NAME: 0,
  NAMELEN: 8,
  IOV: 16,
  IOVLEN: 24,
  CONTROL: 32,
  CONTROLLEN: 40,
  FLAGS: 48,
  LEN: 56,
} as const;

/**
 * The address of a buffer's first byte, for pointers stored inside structs. The address is good only
 * while the buffer is reachable from JavaScript: a buffer that nothing but a struct points at is garbage
 * to V8 and its memory is reused.
 */
export function addressOf(buffer: Uint8Array<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
}

/**
 * An array of `count` struct mmsghdr, each with one iovec over `buffers[i]` and, when `names` is
 * given, msg_name over `names[i]` (a sockaddr buffer of its length). The buffers must outlive it.
 */
export function mmsghdrs(
  buffers: Uint8Array<ArrayBuffer>[],
  names?: Uint8Array<ArrayBuffer>[],
): { headers: Uint8Array<ArrayBuffer>; iovecs: Uint8Array<ArrayBuffer> } {
  const count = buffers.length;
  const headers = new Uint8Array(MMsgHdr.SIZE * count);
  const iovecs = new Uint8Array(Iovec.SIZE * count);
  const h = new DataView(headers.buffer);
  const v = new DataView(iovecs.buffer);
  const iovBase = addressOf(iovecs);
  for (let i = 0; i < count; i++) {
    v.setBigUint64(i * Iovec.SIZE + Iovec.BASE, addressOf(buffers[i]), true);
    v.setBigUint64(i * Iovec.SIZE + Iovec.LEN, BigInt(buffers[i].length), true);
    const at = i * MMsgHdr.SIZE;
    if (names) {
      h.setBigUint64(at + MMsgHdr.NAME, addressOf(names[i]), true);
      h.setUint32(at + MMsgHdr.NAMELEN, names[i].length, true);
    }
    h.setBigUint64(at + MMsgHdr.IOV, iovBase + BigInt(i * Iovec.SIZE), true);
    h.setBigUint64(at + MMsgHdr.IOVLEN, 1n, true);
  }
  return { headers, iovecs };
}
