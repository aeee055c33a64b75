/** The benchmark's pure parts (bench/run.ts): reading peers.sh's lines, the ratios, the Markdown header. */

import assert from "node:assert/strict";
import { computeRatios, markdown, parseHeader, parseTsvLine, type Result } from "../bench/run.ts";

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
