import assert from "node:assert/strict";
import {
  type Command,
  CONFIG_COMPANIONS,
  DAEMON_OPTIONS,
  type DaemonArgs,
  DEFAULT_PORT,
  parseCommandLine,
  SUBCOMMAND_OPTIONS,
  SUBCOMMANDS,
  UsageError,
} from "../src/cli.ts";
import { COMMAND_HELP, HELP } from "../src/cli_help.ts";
import { formatCidr } from "../src/ip.ts";

function daemon(argv: string[]): DaemonArgs {
  const command: Command = parseCommandLine(argv);
  assert.equal(command.kind, "daemon");
  return (command as Extract<Command, { kind: "daemon" }>).args;
}

/** Asserts that `argv` is refused with a UsageError whose message matches every pattern. */
function refused(argv: string[], ...patterns: (string | RegExp)[]): void {
  let caught: unknown;
  try {
    parseCommandLine(argv);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof UsageError, `${JSON.stringify(argv)} should throw a UsageError, got ${caught}`);
  assert.equal(caught.name, "UsageError");
  assert.ok(!caught.message.includes("\n"), "a usage error is one line");
  for (const pattern of patterns) {
    if (typeof pattern === "string") {
      assert.ok(caught.message.includes(pattern), `"${caught.message}" should mention ${pattern}`);
    } else {
      assert.match(caught.message, pattern);
    }
  }
}

const CIRCUIT = ["--peer", "router2.example.net", "--vid", "3"];

// --- help and version ------------------------------------------------------------------------------

Deno.test("--help and -h ask for the help text", () => {
  assert.deepEqual(parseCommandLine(["--help"]), { kind: "help" });
  assert.deepEqual(parseCommandLine(["-h"]), { kind: "help" });
  assert.deepEqual(parseCommandLine([...CIRCUIT, "--help"]), { kind: "help" });
});

Deno.test("--version and -V ask for the version", () => {
  assert.deepEqual(parseCommandLine(["--version"]), { kind: "version" });
  assert.deepEqual(parseCommandLine(["-V"]), { kind: "version" });
});

Deno.test("--help wins over --version and over invalid values", () => {
  assert.deepEqual(parseCommandLine(["--help", "--version"]), { kind: "help" });
  assert.deepEqual(parseCommandLine(["--help", "--vid", "0"]), { kind: "help" });
});

// --- initiator -------------------------------------------------------------------------------------

Deno.test("a minimal initiator command takes the defaults", () => {
  const args = daemon(CIRCUIT);
  assert.deepEqual(args, {
    verbosity: "normal",
    listen: false,
    allow: [],
    insecureAcceptAny: false,
    port: DEFAULT_PORT,
    localPort: 0,
    keyFile: undefined,
    configFile: undefined,
    control: "/run/vela/vela.sock",
    metrics: undefined,
    underlay: "libc",
    offload: true,
    peer: {
      host: "router2.example.net",
      family: undefined,
      vid: 3,
      mode: "tap",
      addresses: [],
      mtu: undefined,
      ifname: undefined,
    },
  });
  assert.equal(DEFAULT_PORT, 4455);
});

Deno.test("a full initiator command parses every option", () => {
  const args = daemon([
    "--peer",
    "2001:db8::2",
    "--vid",
    "255",
    "--mode",
    "tun",
    "--address",
    "198.18.207.1/30",
    "--address",
    "fd00:1::1/126",
    "--mtu",
    "1400",
    "--ifname",
    "velatest",
    "-6",
    "--port",
    "5000",
    "--local-port",
    "6000",
    "-v",
  ]);
  assert.equal(args.verbosity, "verbose");
  assert.equal(args.listen, false);
  assert.equal(args.port, 5000);
  assert.equal(args.localPort, 6000);
  assert.ok(args.peer);
  assert.equal(args.peer.host, "2001:db8::2");
  assert.equal(args.peer.vid, 255);
  assert.equal(args.peer.mode, "tun");
  assert.equal(args.peer.family, 6);
  assert.equal(args.peer.mtu, 1400);
  assert.equal(args.peer.ifname, "velatest");
  assert.deepEqual(args.peer.addresses.map(formatCidr), ["198.18.207.1/30", "fd00:1::1/126"]);
});

Deno.test("-4 asks for the peer's IPv4 address and --mode tap is accepted", () => {
  const args = daemon([...CIRCUIT, "-4", "--mode", "tap"]);
  assert.equal(args.peer?.family, 4);
  assert.equal(args.peer?.mode, "tap");
});

