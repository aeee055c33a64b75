import assert from "node:assert/strict";
import { ConfigError, type FileConfig, parseConfig, readConfigFile } from "../src/config_file.ts";
import { type IpPrefix, parseCidr } from "../src/ip.ts";
import { MIN_LINK_MTU } from "../src/session.ts";
import { MAX_LINK_MTU } from "../src/circuit_rules.ts";

function cidr(text: string): IpPrefix {
  const parsed = parseCidr(text);
  assert.ok(parsed, `${text} should parse`);
  return parsed;
}

/** Parses a config given as a value (turned into JSON) or as raw text. */
function parsed(config: unknown): FileConfig {
  return parseConfig(typeof config === "string" ? config : JSON.stringify(config));
}

/** Asserts that the config is refused with a one-line ConfigError starting with `start`, matching every pattern. */
function refused(config: unknown, start: string, ...patterns: (string | RegExp)[]): ConfigError {
  let caught: unknown;
  try {
    parsed(config);
  } catch (error) {
    caught = error;
  }
  assert.ok(
    caught instanceof ConfigError,
    `${JSON.stringify(config)} should throw a ConfigError, got ${caught}`,
  );
  assert.equal(caught.name, "ConfigError");
  assert.ok(!caught.message.includes("\n"), "a config error is one line");
  assert.ok(!caught.message.endsWith("."), `"${caught.message}" should not end with a period`);
  assert.ok(caught.message.startsWith(start), `"${caught.message}" should start with "${start}"`);
  for (const pattern of patterns) {
    if (typeof pattern === "string") {
      assert.ok(caught.message.includes(pattern), `"${caught.message}" should mention ${pattern}`);
    } else {
      assert.match(caught.message, pattern);
    }
  }
  return caught;
}

const CIRCUIT = { peer: "router2.example.net", vid: 3 };

/** A config with one circuit with `extra` merged in, as an initiator. */
function circuit(extra: Record<string, unknown>): Record<string, unknown> {
  return { circuits: [{ ...CIRCUIT, ...extra }] };
}

const FULL = {
  listen: true,
  allow: ["198.18.0.0/15"],
  insecure_accept_any: false,
  port: 4455,
  key_file: "/etc/vela/key",
  circuits: [
    {
      peer: "router2.example.net",
      vid: 3,
      mode: "tap",
      address: ["198.18.207.1/30", "fd00:207::1/126"],
      mtu: 1400,
      ifname: "uplink0",
      port: 4455,
      family: 4,
    },
    { peer: "2001:db8::7", vid: 9, mode: "tun" },
  ],
};

// --- valid files -----------------------------------------------------------------------------------

Deno.test("parseConfig() reads a full config into the expected structure", () => {
  assert.deepEqual(parsed(FULL), {
    listen: true,
    allow: [cidr("198.18.0.0/15")],
    insecureAcceptAny: false,
    port: 4455,
    keyFile: "/etc/vela/key",
    circuits: [
      {
        peer: "router2.example.net",
        vid: 3,
        mode: "tap",
        addresses: [cidr("198.18.207.1/30"), cidr("fd00:207::1/126")],
        mtu: 1400,
        ifname: "uplink0",
        port: 4455,
        family: 4,
      },
      { peer: "2001:db8::7", vid: 9, mode: "tun", addresses: [] },
    ],
  });
});

Deno.test("parseConfig() fills in the defaults of a minimal initiator", () => {
  assert.deepEqual(parsed(circuit({})), {
    listen: false,
    allow: [],
    insecureAcceptAny: false,
    circuits: [{ peer: "router2.example.net", vid: 3, mode: "tap", addresses: [] }],
  });
});

Deno.test("parseConfig() accepts a listener with no circuits", () => {
  const config = parsed({ listen: true, insecure_accept_any: true });
  assert.equal(config.listen, true);
  assert.equal(config.insecureAcceptAny, true);
  assert.deepEqual(config.circuits, []);
  assert.equal(parsed({ listen: true, key_file: "/etc/vela/key" }).keyFile, "/etc/vela/key");
});

Deno.test("parseConfig() accepts the limits of each number and a byte order mark", () => {
  const config = parsed({
    port: 65535,
    circuits: [
      { peer: "a", vid: 1, mtu: MIN_LINK_MTU, port: 1, family: 6 },
      { peer: "b", vid: 255, mtu: MAX_LINK_MTU },
    ],
  });
  assert.equal(config.port, 65535);
  assert.deepEqual(config.circuits.map((c) => [c.vid, c.mtu]), [[1, MIN_LINK_MTU], [255, MAX_LINK_MTU]]);
  assert.equal(parseConfig(`\uFEFF${JSON.stringify(circuit({}))}`).circuits.length, 1);
});

