/** Query-string and resource-quantity parsing shared by the adapters; every error names its field. */
import type { FieldError } from "../../policy/types.js";
import { invalid } from "../errors.js";
import { DEFAULT_RESOURCES, type Resources } from "../service.js";

export const MAX_PAGE_SIZE = 1000;

export function paging(q: URLSearchParams): { page: number; pageSize: number } {
  const errors: FieldError[] = [];
  const int = (name: string, fallback: number, max: number): number => {
    const raw = q.get(name);
    if (raw === null || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 1 || n > max) {
      errors.push({ field: name, error: `must be an integer from 1 to ${max.toLocaleString("en-US")}, got ${JSON.stringify(raw.slice(0, 40))}` });
      return fallback;
    }
    return n;
  };
  const page = int("page", 1, 1_000_000);
  const pageSize = int("pageSize", 20, MAX_PAGE_SIZE);
  if (errors.length > 0) throw invalid(errors);
  return { page, pageSize };
}

/** `?state=Running&state=paused` → canonical names (case-insensitive, as users type them). */
export function states<S extends string>(q: URLSearchParams, all: readonly S[]): S[] {
  const out: S[] = [];
  const errors: FieldError[] = [];
  for (const raw of q.getAll("state")) {
    for (const part of raw.split(",")) {
      if (part === "") continue;
      const s = all.find((x) => x.toLowerCase() === part.trim().toLowerCase());
      if (s === undefined) errors.push({ field: "state", error: `${JSON.stringify(part.slice(0, 40))} is not a state; use one of ${all.join(", ")}` });
      else if (!out.includes(s)) out.push(s);
    }
  }
  if (errors.length > 0) throw invalid(errors);
  return out;
}

/**
 * OpenSandbox's metadata filter: one `metadata` parameter whose (decoded) value is itself a query string,
 * `project=Apollo&note=Demo%20Test`. Several `metadata` parameters are merged; every pair must match (AND).
 */
export function metadataFilter(q: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of q.getAll("metadata")) {
    for (const [k, v] of new URLSearchParams(raw)) {
      if (k === "") throw invalid([{ field: "metadata", error: 'expected key=value pairs such as "project=Apollo"' }]);
      out[k] = v;
    }
  }
  return out;
}

const CPU_RE = /^(\d+(?:\.\d+)?)(m?)$/;
const QUANTITY_RE = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$/;
const MIB: Record<string, number> = { "": 1 / (1024 * 1024), Ki: 1 / 1024, Mi: 1, Gi: 1024, Ti: 1024 * 1024, k: 1000 / 1048576, K: 1000 / 1048576, M: 1e6 / 1048576, G: 1e9 / 1048576, T: 1e12 / 1048576 };

/**
 * Kubernetes-style quantities ({"cpu": "500m", "memory": "2Gi", "ephemeral-storage": "10Gi"}) → whole vCPUs
 * and MiB, rounded up. Other keys (gpu, …) are accepted: the local runtime enforces none of them.
 */
export function resourcesFrom(limits: Record<string, string> | undefined, field: string): Partial<Resources> {
  if (!limits) return {};
  const out: Partial<Resources> = {};
  const errors: FieldError[] = [];
  const cpu = limits["cpu"];
  if (cpu !== undefined) {
    const m = CPU_RE.exec(cpu.trim());
    const cores = m ? Number(m[1]) / (m[2] === "m" ? 1000 : 1) : NaN;
    if (!(cores > 0) || cores > 1024) errors.push({ field: `${field}.cpu`, error: `${JSON.stringify(cpu)} is not a CPU quantity such as "500m" or "2"` });
    else out.vcpu = Math.max(1, Math.ceil(cores));
  }
  for (const [key, target] of [["memory", "memory"], ["ephemeral-storage", "disk"], ["disk", "disk"]] as const) {
    const v = limits[key];
    if (v === undefined) continue;
    const m = QUANTITY_RE.exec(v.trim());
    const mib = m ? Number(m[1]) * (MIB[m[2] ?? ""] ?? NaN) : NaN;
    if (!(mib > 0) || mib > 64 * 1024 * 1024) errors.push({ field: `${field}.${key}`, error: `${JSON.stringify(v)} is not a quantity such as "512Mi" or "2Gi"` });
    else out[target] = Math.max(1, Math.ceil(mib));
  }
  if (errors.length > 0) throw invalid(errors);
  return out;
}

export { DEFAULT_RESOURCES };
