import assert from "node:assert/strict";
import { explainDeviceError } from "../src/errors.ts";
import { Errno, SyscallError } from "../ffi/libc.ts";

Deno.test("explainDeviceError() names IPv6 being off when an IPv6 address is refused", () => {
  const text = explainDeviceError(
    new SyscallError("ioctl(SIOCSIFADDR, vela3, IPv6)", Errno.EACCES),
    "configure interface vela3",
  );
  assert.match(text, /IPv6 may be turned off for the interface \(net\.ipv6\.conf\.all\.disable_ipv6\)/);
});

Deno.test("explainDeviceError() does not tell root to run as root", () => {
  const text = explainDeviceError(new SyscallError("ioctl(SIOCSIFMTU, vela3, 1400)", Errno.EPERM), "set MTU");
  if (Deno.uid() === 0) {
    assert.match(text, /refused although vela runs as root/);
    assert.doesNotMatch(text, /run vela as root/);
  } else {
    assert.match(text, /run vela as root or with CAP_NET_ADMIN/);
  }
});
