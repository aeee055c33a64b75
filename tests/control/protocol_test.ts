/** The control protocol, pure: parsing requests, formatting replies, splitting replies (no I/O, no root). */

import { circuitStatus as fixtureCircuit, daemonStatus } from "../fakes/status_fixture.ts";
import assert from "node:assert/strict";
import type { CircuitArgs } from "../../src/cli.ts";
import {
  type ControlRequest,
  type DeviceInfo,
  formatCircuitLine,
  formatConnect,
  formatDevices,
  formatStatus,
  MAX_COMMAND_LENGTH,
  nok,
  parseReply,
  parseRequest,
  replyLineCount,
} from "../../src/control/protocol.ts";
import type { CircuitStatus } from "../../src/daemon/daemon.ts";
import { formatCidr, parseCidr } from "../../src/ip.ts";
import { seededRandom } from "../../testbed/seeded_random.ts";

/** The request, failing the test when the line was refused. */
function parsed(line: string): ControlRequest {
  const request = parseRequest(line);
  if ("error" in request) assert.fail(`${JSON.stringify(line)} was refused: ${request.error}`);
  return request;
}

/** The reason the line was refused, failing the test when it was accepted. */
function refused(line: string): string {
  const request = parseRequest(line);
  if (!("error" in request)) assert.fail(`${JSON.stringify(line)} was accepted: ${JSON.stringify(request)}`);
  assert.equal(typeof request.error, "string");
  assert.ok(request.error.length > 0, "the reason is not empty");
  return request.error;
}

/** The circuit of a CONNECT request with its addresses as text, for comparisons. */
function connectOf(
  line: string,
): { circuit: CircuitArgs; addresses: string[]; port?: number; json: boolean } {
  const request = parsed(line);
  assert.equal(request.command, "CONNECT");
  if (request.command !== "CONNECT") throw new Error("unreachable");
  return {
    circuit: request.circuit,
    addresses: request.circuit.addresses.map(formatCidr),
    port: request.port,
    json: request.json,
  };
}

function circuitStatus(overrides: Partial<CircuitStatus> = {}): CircuitStatus {
  return fixtureCircuit({
    peer: "198.18.0.2",
    address: "198.18.0.2",
    uptimeSeconds: 42,
    rttMs: 0.25,
    txPackets: 10,
    txBytes: 1000,
    rxPackets: 9,
    rxBytes: 900,
    ...overrides,
  });
}

// --- parseRequest: every command -------------------------------------------------------------------

Deno.test("parseRequest() parses STATUS?, DEVICES? and VERSION?", () => {
  assert.deepEqual(parseRequest("STATUS?"), { command: "STATUS?", json: false });
  assert.deepEqual(parseRequest("DEVICES?"), { command: "DEVICES?", json: false });
  assert.deepEqual(parseRequest("VERSION?"), { command: "VERSION?", json: false });
});

Deno.test("parseRequest() takes a trailing JSON on every command", () => {
  assert.deepEqual(parseRequest("STATUS? JSON"), { command: "STATUS?", json: true });
  assert.deepEqual(parseRequest("DEVICES? JSON"), { command: "DEVICES?", json: true });
  assert.deepEqual(parseRequest("VERSION? JSON"), { command: "VERSION?", json: true });
  assert.deepEqual(parseRequest("CLOSE h 3 JSON"), { command: "CLOSE", json: true, peer: "h", vid: 3 });
  const connect = connectOf("CONNECT h 3 JSON");
  assert.equal(connect.json, true);
  assert.equal(connect.circuit.host, "h");
  assert.equal(connect.circuit.vid, 3);
});

Deno.test("parseRequest() reads commands, options and JSON in any case", () => {
  assert.deepEqual(parseRequest("status?"), { command: "STATUS?", json: false });
  assert.deepEqual(parseRequest("Devices? json"), { command: "DEVICES?", json: true });
  assert.deepEqual(parseRequest("version? Json"), { command: "VERSION?", json: true });
  assert.deepEqual(parseRequest("close h 3"), { command: "CLOSE", json: false, peer: "h", vid: 3 });
  const connect = connectOf("connect h 3 MODE=tun Address=198.18.207.1/30 json");
  assert.equal(connect.circuit.mode, "tun");
  assert.deepEqual(connect.addresses, ["198.18.207.1/30"]);
  assert.equal(connect.json, true);
});

