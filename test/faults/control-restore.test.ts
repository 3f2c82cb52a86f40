/**
 * SIGKILL of the control module in the middle of a restore (POST /v1/sandboxes {snapshotId}), with the real
 * LocalDriver (root + bwrap). After the restart the restored sandbox is Running (adopted) or Failed with a reason,
 * never Pending; a Failed one leaves no process behind; the snapshot stays Ready and restorable.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlProcess, type RunningControl } from "../helpers/control-process.js";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startHttpUpstream, type Upstream } from "../helpers/upstream.js";
import { api, curlInside, deleteAll, exec, waitForSnapshot, waitForState } from "../integration/control/helpers.js";

let control: RunningControl | undefined;
let upstream: Upstream | undefined;
let args: string[] = [];
let dataDir: string | undefined;

beforeAll(async () => {
  upstream = await startHttpUpstream();
  const hosts = await writeHostsFile({ "up.test": "127.0.0.1", "other.test": "127.0.0.1" });
  args = ["--internal-allow", "127.0.0.0/8", "--hosts", hosts];
  control = await startControlProcess({ args });
  dataDir = control.dataDir;
});

afterAll(async () => {
  try {
    if (control && control.proc.exitCode === null && control.proc.signalCode === null) await deleteAll(control.base);
  } finally {
    await control?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    await upstream?.close();
  }
});

/** Every process started with `--hostname ID` (bwrap), or whose argv names the sandbox id (its proxy). */
function sandboxPids(id: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0");
      if (argv.includes(id)) pids.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

describe("SIGKILL of the control module during a restore", () => {
  it("fails a restore cut by SIGKILL while Pending (ControlRestarted, never Pending), leaves no process or workspace, and the snapshot stays Ready and restorable", async () => {
    const base = (): string => control!.base;
    const src = (await api(base(), "POST", "/v1/sandboxes", { image: { uri: "local:host" }, networkPolicy: { mode: "custom", allow_domains: ["up.test"] } })).json.id as string;
    await waitForState(base(), src, "Running");
    // The orphan check below can see a sandbox's processes.
    expect(sandboxPids(src).length).toBeGreaterThan(0);
    // Enough data that unpacking the layer takes a moment to be killed in the middle of.
    const w = await exec(base(), src, ["sh", "-c", "head -c 60000000 /dev/urandom > /workspace/big && echo marker > /workspace/marker"]);
    expect(w.exitCode).toBe(0);
    const snap = await api(base(), "POST", `/v1/sandboxes/${src}/snapshots`, { name: "restore-me" });
    expect(snap.status).toBe(202);
    const snapId = snap.json.id as string;
    expect((await waitForSnapshot(base(), snapId, ["Ready", "Failed"])).status.state).toBe("Ready");

    const r = await api(base(), "POST", "/v1/sandboxes", { snapshotId: snapId, networkPolicy: { mode: "custom", allow_domains: ["other.test"] } });
    expect(r.status).toBe(202);
    const restored = r.json.id as string;
    const stateAtKill = (await api(base(), "GET", `/v1/sandboxes/${restored}`)).json.status.state as string;
    expect(await control!.stop("SIGKILL")).toBeNull();
    control = await startControlProcess({ args, dataDir });

    const after = (await api(base(), "GET", `/v1/sandboxes/${restored}`)).json;
    // Killed while Pending (unpacking the layer): the restart fails it, with the reason, and kills what it started.
    expect(stateAtKill).toBe("Pending");
    expect(after.status).toMatchObject({
      state: "Failed",
      reason: "ControlRestarted",
      message: "The control module restarted before this sandbox finished starting; create it again.",
    });
    expect(sandboxPids(restored)).toEqual([]);
    expect(existsSync(path.join(dataDir!, "sandboxes", restored, "workspace")), "the half-unpacked workspace is left behind").toBe(false);
    expect((await api(base(), "GET", "/v1/sandboxes?state=Pending&state=Pausing&state=Resuming&state=Stopping")).json.items).toEqual([]);

    // The snapshot is untouched and restores fine now.
    const s = await api(base(), "GET", `/v1/snapshots/${snapId}`);
    expect(s.json.status.state).toBe("Ready");
    const again = await api(base(), "POST", "/v1/sandboxes", { snapshotId: snapId });
    expect(again.status).toBe(202);
    await waitForState(base(), again.json.id, "Running", 60_000);
    expect((await exec(base(), again.json.id, ["cat", "/workspace/marker"])).stdout).toBe("marker\n");
    // The snapshot's policy (no override given).
    expect((await curlInside(base(), again.json.id, `http://up.test:${upstream!.port}/`)).status).toBe(200);
    expect((await api(base(), "GET", `/v1/sandboxes/${src}`)).json.status.state).toBe("Running");
  }, 180_000);
});
