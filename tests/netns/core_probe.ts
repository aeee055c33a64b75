/**
 * Test helper for core_test.ts, run as its own process inside a test namespace:
 *
 *   deno run --allow-all tests/netns/core_probe.ts
 *
 * Runs every case of tests/datapath/core_cases.ts over real tap devices and UDP sockets
 * (kernel_core_pair.ts) and prints as JSON which passed and which failed (with the error), then exits
 * 1 if any failed.
 */

import { CORE_CASES } from "../datapath/core_cases.ts";
import { kernelCorePair, prepareNamespace } from "./kernel_core_pair.ts";

await prepareNamespace();
const passed: string[] = [];
const failed: { name: string; error: string }[] = [];
for (const testCase of CORE_CASES) {
  try {
    await testCase.run(kernelCorePair);
    passed.push(testCase.name);
  } catch (error) {
    failed.push({ name: testCase.name, error: String((error as Error).stack ?? error) });
  }
}
console.log(JSON.stringify({ passed, failed }));
Deno.exit(failed.length === 0 ? 0 : 1);
