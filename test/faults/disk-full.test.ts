/**
 * A full disk under the proxy's policy file (a 2 MiB tmpfs): an admin PUT that cannot be written answers a clear
 * 5xx, changes nothing (file, revision, policy in force) and leaves no temp file; once space is back, PUTs work.
 * Needs mount(2) (root); skipped with a message where it is not permitted.
 */
import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlProcess, type RunningControl } from "../helpers/control-process.js";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { rawRequest } from "../helpers/raw-client.js";
import { startHttpUpstream, type Upstream } from "../helpers/upstream.js";
import { api, deleteAll, exec, waitForSnapshot, waitForState } from "../integration/control/helpers.js";
import { admin, metric } from "./helpers.js";

/** Mount a tmpfs of `size` on a fresh directory (throws where mount is not permitted). */
function mountTmpfs(size: string, prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stdio: "pipe" });
    return dir;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot mount a tmpfs: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`);
  }
}

function unmount(dir: string): void {
  if (!dir) return;
  try {
    execFileSync("umount", ["-l", dir], { stdio: "pipe" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Whether mount(2) is permitted here, decided once at collection time with a throw-away mount; the real mounts
 * are made in beforeAll, so that a describe block filtered out (-t) mounts nothing it would not unmount.
 */
function mountProblem(): string | null {
  try {
    unmount(mountTmpfs("1m", "egress-probe-"));
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

const cannotMount = mountProblem();
if (cannotMount) console.warn(`test/faults/disk-full.test.ts: skipped, ${cannotMount}`);

const A = { mode: "custom", allow_domains: ["a.test"] };
const B = { mode: "custom", allow_domains: ["b.test"] };

/** Write zeros until the file system says ENOSPC, or until only `leave` bytes are left. */
function fill(file: string, leave = 0): void {
  if (leave > 0) {
    const free = Number(execFileSync("df", ["--output=avail", "-B1", path.dirname(file)]).toString().split("\n")[1]);
    const fd = openSync(file, "w");
    try {
      const block = Buffer.alloc(64 * 1024);
      for (let left = free - leave; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(block.length, left));
    } finally {
      closeSync(fd);
    }
    return;
  }
  const fd = openSync(file, "w");
  const block = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
  // The last partial block too: not even one more byte fits.
  const fd2 = openSync(file, "a");
  try {
    for (;;) writeSync(fd2, Buffer.alloc(1));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd2);
  }
}

describe.skipIf(cannotMount !== null)("full disk under --policy-file", () => {
  let proxy: RunningProxy | undefined;
  let upstream: Upstream | undefined;
  let mountDir = "";
  let policyFile = "";
  let filler = "";

  beforeAll(async () => {
    mountDir = mountTmpfs("2m", "egress-full-");
    policyFile = path.join(mountDir, "policy.json");
    filler = path.join(mountDir, "filler");
    upstream = await startHttpUpstream();
    const hosts = await writeHostsFile({ "a.test": "127.0.0.1", "b.test": "127.0.0.1" });
    writeFileSync(policyFile, JSON.stringify(A, null, 2));
    proxy = await startProxy({ args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--policy-file", policyFile] });
  });

  afterAll(async () => {
    try {
      await proxy?.stop();
      if (proxy) rmSync(proxy.dir, { recursive: true, force: true });
      await upstream?.close();
    } finally {
      unmount(mountDir);
    }
  });

  it("answers a clear 507 to a PUT it cannot write, and changes nothing", async () => {
    const before = await admin(proxy!.admin, "GET", "/v1/policy");
    expect(before.json.revision).toBe(1);
    const fileBefore = readFileSync(policyFile, "utf8");
    const failuresBefore = await metric(proxy!.admin, "egress_policy_reload_failures_total");
    fill(filler);

    const r = await admin(proxy!.admin, "PUT", "/v1/policy", { ...B, transforms: [{ domain: "b.test", inject_headers: { "X-Key": "sekret-value-123" } }] });
    expect(r.status, r.text).toBe(507);
    expect(r.json.error.code).toBe("policy-write-failed");
    expect(r.json.error.message).toMatch(/no space left on the device/i);
    expect(r.json.error.message).toContain("unchanged");
    expect(r.text).not.toContain("sekret");
    expect(r.text).not.toContain(mountDir);

    // Nothing changed: file, revision, policy in force; no temp file; the watcher did not pick anything up.
    expect(readFileSync(policyFile, "utf8")).toBe(fileBefore);
    expect(readdirSync(mountDir).sort()).toEqual([".policy.json.revision", "filler", "policy.json"]);
    await new Promise((res) => setTimeout(res, 300));
    expect((await admin(proxy!.admin, "GET", "/v1/policy")).json).toEqual(before.json);
    expect((await metric(proxy!.admin, "egress_policy_reload_failures_total")) - failuresBefore).toBe(1);
    const a = await rawRequest(proxy!.proxy, `GET http://a.test:${upstream!.port}/ HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    expect(a.status).toBe(200);
    a.socket.destroy();
    const b = await rawRequest(proxy!.proxy, `GET http://b.test:${upstream!.port}/ HTTP/1.1\r\nHost: b.test\r\n\r\n`);
    expect(b.headers["x-egress-denied"]).toBe("not-allowed");
    b.socket.destroy();
    // The log line says why, without the secret.
    const line = proxy!.lines.find((l) => l.includes("ENOSPC"));
    expect(line).toBeDefined();
    expect(proxy!.lines.join("\n")).not.toContain("sekret");
  });

  it("accepts PUTs again once there is space, with the next revision", async () => {
    rmSync(filler);
    const r = await admin(proxy!.admin, "PUT", "/v1/policy", B);
    expect(r.status, r.text).toBe(200);
    expect(r.json.revision).toBe(2);
    expect(JSON.parse(readFileSync(policyFile, "utf8"))).toEqual(B);
    expect(readdirSync(mountDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});

describe.skipIf(cannotMount !== null)("full disk under the control module's --data-dir", () => {
  let control: RunningControl | undefined;
  let ctlDir = "";
  let filler = "";

  beforeAll(async () => {
    // Short: the sandboxes' unix socket paths live under it.
    ctlDir = mountTmpfs("24m", "cf-");
    filler = path.join(ctlDir, "filler");
    control = await startControlProcess({ dataDir: ctlDir, args: ["--internal-allow", "127.0.0.0/8"] });
  });

  afterAll(async () => {
    try {
      if (filler) rmSync(filler, { force: true });
      if (control && control.proc.exitCode === null && control.proc.signalCode === null) await deleteAll(control.base);
      await control?.stop();
    } finally {
      unmount(ctlDir);
    }
  });

  it("fails a snapshot that does not fit (with a reason), keeps SQLite intact and the source running", async () => {
    const base = control!.base;
    const id = (await api(base, "POST", "/v1/sandboxes", { image: { uri: "local:host" } })).json.id as string;
    await waitForState(base, id, "Running");
    // 8 MB of incompressible data in the workspace; then leave only 3 MB free: the layer cannot be written.
    expect((await exec(base, id, ["sh", "-c", "head -c 8000000 /dev/urandom > /workspace/big && echo ok > /workspace/small"])).exitCode).toBe(0);
    fill(filler, 3 * 1024 * 1024);

    const snap = await api(base, "POST", `/v1/sandboxes/${id}/snapshots`, { name: "too-big" });
    expect(snap.status).toBe(202);
    const done = await waitForSnapshot(base, snap.json.id, ["Ready", "Failed"]);
    expect(done.status.state).toBe("Failed");
    expect(done.status.reason).toBe("SnapshotFailed");
    expect(done.status.message).toMatch(/ENOSPC|no space/i);
    // Nothing of the failed layer is left to hold the space.
    expect(readdirSync(path.join(ctlDir, "snapshots"))).toEqual([]);

    // The source keeps running (thawed), its files intact.
    expect((await api(base, "GET", `/v1/sandboxes/${id}`)).json.status.state).toBe("Running");
    const r = await exec(base, id, ["cat", "/workspace/small"]);
    expect(r).toMatchObject({ exitCode: 0, stdout: "ok\n" });

    // The store is intact and still takes writes.
    const db = new Database(path.join(ctlDir, "control.sqlite"), { readonly: true, fileMustExist: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    } finally {
      db.close();
    }
    expect((await api(base, "PATCH", `/v1/sandboxes/${id}/metadata`, { k: "v" })).status).toBeLessThan(300);

    // With space back, the same snapshot works.
    rmSync(filler);
    const again = await api(base, "POST", `/v1/sandboxes/${id}/snapshots`, { name: "too-big" });
    expect(again.status).toBe(202);
    expect((await waitForSnapshot(base, again.json.id, ["Ready", "Failed"])).status.state).toBe("Ready");
  }, 120_000);

  let full: { status: number; text: string } | undefined;

  it("with the disk 100% full: a request that cannot be stored changes nothing, SQLite stays intact, the sandbox runs", async () => {
    const base = control!.base;
    const id = (await api(base, "POST", "/v1/sandboxes", { image: { uri: "local:host" } })).json.id as string;
    await waitForState(base, id, "Running");
    fill(filler);
    const snapsBefore = (await api(base, "GET", "/v1/snapshots?pageSize=100")).json.pagination.totalItems as number;
    const r = await api(base, "POST", `/v1/sandboxes/${id}/snapshots`, { name: "no-room" });
    full = { status: r.status, text: r.text };
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect((await api(base, "GET", "/v1/snapshots?pageSize=100")).json.pagination.totalItems).toBe(snapsBefore);
    expect((await api(base, "GET", `/v1/sandboxes/${id}`)).json.status.state).toBe("Running");
    expect((await exec(base, id, ["true"])).exitCode).toBe(0);
    const db = new Database(path.join(ctlDir, "control.sqlite"), { readonly: true, fileMustExist: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    } finally {
      db.close();
    }
    rmSync(filler);
    const again = await api(base, "POST", `/v1/sandboxes/${id}/snapshots`, { name: "no-room" });
    expect(again.status).toBe(202);
    expect((await waitForSnapshot(base, again.json.id, ["Ready", "Failed"])).status.state).toBe("Ready");
  }, 60_000);

  // SQLITE_FULL / ENOSPC are the operator's to fix: the API says so instead of a generic 500.
  it("with the disk 100% full, the answer says the disk is full (507)", () => {
    expect(full).toBeDefined();
    expect(full!.status).toBe(507);
    expect(JSON.parse(full!.text).message).toMatch(/disk is full|no space/i);
  });
});
