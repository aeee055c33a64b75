/**
 * deno task bench:compression [--modes off,stateless,dictionary] [--mib N] [--rounds R] [--quick]
 *
 * What the compression stage (issue 20) saves and costs. For each mode in MODES a fresh bed (two network
 * namespaces and a veth pair, testbed/netns.ts) with a listener in b and an initiator in a started with
 * that mode's arguments; through the circuit, from a to b's 198.18.207.2, one TCP connection per workload:
 * (a) HTTP/1.1 requests and responses with JSON bodies, (b) RFC 3164 syslog lines, (c) English-like prose,
 * (d) random bytes, each N MiB generated from a fixed seed by this file and checked by sha256 at the
 * receiver, then (e) iperf3 TCP for 5 s (random payload). Per workload: the application's bytes, the
 * circuit's txBytes and compressOut deltas, the sending veth's TX bytes (the underlay, IP/UDP headers
 * included), the time and throughput, and the CPU seconds both vela processes used per GB. The
 * "compressible mix" is the sum of (a), (b) and (c). With --rounds R the whole thing runs R times, the
 * order of the modes alternating; the targets of issue 20 are judged on the medians of the rounds, with no
 * run below 90% of a target (the rule for this 2-core machine). Writes bench/results/<stamp>-compression.*
 * and latest-compression.* (--quick: a temporary directory). A benchmark: the numbers are this machine's.
 * bench/README.md, section "Compression (issue 20)", describes the method and the columns.
 *
 * The same file is the sender and the receiver that run in the namespaces: `serve PORT BYTES` and
 * `send HOST PORT KIND SEED BYTES` (see serveMain, sendMain). Everything else here that does not touch the
 * system is exported for tests/bench_compression_test.ts.
 */

import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { Bed, type BedProcess, hasProgram, namespaceSupport, run } from "../testbed/netns.ts";
import { seededRandom } from "../testbed/seeded_random.ts";
import { lz4Available, lz4Compress, lz4CompressBound } from "../ffi/liblz4.ts";

// ------------------------------------------------------------------------------------------- modes ---

export type ModeName = "off" | "stateless" | "dictionary";

/**
 * The one table of modes: the arguments each mode adds to both daemons, and what `vela status` must then
 * say of the circuit's `compression` (a mode whose circuit says otherwise is skipped, never measured as
 * that mode). A daemon that does not know an option exits 2, and its mode is skipped with the reason.
 * Before `--compress-mode` existed, `--compress` alone was stateless LZ4; since it does, `--compress`
 * alone means the dictionary mode, so stateless says so.
 */
export const MODES: Record<ModeName, { args: readonly string[]; compression: string }> = {
  off: { args: [], compression: "off" },
  stateless: { args: ["--compress", "--compress-mode", "stateless"], compression: "lz4" },
  dictionary: { args: ["--compress", "--compress-mode", "dictionary"], compression: "dictionary" },
};
export const MODE_NAMES = Object.keys(MODES) as ModeName[];

// -------------------------------------------------------------------------------------- workloads ---

export type TextKind = "http" | "syslog" | "prose";
export type StreamKind = TextKind | "random";
export type WorkloadName = StreamKind | "mix" | "iperf3";

/** The streams sent with sha256 checked, in the order they run (compressible first: a stage that paused on
 * random data would otherwise still be pausing when the text begins). */
export const STREAMS: readonly { kind: StreamKind; seed: number; what: string }[] = [
  { kind: "http", seed: 20_001, what: "HTTP/1.1 requests and responses, JSON bodies" },
  { kind: "syslog", seed: 20_002, what: "RFC 3164 syslog lines" },
  { kind: "prose", seed: 20_003, what: "English-like prose (word classes, Markov-ish choice)" },
  { kind: "random", seed: 20_004, what: "random bytes" },
];
export const MIX: readonly TextKind[] = ["http", "syslog", "prose"];
/** The order of the rows of one mode in the tables. */
export const WORKLOAD_ORDER: readonly WorkloadName[] = ["http", "syslog", "prose", "mix", "random", "iperf3"];

/** A seeded PRNG (mulberry32): the same seed gives the same numbers everywhere. */
export class Prng {
  readonly #random: () => number;

  constructor(seed: number) {
    this.#random = seededRandom(seed);
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    return this.#random() * 4294967296;
  }

  /** A uniform number in [0, 1). */
  float(): number {
    return this.#random();
  }

  /** A uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** A uniform integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  /** Skewed towards the first items, as word frequencies are (roughly Zipf-like). */
  skewed<T>(items: readonly T[]): T {
    const u = this.float();
    return items[Math.floor(items.length * u * u)];
  }

  hex(digits: number): string {
    let text = "";
    while (text.length < digits) text += this.next().toString(16).padStart(8, "0");
    return text.slice(0, digits);
  }
}

/** Words separated by white space as an array; an underscore stands for a space within one entry. */
function words(text: string): string[] {
  return text.trim().split(/\s+/).map((word) => word.replaceAll("_", " "));
}

const FIRST = words(`
  Anna Ben Carla David Elena Farid Grace Hugo Ines Jonas Kofi Lena Mateo Nora Oskar Priya Quentin Rosa
  Sven Tomas Uma Victor Wei Yara
`);
const LAST = words(`
  Andersen Becker Costa Dubois Eriksen Fischer Garcia Hansen Ivanova Jensen Kowalski Lopez Moreau Nakamura
  Olsen Petrov Rossi Schmidt Tanaka Weber
`);
const CITIES = words(`
  Aarhus Bologna Cork Dresden Espoo Graz Leiden Porto Tartu Uppsala
`);
const STREETS = ["Harbour Road", "Mill Lane", "Station Street", "Park Avenue", "Church Walk", "Bridge Row"];
const PRODUCTS = words(`
  cable adapter switch sensor battery charger router antenna bracket enclosure fan relay
`);
const STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"];
const TAGS = ["priority", "gift", "wholesale", "repeat", "export", "fragile", "backorder", "promo"];
const RESOURCES = ["orders", "customers", "products", "invoices", "shipments", "events"];
const API_HOSTS = ["api.shop.example", "api.eu.shop.example", "billing.example.net", "inventory.example.org"];
const USER_AGENTS = [
  "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
  "okhttp/4.12.0",
  "python-requests/2.32.3",
  "curl/8.11.0",
  "Go-http-client/1.1",
];
/** The clock of the generated records: 2026-12-04 08:00:00 UTC, moving on by a few seconds a record. */
const EPOCH_MS = Date.UTC(2026, 11, 4, 8, 0, 0);

function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** One JSON record of the API: numbers, names, timestamps, nested arrays and objects. */
function apiRecord(r: Prng, resource: string, id: number, ms: number): Record<string, unknown> {
  const first = r.pick(FIRST);
  const last = r.pick(LAST);
  const items = Array.from({ length: r.between(1, 5) }, () => {
    const product = r.pick(PRODUCTS);
    return {
      sku: `${product.slice(0, 3).toUpperCase()}-${r.between(1000, 9999)}`,
      name: `${product} ${r.pick(["mini", "pro", "v2", "xl", "basic", "plus"])}`,
      quantity: r.between(1, 12),
      unitPrice: Math.round(r.float() * 20000) / 100,
    };
  });
  const total = items.reduce((sum, item) => sum + item.quantity * item.unitPrice, 0);
  return {
    id,
    type: resource.replace(/s$/, ""),
    createdAt: isoTime(ms - r.below(86_400_000 * 30)),
    updatedAt: isoTime(ms),
    status: r.pick(STATUSES),
    customer: {
      id: `cus_${r.hex(12)}`,
      name: `${first} ${last}`,
      email: `${first.toLowerCase()}.${last.toLowerCase()}@mail.example`,
      address: {
        street: `${r.between(1, 200)} ${r.pick(STREETS)}`,
        city: r.pick(CITIES),
        postcode: String(r.between(10000, 99999)),
        country: r.pick(["DK", "IT", "IE", "DE", "FI", "AT", "NL", "PT", "EE", "SE"]),
      },
    },
    items,
    total: Math.round(total * 100) / 100,
    currency: "EUR",
    tags: Array.from({ length: r.below(3) }, () => r.pick(TAGS)),
    history: Array.from(
      { length: r.between(1, 4) },
      (_, k) => [isoTime(ms - (4 - k) * 3_600_000), r.pick(STATUSES)],
    ),
  };
}

/** The HTTP/1.1 workload: each call gives one request and its response, as one direction carries them in a
 * recorded or mirrored exchange (a proxy's feed): CRLF headers, a JSON body where there is one. */
