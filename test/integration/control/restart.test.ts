/**
 * Restart safety with a real control process and the real LocalDriver: SIGKILL in the middle of a snapshot,
 * SIGTERM drain, and sandboxes that died while the control module was down. Nothing stays Creating or Pausing,
 * live sandboxes are adopted and keep their state and policy.
 */
import { readFileSync, readdirSync, rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlProcess, type RunningControl } from "../../helpers/control-process.js";
import { writeHostsFile } from "../../helpers/hosts-file.js";
import { startHttpUpstream, type Upstream } from "../../helpers/upstream.js";
import { api, curlInside, deleteAll, exec, waitForState } from "./helpers.js";

let control: RunningControl;
let upstream: Upstream;
let args: string[];

beforeAll(async () => {
  upstream = await startHttpUpstream();
  const hosts = await writeHostsFile({ "up.test": "127.0.0.1", "other.test": "127.0.0.1" });
  args = ["--internal-allow", "127.0.0.0/8", "--hosts", hosts];
  control = await startControlProcess({ args });
});

afterAll(async () => {
  if (control) {
    await deleteAll(control.base);
    await control.stop();
    rmSync(control.dataDir, { recursive: true, force: true });
  }
  await upstream?.close();
});

async function restart(signal: NodeJS.Signals): Promise<number | null> {
  const code = await control.stop(signal);
  control = await startControlProcess({ args, dataDir: control.dataDir });
  return code;
}

/** The pids of a sandbox's process tree: every process started with `--hostname ID` (bwrap) — ours to kill. */
function sandboxPids(id: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0");
      const i = argv.indexOf("--hostname");
      if (i >= 0 && argv[i + 1] === id) pids.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

describe("control restart safety", () => {
  let running: string;
  let paused: string;

  it("SIGKILL in the middle of a snapshot: after restart the snapshot is Failed (or Ready), never Creating, and the sandbox is adopted", async () => {
    running = (await api(control.base, "POST", "/v1/sandboxes", { image: { uri: "local:host" }, networkPolicy: { mode: "custom", allow_domains: ["up.test"] } })).json.id;
    paused = (await api(control.base, "POST", "/v1/sandboxes", { image: { uri: "local:host" }, networkPolicy: { mode: "custom", allow_domains: ["up.test"] } })).json.id;
    await waitForState(control.base, running, "Running");
    await waitForState(control.base, paused, "Running");
    // Incompressible data makes the layer slow enough to be killed in the middle of.
    const big = await exec(control.base, running, ["sh", "-c", "head -c 120000000 /dev/urandom > /workspace/big && echo small > /workspace/small"]);
    expect(big.exitCode).toBe(0);
    await api(control.base, "POST", `/v1/sandboxes/${paused}/pause`);
    await waitForState(control.base, paused, "Paused");
    // Changed while paused (and while the control module goes down): must hold after the restart's resume.
    expect((await api(control.base, "PUT", `/v1/sandboxes/${paused}/network-policy`, { mode: "custom", allow_domains: ["other.test"] })).status).toBe(200);

    const snap = await api(control.base, "POST", `/v1/sandboxes/${running}/snapshots`, { name: "interrupted" });
    expect(snap.status).toBe(202);
    await new Promise((r) => setTimeout(r, 300));
    expect((await api(control.base, "GET", `/v1/snapshots/${snap.json.id}`)).json.status.state).toBe("Creating");
    expect(await restart("SIGKILL")).toBeNull();

    const after = await api(control.base, "GET", `/v1/snapshots/${snap.json.id}`);
    expect(["Failed", "Ready"]).toContain(after.json.status.state);
    if (after.json.status.state === "Failed") {
      expect(after.json.status.reason).toBe("ControlRestarted");
      expect(after.json.status.message).toContain("restarted");
    }
    expect((await api(control.base, "GET", "/v1/snapshots?state=Creating")).json.items).toEqual([]);
    const s = await api(control.base, "GET", `/v1/sandboxes/${running}`);
    expect(s.json.status.state).toBe("Running");
    expect((await exec(control.base, running, ["cat", "/workspace/small"])).stdout).toBe("small\n");
    expect((await curlInside(control.base, running, `http://up.test:${upstream.port}/`)).status).toBe(200);
    // The name of a failed attempt can be used again.
    const again = await api(control.base, "POST", `/v1/sandboxes/${running}/snapshots`, { name: "interrupted" });
    expect(again.status).toBe(after.json.status.state === "Failed" ? 202 : 409);
  }, 120_000);

  it("keeps a paused sandbox paused across the restart, and its resume applies the policy set while paused", async () => {
    const p = await api(control.base, "GET", `/v1/sandboxes/${paused}`);
    expect(p.json.status.state).toBe("Paused");
    expect((await api(control.base, "POST", `/v1/sandboxes/${paused}/exec`, { command: ["true"] })).status).toBe(409);
    await api(control.base, "POST", `/v1/sandboxes/${paused}/resume`);
    await waitForState(control.base, paused, "Running");
    expect((await curlInside(control.base, paused, `http://other.test:${upstream.port}/`)).status).toBe(200);
    expect((await curlInside(control.base, paused, `http://up.test:${upstream.port}/`)).denied).toBe("not-allowed");
  });

  it("SIGTERM drains and exits 0; sandboxes survive and are adopted", async () => {
    const t = performance.now();
    expect(await restart("SIGTERM")).toBe(0);
    expect(performance.now() - t).toBeLessThan(15_000);
    expect((await api(control.base, "GET", `/v1/sandboxes/${running}`)).json.status).toMatchObject({ state: "Running" });
    expect((await exec(control.base, running, ["cat", "/workspace/small"])).exitCode).toBe(0);
  }, 60_000);

  it("marks a sandbox whose processes died while the control module was down as Failed (ProcessExited)", async () => {
    await control.stop("SIGTERM");
    const pids = sandboxPids(paused);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone with its parent
      }
    }
    control = await startControlProcess({ args, dataDir: control.dataDir });
    const s = await api(control.base, "GET", `/v1/sandboxes/${paused}`);
    expect(s.json.status.state).toBe("Failed");
    expect(s.json.status.reason).toBe("ProcessExited");
    expect(s.json.status.message).toContain("gone");
    expect((await api(control.base, "GET", `/v1/sandboxes/${running}`)).json.status.state).toBe("Running");
    // A Failed sandbox can still be deleted (its leftovers are cleaned up).
    expect((await api(control.base, "DELETE", `/v1/sandboxes/${paused}`)).status).toBe(204);
    await waitForState(control.base, paused, "Terminated");
  });

  it("fails a sandbox whose create was cut by a SIGKILL (ControlRestarted) and leaves no process behind", async () => {
    const r = await api(control.base, "POST", "/v1/sandboxes", { image: { uri: "local:host" } });
    expect(r.status).toBe(202);
    expect(await restart("SIGKILL")).toBeNull();
    const s = await api(control.base, "GET", `/v1/sandboxes/${r.json.id}`);
    expect(s.json.status).toMatchObject({ state: "Failed", reason: "ControlRestarted" });
    expect(s.json.status.message).toContain("before this sandbox finished starting");
    expect(sandboxPids(r.json.id)).toEqual([]);
    expect((await api(control.base, "GET", "/v1/sandboxes?state=Pending&state=Pausing&state=Resuming&state=Stopping")).json.items).toEqual([]);
  });
});
