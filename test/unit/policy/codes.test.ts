import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ALLOW_CODES, DENY_CODES } from "../../../src/policy/codes.js";

const root = path.resolve(import.meta.dirname, "../../..");

/** Rows `| code | status | … |` of the first markdown table whose header starts with `| code | status |`. */
function codeTable(markdown: string): Map<string, number> {
  const rows = new Map<string, number>();
  const start = markdown.indexOf("| code | status |");
  if (start < 0) return rows;
  for (const line of markdown.slice(start).split("\n").slice(2)) {
    if (!line.startsWith("|")) break;
    const [, code, status] = line.split("|").map((c) => c.trim().replace(/`/g, ""));
    rows.set(code!, Number(status));
  }
  return rows;
}

describe("reason codes", () => {
  it("are unique between deny and allow codes", () => {
    const all = [...Object.keys(DENY_CODES), ...ALLOW_CODES];
    expect(new Set(all).size).toBe(all.length);
  });

  it("match the README table exactly, with the same statuses", () => {
    const table = codeTable(readFileSync(path.join(root, "README.md"), "utf8"));
    expect([...table.keys()].sort()).toEqual(Object.keys(DENY_CODES).sort());
    for (const [code, { status }] of Object.entries(DENY_CODES)) expect(table.get(code), code).toBe(status);
  });

  it("match the CONTRACT table when the shared contract is present", () => {
    let contract: string;
    try {
      contract = readFileSync(path.join(root, "../shared/CONTRACT.md"), "utf8");
    } catch {
      return; // the contract lives beside the repository; a bare clone without it still checks the README
    }
    const table = codeTable(contract);
    expect([...table.keys()].sort()).toEqual(Object.keys(DENY_CODES).sort());
    for (const [code, { status }] of Object.entries(DENY_CODES)) expect(table.get(code), code).toBe(status);
  });

  it("have messages that name no address and end in a full stop", () => {
    for (const [code, { message }] of Object.entries(DENY_CODES)) {
      expect(message, code).toMatch(/\.$/);
      expect(message, code).not.toMatch(/\d+\.\d+\.\d+\.\d+/);
    }
  });
});