Deno.test("--port defaults to 4455 and --local-port to any free port", () => {
  const args = daemon(CIRCUIT);
  assert.equal(args.port, 4455);
  assert.equal(args.localPort, 0);
});

Deno.test("-q makes the daemon quiet", () => {
  assert.equal(daemon([...CIRCUIT, "-q"]).verbosity, "quiet");
  assert.equal(daemon([...CIRCUIT, "--quiet"]).verbosity, "quiet");
});

Deno.test("--mtu takes 576 to 65535", () => {
  assert.equal(daemon([...CIRCUIT, "--mtu", "576"]).peer?.mtu, 576);
  assert.equal(daemon([...CIRCUIT, "--mtu", "65535"]).peer?.mtu, 65535);
  refused([...CIRCUIT, "--mtu", "575"], "--mtu");
  refused([...CIRCUIT, "--mtu", "65536"], "--mtu");
});

Deno.test("--address takes /31 and /127 and a wider prefix", () => {
  const args = daemon([...CIRCUIT, "--address", "198.18.207.0/31", "--address", "fd00::1/127"]);
  assert.deepEqual(args.peer?.addresses.map(formatCidr), ["198.18.207.0/31", "fd00::1/127"]);
  assert.deepEqual(daemon([...CIRCUIT, "--address", "198.18.5.6/24"]).peer?.addresses.map(formatCidr), [
    "198.18.5.6/24",
  ]);
});

// --- listener --------------------------------------------------------------------------------------

Deno.test("a listener takes repeated --allow prefixes and listens on --port", () => {
  const args = daemon(["--listen", "--allow", "198.18.0.0/24", "--allow", "2001:db8::/32", "--port", "4456"]);
  assert.equal(args.listen, true);
  assert.equal(args.insecureAcceptAny, false);
  assert.deepEqual(args.allow.map(formatCidr), ["198.18.0.0/24", "2001:db8::/32"]);
  assert.equal(args.port, 4456);
  assert.equal(args.localPort, 4456);
  assert.equal(args.peer, undefined);
});

Deno.test("a listener takes --insecure-accept-any instead of --allow", () => {
  const args = daemon(["--listen", "--insecure-accept-any"]);
  assert.equal(args.listen, true);
  assert.equal(args.insecureAcceptAny, true);
  assert.deepEqual(args.allow, []);
  assert.equal(args.port, DEFAULT_PORT);
  assert.equal(args.localPort, DEFAULT_PORT);
});

Deno.test("a listener may start a circuit too", () => {
  const args = daemon(["--listen", "--allow", "198.18.0.0/24", ...CIRCUIT]);
  assert.equal(args.listen, true);
  assert.equal(args.peer?.vid, 3);
});

// --- usage errors ----------------------------------------------------------------------------------

Deno.test("no arguments at all is a usage error that points to --peer and --listen", () => {
  refused([], "--peer", "--listen");
});

Deno.test("--vid 0, 256 and abc are usage errors", () => {
  refused(["--peer", "h", "--vid", "0"], "--vid", "1 to 255");
  refused(["--peer", "h", "--vid", "256"], "--vid", "1 to 255");
  refused(["--peer", "h", "--vid", "abc"], "--vid", "abc");
  refused(["--peer", "h", "--vid", "-1"], "--vid");
  refused(["--peer", "h", "--vid", "3.5"], "--vid");
});

Deno.test("--peer without --vid is a usage error", () => {
  refused(["--peer", "h"], "--vid");
});

Deno.test("an empty --peer is a usage error", () => {
  refused(["--peer", "", "--vid", "3"], "--peer");
});

Deno.test("--vid without --peer is a usage error", () => {
  refused(["--vid", "3"], "--vid", "--peer");
});

Deno.test("other circuit options without --peer are usage errors", () => {
  refused(["--mode", "tun"], "--mode", "--peer");
  refused(["--address", "198.18.0.1/30"], "--address", "--peer");
  refused(["--mtu", "1400"], "--mtu", "--peer");
  refused(["--ifname", "x"], "--ifname", "--peer");
  refused(["--local-port", "5000"], "--local-port", "--peer");
  refused(["--listen", "--insecure-accept-any", "-4"], "--peer");
});

