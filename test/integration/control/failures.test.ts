/**
 * Failures the real LocalDriver cannot be made to produce on demand (a snapshot that fails mid-way, a proxy that
 * refuses a policy, a runtime that cannot start anything): the lifecycle service and the REST adapters over a
 * driver whose failures are switches. Every other control test runs the real LocalDriver.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControl, type RunningControl } from "../../../src/commands/control.js";
import { createLogger } from "../../../src/telemetry/logger.js";
import { FailingDriver } from "../../helpers/fake-driver.js";
import { api, waitForState } from "./helpers.js";

let dir: string;
let control: RunningControl;
let driver: FailingDriver;
let base: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "control-fail-"));
  driver = new FailingDriver();
  control = await startControl(
    { listen: "127.0.0.1:0", dataDir: dir, proxyArgs: [], logLevel: "silent" },
    { driver, log: createLogger({ level: "silent" }) },
  );
  base = `http://${control.api}`;
});
afterAll(async () => {
  await control?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function running(policy: unknown = { mode: "custom", allow_domains: ["a.test"] }): Promise<string> {
  const r = await api(base, "POST", "/v1/sandboxes", { image: { uri: "local:host" }, networkPolicy: policy });
  expect(r.status).toBe(202);
  const id = r.json.id as string;
  await waitForState(base, id, "Running");
  return id;
}

describe("control: failures the runtime reports", () => {
  it("Leap0 snapshot/pause whose snapshot fails keeps the source running, says why, and frees the name", async () => {
    const id = await running();
    driver.failSnapshot = "disk full while writing the layer";
    const r = await api(base, "POST", `/v1/sandbox/${id}/snapshot/pause`, { name: "warm-fail" });
    expect(r.status).toBe(500);
    expect(r.json.message).toContain("disk full while writing the layer");
    expect(r.json.message).toContain("not terminated");
    expect((await api(base, "GET", `/v1/sandbox/${id}/`)).json.state).toBe("running");
    expect((await api(base, "GET", `/v1/sandboxes/${id}`)).json.status.state).toBe("Running");
    const snaps = await api(base, "GET", `/v1/snapshots?sandboxId=${id}`);
    expect(snaps.json.items).toHaveLength(1);
    expect(snaps.json.items[0].status).toMatchObject({ state: "Failed", reason: "SnapshotFailed" });
    expect(snaps.json.items[0].status.message).toContain("disk full");

    driver.failSnapshot = null;
    const again = await api(base, "POST", `/v1/sandbox/${id}/snapshot/pause`, { name: "warm-fail" });
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ name: "warm-fail", state: "deleted" });
    expect((await api(base, "GET", `/v1/sandboxes/${id}`)).json.status).toMatchObject({ state: "Terminated", reason: "SnapshotAndTerminate" });
  });

  it("an OpenSandbox snapshot that fails ends Failed with the reason; the sandbox keeps running", async () => {
    const id = await running();
    driver.failSnapshot = "layer digest mismatch";
    const r = await api(base, "POST", `/v1/sandboxes/${id}/snapshots`, {});
    expect(r.status).toBe(202);
    expect(r.json.status.state).toBe("Creating");
    await control.service.idle();
    const s = await api(base, "GET", `/v1/snapshots/${r.json.id}`);
    expect(s.json.status).toMatchObject({ state: "Failed", reason: "SnapshotFailed" });
    expect(s.json.status.message).toContain("layer digest mismatch");
    expect((await api(base, "GET", `/v1/sandboxes/${id}`)).json.status.state).toBe("Running");
    driver.failSnapshot = null;
  });

  it("a policy the proxy refuses answers 500 and the previous policy stays, in the store and in the proxy", async () => {
    const id = await running({ mode: "custom", allow_domains: ["before.test"] });
    driver.failSetPolicy = "transforms[0].inject_headers.Authorization references environment variable NOPE, which is not set";
    const r = await api(base, "PUT", `/v1/sandboxes/${id}/network-policy`, {
      mode: "custom",
      allow_domains: ["after.test"],
      transforms: [{ domain: "api.after.test", inject_headers: { Authorization: "Bearer ${env:NOPE}" } }],
    });
    expect(r.status).toBe(500);
    expect(r.json.code).toBe("INTERNAL_ERROR");
    expect(r.json.message).toContain("previous one stays in force");
    driver.failSetPolicy = null;
    const g = await api(base, "GET", `/v1/sandboxes/${id}/network-policy`);
    expect(g.json).toEqual({ mode: "custom", allow_domains: ["before.test"] });
    expect(driver.sandboxes.get(id)!.policy).toEqual({ mode: "custom", allow_domains: ["before.test"] });
  });

  it("a sandbox the runtime cannot start ends Failed with ProvisionFailed and the runtime's reason", async () => {
    driver.failCreate = "bwrap: setting up uid map: Permission denied";
    const r = await api(base, "POST", "/v1/sandboxes", { image: { uri: "local:host" } });
    expect(r.status).toBe(202);
    const s = await waitForState(base, r.json.id as string, "Failed");
    expect(s.status.reason).toBe("ProvisionFailed");
    expect(s.status.message).toContain("Permission denied");
    driver.failCreate = null;
    const leap = await api(base, "POST", "/v1/sandbox/", {});
    expect(leap.status).toBe(200);
    expect(leap.json.state).toBe("running");
  });

  it("a snapshot being created cannot be deleted, and its name is taken until it ends (409 both)", async () => {
    const id = await running();
    driver.snapshotDelayMs = 800;
    const r = await api(base, "POST", `/v1/sandboxes/${id}/snapshots`, { name: "slow" });
    expect(r.status).toBe(202);
    const d = await api(base, "DELETE", `/v1/snapshots/${r.json.id}`);
    expect(d.status).toBe(409);
    expect(d.json.message).toContain("still being created");
    const dup = await api(base, "POST", `/v1/sandbox/${id}/snapshot/create`, { name: "slow" });
    expect(dup.status).toBe(409);
    expect(dup.json.message).toContain("being created");
    expect((await api(base, "GET", `/v1/sandbox/${id}/`)).json.state).toBe("snapshotting");
    await control.service.idle();
    driver.snapshotDelayMs = 0;
    expect((await api(base, "GET", `/v1/snapshots/${r.json.id}`)).json.status.state).toBe("Ready");
    expect((await api(base, "GET", `/v1/sandbox/${id}/`)).json.state).toBe("running");
    expect((await api(base, "DELETE", `/v1/snapshots/${r.json.id}`)).status).toBe(204);
  });

  it("serialises concurrent policy updates: the proxy ends with the policy the store says is in force", async () => {
    const id = await running();
    const puts = await Promise.all(
      Array.from({ length: 8 }, (_, i) => api(base, "PUT", `/v1/sandboxes/${id}/network-policy`, { mode: "custom", allow_domains: [`n${i}.test`] })),
    );
    expect(puts.map((p) => p.status)).toEqual(Array(8).fill(200));
    const stored = (await api(base, "GET", `/v1/sandboxes/${id}/network-policy`)).json;
    expect(driver.sandboxes.get(id)!.policy).toEqual(stored);
  });
});
