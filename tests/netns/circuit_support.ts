/** Small helpers shared by the namespace tests of circuits. */

import assert from "node:assert/strict";
import { type Bed, type BedProcess, run } from "../../testbed/netns.ts";

/** The listener's arguments in these tests: it accepts initiators from the bed's underlay. */
export const LISTEN = ["--listen", "--allow", "198.18.0.0/15"];

/** This checkout's main.ts, for subcommands run outside a daemon (vela genkey). */
export const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A new key file made by `vela genkey` (mode 0600, in the temporary directory; the caller removes it). */
export async function keyFile(name = "key"): Promise<string> {
  const made = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--quiet", MAIN, "genkey"] })
    .output();
  if (made.code !== 0) throw new Error(`vela genkey failed: ${new TextDecoder().decode(made.stderr)}`);
  const path = await Deno.makeTempFile({ prefix: `vela-${name}-` });
  await Deno.writeFile(path, made.stdout, { mode: 0o600 });
  return path;
}

const SHA_TRANSFER = new URL("./sha_transfer.ts", import.meta.url).pathname;

/**
 * Sends `mib` mebibytes over TCP from namespace `from` to `address`:5201, served in namespace `to`
 * (pseudo-random bytes, or text that compresses), and checks that every byte arrived, in order: the
 * sha256 and count of both ends (tests/netns/sha_transfer.ts).
 */
export async function shaTransfer(
  bed: Bed,
  from: string,
  to: string,
  address: string,
  mib: number,
  kind: "random" | "text" = "random",
): Promise<void> {
  const server = bed.spawn(to, [Deno.execPath(), "run", "-A", "--quiet", SHA_TRANSFER, "serve", "5201"]);
  await bed.until(() => Promise.resolve(server.output().includes("listening")), "the receiver to listen");
  const sent = await bed.exec(from, [
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    SHA_TRANSFER,
    "send",
    address,
    "5201",
    String(mib),
    ...(kind === "text" ? ["text"] : []),
  ], { check: true });
  await server.status;
  const lastLine = (text: string) => JSON.parse(text.trim().split("\n").at(-1)!);
  const wrote = lastLine(sent.stdout);
  assert.equal(wrote.bytes, mib * 1024 * 1024);
  assert.deepEqual(lastLine(server.output()), wrote, "every byte, in order");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The kernel's index of an interface: it changes when the interface is deleted and made again. */
export async function ifindex(ns: string, name: string): Promise<number> {
  const shown = await run(["ip", "-n", ns, "-j", "link", "show", name], { check: true });
  return JSON.parse(shown.stdout)[0].ifindex;
}

/** The names of the interfaces in `ns` that start with "vela", sorted. */
export async function velaLinks(ns: string): Promise<string[]> {
  const shown = await run(["ip", "-n", ns, "-j", "link", "show"], { check: true });
  return (JSON.parse(shown.stdout) as { ifname: string }[]).map((l) => l.ifname)
    .filter((name) => name.startsWith("vela")).sort();
}

/** Waits until `ifname` exists in both namespaces of the bed. */
export async function bothLinks(bed: Bed, ifname: string, ms?: number): Promise<void> {
  await bed.until(
    async () => (await bed.hasLink(bed.a, ifname)) && (await bed.hasLink(bed.b, ifname)),
    `${ifname} in both namespaces`,
    ms,
  );
}

/**
 * bed.waitPing, and when it times out, the failure also shows what `ns` believes the far side's MAC is
 * (its neighbour entries on `ifname`) next to the MAC the far side's `ifname` has now.
 */
export async function waitPingOver(
  bed: Bed,
  ns: string,
  address: string,
  ifname: string,
  ms: number,
): Promise<void> {
  try {
    await bed.waitPing(ns, address, ms);
  } catch (error) {
    const far = ns === bed.a ? bed.b : bed.a;
    const neighbours = (await run(["ip", "-n", ns, "neigh", "show", "dev", ifname])).stdout.trim();
    const mac = await bed.link(far, ifname).then((l) => l.address, (e) => `none (${e.message})`);
    throw new Error(
      `${(error as Error).message}\n--- neighbours on ${ifname} in ${ns}:\n${neighbours}\n` +
        `--- the far ${ifname}'s MAC now: ${mac}`,
    );
  }
}

/** A flag that turns true once the process has exited. */
export function watchExit(process: BedProcess): { exited: boolean } {
  const watch = { exited: false };
  process.status.then(() => watch.exited = true);
  return watch;
}
