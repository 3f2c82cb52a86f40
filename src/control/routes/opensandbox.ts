/**
 * The canonical API: OpenSandbox's lifecycle spec (camelCase, errors {code, message}), so that the official
 * @alibaba-group/opensandbox SDK drives it unchanged, plus this project's extensions in the same style.
 */
import { z } from "zod";
import { deleteRules, osMode, patchRules, toOpenSandbox } from "../../policy/opensandbox.js";
import type { Policy } from "../../policy/types.js";
import { invalid, invalidField, ServiceError } from "../errors.js";
import { osRuleErrors, policyFromInput } from "../policy-input.js";
import type { LifecycleService } from "../service.js";
import { SANDBOX_STATES, SNAPSHOT_STATES } from "../state-machine.js";
import { route, type RouteDef } from "./http.js";
import { metadataFilter, paging, resourcesFrom, states } from "./params.js";
import * as S from "./schemas.js";
import { osCreated, osSandbox, osSnapshot, pageInfo, shownPolicy } from "./views.js";

/** The OpenSandbox SDK's egress sidecar port (DEFAULT_EGRESS_PORT): its endpoint is this server's egress routes. */
export const EGRESS_PORT = 18080;

const E = (d: string) => [d, S.osError] as const;
const ERRORS = { 400: E("Invalid request; the message names the field"), 401: E("Missing or wrong API key"), 404: E("No such sandbox") };

function policyOrThrow(input: unknown, field: string): Policy {
  const r = policyFromInput(input, field, "either");
  if (!r.ok) throw invalid(r.errors);
  return r.policy;
}

function egressStatus(p: Policy) {
  return { status: "ok", mode: osMode(p), enforcementMode: "proxy", policy: toOpenSandbox(p) };
}

