import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { CLI } from "../helpers/proxy-process.js";
import { writeHostsFile } from "../helpers/hosts-file.js";

const run = promisify(execFile);

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const POLICIES = path.resolve(import.meta.dirname, "../../policies");

describe("sandbox-egress policy check", () => {
  for (const file of readdirSync(POLICIES).filter((f) => f.endsWith(".json"))) {
    it(`accepts the shipped example policies/${file}`, async () => {
      const r = await cli(["policy", "check", path.join(POLICIES, file)], { OPENAI_API_KEY: "sk-example" });
      expect(r.stdout + r.stderr).toContain("valid");
      expect(r.code).toBe(0);
    });
  }

  it("exits 1 with one FIELD: WHY line per problem", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cli-"));
    const file = path.join(dir, "bad.json");
    writeFileSync(file, JSON.stringify({ mode: "allow-all", allow_domains: ["a.example.com"], deny_domains: ["*.com", "ok.example.org", "10.0.0.1"] }));
    const r = await cli(["policy", "check", file]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines) expect(l).toMatch(/^[\w$.[\]-]+: .+/);
    expect(r.stdout).toMatch(/^allow_domains.*custom/m);
    expect(r.stdout).toMatch(/^deny_domains\[0\]: /m);
    expect(r.stdout).toMatch(/^deny_domains\[2\]: /m);
  });

  it("reports an unset secret reference by field and name, never a value", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cli-"));
    const file = path.join(dir, "p.json");
    writeFileSync(file, JSON.stringify({ mode: "allow-all", transforms: [{ domain: "api.openai.com", inject_headers: { Authorization: "Bearer ${env:NOT_SET_ANYWHERE}" } }] }));
    const r = await cli(["policy", "check", file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("transforms[0].inject_headers.Authorization: ");
    expect(r.stdout).toContain("NOT_SET_ANYWHERE");
  });

  it("reports JSON syntax errors", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cli-"));
    const file = path.join(dir, "p.json");
    writeFileSync(file, "{ mode: ");
    const r = await cli(["policy", "check", file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/not valid JSON/);
  });
});

describe("sandbox-egress policy explain", () => {
  it("prints the Decision as JSON, resolving through --hosts", async () => {
    const hosts = await writeHostsFile({ "api.github.com": "140.82.112.6", "evil.example.org": "169.254.169.254" });
    const ok = await cli(["policy", "explain", path.join(POLICIES, "default.json"), "api.github.com:443", "--hosts", hosts]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ allowed: true, reason: "domain-allowed", host: "api.github.com", port: 443, addresses: ["140.82.112.6"] });
    const denied = await cli(["policy", "explain", path.join(POLICIES, "default.json"), "gist.github.com"]);
    expect(JSON.parse(denied.stdout)).toMatchObject({ allowed: false, reason: "domain-denied" });
    const meta = await cli(["policy", "explain", path.join(POLICIES, "allow-all.json"), "evil.example.org:80", "--hosts", hosts]);
    expect(JSON.parse(meta.stdout)).toMatchObject({ allowed: false, reason: "internal-address" });
  });
});

describe("sandbox-egress ca", () => {
  it("init creates ca.pem and a 0600 key; show prints the fingerprint; init again refuses without --force", async () => {
    const dir = path.join(mkdtempSync(path.join(tmpdir(), "ca-")), "certs");
    const init = await cli(["ca", "init", "--ca-dir", dir]);
    expect(init.code).toBe(0);
    expect(statSync(path.join(dir, "ca-key.pem")).mode & 0o777).toBe(0o600);
    const show = await cli(["ca", "show", "--ca-dir", dir]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/([0-9A-F]{2}:){31}[0-9A-F]{2}/);
    expect(show.stdout).toContain("-----BEGIN CERTIFICATE-----");
    expect(show.stdout).not.toContain("PRIVATE KEY");
    const again = await cli(["ca", "init", "--ca-dir", dir]);
    expect(again.code).toBe(1);
    const forced = await cli(["ca", "init", "--ca-dir", dir, "--force"]);
    expect(forced.code).toBe(0);
  });

  it("answers usage errors with exit 2", async () => {
    expect((await cli(["bogus"])).code).toBe(2);
    expect((await cli(["proxy", "--no-such-flag"])).code).toBe(2);
    expect((await cli(["proxy", "--max-connections", "many"])).stderr).toContain("--max-connections");
  });
});

describe("sandbox-egress proxy start-up failures", () => {
  it("exits 1 when a listener cannot bind, instead of serving half a proxy", async () => {
    const net = await import("node:net");
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const busy = (blocker.address() as { port: number }).port;
    const dir = mkdtempSync(path.join(tmpdir(), "busy-"));
    try {
      const r = await cli(["proxy", "--listen", "127.0.0.1:0", "--admin", `127.0.0.1:${busy}`, "--ca-dir", path.join(dir, "certs")]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });

  it("exits 1 with the field errors when the policy file is invalid", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "badpol-"));
    const file = path.join(dir, "p.json");
    writeFileSync(file, JSON.stringify({ mode: "custom", allow_domains: ["*"] }));
    const r = await cli(["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--policy-file", file, "--ca-dir", path.join(dir, "certs")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/allow_domains\[0\]/);
  });
});
