/**
 * Packaging: the systemd unit, the example config file, compile.sh's arguments and failure paths, and the
 * release workflow. No root and no network needed: compile.sh's builds run against a fake `deno compile`.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { parseConfig } from "../src/config_file.ts";
import { VELA_PERMISSIONS } from "../testbed/netns.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(`${ROOT}${path}`);
const TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/** A systemd unit file: each section's settings in order (a key may repeat); comments left out. */
function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let section: [string, string][] | undefined;
  const lines = text.replace(/\\\n/g, " ").split("\n");
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) return;
    const header = line.match(/^\[([A-Za-z]+)\]$/);
    if (header) {
      section = [];
      sections.set(header[1], section);
      return;
    }
    const setting = line.match(/^([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*)$/);
    assert.ok(setting, `line ${i + 1} is neither a section, a setting nor a comment: ${raw}`);
    assert.ok(section, `line ${i + 1} is a setting before any [Section]`);
    section.push([setting[1], setting[2]]);
  });
  return sections;
}

const unit = parseUnit(read("contrib/vela.service"));
const service = unit.get("Service") ?? [];
/** Every value of `key` in [Service], in order. */
const all = (key: string) => service.filter(([k]) => k === key).map(([, v]) => v);
/** The value of `key` in [Service] that takes effect (the last one), or undefined. */
const value = (key: string) => all(key).at(-1);
const isTrue = (text: string | undefined) => /^(yes|true|on|1)$/i.test(text ?? "");

Deno.test("vela.service starts vela with the config file and reloads it with SIGHUP", () => {
  assert.deepEqual([...unit.keys()], ["Unit", "Service", "Install"]);
  assert.deepEqual(all("ExecStart"), ["/usr/local/bin/vela --config /etc/vela/vela.json"]);
  const reload = value("ExecReload");
  assert.ok(reload !== undefined && /^\/bin\/kill -(HUP|SIGHUP|s HUP) \$MAINPID$/.test(reload), reload);
  assert.equal(value("Type"), "exec");
  assert.equal(value("Restart"), "on-failure");
  assert.equal(value("RuntimeDirectory"), "vela");
  assert.equal(value("RuntimeDirectoryMode"), "0700");
  assert.deepEqual(unit.get("Install"), [["WantedBy", "multi-user.target"]]);
});

