// Machine info, aggregation (median over repeats) and the JSON / markdown outputs.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
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

/** One row per metric: the median per peer, the two ratios and the DESIGN.md target verdict. */
export function tableRows(w, peers) {
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

  const hdr = ["workload · metric", ...peers, `${SE}/squid`, `${SE}/direct`, "target"];
  lines.push(`| ${hdr.join(" | ")} |`, `|${hdr.map((_, i) => (i === 0 || i === hdr.length - 1 ? "---" : "---:")).join("|")}|`);
  for (const w of report.workloads) {
    for (const row of tableRows(w, peers)) {
      const cells = peers.map((p) => {
        const r = w.results[p];
        if (!r || r.skipped) return "n/a";
        if (row.values[p] == null && r.samples?.length && r.samples.every((s) => s.error)) return "error";
        return fmt(row.values[p], row.digits);
      });
      const target = row.target ? `${row.target}: ${row.pass == null ? "—" : row.pass ? "✅ pass" : "❌ fail"}` : "";
      lines.push(`| ${w.name} · ${row.label} ${row.better === "higher" ? "↑" : "↓"} | ${cells.join(" | ")} | ` +
        `${fmtRatio(row.vsSquid)} | ${fmtRatio(row.vsDirect)} | ${target} |`);
    }
  }
  lines.push("", "↑ higher is better, ↓ lower is better. Ratios are sandbox-egress divided by the peer, so for ↑ rows a " +
    "ratio above 1 favours sandbox-egress and for ↓ rows a ratio below 1 does.", "");

  const notes = [];
  for (const w of report.workloads) {
    notes.push(`- **${w.name}**: ${w.description}`);
    for (const p of peers) {
      const r = w.results[p];
      if (!r) continue;
      if (r.skipped) { if (r.reason) notes.push(`  - ${p}: not run (${r.reason})`); continue; }
      for (const s of r.samples) {
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
  return md;
}