function httpSource(seed: number): () => string {
  const r = new Prng(seed);
  let ms = EPOCH_MS;
  let session = r.hex(32);
  let exchanges = 0;
  return () => {
    ms += r.between(5, 4000);
    if (++exchanges % 25 === 0) session = r.hex(32);
    const resource = r.pick(RESOURCES);
    const host = r.skewed(API_HOSTS);
    const agent = r.skewed(USER_AGENTS);
    const id = r.between(100_000, 999_999);
    const requestId = `${r.hex(8)}-${r.hex(4)}-4${r.hex(3)}-${r.hex(4)}-${r.hex(12)}`;
    const roll = r.float();
    const method = roll < 0.6 ? "GET" : roll < 0.9 ? "POST" : roll < 0.96 ? "PUT" : "DELETE";
    const list = method === "GET" && r.float() < 0.4;
    const path = list
      ? `/api/v2/${resource}?page=${r.between(1, 40)}&limit=${r.pick([10, 20, 50])}&sort=-createdAt`
      : method === "POST"
      ? `/api/v2/${resource}`
      : `/api/v2/${resource}/${id}`;
    const requestBody = method === "POST" || method === "PUT"
      ? JSON.stringify(apiRecord(r, resource, id, ms))
      : "";
    const request = [
      `${method} ${path} HTTP/1.1`,
      `Host: ${host}`,
      `User-Agent: ${agent}`,
      "Accept: application/json",
      "Accept-Language: en-GB,en;q=0.9",
      `Cookie: sid=${session}; theme=${r.pick(["light", "dark"])}`,
      `X-Request-Id: ${requestId}`,
      ...(requestBody ? ["Content-Type: application/json", `Content-Length: ${requestBody.length}`] : []),
      "Connection: keep-alive",
      "",
      "",
    ].join("\r\n") + requestBody;
    let status = method === "POST" ? "201 Created" : method === "DELETE" ? "204 No Content" : "200 OK";
    let body: string;
    if (method !== "POST" && r.float() < 0.05) {
      status = "404 Not Found";
      body = JSON.stringify({
        error: { code: "not_found", message: `No ${resource} with id ${id}`, requestId },
      });
    } else if (method === "DELETE") {
      body = "";
    } else if (list) {
      const data = Array.from(
        { length: r.between(2, 8) },
        () => apiRecord(r, resource, r.between(100_000, 999_999), ms),
      );
      body = JSON.stringify({ data, page: r.between(1, 40), total: r.between(100, 50_000), requestId });
    } else {
      body = JSON.stringify(apiRecord(r, resource, id, ms));
    }
    if (r.float() < 0.2) session = r.hex(32);
    const response = [
      `HTTP/1.1 ${status}`,
      `Date: ${httpDate(ms)}`,
      "Server: nginx/1.26.2",
      ...(body ? ["Content-Type: application/json; charset=utf-8", `Content-Length: ${body.length}`] : []),
      `Set-Cookie: sid=${session}; Path=/; Expires=${
        httpDate(ms + 3_600_000)
      }; HttpOnly; Secure; SameSite=Lax`,
      "Cache-Control: no-store",
      `ETag: W/"${r.hex(16)}"`,
      `X-Request-Id: ${requestId}`,
      `X-Response-Time: ${r.between(1, 900)}ms`,
      "Connection: keep-alive",
      "",
      "",
    ].join("\r\n") + body;
    return request + response;
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const SYSLOG_HOSTS = words(`
  web01 web02 web03 db01 db02 cache01 mail01 gw-edge1 gw-edge2 build07
`);
const USERS = ["root", "deploy", "backup", "www-data", "anna", "jonas", "postgres", "git", "admin"];
const UNITS = words(`
  logrotate apt-daily fstrim certbot man-db systemd-tmpfiles-clean sysstat-collect
`);

function ip(r: Prng): string {
  const net = r.pick(["192.0.2", "198.51.100", "203.0.113", "198.18.4", "198.19.77"]);
  return `${net}.${r.between(1, 254)}`;
}

/** RFC 3164 timestamp: "Dec  4 08:00:00". */
function syslogTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  const day = String(d.getUTCDate()).padStart(2, " ");
  return `${MONTHS[d.getUTCMonth()]} ${day} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${
    p(d.getUTCSeconds())
  }`;
}

/**
 * Syslog messages: "TAG FACILITY SEVERITY TEXT", where TEXT's fields are filled in per line: {user},
 * {ip}, {port}, {unit}, {res} (an API resource), {ua} (a user agent), {iso} (the line's time), {up}
 * (kernel uptime), {N-M} (a number from N to M), {hex:N} and {HEX:N} (N hex digits), {a|b|c} (one of).
 */
const SYSLOG_MESSAGES = [
  "sshd 4 6 Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:{hex:43}",
  "sshd 4 6 Failed password for invalid user {user}{0-99} from {ip} port {port} ssh2",
  "sshd 4 6 Connection closed by authenticating user {user} {ip} port {port} [preauth]",
  "sshd 10 6 pam_unix(sshd:session): session opened for user {user}(uid={0-1200}) by (uid=0)",
  "CRON 9 6 ({user}) CMD ({/usr/local/bin/backup.sh --incremental|run-parts --report /etc/cron.hourly|" +
  "/usr/bin/php /var/www/cron.php|test -x /usr/sbin/anacron})",
  "kernel 0 4 {up} [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:{hex:2}:{hex:2}:{hex:2} SRC={ip} DST={ip} " +
  "LEN={40-1500} TOS=0x00 PREC=0x00 TTL={30-250} ID={0-65535} PROTO=TCP SPT={port} " +
  "DPT={22|23|80|443|3389|8080} WINDOW={1024-65535} RES=0x00 SYN URGP=0",
  "kernel 0 6 {up} eth{0-1}: Link is Up - 1Gbps/Full - flow control rx/tx",
  "systemd 3 6 Started {unit}.service - {Daily apt download activities|Rotate log files|Discard unused blocks}.",
  "systemd 3 6 {unit}.service: Deactivated successfully.",
  "systemd 3 6 {unit}.service: Consumed {0-40}.{100-999}s CPU time.",
  'nginx 23 6 {ip} - - [{iso}] "{GET|GET|POST} /{res}/{1-99999} HTTP/1.1" {200|200|200|301|304|404|500} ' +
  '{0-40000} "-" "{ua}"',
  "postfix/smtpd 2 6 connect from unknown[{ip}]",
  "postfix/smtpd 2 6 {HEX:10}: client=mail{0-9}.example.com[{ip}]",
  "postfix/qmgr 2 6 {HEX:10}: from=<{user}@example.org>, size={800-90000}, nrcpt={1-4} (queue active)",
  "dhclient 3 6 DHCPREQUEST for {ip} on eth0 to {ip} port 67",
  'postgres 16 3 [{300-65000}] ERROR:  duplicate key value violates unique constraint "{res}_pkey"',
].map((line) => {
  const [tag, facility, severity, ...text] = line.split(" ");
  return { tag, priority: Number(facility) * 8 + Number(severity), text: text.join(" ") };
});

function fillTemplate(r: Prng, text: string, ms: number): string {
  return text.replace(/\{([^}]*)\}/g, (_, field: string) => {
    switch (field) {
      case "user":
        return r.skewed(USERS);
      case "ip":
        return ip(r);
      case "port":
        return String(r.between(1024, 65535));
      case "unit":
        return r.pick(UNITS);
      case "res":
        return r.pick(RESOURCES);
      case "ua":
        return r.skewed(USER_AGENTS);
      case "iso":
        return isoTime(ms);
      case "up":
        return `[${String(r.between(1000, 999999)).padStart(6, " ")}.${
          String(r.below(1000000)).padStart(6, "0")
        }]`;
    }
    const range = /^(\d+)-(\d+)$/.exec(field);
    if (range) return String(r.between(Number(range[1]), Number(range[2])));
    const hex = /^(hex|HEX):(\d+)$/.exec(field);
    if (hex) return hex[1] === "HEX" ? r.hex(Number(hex[2])).toUpperCase() : r.hex(Number(hex[2]));
    return r.pick(field.split("|"));
  });
}

/** The syslog workload: one RFC 3164 line a call, "<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MESSAGE". */
function syslogSource(seed: number): () => string {
  const r = new Prng(seed);
  let ms = EPOCH_MS;
  const pids = new Map<string, number>();
  return () => {
    ms += r.between(0, 2500);
    const host = r.skewed(SYSLOG_HOSTS);
    const message = r.skewed(SYSLOG_MESSAGES);
    let pid = "";
    if (message.tag !== "kernel") {
      const key = `${host}/${message.tag}`;
      if (!pids.has(key) || r.float() < 0.02) pids.set(key, r.between(300, 65_000));
      pid = `[${pids.get(key)}]`;
    }
    return `<${message.priority}>${syslogTime(ms)} ${host} ${message.tag}${pid}: ${
      fillTemplate(r, message.text, ms)
    }\n`;
  };
}

const WORDS = {
  det: ["the", "a", "the", "this", "every", "some", "its", "their", "that", "no", "each", "our", "another"],
  adj: words(`
    old small quiet long grey new bright narrow cold distant heavy patient careful strange familiar broken
    simple early late green wide silent warm sudden common local steady proper low high open empty full
    hidden last
  `),
  noun: words(`
    house river road door window village morning evening letter garden train station harbour ship machine
    engineer teacher doctor child friend stranger question answer light wind rain field forest hill bridge
    market table book voice story name hand face year day night winter summer town office message signal
    line network clock lamp wall stone boat coast
  `),
  verb: words(`
    saw found left carried opened followed remembered watched crossed reached heard kept wrote read
    brought lost called built turned closed passed knew asked told held waited_for looked_at thought_about
    walked_to spoke_of
  `),
  adv: words(`
    slowly again quietly then almost never often still soon already suddenly
  `),
  prep: words(`
    of in on with from to by at for under over through near after
  `),
  conj: ["and", "but", "while", "because", "although", "so", "when", "until"],
  pron: ["he", "she", "they", "we", "it", "nobody", "everyone"],
  name: FIRST,
};
type WordClass = keyof typeof WORDS | "end";
/** Which class of word may follow which, with weights: a small Markov chain over word classes. */
const NEXT: Record<WordClass | "start", [WordClass, number][]> = {
  start: [["det", 55], ["pron", 20], ["name", 15], ["adv", 10]],
  det: [["adj", 35], ["noun", 65]],
  adj: [["noun", 85], ["adj", 15]],
  noun: [["verb", 40], ["prep", 30], ["conj", 10], ["end", 20]],
  name: [["verb", 80], ["prep", 10], ["conj", 10]],
  pron: [["verb", 85], ["adv", 15]],
  adv: [["verb", 40], ["det", 40], ["pron", 20]],
  verb: [["det", 50], ["prep", 15], ["adv", 15], ["name", 5], ["end", 15]],
  prep: [["det", 80], ["name", 20]],
  conj: [["det", 45], ["pron", 40], ["name", 15]],
  end: [],
};

