/**
 * The control REST's contract with raw HTTP against a real control process (API key configured) and the real
 * LocalDriver: exact response shapes, validation errors that name fields, auth, 404/405/409/413, pagination,
 * expiry, secrets, the OpenAPI document, and the Leap0 and Tensorlake routes.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import * as S from "../../../src/control/routes/schemas.js";
import { probeCriu, readSnapshotManifest } from "../../../src/runtime/local/index.js";
import { startControlProcess, type RunningControl } from "../../helpers/control-process.js";
import { writeHostsFile } from "../../helpers/hosts-file.js";
import { startHttpUpstream, type Upstream } from "../../helpers/upstream.js";
import { api as rawApi, deleteAll, exec, waitForSnapshot, waitForState as rawWait, type ApiResponse } from "./helpers.js";

const KEY = "api-test-key-8c2d";
const AUTH = { "OPEN-SANDBOX-API-KEY": KEY };
const SECRET = "tok-never-leaves-the-proxy-41d7";
let control: RunningControl;
let keyDir: string;
let upstream: Upstream;
let base: string;

const api = (method: string, p: string, body?: unknown, headers: Record<string, string> = AUTH): Promise<ApiResponse> => rawApi(base, method, p, body, headers);
const waitForState = (id: string, state: string, timeoutMs?: number) => rawWait(base, id, state, timeoutMs, AUTH);

/** A response must have exactly the documented fields: strict() turns any extra key into an error. */
function exact<T extends z.ZodObject>(schema: T, value: unknown): void {
  const r = schema.strict().safeParse(value);
  expect(r.success, r.success ? "" : JSON.stringify(r.error.issues)).toBe(true);
}

async function runningSandbox(body: Record<string, unknown> = {}): Promise<string> {
  const r = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, ...body });
  expect(r.status, r.text).toBe(202);
  await waitForState(r.json.id, "Running");
  return r.json.id as string;
}

beforeAll(async () => {
  upstream = await startHttpUpstream();
  const hosts = await writeHostsFile({ "up.test": "127.0.0.1" });
  keyDir = mkdtempSync(path.join(tmpdir(), "api-key-"));
  const keyFile = path.join(keyDir, "key");
  writeFileSync(keyFile, KEY);
  control = await startControlProcess({
    args: ["--internal-allow", "127.0.0.0/8", "--hosts", hosts, "--api-key-file", keyFile],
    env: { EGRESS_TEST_TOKEN: SECRET },
  });
  base = control.base;
});

afterAll(async () => {
  if (control) {
    await deleteAll(base, AUTH);
    expect(await control.stop()).toBe(0);
    rmSync(control.dataDir, { recursive: true, force: true });
    rmSync(keyDir, { recursive: true, force: true });
    // Never in a log line either.
    expect(control.lines.join("\n")).not.toContain(SECRET);
  }
  await upstream?.close();
});

