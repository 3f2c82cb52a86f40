// An SVG chart of the ratios in a report: one bar per (metric, peer) pair, as sandbox-egress's advantage
// (peer ÷ sandbox-egress for lower-is-better metrics, sandbox-egress ÷ peer otherwise), so that a bar right
// of the 1× line always favours sandbox-egress. Log scale from 0.1× to 10×. No dependencies: plain SVG text.

const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Pairs [label, advantage] from the tables writeReport computed (w.table). */
export function advantageRows(report) {
  const rows = [];
  for (const w of report.workloads) {
    for (const r of w.table ?? []) {
      const flip = (x) => (x == null || x <= 0 ? null : r.better === "lower" ? 1 / x : x);
      if (w.columns) {
        (w.ratios ?? []).forEach((q, i) => {
          const v = flip(r.ratios?.[i]);
          if (v != null) rows.push([`${w.name} · ${r.label} (vs ${q.den})`, v]);
        });
      } else {
        const v = flip(r.vsSquid);
        if (v != null) rows.push([`${w.name} · ${r.label} (vs squid)`, v]);
        const d = flip(r.vsDirect);
        if (d != null) rows.push([`${w.name} · ${r.label} (vs direct)`, d]);
      }
    }
  }
  return rows;
}

export function renderSvg(report) {
  const rows = advantageRows(report);
  const labelW = 460, barW = 420, rowH = 18, top = 40, left = 10;
  const width = left + labelW + barW + 80, height = top + rows.length * rowH + 30;
  const x = (v) => left + labelW + ((Math.log10(Math.min(10, Math.max(0.1, v))) + 1) / 2) * barW;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="${left}" y="18" font-size="13" font-weight="bold">sandbox-egress advantage over each peer (right of 1× favours sandbox-egress; log scale)</text>`,
    `<text x="${left}" y="32" fill="#555">${esc(report.mode ?? "")} run · ${esc(report.startedAt ?? "")}</text>`,
  ];
  for (const t of [0.1, 0.5, 1, 2, 10]) {
    out.push(`<line x1="${x(t)}" y1="${top - 4}" x2="${x(t)}" y2="${height - 24}" stroke="${t === 1 ? "#000" : "#ddd"}"/>`);
    out.push(`<text x="${x(t)}" y="${height - 10}" text-anchor="middle" fill="#555">${t}×</text>`);
  }
  rows.forEach(([label, v], i) => {
    const y = top + i * rowH;
    const x1 = x(1), x2 = x(v);
    out.push(`<text x="${left}" y="${y + 12}">${esc(label)}</text>`);
    out.push(`<rect x="${Math.min(x1, x2)}" y="${y + 3}" width="${Math.max(1, Math.abs(x2 - x1))}" height="${rowH - 6}" fill="${v >= 1 ? "#2e7d32" : "#c62828"}"/>`);
    out.push(`<text x="${x2 + (v >= 1 ? 4 : -4)}" y="${y + 12}" text-anchor="${v >= 1 ? "start" : "end"}">${v.toFixed(2)}×</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