Deno.test("--mode foo is a usage error", () => {
  refused([...CIRCUIT, "--mode", "foo"], "--mode", "foo");
});

Deno.test("--address bad is a usage error", () => {
  refused([...CIRCUIT, "--address", "bad"], "--address", "bad");
  refused([...CIRCUIT, "--address", "198.18.0.1"], "--address");
  refused([...CIRCUIT, "--address", "198.18.0.1/33"], "--address");
});

Deno.test("--address with a /32 leaves no address for the peer and is a usage error", () => {
  refused([...CIRCUIT, "--address", "198.18.0.1/32"], "--address", "198.18.0.1/32");
  refused([...CIRCUIT, "--address", "fd00::1/128"], "--address");
  refused([...CIRCUIT, "--address", "198.18.207.3/30"], "--address", "host 1 or 2");
});

Deno.test("two IPv4 --address options are a usage error", () => {
  refused([...CIRCUIT, "--address", "198.18.0.1/30", "--address", "198.18.0.5/30"], "--address", "IPv4");
  refused([...CIRCUIT, "--address", "fd00::1/126", "--address", "fd00::5/126"], "--address", "IPv6");
});

Deno.test("--mtu 100 is a usage error", () => {
  refused([...CIRCUIT, "--mtu", "100"], "--mtu", "576");
});

Deno.test("--ifname with 16 characters is a usage error", () => {
  refused([...CIRCUIT, "--ifname", "abcdefghijklmnop"], "--ifname", "abcdefghijklmnop");
  refused([...CIRCUIT, "--ifname", "a/b"], "--ifname");
  refused([...CIRCUIT, "--ifname", "a b"], "--ifname");
});

Deno.test("--listen without --allow is a usage error", () => {
  refused(["--listen"], "--listen", "--allow");
});

Deno.test("--allow without --listen is a usage error", () => {
  refused(["--allow", "198.18.0.0/24"], "--allow", "--listen");
  refused([...CIRCUIT, "--allow", "198.18.0.0/24"], "--allow", "--listen");
  refused(["--insecure-accept-any"], "--insecure-accept-any", "--listen");
});

Deno.test("a bad --allow prefix is a usage error", () => {
  refused(["--listen", "--allow", "198.18.0.0"], "--allow");
});

Deno.test("--local-port with --listen is a usage error", () => {
  refused(["--listen", "--insecure-accept-any", "--local-port", "5000"], "--local-port", "--listen");
});

Deno.test("a --port outside 1 to 65535 is a usage error", () => {
  refused([...CIRCUIT, "--port", "0"], "--port");
  refused([...CIRCUIT, "--port", "65536"], "--port");
  refused([...CIRCUIT, "--local-port", "http"], "--local-port");
});

Deno.test("an unknown option --frobnicate is a usage error that names it", () => {
  refused([...CIRCUIT, "--frobnicate"], "--frobnicate");
  refused(["-x"], "-x");
});

Deno.test("a positional argument is a usage error that names it", () => {
  refused([...CIRCUIT, "router3"], "router3");
});

Deno.test("an option that needs a value and has none is a usage error", () => {
  refused(["--peer"], "--peer");
});

Deno.test("-v with -q is a usage error", () => {
  refused([...CIRCUIT, "-v", "-q"], "--verbose", "--quiet");
});

Deno.test("-4 with -6 is a usage error", () => {
  refused([...CIRCUIT, "-4", "-6"], "-4", "-6");
});

Deno.test("--datapath-threads takes 1 or 2, for the libc underlay only", () => {
  assert.equal(daemon(CIRCUIT).datapathThreads, undefined, "unset: chosen by the CPU count");
  assert.equal(daemon([...CIRCUIT, "--datapath-threads", "1"]).datapathThreads, 1);
  assert.equal(daemon([...CIRCUIT, "--datapath-threads", "2", "--underlay", "libc"]).datapathThreads, 2);
  refused([...CIRCUIT, "--datapath-threads", "3"], "--datapath-threads", "1 to 2");
  refused([...CIRCUIT, "--datapath-threads", "two"], "--datapath-threads");
  refused([...CIRCUIT, "--datapath-threads", "1", "--underlay", "deno"], "--datapath-threads", "libc");
});

