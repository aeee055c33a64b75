/**
 * A test bed of two network namespaces joined by a veth pair, with VELA and other programs started in
 * them as real processes. Used by tests/netns/, the demo and the benchmarks.
 *
 * With the `impair` option the underlay loses, delays or reorders frames: through sch_netem on the two
 * ends of the veth pair where the kernel has it (and it can say what was asked), otherwise through a
 * relay (testbed/impair.ts) in a third namespace m between two veth pairs, a to m and m to b, with the
 * same addresses on the a and b ends as the direct pair has.
 *
 * Network rules: the underlay is 198.18.N.1 and 198.18.N.2 (/24) and fd00:198:18:N::1 and ::2 (/64);
 * namespace and interface names carry the process id; destroy() kills every process the bed started,
 * by PID, and deletes the namespaces, also after a failure.
 */

const decoder = new TextDecoder();
const PROJECT_ROOT = new URL("..", import.meta.url).pathname;
const MAIN = `${PROJECT_ROOT}main.ts`;
const IMPAIR = `${PROJECT_ROOT}testbed/impair.ts`;
/** The permissions compile.sh gives the vela executable; tests run vela with exactly these. */
export const VELA_PERMISSIONS = [
  "--allow-ffi",
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
  "--allow-run",
];

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and returns its exit code and output. */
export async function run(args: string[], options: { check?: boolean } = {}): Promise<RunResult> {
  const output = await new Deno.Command(args[0], { args: args.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  const result = {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
  if (options.check && result.code !== 0) {
    throw new Error(
      `${args.join(" ")} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`,
    );
  }
  return result;
}

/** Whether this process can make namespaces; if not, why (for a loud skip). */
export async function namespaceSupport(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (Deno.build.os !== "linux") return { ok: false, reason: "network namespaces need Linux" };
  if (Deno.uid() !== 0) {
    return { ok: false, reason: "network namespace tests need root (run as root or in CI)" };
  }
  const probe = `vela-probe-${Deno.pid}`;
  try {
    const added = await run(["ip", "netns", "add", probe]);
    if (added.code !== 0) return { ok: false, reason: `ip netns add failed: ${added.stderr.trim()}` };
    await run(["ip", "netns", "del", probe]);
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `cannot run ip (iproute2): ${(error as Error).message}` };
  }
}

/** Whether a program is on PATH. */
export async function hasProgram(name: string): Promise<boolean> {
  try {
    return (await run(["sh", "-c", `command -v ${name}`])).code === 0;
  } catch {
    return false;
  }
}

let beds = 0;

export interface BedOptions {
  /** MTU of the veth pair (the underlay). */
  mtu?: number;
  /** Impair the underlay, each direction on its own; `{}` gives the relay's path without impairment. */
  impair?: ImpairOptions;
}

/** What the underlay does to the frames of each direction (testbed/impair.ts has the details). */
export interface ImpairOptions {
  /** Percent of the frames dropped at random. */
  lossPercent?: number;
  /** Every frame held this many milliseconds. */
  delayMs?: number;
  /** Percent of the frames held back another `reorderDelayMs`, so that later frames overtake them. */
  reorderPercent?: number;
  /** How much longer a reordered frame is held (3 ms unless given). */
  reorderDelayMs?: number;
  /** Seed of the relay's pseudo-random choices, for the same choices from run to run (netem has none). */
  seed?: number;
}

let netemProbe: Promise<boolean> | undefined;

/**
 * Whether `tc qdisc add dev X root netem` works on this kernel: tried once per process on a veth pair in
 * a throwaway namespace.
 */
export function netemSupport(): Promise<boolean> {
  netemProbe ??= (async () => {
    const ns = `vela-${Deno.pid}-netem`;
    const dev = `v${Deno.pid}.np`.slice(-15);
    try {
      if ((await run(["ip", "netns", "add", ns])).code !== 0) return false;
      const added = await run(["ip", "-n", ns, ...`link add ${dev} type veth peer name ${dev}p`.split(" ")]);
      if (added.code !== 0) return false;
      const tc = ["tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"];
      return (await run(["ip", "netns", "exec", ns, ...tc])).code === 0;
    } catch {
      return false;
    } finally {
      await run(["ip", "netns", "del", ns]).catch(() => undefined);
    }
  })();
  return netemProbe;
}

/**
 * The netem parameters for `impair` on each end of a direct veth pair, or null when netem cannot give
 * it: netem sends the frames it does not reorder at once, without the delay, so a delay with reordering
 * is the relay's. Netem takes no seed.
 */
export function netemParameters(impair: ImpairOptions): string[] | null {
  const { lossPercent = 0, delayMs = 0, reorderPercent = 0, reorderDelayMs = 3 } = impair;
  if (reorderPercent > 0 && delayMs > 0) return null;
  const parameters: string[] = [];
  if (lossPercent > 0) parameters.push("loss", `${lossPercent}%`);
  if (reorderPercent > 0) {
    parameters.push("delay", `${reorderDelayMs}ms`, "reorder", `${100 - reorderPercent}%`);
  } else if (delayMs > 0) parameters.push("delay", `${delayMs}ms`);
  return parameters;
}

/** The relay's command line options for `impair`. */
function relayOptions(impair: ImpairOptions): string[] {
  const options: string[] = [];
  if (impair.lossPercent !== undefined) options.push("--loss", String(impair.lossPercent));
  if (impair.delayMs !== undefined) options.push("--delay", String(impair.delayMs));
  if (impair.reorderPercent !== undefined) options.push("--reorder", String(impair.reorderPercent));
  if (impair.reorderDelayMs !== undefined) options.push("--reorder-delay", String(impair.reorderDelayMs));
  if (impair.seed !== undefined) options.push("--seed", String(impair.seed));
  return options;
}

/** Options of Bed.spawn and Bed.vela. */
export interface SpawnOptions {
  /** Called with each complete line of stdout and of stderr as it arrives (the output is collected too). */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
}

/** A started process in a namespace; its output is collected. */
export interface BedProcess {
  readonly pid: number;
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  /** stdout and stderr so far. */
  output(): string;
  /** The control socket of a vela daemon the bed started. */
  control?: string;
}

export class Bed implements AsyncDisposable {
  readonly a: string;
  readonly b: string;
  readonly vethA: string;
  readonly vethB: string;
  readonly index: number;
  readonly a4: string;
  readonly b4: string;
  readonly a6: string;
  readonly b6: string;
  /** With the relay: the m ends of the veth pairs to a and to b. */
  readonly vethMA: string;
  readonly vethMB: string;
  readonly #processes: BedProcess[] = [];
  readonly #n: number;
  #m: string | undefined;
  #impairer: BedProcess | undefined;
  #impairedBy: "netem" | "relay" | undefined;
  #controls = 0;
  #destroyed = false;

  private constructor() {
    const n = ++beds;
    this.#n = n;
    this.index = 100 + (n % 100);
    this.a = `vela-${Deno.pid}-${n}-a`;
    this.b = `vela-${Deno.pid}-${n}-b`;
    this.vethA = `v${Deno.pid}.${n}a`.slice(-15);
    this.vethB = `v${Deno.pid}.${n}b`.slice(-15);
    this.vethMA = `v${Deno.pid}.${n}ma`.slice(-15);
    this.vethMB = `v${Deno.pid}.${n}mb`.slice(-15);
    this.a4 = `198.18.${this.index}.1`;
    this.b4 = `198.18.${this.index}.2`;
    this.a6 = `fd00:198:18:${this.index}::1`;
    this.b6 = `fd00:198:18:${this.index}::2`;
  }

  /** The middle namespace, where the bed impairs the underlay with the relay; otherwise undefined. */
  get m(): string | undefined {
    return this.#m;
  }

  /** The relay process in m (stop it to read its summary line, see impair.ts parseSummary). */
  get impairer(): BedProcess | undefined {
    return this.#impairer;
  }

  /** How the underlay is impaired: "netem", "relay", or undefined for a plain veth pair. */
  get impairedBy(): "netem" | "relay" | undefined {
    return this.#impairedBy;
  }

  /** Creates the namespaces and the veth pair (or pairs, see `impair`) with both address families. */
  static async create(options: BedOptions = {}): Promise<Bed> {
    const bed = new Bed();
    try {
      await bed.#setUp(options.mtu ?? 1500, options.impair);
    } catch (error) {
      await bed.destroy();
      throw error;
    }
    return bed;
  }

  async #setUp(mtu: number, impair?: ImpairOptions): Promise<void> {
    const sh = (command: string) => run(["sh", "-ec", command], { check: true });
    await sh(`ip netns add ${this.a}; ip netns add ${this.b}`);
    const netem = impair && await netemSupport() ? netemParameters(impair) : null;
    if (impair && !netem) {
      await this.#setUpRelay(mtu, impair);
    } else {
      await sh(
        `ip link add ${this.vethA} mtu ${mtu} netns ${this.a} type veth peer name ${this.vethB} mtu ${mtu} netns ${this.b}`,
      );
    }
    for (
      const [ns, dev, v4, v6] of [[this.a, this.vethA, this.a4, this.a6], [
        this.b,
        this.vethB,
        this.b4,
        this.b6,
      ]]
    ) {
      await sh(
        [
          `ip -n ${ns} link set lo up`,
          `ip -n ${ns} addr add ${v4}/24 dev ${dev}`,
          `ip -n ${ns} addr add ${v6}/64 dev ${dev} nodad`,
          `ip -n ${ns} link set ${dev} up`,
        ].join("; "),
      );
    }
    if (netem) {
      this.#impairedBy = "netem";
      for (const [ns, dev] of [[this.a, this.vethA], [this.b, this.vethB]]) {
        await sh(`ip netns exec ${ns} tc qdisc add dev ${dev} root netem ${netem.join(" ")}`);
      }
    }
  }

  /**
   * The relay's path: namespace m with a veth pair to a and one to b, made in m (m has no IP addresses,
   * not even IPv6 link-local ones) and the relay started there through spawn(). The relay turns off the
   * offloads of all four ends, so that every frame it reads is a whole frame of at most the MTU with its
   * checksums filled in (a veth hands a packet socket TCP superframes of up to 64 KiB, with the checksum
   * left to the hardware); the a and b ends keep that setting when they move to a and b after.
   */
  async #setUpRelay(mtu: number, impair: ImpairOptions): Promise<void> {
    const sh = (command: string) => run(["sh", "-ec", command], { check: true });
    const m = this.#m = `vela-${Deno.pid}-${this.#n}-m`;
    await sh(
      [
        `ip netns add ${m}`,
        `ip netns exec ${m} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`,
        `ip -n ${m} link add ${this.vethA} mtu ${mtu} type veth peer name ${this.vethMA} mtu ${mtu}`,
        `ip -n ${m} link add ${this.vethB} mtu ${mtu} type veth peer name ${this.vethMB} mtu ${mtu}`,
        `ip -n ${m} link set dev ${this.vethMA} up`,
        `ip -n ${m} link set dev ${this.vethMB} up`,
      ].join("; "),
    );
    const ends = [this.vethA, this.vethB, this.vethMA, this.vethMB];
    const noOffload = ends.flatMap((dev) => ["--no-offload", dev]);
    let ready!: () => void;
    const readyLine = new Promise<void>((resolve) => ready = resolve);
    const relay = this.spawn(m, [
      Deno.execPath(),
      "run",
      "--allow-all",
      "--quiet",
      IMPAIR,
      ...relayOptions(impair),
      ...noOffload,
      this.vethMA,
      this.vethMB,
    ], { onLine: (line, stream) => stream === "stdout" && line === "ready" && ready() });
    this.#impairer = relay;
    this.#impairedBy = "relay";
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        readyLine,
        relay.status.then((status) => {
          throw new Error(
            `the impairment relay exited ${status.code} before it was ready: ${relay.output()}`,
          );
        }),
        new Promise((_, reject) =>
          timer = setTimeout(
            () => reject(new Error(`the impairment relay was not ready in 15 s: ${relay.output()}`)),
            15_000,
          )
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
    await sh(
      `ip -n ${m} link set dev ${this.vethA} netns ${this.a}; ip -n ${m} link set dev ${this.vethB} netns ${this.b}`,
    );
  }

  /** Runs a command in namespace `ns` to completion. */
  exec(ns: string, args: string[], options: { check?: boolean } = {}): Promise<RunResult> {
    return run(["ip", "netns", "exec", ns, ...args], options);
  }

  /** Starts a long-running command in namespace `ns`; destroy() kills it by PID. */
  spawn(ns: string, args: string[], options: SpawnOptions = {}): BedProcess {
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let text = "";
    const onLine = options.onLine;
    const collect = async (stream: ReadableStream<Uint8Array>, name: "stdout" | "stderr") => {
      const streamDecoder = new TextDecoder();
      let partial = "";
      for await (const chunk of stream) {
        const piece = streamDecoder.decode(chunk, { stream: true });
        text += piece;
        if (!onLine) continue;
        const lines = (partial + piece).split("\n");
        partial = lines.pop()!;
        for (const line of lines) onLine(line, name);
      }
      if (onLine && partial !== "") onLine(partial, name);
    };
    const collected = Promise.all([collect(child.stdout, "stdout"), collect(child.stderr, "stderr")]);
    const status = child.status.then(async (s) => {
      await collected;
      return s;
    });
    const process: BedProcess = { pid: child.pid, child, status, output: () => text };
    this.#processes.push(process);
    return process;
  }

  /** Starts `vela` (this checkout's main.ts) in namespace `ns`. */
  vela(ns: string, args: string[], options: SpawnOptions = {}): BedProcess {
    // /run is shared by all namespaces: each daemon gets a control socket of its own.
    const daemon = args.some((a) => a === "--listen" || a === "--peer" || a === "--config") &&
      !["status", "top", "devices", "connect", "close", "showconf", "check-config", "genkey"].includes(
        args[0],
      );
    let control: string | undefined;
    if (daemon && !args.includes("--control")) {
      control = `/tmp/vela-${Deno.pid}-${this.index}-${++this.#controls}.sock`;
      args = [...args, "--control", control];
    }
    const process = this.spawn(
      ns,
      [Deno.execPath(), "run", ...VELA_PERMISSIONS, "--quiet", MAIN, ...args],
      options,
    );
    return control ? Object.assign(process, { control }) : process;
  }

  /** Runs a vela subcommand (status, connect, ...) in `ns` to completion. */
  velaCommand(ns: string, args: string[]): Promise<RunResult> {
    return this.exec(ns, [Deno.execPath(), "run", ...VELA_PERMISSIONS, "--quiet", MAIN, ...args]);
  }

  /** Sends `signal` to a process and waits for it to exit (SIGKILL after `ms`). */
  async stop(process: BedProcess, signal: Deno.Signal = "SIGTERM", ms = 5000): Promise<Deno.CommandStatus> {
    try {
      process.child.kill(signal);
    } catch {
      // Already gone.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) =>
      timer = setTimeout(() => {
        try {
          process.child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
        resolve();
      }, ms)
    );
    await Promise.race([process.status, killed]);
    clearTimeout(timer);
    return await process.status;
  }

  /** Whether an interface exists in namespace `ns`. */
  async hasLink(ns: string, name: string): Promise<boolean> {
    return (await run(["ip", "-n", ns, "link", "show", name])).code === 0;
  }

  /** `ip -j addr show` of an interface, parsed. */
  async link(ns: string, name: string): Promise<{ mtu: number; address: string; addrs: string[] }> {
    const shown = await run(["ip", "-n", ns, "-j", "addr", "show", "dev", name], { check: true });
    const [entry] = JSON.parse(shown.stdout);
    return {
      mtu: entry.mtu,
      address: entry.address,
      addrs: (entry.addr_info ?? []).map((a: { local: string; prefixlen: number }) =>
        `${a.local}/${a.prefixlen}`
      ),
    };
  }

  /** Polls `condition` until it holds; throws with `what` after `ms`. */
  async until(condition: () => Promise<boolean>, what: string, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await condition())) {
      if (Date.now() > deadline) {
        const logs = this.#processes.map((p) => `--- pid ${p.pid}:\n${p.output()}`).join("\n");
        throw new Error(`Timed out waiting for ${what}\n${logs}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Pings `address` from `ns` until one answer comes back (or throws after `ms`). */
  async waitPing(ns: string, address: string, ms = 15_000): Promise<void> {
    await this.until(
      async () => (await this.exec(ns, ["ping", "-c", "1", "-W", "1", address])).code === 0,
      `ping ${address} from ${ns}`,
      ms,
    );
  }

  /** Kills every process the bed started (by PID) and deletes the namespaces (m too). Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await Promise.all(this.#processes.map((p) => this.stop(p, "SIGTERM", 3000).catch(() => undefined)));
    for (const p of this.#processes) if (p.control) await Deno.remove(p.control).catch(() => undefined);
    for (const ns of [this.a, this.b, ...(this.#m ? [this.#m] : [])]) {
      // Anything still running in the bed's namespaces was started there by this bed.
      const pids = await run(["ip", "netns", "pids", ns]).catch(() => undefined);
      for (const pid of pids?.stdout.split(/\s+/).filter(Boolean) ?? []) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // Already gone.
        }
      }
      await run(["ip", "netns", "del", ns]).catch(() => undefined);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }
}
