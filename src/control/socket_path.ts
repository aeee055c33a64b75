/**
 * The default control socket path, one per network namespace. Two daemons in two namespaces of one host
 * (`ip netns exec`) share /run, so one fixed path would make the second refuse to start and make each
 * client talk to whichever daemon came first. The host's own namespace keeps /run/vela/vela.sock; a named
 * namespace NS (a file in /run/netns, as `ip netns add` makes) gets /run/vela/NS.sock, and an unnamed one
 * /run/vela/netns-INODE.sock (where init's namespace can be read to tell it from the host's). A client run in the same namespace derives the same path.
 */

/** The socket of the host's own network namespace. */
export const HOST_CONTROL = "/run/vela/vela.sock";

import { readProcLink } from "../../ffi/libc.ts";

/** Where `ip netns` keeps the namespaces it names. */
const NETNS_DIRECTORY = "/run/netns";

/** What the derivation reads: the namespace inodes of this process and of init, the named namespaces. */
export interface NamespaceView {
  /** The inode of this process's network namespace (/proc/self/ns/net), undefined if unreadable. */
  own?: number;
  /** The inode of init's (/proc/1/ns/net), undefined if unreadable (not root, a container). */
  init?: number;
  /** The named namespaces: name and inode. */
  named: { name: string; inode: number }[];
}

/** The default path for a view of the namespaces. Pure. */
export function controlPathFor(view: NamespaceView): string {
  if (view.own === undefined || view.own === view.init) return HOST_CONTROL;
  const named = view.named.find((n) => n.inode === view.own);
  if (named && /^[A-Za-z0-9_.-]{1,64}$/.test(named.name) && !named.name.startsWith(".")) {
    return `/run/vela/${named.name}.sock`;
  }
  // An unnamed namespace is told apart only where init's namespace can be read.
  return view.init === undefined ? HOST_CONTROL : `/run/vela/netns-${view.own}.sock`;
}

function inode(path: string): number | undefined {
  try {
    return Deno.statSync(path).ino ?? undefined;
  } catch {
    return undefined;
  }
}

/** The inode of a namespace link in /proc ("net:[4026531840]"), undefined if unreadable. */
function namespaceInode(path: string): number | undefined {
  try {
    const match = /\[(\d+)\]$/.exec(readProcLink(path));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Reads this host's namespaces. */
export function readNamespaceView(): NamespaceView {
  const own = namespaceInode("/proc/self/ns/net");
  const init = namespaceInode("/proc/1/ns/net");
  const named: { name: string; inode: number }[] = [];
  if (own !== undefined && own !== init) {
    try {
      for (const entry of Deno.readDirSync(NETNS_DIRECTORY)) {
        const found = inode(`${NETNS_DIRECTORY}/${entry.name}`);
        if (found !== undefined) named.push({ name: entry.name, inode: found });
      }
    } catch {
      // No named namespaces.
    }
  }
  return { own, init, named };
}

/** The default control socket path of this process's network namespace. */
export function defaultControlPath(): string {
  return controlPathFor(readNamespaceView());
}
