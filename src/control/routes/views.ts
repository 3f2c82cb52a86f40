/**
 * Rows → what each API family shows. Policies always leave redacted (inject_headers values replaced), and
 * timestamps are RFC 3339 strings.
 */
import { redactPolicy } from "../../live/secrets.js";
import type { Policy } from "../../policy/types.js";
import type { SandboxRow, SnapshotRow } from "../../store/index.js";
import type { SandboxState } from "../state-machine.js";
import type { LEAP0_STATES } from "./schemas.js";

export function shownPolicy(p: Policy): Record<string, unknown> {
  return redactPolicy(p) as unknown as Record<string, unknown>;
}

function status(row: { state: string; reason: string; message: string; lastTransitionAt: string }) {
  return { state: row.state, reason: row.reason, message: row.message, lastTransitionAt: row.lastTransitionAt };
}

export function osSandbox(row: SandboxRow): Record<string, unknown> {
  return {
    id: row.id,
    ...(row.snapshotSource !== null ? { snapshotId: row.snapshotSource } : { image: { uri: row.image } }),
    status: status(row),
    metadata: row.metadata,
    entrypoint: row.entrypoint,
    // OpenSandbox: "Omitted when manual cleanup is enabled".
    ...(row.expiresAt !== null ? { expiresAt: row.expiresAt } : {}),
    createdAt: row.createdAt,
    networkPolicy: shownPolicy(row.policy),
  };
}

/** CreateSandboxResponse: OpenSandbox leaves the startup source out of it. */
export function osCreated(row: SandboxRow): Record<string, unknown> {
  const { image: _image, snapshotId: _snapshotId, ...rest } = osSandbox(row);
  return rest;
}

export function osSnapshot(row: SnapshotRow): Record<string, unknown> {
  return {
    id: row.id,
    sandboxId: row.sandboxId,
    ...(row.name !== null ? { name: row.name } : {}),
    status: status(row),
    createdAt: row.createdAt,
    networkPolicy: shownPolicy(row.policy),
  };
}

export function pageInfo(page: number, pageSize: number, totalItems: number) {
  const totalPages = Math.ceil(totalItems / pageSize);
  return { page, pageSize, totalItems, totalPages, hasNextPage: page < totalPages };
}

type Leap0State = (typeof LEAP0_STATES)[number];

/**
 * Canonical → Leap0 states. Leap0 has no pausing or failed: a pausing sandbox is already unusable ("paused"),
 * and a failed one is as gone as a deleted one ("deleted"; GET /v1/sandboxes/{id} has the reason).
 */
export function leap0State(state: SandboxState, snapshotting: boolean): Leap0State {
  switch (state) {
    case "Pending":
      return "starting";
    case "Running":
      return snapshotting ? "snapshotting" : "running";
    case "Pausing":
    case "Paused":
      return "paused";
    case "Resuming":
      return "unpausing";
    case "Stopping":
      return "deleting";
    case "Terminated":
    case "Failed":
      return "deleted";
  }
}

export function leap0Sandbox(row: SandboxRow, snapshotting: boolean): Record<string, unknown> {
  return {
    id: row.id,
    template_id: row.templateId,
    vcpu: row.vcpu,
    memory: row.memory,
    disk: row.disk,
    timeout: row.timeoutSeconds,
    state: leap0State(row.state, snapshotting),
    auto_pause: row.autoPause,
    network_policy: shownPolicy(row.policy),
    created_at: row.createdAt,
  };
}

export function leap0Snapshot(snap: SnapshotRow, source: SandboxRow, snapshotting: boolean): Record<string, unknown> {
  return {
    id: snap.id,
    name: snap.name ?? snap.id,
    template_id: snap.templateId,
    vcpu: snap.vcpu,
    memory: snap.memory,
    disk: snap.disk,
    // Leap0: "the sandbox state after the snapshot operation completes".
    state: leap0State(source.state, snapshotting),
    network_policy: shownPolicy(snap.policy),
    created_at: snap.createdAt,
  };
}