function weighted(r: Prng, choices: [WordClass, number][]): WordClass {
  const total = choices.reduce((sum, [, w]) => sum + w, 0);
  let x = r.below(total);
  for (const [what, w] of choices) {
    if ((x -= w) < 0) return what;
  }
  return choices[choices.length - 1][0];
}

/** The prose workload: one paragraph a call, sentences from the chain above, wrapped at 72 columns. */
function proseSource(seed: number): () => string {
  const r = new Prng(seed);
  let paragraphs = 0;
  const sentence = () => {
    const words: string[] = [];
    let state: WordClass | "start" = "start";
    while (true) {
      const next: WordClass = words.length > 24 ? "end" : weighted(r, NEXT[state]);
      if (next === "end") break;
      words.push(r.skewed(WORDS[next]));
      state = next;
    }
    if (words.length < 3) words.push(r.skewed(WORDS.verb), r.skewed(WORDS.det), r.skewed(WORDS.noun));
    const text = words.join(" ");
    const stop = r.float() < 0.9 ? "." : r.float() < 0.5 ? "?" : "!";
    return text[0].toUpperCase() + text.slice(1) + stop;
  };
  return () => {
    let head = "";
    if (paragraphs++ % 40 === 0) head = `Chapter ${Math.floor(paragraphs / 40) + 1}\n\n`;
    const sentences = Array.from({ length: r.between(3, 8) }, sentence).join(" ");
    const lines: string[] = [];
    let line = "";
    for (const word of sentences.split(" ")) {
      if (line !== "" && line.length + 1 + word.length > 72) {
        lines.push(line);
        line = word;
      } else line = line === "" ? word : `${line} ${word}`;
    }
    lines.push(line);
    return `${head}${lines.join("\n")}\n\n`;
  };
}

/** `bytes` bytes of workload `kind` from `seed`: the same bytes for the same arguments, always. Text is
 * ASCII, cut off at `bytes` (the last record may be cut). */
export function generate(kind: StreamKind, seed: number, bytes: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes);
  if (kind === "random") {
    const r = new Prng(seed);
    const whole = bytes & ~3;
    const words = new Uint32Array(out.buffer, 0, whole / 4);
    for (let i = 0; i < words.length; i++) words[i] = r.next();
    for (let i = whole; i < bytes; i++) out[i] = r.next() & 0xff;
    return out;
  }
  const source = kind === "http"
    ? httpSource(seed)
    : kind === "syslog"
    ? syslogSource(seed)
    : proseSource(seed);
  const encoder = new TextEncoder();
  let at = 0;
  while (at < bytes) at += encoder.encodeInto(source(), out.subarray(at)).written;
  return out;
}

/**
 * How much of `data` a per-frame compressor leaves: `data` cut into pieces of `frame` bytes, each given
 * to `compress` on its own (which returns its compressed size, or 0 when it did not shrink, as the stage
 * then sends it raw), with `codeBytes` added per piece. A reference for the stateless stage's best case on
 * the payload alone (the tunnel's frames carry TCP/IP headers too).
 */
export function frameRatio(
  data: Uint8Array,
  frame: number,
  compress: (piece: Uint8Array) => number,
  codeBytes = 1,
): number {
  let out = 0;
  for (let at = 0; at < data.length; at += frame) {
    const piece = data.subarray(at, Math.min(data.length, at + frame));
    const size = compress(piece);
    out += (size > 0 && size < piece.length ? size : piece.length) + codeBytes;
  }
  return data.length === 0 ? 0 : out / data.length;
}

// ------------------------------------------------------------------------------------ measurements ---

/** One workload measured in one mode. Bytes are deltas over the workload; null where not measured. */
export interface Measurement {
  workload: WorkloadName;
  status: "ok" | "fail";
  note: string;
  /** The application's payload: the bytes the sender wrote (iperf3: its sum_sent bytes). */
  payloadBytes: number;
  /** The sending circuit's txBytes and txPackets (inner frames, headers included). */
  txBytes: number;
  txPackets: number;
  /** The stage's compressIn, compressOut, sentUncompressed, compressionPauses; null when it is off. */
  compressIn: number | null;
  compressOut: number | null;
  sentUncompressed: number | null;
  compressionPauses: number | null;
  /**
   * The sending side's veth TX bytes and packets (the underlay as the kernel counts it). A UDP GSO
   * message counts once, with one set of headers for all its datagrams, so where VELA sends frames in
   * GSO batches (all of one size: uncompressed ones) the headers are mostly not counted.
   */
  wireBytes: number;
  wirePackets: number;
  /** What the frames make as datagrams on an Ethernet wire: the stage's output (or txBytes when off)
   * and per frame a vid byte, UDP, IPv4 and Ethernet headers (1 + 8 + 20 + 14 bytes). */
  datagramBytes: number;
  /** Receiver's time from accept to the end of the stream (iperf3: its receiver seconds). */
  seconds: number;
  /** Application payload in Mbit/s (iperf3: its receiver's bits_per_second). */
  mbps: number;
  /** CPU time of both vela processes, all threads (/proc/PID/task/TID/schedstat, nanoseconds). */
  cpuSeconds: number;
  /** The same from utime + stime in /proc/PID/stat (clock ticks, as bench/peers.sh reads it). */
  cpuStatSeconds: number;
  cpuPerGB: number | null;
  /** The sha256 of the stream: "ok" when the receiver's matched the sender's and the generator's. */
  sha: "ok" | "mismatch" | null;
  /** iperf3's retransmits. */
  retransmits?: number;
  /** Every numeric field of `vela status --json` for the circuit that changed, near (a) and far (b) end;
   * drops as drops.REASON. */
  near?: Record<string, number>;
  far?: Record<string, number>;
  /** Ratios against the off mode's same workload in the same round: throughput and CPU per GB. */
  throughputVsOff?: number | null;
  cpuVsOff?: number | null;
}

/** One mode in one round: a fresh pair of daemons and every workload. */
export interface ModeRun {
  round: number;
  mode: ModeName;
  args: string[];
  status: "ok" | "skip" | "fail";
  /** Why it was skipped or failed. */
  reason: string;
  /** The circuit's `compression` in vela status, and its MTU. */
  compression: string | null;
  mtu: number | null;
  /** When the mode's bed was made (UTC), and the load average then. */
  started: string;
  load: string;
  /** Whether another process had namespaces (a test, a benchmark) when the mode started or ended, and
   * which other processes used the CPU meanwhile. */
  busy: string;
  /** CPU seconds that processes outside the benchmark used while the mode ran (of 2 × its wall time). */
  otherCpuSeconds: number;
  rows: Measurement[];
}

export const median = (xs: readonly number[]): number => {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** The "compressible mix": the sum of the text workloads' figures (time summed, rates from the sums). */
export function mixRow(rows: readonly Measurement[]): Measurement | null {
  const parts = MIX.map((kind) => rows.find((r) => r.workload === kind));
  if (parts.some((p) => p === undefined || p.status !== "ok")) return null;
  const ps = parts as Measurement[];
  const sum = (f: (m: Measurement) => number) => ps.reduce((s, m) => s + f(m), 0);
  const sumOrNull = (f: (m: Measurement) => number | null) =>
    ps.some((m) => f(m) === null) ? null : sum((m) => f(m)!);
  const payload = sum((m) => m.payloadBytes);
  const seconds = sum((m) => m.seconds);
  const cpu = sum((m) => m.cpuSeconds);
  return {
    workload: "mix",
    status: "ok",
    note: "http + syslog + prose",
    payloadBytes: payload,
    txBytes: sum((m) => m.txBytes),
    txPackets: sum((m) => m.txPackets),
    compressIn: sumOrNull((m) => m.compressIn),
    compressOut: sumOrNull((m) => m.compressOut),
    sentUncompressed: sumOrNull((m) => m.sentUncompressed),
    compressionPauses: sumOrNull((m) => m.compressionPauses),
    wireBytes: sum((m) => m.wireBytes),
    wirePackets: sum((m) => m.wirePackets),
    datagramBytes: sum((m) => m.datagramBytes),
    seconds,
    mbps: seconds > 0 ? (payload * 8) / seconds / 1e6 : 0,
    cpuSeconds: cpu,
    cpuStatSeconds: sum((m) => m.cpuStatSeconds),
    cpuPerGB: payload > 0 ? cpu / (payload / 1e9) : null,
    sha: ps.every((m) => m.sha === "ok") ? "ok" : "mismatch",
  };
}

/** Sets throughputVsOff and cpuVsOff on every row of every run, against the off run of the same round. */
export function addRatios(runs: ModeRun[]): void {
  for (const run of runs) {
    const off = runs.find((r) => r.round === run.round && r.mode === "off" && r.status === "ok");
    for (const row of run.rows) {
      const base = off?.rows.find((r) => r.workload === row.workload && r.status === "ok");
      const ok = row.status === "ok" && base !== undefined;
      row.throughputVsOff = ok && base.mbps > 0 ? row.mbps / base.mbps : null;
      row.cpuVsOff = ok && base.cpuPerGB && row.cpuPerGB !== null ? row.cpuPerGB / base.cpuPerGB : null;
    }
  }
}

/** wire / carried: the underlay's bytes per byte of the application's payload. */
export const wireShare = (m: Measurement): number => m.payloadBytes > 0 ? m.wireBytes / m.payloadBytes : NaN;

// ---------------------------------------------------------------------------------------- targets ---

/** A target: the value of each round must be at least (or at most) `limit`. */
export interface Target {
  name: string;
  kind: "atLeast" | "atMost";
  limit: number;
  /** For atMost: strictly below the limit. */
  strict?: boolean;
  /** How to show a value (e.g. as a percentage). */
  unit: "%" | "x";
}

export interface Verdict {
  target: Target;
  values: number[];
  median: number | null;
  /** The worst single run (the lowest for atLeast, the highest for atMost). */
  worst: number | null;
  /** The bound no single run may pass: 90% of the target. */
  runBound: number;
  met: boolean | null;
  /** Why it was not judged, or what decided it. */
  detail: string;
}

/**
 * The project's rule on this 2-core machine: a target is met when the median of the rounds meets it and
 * no run falls below 90% of it (for an upper limit: no run above limit / 0.9, i.e. each run reaches 90%
 * of the goal). No values: not judged (met null), with `why`.
 */
export function judge(target: Target, values: readonly number[], why = "no runs"): Verdict {
  const runBound = target.kind === "atLeast" ? target.limit * 0.9 : target.limit / 0.9;
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) {
    return { target, values: [...values], median: null, worst: null, runBound, met: null, detail: why };
  }
  const m = median(finite);
  const worst = target.kind === "atLeast" ? Math.min(...finite) : Math.max(...finite);
  const medianOk = target.kind === "atLeast"
    ? m >= target.limit
    : target.strict
    ? m < target.limit
    : m <= target.limit;
  const runsOk = target.kind === "atLeast" ? worst >= runBound : worst <= runBound;
  const show = (v: number) => formatValue(v, target.unit);
  const detail = [
    `median ${show(m)} ${medianOk ? "meets" : "misses"} ${
      target.kind === "atLeast" ? "≥" : target.strict ? "<" : "≤"
    } ${show(target.limit)}`,
    `worst run ${show(worst)} ${runsOk ? "within" : "beyond"} the 90% bound ${show(runBound)}`,
  ].join("; ");
  return { target, values: [...values], median: m, worst, runBound, met: medianOk && runsOk, detail };
}

