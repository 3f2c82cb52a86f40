import { describe, expect, it } from "vitest";
import {
  canTransition,
  canTransitionSnapshot,
  REASONS,
  SANDBOX_STATES,
  SANDBOX_TRANSITIONS,
  SNAPSHOT_STATES,
  SNAPSHOT_TRANSITIONS,
  type SandboxState,
} from "../../../src/control/state-machine.js";

describe("sandbox state machine", () => {
  it("has exactly the canonical OpenSandbox states", () => {
    expect([...SANDBOX_STATES].sort()).toEqual(["Failed", "Paused", "Pausing", "Pending", "Resuming", "Running", "Stopping", "Terminated"]);
    expect(Object.keys(SANDBOX_TRANSITIONS).sort()).toEqual([...SANDBOX_STATES].sort());
  });

  it("allows every transition OpenSandbox publishes", () => {
    const published: [SandboxState, SandboxState][] = [
      ["Pending", "Running"],
      ["Running", "Pausing"],
      ["Pausing", "Paused"],
      ["Paused", "Resuming"],
      ["Resuming", "Running"],
      ["Running", "Stopping"],
      ["Paused", "Stopping"],
      ["Stopping", "Terminated"],
      ["Pending", "Failed"],
      ["Running", "Failed"],
      ["Paused", "Failed"],
      ["Resuming", "Failed"],
    ];
    for (const [from, to] of published) expect(canTransition(from, to), `${from} → ${to}`).toBe(true);
  });

  it("refuses transitions that skip a step or leave a final state", () => {
    const illegal: [SandboxState, SandboxState][] = [
      ["Pending", "Paused"],
      ["Pending", "Pausing"],
      ["Running", "Resuming"],
      ["Running", "Paused"],
      ["Paused", "Pausing"],
      ["Paused", "Running"],
      ["Stopping", "Running"],
      ["Failed", "Running"],
      ["Failed", "Pausing"],
    ];
    for (const [from, to] of illegal) expect(canTransition(from, to), `${from} → ${to}`).toBe(false);
    for (const to of SANDBOX_STATES) expect(canTransition("Terminated", to), `Terminated → ${to}`).toBe(false);
  });

  it("never lists a self-transition, and only names real states", () => {
    for (const [from, tos] of Object.entries(SANDBOX_TRANSITIONS)) {
      expect(tos).not.toContain(from);
      for (const to of tos) expect(SANDBOX_STATES).toContain(to);
    }
  });

  it("lets delete start from every state that is not already stopping or terminated", () => {
    for (const s of SANDBOX_STATES) expect(canTransition(s, "Stopping"), s).toBe(s !== "Stopping" && s !== "Terminated");
  });

  it("reaches Terminated from every state except through Stopping only", () => {
    for (const s of SANDBOX_STATES) expect(canTransition(s, "Terminated")).toBe(s === "Stopping");
  });
});

describe("snapshot state machine", () => {
  it("has Creating, Ready, Deleting, Failed and no way back to Creating", () => {
    expect([...SNAPSHOT_STATES].sort()).toEqual(["Creating", "Deleting", "Failed", "Ready"]);
    for (const s of SNAPSHOT_STATES) expect(canTransitionSnapshot(s, "Creating")).toBe(false);
    expect(canTransitionSnapshot("Creating", "Ready")).toBe(true);
    expect(canTransitionSnapshot("Creating", "Failed")).toBe(true);
    expect(canTransitionSnapshot("Creating", "Deleting")).toBe(false);
    expect(SNAPSHOT_TRANSITIONS.Deleting).toEqual([]);
  });
});

describe("reason codes", () => {
  it("are unique, non-empty PascalCase words", () => {
    const values = Object.values(REASONS);
    expect(new Set(values).size).toBe(values.length);
    for (const v of values) expect(v).toMatch(/^[A-Z][A-Za-z]+$/);
  });
});
