/**
 * The sandbox and snapshot state machines (DESIGN.md "Lifecycle semantics"; OpenSandbox's SandboxState and
 * SnapshotState names). The tables below are the only place that says which transition is legal: the service
 * asks them before acting and the store asserts them again in every compare-and-set, so an illegal transition
 * can neither be requested through the API (409) nor written by a bug.
 */

export const SANDBOX_STATES = ["Pending", "Running", "Pausing", "Paused", "Resuming", "Stopping", "Terminated", "Failed"] as const;
export type SandboxState = (typeof SANDBOX_STATES)[number];

export const SNAPSHOT_STATES = ["Creating", "Ready", "Deleting", "Failed"] as const;
export type SnapshotState = (typeof SNAPSHOT_STATES)[number];

/**
 * from → the states it may move to. Beyond OpenSandbox's published transitions:
 * - Pending/Pausing/Resuming/Failed → Stopping: delete works from every non-final state (a user who no longer
 *   wants a sandbox should not have to wait for, or be blocked by, a transition or a failure);
 * - Pausing → Running and Resuming → Paused: a pause or resume the runtime refused leaves the sandbox where it
 *   was, with the reason, instead of in a transitional state forever;
 * - Stopping → Failed: the runtime could not tear the sandbox down (kept visible so that an operator looks).
 */
export const SANDBOX_TRANSITIONS: Readonly<Record<SandboxState, readonly SandboxState[]>> = Object.freeze({
  Pending: ["Running", "Failed", "Stopping"],
  Running: ["Pausing", "Stopping", "Failed"],
  Pausing: ["Paused", "Running", "Stopping", "Failed"],
  Paused: ["Resuming", "Stopping", "Failed"],
  Resuming: ["Running", "Paused", "Stopping", "Failed"],
  Stopping: ["Terminated", "Failed"],
  Terminated: [],
  Failed: ["Stopping"],
});

/** Deleting is final: the row is removed once the files are gone. Failed snapshots can be deleted too. */
export const SNAPSHOT_TRANSITIONS: Readonly<Record<SnapshotState, readonly SnapshotState[]>> = Object.freeze({
  Creating: ["Ready", "Failed"],
  Ready: ["Deleting"],
  Deleting: [],
  Failed: ["Deleting"],
});

export function canTransition(from: SandboxState, to: SandboxState): boolean {
  return SANDBOX_TRANSITIONS[from].includes(to);
}

export function canTransitionSnapshot(from: SnapshotState, to: SnapshotState): boolean {
  return SNAPSHOT_TRANSITIONS[from].includes(to);
}

export function isSandboxState(s: string): s is SandboxState {
  return (SANDBOX_STATES as readonly string[]).includes(s);
}

export function isSnapshotState(s: string): s is SnapshotState {
  return (SNAPSHOT_STATES as readonly string[]).includes(s);
}

/** States whose processes exist (or may exist) on the runtime: what a restart must adopt or clean up. */
export const LIVE_STATES: readonly SandboxState[] = ["Pending", "Running", "Pausing", "Paused", "Resuming", "Stopping"];

/**
 * Reason codes written into status.reason: stable, machine-readable (PascalCase, as Kubernetes conditions),
 * listed here once. status.message always carries the human sentence next to it.
 */
export const REASONS = {
  // sandboxes
  Provisioning: "Provisioning",
  Restoring: "Restoring",
  Started: "Started",
  ProvisionFailed: "ProvisionFailed",
  PauseRequested: "PauseRequested",
  AutoPause: "AutoPause",
  Paused: "Paused",
  PauseFailed: "PauseFailed",
  ResumeRequested: "ResumeRequested",
  Resumed: "Resumed",
  ResumeFailed: "ResumeFailed",
  UserDelete: "UserDelete",
  Expired: "Expired",
  SnapshotAndTerminate: "SnapshotAndTerminate",
  Terminated: "Terminated",
  DestroyFailed: "DestroyFailed",
  ProcessExited: "ProcessExited",
  ControlRestarted: "ControlRestarted",
  Adopted: "Adopted",
  // snapshots
  SnapshotAccepted: "SnapshotAccepted",
  SnapshotReady: "SnapshotReady",
  SnapshotFailed: "SnapshotFailed",
  SourceNotRunning: "SourceNotRunning",
  DeleteRequested: "DeleteRequested",
} as const;
export type Reason = (typeof REASONS)[keyof typeof REASONS];
