/**
 * A TCP transfer that proves every byte: `serve PORT` takes one connection, reads it to the end and
 * prints `{"bytes":N,"sha256":"..."}`; `send HOST PORT MIB` sends MIB mebibytes of pseudo-random bytes
 * (a fixed seed, so runs are alike) and prints the same for what it sent. Run in a test's namespaces.
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
  console.error("Usage: sha_transfer.ts serve PORT | send HOST PORT MIB");
  Deno.exit(2);
}