export function formatValue(v: number, unit: "%" | "x"): string {
  return unit === "%" ? `${(v * 100).toFixed(1)}%` : `${v.toFixed(3)}`;
}

/** The targets of issue 20, judged on the runs that were made. */
export function evaluateTargets(runs: readonly ModeRun[], modes: readonly ModeName[]): Verdict[] {
  const okRuns = (mode: ModeName) => runs.filter((r) => r.mode === mode && r.status === "ok");
  const rowOf = (run: ModeRun | undefined, w: WorkloadName) =>
    run?.rows.find((r) => r.workload === w && r.status === "ok");
  const notRun = (mode: ModeName) => {
    if (!modes.includes(mode)) return `${mode} was not asked for (--modes)`;
    const skipped = runs.find((r) => r.mode === mode && r.status !== "ok");
    return skipped ? `${mode} did not run: ${skipped.reason}` : `${mode} has no complete run`;
  };
  const verdicts: Verdict[] = [];
  const dictionary = okRuns("dictionary");
  verdicts.push(judge(
    { name: "dictionary: compressible mix, wire ≤ 60% of carried", kind: "atMost", limit: 0.6, unit: "%" },
    dictionary.map((r) => rowOf(r, "mix")).filter((m) => m !== undefined).map(wireShare),
    notRun("dictionary"),
  ));
  const pairs = dictionary.map((
    d,
  ) => [rowOf(d, "mix"), rowOf(okRuns("stateless").find((s) => s.round === d.round), "mix")])
    .filter(([d, s]) => d && s) as [Measurement, Measurement][];
  verdicts.push(judge(
    {
      name: "dictionary: compressible mix, wire below stateless (dictionary / stateless wire)",
      kind: "atMost",
      limit: 1,
      strict: true,
      unit: "x",
    },
    pairs.map(([d, s]) => wireShare(d) / wireShare(s)),
    dictionary.length === 0 ? notRun("dictionary") : notRun("stateless"),
  ));
  for (const mode of MODE_NAMES.filter((m) => m !== "off")) {
    const values = okRuns(mode).map((r) => rowOf(r, "iperf3")?.throughputVsOff)
      .filter((v): v is number => typeof v === "number");
    verdicts.push(judge(
      {
        name: `${mode}: incompressible (iperf3 TCP), throughput ≥ 95% of off`,
        kind: "atLeast",
        limit: 0.95,
        unit: "x",
      },
      values,
      okRuns(mode).length === 0
        ? notRun(mode)
        : okRuns("off").length === 0
        ? notRun("off")
        : "no iperf3 pair",
    ));
  }
  return verdicts;
}

// ------------------------------------------------------------------------------------------ tables ---

const MIB = 1024 * 1024;
export const COLUMNS = [
  "round",
  "mode",
  "workload",
  "carried MiB",
  "txBytes MiB",
  "stage out MiB",
  "wire MiB",
  "wire/carried %",
  "Mbit/s",
  "CPU s/GB",
  "thr vs off",
  "CPU vs off",
  "note",
];
/** Columns aligned right (the numbers). */
const NUMERIC = new Set([0, 3, 4, 5, 6, 7, 8, 9, 10, 11]);

const fixed = (v: number | null | undefined, digits: number) =>
  v === null || v === undefined || !Number.isFinite(v) ? "-" : v.toFixed(digits);

/** One row's cells after the round, mode and workload; `share` is the wire/carried column (a median row
 * gives the median of the rounds' shares). */
export function measurementCells(m: Measurement, share = wireShare(m)): string[] {
  if (m.status !== "ok") return [...blank(9), `FAIL: ${m.note}`];
  return [
    fixed(m.payloadBytes / MIB, 2),
    fixed(m.txBytes / MIB, 2),
    m.compressOut === null ? "-" : fixed(m.compressOut / MIB, 2),
    fixed(m.wireBytes / MIB, 2),
    fixed(share * 100, 1),
    fixed(m.mbps, 0),
    fixed(m.cpuPerGB, 2),
    fixed(m.throughputVsOff, 2),
    fixed(m.cpuVsOff, 2),
    m.note,
  ];
}

const blank = (n: number) => Array.from({ length: n }, () => "");

function orderedRows(run: ModeRun): Measurement[] {
  return WORKLOAD_ORDER.map((w) => run.rows.find((r) => r.workload === w)).filter((r) => r !== undefined);
}

/** Every run's rows, in the order they ran; a mode that was skipped or failed gets a row with the reason. */
export function runCells(runs: readonly ModeRun[]): string[][] {
  const cells: string[][] = [];
  for (const run of runs) {
    for (const row of orderedRows(run)) {
      cells.push([String(run.round), run.mode, row.workload, ...measurementCells(row)]);
    }
    if (run.status !== "ok") {
      const what = run.status === "skip" ? "skipped" : "FAILED";
      cells.push([String(run.round), run.mode, "-", ...blank(9), `${what}: ${run.reason}`]);
    }
  }
  return cells;
}

export const RUN_COLUMNS = [
  "round",
  "mode",
  "started (UTC)",
  "load",
  "others' CPU s",
  "compression",
  "MTU",
  "status",
  "note",
];
export const RUN_NUMERIC: ReadonlySet<number> = new Set([0, 4, 6]);

/** One line per mode run: when, how loaded the machine was, what the circuit said, what went wrong. */
export function runInfoCells(runs: readonly ModeRun[]): string[][] {
  return runs.map((r) => [
    String(r.round),
    r.mode,
    r.started.replace(/\.\d+Z$/, "Z"),
    r.load,
    fixed(r.otherCpuSeconds, 1),
    r.compression ?? "-",
    r.mtu === null ? "-" : String(r.mtu),
    r.status,
    [r.reason, r.busy].filter(Boolean).join("; "),
  ]);
}

/** Per mode and workload: the median of each figure over the rounds that measured it. */
export interface MedianRow {
  mode: ModeName;
  rounds: number;
  /** The median of the rounds' wire/carried shares (not a ratio of two medians). */
  wireShare: number;
  row: Measurement;
}

export function medianRows(runs: readonly ModeRun[]): MedianRow[] {
  const out: MedianRow[] = [];
  for (const mode of MODE_NAMES) {
    for (const workload of WORKLOAD_ORDER) {
      const rows = runs.filter((r) => r.mode === mode).flatMap((r) => r.rows)
        .filter((r) => r.workload === workload && r.status === "ok");
      if (rows.length === 0) continue;
      const med = (f: (m: Measurement) => number | null | undefined) => {
        const xs = rows.map(f).filter((v): v is number => typeof v === "number" && Number.isFinite(v));
        return xs.length === 0 ? null : median(xs);
      };
      const payload = med((m) => m.payloadBytes)!;
      out.push({
        mode,
        rounds: rows.length,
        wireShare: med((m) => wireShare(m)) ?? NaN,
        row: {
          workload,
          status: "ok",
          note: rows.some((r) => r.sha === "mismatch")
            ? "SHA MISMATCH in a round"
            : `median of ${rows.length}`,
          payloadBytes: payload,
          txBytes: med((m) => m.txBytes)!,
          txPackets: med((m) => m.txPackets)!,
          compressIn: med((m) => m.compressIn),
          compressOut: med((m) => m.compressOut),
          sentUncompressed: med((m) => m.sentUncompressed),
          compressionPauses: med((m) => m.compressionPauses),
          wireBytes: med((m) => m.wireBytes)!,
          wirePackets: med((m) => m.wirePackets)!,
          datagramBytes: med((m) => m.datagramBytes)!,
          seconds: med((m) => m.seconds)!,
          mbps: med((m) => m.mbps)!,
          cpuSeconds: med((m) => m.cpuSeconds)!,
          cpuStatSeconds: med((m) => m.cpuStatSeconds)!,
          cpuPerGB: med((m) => m.cpuPerGB),
          sha: rows.every((r) => r.sha === "ok")
            ? "ok"
            : rows.some((r) => r.sha === "mismatch")
            ? "mismatch"
            : null,
          throughputVsOff: med((m) => m.throughputVsOff),
          cpuVsOff: med((m) => m.cpuVsOff),
        },
      });
    }
  }
  return out;
}

