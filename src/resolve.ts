/** Peer names to underlay addresses through the system resolver (getaddrinfo: /etc/hosts, resolv.conf). */

import { lookup } from "node:dns/promises";
import { RuntimeFailure } from "./errors.ts";
import { type IpAddress, parseIp, unmapIPv4 } from "./ip.ts";

/** An address literal as it is; a name through the resolver, the first answer of the wanted family. */
export async function resolvePeer(host: string, family?: 4 | 6): Promise<IpAddress> {
  const literal = parseIp(host);
  if (literal) {
    const address = unmapIPv4(literal);
    if (family !== undefined && address.family !== family) {
      throw new RuntimeFailure(
        `Peer ${host} is not an IPv${family} address; drop -${family} or give another address`,
      );
    }
    return address;
  }
  let answers: { address: string; family: number }[];
  try {
    answers = await lookup(host, { all: true, family: family ?? 0 });
  } catch (error) {
    const code = (error as { code?: string }).code ?? (error as Error).message;
    throw new RuntimeFailure(`Cannot resolve peer ${host} (${code}); check the name or give an address`);
  }
  for (const answer of answers) {
    const address = parseIp(answer.address);
    if (address && (family === undefined || address.family === family)) return unmapIPv4(address);
  }
  throw new RuntimeFailure(
    `Peer ${host} has no ${family ? `IPv${family} ` : ""}address; check the name or give an address`,
  );
}
