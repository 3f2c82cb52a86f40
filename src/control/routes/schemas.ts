/**
 * Every request body of the control REST as a zod schema (validated once, at the edge), and the response
 * shapes for the OpenAPI document and the tests. Field names follow each API family: camelCase for
 * OpenSandbox, snake_case for Leap0 and Tensorlake.
 */
import { z } from "zod";
import { osPolicySchema } from "../policy-input.js";
import { SANDBOX_STATES, SNAPSHOT_STATES } from "../state-machine.js";

/** Schemas registered here become components of the OpenAPI document, under their id. */
export const registry = z.registry<{ id: string; description?: string }>();

function named<T extends z.ZodType>(id: string, schema: T): T {
  registry.add(schema, { id });
  return schema;
}

/** Longest timeout accepted on the OpenSandbox routes (Leap0's own bound is 28,800 s). */
export const MAX_TIMEOUT_SECONDS = 7 * 24 * 3600;
export const LEAP0_MAX_TIMEOUT = 28_800;
export const LEAP0_DEFAULT_TIMEOUT = 300;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const envMap = z
  .record(
    z.string().regex(ENV_NAME, "an environment variable name is letters, digits and _, not starting with a digit"),
    z.string().max(128 * 1024).refine((v) => !v.includes("\0"), "a value cannot contain NUL"),
  )
  .refine((m) => Object.keys(m).length <= 1000, "at most 1,000 variables");

const RESERVED_METADATA_PREFIX = "opensandbox.io/";
const metadataKey = z
  .string()
  .min(1, "a key cannot be empty")
  .max(253)
  .refine((k) => !k.startsWith(RESERVED_METADATA_PREFIX), `keys starting with ${RESERVED_METADATA_PREFIX} are reserved`)
  // "=" and "&" would make the key impossible to filter on with ?metadata=k%3Dv.
  .refine((k) => !/[=&\0]/.test(k), 'a key cannot contain "=", "&" or NUL');
const metadataValue = z.string().max(4096).refine((v) => !v.includes("\0"), "a value cannot contain NUL");
const metadataMap = z.record(metadataKey, metadataValue).refine((m) => Object.keys(m).length <= 256, "at most 256 keys");

/** Placeholder in request schemas; validated by policyFromInput so that errors name the policy's own fields. */
export const networkPolicyField = z
  .unknown()
  .describe("This project's policy ({mode, allow_domains, …}, recognised by `mode`) or OpenSandbox's {defaultAction, egress}");
export const leap0PolicyField = z.unknown().describe("Network egress policy (Leap0 network_policy, extended with deny lists); omitted = allow-all");

const command = z.array(z.string().max(128 * 1024)).min(1, "give at least the program to run").max(4096);

// ---- OpenSandbox --------------------------------------------------------------------------------------------

export const imageSpec = named(
  "ImageSpec",
  z.strictObject({
    uri: z.string().min(1).describe('Image; the local runtime has "local:host" (the host root, read-only, plus a writable /workspace)'),
    auth: z.strictObject({ username: z.string().optional(), password: z.string().optional() }).optional().describe("Ignored: local images need no registry"),
  }),
);

export const createSandboxRequest = named(
  "CreateSandboxRequest",
  z
    .strictObject({
      image: imageSpec.optional(),
      snapshotId: z.string().min(1).optional().describe("Restore from this Ready snapshot instead of an image"),
      timeout: z
        .number("must be a number of seconds, or null for no expiry")
        .int("must be a whole number of seconds")
        .min(1, "must be at least 1 second")
        .max(MAX_TIMEOUT_SECONDS, `must be at most ${MAX_TIMEOUT_SECONDS} seconds (7 days)`)
        .nullable()
        .optional().describe("Seconds until the sandbox is terminated; null or omitted: never"),
      resourceLimits: z.record(z.string(), z.string()).optional().describe('e.g. {"cpu": "500m", "memory": "512Mi"}; recorded, not enforced by the local runtime'),
      resourceRequests: z.record(z.string(), z.string()).optional().describe("Accepted and ignored (Kubernetes only)"),
      env: envMap.optional(),
      metadata: metadataMap.optional(),
      entrypoint: command.optional().describe('Default ["tail", "-f", "/dev/null"]'),
      networkPolicy: networkPolicyField.optional(),
      secureAccess: z.literal(false).optional().describe("Secured endpoint access is not available on the local runtime"),
      extensions: z.record(z.string(), z.string()).optional().describe("Opaque; accepted and ignored"),
      platform: z.strictObject({ os: z.literal("linux"), arch: z.enum(["amd64", "arm64"]) }).optional(),
      volumes: z.array(z.unknown()).max(0, "volumes are not supported by the local runtime; files live in /workspace").optional(),
      credentialProxy: z
        .strictObject({ enabled: z.literal(false, "not available: use networkPolicy.transforms (credential brokering) instead") })
        .optional(),
    })
    .superRefine((b, ctx) => {
      if (b.image === undefined && b.snapshotId === undefined) {
        ctx.addIssue({ code: "custom", path: ["image"], message: 'give image ({"uri": "local:host"}) or snapshotId' });
      }
      if (b.image !== undefined && b.snapshotId !== undefined) {
        ctx.addIssue({ code: "custom", path: ["snapshotId"], message: "image and snapshotId are mutually exclusive" });
      }
    }),
);

