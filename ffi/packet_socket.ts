/**
 * Packet sockets (AF_PACKET, SOCK_RAW): frames sent and received on one interface as they are, below
 * the IP stack. On a tap device a frame sent here is one the tap hands its reader, and a frame the
 * reader writes is one received here (the tests' "kernel side" of a tap).
 */

import { check, libc } from "./libc.ts";
import { Linux } from "./structs.ts";

const AF_PACKET = 17;
const SOCK_RAW = 3;
/** htons(ETH_P_ALL): every protocol. */
const ETH_P_ALL_BE = 0x0300;
const SOL_PACKET = 263;
const PACKET_VNET_HDR = 15;

/**
 * struct sockaddr_ll (20 bytes): u16 sll_family at 0, be16 sll_protocol at 2, i32 sll_ifindex at 4, u16
 * sll_hatype at 8, u8 sll_pkttype at 10, u8 sll_halen at 11, u8 sll_addr[8] at 12.
 */
export const SockaddrLl = { SIZE: 20, FAMILY: 0, PROTOCOL: 2, IFINDEX: 4 } as const;

/**
 * A nonblocking packet socket bound to interface `ifindex`, for every protocol; with `vnet`, every frame
 * sent or received starts with a virtio-net header (PACKET_VNET_HDR), so a TCP superframe can be sent.
 * Returns the descriptor, which the caller closes. Throws SyscallError.
 */
export function openPacketSocket(ifindex: number, vnet = false): number {
  const c = libc();
  const fd = check(
    c.socket(AF_PACKET, SOCK_RAW | Linux.SOCK_NONBLOCK | Linux.SOCK_CLOEXEC, ETH_P_ALL_BE),
    "socket(AF_PACKET)",
  );
  try {
    if (vnet) {
      const one = new Uint8Array(new Int32Array([1]).buffer);
      check(c.setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, one, 4), "setsockopt(PACKET_VNET_HDR)");
    }
    const address = new Uint8Array(SockaddrLl.SIZE);
    const view = new DataView(address.buffer);
    view.setUint16(SockaddrLl.FAMILY, AF_PACKET, true);
    view.setUint16(SockaddrLl.PROTOCOL, ETH_P_ALL_BE, true);
    view.setInt32(SockaddrLl.IFINDEX, ifindex, true);
    check(c.bind(fd, address, address.length), "bind(AF_PACKET)");
    return fd;
  } catch (error) {
    c.close(fd);
    throw error;
  }
}