Deno.test("parseConfig() accepts /31 and /127 addresses and the same vid to different peers", () => {
  const config = parsed({
    circuits: [
      { peer: "a.example.net", vid: 3, address: ["198.18.0.0/31", "fd00::1/127"] },
      { peer: "b.example.net", vid: 3, ifname: "velab3" },
    ],
  });
  assert.deepEqual(config.circuits[0].addresses, [cidr("198.18.0.0/31"), cidr("fd00::1/127")]);
});

// --- the file as a whole ---------------------------------------------------------------------------

Deno.test("parseConfig() gives the JSON parser's message for invalid JSON", () => {
  let expected = "";
  try {
    JSON.parse(`{ "listen": true,, }`);
  } catch (error) {
    expected = (error as Error).message;
  }
  const error = refused(`{ "listen": true,, }`, "Invalid JSON: ");
  assert.equal(error.message, `Invalid JSON: ${expected}`);
  refused("", "The config file is empty");
});

Deno.test("parseConfig() refuses a file that is not a JSON object", () => {
  refused([CIRCUIT], "The config file must hold a JSON object, not an array");
  refused("42", "The config file must hold a JSON object, not 42");
});

Deno.test("parseConfig() refuses a file with neither listen nor any circuit", () => {
  refused({}, "circuits: ", "no circuits", "listen");
  refused({ listen: false, circuits: [] }, "circuits: ");
});

// --- unknown keys ----------------------------------------------------------------------------------

Deno.test("parseConfig() names an unknown key in a circuit and suggests the right one", () => {
  const error = refused(
    circuit({ adress: ["198.18.207.1/30"] }),
    "circuits[0].adress: unknown key",
    `did you mean "address"?`,
  );
  assert.equal(error.field, "circuits[0].adress");
  refused({ circuits: [CIRCUIT, { ...CIRCUIT, vid: 4, prot: 1 }] }, "circuits[1].prot: ", `"port"`);
});

Deno.test("parseConfig() names an unknown top-level key", () => {
  refused({ ...circuit({}), insecure_accept_all: true }, "insecure_accept_all: ", `"insecure_accept_any"`);
  refused({ ...circuit({}), keyFile: "/k" }, "keyFile: ", `did you mean "key_file"?`);
  refused({ ...circuit({}), colour: "red" }, "colour: unknown key; the keys here are", `"listen"`);
});

Deno.test("parseConfig() says where a key in the wrong place belongs", () => {
  refused({ ...circuit({}), peer: "x" }, "peer: ", `"circuits"`);
  refused(circuit({ listen: true }), "circuits[0].listen: ", "top level");
});

// --- wrong types -----------------------------------------------------------------------------------

Deno.test("parseConfig() names the field of a value of the wrong type", () => {
  refused({ ...circuit({}), listen: "yes" }, `listen: must be true or false, not "yes"`);
  refused({ ...circuit({}), insecure_accept_any: 1 }, "insecure_accept_any: must be true or false, not 1");
  refused(circuit({ vid: "3" }), `circuits[0].vid: must be a whole number from 1 to 255, not "3"`);
  refused({ ...circuit({}), key_file: 7 }, "key_file: ", "not 7");
  refused({ circuits: CIRCUIT }, "circuits: must be an array", "an object", "[ ]");
  refused({ circuits: ["router2"] }, `circuits[0]: must be an object`, `not "router2"`);
  refused(circuit({ ifname: null }), "circuits[0].ifname: ", "not null");
});

// --- listener settings -----------------------------------------------------------------------------

Deno.test("parseConfig() names the entry of an allow prefix that is not a CIDR", () => {
  refused({ listen: true, allow: ["198.18.0.0/15", "198.18.0.0"] }, `allow[1]: `, `not "198.18.0.0"`);
  refused({ listen: true, allow: "198.18.0.0/15" }, "allow: must be an array");
});