export const sandboxStatus = named(
  "SandboxStatus",
  z.object({
    state: z.enum(SANDBOX_STATES),
    reason: z.string().min(1).describe("Machine-readable reason, e.g. Started, UserDelete, Expired, ProcessExited"),
    message: z.string().min(1),
    lastTransitionAt: z.string(),
  }),
);

export const sandboxView = named(
  "Sandbox",
  z.object({
    id: z.string(),
    image: z.object({ uri: z.string() }).optional(),
    snapshotId: z.string().optional(),
    status: sandboxStatus,
    metadata: z.record(z.string(), z.string()),
    entrypoint: z.array(z.string()),
    expiresAt: z.string().optional(),
    createdAt: z.string(),
    networkPolicy: z.record(z.string(), z.unknown()).describe("The sandbox's policy, inject_headers values redacted"),
  }),
);

export const createSandboxResponse = named(
  "CreateSandboxResponse",
  z.object({
    id: z.string(),
    status: sandboxStatus,
    metadata: z.record(z.string(), z.string()),
    entrypoint: z.array(z.string()),
    expiresAt: z.string().optional(),
    createdAt: z.string(),
    networkPolicy: z.record(z.string(), z.unknown()),
  }),
);

export const pagination = named(
  "PaginationInfo",
  z.object({ page: z.number().int(), pageSize: z.number().int(), totalItems: z.number().int(), totalPages: z.number().int(), hasNextPage: z.boolean() }),
);

export const listSandboxesResponse = named("ListSandboxesResponse", z.object({ items: z.array(sandboxView), pagination }));

export const patchMetadataRequest = named(
  "PatchSandboxMetadataRequest",
  z.record(metadataKey, metadataValue.nullable()).describe("JSON Merge Patch: a string sets the key, null removes it"),
);

export const renewRequest = named(
  "RenewSandboxExpirationRequest",
  z.strictObject({ expiresAt: z.string().min(1).describe("RFC 3339; in the future and after the current expiresAt") }),
);
export const renewResponse = named("RenewSandboxExpirationResponse", z.object({ expiresAt: z.string() }));

export const endpointView = named(
  "Endpoint",
  z.object({ endpoint: z.string().describe("host:port/path, no scheme"), headers: z.record(z.string(), z.string()).optional() }),
);

export const snapshotType = z.enum(["filesystem", "memory"]);

export const createSnapshotRequest = named(
  "CreateSnapshotRequest",
  z.strictObject({
    name: z.string().min(1).max(128).optional(),
    snapshotType: snapshotType.optional().describe('"filesystem" (default); "memory" answers 400 with the reason where unsupported'),
  }),
);

export const snapshotStatus = named(
  "SnapshotStatus",
  z.object({ state: z.enum(SNAPSHOT_STATES), reason: z.string().min(1), message: z.string().min(1), lastTransitionAt: z.string() }),
);

export const snapshotView = named(
  "Snapshot",
  z.object({
    id: z.string(),
    sandboxId: z.string(),
    name: z.string().optional(),
    status: snapshotStatus,
    createdAt: z.string(),
    networkPolicy: z.record(z.string(), z.unknown()).describe("The copy of the source's policy taken with the snapshot, redacted"),
  }),
);

export const listSnapshotsResponse = named("ListSnapshotsResponse", z.object({ items: z.array(snapshotView), pagination }));

export const putPolicyRequest = named("NetworkPolicyInput", networkPolicyField);
registry.add(osPolicySchema, { id: "OpenSandboxNetworkPolicy" });
export const policyResponse = named(
  "NetworkPolicyView",
  z.record(z.string(), z.unknown()).describe("This project's policy object, inject_headers values redacted; header x-policy-pending: true while stored but not yet enforced"),
);

