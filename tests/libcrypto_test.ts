/**
 * ffi/libcrypto.ts against published known answers and against node:crypto (Deno implements that in
 * Rust, apart from OpenSSL, so it is a second opinion). No root needed.
 */

import assert from "node:assert/strict";
import { createCipheriv } from "node:crypto";
import {
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  type AeadCipherName,
  AeadContext,
  LibcryptoMissing,
  loadLibcrypto,
} from "../ffi/libcrypto.ts";
import { traceRun } from "./allocation_trace.ts";

const CIPHERS: readonly AeadCipherName[] = ["aes-256-gcm", "chacha20-poly1305"];

const hex = (text: string) =>
  Uint8Array.from(text.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** Random bytes, any number of them (getRandomValues gives at most 64 KiB a call). */
function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(bytes.subarray(at, at + 65_536));
  return bytes;
}

/** Our nonce for a counter: 4 zero bytes, then the counter as 64 bits, big endian. */
function nonceFor(counter: number): Uint8Array {
  const nonce = new Uint8Array(AEAD_NONCE_BYTES);
  const view = new DataView(nonce.buffer);
  view.setUint32(4, Math.floor(counter / 2 ** 32));
  view.setUint32(8, counter >>> 0);
  return nonce;
}

/** Where the known-answer helpers put the associated data and the text in their memory. */
const AAD_AT = 8;
const TEXT_AT = 64;

/** Seals through the binding with an explicit nonce (or, with a number, through seal() and that counter). */
function sealKat(
  cipher: AeadCipherName,
  key: string,
  nonce: string | number,
  aad: string,
  plaintext: string,
) {
  const text = hex(plaintext);
  const aadBytes = hex(aad);
  const memory = new Uint8Array(1024);
  memory.set(aadBytes, AAD_AT);
  memory.set(text, TEXT_AT);
  using context = new AeadContext(cipher, hex(key), "seal");
  if (typeof nonce === "number") context.seal(memory, AAD_AT, aadBytes.length, TEXT_AT, text.length, nonce);
  else context.sealWithNonce(memory, hex(nonce), AAD_AT, aadBytes.length, TEXT_AT, text.length);
  return {
    ciphertext: toHex(memory.subarray(TEXT_AT, TEXT_AT + text.length)),
    tag: toHex(memory.subarray(TEXT_AT + text.length, TEXT_AT + text.length + AEAD_TAG_BYTES)),
  };
}

/** Opens ciphertext + tag through the binding with an explicit nonce: the plaintext, or undefined. */
function openKat(
  cipher: AeadCipherName,
  key: string,
  nonce: string,
  aad: string,
  ciphertext: string,
  tag: string,
) {
  const text = hex(ciphertext);
  const aadBytes = hex(aad);
  const memory = new Uint8Array(1024);
  memory.set(aadBytes, AAD_AT);
  memory.set(text, TEXT_AT);
  memory.set(hex(tag), TEXT_AT + text.length);
  using context = new AeadContext(cipher, hex(key), "open");
  const ok = context.openWithNonce(memory, hex(nonce), AAD_AT, aadBytes.length, TEXT_AT, text.length);
  return ok ? toHex(memory.subarray(TEXT_AT, TEXT_AT + text.length)) : undefined;
}

/** node:crypto's ciphertext and tag for the same inputs. */
function reference(
  cipher: AeadCipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
): string {
  // deno-lint-ignore no-explicit-any
  const engine = createCipheriv(cipher as any, key, nonce, { authTagLength: AEAD_TAG_BYTES } as any) as any;
  engine.setAAD(aad, { plaintextLength: plaintext.length });
  return toHex(new Uint8Array([...engine.update(plaintext), ...engine.final(), ...engine.getAuthTag()]));
}

// RFC 8439 section 2.8.2: the AEAD_CHACHA20_POLY1305 example.
const RFC8439 = {
  key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
  nonce: "070000004041424344454647",
  aad: "50515253c0c1c2c3c4c5c6c7",
  plaintext: toHex(
    new TextEncoder().encode(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    ),
  ),
  ciphertext:
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b" +
    "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc" +
    "3ff4def08e4b7a9de576d26586cec64b6116",
  tag: "1ae10b594f09e26a7e902ecbd0600691",
};