describe("control API: meta, auth and errors", () => {
  it("answers /healthz and /openapi.json without a key", async () => {
    const h = await api("GET", "/healthz", undefined, {});
    expect(h.status).toBe(200);
    expect(h.json).toEqual({ status: "ok" });
    const o = await api("GET", "/openapi.json", undefined, {});
    expect(o.status).toBe(200);
    expect(o.json.openapi).toBe("3.1.0");
  });

  it("lists every route in the OpenAPI document, with request schemas generated from zod", async () => {
    const doc = (await api("GET", "/openapi.json")).json;
    const listed = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    expect(listed.sort()).toEqual(
      [
        "GET /healthz",
        "GET /openapi.json",
        "POST /v1/sandboxes",
        "GET /v1/sandboxes",
        "GET /v1/sandboxes/{sandboxId}",
        "DELETE /v1/sandboxes/{sandboxId}",
        "PATCH /v1/sandboxes/{sandboxId}/metadata",
        "POST /v1/sandboxes/{sandboxId}/pause",
        "POST /v1/sandboxes/{sandboxId}/resume",
        "POST /v1/sandboxes/{sandboxId}/renew-expiration",
        "GET /v1/sandboxes/{sandboxId}/endpoints/{port}",
        "GET /v1/sandboxes/{sandboxId}/ports/{port}/ping",
        "GET /v1/sandboxes/{sandboxId}/egress/policy",
        "PATCH /v1/sandboxes/{sandboxId}/egress/policy",
        "DELETE /v1/sandboxes/{sandboxId}/egress/policy",
        "GET /v1/sandboxes/{sandboxId}/network-policy",
        "PUT /v1/sandboxes/{sandboxId}/network-policy",
        "POST /v1/sandboxes/{sandboxId}/exec",
        "POST /v1/sandboxes/{sandboxId}/snapshots",
        "GET /v1/snapshots",
        "GET /v1/snapshots/{snapshotId}",
        "DELETE /v1/snapshots/{snapshotId}",
        "POST /v1/metrics/events",
        "POST /v1/sandbox",
        "GET /v1/sandbox/{sandboxId}",
        "DELETE /v1/sandbox/{sandboxId}",
        "POST /v1/sandbox/{sandboxId}/pause",
        "POST /v1/sandbox/{sandboxId}/snapshot/create",
        "POST /v1/sandbox/{sandboxId}/snapshot/pause",
        "POST /v1/snapshot/restore",
        "POST /sandboxes/{sandboxId}/snapshot",
      ].sort(),
    );
    const create = doc.components.schemas.CreateSandboxRequest;
    expect(create.additionalProperties).toBe(false);
    expect(Object.keys(create.properties)).toEqual(expect.arrayContaining(["image", "snapshotId", "timeout", "networkPolicy", "env", "metadata", "entrypoint"]));
    expect(doc.components.schemas.NetworkPolicyInput.anyOf).toEqual([{ $ref: "#/components/schemas/Policy" }, { $ref: "#/components/schemas/OpenSandboxNetworkPolicy" }]);
    expect(doc.components.schemas.Policy.properties.mode.enum).toEqual(["allow-all", "deny-all", "custom"]);
    expect(doc.paths["/v1/snapshot/restore"].post.requestBody.content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Leap0RestoreRequest" });
  });

  it("answers 401 without the key, in each family's error format", async () => {
    const os = await api("GET", "/v1/sandboxes", undefined, {});
    expect(os.status).toBe(401);
    expect(os.json).toEqual({ code: "UNAUTHORIZED", message: expect.stringContaining("OPEN-SANDBOX-API-KEY") });
    const leap = await api("POST", "/v1/sandbox/", {}, { "leap0-authorization": "wrong" });
    expect(leap.status).toBe(401);
    expect(Object.keys(leap.json)).toEqual(["message"]);
    const tl = await api("POST", "/sandboxes/sbx-x/snapshot", {}, { authorization: "Bearer wrong" });
    expect(tl.status).toBe(401);
    expect(Object.keys(tl.json)).toEqual(["message"]);
    // Unknown routes do not tell an anonymous caller what exists.
    expect((await api("GET", "/v1/nothing-here", undefined, {})).status).toBe(401);
  });

  it("refuses to listen beyond loopback without an API key", async () => {
    const err = await startControlProcess({ listen: "0.0.0.0:0", env: { SANDBOX_EGRESS_API_KEY: "" } }).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/exited with 2/);
    expect((err as Error).message).toContain("refusing to start the control API on 0.0.0.0:0 without an API key");
  });

  it("accepts the key in any of the three headers", async () => {
    const variants: Record<string, string>[] = [{ "OPEN-SANDBOX-API-KEY": KEY }, { authorization: `Bearer ${KEY}` }, { "leap0-authorization": KEY }];
    for (const h of variants) {
      expect((await api("GET", "/v1/sandboxes", undefined, h)).status, JSON.stringify(Object.keys(h))).toBe(200);
    }
  });

  it("answers 404 for unknown ids and routes, 405 for a wrong method, in each family's format", async () => {
    expect(await api("GET", "/v1/sandboxes/sbx-nope")).toMatchObject({ status: 404, json: { code: "NOT_FOUND", message: "No sandbox sbx-nope." } });
    expect(await api("GET", "/v1/snapshots/snap-nope")).toMatchObject({ status: 404, json: { code: "NOT_FOUND" } });
    expect(await api("DELETE", "/v1/snapshots/snap-nope")).toMatchObject({ status: 404 });
    expect(await api("GET", "/v1/sandbox/sbx-nope/")).toMatchObject({ status: 404, json: { message: "No sandbox sbx-nope." } });
    expect(await api("POST", "/sandboxes/sbx-nope/snapshot", {})).toMatchObject({ status: 404, json: { message: "No sandbox sbx-nope." } });
    expect(await api("POST", "/v1/snapshot/restore", { snapshot_name: "nope" })).toMatchObject({ status: 404, json: { message: 'No snapshot named "nope".' } });
    expect(await api("GET", "/v1/nope")).toMatchObject({ status: 404, json: { code: "NOT_FOUND" } });
    const m = await api("PUT", "/v1/sandboxes");
    expect(m.status).toBe(405);
    expect(m.headers.get("allow")).toBe("POST, GET");
  });

  it("answers 400 to invalid JSON and 413 to an oversized body, never echoing the body", async () => {
    const bad = await api("POST", "/v1/sandboxes", '{"image": {"uri": "local:host"}, "env": {"K": "sk-echo-me"');
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ code: "INVALID_JSON", message: "The request body is not valid JSON." });
    expect(bad.text).not.toContain("sk-echo-me");
    const big = await api("POST", "/v1/sandboxes", JSON.stringify({ metadata: { pad: "x".repeat(33 * 1024 * 1024) } }));
    expect(big.status).toBe(413);
    expect(big.json.code).toBe("BODY_TOO_LARGE");
  });

  it("names every invalid field on create, and creates nothing", async () => {
    const before = (await api("GET", "/v1/sandboxes")).json.pagination.totalItems;
    const r = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, timeout: "soon", env: { "1BAD": "x" }, volumes: [{ name: "v" }], bogus: true });
    expect(r.status).toBe(400);
    expect(r.json.code).toBe("INVALID_REQUEST");
    for (const f of ["timeout", "env", "volumes", "bogus"]) expect(r.json.message).toContain(f);
    const img = await api("POST", "/v1/sandboxes", { image: { uri: "python:3.11" } });
    expect(img.status).toBe(400);
    expect(img.json.message).toBe('image.uri: "python:3.11" is not an image this runtime has; use one of "local:host"');
    const os = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, networkPolicy: { defaultAction: "deny", egress: [{ action: "allow", target: "ok.test" }, { action: "allow", target: "*.co.uk" }] } });
    expect(os.status).toBe(400);
    expect(os.json.message).toMatch(/^networkPolicy\.egress\[1\]\.target: /);
    const proj = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, networkPolicy: { mode: "allow-all", allow_domains: ["a.test"] } });
    expect(proj.status).toBe(400);
    expect(proj.json.message).toMatch(/^networkPolicy\.allow_domains: .*only applies in mode "custom"/);
    const neither = await api("POST", "/v1/sandboxes", {});
    expect(neither.json.message).toMatch(/^image: /);
    const both = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, snapshotId: "snap-x" });
    expect(both.json.message).toMatch(/^snapshotId: .*mutually exclusive/);
    const res = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, resourceLimits: { cpu: "lots" } });
    expect(res.json.message).toMatch(/^resourceLimits\.cpu: /);
    const meta = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, metadata: { "opensandbox.io/owner": "x" } });
    expect(meta.json.message).toMatch(/^metadata\.opensandbox\.io\/owner|^metadata\["opensandbox\.io\/owner"\]/);
    expect((await api("GET", "/v1/sandboxes")).json.pagination.totalItems).toBe(before);
  });
});

