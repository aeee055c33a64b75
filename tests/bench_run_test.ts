/** The benchmark's pure parts (bench/run.ts): reading peers.sh's lines, the ratios, the Markdown header. */

import assert from "node:assert/strict";
import {
  computeRatios,
  isEncrypted,
  joinVelaArgs,
  markdown,
  parseHeader,
  parseTsvLine,
  type Result,
  textTable,
} from "../bench/run.ts";

const HEADER = "# peers.sh 20261201-141049  host=vm kernel=6.18 cpus=2  veth_mtu=1500 tun_mtu=1400 " +
  "udp_len=1372 T=5s UDP_T=3s tcp_cc=bbr vela=70f8209 vela_args=none udp_args=-w_4M smoke=0";

function result(header: string, lines: string[]): Result {
  const rows = lines.map(parseTsvLine);
  return {
    stamp: "20261201-141049",
    mode: "full",
    jumbo: false,
    tun_mtu: 1400,
    header,
    info: parseHeader(header),
    duration_s: 135,
    raw_dir: "/tmp/raw",
    rows,
    ratios: computeRatios(rows),
  };
}

const LINES = [
  "vela-tap\tL2\tnone\t4424\t4278\t0\t97893(47.5)\t91228\t2.668\t3.246\t",
  "vtun\tL2\tnone\t710\t617\t15541\t38118(80.5)\t37909\t17.042\t20.993\t",
  "fastd\tL2\tnull\t-\t-\t-\t-\t-\t-\t-\tSKIP: not installed: fastd",
];

Deno.test("parseHeader() reads the settings of a peers.sh header, udp_args included", () => {
  const info = parseHeader(HEADER);
  assert.equal(info.vela, "70f8209");
  assert.equal(info.udp_args, "-w_4M");
  assert.equal(info.tun_mtu, "1400");
});

Deno.test("computeRatios() divides VELA's figures by the best peer that ran, lower being better for CPU", () => {
  const [tap] = result(HEADER, LINES).ratios;
  assert.equal(tap.system, "vela-tap");
  assert.deepEqual(tap.ratios.udp_1pct_pps, { ratio: 2.41, best_peer: "vtun", best_value: 37909 });
  assert.equal(tap.ratios.tun_s_per_gb.ratio, 0.16);
});

Deno.test("markdown() names the UDP_ARGS a diagnostic run used, and says nothing of them otherwise", () => {
  assert.match(markdown(result(HEADER, LINES)), /VELA_ARGS none, UDP_ARGS -w 4M; mode full/);
  const plain = HEADER.replace(" udp_args=-w_4M", "");
  const text = markdown(result(plain, LINES));
  assert.match(text, /VELA_ARGS none; mode full/);
  assert.doesNotMatch(text, /UDP_ARGS/);
});

Deno.test("markdown() says when each namespace was pinned to its own core, and names --pin", () => {
  const pinned = HEADER.replace(" udp_args=-w_4M", " pin=1");
  assert.equal(parseHeader(pinned).pin, "1");
  const text = markdown(result(pinned, LINES));
  assert.match(text, /VELA_ARGS none; each namespace pinned to its own core \(--pin\); mode full/);
  assert.match(text, /Made by `deno task bench --pin`/);
  assert.doesNotMatch(markdown(result(HEADER, LINES)), /pinned|--pin/);
});

const ENCRYPTED_LINES = [
  "vela-tap\tL2\tnone\t4000\t4100\t0\t90000(47.5)\t67000\t3.000\t3.500\t",
  "vela-aes\tL2\taes-256-gcm\t2800\t2050\t0\t80000(40.0)\t60000\t4.500\t5.000\t",
  "vela-chacha\tL2\tchacha20-poly1305\t-\t-\t-\t-\t-\t-\t-\tFAIL: setup (no key)",
  "quicktun\tL2\tnone\t650\t640\t20000\t29000(84.5)\t36000\t17.600\t21.900\t",
  "wireguard-go\tL3\tchacha20poly1305\t340\t350\t24000\t18000(83.9)\t25000\t36.000\t38.000\t",
  "openvpn-gcm\tL3\taes-256-gcm\t400\t300\t14000\t20000(86.0)\t24000\t30.000\t32.000\t",
  "tinc-aes\tL2\taes-256-cbc\t-\t-\t-\t-\t-\t-\t-\tFAIL: no ping through tunnel in 20s",
  "fastd-salsa\tL2\tsalsa2012+umac\t-\t-\t-\t-\t-\t-\t-\tSKIP: not installed: fastd",
];