Deno.test("parseRequest() ignores surrounding blanks, tabs and runs of spaces", () => {
  assert.deepEqual(parseRequest("  STATUS?  \t"), { command: "STATUS?", json: false });
  assert.deepEqual(parseRequest("\tCLOSE   h\t\t3   JSON "), {
    command: "CLOSE",
    json: true,
    peer: "h",
    vid: 3,
  });
  assert.deepEqual(parseRequest("STATUS?\r"), { command: "STATUS?", json: false });
});

Deno.test("parseRequest() keeps the peer's case and spelling", () => {
  assert.deepEqual(parseRequest("CLOSE Peer.Example 9"), {
    command: "CLOSE",
    json: false,
    peer: "Peer.Example",
    vid: 9,
  });
  assert.equal(connectOf("CONNECT fd00:198:18:100::2 7").circuit.host, "fd00:198:18:100::2");
});

Deno.test("parseRequest() parses CONNECT with every option", () => {
  const connect = connectOf(
    "CONNECT peer.example 42 mode=tun address=198.18.207.1/30 address=fd00:207::1/126 mtu=1400 ifname=uplink0 port=4456 family=6",
  );
  assert.deepEqual(connect.circuit, {
    host: "peer.example",
    family: 6,
    vid: 42,
    mode: "tun",
    addresses: [parseCidr("198.18.207.1/30")!, parseCidr("fd00:207::1/126")!],
    mtu: 1400,
    ifname: "uplink0",
  });
  assert.equal(connect.port, 4456);
  assert.equal(connect.json, false);
});

Deno.test("parseRequest() gives CONNECT's defaults: tap, no addresses, no port, no family", () => {
  const connect = connectOf("CONNECT 198.18.0.2 1");
  assert.equal(connect.circuit.mode, "tap");
  assert.deepEqual(connect.addresses, []);
  assert.equal(connect.circuit.mtu, undefined);
  assert.equal(connect.circuit.ifname, undefined);
  assert.equal(connect.circuit.family, undefined);
  assert.equal(connect.port, undefined);
  assert.equal(connectOf("CONNECT h 255").circuit.vid, 255);
  assert.equal(connectOf("CONNECT h 3 family=4").circuit.family, 4);
  assert.equal(connectOf("CONNECT h 3 port=1").port, 1);
  assert.equal(connectOf("CONNECT h 3 port=65535").port, 65535);
  assert.equal(connectOf("CONNECT h 3 mtu=576").circuit.mtu, 576);
  assert.equal(connectOf("CONNECT h 3 mtu=65535").circuit.mtu, 65535);
});

Deno.test("parseRequest() takes one address of each family and /31 and /127 pairs", () => {
  assert.deepEqual(connectOf("CONNECT h 3 address=198.18.207.0/31").addresses, ["198.18.207.0/31"]);
  assert.deepEqual(connectOf("CONNECT h 3 address=fd00::/127").addresses, ["fd00::/127"]);
  assert.deepEqual(
    connectOf("CONNECT h 3 address=fd00:207::2/126 address=198.18.207.2/30").addresses,
    ["fd00:207::2/126", "198.18.207.2/30"],
  );
});

Deno.test("parseRequest() parses CLOSE with vids 1 to 255", () => {
  assert.deepEqual(parseRequest("CLOSE 198.18.0.2 1"), {
    command: "CLOSE",
    json: false,
    peer: "198.18.0.2",
    vid: 1,
  });
  assert.deepEqual(parseRequest("CLOSE h 255"), { command: "CLOSE", json: false, peer: "h", vid: 255 });
});

// --- parseRequest: every refusal ------------------------------------------------------------------

Deno.test("parseRequest() refuses an empty or blank line", () => {
  assert.equal(refused(""), "empty command");
  assert.equal(refused("   "), "empty command");
  assert.equal(refused("\t \r"), "empty command");
});