export function openSandboxRoutes(service: LifecycleService): RouteDef[] {
  return [
    route({
      method: "POST",
      path: "/v1/sandboxes",
      family: "opensandbox",
      summary: "Create a sandbox from an image, or restore one from a snapshot (snapshotId); 202 Pending",
      body: S.createSandboxRequest,
      responses: { 202: ["Accepted; poll GET /v1/sandboxes/{sandboxId} until Running", S.createSandboxResponse], ...ERRORS, 409: E("The snapshot is not Ready") },
      handler: async ({ body }) => {
        const policy = body.networkPolicy !== undefined ? policyOrThrow(body.networkPolicy, "networkPolicy") : undefined;
        const { row } = await service.create({
          image: body.image?.uri,
          imageField: "image.uri",
          ...(body.snapshotId !== undefined ? { snapshot: { id: body.snapshotId } } : {}),
          policy,
          timeoutSeconds: body.timeout ?? null,
          env: body.env,
          metadata: body.metadata,
          entrypoint: body.entrypoint,
          resources: resourcesFrom(body.resourceLimits, "resourceLimits"),
        });
        return { status: 202, body: osCreated(row), headers: { location: `/v1/sandboxes/${row.id}` } };
      },
    }),
    route({
      method: "GET",
      path: "/v1/sandboxes",
      family: "opensandbox",
      summary: "List sandboxes: state (repeat for OR), metadata=k%3Dv%26k2%3Dv2 (AND), page, pageSize",
      query: [
        { name: "state", description: "Repeat for OR: ?state=Running&state=Paused", schema: { type: "array", items: { type: "string", enum: [...SANDBOX_STATES] } } },
        { name: "metadata", description: "URL-encoded k=v pairs, all must match", schema: { type: "string" } },
        { name: "page", description: "From 1 (default 1)", schema: { type: "integer", minimum: 1 } },
        { name: "pageSize", description: "Default 20, at most 1000", schema: { type: "integer", minimum: 1, maximum: 1000 } },
      ],
      responses: { 200: ["A page of sandboxes, newest first", S.listSandboxesResponse], 400: ERRORS[400], 401: ERRORS[401] },
      handler: ({ query }) => {
        const p = paging(query);
        const r = service.list({ states: states(query, SANDBOX_STATES), metadata: metadataFilter(query), ...p });
        return { status: 200, body: { items: r.items.map(osSandbox), pagination: pageInfo(p.page, p.pageSize, r.totalItems) } };
      },
    }),
    route({
      method: "GET",
      path: "/v1/sandboxes/{sandboxId}",
      family: "opensandbox",
      summary: "Get a sandbox",
      responses: { 200: ["The sandbox", S.sandboxView], 401: ERRORS[401], 404: ERRORS[404] },
      handler: ({ params }) => ({ status: 200, body: osSandbox(service.get(params.sandboxId!)) }),
    }),
    route({
      method: "DELETE",
      path: "/v1/sandboxes/{sandboxId}",
      family: "opensandbox",
      summary: "Delete a sandbox: Stopping now, then Terminated (the record is kept)",
      responses: { 204: ["Stopping"], 401: ERRORS[401], 404: ERRORS[404], 409: E("Already Stopping or Terminated") },
      handler: async ({ params }) => {
        await service.delete(params.sandboxId!);
        return { status: 204 };
      },
    }),
    route({
      method: "PATCH",
      path: "/v1/sandboxes/{sandboxId}/metadata",
      family: "opensandbox",
      summary: "Patch metadata (JSON Merge Patch: null removes a key)",
      body: S.patchMetadataRequest,
      responses: { 200: ["The sandbox with its new metadata", S.sandboxView], ...ERRORS, 409: E("The sandbox is Terminated") },
      handler: ({ params, body }) => ({ status: 200, body: osSandbox(service.patchMetadata(params.sandboxId!, body)) }),
    }),
    route({
      method: "POST",
      path: "/v1/sandboxes/{sandboxId}/pause",
      family: "opensandbox",
      summary: "Pause: freeze every process and refuse all egress (Pausing → Paused)",
      responses: { 202: ["Pausing"], 401: ERRORS[401], 404: ERRORS[404], 409: E("Not Running") },
      handler: async ({ params }) => {
        await service.pause(params.sandboxId!);
        return { status: 202 };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandboxes/{sandboxId}/resume",
      family: "opensandbox",
      summary: "Resume: apply the latest policy (including updates made while paused), then thaw (Resuming → Running)",
      responses: { 202: ["Resuming"], 401: ERRORS[401], 404: ERRORS[404], 409: E("Not Paused") },
      handler: async ({ params }) => {
        await service.resume(params.sandboxId!);
        return { status: 202 };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandboxes/{sandboxId}/renew-expiration",
      family: "opensandbox",
      summary: "Move expiresAt (must be in the future and after the current one)",
      body: S.renewRequest,
      responses: { 200: ["The new expiresAt", S.renewResponse], ...ERRORS, 409: E("Stopping, Terminated or Failed") },
      handler: async ({ params, body }) => ({ status: 200, body: { expiresAt: await service.renew(params.sandboxId!, body.expiresAt) } }),
    }),
    route({
      method: "GET",
      path: "/v1/sandboxes/{sandboxId}/endpoints/{port}",
      family: "opensandbox",
      summary: `Endpoint for a port. Port ${EGRESS_PORT} (the SDK's egress sidecar) is this server's /v1/sandboxes/{sandboxId}/egress`,
      query: [{ name: "use_server_proxy", description: "Accepted; every endpoint is served by this server", schema: { type: "boolean" } }],
      responses: { 200: ["host:port/path without a scheme; the caller's own API key authenticates it", S.endpointView], ...ERRORS },
      handler: ({ params, query, authority }) => {
        const port = Number(params.port);
        if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidField("port", "must be an integer from 1 to 65535");
        if (query.has("expires")) throw invalidField("expires", "signed endpoints are not available on this server");
        const row = service.get(params.sandboxId!);
        const base = `${authority}/v1/sandboxes/${encodeURIComponent(row.id)}`;
        // No headers: the SDK sends its connection headers (OPEN-SANDBOX-API-KEY) with every endpoint request,
        // so echoing the key back here would only put it in more places.
        return { status: 200, body: { endpoint: port === EGRESS_PORT ? `${base}/egress` : `${base}/ports/${port}` } };
      },
    }),
    route({
      method: "GET",
      path: "/v1/sandboxes/{sandboxId}/ports/{port}/ping",
      family: "opensandbox",
      summary: "Readiness for the SDK's health check: 200 while the sandbox is Running, else 503",
      responses: { 200: ["Running"], 401: ERRORS[401], 404: ERRORS[404], 503: E("Not Running") },
      handler: ({ params }) => {
        const row = service.get(params.sandboxId!);
        if (row.state !== "Running") throw new ServiceError("unavailable", `Sandbox ${row.id} is ${row.state}.`);
        return { status: 200, body: "pong", text: true };
      },
    }),
    route({
      method: "GET",
      path: "/v1/sandboxes/{sandboxId}/egress/policy",
      family: "opensandbox",
      summary: "OpenSandbox egress sidecar: the policy as {defaultAction, egress} (transforms are not shown in this form)",
      responses: { 200: ["The policy in force (or stored, while paused)", S.egressPolicyResponse], 401: ERRORS[401], 404: ERRORS[404] },
      handler: ({ params }) => ({ status: 200, body: egressStatus(service.getPolicy(params.sandboxId!)) }),
    }),
    route({
      method: "PATCH",
      path: "/v1/sandboxes/{sandboxId}/egress/policy",
      family: "opensandbox",
      summary: "OpenSandbox egress sidecar: merge rules (incoming first); live when Running",
      body: S.osRules,
      responses: { 200: ["The new policy", S.egressPolicyResponse], ...ERRORS, 409: E("Stopping, Terminated or Failed") },
      handler: async ({ params, body }) => {
        const errors = osRuleErrors(body, "");
        if (errors.length > 0) throw invalid(errors);
        const row = await service.updatePolicy(params.sandboxId!, (p) => patchRules(p, body));
        return { status: 200, body: egressStatus(row.policy) };
      },
    }),
    route({
      method: "DELETE",
      path: "/v1/sandboxes/{sandboxId}/egress/policy",
      family: "opensandbox",
      summary: "OpenSandbox egress sidecar: remove rules by target (unknown targets are ignored)",
      body: S.osTargets,
      responses: { 200: ["The new policy", S.egressPolicyResponse], ...ERRORS, 409: E("Stopping, Terminated or Failed") },
      handler: async ({ params, body }) => {
        const row = await service.updatePolicy(params.sandboxId!, (p) => deleteRules(p, body));
        return { status: 200, body: egressStatus(row.policy) };
      },
    }),
    route({
      method: "GET",
      path: "/v1/sandboxes/{sandboxId}/network-policy",
      family: "opensandbox",
      summary: "The sandbox's policy (this project's shape), inject_headers values redacted",
      responses: { 200: ["The policy", S.policyResponse], 401: ERRORS[401], 404: ERRORS[404] },
      handler: ({ params }) => {
        const row = service.get(params.sandboxId!);
        return { status: 200, body: shownPolicy(row.policy), headers: { "x-policy-pending": String(row.pendingPolicy) } };
      },
    }),
    route({
      method: "PUT",
      path: "/v1/sandboxes/{sandboxId}/network-policy",
      family: "opensandbox",
      summary: "Replace the policy: validated first (invalid → 400, nothing changes); live within 1 s when Running, applied on resume when Paused",
      body: S.putPolicyRequest,
      responses: { 200: ["The policy now stored (enforced, unless x-policy-pending: true)", S.policyResponse], ...ERRORS, 409: E("Stopping, Terminated or Failed") },
      handler: async ({ params, body }) => {
        if (body === null || typeof body !== "object" || Array.isArray(body)) {
          throw invalidField("(body)", 'must be a policy object: {"mode": …} or {"defaultAction": …, "egress": […]}');
        }
        const row = await service.putPolicy(params.sandboxId!, policyOrThrow(body, ""));
        return { status: 200, body: shownPolicy(row.policy), headers: { "x-policy-pending": String(row.pendingPolicy) } };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandboxes/{sandboxId}/exec",
      family: "opensandbox",
      summary: "Run a command inside the sandbox (Running only)",
      body: S.execRequest,
      responses: { 200: ["The command ran (any exit code)", S.execResponse], ...ERRORS, 409: E("Not Running") },
      handler: async ({ params, body }) => {
        const r = await service.exec(params.sandboxId!, body.command, (body.timeoutSeconds ?? 60) * 1000);
        return { status: 200, body: { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr } };
      },
    }),
    route({
      method: "POST",
      path: "/v1/sandboxes/{sandboxId}/snapshots",
      family: "opensandbox",
      summary: "Snapshot a Running sandbox: 202 Creating, then Ready or Failed; it stores a copy of the policy",
      body: S.createSnapshotRequest,
      optionalBody: true,
      responses: {
        202: ["Creating; poll GET /v1/snapshots/{snapshotId}", S.snapshotView],
        ...ERRORS,
        409: E("Not Running, or the name exists or is being created"),
      },
      handler: async ({ params, body }) => {
        const { row } = await service.snapshot(params.sandboxId!, { name: body.name, type: body.snapshotType });
        return { status: 202, body: osSnapshot(row), headers: { location: `/v1/snapshots/${row.id}` } };
      },
    }),
    route({
      method: "GET",
      path: "/v1/snapshots",
      family: "opensandbox",
      summary: "List snapshots: sandboxId, name, state (repeat for OR), page, pageSize",
      query: [
        { name: "sandboxId", description: "Source sandbox", schema: { type: "string" } },
        { name: "name", description: "Exact name", schema: { type: "string" } },
        { name: "state", description: "Repeat for OR", schema: { type: "array", items: { type: "string", enum: [...SNAPSHOT_STATES] } } },
        { name: "page", description: "From 1", schema: { type: "integer", minimum: 1 } },
        { name: "pageSize", description: "Default 20", schema: { type: "integer", minimum: 1, maximum: 1000 } },
      ],
      responses: { 200: ["A page of snapshots, newest first", S.listSnapshotsResponse], 400: ERRORS[400], 401: ERRORS[401] },
      handler: ({ query }) => {
        const p = paging(query);
        const sandboxId = query.get("sandboxId") || undefined;
        const name = query.get("name") || undefined;
        const r = service.listSnapshots({ sandboxId, name, states: states(query, SNAPSHOT_STATES), ...p });
        return { status: 200, body: { items: r.items.map(osSnapshot), pagination: pageInfo(p.page, p.pageSize, r.totalItems) } };
      },
    }),
    route({
      method: "GET",
      path: "/v1/snapshots/{snapshotId}",
      family: "opensandbox",
      summary: "Get a snapshot",
      responses: { 200: ["The snapshot", S.snapshotView], 401: ERRORS[401], 404: E("No such snapshot") },
      handler: ({ params }) => ({ status: 200, body: osSnapshot(service.getSnapshot(params.snapshotId!)) }),
    }),
    route({
      method: "DELETE",
      path: "/v1/snapshots/{snapshotId}",
      family: "opensandbox",
      summary: "Delete a snapshot (409 while Creating)",
      responses: { 204: ["Deleted"], 401: ERRORS[401], 404: E("No such snapshot"), 409: E("Creating, or being restored") },
      handler: ({ params }) => {
        service.deleteSnapshot(params.snapshotId!);
        return { status: 204 };
      },
    }),
    route({
      method: "POST",
      path: "/v1/metrics/events",
      family: "opensandbox",
      summary: "SDK telemetry (sandbox.create latency): accepted and dropped",
      body: z.unknown(),
      optionalBody: true,
      responses: { 204: ["Accepted"] },
      handler: () => ({ status: 204 }),
    }),
  ];
}