describe("control API: OpenSandbox lifecycle", () => {
  let id: string;

  it("creates with the exact CreateSandboxResponse shape and shows the exact Sandbox shape", async () => {
    const r = await api("POST", "/v1/sandboxes", {
      image: { uri: "local:host" },
      timeout: 900,
      resourceLimits: { cpu: "500m", memory: "512Mi" },
      env: { GREETING: "hi" },
      metadata: { suite: "api", group: "one" },
      networkPolicy: { defaultAction: "deny", egress: [{ action: "allow", target: "up.test" }] },
    });
    expect(r.status).toBe(202);
    exact(S.createSandboxResponse, r.json);
    expect(r.json.status).toMatchObject({ state: "Pending", reason: "Provisioning" });
    expect(Date.parse(r.json.expiresAt) - Date.parse(r.json.createdAt)).toBe(900_000);
    id = r.json.id;
    const s = await waitForState(id, "Running");
    exact(S.sandboxView, s);
    exact(S.sandboxStatus, s.status);
    expect(s.networkPolicy).toEqual({ mode: "custom", allow_domains: ["up.test"] });
    expect((await exec(base, id, ["sh", "-c", "echo $GREETING"], AUTH)).stdout).toBe("hi\n");
  });

  it("refuses illegal transitions with 409 and changes nothing", async () => {
    const before = (await api("GET", `/v1/sandboxes/${id}`)).json;
    const r = await api("POST", `/v1/sandboxes/${id}/resume`);
    expect(r.status).toBe(409);
    expect(r.json).toEqual({ code: "CONFLICT", message: `Cannot resume sandbox ${id}: it is Running.` });
    expect((await api("GET", `/v1/sandboxes/${id}`)).json).toEqual(before);
  });

  it("renews only forwards, with errors on expiresAt", async () => {
    const cur = Date.parse((await api("GET", `/v1/sandboxes/${id}`)).json.expiresAt);
    expect((await api("POST", `/v1/sandboxes/${id}/renew-expiration`, { expiresAt: "yesterday" })).json.message).toMatch(/^expiresAt: /);
    expect((await api("POST", `/v1/sandboxes/${id}/renew-expiration`, { expiresAt: new Date(Date.now() - 1000).toISOString() })).json.message).toBe("expiresAt: must be in the future");
    const earlier = await api("POST", `/v1/sandboxes/${id}/renew-expiration`, { expiresAt: new Date(cur - 60_000).toISOString() });
    expect(earlier.status).toBe(400);
    expect(earlier.json.message).toMatch(/^expiresAt: must be after the current expiresAt/);
    const later = new Date(cur + 3_600_000).toISOString();
    const ok = await api("POST", `/v1/sandboxes/${id}/renew-expiration`, { expiresAt: later });
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ expiresAt: later });
    expect((await api("GET", `/v1/sandboxes/${id}`)).json.expiresAt).toBe(later);
  });

  it("patches metadata with JSON Merge Patch", async () => {
    const r = await api("PATCH", `/v1/sandboxes/${id}/metadata`, { group: null, stage: "b" });
    expect(r.status).toBe(200);
    expect(r.json.metadata).toEqual({ suite: "api", stage: "b" });
    const bad = await api("PATCH", `/v1/sandboxes/${id}/metadata`, { "opensandbox.io/x": "y" });
    expect(bad.status).toBe(400);
    expect(bad.json.message).toContain("opensandbox.io/x");
  });

  it("gives the egress sidecar endpoint on this server, and a readiness ping", async () => {
    const e = await api("GET", `/v1/sandboxes/${id}/endpoints/18080`);
    expect(e.json).toEqual({ endpoint: `${control.api}/v1/sandboxes/${id}/egress` });
    exact(S.endpointView, e.json);
    const p = await api("GET", `/v1/sandboxes/${id}/egress/policy`);
    expect(p.json).toEqual({ status: "ok", mode: "custom", enforcementMode: "proxy", policy: { defaultAction: "deny", egress: [{ action: "allow", target: "up.test" }] } });
    expect((await api("GET", `/v1/sandboxes/${id}/endpoints/0`)).json.message).toMatch(/^port: /);
    expect((await api("GET", `/v1/sandboxes/${id}/endpoints/44772`)).json.endpoint).toBe(`${control.api}/v1/sandboxes/${id}/ports/44772`);
    expect((await api("GET", `/v1/sandboxes/${id}/ports/44772/ping`)).text).toBe("pong");
  });

  it("lists with state (OR) and metadata (AND) filters and paginates", async () => {
    const others = await Promise.all([runningSandbox({ metadata: { suite: "api", group: "two" } }), runningSandbox({ metadata: { suite: "api", group: "two" } })]);
    const page1 = await api("GET", "/v1/sandboxes?metadata=suite%3Dapi&pageSize=2&page=1&state=Running&state=Paused");
    exact(S.pagination, page1.json.pagination);
    expect(page1.json.pagination).toEqual({ page: 1, pageSize: 2, totalItems: 3, totalPages: 2, hasNextPage: true });
    const page2 = await api("GET", "/v1/sandboxes?metadata=suite%3Dapi&pageSize=2&page=2&state=Running");
    expect(page2.json.pagination).toEqual({ page: 2, pageSize: 2, totalItems: 3, totalPages: 2, hasNextPage: false });
    expect(new Set([...page1.json.items, ...page2.json.items].map((s: { id: string }) => s.id))).toEqual(new Set([id, ...others]));
    const two = await api("GET", `/v1/sandboxes?metadata=${encodeURIComponent("suite=api&group=two")}`);
    expect(two.json.items.map((s: { id: string }) => s.id).sort()).toEqual([...others].sort());
    expect((await api("GET", "/v1/sandboxes?state=Paused&metadata=suite%3Dapi")).json.items).toEqual([]);
    expect((await api("GET", "/v1/sandboxes?state=Sleeping")).json.message).toMatch(/^state: "Sleeping" is not a state/);
    expect((await api("GET", "/v1/sandboxes?page=0")).json.message).toMatch(/^page: /);
    expect((await api("GET", "/v1/sandboxes?pageSize=5000")).json.message).toMatch(/^pageSize: /);
    for (const o of others) expect((await api("DELETE", `/v1/sandboxes/${o}`)).status).toBe(204);
  });

  it("snapshots with the exact Snapshot shape, lists and deletes them; memory answers 400 with the reason", async () => {
    await exec(base, id, ["sh", "-c", "echo s > /workspace/s"], AUTH);
    const mem = await api("POST", `/v1/sandboxes/${id}/snapshots`, { snapshotType: "memory" });
    expect(mem.status).toBe(400);
    expect(mem.json.code).toBe("UNSUPPORTED");
    const r = await api("POST", `/v1/sandboxes/${id}/snapshots`, { name: "api-snap" });
    expect(r.status).toBe(202);
    exact(S.snapshotView, r.json);
    expect(r.headers.get("location")).toBe(`/v1/snapshots/${r.json.id}`);
    expect(r.json.status).toMatchObject({ state: "Creating", reason: "SnapshotAccepted" });
    const ready = await waitForSnapshot(base, r.json.id, ["Ready", "Failed"], 30_000, AUTH);
    expect(ready.status.state).toBe("Ready");
    exact(S.snapshotView, ready);
    const empty = await api("POST", `/v1/sandboxes/${id}/snapshots`);
    expect(empty.status).toBe(202);
    await waitForSnapshot(base, empty.json.id, ["Ready"], 30_000, AUTH);
    expect(empty.json.name).toBeUndefined();
    const list = await api("GET", `/v1/snapshots?sandboxId=${id}&state=Ready&pageSize=1`);
    exact(S.pagination, list.json.pagination);
    expect(list.json.pagination).toMatchObject({ totalItems: 2, totalPages: 2, hasNextPage: true });
    expect((await api("GET", "/v1/snapshots?name=api-snap")).json.items.map((s: { id: string }) => s.id)).toEqual([r.json.id]);
    expect((await api("DELETE", `/v1/snapshots/${empty.json.id}`)).status).toBe(204);
    expect((await api("GET", `/v1/snapshots/${empty.json.id}`)).status).toBe(404);
  });

  it("deletes: Stopping then Terminated, the record stays, and every later change is a 409", async () => {
    const d = await api("DELETE", `/v1/sandboxes/${id}`);
    expect(d.status).toBe(204);
    const t = await waitForState(id, "Terminated");
    expect(t.status).toMatchObject({ reason: "UserDelete", message: expect.stringContaining("deleted by request") });
    for (const [m, p, b] of [
      ["DELETE", `/v1/sandboxes/${id}`, undefined],
      ["POST", `/v1/sandboxes/${id}/pause`, undefined],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: ["true"] }],
      ["PUT", `/v1/sandboxes/${id}/network-policy`, { mode: "deny-all" }],
      ["POST", `/v1/sandboxes/${id}/renew-expiration`, { expiresAt: new Date(Date.now() + 9e6).toISOString() }],
      ["POST", `/v1/sandboxes/${id}/snapshots`, {}],
    ] as const) {
      const r = await api(m, p, b);
      expect(r.status, `${m} ${p}`).toBe(409);
    }
    expect((await api("GET", `/v1/sandboxes/${id}`)).json.status).toEqual(t.status);
  });

  it("terminates a sandbox at expiry, with reason Expired", async () => {
    const r = await api("POST", "/v1/sandboxes", { image: { uri: "local:host" }, timeout: 1 });
    const s = await waitForState(r.json.id, "Terminated", 15_000);
    expect(s.status.reason).toBe("Expired");
    expect(Date.parse(s.status.lastTransitionAt)).toBeGreaterThanOrEqual(Date.parse(r.json.expiresAt));
  });
});

