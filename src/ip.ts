/** IP addresses and prefixes as bytes: parsing, canonical text, and the address plan of a link. */

export type Family = 4 | 6;

export interface IpAddress {
  readonly family: Family;
  /** 4 or 16 bytes, network order. */
  readonly bytes: Uint8Array;
}

export interface IpPrefix extends IpAddress {
  readonly prefixLength: number;
}

function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i])) return undefined;
    const value = Number(parts[i]);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

function parseIPv6(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (half: string, last: boolean): number[] | undefined => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (last && i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (!v4) return undefined;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1], true) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

/** Parses an IPv4 or IPv6 literal (brackets allowed around IPv6); undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = parseIPv4(bare);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = parseIPv6(bare);
  return v6 ? { family: 6, bytes: v6 } : undefined;
}

/** Canonical text: dotted quad, or RFC 5952 IPv6 (lower case, longest zero run compressed). */
export function formatIp(address: IpAddress | Uint8Array): string {
  const bytes = address instanceof Uint8Array ? address : address.bytes;
  if (bytes.length === 4) return Array.from(bytes).join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = (list: number[]) => list.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 address; any other address unchanged. */
export function unmapIPv4(address: IpAddress): IpAddress {
  const b = address.bytes;
  if (address.family === 6 && b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return { family: 4, bytes: b.slice(12) };
  }
  return address;
}

/** The canonical text of an address given as text (v4-mapped IPv6 becomes IPv4), or the text itself. */
export function canonicalIp(text: string): string {
  const parsed = parseIp(text);
  return parsed ? formatIp(unmapIPv4(parsed)) : text;
}

/** Parses "address/length"; undefined when either part is invalid. */
export function parseCidr(text: string): IpPrefix | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const address = parseIp(text.slice(0, slash));
  const lengthText = text.slice(slash + 1);
  if (!address || !/^[0-9]{1,3}$/.test(lengthText)) return undefined;
  const prefixLength = Number(lengthText);
  if (prefixLength > address.bytes.length * 8) return undefined;
  return { ...address, prefixLength };
}

export function formatCidr(prefix: IpPrefix): string {
  return `${formatIp(prefix)}/${prefix.prefixLength}`;
}

/** Whether `address` lies inside `prefix` (an IPv4-mapped address counts as IPv4). */
export function prefixContains(prefix: IpPrefix, address: IpAddress): boolean {
  const a = unmapIPv4(address);
  if (a.family !== prefix.family) return false;
  let bits = prefix.prefixLength;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((a.bytes[i] & mask) !== (prefix.bytes[i] & mask)) return false;
  }
  return true;
}

/**
 * The far end's address for a point-to-point plan. In a /31 or /127 the pair is the two addresses of
 * the prefix. Otherwise the pair is hosts 1 and 2 of the aligned block of four that holds the address
 * (the two usable hosts of a /30, or the same two of a /126 or a wider prefix), so the address must be
 * host 1 or 2 of its block. Throws a RangeError that says what to give instead.
 */
export function peerAddress(local: IpPrefix): IpPrefix {
  const width = local.bytes.length * 8;
  if (local.prefixLength > width - 1) {
    throw new RangeError(
      `${formatCidr(local)} leaves no address for the far end: use a /${width - 1} or wider`,
    );
  }
  const bytes = local.bytes.slice();
  const last = bytes.length - 1;
  if (local.prefixLength === width - 1) {
    bytes[last] ^= 1;
  } else {
    const offset = bytes[last] & 3;
    if (offset !== 1 && offset !== 2) {
      throw new RangeError(
        `${formatCidr(local)} is not host 1 or 2 of its block of four, so the far end's address is unclear`,
      );
    }
    bytes[last] ^= 3;
  }
  return { family: local.family, bytes, prefixLength: local.prefixLength };
}