Deno.test("--moderation-us takes 0 to 1000 microseconds, for the libc underlay only", () => {
  assert.equal(daemon(CIRCUIT).moderationUs, undefined, "unset: the default of src/timing.ts");
  assert.equal(daemon([...CIRCUIT, "--moderation-us", "0"]).moderationUs, 0);
  assert.equal(daemon([...CIRCUIT, "--moderation-us", "250"]).moderationUs, 250);
  refused([...CIRCUIT, "--moderation-us", "1001"], "--moderation-us", "0 to 1000");
  refused([...CIRCUIT, "--moderation-us", "-1"], "--moderation-us");
  refused([...CIRCUIT, "--moderation-us", "50", "--underlay", "deno"], "--moderation-us", "libc");
});

// --- keys and ciphers ------------------------------------------------------------------------------

Deno.test("--key-file given twice keeps the first for the circuits and the second as a listener's extra key", () => {
  const args = daemon(["--listen", "--key-file", "/k/one", "--key-file", "/k/two"]);
  assert.equal(args.keyFile, "/k/one");
  assert.deepEqual(args.extraKeyFiles, ["/k/two"]);
});

Deno.test("--cipher takes auto, the two ciphers and none, which is the clear cipher", () => {
  for (const [text, policy] of [["auto", "auto"], ["aes-256-gcm", "aes-256-gcm"], ["none", "clear"]]) {
    assert.equal(daemon([...CIRCUIT, "--key-file", "/k", "--cipher", text]).cipher, policy);
  }
  assert.equal(
    daemon([...CIRCUIT, "--key-file", "/k", "--cipher", "chacha20-poly1305"]).cipher,
    "chacha20-poly1305",
  );
  refused([...CIRCUIT, "--key-file", "/k", "--cipher", "des"], "--cipher", "aes-256-gcm", "des");
  refused([...CIRCUIT, "--cipher", "none"], "--cipher goes with --key-file");
});

Deno.test("--rekey-after is seconds from 1 to 120", () => {
  assert.equal(daemon([...CIRCUIT, "--key-file", "/k", "--rekey-after", "30"]).rekeyAfterMs, 30_000);
  refused([...CIRCUIT, "--rekey-after", "0"], "--rekey-after");
  refused([...CIRCUIT, "--rekey-after", "121"], "--rekey-after");
});

// --- help text -------------------------------------------------------------------------------------

/** The daemon's long options, from the one table parseCommandLine reads. */
const LONG_OPTIONS = Object.keys(DAEMON_OPTIONS);
/** Long options that are, for now, only documented by their short forms -4 and -6. */
const UNDOCUMENTED = new Set<string>();

Deno.test("every long option parseCommandLine accepts is accepted, so the list below is complete", () => {
  // Each name really is an option: giving it never fails as "Unknown option".
  for (const name of LONG_OPTIONS) {
    try {
      parseCommandLine([`--${name}`, "x"]);
    } catch (error) {
      assert.ok(!/Unknown option/.test((error as Error).message), `--${name}: ${(error as Error).message}`);
    }
  }
});

Deno.test("every long option parseCommandLine accepts is mentioned in HELP", () => {
  for (const name of LONG_OPTIONS.filter((n) => !UNDOCUMENTED.has(n))) {
    assert.match(HELP, new RegExp(`--${name}\\b`), `HELP mentions --${name}`);
  }
  assert.ok(HELP.includes("-4, --ipv4") && HELP.includes("-6, --ipv6"), "HELP mentions -4 and -6");
});

Deno.test("HELP mentions every short option", () => {
  for (const short of ["-4", "-6", "-v", "-q", "-h", "-V"]) {
    assert.match(HELP, new RegExp(`(^|[\\s,])${short}\\b`, "m"), `HELP mentions ${short}`);
  }
});

Deno.test("HELP states the default port", () => {
  assert.ok(HELP.includes(`default ${DEFAULT_PORT}`));
});

Deno.test("vela genkey is its own command and takes no arguments", () => {
  assert.deepEqual(parseCommandLine(["genkey"]), { kind: "genkey" });
  assert.throws(() => parseCommandLine(["genkey", "extra"]), UsageError);
});

Deno.test("--listen with only --key-file is enough", () => {
  const command = parseCommandLine(["--listen", "--key-file", "/etc/vela/key"]);
  assert.equal(command.kind, "daemon");
  assert.equal(command.kind === "daemon" && command.args.keyFile, "/etc/vela/key");
});