export const execRequest = named(
  "ExecRequest",
  z.strictObject({
    command: command.describe('argv, e.g. ["sh", "-c", "echo hi"]; runs inside the sandbox\'s namespaces'),
    timeoutSeconds: z.number().int().min(1).max(3600).optional().describe("Default 60"),
  }),
);
export const execResponse = named("ExecResponse", z.object({ exitCode: z.number().int(), stdout: z.string(), stderr: z.string() }));

export const osRules = named("EgressRules", z.array(z.strictObject({ action: z.enum(["allow", "deny"]), target: z.string().min(1) })));
export const osTargets = named("EgressTargets", z.array(z.string().min(1)));
export const egressPolicyResponse = named(
  "EgressPolicyStatus",
  z.object({ status: z.literal("ok"), mode: z.string(), enforcementMode: z.string(), policy: osPolicySchema }),
);

export const osError = named("ErrorResponse", z.object({ code: z.string(), message: z.string() }));

// ---- Leap0 --------------------------------------------------------------------------------------------------

const leap0Timeout = z
  .number(`must be an integer number of seconds from 1 to ${LEAP0_MAX_TIMEOUT}`)
  .int(`must be an integer number of seconds from 1 to ${LEAP0_MAX_TIMEOUT}`)
  .min(1, `must be an integer number of seconds from 1 to ${LEAP0_MAX_TIMEOUT}`)
  .max(LEAP0_MAX_TIMEOUT, `must be at most ${LEAP0_MAX_TIMEOUT} seconds (8 hours)`);

export const leap0CreateRequest = named(
  "Leap0CreateSandboxRequest",
  z.strictObject({
    template_name: z.string().min(1).optional().describe('Default "local:host"'),
    timeout: leap0Timeout.optional().describe(`Seconds, 1..${LEAP0_MAX_TIMEOUT}, default ${LEAP0_DEFAULT_TIMEOUT}`),
    auto_pause: z.boolean().optional().describe("Pause instead of terminating at expiry; default false"),
    network_policy: leap0PolicyField.optional(),
    env_vars: envMap.optional(),
  }),
);

export const leap0SnapshotRequest = named("Leap0SnapshotRequest", z.strictObject({ name: z.string().min(1).max(128).optional() }));

export const leap0RestoreRequest = named(
  "Leap0RestoreRequest",
  z.strictObject({
    snapshot_name: z.string().min(1),
    timeout: leap0Timeout.optional().describe(`Seconds, 1..${LEAP0_MAX_TIMEOUT}, default ${LEAP0_DEFAULT_TIMEOUT}`),
    auto_pause: z.boolean().optional(),
    network_policy: leap0PolicyField.optional().describe("Override; omitted = the snapshot's policy"),
  }),
);

export const LEAP0_STATES = ["starting", "running", "snapshotting", "paused", "unpausing", "deleting", "deleted"] as const;

export const leap0Sandbox = named(
  "Leap0Sandbox",
  z.object({
    id: z.string(),
    template_id: z.string(),
    vcpu: z.number().int(),
    memory: z.number().int(),
    disk: z.number().int(),
    timeout: z.number().int().nullable(),
    state: z.enum(LEAP0_STATES),
    auto_pause: z.boolean(),
    network_policy: z.record(z.string(), z.unknown()),
    created_at: z.string(),
  }),
);

export const leap0Snapshot = named(
  "Leap0Snapshot",
  z.object({
    id: z.string(),
    name: z.string(),
    template_id: z.string(),
    vcpu: z.number().int(),
    memory: z.number().int(),
    disk: z.number().int(),
    state: z.enum(LEAP0_STATES).describe("The source sandbox's state after the operation"),
    network_policy: z.record(z.string(), z.unknown()),
    created_at: z.string(),
  }),
);

export const leap0Error = named(
  "Leap0Error",
  z.object({ message: z.string(), errors: z.array(z.object({ field: z.string(), error: z.string() })).optional() }),
);

// ---- Tensorlake ---------------------------------------------------------------------------------------------

export const tensorlakeSnapshotRequest = named("TensorlakeSnapshotRequest", z.strictObject({ snapshot_type: snapshotType.optional() }));
export const tensorlakeSnapshotResponse = named(
  "TensorlakeSnapshotResponse",
  z.object({ snapshot_id: z.string(), status: z.enum(["creating", "ready", "failed"]) }),
);
export const tensorlakeError = named("TensorlakeError", z.object({ message: z.string() }));
