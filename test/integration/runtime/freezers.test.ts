import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalDriver, type FreezerKind } from "../../../src/runtime/local/index.js";
import { bwrapProblem, eventually, liveStates, procState, requireBuild, sandboxPids } from "./runtime-helpers.js";

/** Which freezers this host can offer besides the default one (all three on a hybrid cgroup host as root). */
function available(): FreezerKind[] {
  const kinds: FreezerKind[] = ["sigstop"];
  if (existsSync("/sys/fs/cgroup/cgroup.controllers") || existsSync("/sys/fs/cgroup/unified/cgroup.controllers")) kinds.push("cgroup-v2");
  if (existsSync("/sys/fs/cgroup/freezer/cgroup.procs")) kinds.push("cgroup-v1");
  return process.getuid?.() === 0 ? kinds : ["sigstop"];
}

function v2Dir(id: string): string {
  return existsSync("/sys/fs/cgroup/cgroup.controllers") ? `/sys/fs/cgroup/sandbox-egress/${id}` : `/sys/fs/cgroup/unified/sandbox-egress/${id}`;
}

describe.skipIf(bwrapProblem !== null)("local runtime freezers", () => {
describe.each(available())("with the %s freezer", (kind) => {
  let base: string;
  let driver: LocalDriver;
  const id = `fz-${kind}`;
  const file = (name: string): string => path.join(base, "data", "sandboxes", id, "workspace", name);
  const lines = (name: string): number => (existsSync(file(name)) ? readFileSync(file(name), "utf8").split("\n").filter(Boolean).length : 0);

  beforeAll(async () => {
    requireBuild();
    base = mkdtempSync(path.join(tmpdir(), "se-fz-"));
    driver = new LocalDriver({ dataDir: path.join(base, "data"), freezer: kind });
    await driver.create({ id, image: "local:host", env: {}, policy: { mode: "deny-all" }, entrypoint: ["sh", "-c", "while :; do echo t >> /workspace/main; sleep 0.05; done"] });
  });

  afterAll(async () => {
    await driver?.destroy(id).catch(() => undefined);
    await driver?.detach();
    if (base) rmSync(base, { recursive: true, force: true });
  });

  it("reports the freezer it uses", async () => {
    expect((await driver.capabilities()).freezer).toBe(kind);
  });

  it("freezes the entrypoint AND processes started later by exec, and thaws them all", async () => {
    // A background process started through exec outlives the exec call; pause must catch it too.
    const bg = await driver.exec(id, ["sh", "-c", "nohup sh -c 'while :; do echo b >> /workspace/bg; sleep 0.05; done' >/dev/null 2>&1 &"], { timeoutMs: 5_000 });
    expect(bg.exitCode).toBe(0);
    await eventually(() => lines("bg") > 2 && lines("main") > 2, 5_000, "both writers to run");
    await driver.pause(id);
    expect(await driver.status(id)).toBe("paused");
    const init = JSON.parse(readFileSync(path.join(base, "data", "sandboxes", id, "runtime.json"), "utf8")) as { init: { pid: number } };
    const members = sandboxPids(init.init.pid);
    expect(members.length).toBeGreaterThan(3);
    if (kind === "sigstop") for (const st of liveStates(members)) expect(st).toMatch(/^T \(stopped\)/);
    if (kind === "cgroup-v1") {
      expect(readFileSync(`/sys/fs/cgroup/freezer/sandbox-egress/${id}/freezer.state`, "utf8").trim()).toBe("FROZEN");
      for (const st of liveStates(members)) expect(st).toMatch(/^D/);
    }
    if (kind === "cgroup-v2") expect(readFileSync(path.join(v2Dir(id), "cgroup.events"), "utf8")).toMatch(/^frozen 1$/m);
    const [m, b] = [lines("main"), lines("bg")];
    await new Promise((r) => setTimeout(r, 500));
    expect([lines("main"), lines("bg")]).toEqual([m, b]);

    await driver.resume(id, { mode: "deny-all" });
    expect(await driver.status(id)).toBe("running");
    await eventually(() => lines("main") > m + 2 && lines("bg") > b + 2, 5_000, "both writers to run again");
    if (kind === "sigstop") for (const st of liveStates(sandboxPids(init.init.pid))) expect(st).not.toMatch(/^T/);
  });

  it("snapshots a running sandbox (frozen only for the copy) and leaves a paused one paused", async () => {
    await driver.snapshotFilesystem(id, path.join(base, "snap-running"), {});
    expect(await driver.status(id)).toBe("running");
    await driver.pause(id);
    await driver.snapshotFilesystem(id, path.join(base, "snap-paused"), {});
    expect(await driver.status(id)).toBe("paused");
    await driver.resume(id, { mode: "deny-all" });
  });

  it("destroy kills every process, exec'd ones included, and removes the group", async () => {
    const init = JSON.parse(readFileSync(path.join(base, "data", "sandboxes", id, "runtime.json"), "utf8")) as { init: { pid: number } };
    const members = sandboxPids(init.init.pid);
    await driver.destroy(id);
    for (const pid of members) expect(procState(pid)).toBeNull();
    if (kind === "cgroup-v1") expect(existsSync(`/sys/fs/cgroup/freezer/sandbox-egress/${id}`)).toBe(false);
    if (kind === "cgroup-v2") expect(existsSync(v2Dir(id))).toBe(false);
  });
});
});