Deno.test("parseRequest() refuses an unknown command and names it", () => {
  assert.match(refused("HELLO"), /^unknown command HELLO$/);
  assert.match(refused("STATUS"), /unknown command STATUS/);
  assert.match(refused("GET /metrics HTTP/1.1"), /unknown command GET/);
  assert.match(refused("STATUS?? JSON"), /unknown command STATUS\?\?/);
  // A line of just "JSON" has no command; it is refused (not thrown, not accepted).
  refused("JSON");
  refused("json JSON");
});

Deno.test("parseRequest() refuses arguments on STATUS?, DEVICES? and VERSION?", () => {
  assert.equal(refused("STATUS? all"), "STATUS? takes no arguments");
  assert.equal(refused("status? all JSON"), "STATUS? takes no arguments");
  assert.equal(refused("DEVICES? vela3"), "DEVICES? takes no arguments");
  assert.equal(refused("VERSION? --long"), "VERSION? takes no arguments");
  assert.equal(refused("STATUS? JSON JSON"), "STATUS? takes no arguments");
});

Deno.test("parseRequest() refuses CLOSE without a peer and a vid, or with more", () => {
  assert.equal(refused("CLOSE"), "usage: CLOSE <peer> <vid>");
  assert.equal(refused("CLOSE h"), "usage: CLOSE <peer> <vid>");
  assert.equal(refused("CLOSE h JSON"), "usage: CLOSE <peer> <vid>");
  assert.equal(refused("CLOSE h 3 4"), "usage: CLOSE <peer> <vid>");
});

Deno.test("parseRequest() refuses CLOSE with vid 0, 256 or a vid that is not a number", () => {
  assert.equal(refused("CLOSE h 0"), "vid must be 1 to 255, not 0");
  assert.equal(refused("CLOSE h 256"), "vid must be 1 to 255, not 256");
  assert.equal(refused("CLOSE h 1000"), "vid must be 1 to 255, not 1000");
  assert.equal(refused("CLOSE h -1"), "vid must be 1 to 255, not -1");
  assert.equal(refused("CLOSE h 3.0"), "vid must be 1 to 255, not 3.0");
  assert.equal(refused("CLOSE h 0x3"), "vid must be 1 to 255, not 0x3");
  assert.equal(refused("CLOSE h three"), "vid must be 1 to 255, not three");
});

Deno.test("parseRequest() refuses CONNECT without a peer and a vid", () => {
  assert.match(refused("CONNECT"), /^usage: CONNECT <peer> <vid>/);
  assert.match(refused("CONNECT h"), /^usage: CONNECT <peer> <vid>/);
  assert.match(refused("CONNECT h JSON"), /^usage: CONNECT <peer> <vid>/);
});

Deno.test("parseRequest() refuses CONNECT with vid 0", () => {
  assert.match(refused("CONNECT h 0"), /vid .*1 to 255.*0/);
});

Deno.test("parseRequest() refuses CONNECT with vid 256 or a vid that is not a number", () => {
  assert.match(refused("CONNECT h 256"), /vid .*1 to 255/);
  assert.match(refused("CONNECT h x"), /vid .*1 to 255/);
  assert.match(refused("CONNECT h -3"), /vid .*1 to 255/);
});

Deno.test("parseRequest() refuses CONNECT options that are not key=value", () => {
  assert.equal(refused("CONNECT h 3 tun"), `"tun" is not key=value`);
  assert.equal(refused("CONNECT h 3 =tun"), `"=tun" is not key=value`);
  assert.equal(refused("CONNECT h 3 mode=tun extra"), `"extra" is not key=value`);
});

Deno.test("parseRequest() refuses an unknown CONNECT option and names it", () => {
  assert.equal(refused("CONNECT h 3 speed=10"), "unknown option speed");
  assert.equal(refused("CONNECT h 3 Colour=red"), "unknown option colour");
  assert.equal(refused("CONNECT h 3 local-port=4455"), "unknown option local-port");
  assert.equal(refused("CONNECT h 3 __proto__=x"), "unknown option __proto__");
  assert.equal(refused("CONNECT h 3 constructor=x"), "unknown option constructor");
});

