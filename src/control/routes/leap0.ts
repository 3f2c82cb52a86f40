/**
 * Leap0's routes (snake_case; errors {message, errors:[{field, error}]}). Leap0's calls are synchronous: they
 * answer once the operation has finished, so these adapters wait for the service's background part.
 */
import { randomBytes } from "node:crypto";
import { invalid, ServiceError } from "../errors.js";
import { policyFromInput } from "../policy-input.js";
import type { LifecycleService } from "../service.js";
import type { SandboxRow } from "../../store/index.js";
import { route, type RouteDef } from "./http.js";
import * as S from "./schemas.js";
import { leap0Sandbox, leap0Snapshot } from "./views.js";

const E = (d: string) => [d, S.leap0Error] as const;
const ERRORS = { 400: E("Validation error; errors[] names each field"), 401: E("Missing or wrong API key"), 404: E("Resource not found") };

function policyOrThrow(input: unknown) {
  if (input === undefined) return undefined;
  const r = policyFromInput(input, "network_policy", "project");
  if (!r.ok) throw invalid(r.errors);
  return r.policy;
}

/** Leap0: "If omitted, Leap0 generates one." Unique enough to never collide, readable in a listing. */
function generatedName(sandboxId: string): string {
  return `${sandboxId}-${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "")}-${randomBytes(3).toString("hex")}`;
}

export function leap0Routes(service: LifecycleService): RouteDef[] {
  const view = (row: SandboxRow) => leap0Sandbox(row, row.state === "Running" && service.isSnapshotting(row.id));
  const started = (row: SandboxRow): SandboxRow => {
    if (row.state === "Failed") throw new ServiceError("failed", `The sandbox ${row.id} failed to start: ${row.message}`);
    return row;
  };
  return [
    route({
      method: "POST",
      path: "/v1/sandbox",
      family: "leap0",
      summary: "Create a sandbox (answers once it runs)",
      body: S.leap0CreateRequest,
      optionalBody: true,
      responses: { 200: ["The running sandbox", S.leap0Sandbox], ...ERRORS },
      handler: async ({ body }) => {
        const { done } = await service.create({
          image: body.template_name,
          imageField: "template_name",
          policy: policyOrThrow(body.network_policy),
          timeoutSeconds: body.timeout ?? S.LEAP0_DEFAULT_TIMEOUT,
          autoPause: body.auto_pause ?? false,
          env: body.env_vars,
        });
        return { status: 200, body: view(started(await done)) };
      },
    }),
    route({
      method: "GET",
      path: "/v1/sandbox/{sandboxId}",
      family: "leap0",
      summary: "Get a sandbox",
      responses: { 200: ["The sandbox", S.leap0Sandbox], 401: ERRORS[401], 404: ERRORS[404] },
      handler: ({ params }) => ({ status: 200, body: view(service.get(params.sandboxId!)) }),
    }),
    route({
      method: "DELETE",
      path: "/v1/sandbox/{sandboxId}",
      family: "leap0",
      summary: "Delete a sandbox (answers once it is deleted)",
      responses: { 200: ["The deleted sandbox", S.leap0Sandbox], 401: ERRORS[401], 404: ERRORS[404], 409: E("Already deleting or deleted") },
      handler: async ({ params }) => {
        const { done } = await service.delete(params.sandboxId!);
        return { status: 200, body: view(await done) };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandbox/{sandboxId}/pause",
      family: "leap0",
      summary: "Pause a running sandbox (answers once it is paused)",
      responses: { 200: ["The paused sandbox", S.leap0Sandbox], 401: ERRORS[401], 404: ERRORS[404], 409: E("The sandbox is not running") },
      handler: async ({ params }) => {
        const { done } = await service.pause(params.sandboxId!);
        const row = await done;
        if (row.state !== "Paused") throw new ServiceError("failed", `The pause did not complete: ${row.message}`);
        return { status: 200, body: view(row) };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandbox/{sandboxId}/snapshot/create",
      family: "leap0",
      summary: "Create a named snapshot of a running sandbox, which keeps running (answers once it is stored)",
      body: S.leap0SnapshotRequest,
      optionalBody: true,
      responses: { 200: ["The snapshot", S.leap0Snapshot], ...ERRORS, 409: E("The sandbox is not running, or the name exists or is being created") },
      handler: async ({ params, body }) => {
        const id = params.sandboxId!;
        const snap = await service.snapshotNow(id, body.name ?? generatedName(id));
        return { status: 200, body: leap0Snapshot(snap, service.get(id), service.isSnapshotting(id)) };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandbox/{sandboxId}/snapshot/pause",
      family: "leap0",
      summary: "Snapshot, then terminate the source, atomically (if the snapshot fails the source keeps running)",
      body: S.leap0SnapshotRequest,
      optionalBody: true,
      responses: {
        200: ["Snapshot stored and sandbox terminated", S.leap0Snapshot],
        ...ERRORS,
        409: E("The sandbox is not running, or the name exists or is being created"),
        500: E("The snapshot failed; the sandbox keeps running"),
      },
      handler: async ({ params, body }) => {
        const id = params.sandboxId!;
        const { snapshot, sandbox } = await service.snapshotAndTerminate(id, body.name ?? generatedName(id));
        return { status: 200, body: leap0Snapshot(snapshot, sandbox, false) };
      },
    }),
    route({
      method: "POST",
      path: "/v1/snapshot/restore",
      family: "leap0",
      summary: "Create a sandbox from a snapshot; its policy is the override if given, else the snapshot's",
      body: S.leap0RestoreRequest,
      responses: { 200: ["The restored, running sandbox", S.leap0Sandbox], ...ERRORS, 409: E("The snapshot is not ready") },
      handler: async ({ body }) => {
        const { done } = await service.create({
          snapshot: { name: body.snapshot_name },
          policy: policyOrThrow(body.network_policy),
          timeoutSeconds: body.timeout ?? S.LEAP0_DEFAULT_TIMEOUT,
          autoPause: body.auto_pause ?? false,
        });
        return { status: 200, body: view(started(await done)) };
      },
    }),
  ];
}