Deno.test("seal() matches RFC 8439 section 2.8.2", () => {
  const out = sealKat("chacha20-poly1305", RFC8439.key, RFC8439.nonce, RFC8439.aad, RFC8439.plaintext);
  assert.equal(out.ciphertext, RFC8439.ciphertext);
  assert.equal(out.tag, RFC8439.tag);
});

Deno.test("open() recovers the plaintext of RFC 8439 section 2.8.2", () => {
  const { key, nonce, aad, ciphertext, tag } = RFC8439;
  assert.equal(openKat("chacha20-poly1305", key, nonce, aad, ciphertext, tag), RFC8439.plaintext);
  const badTag = "0" + tag.slice(1);
  assert.equal(openKat("chacha20-poly1305", key, nonce, aad, ciphertext, badTag), undefined);
});

// McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13 to 16 (256-bit keys).
const GCM_K0 = "0000000000000000000000000000000000000000000000000000000000000000";
const GCM_K1 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
const GCM_IV = "cafebabefacedbaddecaf888";
const GCM_P = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
const GCM_C = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
  "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";

Deno.test("seal() matches the GCM specification's test cases 13 to 16 (AES-256)", () => {
  // Cases 13 and 14 have the all-zero nonce, which is ours for counter 0: they go through seal() itself.
  assert.deepEqual(sealKat("aes-256-gcm", GCM_K0, 0, "", ""), {
    ciphertext: "",
    tag: "530f8afbc74536b9a963b4f1c4cb738b",
  });
  assert.deepEqual(sealKat("aes-256-gcm", GCM_K0, 0, "", "00000000000000000000000000000000"), {
    ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
    tag: "d0d1c8a799996bf0265b98b5d48ab919",
  });
  assert.deepEqual(sealKat("aes-256-gcm", GCM_K1, GCM_IV, "", GCM_P), {
    ciphertext: GCM_C,
    tag: "b094dac5d93471bdec1a502270e3cc6c",
  });
  assert.deepEqual(
    sealKat("aes-256-gcm", GCM_K1, GCM_IV, "feedfacedeadbeeffeedfacedeadbeefabaddad2", GCM_P.slice(0, 120)),
    {
      ciphertext: GCM_C.slice(0, 120),
      tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
  );
});

Deno.test("open() accepts the GCM specification's test case 16 and rejects it with another tag", () => {
  const aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
  const tag = "76fc6ece0f4e1768cddf8853bb2d551b";
  assert.equal(openKat("aes-256-gcm", GCM_K1, GCM_IV, aad, GCM_C.slice(0, 120), tag), GCM_P.slice(0, 120));
  assert.equal(
    openKat("aes-256-gcm", GCM_K1, GCM_IV, aad, GCM_C.slice(0, 120), tag.slice(0, -1) + "a"),
    undefined,
  );
});

Deno.test("seal() matches NIST CAVP gcmEncryptExtIV256 (96-bit IV, 128-bit tag, count 0)", () => {
  // [PTlen = 0][AADlen = 0] and [PTlen = 128][AADlen = 0], Count = 0
  assert.deepEqual(
    sealKat(
      "aes-256-gcm",
      "b52c505a37d78eda5dd34f20c22540ea1b58963cf8e5bf8ffa85f9f2492505b4",
      "516c33929df5a3284ff463d7",
      "",
      "",
    ),
    { ciphertext: "", tag: "bdc1ac884d332457a1d2664f168c76f0" },
  );
  assert.deepEqual(
    sealKat(
      "aes-256-gcm",
      "31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22",
      "0d18e06c7c725ac9e362e1ce",
      "",
      "2db5168e932556f8089a0622981d017d",
    ),
    { ciphertext: "fa4362189661d163fcd6a56d8bf0405a", tag: "d636ac1bbedd5cc3ee727dc2ab4a9489" },
  );
});

Deno.test("seal() makes its nonce of 4 zero bytes and the counter as 64 bits big endian", () => {
  for (const cipher of CIPHERS) {
    for (const counter of [0, 1, 255, 256, 2 ** 32 - 1, 2 ** 32, 0x1234_5678_9abc, 2 ** 53 - 1]) {
      const key = toHex(new Uint8Array(32).fill(counter & 0xff));
      const text = "000102030405060708090a0b0c0d0e0f10";
      assert.deepEqual(
        sealKat(cipher, key, counter, "aabbcc", text),
        sealKat(cipher, key, toHex(nonceFor(counter)), "aabbcc", text),
        `${cipher}, counter ${counter}`,
      );
    }
  }
});

for (const cipher of CIPHERS) {
  Deno.test(`seal() and open() agree with node:crypto for ${cipher} at random lengths from 0 to 9000`, () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    using seal = new AeadContext(cipher, key, "seal");
    using open = new AeadContext(cipher, key, "open");
    const memory = new Uint8Array(20_000);
    const lengths = [0, 1, 15, 16, 17, 63, 64, 65, 1400, 8999, 9000];
    for (let t = 0; t < 300; t++) lengths.push(Math.floor(Math.random() * 9001));
    for (const length of lengths) {
      const aadLength = Math.floor(Math.random() * 40);
      const aadAt = Math.floor(Math.random() * 100);
      const at = aadAt + aadLength + Math.floor(Math.random() * 1000);
      const counter = Math.floor(Math.random() * 2 ** 53);
      crypto.getRandomValues(memory);
      const aad = memory.slice(aadAt, aadAt + aadLength);
      const plaintext = memory.slice(at, at + length);
      seal.seal(memory, aadAt, aadLength, at, length, counter);
      const sealed = toHex(memory.subarray(at, at + length + AEAD_TAG_BYTES));
      assert.equal(sealed, reference(cipher, key, nonceFor(counter), aad, plaintext), `length ${length}`);
      assert.ok(open.open(memory, aadAt, aadLength, at, length, counter), `length ${length} opens`);
      assert.deepEqual(memory.subarray(at, at + length), plaintext);
    }
  });
}

