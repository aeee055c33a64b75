import assert from "node:assert/strict";
import {
  canonicalIp,
  formatCidr,
  formatIp,
  type IpAddress,
  type IpPrefix,
  parseCidr,
  parseIp,
  peerAddress,
  prefixContains,
  unmapIPv4,
} from "../src/ip.ts";

function v6(...groups: number[]): number[] {
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

function ip(text: string): IpAddress {
  const parsed = parseIp(text);
  assert.ok(parsed, `${text} parses`);
  return parsed;
}

function cidr(text: string): IpPrefix {
  const parsed = parseCidr(text);
  assert.ok(parsed, `${text} parses`);
  return parsed;
}

function peerOf(text: string): string {
  return formatCidr(peerAddress(cidr(text)));
}

// --- parseIp ---------------------------------------------------------------------------------------

Deno.test("parseIp() reads dotted-quad IPv4 addresses", () => {
  assert.deepEqual(parseIp("198.18.0.1"), { family: 4, bytes: new Uint8Array([198, 18, 0, 1]) });
  assert.deepEqual(parseIp("0.0.0.0"), { family: 4, bytes: new Uint8Array(4) });
  assert.deepEqual(parseIp("255.255.255.255"), { family: 4, bytes: new Uint8Array([255, 255, 255, 255]) });
});

Deno.test("parseIp() reads the all-zero IPv6 address ::", () => {
  assert.deepEqual(parseIp("::"), { family: 6, bytes: new Uint8Array(16) });
});

Deno.test("parseIp() reads ::1, fd00::1 and a full eight-group address", () => {
  assert.deepEqual(Array.from(ip("::1").bytes), v6(0, 0, 0, 0, 0, 0, 0, 1));
  assert.deepEqual(Array.from(ip("fd00::1").bytes), v6(0xfd00, 0, 0, 0, 0, 0, 0, 1));
  assert.deepEqual(Array.from(ip("1::").bytes), v6(1, 0, 0, 0, 0, 0, 0, 0));
  assert.deepEqual(
    Array.from(ip("2001:DB8:0:1:2:3:4:ffff").bytes),
    v6(0x2001, 0xdb8, 0, 1, 2, 3, 4, 0xffff),
  );
  assert.deepEqual(Array.from(ip("1:2:3:4:5:6:7::").bytes), v6(1, 2, 3, 4, 5, 6, 7, 0));
  assert.deepEqual(Array.from(ip("::2:3:4:5:6:7:8").bytes), v6(0, 2, 3, 4, 5, 6, 7, 8));
  assert.equal(ip("fd00::1").family, 6);
});

Deno.test("parseIp() reads an IPv6 address with an embedded IPv4 address", () => {
  assert.deepEqual(Array.from(ip("::ffff:198.18.0.1").bytes), v6(0, 0, 0, 0, 0, 0xffff, 0xc612, 0x0001));
  assert.deepEqual(Array.from(ip("64:ff9b::192.0.2.33").bytes), v6(0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221));
  assert.deepEqual(Array.from(ip("1:2:3:4:5:6:1.2.3.4").bytes), v6(1, 2, 3, 4, 5, 6, 0x0102, 0x0304));
});

Deno.test("parseIp() accepts brackets around an IPv6 address", () => {
  assert.deepEqual(parseIp("[::1]"), parseIp("::1"));
  assert.deepEqual(parseIp("[fd00::1]"), parseIp("fd00::1"));
  assert.equal(parseIp("[::1"), undefined);
  assert.equal(parseIp("::1]"), undefined);
});

Deno.test("parseIp() rejects malformed IPv4 addresses", () => {
  for (
    const text of [
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.1.1.1",
      "1.2.3.-4",
      "1.2..4",
      "1.2.3.4 ",
      " 1.2.3.4",
      "a.b.c.d",
      "1234.1.1.1",
    ]
  ) {
    assert.equal(parseIp(text), undefined, text);
  }
});

Deno.test("parseIp() rejects malformed IPv6 addresses", () => {
  for (
    const text of [
      "1::2::3",
      "gggg::",
      ":::",
      "12345::",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8::",
      ":1::",
      "1::2:",
      "::ffff:256.1.1.1",
      "::ffff:1.2.3",
      "1:2:3:4:5:6:7:1.2.3.4",
      "fe80::1%eth0",
    ]
  ) {
    assert.equal(parseIp(text), undefined, text);
  }
});

Deno.test("parseIp() rejects empty text and host names", () => {
  for (const text of ["", "[]", "localhost", "router2.example.net"]) {
    assert.equal(parseIp(text), undefined, text);
  }
});

// --- formatIp --------------------------------------------------------------------------------------

Deno.test("formatIp() writes IPv4 as a dotted quad", () => {
  assert.equal(formatIp(ip("198.18.0.1")), "198.18.0.1");
  assert.equal(formatIp(new Uint8Array([10, 0, 0, 255])), "10.0.0.255");
});

Deno.test("formatIp() compresses the longest run of zero groups (RFC 5952)", () => {
  assert.equal(formatIp(ip("0:0:0:0:0:0:0:0")), "::");
  assert.equal(formatIp(ip("0:0:0:0:0:0:0:1")), "::1");
  assert.equal(formatIp(ip("fd00:0:0:0:0:0:0:1")), "fd00::1");
  assert.equal(formatIp(ip("1:0:0:0:0:0:0:0")), "1::");
  assert.equal(formatIp(ip("2001:db8:0:0:1:0:0:0")), "2001:db8:0:0:1::");
  assert.equal(formatIp(ip("2001:0:0:1:0:0:0:1")), "2001:0:0:1::1");
});

Deno.test("formatIp() compresses the leftmost of two equally long zero runs", () => {
  assert.equal(formatIp(ip("2001:db8:0:0:1:0:0:1")), "2001:db8::1:0:0:1");
  assert.equal(formatIp(ip("1:0:0:2:3:0:0:4")), "1::2:3:0:0:4");
});

Deno.test("formatIp() does not compress a single zero group", () => {
  assert.equal(formatIp(ip("2001:db8:0:1:1:1:1:1")), "2001:db8:0:1:1:1:1:1");
  assert.equal(formatIp(ip("1:0:2:0:3:0:4:0")), "1:0:2:0:3:0:4:0");
});

Deno.test("formatIp() writes lower case without leading zeros", () => {
  assert.equal(formatIp(ip("2001:0DB8:00AB:000C::00FF")), "2001:db8:ab:c::ff");
  assert.equal(formatIp(ip("FD00::ABCD")), "fd00::abcd");
});

Deno.test("formatIp() takes raw bytes as well as an address", () => {
  assert.equal(formatIp(new Uint8Array(v6(0xfe80, 0, 0, 0, 0, 0, 0, 1))), "fe80::1");
});

Deno.test("formatIp() and parseIp() round-trip canonical text", () => {
  for (
    const text of ["::", "::1", "1::", "fd00:1::1", "2001:db8::1:0:0:1", "1:2:3:4:5:6:7:8", "198.18.207.2"]
  ) {
    assert.equal(formatIp(ip(text)), text);
  }
});

// --- unmapIPv4 and canonicalIp ----------------------------------------------------------------------

Deno.test("unmapIPv4() turns ::ffff:a.b.c.d into the IPv4 address", () => {
  assert.deepEqual(unmapIPv4(ip("::ffff:198.18.0.1")), { family: 4, bytes: new Uint8Array([198, 18, 0, 1]) });
  assert.deepEqual(unmapIPv4(ip("::ffff:c612:1")), { family: 4, bytes: new Uint8Array([198, 18, 0, 1]) });
});

Deno.test("unmapIPv4() leaves other addresses unchanged", () => {
  for (
    const text of ["198.18.0.1", "::1", "fd00::1", "::fffe:198.18.0.1", "1::ffff:198.18.0.1", "::198.18.0.1"]
  ) {
    const address = ip(text);
    assert.equal(unmapIPv4(address), address, text);
  }
});

Deno.test("canonicalIp() gives canonical text and unmaps v4-mapped addresses", () => {
  assert.equal(canonicalIp("::ffff:198.18.0.1"), "198.18.0.1");
  assert.equal(canonicalIp("[::FFFF:198.18.0.1]"), "198.18.0.1");
  assert.equal(canonicalIp("FD00:0:0::1"), "fd00::1");
  assert.equal(canonicalIp("[2001:db8::1]"), "2001:db8::1");
  assert.equal(canonicalIp("198.18.0.1"), "198.18.0.1");
});

Deno.test("canonicalIp() returns text that is not an address unchanged", () => {
  assert.equal(canonicalIp("router2.example.net"), "router2.example.net");
  assert.equal(canonicalIp("1::2::3"), "1::2::3");
});

// --- parseCidr -------------------------------------------------------------------------------------

Deno.test("parseCidr() reads IPv4 and IPv6 prefixes", () => {
  assert.deepEqual(parseCidr("198.18.207.1/30"), {
    family: 4,
    bytes: new Uint8Array([198, 18, 207, 1]),
    prefixLength: 30,
  });
  assert.deepEqual(parseCidr("fd00:1::1/126"), {
    family: 6,
    bytes: new Uint8Array(v6(0xfd00, 1, 0, 0, 0, 0, 0, 1)),
    prefixLength: 126,
  });
  assert.equal(cidr("0.0.0.0/0").prefixLength, 0);
  assert.equal(cidr("198.18.0.1/32").prefixLength, 32);
  assert.equal(cidr("::/0").prefixLength, 0);
  assert.equal(cidr("::1/128").prefixLength, 128);
});

Deno.test("parseCidr() keeps the host bits of the address", () => {
  assert.equal(formatCidr(cidr("198.18.5.6/24")), "198.18.5.6/24");
});

Deno.test("parseCidr() rejects a prefix length too long for the family", () => {
  assert.equal(parseCidr("198.18.0.1/33"), undefined);
  assert.equal(parseCidr("fd00::1/129"), undefined);
  assert.equal(parseCidr("198.18.0.1/1000"), undefined);
});

Deno.test("parseCidr() rejects a missing slash, length or address", () => {
  for (
    const text of [
      "198.18.0.1",
      "fd00::1",
      "198.18.0.1/",
      "/24",
      "198.18.0.1/-1",
      "198.18.0.1/2a",
      "bad/24",
      "198.18.0.1/24/1",
      "198.18.0.1/ 24",
    ]
  ) {
    assert.equal(parseCidr(text), undefined, text);
  }
});

Deno.test("formatCidr() writes canonical address and length", () => {
  assert.equal(formatCidr(cidr("FD00:0::1/64")), "fd00::1/64");
  assert.equal(formatCidr(cidr("10.1.2.3/8")), "10.1.2.3/8");
});

// --- prefixContains --------------------------------------------------------------------------------

Deno.test("prefixContains() tests IPv4 addresses against an IPv4 prefix", () => {
  const prefix = cidr("198.18.0.0/15");
  assert.equal(prefixContains(prefix, ip("198.18.0.1")), true);
  assert.equal(prefixContains(prefix, ip("198.19.255.255")), true);
  assert.equal(prefixContains(prefix, ip("198.20.0.0")), false);
  assert.equal(prefixContains(prefix, ip("198.17.255.255")), false);
  assert.equal(prefixContains(cidr("10.0.0.0/8"), ip("10.255.0.1")), true);
  assert.equal(prefixContains(cidr("198.18.0.1/32"), ip("198.18.0.1")), true);
  assert.equal(prefixContains(cidr("198.18.0.1/32"), ip("198.18.0.2")), false);
});

Deno.test("prefixContains() tests IPv6 addresses against an IPv6 prefix", () => {
  const prefix = cidr("fd00:1::/33");
  assert.equal(prefixContains(prefix, ip("fd00:1::1")), true);
  assert.equal(prefixContains(prefix, ip("fd00:1:7fff::1")), true);
  assert.equal(prefixContains(prefix, ip("fd00:1:8000::1")), false);
  assert.equal(prefixContains(prefix, ip("fd00:2::1")), false);
});

Deno.test("prefixContains() counts a v4-mapped IPv6 address as IPv4", () => {
  const prefix = cidr("198.18.0.0/24");
  assert.equal(prefixContains(prefix, ip("::ffff:198.18.0.7")), true);
  assert.equal(prefixContains(prefix, ip("::ffff:198.18.1.7")), false);
});

Deno.test("prefixContains() never matches across families", () => {
  assert.equal(prefixContains(cidr("0.0.0.0/0"), ip("::1")), false);
  assert.equal(prefixContains(cidr("::/0"), ip("198.18.0.1")), false);
  assert.equal(prefixContains(cidr("::/0"), ip("::ffff:198.18.0.1")), false);
});

Deno.test("prefixContains() matches every address of the family under /0", () => {
  assert.equal(prefixContains(cidr("0.0.0.0/0"), ip("255.255.255.255")), true);
  assert.equal(prefixContains(cidr("0.0.0.0/0"), ip("::ffff:1.2.3.4")), true);
  assert.equal(prefixContains(cidr("::/0"), ip("ffff::1")), true);
});

// --- peerAddress -----------------------------------------------------------------------------------

Deno.test("peerAddress() pairs hosts 1 and 2 of a /30", () => {
  assert.equal(peerOf("198.18.207.1/30"), "198.18.207.2/30");
  assert.equal(peerOf("198.18.207.2/30"), "198.18.207.1/30");
  assert.equal(peerOf("198.18.207.5/30"), "198.18.207.6/30");
});

Deno.test("peerAddress() flips the last bit in a /31", () => {
  assert.equal(peerOf("198.18.207.0/31"), "198.18.207.1/31");
  assert.equal(peerOf("198.18.207.1/31"), "198.18.207.0/31");
  assert.equal(peerOf("198.18.207.3/31"), "198.18.207.2/31");
});

Deno.test("peerAddress() pairs hosts 1 and 2 of a /126", () => {
  assert.equal(peerOf("fd00:1::1/126"), "fd00:1::2/126");
  assert.equal(peerOf("fd00:1::2/126"), "fd00:1::1/126");
  assert.equal(peerOf("fd00:1::5/126"), "fd00:1::6/126");
});

Deno.test("peerAddress() flips the last bit in a /127", () => {
  assert.equal(peerOf("fd00:1::/127"), "fd00:1::1/127");
  assert.equal(peerOf("fd00:1::1/127"), "fd00:1::/127");
});

Deno.test("peerAddress() in a wider prefix pairs hosts 1 and 2 of the block of four", () => {
  assert.equal(peerOf("198.18.5.6/24"), "198.18.5.5/24");
  assert.equal(peerOf("198.18.5.5/24"), "198.18.5.6/24");
  assert.equal(peerOf("198.18.5.1/24"), "198.18.5.2/24");
  assert.equal(peerOf("fd00::1:2/64"), "fd00::1:1/64");
});

Deno.test("peerAddress() keeps the family and prefix length and does not change its input", () => {
  const local = cidr("198.18.207.1/30");
  const peer = peerAddress(local);
  assert.equal(peer.family, 4);
  assert.equal(peer.prefixLength, 30);
  assert.deepEqual(Array.from(local.bytes), [198, 18, 207, 1]);
});

Deno.test("peerAddress() rejects /32 and /128 with a RangeError", () => {
  assert.throws(() => peerAddress(cidr("198.18.0.1/32")), RangeError);
  assert.throws(() => peerAddress(cidr("fd00::1/128")), RangeError);
  assert.throws(() => peerAddress(cidr("198.18.0.1/32")), /\/31 or wider/);
  assert.throws(() => peerAddress(cidr("fd00::1/128")), /\/127 or wider/);
});

Deno.test("peerAddress() rejects host 0 or 3 of a block of four with a RangeError", () => {
  for (
    const text of [
      "198.18.207.0/30",
      "198.18.207.3/30",
      "198.18.5.4/24",
      "198.18.5.7/24",
      "fd00::/126",
      "fd00::3/64",
    ]
  ) {
    assert.throws(() => peerAddress(cidr(text)), RangeError, text);
  }
  assert.throws(() => peerAddress(cidr("198.18.207.0/30")), /host 1 or 2/);
});

Deno.test("parseIp() rejects a dotted quad anywhere but the last 32 bits", () => {
  assert.equal(parseIp("1.2.3.4::"), undefined);
  assert.equal(parseIp("1.2.3.4::1"), undefined);
  assert.deepEqual(
    parseIp("::1.2.3.4")?.bytes,
    new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
  );
});
