/** What the daemon checks of the host before it listens: it can make interfaces (pure; no root). */

import assert from "node:assert/strict";
import { checkCanMakeInterfaces, interfaceProblem } from "../src/host_checks.ts";
import { RuntimeFailure } from "../src/errors.ts";

const ROOT_CAPS = 0x000001ffffffffffn;

Deno.test("interfaceProblem() finds none on a host with /dev/net/tun and CAP_NET_ADMIN", () => {
  assert.equal(
    interfaceProblem({ effectiveCapabilities: ROOT_CAPS, tunDevice: "character-device" }),
    undefined,
  );
  assert.equal(
    interfaceProblem({ effectiveCapabilities: 1n << 12n, tunDevice: "character-device" }),
    undefined,
  );
});

Deno.test("interfaceProblem() says to run as root without CAP_NET_ADMIN", () => {
  assert.equal(
    interfaceProblem({ effectiveCapabilities: 0n, tunDevice: "character-device" }),
    "Cannot make interfaces: vela lacks CAP_NET_ADMIN; run it as root (or give it CAP_NET_ADMIN)",
  );
  assert.match(
    interfaceProblem({ effectiveCapabilities: ROOT_CAPS & ~(1n << 12n), tunDevice: "character-device" })!,
    /CAP_NET_ADMIN/,
  );
});

Deno.test("interfaceProblem() says how to get /dev/net/tun when it is missing or not the device", () => {
  assert.match(interfaceProblem({ effectiveCapabilities: ROOT_CAPS, tunDevice: "missing" })!, /modprobe tun/);
  assert.match(
    interfaceProblem({ effectiveCapabilities: ROOT_CAPS, tunDevice: "other" })!,
    /mknod \/dev\/net\/tun c 10 200/,
  );
});

Deno.test("checkCanMakeInterfaces() throws a RuntimeFailure with the sentence", () => {
  assert.throws(
    () => checkCanMakeInterfaces({ effectiveCapabilities: 0n, tunDevice: "character-device" }),
    (error: Error) => error instanceof RuntimeFailure && /lacks CAP_NET_ADMIN/.test(error.message),
  );
  checkCanMakeInterfaces({ effectiveCapabilities: ROOT_CAPS, tunDevice: "character-device" });
});
