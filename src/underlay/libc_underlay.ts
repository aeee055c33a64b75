/**
 * The libc underlay as the daemon holds it: the shared socket (ffi/udp_socket.ts), on which the main
 * isolate sends control datagrams; the datapath Workers serve its descriptor through KernelUnderlay.
 */

import { LibcUdpSocket } from "../../ffi/udp_socket.ts";
import { endpointSockaddr } from "./sockaddr.ts";
import type { Endpoint, Underlay } from "./underlay.ts";

export class LibcUnderlay implements Underlay {
  readonly socket: LibcUdpSocket;

  private constructor(socket: LibcUdpSocket) {
    this.socket = socket;
  }

  /** Binds [::]:port (0 = any free port). Throws Deno.errors.AddrInUse when the port is taken. */
  static bind(port: number): LibcUnderlay {
    return new LibcUnderlay(LibcUdpSocket.bind(port));
  }

  get port(): number {
    return this.socket.port;
  }

  sendControl(datagram: Uint8Array<ArrayBuffer>, to: Endpoint): Promise<boolean> {
    return Promise.resolve(this.socket.sendTo(datagram, datagram.length, endpointSockaddr(to)));
  }

  close(): void {
    this.socket.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
