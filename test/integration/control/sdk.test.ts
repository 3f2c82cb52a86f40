/**
 * The official OpenSandbox TypeScript SDK drives the canonical API unchanged: create, getInfo, egress
 * get/patch/delete (through GET /v1/sandboxes/{id}/endpoints/18080), pause, resume, renew, snapshots, list and
 * kill, against a real control process with an API key and the real LocalDriver.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConnectionConfig, Sandbox, SandboxApiException } from "@alibaba-group/opensandbox";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlProcess, type RunningControl } from "../../helpers/control-process.js";
import { writeHostsFile } from "../../helpers/hosts-file.js";
import { startHttpUpstream, type Upstream } from "../../helpers/upstream.js";
import { api, curlInside, deleteAll, waitForSnapshot } from "./helpers.js";

const KEY = "sdk-test-key-3f9a1c";
const AUTH = { "OPEN-SANDBOX-API-KEY": KEY };
let control: RunningControl;
let keyDir: string;
let allowed: Upstream;
let other: Upstream;
let config: ConnectionConfig;

beforeAll(async () => {
  allowed = await startHttpUpstream();
  other = await startHttpUpstream();
  const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1", "other.test": "127.0.0.1" });
  keyDir = mkdtempSync(path.join(tmpdir(), "sdk-key-"));
  const keyFile = path.join(keyDir, "key");
  writeFileSync(keyFile, `${KEY}\n`);
  control = await startControlProcess({ args: ["--internal-allow", "127.0.0.0/8", "--hosts", hosts, "--api-key-file", keyFile] });
  config = new ConnectionConfig({ domain: control.api, apiKey: KEY, requestTimeoutSeconds: 60 });
});

afterAll(async () => {
  if (control) {
    await deleteAll(control.base, AUTH);
    await control.stop();
    rmSync(control.dataDir, { recursive: true, force: true });
    rmSync(keyDir, { recursive: true, force: true });
  }
  await config?.closeTransport();
  await allowed?.close();
  await other?.close();
});

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("OpenSandbox SDK against the control module", () => {
  let sbx: Sandbox;

  it("creates a sandbox with an OpenSandbox networkPolicy and reads it back with getInfo", async () => {
    sbx = await Sandbox.create({
      connectionConfig: config,
      image: "local:host",
      networkPolicy: { defaultAction: "deny", egress: [{ action: "allow", target: "allowed.test" }] },
      metadata: { suite: "sdk", team: "egress" },
      timeoutSeconds: 600,
      skipHealthCheck: true,
    });
    expect(sbx.id).toMatch(/^sbx-/);
    const info = await until(() => sbx.getInfo(), (i) => i.status.state === "Running");
    expect(info.status).toMatchObject({ state: "Running", reason: "Started" });
    expect(info.image).toEqual({ uri: "local:host" });
    expect(info.entrypoint).toEqual(["tail", "-f", "/dev/null"]);
    expect(info.metadata).toEqual({ suite: "sdk", team: "egress" });
    expect(info.expiresAt).toBeInstanceOf(Date);
    expect(info.networkPolicy).toEqual({ mode: "custom", allow_domains: ["allowed.test"] });
  });

  it("reads, patches and deletes egress rules through the sidecar endpoint, live", async () => {
    expect(await sbx.getEgressPolicy()).toEqual({ defaultAction: "deny", egress: [{ action: "allow", target: "allowed.test" }] });
    expect((await curlInside(control.base, sbx.id, `http://other.test:${other.port}/`, [], AUTH)).denied).toBe("not-allowed");

    await sbx.patchEgressRules([{ action: "allow", target: "other.test" }]);
    expect(await sbx.getEgressPolicy()).toEqual({
      defaultAction: "deny",
      egress: [
        { action: "allow", target: "other.test" },
        { action: "allow", target: "allowed.test" },
      ],
    });
    expect((await curlInside(control.base, sbx.id, `http://other.test:${other.port}/`, [], AUTH)).status).toBe(200);

    await sbx.deleteEgressRules(["other.test"]);
    expect((await curlInside(control.base, sbx.id, `http://other.test:${other.port}/`, [], AUTH)).denied).toBe("not-allowed");
    // The store followed every change: what a snapshot or resume would carry is what the proxy enforces.
    expect((await api(control.base, "GET", `/v1/sandboxes/${sbx.id}/network-policy`, undefined, AUTH)).json).toEqual({ mode: "custom", allow_domains: ["allowed.test"] });
  });

  it("refuses an invalid egress rule with a 400 that names the rule", async () => {
    const err = await sbx.patchEgressRules([{ action: "allow", target: "*.com" }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxApiException);
    expect((err as SandboxApiException).statusCode).toBe(400);
    expect((err as SandboxApiException).message).toMatch(/^\[0\]\.target: .*public suffix/);
  });

  it("pauses and resumes; the SDK sees Paused, then Running", async () => {
    await sbx.pause();
    const paused = await until(() => sbx.getInfo(), (i) => i.status.state === "Paused");
    expect(paused.status.state).toBe("Paused");
    const conflict = await sbx.pause().catch((e: unknown) => e);
    expect((conflict as SandboxApiException).statusCode).toBe(409);
    sbx = await sbx.resume({ skipHealthCheck: true });
    const running = await until(() => sbx.getInfo(), (i) => i.status.state === "Running");
    expect(running.status.reason).toBe("Resumed");
    expect((await curlInside(control.base, sbx.id, `http://allowed.test:${allowed.port}/`, [], AUTH)).status).toBe(200);
  });

  it("renews the expiration (only forwards)", async () => {
    const before = (await sbx.getInfo()).expiresAt!;
    const r = await sbx.renew(3600);
    expect(r.expiresAt).toBeInstanceOf(Date);
    expect((r.expiresAt as Date).getTime()).toBeGreaterThan(before.getTime());
    expect((await sbx.getInfo()).expiresAt!.getTime()).toBe((r.expiresAt as Date).getTime());
    const back = await sbx.renew(10).catch((e: unknown) => e);
    expect((back as SandboxApiException).statusCode).toBe(400);
    expect((back as SandboxApiException).message).toContain("expiresAt");
  });

  it("patches metadata and lists by state and metadata", async () => {
    const info = await sbx.patchMetadata({ team: null, stage: "two" });
    expect(info.metadata).toEqual({ suite: "sdk", stage: "two" });
    const list = await sbx.sandboxes.listSandboxes({ states: ["Running", "Paused"], metadata: { suite: "sdk", stage: "two" } });
    expect(list.items.map((i) => i.id)).toEqual([sbx.id]);
    expect(list.pagination).toMatchObject({ page: 1, totalItems: 1, totalPages: 1, hasNextPage: false });
    const none = await sbx.sandboxes.listSandboxes({ metadata: { suite: "nope" } });
    expect(none.items).toEqual([]);
  });

  let snapshotId: string;

  it("snapshots (Creating → Ready) and lists snapshots", async () => {
    expect((await api(control.base, "POST", `/v1/sandboxes/${sbx.id}/exec`, { command: ["sh", "-c", "echo from-sdk > /workspace/f"] }, AUTH)).json.exitCode).toBe(0);
    const created = await sbx.sandboxes.createSnapshot(sbx.id, { name: "sdk-snap" });
    expect(created.status.state).toBe("Creating");
    expect(created.sandboxId).toBe(sbx.id);
    snapshotId = created.id;
    const ready = await until(() => sbx.sandboxes.getSnapshot(snapshotId), (s) => s.status.state === "Ready");
    expect(ready.status).toMatchObject({ state: "Ready", reason: "SnapshotReady" });
    const list = await sbx.sandboxes.listSnapshots({ sandboxId: sbx.id });
    expect(list.items.map((s) => s.id)).toEqual([snapshotId]);
    expect((await sbx.sandboxes.listSnapshots({ states: ["Failed"], sandboxId: sbx.id })).items).toEqual([]);
    const dup = await sbx.sandboxes.createSnapshot(sbx.id, { name: "sdk-snap" }).catch((e: unknown) => e);
    expect((dup as SandboxApiException).statusCode).toBe(409);
  });

  it("kills the sandbox: Stopping, then Terminated, and the record stays", async () => {
    await sbx.kill();
    const gone = await until(() => sbx.getInfo(), (i) => i.status.state === "Terminated");
    expect(gone.status).toMatchObject({ state: "Terminated", reason: "UserDelete" });
    const again = await sbx.kill().catch((e: unknown) => e);
    expect((again as SandboxApiException).statusCode).toBe(409);
    await sbx.close();
  });

  it("restores from the snapshot with the snapshot's policy, and waits for readiness through the health ping", async () => {
    const restored = await Sandbox.create({ connectionConfig: config, snapshotId, readyTimeoutSeconds: 30 });
    const info = await restored.getInfo();
    expect(info.status.state).toBe("Running");
    expect(info.snapshotId).toBe(snapshotId);
    expect(await restored.getEgressPolicy()).toEqual({ defaultAction: "deny", egress: [{ action: "allow", target: "allowed.test" }] });
    expect((await api(control.base, "POST", `/v1/sandboxes/${restored.id}/exec`, { command: ["cat", "/workspace/f"] }, AUTH)).json.stdout).toBe("from-sdk\n");
    await restored.kill();
    await restored.close();
    const snap = await waitForSnapshot(control.base, snapshotId, ["Ready"], 5000, AUTH);
    expect(snap.id).toBe(snapshotId);
  });

  it("answers 401 to the SDK without the key", async () => {
    const anon = new ConnectionConfig({ domain: control.api, requestTimeoutSeconds: 10 });
    const err = await Sandbox.create({ connectionConfig: anon, image: "local:host", skipHealthCheck: true }).catch((e: unknown) => e);
    expect((err as SandboxApiException).statusCode).toBe(401);
    await anon.closeTransport();
  });
});