Deno.test("vela.service keeps CAP_NET_ADMIN and /dev/net/tun and nothing more", () => {
  assert.deepEqual(all("CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
  assert.match(
    read("contrib/vela.service"),
    /^#\s*CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE$/m,
  );
  assert.deepEqual(all("DeviceAllow"), ["/dev/net/tun rw"]);
  assert.equal(value("DevicePolicy"), "closed");
  assert.ok(!isTrue(value("PrivateDevices")), "PrivateDevices=yes would hide /dev/net/tun");
  assert.ok(isTrue(value("NoNewPrivileges")));
  // Root by default; ambient capabilities only go with another user, and then must include CAP_NET_ADMIN.
  const user = value("User");
  if (user === undefined || user === "root" || user === "0") {
    assert.equal(value("AmbientCapabilities"), undefined);
  } else {
    assert.match(value("AmbientCapabilities") ?? "", /\bCAP_NET_ADMIN\b/);
  }
  assert.deepEqual(
    (value("RestrictAddressFamilies") ?? "").split(/\s+/).sort(),
    ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
  );
});

Deno.test("vela.service hardening leaves /proc/sys/net writable and the V8 JIT working", () => {
  assert.equal(value("ProtectSystem"), "strict");
  assert.ok(all("ReadWritePaths").join(" ").split(/\s+/).includes("/proc/sys/net"));
  assert.ok(!isTrue(value("ProtectKernelTunables")), "ProtectKernelTunables=yes makes /proc/sys read-only");
  assert.ok(!isTrue(value("MemoryDenyWriteExecute")), "MemoryDenyWriteExecute=yes breaks V8's JIT");
  for (
    const key of [
      "ProtectHome",
      "PrivateTmp",
      "ProtectKernelModules",
      "ProtectKernelLogs",
      "ProtectControlGroups",
      "ProtectClock",
      "ProtectHostname",
      "RestrictNamespaces",
      "LockPersonality",
      "RestrictRealtime",
    ]
  ) {
    assert.ok(isTrue(value(key)), `${key}=yes`);
  }
  assert.equal(value("SystemCallArchitectures"), "native");
});

Deno.test("vela.json.example is a valid config file: a listener with allow and key_file, two circuits", () => {
  const config = parseConfig(read("contrib/vela.json.example"));
  assert.equal(config.listen, true);
  assert.ok(config.allow.length > 0);
  assert.equal(config.keyFile, "/etc/vela/key");
  assert.equal(config.circuits.length, 2);
  assert.deepEqual(config.circuits.map((c) => c.mode).sort(), ["tap", "tun"]);
});

async function bash(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; path?: string } = {},
) {
  const env = Deno.env.toObject();
  delete env.DENORT_BIN;
  if (options.path) env.PATH = `${options.path}:${env.PATH}`;
  const output = await new Deno.Command("bash", {
    args,
    cwd: options.cwd ?? ROOT,
    env: { ...env, ...options.env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function listDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((entry) => entry.name).sort();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

Deno.test("compile.sh --help names the targets, --target all and DENORT_BIN", async () => {
  const result = await bash(["compile.sh", "--help"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "");
  for (const word of ["--target all", "--output", "DENORT_BIN", "dist/vela-<version>-", ...TARGETS]) {
    assert.ok(result.stdout.includes(word), `--help mentions ${word}`);
  }
  assert.doesNotMatch(result.stdout, /^#|set -e/m);
});

Deno.test("compile.sh --target bogus-target says which targets there are, exits 2 and writes nothing", async () => {
  const before = listDir(`${ROOT}dist`);
  const result = await bash(["compile.sh", "--target", "bogus-target"]);
  assert.equal(result.code, 2);
  assert.equal(result.stdout, "");
  assert.equal(
    result.stderr,
    `compile.sh: unknown target "bogus-target"; give ${TARGETS[0]}, ${TARGETS[1]} or all\n`,
  );
  assert.deepEqual(listDir(`${ROOT}dist`), before);
});

Deno.test("compile.sh refuses bad argument combinations before building", async () => {
  const cases: [string[], Record<string, string>, number, string][] = [
    [["--target"], {}, 2, "compile.sh: --target needs a value"],
    [["--output"], {}, 2, "compile.sh: --output needs a value"],
    [["--frobnicate"], {}, 2, "compile.sh: unknown argument --frobnicate"],
    [
      ["--target", "all", "--output", "/tmp/vela"],
      {},
      2,
      "compile.sh: --output names one file; --target all writes one file per target into dist/",
    ],
    [
      ["--target", "all"],
      { DENORT_BIN: "/bin/true" },
      2,
      "compile.sh: DENORT_BIN is one target's denort runtime; with it, build one --target at a time",
    ],
    [
      ["--target", TARGETS[1]],
      { DENORT_BIN: "/nonexistent/denort" },
      1,
      "compile.sh: DENORT_BIN=/nonexistent/denort is not an executable file",
    ],
  ];
  const before = listDir(`${ROOT}dist`);
  for (const [args, env, code, message] of cases) {
    const result = await bash(["compile.sh", ...args], { env });
    assert.equal(result.code, code, args.join(" "));
    assert.equal(result.stderr, `${message}\n`, args.join(" "));
  }
  assert.deepEqual(listDir(`${ROOT}dist`), before);
});

/**
 * compile.sh and deno.json in a temporary directory, with a `deno` first on PATH that passes everything
 * to the real one but `deno compile`, which it records and fakes as FAKE_DENO_MODE says.
 */
async function withFakeDeno(
  test: (run: (args: string[], mode?: string) => ReturnType<typeof bash>, dir: string) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "vela-packaging-" });
  try {
    await Deno.copyFile(`${ROOT}compile.sh`, `${dir}/compile.sh`);
    await Deno.copyFile(`${ROOT}deno.json`, `${dir}/deno.json`);
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(
      `${dir}/bin/deno`,
      `#!/usr/bin/env bash
if [ "$1" = compile ]; then
  printf '%s\\n' "$*" >> "$FAKE_DENO_LOG"
  out=""; prev=""
  for a in "$@"; do if [ "$prev" = --output ]; then out="$a"; fi; prev="$a"; done
  case "$FAKE_DENO_MODE:$*" in
    offline:*)
      echo "error: Writing deno compile executable: error sending request for url (https://dl.deno.land/x.zip): dns error" >&2
      exit 1 ;;
    fail-aarch64:*aarch64*) printf 'half' > "$out"; echo "error: something else broke" >&2; exit 1 ;;
  esac
  printf 'fake vela\\n' > "$out"
  exit 0
fi
exec "$REAL_DENO" "$@"
`,
      { mode: 0o755 },
    );
    await test(
      (args, mode = "ok") =>
        bash([`${dir}/compile.sh`, ...args], {
          path: `${dir}/bin`,
          env: { REAL_DENO: Deno.execPath(), FAKE_DENO_LOG: `${dir}/compile.log`, FAKE_DENO_MODE: mode },
        }),
      dir,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("compile.sh --target all builds both Linux targets into dist/vela-<version>-<target>", async () => {
  await withFakeDeno(async (run, dir) => {
    const result = await run(["--target", "all"]);
    assert.equal(result.code, 0, result.stderr);
    const names = TARGETS.map((t) => `vela-${denoJson.version}-${t}`);
    assert.deepEqual(listDir(`${dir}/dist`), [...names].sort());
    for (const name of names) assert.ok(result.stdout.includes(`Built dist/${name} (`), result.stdout);
    const compiles = Deno.readTextFileSync(`${dir}/compile.log`).trim().split("\n");
    assert.equal(compiles.length, 2);
    compiles.forEach((line, i) => {
      assert.ok(line.includes(`--target ${TARGETS[i]}`), line);
      assert.ok(line.endsWith(" main.ts"), line);
      // The executable gets exactly the permissions the namespace tests run vela with.
      assert.deepEqual(line.split(" ").filter((word) => word.startsWith("--allow-")), VELA_PERMISSIONS);
    });
  });
});

Deno.test("compile.sh without network says so in its one sentence and leaves no file", async () => {
  await withFakeDeno(async (run, dir) => {
    for (const args of [[], ["--target", "all"], ["--target", TARGETS[1]]]) {
      const result = await run(args, "offline");
      assert.equal(result.code, 1, args.join(" "));
      assert.equal(
        result.stderr,
        `compile.sh: deno compile could not download the denort runtime for Deno ${Deno.version.deno}; ` +
          "build on a machine that reaches dl.deno.land, or set DENORT_BIN to that version's denort binary\n",
      );
      assert.deepEqual(listDir(`${dir}/dist`), []);
    }
  });
});

Deno.test("compile.sh shows deno compile's own error and leaves no partial executable", async () => {
  await withFakeDeno(async (run, dir) => {
    const result = await run(["--target", "all"], "fail-aarch64");
    assert.equal(result.code, 1);
    assert.equal(result.stderr, "error: something else broke\n");
    // The x86_64 build before it stays; the failed aarch64 one leaves nothing, not even a hidden file.
    assert.deepEqual(listDir(`${dir}/dist`), [`vela-${denoJson.version}-${TARGETS[0]}`]);
  });
});

Deno.test("release.yml tests, builds every target and releases on a v* tag", () => {
  const text = read(".github/workflows/release.yml");
  assert.match(text, /^on:\n {2}push:\n {4}tags:\n {6}- "v\*"$/m);
  assert.match(text, /^ {2}contents: write$/m);
  assert.match(text, /runs-on: ubuntu-latest/);
  assert.match(text, /uses: actions\/setup-node@v\d+/);
  const ciDeno = read(".ci/run").match(/^DENO_VERSION=(\S+)$/m)?.[1];
  assert.ok(ciDeno, ".ci/run sets DENO_VERSION");
  assert.match(text, new RegExp(`DENO_VERSION: ${ciDeno.replaceAll(".", "\\.")}$`, "m"));
  assert.match(text, /npm install -g .*"deno@\$DENO_VERSION"/);
  for (const pkg of ["iproute2", "iputils-ping", "iperf3", "tshark"]) {
    assert.match(text, new RegExp(`\\b${pkg}\\b`));
  }
  const order = [
    /^ +run: sudo -E env "PATH=\$PATH" .*\bdeno task test$/m,
    /^ +run: \.\/compile\.sh --target all$/m,
    /^ +sha256sum .*> SHA256SUMS$/m,
    /^ +uses: softprops\/action-gh-release@v2$/m,
  ].map((step) => {
    const at = text.search(step);
    assert.ok(at >= 0, `release.yml has ${step}`);
    return at;
  });
  assert.deepEqual(order, [...order].sort((a, b) => a - b), "test, then build, then checksums, then release");
  assert.match(text, /"\$GITHUB_REF_NAME" != "v\$version"/);
  assert.match(text, /files: dist\/\*/);
});