export function medianCells(runs: readonly ModeRun[]): string[][] {
  return medianRows(runs).map((
    m,
  ) => ["median", m.mode, m.row.workload, ...measurementCells(m.row, m.wireShare)]);
}

function mdEscape(text: string): string {
  return text.replace(/([\\|*`<>\[\]])/g, "\\$1");
}

/** A Markdown table of `cells` under `columns`, the columns in `right` (the numbers) aligned right. */
export function markdownTable(
  columns: readonly string[],
  cells: readonly string[][],
  right: ReadonlySet<number> = NUMERIC,
): string {
  return [
    `| ${columns.map(mdEscape).join(" | ")} |`,
    `| ${columns.map((_, i) => right.has(i) ? "---:" : "---").join(" | ")} |`,
    ...cells.map((row) => `| ${row.map((c) => mdEscape(c) || " ").join(" | ")} |`),
  ].join("\n");
}

/** The same as plain text in columns, for the terminal. */
export function textTable(
  columns: readonly string[],
  cells: readonly string[][],
  right: ReadonlySet<number> = NUMERIC,
): string {
  const all = [[...columns], ...cells];
  const widths = columns.map((_, i) => Math.max(...all.map((row) => (row[i] ?? "").length)));
  return all.map((row) =>
    row.map((cell, i) =>
      i === row.length - 1 ? cell : right.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i])
    ).join("  ").trimEnd()
  ).join("\n");
}

export function verdictLines(verdicts: readonly Verdict[]): string[] {
  return verdicts.map((v) => {
    const state = v.met === null ? "not judged" : v.met ? "met" : "NOT met";
    const runs = v.values.length > 0
      ? `; runs ${v.values.map((x) => formatValue(x, v.target.unit)).join(", ")}`
      : "";
    return `- ${v.target.name}: **${state}** (${v.detail}${runs})`;
  });
}

// ------------------------------------------------------------------------------------------ options ---

export interface Options {
  modes: ModeName[];
  mib: number;
  rounds: number;
  quick: boolean;
  iperfSeconds: number;
  /** How long each mode waits for other processes' namespaces to go before it starts anyway. */
  quietWaitMs: number;
}

export const USAGE =
  `Usage: deno task bench:compression [--modes off,stateless,dictionary] [--mib N] [--rounds R] [--quick]

  --modes a,b,c  the modes to measure, in this order in odd rounds (reversed in even ones); default all of
                 ${MODE_NAMES.join(",")} (a mode whose daemon does not start is skipped with the reason)
  --mib N        MiB per workload (default 16; 2 with --quick)
  --rounds R     repeat everything R times, alternating the order of the modes (default 3; 1 with --quick)
  --quick        a short check: 2 MiB, 1 round, iperf3 for 2 s, no waiting for other tests; writes into a
                 temporary directory, never into bench/results/
Needs root (network namespaces). Writes bench/results/<stamp>-compression.{json,md} and latest-compression.*.`;

/** The command line as Options, or a message saying what is wrong. */
export function parseOptions(argv: string[]): Options | string {
  let values;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        modes: { type: "string" },
        mib: { type: "string" },
        rounds: { type: "string" },
        quick: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (error) {
    return (error as Error).message.split("\n")[0];
  }
  if (values.help) return "help";
  const quick = values.quick ?? false;
  const modes = (values.modes ?? MODE_NAMES.join(",")).split(",").map((m) => m.trim()).filter(Boolean);
  const unknown = modes.filter((m) => !MODE_NAMES.includes(m as ModeName));
  if (unknown.length > 0) return `unknown mode ${unknown.join(", ")} (the modes: ${MODE_NAMES.join(", ")})`;
  if (modes.length === 0) return "--modes names no mode";
  if (new Set(modes).size !== modes.length) return "--modes names a mode twice";
  const positive = (text: string | undefined, fallback: number, what: string): number | string => {
    if (text === undefined) return fallback;
    const n = Number(text);
    return Number.isInteger(n) && n > 0 && n <= 4096
      ? n
      : `${what} takes a whole number from 1 to 4096, not "${text}"`;
  };
  const mib = positive(values.mib, quick ? 2 : 16, "--mib");
  if (typeof mib === "string") return mib;
  const rounds = positive(values.rounds, quick ? 1 : 3, "--rounds");
  if (typeof rounds === "string") return rounds;
  return {
    modes: modes as ModeName[],
    mib,
    rounds,
    quick,
    iperfSeconds: quick ? 2 : 5,
    quietWaitMs: quick ? 0 : 600_000,
  };
}

/** The modes of round `round` (1-based): as given in odd rounds, reversed in even ones. */
export function roundOrder(modes: readonly ModeName[], round: number): ModeName[] {
  return round % 2 === 1 ? [...modes] : [...modes].reverse();
}

// ------------------------------------------------------------------- sender and receiver (in netns) ---

const SELF = new URL(import.meta.url).pathname;
/** The largest read and write of the sender and the receiver. */
const IO_CHUNK = 1 << 20;

/**
 * `serve PORT BYTES`: takes one connection and reads it to the end into a buffer made (and touched)
 * beforehand, so that neither hashing nor page faults slow the stream down; then prints
 * {bytes, sha256, seconds}, the time from accept to the end of the stream, and the sha256 of the first
 * BYTES bytes (more than BYTES are counted, not kept).
 */
async function serveMain(port: number, expected: number): Promise<void> {
  const buffer = new Uint8Array(expected + IO_CHUNK);
  buffer.fill(1);
  const listener = Deno.listen({ hostname: "0.0.0.0", port });
  console.log(JSON.stringify({ listening: true }));
  const connection = await listener.accept();
  const started = performance.now();
  let bytes = 0;
  while (true) {
    const at = Math.min(bytes, expected);
    const n = await connection.read(buffer.subarray(at, at + IO_CHUNK));
    if (n === null) break;
    bytes += n;
  }
  const seconds = (performance.now() - started) / 1000;
  connection.close();
  listener.close();
  console.log(
    JSON.stringify({ bytes, sha256: sha256(buffer.subarray(0, Math.min(bytes, expected))), seconds }),
  );
}

/** `send HOST PORT KIND SEED BYTES`: makes the stream, prints {ready, sha256}, waits for SIGUSR1, sends
 * it over one connection, prints {bytes, sha256, seconds}. */
async function sendMain(host: string, port: number, kind: StreamKind, seed: number, bytes: number) {
  const data = generate(kind, seed, bytes);
  const digest = sha256(data);
  const go = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGUSR1", () => go.resolve());
  console.log(JSON.stringify({ ready: true, sha256: digest }));
  await go.promise;
  const started = performance.now();
  const connection = await Deno.connect({ hostname: host, port });
  let at = 0;
  while (at < data.length) {
    at += await connection.write(data.subarray(at, Math.min(data.length, at + IO_CHUNK)));
  }
  await connection.closeWrite();
  // Wait for the receiver's close, so that every byte was read before this process says it is done.
  await connection.read(new Uint8Array(1)).catch(() => null);
  connection.close();
  console.log(JSON.stringify({ bytes: at, sha256: digest, seconds: (performance.now() - started) / 1000 }));
  Deno.exit(0);
}

/** The sha256 of `data` in hex (fed in pieces: node:crypto is several times faster so). */
export function sha256(data: Uint8Array): string {
  const hash = createHash("sha256");
  for (let at = 0; at < data.length; at += 65_536) hash.update(data.subarray(at, at + 65_536));
  return hash.digest("hex");
}

// ---------------------------------------------------------------------------------- the orchestrator ---

const PROJECT_DIR = new URL("..", import.meta.url).pathname;
const RESULTS_DIR = new URL("./results", import.meta.url).pathname;
/** bench/peers.sh's lock: no two benchmarks measure at once. */
const LOCK = "/tmp/bench.lock";
const NEAR = "198.18.207.1";
const FAR = "198.18.207.2";
const LISTEN = ["--listen", "--allow", "198.18.0.0/15"];
const DENO = Deno.execPath();
/** Per frame on an IPv4 underlay over Ethernet: the vid byte, UDP, IPv4 and Ethernet headers. */
const DATAGRAM_OVERHEAD = 1 + 8 + 20 + 14;
/** The first of the ports the receivers listen on in b (one per stream, so that none waits for TIME_WAIT). */
const FIRST_PORT = 5300;

let clockTicks = 100;

/** The last line of `text` that is a JSON object. */
function lastJson(text: string): Record<string, unknown> | null {
  for (const line of text.trim().split("\n").reverse()) {
    try {
      const parsed = JSON.parse(line);
      if (parsed && typeof parsed === "object") return parsed;
    } catch {
      // Not a JSON line.
    }
  }
  return null;
}

/** A process and its descendants (vela's Workers are threads; `ip netns exec` execs, but count any child). */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry.name)]);
    } catch {
      // Gone.
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    for (const child of children.get(pid) ?? []) walk(child);
  };
  walk(root);
  return out;
}

/** CPU time of `pids`: [nanoseconds on CPU summed over every thread (schedstat), utime + stime ticks]. */
function cpuOf(pids: readonly number[]): [number, number] {
  let ns = 0;
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
      for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
        try {
          ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/schedstat`).split(" ")[0]);
        } catch {
          // The thread ended.
        }
      }
    } catch {
      // Gone.
    }
  }
  return [ns, ticks];
}