Deno.test("parseConfig() takes key_files, cipher, rekey_after and a circuit's own key_file and cipher", () => {
  const config = parsed({
    listen: true,
    key_file: "/k/one",
    key_files: ["/k/two", "/k/three"],
    cipher: "none",
    rekey_after: 60,
    circuits: [{ ...CIRCUIT, key_file: "/k/site", cipher: "chacha20-poly1305" }],
  });
  assert.deepEqual(config.keyFiles, ["/k/two", "/k/three"]);
  assert.equal(config.cipher, "clear");
  assert.equal(config.rekeyAfterMs, 60_000);
  assert.equal(config.circuits[0].keyFile, "/k/site");
  assert.equal(config.circuits[0].cipher, "chacha20-poly1305");
  assert.equal(
    parsed({ listen: true, key_files: ["/k/two"] }).listen,
    true,
    "key_files alone make a listener",
  );
  refused({ ...circuit({}), key_file: "/k", cipher: "rc4" }, "cipher: ", `"aes-256-gcm"`, `not "rc4"`);
  refused({ ...circuit({}), key_file: "/k", rekey_after: 500 }, "rekey_after: ", "1 to 120");
  refused({ ...circuit({ cipher: "aes-256-gcm" }) }, "cipher: ", "key_file");
  refused({ listen: true, key_files: "/k" }, "key_files: ", "array");
});

Deno.test("parseConfig() says the listener needs allow, key_file or insecure_accept_any", () => {
  refused({ listen: true }, "listen: the listener needs", "allow", "key_file", "insecure_accept_any");
  refused({ listen: true, allow: [], insecure_accept_any: false }, "listen: ");
});

Deno.test("parseConfig() refuses allow without listen", () => {
  refused({ ...circuit({}), allow: ["198.18.0.0/15"] }, "allow: ", `"listen": true`);
});

Deno.test("parseConfig() refuses insecure_accept_any without listen", () => {
  refused(
    { ...circuit({}), listen: false, insecure_accept_any: true },
    "insecure_accept_any: ",
    `"listen": true`,
  );
});

Deno.test("parseConfig() names the field of a top-level port out of range", () => {
  refused({ ...circuit({}), port: 65536 }, "port: must be a whole number from 1 to 65535, not 65536");
});

// --- circuit settings ------------------------------------------------------------------------------

Deno.test("parseConfig() names a circuit without a peer", () => {
  refused({ circuits: [{ vid: 3 }] }, "circuits[0].peer: is missing");
  refused(circuit({ peer: "" }), `circuits[0].peer: must be a host name or IP address`, `not ""`);
  refused(circuit({ peer: "198.18.0.2/30" }), "circuits[0].peer: ", "no prefix length");
});

Deno.test("parseConfig() names a circuit without a vid", () => {
  refused({ circuits: [{ peer: "router2" }] }, "circuits[0].vid: is missing", "1 to 255");
});

Deno.test("parseConfig() names the field of a vid out of range", () => {
  const error = refused(
    { circuits: [CIRCUIT, { ...CIRCUIT, vid: 0 }] },
    "circuits[1].vid: must be a whole number from 1 to 255, not 0",
  );
  assert.equal(error.message, "circuits[1].vid: must be a whole number from 1 to 255, not 0");
  assert.equal(error.field, "circuits[1].vid");
  refused(circuit({ vid: 256 }), "circuits[0].vid: ", "not 256");
  refused(circuit({ vid: 2.5 }), "circuits[0].vid: ", "not 2.5");
});

Deno.test("parseConfig() names the field of a mode that is not tap or tun", () => {
  refused(circuit({ mode: "tunnel" }), `circuits[0].mode: must be "tap" or "tun", not "tunnel"`);
});

Deno.test("parseConfig() names the entry of an address that is not a CIDR", () => {
  refused(circuit({ address: ["198.18.207.1"] }), "circuits[0].address[0]: ", "prefix length");
  refused(
    circuit({ address: "198.18.207.1/30" }),
    "circuits[0].address: must be an array",
    `["198.18.207.1/30"]`,
  );
});

Deno.test("parseConfig() names a second address of the same family", () => {
  refused(
    circuit({ address: ["fd00::1/126", "198.18.207.1/30", "198.18.208.1/30"] }),
    "circuits[0].address[2]: ",
    "IPv4",
    "at most one per family",
  );
});

Deno.test("parseConfig() names an address that leaves no far-end address", () => {
  refused(circuit({ address: ["198.18.207.1/32"] }), "circuits[0].address[0]: ", "/31 or wider");
  refused(circuit({ address: ["198.18.207.3/30"] }), "circuits[0].address[0]: ", "host 1 or 2");
});