/** A sealed packet in `memory` (aad at 10, 6 bytes; text at 16, 80 bytes; counter 42) for one cipher. */
function sealedSample(cipher: AeadCipherName) {
  const key = new Uint8Array(32).fill(5);
  const seal = new AeadContext(cipher, key, "seal");
  const open = new AeadContext(cipher, key, "open");
  const memory = new Uint8Array(256);
  const reseal = () => {
    memory.fill(0);
    memory.fill(7, 10, 96);
    seal.seal(memory, 10, 6, 16, 80, 42);
  };
  const close = () => {
    seal.close();
    open.close();
  };
  return { memory, reseal, open, [Symbol.dispose]: close };
}

Deno.test("open() rejects a flipped tag bit", () => {
  for (const cipher of CIPHERS) {
    using sample = sealedSample(cipher);
    for (const bit of [0, 7, 8 * 15 + 7]) {
      sample.reseal();
      sample.memory[96 + (bit >> 3)] ^= 1 << (bit & 7);
      assert.equal(sample.open.open(sample.memory, 10, 6, 16, 80, 42), false, `${cipher}, tag bit ${bit}`);
    }
    sample.reseal();
    assert.equal(sample.open.open(sample.memory, 10, 6, 16, 80, 42), true, `${cipher} after failures`);
    assert.deepEqual(sample.memory.subarray(16, 96), new Uint8Array(80).fill(7));
  }
});

Deno.test("open() rejects a changed associated data byte", () => {
  for (const cipher of CIPHERS) {
    using sample = sealedSample(cipher);
    for (const at of [10, 12, 15]) {
      sample.reseal();
      sample.memory[at] ^= 0x80;
      assert.equal(sample.open.open(sample.memory, 10, 6, 16, 80, 42), false, `${cipher}, byte ${at}`);
    }
    sample.reseal();
    assert.equal(sample.open.open(sample.memory, 10, 5, 16, 80, 42), false, `${cipher}, shorter aad`);
  }
});

Deno.test("open() rejects a changed ciphertext byte, another counter and another length", () => {
  for (const cipher of CIPHERS) {
    using sample = sealedSample(cipher);
    sample.reseal();
    sample.memory[50] ^= 1;
    assert.equal(sample.open.open(sample.memory, 10, 6, 16, 80, 42), false, `${cipher}, ciphertext`);
    sample.reseal();
    assert.equal(sample.open.open(sample.memory, 10, 6, 16, 80, 43), false, `${cipher}, counter`);
    sample.reseal();
    assert.equal(sample.open.open(sample.memory, 10, 6, 16, 79, 42), false, `${cipher}, length`);
  }
});