/** Every numeric field of a circuit's status, drops flattened as drops.REASON. */
export function numericFields(circuit: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(circuit)) {
    if (typeof value === "number") out[key] = value;
    else if (key === "drops" && value && typeof value === "object") {
      for (const [reason, n] of Object.entries(value)) if (typeof n === "number") out[`drops.${reason}`] = n;
    }
  }
  return out;
}

/** after - before for every field that changed (a field new in `after` counts from 0). */
export function fieldDeltas(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    if (/Seconds$|Ms$/.test(key)) continue;
    const d = value - (before[key] ?? 0);
    if (d !== 0) out[key] = d;
  }
  return out;
}

async function circuitStatus(
  bed: Bed,
  ns: string,
  daemon: BedProcess,
): Promise<Record<string, unknown> | null> {
  const shown = await bed.velaCommand(ns, ["status", "--control", daemon.control!, "--json"]);
  if (shown.code !== 0) return null;
  const circuits = (JSON.parse(shown.stdout).circuits ?? []) as Record<string, unknown>[];
  return circuits.find((c) => c.vid === 3) ?? circuits[0] ?? null;
}

async function vethTx(ns: string, dev: string): Promise<{ bytes: number; packets: number }> {
  const shown = await run(["ip", "-n", ns, "-s", "-j", "link", "show", dev], { check: true });
  return JSON.parse(shown.stdout)[0].stats64.tx;
}

interface Snapshot {
  near: Record<string, number>;
  far: Record<string, number>;
  wire: { bytes: number; packets: number };
  cpuNs: number;
  ticks: number;
}

/** Reads the counters around one workload, with both daemons' status queries outside the CPU window. */
class Measurer {
  constructor(
    readonly bed: Bed,
    readonly initiator: BedProcess,
    readonly listener: BedProcess,
    readonly pids: number[],
  ) {}

  async #status(): Promise<[Record<string, number>, Record<string, number>]> {
    const near = await circuitStatus(this.bed, this.bed.a, this.initiator);
    const far = await circuitStatus(this.bed, this.bed.b, this.listener);
    if (!near || !far) {
      throw new Error(
        `vela status failed (${near ? "listener" : "initiator"}): ${
          (near ? this.listener : this.initiator).output().slice(-1500)
        }`,
      );
    }
    return [numericFields(near), numericFields(far)];
  }

  /** Status, veth counters, then CPU. */
  async before(): Promise<Snapshot> {
    const [near, far] = await this.#status();
    const wire = await vethTx(this.bed.a, this.bed.vethA);
    const [cpuNs, ticks] = cpuOf(this.pids);
    return { near, far, wire, cpuNs, ticks };
  }

  /** CPU, veth counters, then status. */
  async after(): Promise<Snapshot> {
    const [cpuNs, ticks] = cpuOf(this.pids);
    const wire = await vethTx(this.bed.a, this.bed.vethA);
    const [near, far] = await this.#status();
    return { near, far, wire, cpuNs, ticks };
  }

  static delta(
    before: Snapshot,
    after: Snapshot,
    workload: WorkloadName,
    payload: number,
    seconds: number,
    mbps: number,
  ): Measurement {
    const near = fieldDeltas(before.near, after.near);
    const far = fieldDeltas(before.far, after.far);
    const stage = (key: string) => key in after.near ? near[key] ?? 0 : null;
    const cpuSeconds = (after.cpuNs - before.cpuNs) / 1e9;
    const notes: string[] = [];
    const farDrops = Object.entries(far).filter(([k, v]) => k.startsWith("drops.") && v > 0);
    if (farDrops.length > 0) {
      notes.push(`far end dropped ${farDrops.map(([k, v]) => `${v} ${k.slice(6)}`).join(", ")}`);
    }
    // The two ends are read one after the other, so a keepalive's or an ACK's frame may fall between:
    // only a difference beyond that is worth a note.
    const lost = (near.txBytes ?? 0) - (far.rxBytes ?? 0);
    if (Math.abs(lost) > Math.max(16_384, 0.001 * (near.txBytes ?? 0))) {
      notes.push(`far rxBytes ${far.rxBytes ?? 0}, near txBytes ${near.txBytes ?? 0}`);
    }
    return {
      workload,
      status: "ok",
      note: notes.join("; "),
      payloadBytes: payload,
      txBytes: near.txBytes ?? 0,
      txPackets: near.txPackets ?? 0,
      compressIn: stage("compressIn"),
      compressOut: stage("compressOut"),
      sentUncompressed: stage("sentUncompressed"),
      compressionPauses: stage("compressionPauses"),
      wireBytes: after.wire.bytes - before.wire.bytes,
      wirePackets: after.wire.packets - before.wire.packets,
      datagramBytes: (stage("compressOut") ?? near.txBytes ?? 0) + (near.txPackets ?? 0) * DATAGRAM_OVERHEAD,
      seconds,
      mbps,
      cpuSeconds,
      cpuStatSeconds: (after.ticks - before.ticks) / clockTicks,
      cpuPerGB: payload > 0 ? cpuSeconds / (payload / 1e9) : null,
      sha: null,
      near,
      far,
    };
  }
}