Deno.test("computeRatios() compares an encrypted VELA row with the encrypted peers only, and with clear VELA", () => {
  const ratios = result(HEADER, ENCRYPTED_LINES).ratios;
  const tap = ratios.find((r) => r.system === "vela-tap")!;
  const aes = ratios.find((r) => r.system === "vela-aes")!;
  const chacha = ratios.find((r) => r.system === "vela-chacha")!;
  // The clear row: against every peer, quicktun the best; no share of clear.
  assert.equal(tap.against, "all");
  assert.equal(tap.ratios.tcp_fwd_mbps.best_peer, "quicktun");
  assert.equal(tap.share_of_clear, null);
  // The encrypted row: quicktun (clear) does not count, nor the peers that failed or were skipped.
  assert.equal(aes.against, "encrypted");
  assert.deepEqual(aes.ratios.tcp_fwd_mbps, { ratio: 7, best_peer: "openvpn-gcm", best_value: 400 });
  assert.deepEqual(aes.ratios.tcp_rev_mbps, { ratio: 5.86, best_peer: "wireguard-go", best_value: 350 });
  assert.deepEqual(aes.ratios.udp_1pct_pps, { ratio: 2.4, best_peer: "wireguard-go", best_value: 25000 });
  assert.deepEqual(aes.ratios.tun_s_per_gb, { ratio: 0.15, best_peer: "openvpn-gcm", best_value: 30 });
  assert.deepEqual(aes.share_of_clear, {
    tcp_fwd_mbps: { ratio: 0.7, clear_system: "vela-tap", clear_value: 4000 },
    tcp_rev_mbps: { ratio: 0.5, clear_system: "vela-tap", clear_value: 4100 },
  });
  // A failed encrypted row still names the encrypted peers and its clear twin, with no ratio.
  assert.equal(chacha.against, "encrypted");
  assert.deepEqual(chacha.ratios.tcp_fwd_mbps, { ratio: null, best_peer: "openvpn-gcm", best_value: 400 });
  assert.equal(chacha.share_of_clear?.tcp_fwd_mbps.ratio, null);
});

Deno.test("isEncrypted() reads the crypto column, and SYSTEMS where a row does not say", () => {
  const row = (system: string, crypto: string) => ({ ...parseTsvLine(`${system}\tL2\t${crypto}`), crypto });
  assert.equal(isEncrypted(row("fastd", "null")), false);
  assert.equal(isEncrypted(row("vela-tap", "none")), false);
  assert.equal(isEncrypted(row("vela-aes", "aes-256-gcm")), true);
  assert.equal(isEncrypted(row("vela-aes", "")), true);
  assert.equal(isEncrypted(row("tinc", "?")), false);
});

Deno.test("computeRatios() gives no share of clear when the clear VELA row did not run", () => {
  const [aes] = result(HEADER, ENCRYPTED_LINES.filter((l) => !l.startsWith("vela-tap\t"))).ratios;
  assert.equal(aes.system, "vela-aes");
  assert.deepEqual(aes.share_of_clear?.tcp_fwd_mbps, {
    ratio: null,
    clear_system: "vela-tap",
    clear_value: null,
  });
});

Deno.test("textTable() adds an x/best row per VELA row and an x/clear row per encrypted one", () => {
  const text = textTable(result(HEADER, ENCRYPTED_LINES));
  const names = text.split("\n").map((l) => l.split(/\s+/)[0]).filter((n) => n.includes("/"));
  assert.deepEqual(names, [
    "vela-tap/best",
    "vela-aes/best",
    "vela-aes/clear",
    "vela-chacha/best",
    "vela-chacha/clear",
  ]);
  assert.match(text, /vela-aes\/best .*7\.00x\(openvpn-gcm\).*best encrypted userspace peer/);
  assert.match(text, /vela-aes\/clear .*0\.70x\(vela-tap\) +0\.50x\(vela-tap\)/);
  assert.match(markdown(result(HEADER, ENCRYPTED_LINES)), /`x\/clear` rows/);
});

Deno.test("joinVelaArgs() keeps a --vela-args value that starts with a dash as its value", () => {
  assert.deepEqual(joinVelaArgs(["--systems", "vela-tap", "--vela-args", "--no-offload -q"]), [
    "--systems",
    "vela-tap",
    "--vela-args=--no-offload -q",
  ]);
  assert.deepEqual(joinVelaArgs(["--vela-args=--no-offload"]), ["--vela-args=--no-offload"]);
  assert.deepEqual(joinVelaArgs(["--vela-args"]), ["--vela-args"]);
});