Deno.test("--config goes alone, with -v or -q at most", () => {
  const command = parseCommandLine(["--config", "/etc/vela/vela.json", "-v"]);
  assert.equal(command.kind === "daemon" && command.args.configFile, "/etc/vela/vela.json");
  assert.throws(
    () => parseCommandLine(["--config", "x.json", "--listen", "--insecure-accept-any"]),
    /--config goes alone/,
  );
});

Deno.test("--bridge puts the --peer circuit's tap into a bridge, and with --listen also the listener's", () => {
  assert.equal(daemon([...CIRCUIT, "--bridge", "br0"]).peer?.bridge, "br0");
  const listener = daemon(["--listen", "--allow", "198.18.0.0/15", "--bridge", "br1"]);
  assert.equal(listener.bridge, "br1");
  refused([...CIRCUIT, "--mode", "tun", "--bridge", "br0"], "--bridge goes with --mode tap");
  refused([...CIRCUIT, "--bridge", "bad name"], "not a valid interface name");
  refused(["--config", "x.json", "--bridge", "br0"], "--config goes alone");
});

Deno.test("--up and --down take a command each, and not an empty one", () => {
  const args = daemon([...CIRCUIT, "--up", "logger up", "--down", "logger down"]);
  assert.equal(args.up, "logger up");
  assert.equal(args.down, "logger down");
  refused([...CIRCUIT, "--up", ""], "--up needs a command");
});

Deno.test("--local-mac, --remote-mac and --block make the circuit's filter, on a tap circuit only", () => {
  const args = daemon([...CIRCUIT, "--local-mac", "02:00:00:00:0a:01", "--block", "ipv6", "--block", "stp"]);
  assert.deepEqual(args.peer?.filter, {
    local: ["020000000a01"],
    remote: [],
    broadcast: true,
    multicast: true,
    block: [0x86dd, "stp"],
  });
  refused([...CIRCUIT, "--mode", "tun", "--block", "ipv6"], "go with --mode tap");
  refused([...CIRCUIT, "--remote-mac", "02:00"], '--remote-mac "02:00" is not a MAC address');
  refused(["--listen", "--allow", "198.18.0.0/15", "--block", "ipv6"], "--block goes with --peer");
});

Deno.test("--far-bridge asks for the far tap's bridge and --offer-bridge lets a listener grant it", () => {
  assert.equal(daemon([...CIRCUIT, "--far-bridge", "br5"]).peer?.farBridge, "br5");
  const listener = daemon([
    "--listen",
    "--allow",
    "198.18.0.0/15",
    "--offer-bridge",
    "br5",
    "--offer-bridge",
    "br6",
  ]);
  assert.deepEqual(listener.offerBridges, ["br5", "br6"]);
  refused([...CIRCUIT, "--mode", "tun", "--far-bridge", "br5"], "--far-bridge goes with --mode tap");
  refused([...CIRCUIT, "--offer-bridge", "br5"], "--offer-bridge goes with --listen");
  refused(["--far-bridge", "br5"], "--far-bridge goes with --peer");
});

// --- what a mistyped command line is told ----------------------------------------------------------

function usageMessage(argv: string[]): string {
  try {
    parseCommandLine(argv);
  } catch (error) {
    assert.ok(error instanceof UsageError, `${argv.join(" ")}: ${error}`);
    return error.message;
  }
  assert.fail(`${argv.join(" ")} parsed`);
}

Deno.test("a mistyped command is told the nearest one", () => {
  assert.equal(usageMessage(["stauts"]), 'Unknown command "stauts"; did you mean vela status?');
  assert.equal(usageMessage(["conect"]), 'Unknown command "conect"; did you mean vela connect?');
  assert.equal(usageMessage(["frobnicate"]), 'Unknown command "frobnicate"; see vela help');
});

Deno.test("a mistyped option is told the nearest one, for the daemon and for a command", () => {
  assert.equal(usageMessage(["--pear", "r2"]), "Unknown option --pear; did you mean --peer?");
  assert.equal(
    usageMessage(["status", "--jsno"]),
    "Unknown option --jsno for vela status; did you mean --json?",
  );
  assert.equal(usageMessage(["--watch"]), "Unknown option --watch; it goes with vela status");
});