/** Runs `fn` holding /tmp/bench.lock (flock), as bench/peers.sh does around each measurement. */
async function locked<T>(fn: () => Promise<T>): Promise<T> {
  const file = await Deno.open(LOCK, { create: true, write: true });
  try {
    const waiting = setTimeout(() => console.error(`bench:compression: waiting for ${LOCK}`), 2000);
    await file.lock(true);
    clearTimeout(waiting);
    return await fn();
  } finally {
    file.close();
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`${what}: no end in ${ms / 1000} s`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One stream from a to b through the circuit, sha256 checked against the sender's and the generator's. */
async function measureStream(
  m: Measurer,
  stream: { kind: StreamKind; seed: number },
  bytes: number,
  expected: string,
  port: number,
): Promise<Measurement> {
  const { bed } = m;
  const self = ["run", "-A", "--quiet", SELF];
  const server = bed.spawn(bed.b, [DENO, ...self, "serve", String(port), String(bytes)]);
  const sender = bed.spawn(bed.a, [
    DENO,
    ...self,
    "send",
    FAR,
    String(port),
    stream.kind,
    String(stream.seed),
    String(bytes),
  ]);
  await bed.until(
    () => Promise.resolve(server.output().includes('"listening"') && sender.output().includes('"ready"')),
    `the ${stream.kind} receiver and sender to be ready`,
    60_000,
  );
  return await locked(async () => {
    const before = await m.before();
    sender.child.kill("SIGUSR1");
    const [sent, received] = await withTimeout(
      Promise.all([sender.status, server.status]),
      180_000,
      `the ${stream.kind} stream`,
    ).catch(async (error) => {
      await Promise.all([bed.stop(sender, "SIGKILL"), bed.stop(server, "SIGKILL")]);
      throw error;
    });
    const after = await m.after();
    const wrote = lastJson(sender.output());
    const got = lastJson(server.output());
    if (!sent.success || !received.success || !wrote || !got) {
      throw new Error(
        `the ${stream.kind} stream failed: sender exit ${sent.code}: ${
          sender.output().slice(-600)
        }; receiver exit ${received.code}: ${server.output().slice(-600)}`,
      );
    }
    const seconds = Number(got.seconds);
    const row = Measurer.delta(before, after, stream.kind, bytes, seconds, (bytes * 8) / seconds / 1e6);
    const intact = got.bytes === bytes && got.sha256 === wrote.sha256 && wrote.sha256 === expected;
    if (!intact) {
      const mismatch =
        `SHA MISMATCH: sent ${wrote.bytes} bytes, sha256 ${wrote.sha256} (the generator's ${expected}); received ${got.bytes} bytes, sha256 ${got.sha256}`;
      console.error(`bench:compression: !!! ${mismatch} !!!`);
      row.note = [mismatch, row.note].filter(Boolean).join("; ");
    }
    return { ...row, sha: intact ? "ok" : "mismatch" };
  });
}

/** iperf3 TCP a to b for `seconds` (its payload is random, so incompressible). */
async function measureIperf3(m: Measurer, seconds: number): Promise<Measurement> {
  const { bed } = m;
  const server = bed.spawn(bed.b, ["iperf3", "-s", "-1", "-B", FAR]);
  await bed.until(
    async () => (await bed.exec(bed.b, ["ss", "-ltn", "sport = :5201"])).stdout.includes("5201"),
    "iperf3 -s",
  );
  return await locked(async () => {
    const before = await m.before();
    const client = await bed.exec(bed.a, [
      "iperf3",
      "-c",
      FAR,
      "-t",
      String(seconds),
      "-J",
      "--connect-timeout",
      "3000",
    ]);
    const after = await m.after();
    await withTimeout(server.status, 10_000, "iperf3 -s").catch(() => bed.stop(server));
    let report;
    try {
      report = JSON.parse(client.stdout);
    } catch {
      throw new Error(`iperf3 gave no JSON (exit ${client.code}): ${client.stderr.slice(-500)}`);
    }
    if (report.error) throw new Error(`iperf3: ${report.error}`);
    const sent = report.end.sum_sent;
    const received = report.end.sum_received;
    const row = Measurer.delta(
      before,
      after,
      "iperf3",
      sent.bytes,
      received.seconds,
      received.bits_per_second / 1e6,
    );
    const note = `iperf3 -t ${seconds}, ${sent.retransmits} retransmits`;
    return { ...row, retransmits: sent.retransmits, note: [note, row.note].filter(Boolean).join("; ") };
  });
}

/** Starts both daemons of `mode` and waits for the circuit; a string says why they did not come up. */
async function startDaemons(
  bed: Bed,
  mode: ModeName,
): Promise<{ initiator: BedProcess; listener: BedProcess; circuit: Record<string, unknown> } | string> {
  const extra = [...MODES[mode].args];
  const listenerArgs = [...LISTEN, ...extra];
  const initiatorArgs = ["--peer", bed.b4, "--vid", "3", "--address", `${NEAR}/30`, ...extra];
  const listener = bed.vela(bed.b, listenerArgs);
  const initiator = bed.vela(bed.a, initiatorArgs);
  const exited = (name: string, args: string[], p: BedProcess) =>
    p.status.then((s) =>
      `the ${name} (vela ${args.join(" ")}) exited ${s.code}: ${
        p.output().trim().split("\n").slice(-2).join(" / ").slice(0, 400)
      }`
    );
  let circuit: Record<string, unknown> | null = null;
  let done = false;
  const up = (async () => {
    const deadline = Date.now() + 30_000;
    while (!done && Date.now() < deadline) {
      circuit = await circuitStatus(bed, bed.a, initiator).catch(() => null);
      if (circuit?.state === "established") return null;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return `the circuit was not established in 30 s: ${initiator.output().slice(-600)}`;
  })();
  const why = await Promise.race([
    up,
    exited("listener", listenerArgs, listener),
    exited("initiator", initiatorArgs, initiator),
  ]);
  done = true;
  if (why !== null) return why;
  return { initiator, listener, circuit: circuit! };
}

function failed(workload: WorkloadName, note: string): Measurement {
  return {
    workload,
    status: "fail",
    note: note.replace(/\s+/g, " ").slice(0, 600),
    payloadBytes: 0,
    txBytes: 0,
    txPackets: 0,
    compressIn: null,
    compressOut: null,
    sentUncompressed: null,
    compressionPauses: null,
    wireBytes: 0,
    wirePackets: 0,
    datagramBytes: 0,
    seconds: 0,
    mbps: 0,
    cpuSeconds: 0,
    cpuStatSeconds: 0,
    cpuPerGB: null,
    sha: null,
  };
}

const shaCache = new Map<string, string>();
/** The sha256 of a generated stream (the receiver's must be this). */
function expectedSha(kind: StreamKind, seed: number, bytes: number): string {
  const key = `${kind}/${seed}/${bytes}`;
  let sha = shaCache.get(key);
  if (!sha) shaCache.set(key, sha = sha256(generate(kind, seed, bytes)));
  return sha;
}

/** One mode in one round: a new bed, both daemons, a warm-up stream, then every workload. */
async function runMode(
  mode: ModeName,
  round: number,
  options: Options,
  onBed: (bed: Bed | undefined) => void,
): Promise<ModeRun> {
  const result: ModeRun = {
    round,
    mode,
    args: [...MODES[mode].args],
    status: "ok",
    reason: "",
    compression: null,
    mtu: null,
    busy: await waitForQuiet(options.quietWaitMs),
    started: new Date().toISOString(),
    load: (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" "),
    otherCpuSeconds: 0,
    rows: [],
  };
  const say = (what: string) => console.error(`bench:compression: round ${round}, ${mode}: ${what}`);
  const ticksBefore = processTicks();
  const bed = await Bed.create();
  onBed(bed);
  try {
    const started = await startDaemons(bed, mode);
    if (typeof started === "string") {
      result.status = "skip";
      result.reason = started;
      return result;
    }
    result.compression = String(started.circuit.compression ?? "?");
    result.mtu = Number(started.circuit.mtu) || null;
    if (result.compression !== MODES[mode].compression) {
      result.status = "skip";
      result.reason = `the circuit came up with compression "${result.compression}", not "${
        MODES[mode].compression
      }": not measured as ${mode}`;
      return result;
    }
    await bed.waitPing(bed.a, FAR);
    const exitCodes = new Map<BedProcess, number>();
    for (const p of [started.initiator, started.listener]) p.status.then((s) => exitCodes.set(p, s.code));
    const pids = [...processTree(started.initiator.pid), ...processTree(started.listener.pid)];
    const m = new Measurer(bed, started.initiator, started.listener, pids);
    const bytes = options.mib * MIB;
    let port = FIRST_PORT;
    // Not measured: the daemons' hot paths compiled, the TCP paths warm, before the first figure.
    say("warm-up (1 MiB of prose, not measured)");
    await measureStream(m, { kind: "prose", seed: 1 }, MIB, expectedSha("prose", 1, MIB), port++);
    for (const stream of STREAMS) {
      say(`${stream.kind} (${options.mib} MiB)`);
      try {
        result.rows.push(
          await measureStream(m, stream, bytes, expectedSha(stream.kind, stream.seed, bytes), port++),
        );
      } catch (error) {
        result.rows.push(failed(stream.kind, (error as Error).message));
      }
    }
    const mix = mixRow(result.rows);
    if (mix) result.rows.push(mix);
    say(`iperf3 TCP (${options.iperfSeconds} s)`);
    try {
      result.rows.push(await measureIperf3(m, options.iperfSeconds));
    } catch (error) {
      result.rows.push(failed("iperf3", (error as Error).message));
    }
    for (const [name, p] of [["listener", started.listener], ["initiator", started.initiator]] as const) {
      const code = exitCodes.get(p);
      if (code !== undefined) {
        result.status = "fail";
        result.reason = `the ${name} exited ${code} during the run: ${p.output().slice(-600)}`;
      }
    }
    return result;
  } catch (error) {
    result.status = "fail";
    result.reason = (error as Error).message.slice(0, 2000);
    return result;
  } finally {
    const others = await othersCpu(ticksBefore, bed).catch(() => ({ seconds: NaN, top: "" }));
    result.otherCpuSeconds = others.seconds;
    if (others.top) result.busy = [result.busy, `others used ${others.top}`].filter(Boolean).join("; ");
    await bed.destroy();
    onBed(undefined);
    const after = await otherBeds();
    if (after.length > 0) {
      result.busy = [result.busy, `at the end: ${after.join(", ")}`].filter(Boolean).join("; ");
    }
  }
}

/**
 * Other users of this machine's namespaces (a namespace test, another benchmark): the names of network
 * namespaces that the testbed or bench/peers.sh made for another process. A run during one is noisier.
 */
async function otherBeds(): Promise<string[]> {
  const listed = await run(["ip", "netns", "list"]);
  return listed.stdout.split("\n").map((line) => line.split(" ")[0])
    .filter((name) => /^(vela|pb)-\d+-/.test(name) && !name.startsWith(`vela-${Deno.pid}-`));
}

/** Waits up to `ms` while another process has namespaces; says how long it waited and what stayed. */
async function waitForQuiet(ms: number): Promise<string> {
  const started = Date.now();
  let others = await otherBeds();
  if (others.length === 0) return "";
  console.error(`bench:compression: other namespaces (${others.join(", ")}): waiting up to ${ms / 1000} s`);
  while (others.length > 0 && Date.now() - started < ms) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    others = await otherBeds();
  }
  const waited = `waited ${Math.round((Date.now() - started) / 1000)} s for another process's namespaces`;
  return others.length > 0 ? `${waited}, still there: ${others.join(", ")}` : waited;
}

/** CPU ticks (utime + stime) of every user-space process, with its command line. */
function processTicks(): Map<number, { ticks: number; command: string }> {
  const out = new Map<number, { ticks: number; command: string }>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[1] === "2" || entry.name === "2") continue; // a kernel thread
      const command = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ").trim();
      if (command === "") continue;
      out.set(Number(entry.name), { ticks: Number(fields[11]) + Number(fields[12]), command });
    } catch {
      // Gone.
    }
  }
  return out;
}

/**
 * What other processes (not this benchmark's, not in its bed) ran during a mode: their CPU seconds in
 * all, and the busiest three. Processes that started and ended within the mode are not seen.
 */
async function othersCpu(
  before: Map<number, { ticks: number; command: string }>,
  bed: Bed,
): Promise<{ seconds: number; top: string }> {
  const mine = new Set<number>([Deno.pid]);
  for (const ns of [bed.a, bed.b]) {
    const pids = await run(["ip", "netns", "pids", ns]).catch(() => undefined);
    for (const pid of pids?.stdout.split(/\s+/).filter(Boolean) ?? []) mine.add(Number(pid));
  }
  const used: [string, number][] = [];
  for (const [pid, now] of processTicks()) {
    const then = before.get(pid);
    if (!then || mine.has(pid) || now.ticks <= then.ticks) continue;
    used.push([now.command, (now.ticks - then.ticks) / clockTicks]);
  }
  used.sort((x, y) => y[1] - x[1]);
  const seconds = used.reduce((sum, [, t]) => sum + t, 0);
  const top = used.filter(([, t]) => t >= 0.5).slice(0, 3)
    .map(([command, t]) => `${command.slice(0, 60)} ${t.toFixed(1)} s`).join(", ");
  return { seconds, top };
}

