/**
 * A datapath Worker that dies: the real Worker host (src/datapath/worker_host.ts), which takes each
 * message as usual, and then an exception nothing catches once it has been given a circuit.
 */

/// <reference lib="deno.worker" />

import "../../src/datapath/worker_host.ts";

const host = self.onmessage as (event: MessageEvent) => void;
self.onmessage = (event: MessageEvent) => {
  host(event);
  if (event.data.type === "add") throw new Error("a test made this Worker fail");
};
