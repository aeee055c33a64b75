/**
 * A TCP transfer that proves every byte: `serve PORT` takes one connection, reads it to the end and
 * prints `{"bytes":N,"sha256":"..."}`; `send HOST PORT MIB` sends MIB mebibytes of pseudo-random bytes
 * (a fixed seed, so runs are alike) and prints the same for what it sent; `send HOST PORT MIB text` sends
 * text instead, log lines and JSON records whose numbers and names vary (compressible as such text is,
 * not a repeated block). Run in a test's namespaces.
 */

import { createHash } from "node:crypto";

const [mode, ...args] = Deno.args;
const CHUNK = 1 << 20;

if (mode === "serve") {
  const listener = Deno.listen({ hostname: "0.0.0.0", port: Number(args[0]) });
  console.log(JSON.stringify({ listening: true }));
  const connection = await listener.accept();
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of connection.readable) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  listener.close();
  console.log(JSON.stringify({ bytes, sha256: hash.digest("hex") }));
} else if (mode === "send") {
  const [hostname, port, mib] = [args[0], Number(args[1]), Number(args[2])];
  const connection = await Deno.connect({ hostname, port });
  const writer = connection.writable.getWriter();
  const hash = createHash("sha256");
  const chunk = new Uint8Array(CHUNK);
  let state = 0x9e3779b9;
  let bytes = 0;
  if (args[3] === "text") {
    const encoder = new TextEncoder();
    const names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
    const levels = ["info", "warning", "notice", "debug"];
    let line = 0;
    for (let m = 0; m < mib; m++) {
      let at = 0;
      while (at < CHUNK) {
        line++;
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        const n = state >>> 0;
        const text = line % 3 === 0
          ? `{"id":${line},"user":"${names[n % 8]}","amount":${n % 100000},"status":"${
            levels[(n >>> 8) % 4]
          }","tags":["${names[(n >>> 4) % 8]}","${names[(n >>> 12) % 8]}"]}\n`
          : `Dec  4 18:${String(line % 60).padStart(2, "0")}:${String(n % 60).padStart(2, "0")} router${
            n % 7
          } vela[${1000 + (n % 50)}]: ${levels[n % 4]}: circuit ${n % 255} with 198.18.${n % 255}.${
            (n >>> 8) % 255
          } carried ${n % 9999} frames\n`;
        const written = encoder.encodeInto(text, chunk.subarray(at));
        if (written.read < text.length) break;
        at += written.written;
      }
      chunk.fill(0x0a, at);
      hash.update(chunk);
      await writer.write(chunk.slice());
      bytes += CHUNK;
    }
    await writer.close();
    console.log(JSON.stringify({ bytes, sha256: hash.digest("hex") }));
    Deno.exit(0);
  }
  for (let m = 0; m < mib; m++) {
    for (let i = 0; i < CHUNK; i += 4) {
      // xorshift32: cheap bytes that no compression or pattern can fake.
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      chunk[i] = state & 0xff;
      chunk[i + 1] = (state >>> 8) & 0xff;
      chunk[i + 2] = (state >>> 16) & 0xff;
      chunk[i + 3] = state >>> 24;
    }
    hash.update(chunk);
    await writer.write(chunk.slice());
    bytes += CHUNK;
  }
  await writer.close();
  console.log(JSON.stringify({ bytes, sha256: hash.digest("hex") }));
} else {
  console.error("Usage: sha_transfer.ts serve PORT | send HOST PORT MIB [text]");
  Deno.exit(2);
}
