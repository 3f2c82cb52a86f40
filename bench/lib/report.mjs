// Machine info, aggregation (median over repeats) and the JSON / markdown outputs.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { renderSvg } from "./chart.mjs";
import os from "node:os";
import path from "node:path";

const SE = "sandbox-egress";

export function machineInfo() {
  let cpuModel = os.cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) cpuModel = m[1].trim();
  } catch { /* keep os.cpus() */ }
  let osName = `${os.type()} ${os.release()}`;
  try { osName = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? osName; } catch { /* keep */ }
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpuModel,
    kernel: os.release(),
    os: osName,
    node: process.version,
    memTotalMiB: Math.round(os.totalmem() / 1024 / 1024),
    loadAvgAtStart: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

export function median(xs) {
  const v = xs.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Median of each metric over the successful samples of one (workload, peer). */
export function aggregate(workload, samples) {
  const ok = samples.filter((s) => !s.error);
  const out = {};
  for (const m of workload.metrics) out[m.key] = median(ok.map((s) => s.values[m.key]));
  return out;
}

const ratio = (a, b) => (a == null || b == null || b === 0 ? null : a / b);

/**
 * Rows of a workload with its own columns (w.columns): the median per column, the workload's ratios
 * (w.ratios = [{num, den}], column names) unless the metric says ratios: false, and the target verdict.
 */
export function columnRows(w) {
  const cols = w.columns.map((c) => c.name);
  return w.metrics.map((m) => {
    const values = {};
    for (const c of cols) values[c] = w.results[c]?.median?.[m.key] ?? null;
    return {
      key: m.key, label: m.label, better: m.better, digits: m.digits, values,
      ratios: (w.ratios ?? []).map((q) => (m.ratios === false ? null : ratio(values[q.num], values[q.den]))),
      target: m.target?.text ?? null,
      pass: m.target ? m.target.check(values) : null,
    };
  });
}

/** One row per metric: the median per peer, the two ratios and the DESIGN.md target verdict. */
export function tableRows(w, peers) {
  if (w.columns) return columnRows(w);
  return w.metrics.map((m) => {
    const values = {};
    for (const p of peers) values[p] = w.results[p]?.median?.[m.key] ?? null;
    return {
      key: m.key, label: m.label, better: m.better, digits: m.digits, values,
      vsSquid: ratio(values[SE], values.squid),
      vsDirect: m.proxyOnly ? null : ratio(values[SE], values.direct),
      target: m.target?.text ?? null,
      pass: m.target ? m.target.check(values) : null,
    };
  });
}

function fmt(v, digits) {
  if (v == null) return "—";
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const fmtRatio = (r) => (r == null ? "—" : `${r.toFixed(2)}×`);
const labelOf = (w, name) => { const c = w.columns.find((x) => x.name === name); return c?.short ?? c?.label ?? name; };

export function renderMarkdown(report) {
  const peers = report.peerOrder;
  const lines = [];
  lines.push(`# sandbox-egress bench (${report.mode})`, "");
  lines.push(`${report.startedAt} · ${report.durationSeconds.toFixed(0)} s · repeats: ${report.options.repeat} (median shown)`, "");
  const mi = report.machine;
  lines.push(`Machine: ${mi.nproc} CPU × ${mi.cpuModel}, ${mi.memTotalMiB} MiB, ${mi.os}, kernel ${mi.kernel}, node ${mi.node}`, "");
  lines.push("Peers: " + Object.entries(report.peers).map(([n, p]) =>
    `${n} ${p.version ?? ""}${p.available ? "" : ` (**not run**: ${p.reason})`}`.trim()).join(" · "), "");
  const noisy = [];
  let sampled = 0;
  for (const w of report.workloads) {
    for (const [p, r] of Object.entries(w.results)) {
      for (const smp of r.samples ?? []) {
        if (!smp.interference) continue;
        sampled++;
        if (smp.interference.foreignCores > 0.1) noisy.push(`${w.name}/${p} ${smp.interference.foreignCores.toFixed(2)}`);
      }
    }
  }
  if (sampled) {
    lines.push(noisy.length
      ? `⚠️ Interference: in ${noisy.length} of ${sampled} samples other processes on this machine used > 0.1 cores ` +
        `(${noisy.join(", ")} cores). Those numbers are pessimistic; rerun on a quiet machine before relying on them.`
      : `Interference: none (no sample saw other processes use > 0.1 cores).`, "");
  }
  if (report.tools?.wrk) lines.push(`Load: ${report.tools.wrk}; Node clients and upstreams in separate processes.`, "");

  const cellOf = (w, p, row) => {
    const r = w.results[p];
    if (!r || r.skipped) return "n/a";
    if (row.values[p] == null && r.samples?.length && r.samples.every((s) => s.error)) return "error";
    return fmt(row.values[p], row.digits);
  };
  const verdict = (row) => (row.target ? `${row.target}: ${row.pass == null ? "—" : row.pass ? "✅ pass" : "❌ fail"}` : "");
  const legacy = report.workloads.filter((w) => !w.columns);
  const hdr = ["workload · metric", ...peers, `${SE}/squid`, `${SE}/direct`, "target"];
  if (legacy.length) lines.push(`| ${hdr.join(" | ")} |`, `|${hdr.map((_, i) => (i === 0 || i === hdr.length - 1 ? "---" : "---:")).join("|")}|`);
  for (const w of legacy) {
    for (const row of tableRows(w, peers)) {
      const cells = peers.map((p) => cellOf(w, p, row));
      const target = verdict(row);
      lines.push(`| ${w.name} · ${row.label} ${row.better === "higher" ? "↑" : "↓"} | ${cells.join(" | ")} | ` +
        `${fmtRatio(row.vsSquid)} | ${fmtRatio(row.vsDirect)} | ${target} |`);
    }
  }
  if (legacy.length) {
    lines.push("", "↑ higher is better, ↓ lower is better. Ratios are sandbox-egress divided by the peer, so for ↑ rows a " +
      "ratio above 1 favours sandbox-egress and for ↓ rows a ratio below 1 does.", "");
  }

  // Workloads with their own columns (intercepted HTTPS vs mitmproxy, policy decision, lifecycle): one table each.
  for (const w of report.workloads.filter((x) => x.columns)) {
    const reps = w.repeat > 1 ? `median of ${w.repeat} runs` : "1 run";
    lines.push(`### ${w.name}: ${w.section ?? w.title}`, "", `${w.title} (${reps}).`, "");
    const h = ["metric", ...w.columns.map((c) => c.label), ...w.ratios.map((q) => `${labelOf(w, q.num)} ÷ ${labelOf(w, q.den)}`), "target"];
    lines.push(`| ${h.join(" | ")} |`, `|${h.map((_, i) => (i === 0 || i === h.length - 1 ? "---" : "---:")).join("|")}|`);
    for (const row of columnRows(w)) {
      const cells = w.columns.map((c) => cellOf(w, c.name, row));
      lines.push(`| ${row.label} ${row.better === "higher" ? "↑" : row.better === "lower" ? "↓" : ""} | ${cells.join(" | ")} | ` +
        `${row.ratios.map(fmtRatio).join(" | ")}${row.ratios.length ? " | " : ""}${verdict(row)} |`);
    }
    lines.push("");
  }

  const notes = [];
  for (const w of report.workloads) {
    notes.push(`- **${w.name}**: ${w.description}`);
    for (const p of w.columns ? w.columns.map((c) => c.name) : peers) {
      const r = w.results[p];
      if (!r) continue;
      if (r.skipped) { if (r.reason) notes.push(`  - ${p}: not run (${r.reason})`); continue; }
      const said = new Set();
      for (const s of r.samples) {
        for (const n of s.notes ?? []) if (!said.has(n)) { said.add(n); notes.push(`  - ${p}: ${n}`); }
        if (s.error) notes.push(`  - ${p}: ERROR ${s.error.split("\n")[0]}`);
        for (const wmsg of s.warnings ?? []) notes.push(`  - ${p}: warning: ${wmsg}`);
      }
    }
  }
  for (const wmsg of report.warnings) notes.push(`- ${wmsg}`);
  lines.push("Notes:", ...notes, "");
  return lines.join("\n");
}

/** Strip functions and bulky fields so the report serialises. */
export function toJson(report) {
  return JSON.stringify(report, (k, v) => (typeof v === "function" ? undefined : v), 2);
}

export function writeReport(report, outDir) {
  mkdirSync(outDir, { recursive: true });
  for (const w of report.workloads) w.table = tableRows(w, report.peerOrder);
  const md = renderMarkdown(report);
  writeFileSync(path.join(outDir, "latest.json"), toJson(report) + "\n");
  writeFileSync(path.join(outDir, "latest.md"), md);
  writeFileSync(path.join(outDir, "latest.svg"), renderSvg(report));
  return md;
}
