/**
 * What a listening socket does when accept() fails (out of file descriptors, say), shared by the control
 * socket and remote control: count it, log it at most once per DROP_LOG_INTERVAL_MS, wait before trying
 * again (CONTROL_ACCEPT_RETRY_MS, doubling up to CONTROL_ACCEPT_MAX_RETRY_MS, back to the start after an
 * accept that works), and let close() cut the wait short.
 */

import { CONTROL_ACCEPT_MAX_RETRY_MS, CONTROL_ACCEPT_RETRY_MS, DROP_LOG_INTERVAL_MS } from "../timing.ts";

export class AcceptRetry {
  /** accept() failures so far. */
  failures = 0;
  #retryMs = CONTROL_ACCEPT_RETRY_MS;
  #lastWarning = -Infinity;
  #wake: (() => void) | undefined;

  /** After a failed accept(): counts it, warns (`warn` gets the failures so far) and waits. */
  async failed(warn: (failures: number) => void): Promise<void> {
    this.failures++;
    const now = performance.now();
    if (now - this.#lastWarning >= DROP_LOG_INTERVAL_MS) {
      this.#lastWarning = now;
      warn(this.failures);
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.#retryMs);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
    this.#retryMs = Math.min(this.#retryMs * 2, CONTROL_ACCEPT_MAX_RETRY_MS);
  }

  /** After an accept() that worked. */
  succeeded(): void {
    this.#retryMs = CONTROL_ACCEPT_RETRY_MS;
  }

  /** Ends a wait under way (at close()). */
  wake(): void {
    this.#wake?.();
  }
}