Deno.test("parseConfig() names the field of an mtu out of range", () => {
  refused(
    circuit({ mtu: MIN_LINK_MTU - 1 }),
    `circuits[0].mtu: must be a whole number from ${MIN_LINK_MTU} to ${MAX_LINK_MTU}, not ${
      MIN_LINK_MTU - 1
    }`,
  );
  refused(circuit({ mtu: MAX_LINK_MTU + 1 }), "circuits[0].mtu: ");
});

Deno.test("parseConfig() names the field of an invalid ifname", () => {
  refused(circuit({ ifname: "a name" }), "circuits[0].ifname: must be a valid interface name");
  refused(circuit({ ifname: "sixteen-bytes-xx" }), "circuits[0].ifname: ");
  refused(circuit({ ifname: "" }), "circuits[0].ifname: ");
});

Deno.test("parseConfig() names the field of a circuit port out of range", () => {
  refused(circuit({ port: 0 }), "circuits[0].port: must be a whole number from 1 to 65535, not 0");
});

Deno.test("parseConfig() names the field of a family that is not 4 or 6", () => {
  refused(circuit({ family: 5 }), "circuits[0].family: must be 4 or 6, not 5");
  refused(circuit({ family: "4" }), "circuits[0].family: ", `not "4"`);
});

Deno.test("parseConfig() refuses two circuits with the same peer and vid", () => {
  refused(
    { circuits: [CIRCUIT, { peer: "a", vid: 3 }, { ...CIRCUIT, ifname: "other0" }] },
    "circuits[2].vid: ",
    "circuits[0]",
    "vid 3",
  );
  refused(
    { circuits: [{ peer: "2001:DB8::7", vid: 1 }, { peer: "2001:db8:0::7", vid: 1, ifname: "x" }] },
    "circuits[1].vid: ",
  );
  refused(
    {
      circuits: [{ peer: "Router2.example.net.", vid: 1 }, {
        peer: "router2.example.net",
        vid: 1,
        ifname: "x",
      }],
    },
    "circuits[1].vid: ",
  );
});

Deno.test("parseConfig() refuses two circuits with the same ifname", () => {
  refused(
    { circuits: [{ ...CIRCUIT, ifname: "uplink0" }, { peer: "b", vid: 4, ifname: "uplink0" }] },
    "circuits[1].ifname: ",
    `"uplink0"`,
    "circuits[0]",
  );
  refused(
    { circuits: [{ peer: "a", vid: 3 }, { peer: "b", vid: 3 }] },
    "circuits[1].ifname: ",
    "vela3",
    "circuits[0]",
  );
  refused(
    { circuits: [{ peer: "a", vid: 3 }, { peer: "b", vid: 4, ifname: "vela3" }] },
    "circuits[1].ifname: ",
  );
});

// --- readConfigFile --------------------------------------------------------------------------------

