/**
 * The path the control module exists for, end to end with the real LocalDriver, a real control process and real
 * curl inside the sandbox: a custom policy from the first packet, pause/resume carrying policy updates, a live
 * change, Leap0 snapshot-and-terminate, and restores with and without an override.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSnapshotManifest } from "../../../src/runtime/local/index.js";
import { startControlProcess, type RunningControl } from "../../helpers/control-process.js";
import { writeHostsFile } from "../../helpers/hosts-file.js";
import { startHttpUpstream, type Upstream } from "../../helpers/upstream.js";
import { api, curlInside, deleteAll, exec, waitForState } from "./helpers.js";

let control: RunningControl;
let allowed: Upstream;
let denied: Upstream;
let base: string;
const timings: Record<string, number> = {};

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  const r = await fn();
  timings[name] = Math.round(performance.now() - t);
  return r;
}

beforeAll(async () => {
  allowed = await startHttpUpstream();
  denied = await startHttpUpstream();
  const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1", "denied.test": "127.0.0.1" });
  control = await startControlProcess({ args: ["--internal-allow", "127.0.0.0/8", "--hosts", hosts] });
  base = control.base;
});

afterAll(async () => {
  if (control) {
    await deleteAll(base);
    await control.stop();
    rmSync(control.dataDir, { recursive: true, force: true });
  }
  await allowed?.close();
  await denied?.close();
  // Measured on this machine; the report quotes them.
  console.log(`control timings (ms): ${JSON.stringify(timings)}`);
});

describe("control end to end: the policy follows the sandbox through its whole life", () => {
  const A = () => `http://allowed.test:${allowed.port}/`;
  const D = () => `http://denied.test:${denied.port}/`;
  let id: string;

  it("creates a sandbox whose proxy enforces a custom policy from the first request", async () => {
    const created = await timed("create (202)", () =>
      api(base, "POST", "/v1/sandboxes", {
        image: { uri: "local:host" },
        timeout: 600,
        entrypoint: ["sh", "-c", "while :; do date +%s%N >> /workspace/ticks; sleep 0.1; done"],
        metadata: { suite: "e2e" },
        networkPolicy: { mode: "custom", allow_domains: ["allowed.test"] },
      }),
    );
    expect(created.status).toBe(202);
    expect(created.headers.get("location")).toBe(`/v1/sandboxes/${created.json.id}`);
    expect(created.json.status.state).toBe("Pending");
    id = created.json.id;
    const t = performance.now();
    const running = await waitForState(base, id, "Running");
    timings["create → Running"] = Math.round(performance.now() - t);
    expect(running.status.reason).toBe("Started");
    expect(running.networkPolicy).toEqual({ mode: "custom", allow_domains: ["allowed.test"] });
  });

  it("lets curl inside reach the allowed upstream and refuses the other with 403 not-allowed", async () => {
    const ok = await curlInside(base, id, A());
    expect(ok.status).toBe(200);
    expect(allowed.requests.length).toBeGreaterThan(0);
    const no = await curlInside(base, id, D());
    expect(no.status).toBe(403);
    expect(no.denied).toBe("not-allowed");
    expect(denied.requests).toHaveLength(0);
  });

  it("has no way out around the proxy: curl --noproxy '*' reaches nothing", async () => {
    const before = allowed.connections + denied.connections;
    for (const url of [`http://127.0.0.1:${allowed.port}/`, `http://127.0.0.1:${denied.port}/`, "http://1.1.1.1/", "http://[::1]:80/"]) {
      const r = await exec(base, id, ["curl", "-sS", "--noproxy", "*", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", url]);
      expect(r.status).toBe(200);
      expect(r.exitCode, `${url}: ${r.stdout} ${r.stderr}`).not.toBe(0);
      expect(r.stdout).toBe("000");
    }
    expect(allowed.connections + denied.connections).toBe(before);
  });

  it("keeps files written to /workspace", async () => {
    const w = await exec(base, id, ["sh", "-c", "echo carried-through > /workspace/x && cat /workspace/x"]);
    expect(w).toMatchObject({ status: 200, exitCode: 0, stdout: "carried-through\n" });
  });

  it("pauses: exec answers 409 and the processes are frozen (the tick file has a gap as long as the pause)", async () => {
    const p = await timed("pause (202)", () => api(base, "POST", `/v1/sandboxes/${id}/pause`));
    expect(p.status).toBe(202);
    const t = performance.now();
    const paused = await waitForState(base, id, "Paused");
    timings["pause → Paused"] = Math.round(performance.now() - t);
    expect(paused.status.reason).toBe("Paused");
    const e = await api(base, "POST", `/v1/sandboxes/${id}/exec`, { command: ["true"] });
    expect(e.status).toBe(409);
    expect(e.json.code).toBe("CONFLICT");
    expect(e.json.message).toContain("Paused");
    // Illegal transitions answer 409 and change nothing.
    const again = await api(base, "POST", `/v1/sandboxes/${id}/pause`);
    expect(again.status).toBe(409);
    expect((await api(base, "GET", `/v1/sandboxes/${id}`)).json.status).toEqual(paused.status);
    await new Promise((r) => setTimeout(r, 1500));
  });

  it("stores a policy changed while paused and applies it on resume", async () => {
    const put = await api(base, "PUT", `/v1/sandboxes/${id}/network-policy`, { mode: "custom", allow_domains: ["allowed.test", "denied.test"] });
    expect(put.status).toBe(200);
    expect(put.headers.get("x-policy-pending")).toBe("true");
    const r = await timed("resume (202)", () => api(base, "POST", `/v1/sandboxes/${id}/resume`));
    expect(r.status).toBe(202);
    const t = performance.now();
    const running = await waitForState(base, id, "Running");
    timings["resume → Running"] = Math.round(performance.now() - t);
    expect(running.status.reason).toBe("Resumed");
    expect((await api(base, "GET", `/v1/sandboxes/${id}/network-policy`)).headers.get("x-policy-pending")).toBe("false");
    const now = await curlInside(base, id, D());
    expect(now.status).toBe(200);
    // Frozen means frozen: no tick was written for (about) as long as the pause lasted.
    const ticks = (await exec(base, id, ["cat", "/workspace/ticks"])).stdout.trim().split("\n").map((l) => Number(BigInt(l) / 1_000_000n));
    const gaps = ticks.slice(1).map((v, i) => v - ticks[i]!);
    expect(Math.max(...gaps)).toBeGreaterThan(1400);
  });

  it("applies a live policy change within a second, while running", async () => {
    const t = performance.now();
    const put = await api(base, "PUT", `/v1/sandboxes/${id}/network-policy`, { mode: "custom", allow_domains: ["allowed.test"] });
    const ms = performance.now() - t;
    timings["live PUT network-policy"] = Math.round(ms);
    expect(put.status).toBe(200);
    expect(put.headers.get("x-policy-pending")).toBe("false");
    expect(ms).toBeLessThan(1000);
    const no = await curlInside(base, id, D());
    expect(no.status).toBe(403);
    expect(no.denied).toBe("not-allowed");
    expect((await curlInside(base, id, A())).status).toBe(200);
  });

  it("rejects an invalid policy with field errors and changes nothing", async () => {
    const bad = await api(base, "PUT", `/v1/sandboxes/${id}/network-policy`, { mode: "deny-all", allow_domains: ["x.test"], deny_cidrs: ["10.0.0.0/33"] });
    expect(bad.status).toBe(400);
    expect(bad.json.code).toBe("INVALID_REQUEST");
    expect(bad.json.message).toMatch(/allow_domains/);
    expect(bad.json.message).toMatch(/deny_cidrs\[0\]/);
    expect((await api(base, "GET", `/v1/sandboxes/${id}/network-policy`)).json).toEqual({ mode: "custom", allow_domains: ["allowed.test"] });
    expect((await curlInside(base, id, A())).status).toBe(200);
  });

  let snapshotId: string;

  it("Leap0 snapshot/pause stores the snapshot with a copy of the policy, then terminates the source", async () => {
    const r = await timed("leap0 snapshot/pause (200)", () => api(base, "POST", `/v1/sandbox/${id}/snapshot/pause`, { name: "e2e-warm" }));
    expect(r.status).toBe(200);
    expect(Object.keys(r.json).sort()).toEqual(["created_at", "disk", "id", "memory", "name", "network_policy", "state", "template_id", "vcpu"]);
    expect(r.json).toMatchObject({ name: "e2e-warm", template_id: "local:host", state: "deleted", network_policy: { mode: "custom", allow_domains: ["allowed.test"] } });
    snapshotId = r.json.id;
    const src = await api(base, "GET", `/v1/sandboxes/${id}`);
    expect(src.json.status).toMatchObject({ state: "Terminated", reason: "SnapshotAndTerminate" });
    const snap = await api(base, "GET", `/v1/snapshots/${snapshotId}`);
    expect(snap.json.status).toMatchObject({ state: "Ready", reason: "SnapshotReady" });
    expect(snap.json.networkPolicy).toEqual({ mode: "custom", allow_domains: ["allowed.test"] });
    // The OCI manifest carries the policy as an annotation.
    const ann = await readSnapshotManifest(path.join(control.dataDir, "snapshots", snapshotId));
    expect(JSON.parse(ann["io.sandbox-egress.policy"]!)).toEqual({ mode: "custom", allow_domains: ["allowed.test"] });
    // The source is Terminated: a second snapshot/pause is a conflict.
    const again = await api(base, "POST", `/v1/sandbox/${id}/snapshot/pause`, { name: "e2e-other" });
    expect(again.status).toBe(409);
    expect(again.json.message).toContain("Terminated");
  });

  it("restores without an override: the file is back and the snapshot's policy holds before anything runs", async () => {
    const r = await timed("leap0 restore (200, running)", () => api(base, "POST", "/v1/snapshot/restore", { snapshot_name: "e2e-warm" }));
    expect(r.status).toBe(200);
    expect(Object.keys(r.json).sort()).toEqual(["auto_pause", "created_at", "disk", "id", "memory", "network_policy", "state", "template_id", "timeout", "vcpu"]);
    expect(r.json).toMatchObject({ state: "running", timeout: 300, auto_pause: false, network_policy: { mode: "custom", allow_domains: ["allowed.test"] } });
    const rid = r.json.id as string;
    expect((await exec(base, rid, ["cat", "/workspace/x"])).stdout).toBe("carried-through\n");
    expect((await curlInside(base, rid, A())).status).toBe(200);
    const no = await curlInside(base, rid, D());
    expect(no.status).toBe(403);
    expect(no.denied).toBe("not-allowed");
    expect((await api(base, "GET", `/v1/sandboxes/${rid}`)).json.snapshotId).toBe(snapshotId);
  });

  it("restores with an override: the override, not the snapshot's policy, holds", async () => {
    const r = await api(base, "POST", "/v1/snapshot/restore", { snapshot_name: "e2e-warm", timeout: 120, network_policy: { mode: "custom", allow_domains: ["denied.test"] } });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ state: "running", timeout: 120, network_policy: { mode: "custom", allow_domains: ["denied.test"] } });
    const rid = r.json.id as string;
    expect((await exec(base, rid, ["cat", "/workspace/x"])).stdout).toBe("carried-through\n");
    expect((await curlInside(base, rid, D())).status).toBe(200);
    const no = await curlInside(base, rid, A());
    expect(no.status).toBe(403);
    expect(no.denied).toBe("not-allowed");
  });

  it("restores through OpenSandbox (snapshotId) with a deny-all override", async () => {
    const r = await api(base, "POST", "/v1/sandboxes", { snapshotId, networkPolicy: { mode: "deny-all" } });
    expect(r.status).toBe(202);
    const s = await waitForState(base, r.json.id, "Running");
    expect(s.snapshotId).toBe(snapshotId);
    expect(s.networkPolicy).toEqual({ mode: "deny-all" });
    const no = await curlInside(base, r.json.id, A());
    expect(no.status).toBe(403);
    expect(no.denied).toBe("mode-deny-all");
    expect((await exec(base, r.json.id, ["cat", "/workspace/x"])).stdout).toBe("carried-through\n");
  });
});