Deno.test("no parser text leaks: a missing value, an option where a value should be, a value for a switch", () => {
  assert.equal(usageMessage(["--peer"]), "--peer needs a value");
  assert.equal(
    usageMessage(["--peer", "-4", "--vid", "3"]),
    "--peer needs a value, not the option -4 (write --peer=-4 if that is the value)",
  );
  assert.equal(usageMessage(["--listen=yes"]), "--listen takes no value");
  assert.equal(usageMessage(["--vid", "3", "--vid", "4", "--peer", "r2"]), "--vid is given twice");
  for (
    const argv of [["--peer"], ["--peer", "-4"], ["connect", "--peer", "--vid"], ["status", "--control"]]
  ) {
    assert.doesNotMatch(usageMessage(argv), /ambiguous|argument missing|ERR_|Did you forget/, argv.join(" "));
  }
});

Deno.test("vela help, vela help COMMAND and vela COMMAND --help", () => {
  assert.deepEqual(parseCommandLine(["help"]), { kind: "help" });
  assert.deepEqual(parseCommandLine(["help", "status"]), { kind: "help", command: "status" });
  assert.deepEqual(parseCommandLine(["connect", "--help"]), { kind: "help", command: "connect" });
  assert.deepEqual(parseCommandLine(["top", "-h"]), { kind: "help", command: "top" });
  assert.equal(usageMessage(["help", "stats"]), 'Unknown command "stats"; did you mean vela status?');
});

Deno.test("every command has its help, and its help names every option it takes", () => {
  for (const name of SUBCOMMANDS) {
    const help = COMMAND_HELP[name];
    assert.match(help, new RegExp(`^Usage: vela ${name}\\b`), name);
    for (const option of Object.keys(SUBCOMMAND_OPTIONS[name])) {
      if (option === "help") continue;
      assert.match(help, new RegExp(`--${option}\\b`), `vela ${name} --help mentions --${option}`);
    }
  }
});

Deno.test("--config names the options that may go with it, as the help lists them", () => {
  const message = usageMessage(["--config", "f.json", "--peer", "r2"]);
  for (const name of CONFIG_COMPANIONS) assert.match(message, new RegExp(`--${name}\\b`));
  for (const name of CONFIG_COMPANIONS) {
    const value = DAEMON_OPTIONS[name].type === "string" ? ["1"] : [];
    try {
      parseCommandLine(["--config", "f.json", `--${name}`, ...value]);
    } catch (error) {
      assert.doesNotMatch((error as Error).message, /--config goes alone/, name);
    }
  }
  const start = HELP.indexOf("With --config FILE, only these options");
  assert.ok(start >= 0, "HELP says what goes with --config");
  const line = HELP.slice(start, HELP.indexOf("\n\n", start)).replaceAll("\n", " ");
  for (const name of CONFIG_COMPANIONS) {
    const shown = name === "verbose" ? "-v" : name === "quiet" ? "-q" : `--${name}`;
    assert.ok(line.includes(shown), `HELP's --config line names ${shown}`);
  }
});

Deno.test("status --watch is top; status IFNAME and --circuit pick one circuit", () => {
  assert.deepEqual(parseCommandLine(["status", "--watch", "--interval", "1"]), {
    kind: "top",
    target: { path: "/run/vela/vela.sock" },
    intervalS: 1,
  });
  assert.deepEqual(parseCommandLine(["status", "vela3"]), {
    kind: "status",
    target: { path: "/run/vela/vela.sock" },
    json: false,
    circuit: "vela3",
  });
  assert.deepEqual(
    parseCommandLine(["status", "--circuit", "vela3", "--json"], "/run/vela/ns1.sock"),
    { kind: "status", target: { path: "/run/vela/ns1.sock" }, json: true, circuit: "vela3" },
  );
  assert.match(usageMessage(["status", "--interval", "1"]), /go with --watch/);
});