Deno.test("open() returns false for ranges outside the memory and bad counters; seal() throws for them", () => {
  using seal = new AeadContext("aes-256-gcm", new Uint8Array(32), "seal");
  using open = new AeadContext("aes-256-gcm", new Uint8Array(32), "open");
  const memory = new Uint8Array(128);
  const bad: [number, number, number, number, number][] = [
    [0, 0, 100, 13, 0], // the tag would end past the memory
    [0, 0, -1, 8, 0],
    [0, 0, 8, -1, 0],
    [120, 9, 0, 8, 0], // the associated data ends past the memory
    [-1, 4, 16, 8, 0],
    [0, 0, 1.5, 8, 0],
    [0, 0, 16, 8, -1],
    [0, 0, 16, 8, 2 ** 53],
    [0, 0, 16, 8, 0.5],
    [0, 0, 16, 8, NaN],
  ];
  for (const args of bad) {
    assert.equal(open.open(memory, ...args), false, `open(${args})`);
    assert.throws(() => seal.seal(memory, ...args), RangeError, `seal(${args})`);
  }
  const before = memory.slice();
  seal.seal(memory, 0, 0, 100, 12, 0); // the tag ends exactly at the end
  assert.notDeepEqual(memory, before);
  assert.ok(open.open(memory, 0, 0, 100, 12, 0));
});

Deno.test("seal() and open() round-trip at an offset inside a large buffer and leave the bytes around it alone", () => {
  for (const cipher of CIPHERS) {
    const key = crypto.getRandomValues(new Uint8Array(32));
    using seal = new AeadContext(cipher, key, "seal");
    using open = new AeadContext(cipher, key, "open");
    const whole = randomBytes(1 << 20);
    // A view that does not start at its buffer's start, to check the base address includes byteOffset.
    const memory = whole.subarray(4097);
    const [aadAt, aadLength, at, length] = [600_000, 6, 600_006, 1400];
    const original = whole.slice();
    seal.seal(memory, aadAt, aadLength, at, length, 7);
    const end = 4097 + at + length + AEAD_TAG_BYTES;
    assert.deepEqual(whole.subarray(0, 4097 + at), original.subarray(0, 4097 + at), "before");
    assert.deepEqual(whole.subarray(end), original.subarray(end), "after");
    assert.notDeepEqual(whole.subarray(4097 + at, end), original.subarray(4097 + at, end), "sealed");
    assert.ok(open.open(memory, aadAt, aadLength, at, length, 7));
    assert.deepEqual(
      whole.subarray(0, 4097 + at + length),
      original.subarray(0, 4097 + at + length),
      "all but the tag as before",
    );
  }
});

Deno.test("a context follows the memory it is given from call to call", () => {
  using seal = new AeadContext("chacha20-poly1305", new Uint8Array(32).fill(1), "seal");
  using open = new AeadContext("chacha20-poly1305", new Uint8Array(32).fill(1), "open");
  // The last memory is small enough to start on V8's heap, where an object may move.
  const memories = [new Uint8Array(4096), new Uint8Array(4096), new Uint8Array(4096), new Uint8Array(40)];
  for (const memory of memories) memory.fill(3);
  // Each call seals the next unused 40 bytes of its memory: 4 of associated data, 20 of text, the tag.
  const calls = [0, 1, 0, 3, 2, 1, 2, 0].map((m, counter) => ({ m, counter, at: 0 }));
  const used = [0, 0, 0, 0];
  for (const call of calls) {
    call.at = 40 * used[call.m]++;
    seal.seal(memories[call.m], call.at, 4, call.at + 4, 20, call.counter);
  }
  const sealedOnce = new Uint8Array(40).fill(3);
  seal.seal(sealedOnce, 0, 4, 4, 20, 3);
  assert.deepEqual(memories[3], sealedOnce, "the small memory sealed as a fresh one");
  for (const { m, counter, at } of calls.reverse()) {
    assert.ok(open.open(memories[m], at, 4, at + 4, 20, counter), `memory ${m}, counter ${counter}`);
    assert.deepEqual(memories[m].subarray(at, at + 24), new Uint8Array(24).fill(3));
  }
});

