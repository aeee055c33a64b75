/** The import rules of docs/ARCHITECTURE.md, checked on the sources. */

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** Every relative import of every .ts file under `dir`, as paths from the project root. */
function imports(dir: string): { file: string; target: string }[] {
  const found: { file: string; target: string }[] = [];
  for (const entry of Deno.readDirSync(new URL(dir, ROOT))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) {
      found.push(...imports(path));
      continue;
    }
    if (!entry.name.endsWith(".ts")) continue;
    const text = Deno.readTextFileSync(new URL(path, ROOT));
    for (const match of text.matchAll(/(?:from|import)\s+"(\.[^"]+)"/g)) {
      const target = new URL(match[1], new URL(path, ROOT)).pathname.slice(ROOT.pathname.length);
      found.push({ file: path, target });
    }
  }
  return found;
}

function broken(dir: string, allowed: (target: string) => boolean): string[] {
  return imports(dir).filter(({ target }) => !allowed(target)).map(({ file, target }) =>
    `${file} -> ${target}`
  );
}

Deno.test("ffi/ imports nothing from src/", () => {
  assert.ok(imports("ffi").some(({ target }) => target === "ffi/libc.ts"), "the scan finds imports");
  assert.deepEqual(broken("ffi", (t) => t.startsWith("ffi/")), []);
});

Deno.test("src/packet/ imports nothing from the rest of src/", () => {
  assert.deepEqual(broken("src/packet", (t) => t.startsWith("src/packet/") || t.startsWith("ffi/")), []);
});

Deno.test("src/link/ and src/underlay/ import only packets, counters, addresses, ffi/ and themselves", () => {
  const common = (t: string) =>
    t.startsWith("src/packet/") || t === "src/datapath/counters.ts" || t === "src/ip.ts" ||
    t.startsWith("ffi/");
  assert.deepEqual(broken("src/link", (t) => common(t) || t.startsWith("src/link/")), []);
  assert.deepEqual(broken("src/underlay", (t) => common(t) || t.startsWith("src/underlay/")), []);
});

Deno.test("src/datapath/ never imports the daemon, nor the handshake", () => {
  assert.deepEqual(
    broken(
      "src/datapath",
      (t) =>
        /^(src\/(datapath|link|underlay|packet)\/|ffi\/|src\/(log|timing|wire)\.ts)/.test(t) ||
        t === "src/crypto/data_keys.ts" || t === "src/crypto/replay_window.ts",
    ),
    [],
  );
});
