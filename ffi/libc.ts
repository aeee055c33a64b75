/**
 * The one place that opens libc through Deno FFI.
 *
 * Every synchronous call runs on the calling thread, so `errno` is read right after it through
 * `__errno_location()` of that same thread. Calls marked `nonblocking` run on another thread: their
 * errno is not readable here, so only `poll_wait` is nonblocking and its callers treat a negative
 * result as "wake up and look again".
 */

const symbols = {
  /** int open(const char *pathname, int flags, mode_t mode); */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t readlink(const char *pathname, char *buf, size_t bufsiz); */
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /**
   * read() and write() for the datapath: the same calls, with the result read as a 32-bit int (a frame
   * is far below 2 GiB, and -1 stays -1), so that no BigInt is made per frame.
   */
  read_frame: { name: "read", parameters: ["i32", "buffer", "usize"], result: "i32" },
  write_frame: { name: "write", parameters: ["i32", "buffer", "usize"], result: "i32" },
  /** ssize_t writev(int fd, const struct iovec *iov, int iovcnt); the result as write_frame's */
  writev_frame: { name: "writev", parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** int ioctl(int fd, unsigned long request, void *argp); */
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** int ioctl(int fd, unsigned long request, unsigned long value); for requests that take a value */
  ioctl_value: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); synchronous, timeout 0 to test readiness */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); on a helper thread, to sleep until ready */
  poll_wait: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  /** int sched_yield(void); */
  sched_yield: { parameters: [], result: "i32" },
  /** int usleep(useconds_t usec); */
  usleep: { parameters: ["u32"], result: "i32" },
  /**
   * long syscall(long number, ...); for sched_getattr(pid, attr, size, flags) and
   * sched_setattr(pid, attr, flags), which glibc before 2.41 does not wrap (ffi/scheduling.ts)
   */
  syscall_sched_attr: { name: "syscall", parameters: ["i64", "i32", "buffer", "u32", "u32"], result: "i64" },
  /** int eventfd(unsigned int initval, int flags); */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen); */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int getsockname(int sockfd, struct sockaddr *addr, socklen_t *addrlen); */
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen); */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** ssize_t sendto(int sockfd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t addrlen); */
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  /** int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags, struct timespec *timeout); */
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
  /** int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags); */
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  /** int *__errno_location(void); the calling thread's errno */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

/** The libc symbols, opened on first use so that code which never touches a device needs no FFI. */
export function libc(): Libc {
  library ??= Deno.dlopen("libc.so.6", symbols);
  return library.symbols;
}

/**
 * Every size_t argument the datapath passes, made once. Deno's fast FFI calls take a 64-bit integer only
 * as a BigInt: a plain number sends V8 back from the optimized loop to slow code (a deoptimization, over
 * and over under load), and a BigInt made per call would be an allocation per frame.
 */
const SIZES: readonly bigint[] = Array.from({ length: 65_536 + 1024 }, (_, n) => BigInt(n));

/** The BigInt for a size from 0 to 66560, without allocating (a larger one is made). */
export function usize(n: number): bigint {
  return n < SIZES.length ? SIZES[n] : BigInt(n);
}

/** The calling thread's errno. Read it before any other FFI call. */
export function errno(): number {
  const location = libc().__errno_location();
  if (location === null) return 0;
  return new Deno.UnsafePointerView(location).getInt32();
}

/** The C library's text for an errno value, such as "No such device". */
export function describeErrno(code: number): string {
  const text = libc().strerror(code);
  return text === null ? `errno ${code}` : Deno.UnsafePointerView.getCString(text);
}

/** A failed system call: which call, its errno and the C library's words for it. */
export class SyscallError extends Error {
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;
  constructor(syscall: string, errnoValue: number) {
    const code = ERRNO_NAMES[errnoValue] ?? `E${errnoValue}`;
    super(`${syscall} failed: ${describeErrno(errnoValue)} (${code})`);
    this.name = "SyscallError";
    this.syscall = syscall;
    this.errno = errnoValue;
    this.code = code;
  }
}

/**
 * Passes a non-negative return code through; for a negative one reads errno at once and throws a
 * SyscallError naming the call, e.g. `check(ret, "ioctl(TUNSETIFF)")`.
 */
export function check(ret: number | bigint, syscall: string): number {
  const value = Number(ret);
  if (value < 0) throw new SyscallError(syscall, errno());
  return value;
}

/** The errno values the code acts on. Linux generic values, the same on x86_64 and aarch64. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMSGSIZE: 90,
  EADDRINUSE: 98,
  ENETUNREACH: 101,
  ENOBUFS: 105,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
} as const;

const ERRNO_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Errno).map(([name, value]) => [value, name]),
);

/** A NUL-terminated C string in a fresh buffer. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const encoded = new TextEncoder().encode(text);
  const bytes = new Uint8Array(encoded.length + 1);
  bytes.set(encoded);
  return bytes;
}

/**
 * The text of a small kernel file such as /proc/cpuinfo, read through libc: Deno itself asks for
 * --allow-all to read /proc, which a daemon run with narrower permissions does not have. At most 1 MiB.
 */
export function readProcFile(path: string): string {
  const c = libc();
  const fd = check(c.open(cString(path), 0, /* O_RDONLY */ 0), `open(${path})`);
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    while (total < 1 << 20) {
      const chunk = new Uint8Array(65_536);
      const got = check(c.read(fd, chunk, usize(chunk.length)), `read(${path})`);
      if (got === 0) break;
      chunks.push(chunk.subarray(0, got));
      total += got;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return new TextDecoder().decode(all);
  } finally {
    c.close(fd);
  }
}

/**
 * The target of a symbolic link such as /proc/self/ns/net ("net:[4026531840]"), read through libc for the
 * same reason as readProcFile. Throws SyscallError.
 */
export function readProcLink(path: string): string {
  const buffer = new Uint8Array(256);
  const length = check(libc().readlink(cString(path), buffer, usize(buffer.length)), `readlink(${path})`);
  return new TextDecoder().decode(buffer.subarray(0, length));
}