Deno.test("--remote HOST[:PORT] with --key-file targets a daemon's --control-listen port", () => {
  const remote = (argv: string[]) => (parseCommandLine(argv) as { target: unknown }).target;
  assert.deepEqual(remote(["status", "--remote", "router1", "--key-file", "ops.key"]), {
    remote: { hostname: "router1", port: 4456 },
    keyFile: "ops.key",
  });
  assert.deepEqual(remote(["devices", "--remote", "198.18.0.1:7000", "--key-file", "k"]), {
    remote: { hostname: "198.18.0.1", port: 7000 },
    keyFile: "k",
  });
  assert.deepEqual(remote(["top", "--remote", "[fd00::1]:7000", "--key-file", "k"]), {
    remote: { hostname: "fd00::1", port: 7000 },
    keyFile: "k",
  });
  assert.deepEqual(remote(["showconf", "--remote", "fd00::1", "--key-file", "k"]), {
    remote: { hostname: "fd00::1", port: 4456 },
    keyFile: "k",
  });
  const connect = parseCommandLine([
    "connect",
    "--remote",
    "router1",
    "--key-file",
    "k",
    "--peer",
    "router2",
    "--vid",
    "3",
  ]);
  assert.equal(connect.kind, "connect");
  assert.match(usageMessage(["status", "--remote", "router1"]), /--remote needs --key-file FILE/);
  assert.match(usageMessage(["status", "--key-file", "k"]), /--key-file goes with --remote/);
  assert.match(
    usageMessage(["status", "--remote", "r1", "--key-file", "k", "--control", "/tmp/s"]),
    /--remote and --control exclude each other/,
  );
  assert.match(usageMessage(["status", "--remote", "r1:99999", "--key-file", "k"]), /--remote/);
  assert.match(usageMessage(["status", "--remote", "[fd00::1", "--key-file", "k"]), /HOST or HOST:PORT/);
});

Deno.test("--control-listen takes ADDR[:PORT] and needs a key; --control-key goes with it", () => {
  const keyed = daemon(["--peer", "r2", "--vid", "3", "--key-file", "k", "--control-listen", "198.18.0.1"]);
  assert.deepEqual(keyed.controlListen, { hostname: "198.18.0.1", port: 4456 });
  assert.equal(keyed.controlKeyFiles, undefined);
  const own = daemon([
    "--listen",
    "--allow",
    "198.18.0.0/15",
    "--control-listen",
    "[::]:7000",
    "--control-key",
    "ops.key",
    "--control-read-key",
    "noc.key",
    "--control-read-key",
    "noc2.key",
  ]);
  assert.deepEqual(own.controlListen, { hostname: "::", port: 7000 });
  assert.deepEqual(own.controlKeyFiles, ["ops.key"]);
  assert.deepEqual(own.controlReadKeyFiles, ["noc.key", "noc2.key"]);
  assert.match(
    usageMessage(["--peer", "r2", "--vid", "3", "--control-listen", "198.18.0.1:7000"]),
    /--control-listen needs a key: --control-key FILE/,
  );
  assert.match(
    usageMessage(["--peer", "r2", "--vid", "3", "--control-key", "ops.key"]),
    /--control-key goes with --control-listen/,
  );
  assert.match(
    usageMessage(["--peer", "r2", "--vid", "3", "--key-file", "k", "--control-read-key", "n"]),
    /--control-read-key goes with --control-listen/,
  );
  const withConfig = daemon(["--config", "f.json", "--control-listen", "198.18.0.1"]);
  assert.deepEqual(withConfig.controlListen, { hostname: "198.18.0.1", port: 4456 });
});

Deno.test("--compress and --compress-with-encryption set the daemon's policy and the circuit's offer", () => {
  const on = daemon(["--peer", "r2", "--vid", "3", "--compress"]);
  assert.equal(on.compress, "on");
  assert.equal(on.peer?.compress, "on");
  const both = daemon(["--peer", "r2", "--vid", "3", "--key-file", "k", "--compress-with-encryption"]);
  assert.equal(both.compress, "with-encryption");
  assert.equal(both.peer?.compress, "with-encryption");
  assert.equal(daemon(["--listen", "--allow", "198.18.0.0/15", "--compress"]).compress, "on");
  assert.equal(daemon(["--peer", "r2", "--vid", "3"]).compress, undefined);
  const connect = parseCommandLine(["connect", "--peer", "r2", "--vid", "4", "--compress"]);
  assert.ok(connect.kind === "connect");
  assert.equal(connect.circuit.compress, "on");
});

Deno.test("--compress-mode is stateless or dictionary, and goes with --compress", () => {
  assert.equal(
    daemon(["--peer", "r2", "--vid", "3", "--compress", "--compress-mode", "stateless"]).compressMode,
    "stateless",
  );
  assert.match(
    usageMessage(["--peer", "r2", "--vid", "3", "--compress-mode", "stateless"]),
    /goes with --compress/,
  );
  assert.match(
    usageMessage(["--peer", "r2", "--vid", "3", "--compress", "--compress-mode", "zstd"]),
    /--compress-mode is stateless or dictionary, not "zstd"/,
  );
});