Deno.test("parseRequest() refuses a CONNECT option given twice (address may repeat)", () => {
  for (const key of ["mode", "mtu", "ifname", "port", "family"]) {
    const value = { mode: "tap", mtu: "1400", ifname: "x0", port: "4455", family: "4" }[key];
    assert.equal(refused(`CONNECT h 3 ${key}=${value} ${key}=${value}`), `${key} given twice`);
  }
  assert.equal(refused("CONNECT h 3 mtu=1400 MTU=1500"), "mtu given twice");
});

Deno.test("parseRequest() refuses two CONNECT addresses of one family", () => {
  assert.match(
    refused("CONNECT h 3 address=198.18.207.1/30 address=198.18.207.5/30"),
    /one IPv4 address/,
  );
  assert.match(refused("CONNECT h 3 address=fd00::1/126 address=fd00::5/126"), /one IPv6 address/);
});

Deno.test("parseRequest() refuses a bad CONNECT family", () => {
  assert.equal(refused("CONNECT h 3 family=5"), "family is 4 or 6, not 5");
  assert.equal(refused("CONNECT h 3 family=ipv4"), "family is 4 or 6, not ipv4");
  assert.equal(refused("CONNECT h 3 family="), "family is 4 or 6, not ");
});

Deno.test("parseRequest() refuses a bad CONNECT mode", () => {
  assert.match(refused("CONNECT h 3 mode=tcp"), /^mode is tap or tun, not "tcp"$/);
  assert.match(refused("CONNECT h 3 mode=TAP"), /^mode is tap or tun/);
  assert.match(refused("CONNECT h 3 mode="), /^mode is tap or tun/);
});

Deno.test("parseRequest() refuses a bad CONNECT mtu", () => {
  assert.match(refused("CONNECT h 3 mtu=575"), /^mtu .*576 to 65535/);
  assert.match(refused("CONNECT h 3 mtu=65536"), /^mtu .*576 to 65535/);
  assert.match(refused("CONNECT h 3 mtu=big"), /^mtu .*576 to 65535/);
  assert.match(refused("CONNECT h 3 mtu=1400.5"), /^mtu /);
  assert.match(refused("CONNECT h 3 mtu="), /^mtu /);
});

Deno.test("parseRequest() refuses a bad CONNECT address", () => {
  assert.match(refused("CONNECT h 3 address=198.18.207.1"), /^address .*prefix length/);
  assert.match(refused("CONNECT h 3 address=nonsense"), /^address /);
  assert.match(refused("CONNECT h 3 address=198.18.207.1/33"), /^address /);
  assert.match(refused("CONNECT h 3 address="), /^address /);
  assert.match(refused("CONNECT h 3 address=198.18.207.1/32"), /^address .*no address for the far end/);
  assert.match(refused("CONNECT h 3 address=198.18.207.4/30"), /^address .*host 1 or 2/);
});

Deno.test("parseRequest() refuses a bad CONNECT ifname", () => {
  assert.match(refused("CONNECT h 3 ifname=a-name-far-too-long"), /^ifname .*not a valid interface name/);
  assert.match(refused("CONNECT h 3 ifname=a/b"), /^ifname /);
  assert.match(refused("CONNECT h 3 ifname=a:b"), /^ifname /);
  assert.match(refused("CONNECT h 3 ifname="), /^ifname /);
});

Deno.test("parseRequest() refuses a bad CONNECT port", () => {
  for (const port of ["0", "65536", "99999", "123456", "-1", "http", ""]) {
    assert.equal(refused(`CONNECT h 3 port=${port}`), "port must be 1 to 65535", port);
  }
});

Deno.test("parseRequest() refusals are single lines that nok() turns into one NOK line", () => {
  for (
    const line of ["", "x", "STATUS? x", "CLOSE h 0", "CONNECT h 3 mtu=1", "CONNECT h 3 address=1.2.3.4/32"]
  ) {
    const reply = nok(refused(line));
    assert.match(reply, /^NOK \S/);
    assert.equal(reply.includes("\n"), false);
  }
  assert.equal(nok("two\nlines"), "NOK two lines");
  assert.equal(nok("a  \n  b\n c"), "NOK a b c");
});

