/** Errors an operator sees: what went wrong and what to do, in one sentence. */

import { Errno, SyscallError } from "../ffi/libc.ts";

/** A failure the daemon cannot run through; main.ts prints its message and exits 1. */
export class RuntimeFailure extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RuntimeFailure";
  }
}

/** Whether this process runs as root (false where the user id cannot be read). */
function runsAsRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

/** Explains a failure to create or configure a device in words that say what to do. */
export function explainDeviceError(error: unknown, what: string): string {
  if (error instanceof SyscallError) {
    if (error.syscall.startsWith("open(") && error.errno === Errno.ENOENT) {
      return `Cannot ${what}: /dev/net/tun does not exist; load the tun module (modprobe tun) or create the device node`;
    }
    if (error.errno === Errno.EPERM || error.errno === Errno.EACCES) {
      if (error.syscall.includes("IPv6")) {
        return `Cannot ${what}: ${error.syscall} was refused; IPv6 may be turned off for the interface (net.ipv6.conf.all.disable_ipv6), or vela lacks root or CAP_NET_ADMIN`;
      }
      if (runsAsRoot()) {
        return `Cannot ${what}: ${error.syscall} was refused although vela runs as root: a security policy (SELinux, AppArmor, seccomp) or a container without CAP_NET_ADMIN stops it`;
      }
      return `Cannot ${what}: permission denied by ${error.syscall}; run vela as root or with CAP_NET_ADMIN`;
    }
    if (error.syscall === "ioctl(TUNSETIFF)" && error.errno === Errno.EBUSY) {
      return `Cannot ${what}: an interface of that name is already in use; pick another with --ifname`;
    }
    if (error.syscall === "ioctl(TUNSETIFF)" && error.errno === Errno.EINVAL) {
      return `Cannot ${what}: an interface of that name exists and is not a VELA device; pick another with --ifname`;
    }
    return `Cannot ${what}: ${error.message}`;
  }
  return `Cannot ${what}: ${error instanceof Error ? error.message : String(error)}`;
}
