import { lineSink, type Logger } from "../telemetry/logger.js";
import type { ProxyMetrics } from "../telemetry/metrics.js";

/**
 * One audit line per request or tunnel, written when it ends (CONTRACT.md "Audit log"). Only names and
 * numbers: header values, bodies and secrets have no field here to land in.
 */
export interface AuditRecord {
  kind: "http" | "connect" | "transparent" | "intercepted";
  method: string;
  host: string;
  port: number;
  address: string | null;
  allowed: boolean;
  reason: string;
  rule: string | null;
  intercepted: boolean;
  /** Header NAMES that transforms injected or stripped. */
  transforms: string[];
  status: number | null;
  bytes_up: number;
  bytes_down: number;
  started: number;
}

export function startAudit(kind: AuditRecord["kind"], method: string): AuditRecord {
  return {
    kind,
    method,
    host: "",
    port: 0,
    address: null,
    allowed: false,
    reason: "invalid-target",
    rule: null,
    intercepted: kind === "intercepted",
    transforms: [],
    status: null,
    bytes_up: 0,
    bytes_down: 0,
    started: performance.now(),
  };
}

type CounterChild = ReturnType<ProxyMetrics["requests"]["labels"]>;

export class Auditor {
  /**
   * prom-client hashes the label object on every inc(); the label sets here are few (decision × reason code ×
   * kind), so their children are looked up once and kept.
   */
  private readonly requestChildren = new Map<string, CounterChild>();
  private readonly bytesUp: CounterChild;
  private readonly bytesDown: CounterChild;
  private readonly out: { write(line: string): unknown };

  constructor(
    private readonly log: Logger,
    private readonly metrics: ProxyMetrics,
    private readonly sandbox: string | null,
  ) {
    this.out = lineSink(log);
    this.bytesUp = metrics.bytes.labels({ direction: "up" });
    this.bytesDown = metrics.bytes.labels({ direction: "down" });
  }

  finish(r: AuditRecord): void {
    const decision = r.allowed ? "allowed" : "denied";
    const key = `${decision}|${r.reason}|${r.kind}`;
    let child = this.requestChildren.get(key);
    if (child === undefined) {
      child = this.metrics.requests.labels({ decision, reason: r.reason, kind: r.kind });
      this.requestChildren.set(key, child);
    }
    child.inc();
    if (r.bytes_up) this.bytesUp.inc(r.bytes_up);
    if (r.bytes_down) this.bytesDown.inc(r.bytes_down);
    if (!this.log.isLevelEnabled("info")) return; // level off (e.g. warn): don't even build the record
    // The line is serialised here and handed to the logger's own destination, as pino would write it (same
    // level, time, pid and base fields): pino's per-call work (redaction pass, child bindings, serialisers) was
    // 8 % of the proxy's busy time at 7,000 req/s (--cpu-prof), and the record holds only names and numbers.
    // The destination (synchronous, see src/telemetry/logger.ts) is the same, so lines never interleave.
    const line = {
      level: "info",
      time: new Date().toISOString(),
      pid: process.pid,
      event: "egress",
      sandbox: this.sandbox,
      kind: r.kind,
      method: r.method,
      host: r.host,
      port: r.port,
      address: r.address,
      allowed: r.allowed,
      reason: r.reason,
      rule: r.rule,
      intercepted: r.intercepted,
      transforms: r.transforms,
      status: r.status,
      bytes_up: r.bytes_up,
      bytes_down: r.bytes_down,
      duration_ms: Math.round((performance.now() - r.started) * 1000) / 1000,
    };
    this.out.write(`${JSON.stringify(line)}\n`);
  }
}