// --- formatConnect → parseRequest ----------------------------------------------------------------

Deno.test("formatConnect() output parses back to the same circuit and port", () => {
  const cases: { circuit: CircuitArgs; port?: number }[] = [
    { circuit: { host: "198.18.0.2", vid: 3, mode: "tap", addresses: [] } },
    {
      circuit: {
        host: "peer.example",
        family: 6,
        vid: 255,
        mode: "tun",
        addresses: [parseCidr("198.18.207.9/30")!, parseCidr("fd00:207::9/126")!],
        mtu: 1400,
        ifname: "uplink0",
      },
      port: 4456,
    },
    {
      circuit: {
        host: "fd00:198:18:100::2",
        family: 4,
        vid: 1,
        mode: "tap",
        addresses: [parseCidr("198.18.207.0/31")!],
        mtu: 576,
      },
      port: 1,
    },
  ];
  for (const { circuit, port } of cases) {
    const line = formatConnect(circuit, port);
    assert.match(line, /^CONNECT /);
    assert.equal(line.includes("\n"), false);
    const back = connectOf(line);
    const expected: CircuitArgs = {
      host: circuit.host,
      family: circuit.family,
      vid: circuit.vid,
      mode: circuit.mode,
      addresses: circuit.addresses,
      mtu: circuit.mtu,
      ifname: circuit.ifname,
    };
    assert.deepEqual(back.circuit, expected, line);
    assert.equal(back.port, port, line);
    assert.equal(back.json, false);
    // `vela connect` appends " JSON".
    assert.equal(connectOf(line + " JSON").json, true);
  }
});

Deno.test("formatConnect() writes the documented words", () => {
  assert.equal(
    formatConnect({
      host: "h",
      vid: 7,
      mode: "tap",
      addresses: [parseCidr("198.18.207.9/30")!],
      mtu: 1400,
      ifname: "x0",
      family: 4,
    }, 4456),
    "CONNECT h 7 mode=tap address=198.18.207.9/30 mtu=1400 ifname=x0 port=4456 family=4",
  );
  assert.equal(formatConnect({ host: "h", vid: 7, mode: "tun", addresses: [] }), "CONNECT h 7 mode=tun");
});

// --- formatStatus --------------------------------------------------------------------------------

Deno.test("formatStatus() text with no circuits is one drops line", () => {
  const text = formatStatus(daemonStatus([]), false);
  assert.equal(text, "OK 1 lines\ndrops none");
  assert.equal(replyLineCount(text.split("\n")[0]), 1);
});

Deno.test("formatStatus() text has a first line 'OK <n> lines', a key=value line per circuit and a drops line", () => {
  const first = circuitStatus();
  const second = circuitStatus({
    peer: "peer.example",
    address: "fd00:198:18:100::2",
    vid: 4,
    role: "responder",
    state: "requesting",
    ifname: null,
    uptimeSeconds: null,
    rttMs: null,
  });
  const text = formatStatus(
    daemonStatus([first, second], { "bad-mac": 3, runt: 0, "not-allowed": 2 }),
    false,
  );
  const lines = text.split("\n");
  assert.equal(lines[0], "OK 3 lines");
  assert.equal(replyLineCount(lines[0]), lines.length - 1);
  assert.equal(lines[1], formatCircuitLine(first));
  assert.equal(lines[2], formatCircuitLine(second));
  assert.equal(lines[3], "drops bad-mac=3 not-allowed=2", "only reasons with drops, as reason=count");

  const fields = (line: string) => Object.fromEntries(line.split(" ").map((pair) => pair.split("=")));
  assert.deepEqual(fields(lines[1]), {
    peer: "198.18.0.2",
    address: "198.18.0.2",
    port: "4455",
    vid: "3",
    ifname: "vela3",
    role: "initiator",
    state: "established",
    mode: "tap",
    mtu: "1457",
    uptime: "42",
    rtt_ms: "0.25",
    tx_packets: "10",
    tx_bytes: "1000",
    rx_packets: "9",
    rx_bytes: "900",
    cipher: "clear",
    key_age: "-",
    rotations: "0",
    drop_send_failed: "1",
    drop_device_refused: "2",
    drop_bad_tag: "0",
    drop_replayed_data: "0",
    drop_too_old: "0",
    drop_no_key: "0",
    drop_key_exhausted: "0",
  });
  const other = fields(lines[2]);
  assert.equal(other.peer, "peer.example");
  assert.equal(other.address, "fd00:198:18:100::2");
  assert.equal(other.ifname, "-");
  assert.equal(other.uptime, "-");
  assert.equal(other.rtt_ms, "-");
  assert.equal(other.role, "responder");
  for (const line of lines.slice(1, 3)) {
    for (const pair of line.split(" ")) assert.match(pair, /^[a-z_]+=\S+$/, pair);
  }
});

