/** Shared by the namespace tests: skip loudly where namespaces cannot be made, require the tools in CI. */

import { hasProgram, namespaceSupport } from "../../testbed/netns.ts";

const support = await namespaceSupport();
if (!support.ok) {
  console.warn(`\n!!! SKIPPING the network namespace tests: ${support.reason} !!!\n`);
}

/** A test on real kernel devices in namespaces; ignored (loudly, above) where they cannot be made. */
export function netnsTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: !support.ok, sanitizeOps: false, sanitizeResources: false, fn });
}

/**
 * Throws when `program` is missing: in CI (CI=true) always; elsewhere it returns false so that the
 * caller skips that one check with a loud line.
 */
export async function requireProgram(program: string, apt: string): Promise<boolean> {
  if (await hasProgram(program)) return true;
  const message = `${program} is not installed (apt-get install ${apt})`;
  if (Deno.env.get("CI")) throw new Error(message);
  console.warn(`!!! SKIPPING a check: ${message} !!!`);
  return false;
}
