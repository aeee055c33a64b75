/** Logging through LogTape: text lines on stderr; -v shows debug, -q only errors. */

import { configureSync, getLogger, getTextFormatter, type Logger, type LogLevel } from "@logtape/logtape";

export type Verbosity = "quiet" | "normal" | "verbose";

const LEVELS: Record<Verbosity, LogLevel> = { quiet: "error", normal: "info", verbose: "debug" };

/** Sends VELA's log records to stderr at the level `verbosity` asks for. Call once, before logging. */
export function setupLogging(verbosity: Verbosity): void {
  const format = getTextFormatter({ timestamp: "date-time-tz", value: "bare" });
  const encoder = new TextEncoder();
  configureSync({
    reset: true,
    sinks: { stderr: (record) => Deno.stderr.writeSync(encoder.encode(format(record))) },
    loggers: [
      { category: ["vela"], lowestLevel: LEVELS[verbosity], sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

export function logger(...category: string[]): Logger {
  return getLogger(["vela", ...category]);
}