Deno.test("formatStatus() JSON is 'OK ' and the status as one line of JSON", () => {
  const status = daemonStatus([circuitStatus(), circuitStatus({ vid: 4, ifname: null })], { runt: 1 });
  const text = formatStatus(status, true);
  assert.equal(text.includes("\n"), false);
  assert.match(text, /^OK \{/);
  assert.deepEqual(JSON.parse(text.slice(3)), status);
  const reply = parseReply(text);
  assert.equal(reply.ok, true);
  assert.deepEqual(reply.json, status);
  assert.equal(replyLineCount(text), 0, "a JSON reply is one line");
});

// --- formatDevices -------------------------------------------------------------------------------

Deno.test("formatDevices() text has 'OK <n> devices' and one line per device", () => {
  const devices: DeviceInfo[] = [
    { ifname: "vela3", mode: "tap", mtu: 1457, peer: "198.18.0.2", vid: 3, state: "established" },
    { ifname: "uplink0", mode: "tun", mtu: 1471, peer: "peer.example", vid: 9, state: "requesting" },
  ];
  assert.equal(
    formatDevices(devices, false),
    [
      "OK 2 devices",
      "vela3 tap mtu=1457 peer=198.18.0.2 vid=3 state=established",
      "uplink0 tun mtu=1471 peer=peer.example vid=9 state=requesting",
    ].join("\n"),
  );
  assert.equal(formatDevices([], false), "OK 0 devices");
  assert.equal(replyLineCount("OK 2 devices"), 2);
});

Deno.test("formatDevices() JSON is 'OK ' and the array as one line", () => {
  const devices: DeviceInfo[] = [
    { ifname: "vela3", mode: "tap", mtu: 1457, peer: "198.18.0.2", vid: 3, state: "established" },
  ];
  const text = formatDevices(devices, true);
  assert.equal(text.includes("\n"), false);
  assert.deepEqual(parseReply(text), { ok: true, text: JSON.stringify(devices), json: devices });
  assert.deepEqual(parseReply(formatDevices([], true)), { ok: true, text: "[]", json: [] });
});

// --- parseReply and replyLineCount ---------------------------------------------------------------

Deno.test("parseReply() splits an OK text reply into its body", () => {
  assert.deepEqual(parseReply("OK vela 0.1.0"), { ok: true, text: "vela 0.1.0" });
  assert.deepEqual(parseReply("OK closed circuit 3"), { ok: true, text: "closed circuit 3" });
  const status = formatStatus(daemonStatus([circuitStatus()]), false);
  const reply = parseReply(status);
  assert.equal(reply.ok, true);
  assert.equal(reply.json, undefined);
  assert.equal(reply.text, `2 lines\n${formatCircuitLine(circuitStatus())}\ndrops none`);
});

Deno.test("parseReply() parses an OK JSON reply, object or array", () => {
  assert.deepEqual(parseReply(`OK {"closed":true}`), {
    ok: true,
    text: `{"closed":true}`,
    json: { closed: true },
  });
  assert.deepEqual(parseReply(`OK [1,2]`), { ok: true, text: "[1,2]", json: [1, 2] });
});

Deno.test("parseReply() refuses an OK reply whose JSON does not parse", () => {
  assert.deepEqual(parseReply("OK {not json"), { ok: false, text: "the daemon's JSON did not parse" });
  assert.deepEqual(parseReply("OK [1,"), { ok: false, text: "the daemon's JSON did not parse" });
});

Deno.test("parseReply() gives a NOK reply's reason", () => {
  assert.deepEqual(parseReply("NOK unknown command FOO"), { ok: false, text: "unknown command FOO" });
  assert.deepEqual(parseReply("NOK"), { ok: false, text: "" });
  assert.deepEqual(parseReply(nok("no circuit 3 with h")), { ok: false, text: "no circuit 3 with h" });
});

Deno.test("parseReply() refuses garbage and says what came", () => {
  assert.deepEqual(parseReply("hello"), { ok: false, text: "unexpected reply: hello" });
  assert.deepEqual(parseReply(""), { ok: false, text: "unexpected reply: " });
  assert.deepEqual(parseReply("HTTP/1.1 400 Bad Request\r\n"), {
    ok: false,
    text: "unexpected reply: HTTP/1.1 400 Bad Request\r",
  });
  assert.equal(parseReply(" OK x").ok, false);
  assert.equal(parseReply("ok x").ok, false);
});

Deno.test("replyLineCount() reads n from 'OK <n> <what>' and 0 otherwise", () => {
  assert.equal(replyLineCount("OK 3 lines"), 3);
  assert.equal(replyLineCount("OK 0 devices"), 0);
  assert.equal(replyLineCount("OK 12 devices"), 12);
  assert.equal(replyLineCount("OK vela 0.1.0"), 0);
  assert.equal(replyLineCount(`OK {"a":1}`), 0);
  assert.equal(replyLineCount("OK [1,2]"), 0);
  assert.equal(replyLineCount("NOK 3 lines"), 0);
  assert.equal(replyLineCount("OK 3"), 0);
  assert.equal(replyLineCount(""), 0);
  assert.equal(replyLineCount("garbage"), 0);
});

// --- fuzz ----------------------------------------------------------------------------------------

const WORDS = [
  "STATUS?",
  "DEVICES?",
  "VERSION?",
  "CONNECT",
  "CLOSE",
  "JSON",
  "json",
  "connect",
  "198.18.0.2",
  "fd00::2",
  "peer.example",
  "3",
  "0",
  "255",
  "256",
  "-1",
  "mode=tap",
  "mode=tun",
  "mode=",
  "address=198.18.207.1/30",
  "address=fd00:207::1/126",
  "address=198.18.207.1/32",
  "address=",
  "mtu=1400",
  "mtu=1",
  "mtu=99999999999999999999",
  "ifname=vela9",
  "ifname=",
  "port=4455",
  "port=0",
  "port=1e3",
  "family=4",
  "family=6",
  "family=x",
  "=",
  "==",
  "x=y",
  "__proto__=1",
  "toString=1",
  "{}",
  "[]",
  "\u0000",
  "\u00e9t\u00e9",
  "\ud800",
  "\u{1f600}",
];

function randomLine(random: () => number): string {
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)];
  const kind = random();
  if (kind < 0.1) {
    // Random code units, control characters and lone surrogates included.
    const length = Math.floor(random() * 200);
    return String.fromCharCode(...Array.from({ length }, () => Math.floor(random() * 0x10000)));
  }
  if (kind < 0.15) {
    // Very long lines, up to several times MAX_COMMAND_LENGTH.
    const length = Math.floor(random() * MAX_COMMAND_LENGTH * 4);
    const filler = pick(["A", " ", "=", "9", "address=198.18.207.1/30 ", "\t", "\u0001"]);
    return pick(["CONNECT h 3 ", "STATUS? ", "CLOSE h ", ""]) + filler.repeat(length / filler.length);
  }
  if (kind < 0.25) {
    // Printable ASCII and control characters.
    const length = Math.floor(random() * 80);
    return String.fromCharCode(...Array.from({ length }, () => Math.floor(random() * 0x80)));
  }
  if (kind < 0.6) {
    // A command, its arguments and options in order, each now and then swapped for any word.
    const command = pick(["STATUS?", "DEVICES?", "VERSION?", "CONNECT", "CLOSE", "connect", "close"]);
    const words = [command];
    if (/^(connect|close)$/i.test(command)) words.push(pick(["198.18.0.2", "fd00::2", "peer.example", "h"]));
    if (/^(connect|close)$/i.test(command)) words.push(String(Math.floor(random() * 300)));
    if (/^connect$/i.test(command)) {
      const options = WORDS.filter((word) => /^[a-z]+=/.test(word));
      for (let n = Math.floor(random() * 4); n > 0; n--) words.push(pick(options));
    }
    if (random() < 0.3) words.push("JSON");
    for (let i = 0; i < words.length; i++) if (random() < 0.03) words[i] = pick(WORDS);
    return words.join(pick([" ", "  ", "\t"]));
  }
  // Words of the protocol, shuffled, some of them mangled.
  const count = Math.floor(random() * 9);
  const words = Array.from({ length: count }, () => {
    let word = pick(WORDS);
    if (random() < 0.1) word = word.toLowerCase();
    if (random() < 0.05) word = word.slice(0, Math.floor(random() * word.length));
    if (random() < 0.05) word += String.fromCharCode(Math.floor(random() * 32));
    return word;
  });
  return words.join(pick([" ", "  ", "\t", " \r"]));
}