Deno.test("readConfigFile() reads and parses a file", () => {
  const path = Deno.makeTempFileSync({ suffix: ".json" });
  try {
    Deno.writeTextFileSync(path, JSON.stringify(FULL, null, 2));
    assert.deepEqual(readConfigFile(path), parsed(FULL));
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("readConfigFile() puts the path before the field of an invalid file", () => {
  const path = Deno.makeTempFileSync({ suffix: ".json" });
  try {
    Deno.writeTextFileSync(path, JSON.stringify(circuit({ vid: 0 })));
    assert.throws(() => readConfigFile(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `${path}: circuits[0].vid: must be a whole number from 1 to 255, not 0`);
      assert.equal(error.field, "circuits[0].vid");
      return true;
    });
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("readConfigFile() names a missing path and says what to do", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/missing.json`;
    assert.throws(() => readConfigFile(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error.message.includes(path), error.message);
      assert.match(error.message, /does not exist; create it or give the right path$/);
      return true;
    });
    assert.throws(() => readConfigFile(dir), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /is a directory/);
      return true;
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseConfig() takes a circuit's bridge, the listener's bridge and rules, and the hooks", () => {
  const config = parsed({
    listen: true,
    allow: ["198.18.0.0/15"],
    bridge: "br0",
    bridges: [{ bridge: "br7", vid: 7 }, { bridge: "br9", allow: "198.19.0.0/16" }],
    up: "logger up",
    down: "logger down",
    circuits: [{ peer: "router2.example.net", vid: 3, bridge: "br3" }],
  });
  assert.equal(config.bridge, "br0");
  assert.deepEqual(config.bridges, [{ bridge: "br7", vid: 7 }, {
    bridge: "br9",
    allow: cidr("198.19.0.0/16"),
  }]);
  assert.equal(config.up, "logger up");
  assert.equal(config.down, "logger down");
  assert.equal(config.circuits[0].bridge, "br3");
});

Deno.test("parseConfig() refuses a bridge on a tun circuit, a listener's bridge without listen, and a bad rule", () => {
  refused({ circuits: [{ peer: "r2", vid: 3, mode: "tun", bridge: "br0" }] }, "circuits[0].bridge", "tap");
  refused({ bridge: "br0", circuits: [{ peer: "r2", vid: 3 }] }, "bridge", `"listen": true`);
  refused({ listen: true, allow: ["198.18.0.0/15"], bridges: [{ vid: 3 }] }, "bridges[0].bridge", "missing");
  refused({ listen: true, allow: ["198.18.0.0/15"], up: "" }, "up", "shell command");
});

Deno.test("parseConfig() takes a circuit's filter and refuses a bad MAC in it, naming the field", () => {
  const config = parsed({
    circuits: [{ peer: "r2", vid: 3, filter: { remote: ["02:00:00:00:0b:01"], block: ["multicast"] } }],
  });
  assert.deepEqual(config.circuits[0].filter, {
    local: [],
    remote: ["020000000b01"],
    broadcast: true,
    multicast: false,
    block: [],
  });
  refused(
    { circuits: [{ peer: "r2", vid: 3, filter: { local: ["zz"] } }] },
    "circuits[0].filter.local:",
    "not a MAC",
  );
  refused({ circuits: [{ peer: "r2", vid: 3, filter: { allow: [] } }] }, "circuits[0].filter.allow");
});

Deno.test("parseConfig() takes a filter in a listener's bridges rule and refuses a bad one, naming the field", () => {
  const config = parsed({
    listen: true,
    allow: ["198.18.0.0/15"],
    bridges: [{ bridge: "br0", vid: 3, filter: { remote: ["02:00:00:00:0b:01"] } }],
  });
  assert.deepEqual(config.bridges?.[0].filter?.remote, ["020000000b01"]);
  refused(
    { listen: true, allow: ["198.18.0.0/15"], bridges: [{ bridge: "br0", filter: { local: ["zz"] } }] },
    "bridges[0].filter.local:",
    "not a MAC",
  );
});

Deno.test("parseConfig() takes a circuit's far_bridge and a listener's offer_bridges, and refuses them out of place", () => {
  assert.equal(
    parsed({ circuits: [{ peer: "r2", vid: 3, far_bridge: "br5" }] }).circuits[0].farBridge,
    "br5",
  );
  const listener = parsed({ listen: true, allow: ["198.18.0.0/15"], offer_bridges: ["br5"] });
  assert.deepEqual(listener.offerBridges, ["br5"]);
  refused({ circuits: [{ peer: "r2", vid: 3, mode: "tun", far_bridge: "br5" }] }, "circuits[0].far_bridge");
  refused({ listen: true, allow: ["198.18.0.0/15"], offer_bridges: "br5" }, "offer_bridges", "array");
  refused({ circuits: [{ peer: "r2", vid: 3 }], offer_bridges: ["br5"] }, "offer_bridges", "listen");
});

Deno.test('parseConfig() reads compress as true, false or "with-encryption", at the top and per circuit', () => {
  assert.equal(parsed({ ...circuit({}), compress: true }).compress, "on");
  assert.equal(parsed({ ...circuit({}), compress: false }).compress, "off");
  assert.equal(parsed(circuit({ compress: "with-encryption" })).circuits[0].compress, "with-encryption");
  assert.equal(parsed(circuit({})).circuits[0].compress, undefined);
  refused(circuit({ compress: "yes" }), "circuits[0].compress", 'must be true, false or "with-encryption"');
  refused({ ...circuit({}), compress: 1 }, "compress", "not 1");
});

Deno.test('parseConfig() reads compress_mode "stateless" or "dictionary", and refuses other words', () => {
  assert.equal(
    parsed({ ...circuit({}), compress: true, compress_mode: "stateless" }).compressMode,
    "stateless",
  );
  assert.equal(parsed({ ...circuit({}), compress_mode: "dictionary" }).compressMode, "dictionary");
  refused({ ...circuit({}), compress_mode: "zstd" }, "compress_mode", 'must be "stateless" or "dictionary"');
});
