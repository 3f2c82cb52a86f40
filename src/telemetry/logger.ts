import type { Logger, pino as Pino } from "pino";
import { requireCjs } from "../util/cjs.js";

const pino = requireCjs("pino") as typeof Pino;

export type { Logger };

/**
 * Paths that could ever hold a secret. Redaction is configured here, in one place, as a second line of
 * defence: the code never passes header values or policies with resolved secrets to the logger at all.
 */
const REDACT_PATHS = [
  "headers.authorization",
  "headers.cookie",
  "headers['proxy-authorization']",
  "req.headers.authorization",
  "req.headers['proxy-authorization']",
  "policy.transforms[*].inject_headers.*",
  "transforms[*].inject_headers.*",
  "inject_headers.*",
  "token",
  "adminToken",
  "apiKey",
  "secret",
];

export interface LoggerOptions {
  level?: string;
  sandboxId?: string;
  /** Tests pass a writable to capture every line. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const base: Record<string, unknown> = { pid: process.pid };
  if (opts.sandboxId) base.sandbox = opts.sandboxId;
  const options = {
    level: opts.level ?? "info",
    base,
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  // Synchronous writes: a sidecar's audit lines must not be lost when it is SIGKILLed, and the
  // throughput cost is paid only per request end, not per byte.
  const dest = opts.destination ?? pino.destination({ dest: 1, sync: true });
  return pino(options, dest as Pino.DestinationStream);
}

/**
 * The destination a logger writes its lines to, for a caller that serialises its own complete lines (the
 * audit log, on the request path): same stream, same synchronous writes, so lines never interleave.
 */
export function lineSink(logger: Logger): { write(line: string): unknown } {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { write(line: string): unknown } | undefined;
  if (stream === undefined || typeof stream.write !== "function") throw new Error("logger has no destination stream");
  return stream;
}