Deno.test("parseRequest(), formatConnect(), parseReply() and replyLineCount() never throw on 2000 random lines", () => {
  const seed = 0x5eed_c0de;
  const random = seededRandom(seed);
  let accepted = 0, connects = 0;
  for (let i = 0; i < 2000; i++) {
    const line = randomLine(random);
    const what = `line ${i} of seed ${seed}: ${JSON.stringify(line.slice(0, 200))}`;
    let request: ReturnType<typeof parseRequest>;
    try {
      request = parseRequest(line);
    } catch (error) {
      assert.fail(`parseRequest threw on ${what}: ${(error as Error).stack}`);
    }
    if ("error" in request) {
      assert.equal(typeof request.error, "string", what);
      assert.equal(nok(request.error).split("\n").length, 1, what);
    } else {
      accepted++;
      assert.ok(["STATUS?", "DEVICES?", "VERSION?", "CONNECT", "CLOSE"].includes(request.command), what);
      if (request.command === "CLOSE") assert.ok(request.vid >= 1 && request.vid <= 255, what);
      if (request.command === "CONNECT") {
        connects++;
        assert.ok(request.circuit.vid >= 1 && request.circuit.vid <= 255, what);
        // What parsed once parses again the same way after formatConnect.
        const again = parseRequest(formatConnect(request.circuit, request.port));
        assert.ok(!("error" in again) && again.command === "CONNECT", what);
        assert.deepEqual(again.circuit, request.circuit, what);
        assert.equal(again.port, request.port, what);
      }
    }
    try {
      parseReply(line);
      replyLineCount(line);
      parseReply("OK " + line);
      parseReply("NOK " + line);
    } catch (error) {
      assert.fail(`parseReply/replyLineCount threw on ${what}: ${(error as Error).stack}`);
    }
  }
  assert.ok(accepted > 200, `only ${accepted} of 2000 random lines were commands; the generator is off`);
  assert.ok(connects > 30, `only ${connects} random CONNECTs parsed; the generator is off`);
});

Deno.test("parseRequest() takes CONNECT compress=on|off|with-encryption, and formatConnect() writes it", () => {
  for (const word of ["on", "off", "with-encryption"]) {
    const request = parsed(`CONNECT router2 3 compress=${word}`);
    assert.ok(request.command === "CONNECT");
    assert.equal(request.circuit.compress, word);
    assert.match(formatConnect(request.circuit), new RegExp(` compress=${word}$`));
  }
  assert.match(
    refused("CONNECT router2 3 compress=maybe"),
    /compress is on, off, with-encryption, not "maybe"/,
  );
});