describe("control API: secrets stay references", () => {
  it("never shows an inject_headers value, and the snapshot annotation keeps references only", async () => {
    const id = await runningSandbox({
      networkPolicy: {
        mode: "custom",
        allow_domains: ["up.test"],
        transforms: [{ domain: "api.up.test", inject_headers: { Authorization: "Bearer ${env:EGRESS_TEST_TOKEN}", "X-Literal": "sk-literal-value-9z" } }],
      },
    });
    const views = [await api("GET", `/v1/sandboxes/${id}`), await api("GET", `/v1/sandboxes/${id}/network-policy`), await api("GET", `/v1/sandbox/${id}/`), await api("GET", "/v1/sandboxes")];
    for (const v of views) {
      expect(v.text).not.toContain(SECRET);
      expect(v.text).not.toContain("sk-literal-value-9z");
      expect(v.text).not.toContain("${env:EGRESS_TEST_TOKEN}");
    }
    expect(views[1]!.json.transforms[0].inject_headers).toEqual({ Authorization: "[redacted]", "X-Literal": "[redacted]" });
    await exec(base, id, ["sh", "-c", "echo a > /workspace/a"], AUTH);
    const snap = await api("POST", `/v1/sandbox/${id}/snapshot/create`, { name: "secret-snap" });
    expect(snap.status).toBe(200);
    expect(snap.text).not.toContain("sk-literal-value-9z");
    const ann = await readSnapshotManifest(path.join(control.dataDir, "snapshots", snap.json.id));
    const policy = JSON.parse(ann["io.sandbox-egress.policy"]!);
    expect(policy.transforms[0].inject_headers).toEqual({ Authorization: "Bearer ${env:EGRESS_TEST_TOKEN}", "X-Literal": "[redacted]" });
    expect(JSON.stringify(ann)).not.toContain(SECRET);
  });
});

