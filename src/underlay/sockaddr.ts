/** Endpoints as the 28-byte sockaddr_in6 of the dual-stack socket (IPv4 as ::ffff:a.b.c.d), and back. */

import { formatIp, parseIp, unmapIPv4 } from "../ip.ts";
import { SockaddrIn6, sockaddrIn6 } from "../../ffi/structs.ts";
import type { Endpoint } from "./underlay.ts";

export function endpointSockaddr(endpoint: Endpoint): Uint8Array<ArrayBuffer> {
  const address = parseIp(endpoint.address);
  if (!address) throw new RangeError(`Not an IP address: ${endpoint.address}`);
  let bytes = address.bytes;
  if (address.family === 4) {
    bytes = new Uint8Array(16);
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.set(address.bytes, 12);
  }
  return sockaddrIn6(bytes, endpoint.port);
}

/** The endpoint in a sockaddr_in6 (a mapped IPv4 address comes back as IPv4). */
export function sockaddrEndpoint(sockaddr: Uint8Array): Endpoint {
  const view = new DataView(sockaddr.buffer, sockaddr.byteOffset, sockaddr.byteLength);
  const address = unmapIPv4({ family: 6, bytes: sockaddr.slice(SockaddrIn6.ADDR, SockaddrIn6.ADDR + 16) });
  return { address: formatIp(address), port: view.getUint16(SockaddrIn6.PORT, false) };
}
