/**
 * Up and down hooks (--up CMD, --down CMD, as OpenVPN's --up and tinc's tinc-up): a shell command run
 * when a circuit's interface is up and configured, and when it is removed, with what it needs to know in
 * its environment. A hook runs on its own (the daemon never waits for it); a hook that cannot start or
 * exits non-zero is logged as a warning and changes nothing else.
 */

import type { Logger } from "@logtape/logtape";
import type { LinkDevice } from "../link/link_device.ts";

export type HookEvent = "up" | "down";

/** What a hook is told, as VELA_* variables. */
export interface HookContext {
  readonly ifname: string;
  readonly vid: number;
  /** The peer's underlay address. */
  readonly peer: string;
  readonly mode: string;
  readonly role: "initiator" | "responder";
  readonly bridge?: string;
}

/** The environment a hook gets besides the daemon's own. */
export function hookEnvironment(event: HookEvent, context: HookContext): Record<string, string> {
  return {
    VELA_EVENT: event,
    VELA_IFNAME: context.ifname,
    VELA_VID: String(context.vid),
    VELA_PEER: context.peer,
    VELA_MODE: context.mode,
    VELA_ROLE: context.role,
    VELA_BRIDGE: context.bridge ?? "",
  };
}

/** Starts `command` with `sh -c`; resolves once it ended (the caller need not wait). Never throws. */
export async function runHook(
  command: string,
  event: HookEvent,
  context: HookContext,
  log: Logger,
): Promise<void> {
  try {
    const child = new Deno.Command("sh", {
      args: ["-c", command],
      env: hookEnvironment(event, context),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const { code, stderr } = await child.output();
    if (code !== 0) {
      const said = new TextDecoder().decode(stderr).trim().split("\n").at(-1) ?? "";
      log.warn(`The --${event} hook for ${context.ifname} exited ${code}${said ? `: ${said}` : ""}`);
    }
  } catch (error) {
    log.warn(`The --${event} hook for ${context.ifname} could not run: ${(error as Error).message}`);
  }
}

/** A device whose close() also calls `closed`, once, after the device is let go. */
class ClosingDevice implements LinkDevice {
  readonly #device: LinkDevice;
  readonly #closed: () => void;
  #done = false;

  constructor(device: LinkDevice, closed: () => void) {
    this.#device = device;
    this.#closed = closed;
  }

  get name(): string {
    return this.#device.name;
  }
  get mode(): LinkDevice["mode"] {
    return this.#device.mode;
  }
  get offload(): boolean {
    return this.#device.offload;
  }
  get udpOffload(): boolean {
    return this.#device.udpOffload;
  }
  get fd(): number {
    return this.#device.fd;
  }
  get frames(): LinkDevice["frames"] {
    return this.#device.frames;
  }
  retain(): void {
    this.#device.retain();
  }
  release(): void {
    this.#device.release();
  }
  waitReadable(): Promise<boolean> {
    return this.#device.waitReadable();
  }
  close(): void {
    this.#device.close();
    if (this.#done) return;
    this.#done = true;
    this.#closed();
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

/** `device`, whose close() also calls `closed` once, after the device is let go. */
export function onClose(device: LinkDevice, closed: () => void): LinkDevice {
  return new ClosingDevice(device, closed);
}