describe("control API: Leap0 routes", () => {
  let id: string;

  it("creates with Leap0 defaults and the exact sandbox shape", async () => {
    const r = await api("POST", "/v1/sandbox/", { env_vars: { A: "1" } });
    expect(r.status).toBe(200);
    exact(S.leap0Sandbox, r.json);
    expect(r.json).toMatchObject({ template_id: "local:host", timeout: 300, auto_pause: false, state: "running", network_policy: { mode: "allow-all" } });
    id = r.json.id;
    exact(S.leap0Sandbox, (await api("GET", `/v1/sandbox/${id}/`)).json);
    expect((await api("GET", `/v1/sandbox/${id}`)).json.id).toBe(id);
  });

  it("validates with {message, errors:[{field, error}]}", async () => {
    const r = await api("POST", "/v1/sandbox/", { timeout: 28_801, template_name: "ubuntu", network_policy: { mode: "custom", allow_domains: ["127.0.0.1"] } });
    expect(r.status).toBe(400);
    exact(S.leap0Error, r.json);
    expect(r.json.errors.map((e: { field: string }) => e.field)).toEqual(["timeout"]);
    const t = await api("POST", "/v1/sandbox/", { template_name: "ubuntu" });
    expect(t.json.errors).toEqual([{ field: "template_name", error: expect.stringContaining('"local:host"') }]);
    const p = await api("POST", "/v1/sandbox/", { network_policy: { mode: "custom", allow_domains: ["127.0.0.1"] } });
    expect(p.json.errors.map((e: { field: string }) => e.field)).toEqual(["network_policy.allow_domains[0]"]);
    const noMode = await api("POST", "/v1/sandbox/", { network_policy: { defaultAction: "deny" } });
    expect(noMode.json.errors.map((e: { field: string }) => e.field)).toContain("network_policy.mode");
    for (const timeout of [0, 1.5, "300"]) {
      const x = await api("POST", "/v1/snapshot/restore", { snapshot_name: "x", timeout });
      expect(x.status).toBe(400);
      expect(x.json.errors[0].field).toBe("timeout");
    }
    expect((await api("POST", "/v1/snapshot/restore", {})).json.errors[0].field).toBe("snapshot_name");
  });

  it("snapshot/create keeps the source running; a taken name is a 409", async () => {
    await exec(base, id, ["sh", "-c", "echo leap > /workspace/l"], AUTH);
    const r = await api("POST", `/v1/sandbox/${id}/snapshot/create`, { name: "leap-snap" });
    expect(r.status).toBe(200);
    exact(S.leap0Snapshot, r.json);
    expect(r.json).toMatchObject({ name: "leap-snap", state: "running" });
    const dup = await api("POST", `/v1/sandbox/${id}/snapshot/pause`, { name: "leap-snap" });
    expect(dup.status).toBe(409);
    expect(dup.json.message).toContain("already exists");
    expect((await api("GET", `/v1/sandbox/${id}/`)).json.state).toBe("running");
    const gen = await api("POST", `/v1/sandbox/${id}/snapshot/create`);
    expect(gen.status).toBe(200);
    expect(gen.json.name).toMatch(new RegExp(`^${id}-`));
  });

  it("pauses (200, paused); snapshot routes then answer 409", async () => {
    const p = await api("POST", `/v1/sandbox/${id}/pause`);
    expect(p.status).toBe(200);
    expect(p.json.state).toBe("paused");
    for (const route of ["snapshot/pause", "snapshot/create"]) {
      const r = await api("POST", `/v1/sandbox/${id}/${route}`, { name: `after-${route.replace("/", "-")}` });
      expect(r.status, route).toBe(409);
      expect(r.json.message).toContain("Paused");
    }
    expect((await api("POST", `/v1/sandbox/${id}/pause`)).status).toBe(409);
  });

  it("restores by name with the snapshot's policy and the file", async () => {
    const r = await api("POST", "/v1/snapshot/restore", { snapshot_name: "leap-snap", timeout: 60, auto_pause: true });
    expect(r.status).toBe(200);
    exact(S.leap0Sandbox, r.json);
    expect(r.json).toMatchObject({ state: "running", timeout: 60, auto_pause: true, network_policy: { mode: "allow-all" } });
    expect((await exec(base, r.json.id, ["cat", "/workspace/l"], AUTH)).stdout).toBe("leap\n");
  });

  it("auto_pause pauses at expiry instead of terminating, and resume gives a fresh timeout", async () => {
    const r = await api("POST", "/v1/sandbox/", { timeout: 1, auto_pause: true });
    expect(r.status).toBe(200);
    const s = await waitForState(r.json.id, "Paused", 15_000);
    expect(s.status.reason).toBe("AutoPause");
    expect((await api("GET", `/v1/sandbox/${r.json.id}/`)).json.state).toBe("paused");
    const t0 = Date.now();
    expect((await api("POST", `/v1/sandboxes/${r.json.id}/resume`)).status).toBe(202);
    const back = await waitForState(r.json.id, "Running");
    expect(Date.parse(back.expiresAt)).toBeGreaterThan(t0);
  });
});

