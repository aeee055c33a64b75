/** Errors an operator sees: what went wrong and what to do, in one sentence. */

import { Errno, SyscallError } from "../ffi/libc.ts";

/** A failure the daemon cannot run through; main.ts prints its message and exits 1. */
export class RuntimeFailure extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RuntimeFailure";
  }
}

/** Explains a failure to create or configure a device in words that say what to do. */
export function explainDeviceError(error: unknown, what: string): string {
  if (error instanceof SyscallError) {
    if (error.syscall.startsWith("open(") && error.errno === Errno.ENOENT) {
      return `Cannot ${what}: /dev/net/tun does not exist; load the tun module (modprobe tun) or create the device node`;
    }
    if (error.errno === Errno.EPERM || error.errno === Errno.EACCES) {
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