function stampNow(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${
    p(d.getSeconds())
  }`;
}

/** A digest of the checkout as it ran: HEAD, the diff against it and the untracked files' contents. */
async function treeDigest(): Promise<string> {
  const git = (...args: string[]) => run(["git", "-C", PROJECT_DIR, ...args]);
  const hash = createHash("sha256");
  hash.update((await git("rev-parse", "HEAD")).stdout);
  hash.update((await git("diff", "HEAD")).stdout);
  const untracked =
    (await git("ls-files", "--others", "--exclude-standard", "--", "src", "ffi", "main.ts", "testbed"))
      .stdout.split("\n").filter(Boolean);
  for (const file of untracked.sort()) {
    hash.update(file);
    hash.update(await Deno.readFile(`${PROJECT_DIR}${file}`).catch(() => new Uint8Array()));
  }
  return hash.digest("hex").slice(0, 12);
}

export interface Result {
  stamp: string;
  startedUtc: string;
  finishedUtc: string;
  options: Options;
  info: Record<string, string>;
  modes: Partial<Record<ModeName, { args: readonly string[]; compression: string }>>;
  /** Each stream, and what per-frame LZ4 makes of its payload alone (pieces of lz4PieceBytes, a code byte
   * each), offline. */
  streams: {
    kind: StreamKind;
    seed: number;
    what: string;
    lz4FrameRatio: number | null;
    lz4PieceBytes: number;
  }[];
  runs: ModeRun[];
  medians: MedianRow[];
  verdicts: Verdict[];
}

/** The results file in Markdown: how it was made, the targets, the medians, every run. */
export function markdown(result: Result): string {
  const o = result.options;
  const i = result.info;
  const reference = result.streams.map((s) =>
    `${s.kind} ${s.lz4FrameRatio === null ? "-" : `${(s.lz4FrameRatio * 100).toFixed(1)}%`}`
  ).join(", ");
  const modes = Object.entries(result.modes).map(([name, m]) =>
    `${name} \`${m!.args.join(" ") || "(none)"}\``
  );
  return [
    `# VELA compression benchmark, ${result.stamp}`,
    "",
    `${result.startedUtc} to ${result.finishedUtc} (UTC). Host ${i.host}, kernel ${i.kernel}, ${i.cpus} CPUs, ` +
    `load ${i.load} at the start; VELA ${i.vela} (tree ${i.tree}); Deno ${i.deno}. Made by ` +
    `\`deno task bench:compression --modes ${o.modes.join(",")} --mib ${o.mib} --rounds ${o.rounds}${
      o.quick ? " --quick" : ""
    }\` (bench/compression.ts): ${o.mib} MiB per stream, iperf3 TCP for ${o.iperfSeconds} s; the modes' daemon ` +
    `arguments: ${modes.join(", ")}. Columns and method: bench/README.md, section "Compression (issue 20)".`,
    "",
    `Per-frame LZ4 of the payload alone, offline (${
      result.streams[0]?.lz4PieceBytes
    }-byte pieces, the TCP payload of a full frame, a code byte each; the best the stateless ` +
    `stage could do without the TCP/IP headers): ${reference}.`,
    "",
    "## Targets",
    "",
    ...verdictLines(result.verdicts),
    "",
    "## Runs",
    "",
    markdownTable(RUN_COLUMNS, runInfoCells(result.runs), RUN_NUMERIC),
    "",
    "## Medians of the rounds",
    "",
    markdownTable(COLUMNS, medianCells(result.runs)),
    "",
    "## Every run",
    "",
    markdownTable(COLUMNS, runCells(result.runs)),
    "",
  ].join("\n");
}

async function main(argv: string[]): Promise<number> {
  const options = parseOptions(argv);
  if (options === "help") {
    console.log(USAGE);
    return 0;
  }
  if (typeof options === "string") {
    console.error(`bench:compression: ${options}\n\n${USAGE}`);
    return 2;
  }
  const support = await namespaceSupport();
  if (!support.ok) {
    console.error(`bench:compression: ${support.reason}`);
    return 1;
  }
  for (const [program, pkg] of [["iperf3", "iperf3"], ["ss", "iproute2"], ["ping", "iputils-ping"]]) {
    if (!(await hasProgram(program))) {
      console.error(`bench:compression: needs ${program} (apt-get install ${pkg})`);
      return 1;
    }
  }
  clockTicks = Number((await run(["getconf", "CLK_TCK"])).stdout.trim()) || 100;
  const startedUtc = new Date().toISOString();
  const stamp = stampNow();
  const info: Record<string, string> = {
    host: Deno.hostname(),
    kernel: Deno.osRelease(),
    cpus: String(navigator.hardwareConcurrency),
    load: (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" "),
    vela: (await run(["git", "-C", PROJECT_DIR, "describe", "--always", "--dirty"])).stdout.trim() || "?",
    tree: await treeDigest(),
    deno: Deno.version.deno,
    clockTicks: String(clockTicks),
  };

  const bytes = options.mib * MIB;
  for (const s of STREAMS) {
    shaCache.set(`${s.kind}/${s.seed}/${bytes}`, sha256(generate(s.kind, s.seed, bytes)));
  }

  let current: Bed | undefined;
  let interrupted = false;
  const onSignal = async () => {
    interrupted = true;
    console.error("bench:compression: interrupted; removing the bed, writing nothing");
    await current?.destroy();
    Deno.exit(130);
  };
  /** After a signal: nothing more is measured, printed or written while the bed goes. */
  const stopped = () => interrupted ? new Promise<never>(() => {}) : Promise.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const runs: ModeRun[] = [];
  try {
    for (let round = 1; round <= options.rounds; round++) {
      for (const mode of roundOrder(options.modes, round)) {
        console.error(
          `bench:compression: round ${round}/${options.rounds}, mode ${mode} (${
            MODES[mode].args.join(" ") || "no extra arguments"
          })`,
        );
        const done = await runMode(mode, round, options, (bed) => current = bed);
        await stopped();
        if (done.status !== "ok") {
          console.error(
            `bench:compression: ${mode} ${done.status === "skip" ? "skipped" : "FAILED"}: ${done.reason}`,
          );
        }
        runs.push(done);
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  addRatios(runs);
  // The offline reference, in pieces of the TCP payload of a full frame of the circuit (its MTU less the
  // IPv4 and TCP headers with timestamps).
  const mtu = runs.find((r) => r.mtu !== null)?.mtu ?? 1457;
  const pieceBytes = mtu - 20 - 32;
  let lz4: ((piece: Uint8Array) => number) | null = null;
  if (lz4Available()) {
    const dst = new Uint8Array(lz4CompressBound(mtu));
    lz4 = (piece) => lz4Compress(piece, 0, piece.length, dst, 0, piece.length - 1);
  }
  const streams: Result["streams"] = STREAMS.map((s) => {
    const sample = generate(s.kind, s.seed, Math.min(bytes, 4 * MIB));
    return {
      ...s,
      lz4FrameRatio: lz4 ? frameRatio(sample, pieceBytes, lz4) : null,
      lz4PieceBytes: pieceBytes,
    };
  });
  const result: Result = {
    stamp,
    startedUtc,
    finishedUtc: new Date().toISOString(),
    options,
    info,
    modes: Object.fromEntries(options.modes.map((m) => [m, MODES[m]])),
    streams,
    runs,
    medians: medianRows(runs),
    verdicts: evaluateTargets(runs, options.modes),
  };
  console.log(textTable(COLUMNS, [...runCells(runs), ...medianCells(runs)]));
  console.log("");
  console.log(verdictLines(result.verdicts).join("\n"));

  // A quick check writes into a temporary directory, never into bench/results/.
  const outDir = options.quick ? await Deno.makeTempDir({ prefix: "vela-bench-compression-" }) : RESULTS_DIR;
  await Deno.mkdir(outDir, { recursive: true });
  const base = `${outDir}/${stamp}-compression`;
  const files = [`${base}.json`, `${base}.md`];
  await Deno.writeTextFile(`${base}.json`, JSON.stringify(result, null, 2) + "\n");
  await Deno.writeTextFile(`${base}.md`, markdown(result));
  if (!options.quick) {
    for (const ext of ["json", "md"]) {
      await Deno.copyFile(`${base}.${ext}`, `${RESULTS_DIR}/latest-compression.${ext}`);
      files.push(`${RESULTS_DIR}/latest-compression.${ext}`);
    }
  }
  // The files live in the project, whose `deno fmt --check` covers .md and .json.
  await new Deno.Command(DENO, { args: ["fmt", "--quiet", ...files], stdout: "null", stderr: "null" })
    .output();
  console.log(`\nwrote ${files.join(" ")}`);
  const mismatch = runs.some((r) => r.rows.some((row) => row.sha === "mismatch"));
  if (mismatch) {
    console.error("bench:compression: a stream arrived changed (SHA MISMATCH above): a bug in VELA");
  }
  return mismatch || runs.some((r) => r.status === "fail" || r.rows.some((row) => row.status === "fail"))
    ? 1
    : 0;
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === "serve") {
    await serveMain(Number(rest[0]), Number(rest[1]));
  } else if (command === "send") {
    await sendMain(rest[0], Number(rest[1]), rest[2] as StreamKind, Number(rest[3]), Number(rest[4]));
  } else {
    Deno.exit(await main(Deno.args));
  }
}

export { main };