describe("control API: Tensorlake snapshot route", () => {
  it("takes a filesystem snapshot: 202 {snapshot_id, status}", async () => {
    const id = await runningSandbox();
    await exec(base, id, ["sh", "-c", "echo t > /workspace/t"], AUTH);
    const r = await api("POST", `/sandboxes/${id}/snapshot`, { snapshot_type: "filesystem" });
    expect(r.status).toBe(202);
    exact(S.tensorlakeSnapshotResponse, r.json);
    expect(r.json.status).toBe("creating");
    expect((await waitForSnapshot(base, r.json.snapshot_id, ["Ready", "Failed"], 30_000, AUTH)).status.state).toBe("Ready");
    const d = await api("POST", `/sandboxes/${id}/snapshot`);
    expect(d.status).toBe(202);
  });

  it("answers 400 for memory with the host's reason, 400 for another type, 404 for an unknown sandbox", async () => {
    const id = await runningSandbox();
    const criu = await probeCriu();
    const mem = await api("POST", `/sandboxes/${id}/snapshot`, { snapshot_type: "memory" });
    expect(mem.status).toBe(400);
    expect(Object.keys(mem.json)).toEqual(["message"]);
    expect(criu.supported).toBe(false);
    expect(mem.json.message).toContain(criu.reason!);
    const other = await api("POST", `/sandboxes/${id}/snapshot`, { snapshot_type: "disk" });
    expect(other.status).toBe(400);
    expect(other.json.message).toMatch(/^snapshot_type: /);
    expect((await api("POST", "/sandboxes/sbx-unknown/snapshot", { snapshot_type: "memory" })).status).toBe(404);
    expect((await api("GET", `/v1/snapshots?sandboxId=${id}`)).json.items).toEqual([]);
  });
});