Deno.test("close() is safe twice", () => {
  const context = new AeadContext("chacha20-poly1305", new Uint8Array(32), "seal");
  context.close();
  context.close();
  context[Symbol.dispose]();
  assert.throws(() => context.seal(new Uint8Array(64), 0, 0, 8, 8, 0), /closed/);
  const opener = new AeadContext("aes-256-gcm", new Uint8Array(32), "open");
  opener.close();
  opener.close();
  assert.throws(() => opener.open(new Uint8Array(64), 0, 0, 8, 8, 0), /closed/);
});

Deno.test("a context works in its own direction only, and takes 32-byte keys only", () => {
  using seal = new AeadContext("aes-256-gcm", new Uint8Array(32), "seal");
  using open = new AeadContext("aes-256-gcm", new Uint8Array(32), "open");
  assert.throws(() => seal.open(new Uint8Array(64), 0, 0, 8, 8, 0), /cannot open/);
  assert.throws(() => open.seal(new Uint8Array(64), 0, 0, 8, 8, 0), /cannot seal/);
  assert.throws(() => new AeadContext("aes-256-gcm", new Uint8Array(16), "seal"), /32 bytes, not 16/);
  assert.throws(
    () => seal.sealWithNonce(new Uint8Array(64), new Uint8Array(8), 0, 0, 8, 8),
    /12 bytes, not 8/,
  );
  assert.equal(seal.cipher, "aes-256-gcm");
});

Deno.test("a missing libcrypto is one sentence that says what to install", () => {
  assert.throws(() => loadLibcrypto("libcrypto-that-is-not-here.so.3"), (error: Error) => {
    assert.ok(error instanceof LibcryptoMissing);
    assert.match(error.message, /libcrypto\.so\.3/);
    assert.match(error.message, /libssl3/);
    assert.match(error.message, /openssl-libs/);
    assert.match(error.message, /^[A-Z]/);
    assert.ok(!error.message.endsWith("."));
    assert.equal(error.message.split(". ").length, 1);
    return true;
  });
  loadLibcrypto();
});

Deno.test({
  name: "seal() and open() allocate nothing per packet once optimized (child Denos with --trace-gc)",
  permissions: { run: true, read: true, write: true },
  fn: async () => {
    // The offsets come from `%`, which V8 cannot prove to be int32s: the case that once boxed BigInts.
    const script = await Deno.makeTempFile({ suffix: ".ts" });
    const module = JSON.stringify(new URL("../ffi/libcrypto.ts", import.meta.url).href);
    await Deno.writeTextFile(
      script,
      `import { AeadContext } from ${module};
const packets = Number(Deno.args[0]);
const key = new Uint8Array(32);
const memory = new Uint8Array(65_536);
for (const cipher of ["aes-256-gcm", "chacha20-poly1305"] as const) {
  const seal = new AeadContext(cipher, key, "seal");
  const open = new AeadContext(cipher, key, "open");
  let bad = 0;
  for (let i = 0; i < packets; i++) {
    const at = (i % 700) * 90;
    seal.seal(memory, at, 6, at + 6, 64, i);
    if (!open.open(memory, at, 6, at + 6, 64, i)) bad++;
  }
  if (bad > 0) throw new Error(bad + " did not open");
  seal.close();
  open.close();
}
console.log("done");
`,
    );
    /** The scavenges and deoptimizations of a run of `packets` packets per cipher. */
    const run = (packets: number) => traceRun(script, packets);
    try {
      // The unoptimized start boxes its BigInts: compare a short run with a long one. 300,000 more
      // packets per cipher with one heap BigInt per address would be some 100 more scavenges.
      const [short, long] = [await run(100_000), await run(400_000)];
      assert.ok(long.scavenges - short.scavenges <= 8, `${short.scavenges} then ${long.scavenges} scavenges`);
      assert.ok(long.deopts <= 12, `${long.deopts} deoptimizations`);
    } finally {
      await Deno.remove(script);
    }
  },
});
