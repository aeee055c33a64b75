/**
 * A UDP socket made through libc: one dual-stack socket ([::]:port, IPv4 peers as mapped addresses),
 * nonblocking, with large kernel buffers, batched with recvmmsg and sendmmsg. The datapath Worker uses
 * its descriptor directly; the main isolate sends control datagrams on it with sendto.
 *
 * Beside it, the datapath opens one peer socket per peer (openPeerSocket): bound to the same port and
 * connected to the peer, it receives that peer's datagrams (the kernel prefers a connected socket) and
 * sends to it without a route lookup per datagram (bench/: about 5% more TCP without offloads).
 */

import { check, Errno, errno, libc, SyscallError } from "./libc.ts";
import { Linux, SockaddrIn6, sockaddrIn6 } from "./structs.ts";

/** Kernel socket buffer size asked for (SO_RCVBUFFORCE/SO_SNDBUFFORCE as root, else up to rmem_max). */
export const SOCKET_BUFFER_BYTES = 8 * 1024 * 1024;
const int = (value: number) => new Uint8Array(new Int32Array([value]).buffer);

/** A nonblocking dual-stack UDP socket with large kernel buffers, not yet bound. */
function dualStackSocket(): number {
  const c = libc();
  const fd = check(
    c.socket(Linux.AF_INET6, Linux.SOCK_DGRAM | Linux.SOCK_NONBLOCK | Linux.SOCK_CLOEXEC, 0),
    "socket(AF_INET6, SOCK_DGRAM)",
  );
  try {
    check(c.setsockopt(fd, Linux.IPPROTO_IPV6, Linux.IPV6_V6ONLY, int(0), 4), "setsockopt(IPV6_V6ONLY)");
    for (
      const [force, plain, name] of [
        [Linux.SO_RCVBUFFORCE, Linux.SO_RCVBUF, "SO_RCVBUF"],
        [Linux.SO_SNDBUFFORCE, Linux.SO_SNDBUF, "SO_SNDBUF"],
      ] as const
    ) {
      // The forced size needs CAP_NET_ADMIN, which a VELA daemon has; otherwise take what rmem_max allows.
      if (c.setsockopt(fd, Linux.SOL_SOCKET, force, int(SOCKET_BUFFER_BYTES), 4) < 0) {
        check(c.setsockopt(fd, Linux.SOL_SOCKET, plain, int(SOCKET_BUFFER_BYTES), 4), `setsockopt(${name})`);
      }
    }
    return fd;
  } catch (error) {
    c.close(fd);
    throw error;
  }
}

/**
 * A peer socket: bound to [::]:port, the port of a LibcUdpSocket, and connected to `peer` (a
 * sockaddr_in6). It receives
 * the peer's datagrams from then on (the shared socket keeps everyone else's) and sends to the peer
 * with a route the kernel keeps; with `gro`, it joins received datagrams as the shared socket does
 * (enableGro). Returns its descriptor, which the caller closes. Throws SyscallError.
 */
export function openPeerSocket(port: number, peer: Uint8Array<ArrayBuffer>, gro = false): number {
  const c = libc();
  const fd = dualStackSocket();
  try {
    if (gro) check(c.setsockopt(fd, Linux.SOL_UDP, Linux.UDP_GRO, int(1), 4), "setsockopt(UDP_GRO)");
    check(c.setsockopt(fd, Linux.SOL_SOCKET, Linux.SO_REUSEPORT, int(1), 4), "setsockopt(SO_REUSEPORT)");
    const any = sockaddrIn6(new Uint8Array(16), port);
    check(c.bind(fd, any, any.length), `bind([::]:${port})`);
    // Until connect() below, the kernel may hand this socket a datagram meant for the shared one (they
    // share the port); the receiving Worker reads it here and delivers it all the same. Once connected,
    // the kernel picks by address: this socket gets the peer's datagrams, the shared one the rest.
    check(c.connect(fd, peer, peer.length), "connect");
    return fd;
  } catch (error) {
    c.close(fd);
    throw error;
  }
}

export class LibcUdpSocket implements Disposable {
  readonly fd: number;
  readonly port: number;
  #closed = false;
  private constructor(fd: number, port: number) {
    this.fd = fd;
    this.port = port;
  }

  /** Binds [::]:port (0 = any free port). Throws Deno.errors.AddrInUse when the port is taken. */
  static bind(port: number): LibcUdpSocket {
    const c = libc();
    const fd = dualStackSocket();
    try {
      const any = sockaddrIn6(new Uint8Array(16), port);
      if (c.bind(fd, any, any.length) < 0) {
        const code = errno();
        if (code === Errno.EADDRINUSE) throw new Deno.errors.AddrInUse(`UDP port ${port} is in use`);
        throw new SyscallError(`bind([::]:${port})`, code);
      }
      // Set after bind, so that a socket of the same user that asks for it (a peer socket) may share the
      // port, while a plain bind, such as a second daemon's on the same port, still fails with EADDRINUSE.
      // SO_REUSEPORT, not SO_REUSEADDR: the kernel lets only the same user join, so no other local user
      // can bind the port (or one address of it) and take the datagrams.
      check(c.setsockopt(fd, Linux.SOL_SOCKET, Linux.SO_REUSEPORT, int(1), 4), "setsockopt(SO_REUSEPORT)");
      const local = new Uint8Array(SockaddrIn6.SIZE);
      const length = new Uint8Array(new Uint32Array([local.length]).buffer);
      check(c.getsockname(fd, local, length), "getsockname");
      return new LibcUdpSocket(fd, new DataView(local.buffer).getUint16(SockaddrIn6.PORT, false));
    } catch (error) {
      c.close(fd);
      throw error;
    }
  }

  /**
   * Asks the kernel to join datagrams of one flow on receive (UDP_GRO); the reader must then split
   * messages at the segment size it reports. False where the kernel does not offer it.
   */
  enableGro(): boolean {
    return libc().setsockopt(this.fd, Linux.SOL_UDP, Linux.UDP_GRO, int(1), 4) === 0;
  }

  /** Sends one datagram at once (sendto) to a sockaddr_in6; false when the kernel refused it. */
  sendTo(datagram: Uint8Array<ArrayBuffer>, length: number, to: Uint8Array<ArrayBuffer>): boolean {
    if (this.#closed) return false;
    return Number(libc().sendto(this.fd, datagram, BigInt(length), 0, to, to.length)) >= 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
