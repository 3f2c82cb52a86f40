/**
 * Admin API faults against the real proxy process: a storm of policy PUTs (valid and invalid) under request
 * load, and SIGKILL of the proxy (also right after a PUT was answered) followed by a restart on the same file.
 */
import { readFileSync, readdirSync, rmSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { port, startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { startHttpUpstream, type Upstream } from "../helpers/upstream.js";
import { admin, metric } from "./helpers.js";

/** A allows a.test (b.test is not-allowed); B allows b.test and denies a.test (domain-denied). */
const A = { mode: "custom", allow_domains: ["a.test"] };
const B = { mode: "custom", allow_domains: ["b.test"], deny_domains: ["a.test"] };
const INVALID = [{ mode: "custom", allow_domains: ["*"] }, { mode: "allow-all", allow_domains: ["a.test"] }, { mode: "sometimes" }];

let upstream: Upstream | undefined;
let hosts = "";
const proxies: RunningProxy[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  upstream = await startHttpUpstream();
  hosts = await writeHostsFile({ "a.test": "127.0.0.1", "b.test": "127.0.0.1" });
});

afterAll(async () => {
  for (const p of proxies) await p.stop("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await upstream?.close();
});

async function start(policy: unknown, policyFile?: string): Promise<RunningProxy> {
  const args = ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"];
  // startProxy writes its own policy file; a restart points a second --policy-file at the first proxy's file.
  const p = await startProxy({ policy, args: policyFile ? [...args, "--policy-file", policyFile] : args });
  proxies.push(p);
  dirs.push(p.dir);
  return p;
}

/** One plain-HTTP request through the proxy on a fresh connection: status and refusal code, or the socket error. */
function get(proxyAddr: string, host: string): Promise<{ status: number; code: string | null } | { error: string }> {
  return new Promise((resolve) => {
    const req = http.request(
      { host: "127.0.0.1", port: port(proxyAddr), method: "GET", path: `http://${host}:${upstream!.port}/`, headers: { host, connection: "close" }, agent: false, timeout: 5000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode!, code: (res.headers["x-egress-denied"] as string | undefined) ?? null }));
        res.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.end();
  });
}

describe("admin PUT storm under load", () => {
  type Outcome = { host: string; r: Awaited<ReturnType<typeof get>> };
  let p: RunningProxy;
  let initial = 0;
  let failuresBefore = 0;
  let revokedBefore = 0;
  const outcomes: Outcome[] = [];
  const puts: { body: unknown; valid: boolean; status: number; revision?: number; text: string }[] = [];

  beforeAll(async () => {
    p = await start(A);
    initial = (await admin(p.admin, "GET", "/v1/policy")).json.revision as number;
    failuresBefore = await metric(p.admin, "egress_policy_reload_failures_total");
    revokedBefore = await metric(p.admin, "egress_revoked_connections_total");

    let stop = false;
    const clients = Array.from({ length: 16 }, async (_, i) => {
      for (let n = 0; !stop; n++) {
        const host = (i + n) % 2 === 0 ? "a.test" : "b.test";
        outcomes.push({ host, r: await get(p.proxy, host) });
      }
    });
    const started = Date.now();
    try {
      for (let i = 0; i < 200; i += 4) {
        // Four at a time: they race into the store's queue.
        await Promise.all(
          [0, 1, 2, 3].map(async (k) => {
            const n = i + k;
            const invalid = n % 10 === 7;
            const body = invalid ? INVALID[n % INVALID.length]! : n % 2 === 0 ? B : A;
            const r = await admin(p.admin, "PUT", "/v1/policy", body);
            puts.push({ body, valid: !invalid, status: r.status, revision: r.json?.revision, text: r.text });
          }),
        );
        // Spread the 200 PUTs over about 5 s of load.
        const due = started + ((i + 4) / 200) * 5000;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      }
    } finally {
      stop = true;
      await Promise.all(clients);
    }
  }, 30_000);

  it("serialises 200 PUTs: revisions without gaps, the file equals the last PUT, invalid ones counted", async () => {
    expect(puts).toHaveLength(200);
    for (const put of puts) {
      if (put.valid) expect(put.status, put.text).toBe(200);
      else {
        expect(put.status, put.text).toBe(400);
        expect(JSON.parse(put.text).error.code).toBe("invalid-policy");
      }
    }
    const ok = puts.filter((x) => x.status === 200);
    const invalid = puts.filter((x) => !x.valid);
    expect(invalid).toHaveLength(20);
    // Every successful PUT got its own revision, no gaps, no duplicates.
    expect(ok.map((x) => x.revision).sort((x, y) => x! - y!)).toEqual(ok.map((_, k) => initial + 1 + k));
    const final = await admin(p.admin, "GET", "/v1/policy");
    expect(final.json.revision).toBe(initial + ok.length);
    const last = ok.find((x) => x.revision === initial + ok.length)!;
    expect(final.json.policy).toEqual(last.body);
    expect(JSON.parse(readFileSync(p.policyFile, "utf8"))).toEqual(last.body);
    expect(readdirSync(path.dirname(p.policyFile)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect((await metric(p.admin, "egress_policy_reload_failures_total")) - failuresBefore).toBe(invalid.length);
    expect(p.proc.exitCode).toBeNull();
    // The load really ran and really saw both policies.
    expect(outcomes.length).toBeGreaterThan(200);
    expect(outcomes.filter(({ r }) => "status" in r && r.status === 200).length).toBeGreaterThan(0);
    expect(outcomes.filter(({ r }) => "status" in r && r.status === 403).length).toBeGreaterThan(0);
  });

  // A revoked request is closed, never answered "upstream-connect-failed" as if the upstream had failed (undici
  // reports the proxy's own abort back through onResponseError, synchronously, before the response is destroyed).
  it("every request is 200 or the exact refusal of a policy in force (no collateral 502 from revocations)", async () => {
    // 200, or the refusal the other policy gives, or (in flight while the policy flipped) closed by a
    // revocation, and never more of those than the proxy counted.
    let closed = 0;
    const unexpected: Outcome[] = [];
    for (const { host, r } of outcomes) {
      if ("error" in r) {
        if (r.error === "ECONNRESET") closed++;
        else unexpected.push({ host, r });
        continue;
      }
      const refusal = host === "a.test" ? { status: 403, code: "domain-denied" } : { status: 403, code: "not-allowed" };
      if (r.status === 200 && r.code === null) continue;
      if (r.status === refusal.status && r.code === refusal.code) continue;
      unexpected.push({ host, r });
    }
    expect(closed).toBeLessThanOrEqual((await metric(p.admin, "egress_revoked_connections_total")) - revokedBefore);
    expect(unexpected).toEqual([]);
  });
});

describe("SIGKILL of the proxy", () => {
  it("keeps the policy file and the revision across a SIGKILL and restart", async () => {
    const p = await start(A);
    for (const body of [B, A, B]) expect((await admin(p.admin, "PUT", "/v1/policy", body)).status).toBe(200);
    const before = (await admin(p.admin, "GET", "/v1/policy")).json;
    expect(before.revision).toBe(4);
    expect(await p.stop("SIGKILL")).toBeNull();
    const q = await start(A, p.policyFile);
    const after = (await admin(q.admin, "GET", "/v1/policy")).json;
    expect(after).toEqual(before);
    expect(JSON.parse(readFileSync(p.policyFile, "utf8"))).toEqual(B);
    expect((await get(q.proxy, "b.test")) as unknown).toEqual({ status: 200, code: null });
    expect((await get(q.proxy, "a.test")) as unknown).toEqual({ status: 403, code: "domain-denied" });
    await q.stop("SIGKILL");
  });

  it("keeps the revision of a PUT answered 200 right before the SIGKILL (repeated)", async () => {
    const p = await start(A);
    let current = p;
    let expected = 1;
    for (let round = 0; round < 5; round++) {
      const body = round % 2 === 0 ? B : A;
      const r = await admin(current.admin, "PUT", "/v1/policy", body);
      expect(r.status).toBe(200);
      expected++;
      expect(r.json.revision).toBe(expected);
      // Kill as soon as the answer is in: nothing may still be pending that the answer promised.
      current.proc.kill("SIGKILL");
      await current.stop("SIGKILL");
      current = await start(A, p.policyFile);
      const g = (await admin(current.admin, "GET", "/v1/policy")).json;
      expect(g).toEqual({ revision: expected, policy: body });
      expect(JSON.parse(readFileSync(p.policyFile, "utf8"))).toEqual(body);
      expect(readdirSync(p.dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    }
    await current.stop("SIGKILL");
  }, 30_000);
});
