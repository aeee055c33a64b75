/**
 * The calling thread's own time slice: how long the scheduler lets it run, once picked, before another
 * runnable thread of the same weight may take its core. Linux 6.12 and later take it through
 * sched_setattr (sched_runtime for SCHED_OTHER and SCHED_BATCH, between 0.1 and 100 ms); it changes no
 * priority and no share of the CPU, only how often the thread is interrupted.
 */

import { check, libc } from "./libc.ts";
import { SchedAttr, schedAttr, schedAttrWithSlice } from "./structs.ts";

/** sched_getattr and sched_setattr by architecture (arch/x86/entry/syscalls, asm-generic/unistd.h). */
const SYSCALL_NUMBERS: Readonly<Record<string, { getattr: bigint; setattr: bigint }>> = {
  x86_64: { getattr: 315n, setattr: 314n },
  aarch64: { getattr: 275n, setattr: 274n },
};

/** The calling thread's sched_attr (pid 0 is the calling thread). */
function ownSchedAttr(getattr: bigint): Uint8Array<ArrayBuffer> {
  const attr = schedAttr();
  check(libc().syscall_sched_attr(getattr, 0, attr, SchedAttr.SIZE, 0), "sched_getattr");
  return attr;
}

/**
 * Asks for `sliceNs` as the calling thread's time slice, keeping its policy and nice value. Does nothing on
 * an architecture not listed here or for a real-time or idle thread; a kernel before 6.12 accepts the call
 * and keeps its default slice. Throws a SyscallError if a call fails.
 */
export function setOwnTimeSlice(sliceNs: number): void {
  const numbers = SYSCALL_NUMBERS[Deno.build.arch];
  if (!numbers) return;
  const wanted = schedAttrWithSlice(ownSchedAttr(numbers.getattr), sliceNs);
  if (wanted) check(libc().syscall_sched_attr(numbers.setattr, 0, wanted, 0, 0), "sched_setattr");
}
