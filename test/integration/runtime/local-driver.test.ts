import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RuntimeError, type RuntimeRecord } from "../../../src/runtime/driver.js";
import { LocalDriver, readSnapshotManifest } from "../../../src/runtime/local/index.js";
import { writeHostsFile } from "../../helpers/hosts-file.js";
import { startHttpUpstream, type Upstream } from "../../helpers/upstream.js";
import { adminGet, bwrapProblem, eventually, liveStates, pidExists, requireBuild, sandboxPids, viaProxySocket } from "./runtime-helpers.js";

const ID = "rt-main";
const TICKER = ["sh", "-c", "while :; do date +%s%N >> /workspace/ticks; sleep 0.05; done"];
const policy = { mode: "custom", allow_domains: ["allowed.test"] } as const;

/** Host processes whose command line names `needle` (a sandbox's proxy or bwrap would). */
function processesMentioning(needle: string): number[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(needle);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe.skipIf(bwrapProblem !== null)("local runtime: bubblewrap sandboxes behind their own egress proxy", () => {
  let base: string;
  let dataDir: string;
  let upstream: Upstream;
  let driver: LocalDriver;
  let record: RuntimeRecord;
  let proxyArgs: string[];
  const others: LocalDriver[] = [];
  const sdir = (id: string): string => path.join(dataDir, "sandboxes", id);
  const run = (id: string, command: string[], timeoutMs = 10_000) => driver.exec(id, command, { timeoutMs });
  const ticks = (): number => readFileSync(path.join(sdir(ID), "workspace", "ticks"), "utf8").split("\n").filter(Boolean).length;

  beforeAll(async () => {
    requireBuild();
    base = mkdtempSync(path.join(tmpdir(), "se-rt-"));
    dataDir = path.join(base, "data");
    upstream = await startHttpUpstream();
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1", "denied.test": "127.0.0.1" }, path.join(base, "hosts"));
    // The proxy runs in the host's network namespace, so loopback upstreams are reachable once exempted.
    proxyArgs = ["--internal-allow", "127.0.0.0/8", "--hosts", hosts];
    driver = new LocalDriver({ dataDir, proxyArgs, superviseIntervalMs: 200 });
    record = await driver.create({ id: ID, image: "local:host", env: { GREETING: "it's me" }, policy, entrypoint: TICKER });
  });

  afterAll(async () => {
    for (const d of [driver, ...others]) {
      for (const id of existsSync(path.join(dataDir ?? "/nonexistent", "sandboxes")) ? readdirSync(path.join(dataDir, "sandboxes")) : []) {
        await d?.destroy(id).catch(() => undefined);
      }
      await d?.detach();
    }
    await upstream?.close();
    if (base) rmSync(base, { recursive: true, force: true });
  });

  it("reports what the host can do: the freezer in use and why memory snapshots are off", async () => {
    const caps = await driver.capabilities();
    expect(caps.images).toEqual(["local:host"]);
    expect(["cgroup-v2", "cgroup-v1", "sigstop"]).toContain(caps.freezer);
    if (!caps.memorySnapshot.supported) expect(caps.memorySnapshot.reason).toMatch(/criu/);
  });

  it("lays out the sandbox's files: token 0600, policy written before start, sockets beside them", () => {
    const dir = sdir(ID);
    expect(statSync(path.join(dir, "admin-token")).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(path.join(dir, "policy.json"), "utf8"))).toMatchObject(policy);
    expect(statSync(path.join(dir, "admin.sock")).isSocket()).toBe(true);
    expect(statSync(path.join(dir, "egress", "proxy.sock")).isSocket()).toBe(true);
    expect(record.data).toMatchObject({ id: ID, paused: false });
    expect(JSON.stringify(record.data)).not.toContain("it's me");
  });

  it("refuses an image other than local:host, and tears everything down when the entrypoint cannot start", async () => {
    await expect(driver.create({ id: "rt-img", image: "ubuntu:24.04", env: {}, policy })).rejects.toMatchObject({ code: "unsupported" });
    const err = await driver.create({ id: "rt-bad-entry", image: "local:host", env: {}, policy, entrypoint: ["/nonexistent/cmd"] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).message).toMatch(/cannot start \/nonexistent\/cmd.*ENOENT/);
    expect(existsSync(sdir("rt-bad-entry"))).toBe(false);
    expect(processesMentioning(path.join("sandboxes", "rt-bad-entry"))).toEqual([]);
  });

  it("lets an allowed host through the proxy (curl inside, upstream on the host's loopback)", async () => {
    const r = await run(ID, ["curl", "-sS", "--max-time", "5", `http://allowed.test:${upstream.port}/hello`]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: "GET", url: "/hello" });
    // The same through a CONNECT tunnel (-p): the relay carries raw bytes both ways.
    const tunnel = await run(ID, ["curl", "-sS", "-p", "--max-time", "5", `http://allowed.test:${upstream.port}/tunnelled`]);
    expect(tunnel.exitCode).toBe(0);
    expect(JSON.parse(tunnel.stdout)).toMatchObject({ url: "/tunnelled" });
    // And a client that only honours the environment (Python's urllib reads http_proxy).
    const py = await run(ID, ["sh", "-c", `command -v python3 >/dev/null || { echo skipped; exit 0; }; python3 -c "import urllib.request; print(urllib.request.urlopen('http://allowed.test:${upstream.port}/py', timeout=5).status)"`]);
    expect(py.stderr).toBe("");
    expect(["200\n", "skipped\n"]).toContain(py.stdout);
  });

  it("refuses a host the policy does not allow with 403 and X-Egress-Denied: not-allowed", async () => {
    const r = await run(ID, ["curl", "-sS", "-i", "--max-time", "5", `http://denied.test:${upstream.port}/`]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403 /);
    expect(r.stdout.toLowerCase()).toContain("x-egress-denied: not-allowed");
  });

  it("has no route out but the proxy: a direct connection to the host's loopback upstream fails", async () => {
    const r = await run(ID, ["curl", "-sS", "--max-time", "5", "--noproxy", "*", `http://127.0.0.1:${upstream.port}/`]);
    expect(r.exitCode).toBe(7); // couldn't connect: the sandbox's 127.0.0.1 is its own
    const dev = await run(ID, ["cat", "/proc/net/dev"]);
    const ifaces = dev.stdout.split("\n").slice(2).map((l) => l.split(":")[0]!.trim()).filter(Boolean);
    expect(ifaces).toEqual(["lo"]);
    // The main routing table is empty (loopback lives in the local table): no default route, no gateway.
    const routes = await run(ID, ["cat", "/proc/net/route"]);
    expect(routes.stdout.trim().split("\n")).toHaveLength(1);
  });

  it("runs as an unprivileged user with no capabilities, no_new_privs, its own hostname and pid namespace", async () => {
    const r = await run(ID, ["sh", "-c", "id -u; hostname; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; ps -e -o pid= | wc -l; echo \"$GREETING\"; pwd"]);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe("65534");
    expect(lines[1]).toBe(ID);
    expect(r.stdout).toMatch(/CapEff:\s+0000000000000000/);
    expect(r.stdout).toMatch(/CapPrm:\s+0000000000000000/);
    expect(r.stdout).toMatch(/CapBnd:\s+0000000000000000/);
    expect(r.stdout).toMatch(/NoNewPrivs:\s+1/);
    // bwrap's init, the bridge, the ticker (+ its sleep), this sh and ps: nothing from the host.
    expect(Number(lines[6])).toBeLessThan(10);
    expect(lines[7]).toBe("it's me");
    expect(lines[8]).toBe("/workspace");
    // The entrypoint (started by the bridge, not by exec) is just as unprivileged.
    const init = (record.data.init as { pid: number }).pid;
    const entry = sandboxPids(init).filter((pid) => /^Uid:\s+65534\b/m.test(readFileSync(`/proc/${pid}/status`, "utf8")));
    expect(entry.length).toBeGreaterThan(0);
    for (const pid of entry) {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      expect(status).toMatch(/CapEff:\s+0{16}/);
      expect(status).toMatch(/CapBnd:\s+0{16}/);
      expect(status).toMatch(/NoNewPrivs:\s+1/);
    }
  });

  it("hides the data directory (token, admin socket, CA key) and the host's /run; the root is read-only", async () => {
    const r = await run(ID, ["sh", "-c", `ls -A ${dataDir} 2>&1; ls -A /run; touch /etc/x 2>&1; touch /usr/x 2>&1; echo ok > /workspace/x && cat /workspace/x; ls /run/egress`]);
    expect(r.stdout).not.toContain("admin-token");
    expect(r.stdout).not.toContain("ca-key.pem");
    expect(r.stdout).toMatch(/No such file or directory/);
    expect(r.stdout).toMatch(/touch: cannot touch '\/etc\/x': Read-only file system/);
    expect(r.stdout).toMatch(/touch: cannot touch '\/usr\/x': Read-only file system/);
    expect(r.stdout).toContain("ok\n");
    expect(r.stdout).toMatch(/ca-bundle\.pem\s+proxy\.sock/);
    const direct = await run(ID, ["curl", "-sS", "--max-time", "3", "--unix-socket", path.join(sdir(ID), "admin.sock"), "http://admin/v1/policy"]);
    expect(direct.exitCode).not.toBe(0);
  });

  it("trusts the proxy CA inside: the bundle is the system roots plus ca.pem, and env points at it", async () => {
    const r = await run(ID, ["sh", "-c", 'echo "$SSL_CERT_FILE $NODE_EXTRA_CA_CERTS $REQUESTS_CA_BUNDLE $CURL_CA_BUNDLE"; cat "$SSL_CERT_FILE" | grep -c "BEGIN CERTIFICATE"']);
    const [vars, count] = r.stdout.trim().split("\n");
    expect(new Set(vars!.split(" "))).toEqual(new Set(["/run/egress/ca-bundle.pem"]));
    expect(Number(count)).toBeGreaterThan(1);
    const caPem = readFileSync(path.join(dataDir, "ca", "ca.pem"), "utf8").trim();
    expect(readFileSync(path.join(sdir(ID), "egress", "ca-bundle.pem"), "utf8")).toContain(caPem);
  });

  it("times out a command that runs too long, and caps its output", async () => {
    const t0 = Date.now();
    const slow = await run(ID, ["sleep", "30"], 500);
    expect(slow.timedOut).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5_000);
    const big = await run(ID, ["head", "-c", "3000000", "/dev/zero"]);
    expect(big.stdout.length).toBe(1024 * 1024);
    const code = await run(ID, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    expect(code).toEqual({ exitCode: 3, stdout: "out\n", stderr: "err\n", timedOut: false });
  });

  it("pause freezes every process and makes the proxy refuse; exec is refused at once", async () => {
    await eventually(() => ticks() > 3, 5_000, "the ticker to run");
    const init = (record.data.init as { pid: number }).pid;
    await driver.pause(ID);
    expect(await driver.status(ID)).toBe("paused");
    const caps = await driver.capabilities();
    const members = sandboxPids(init);
    expect(members.length).toBeGreaterThan(2);
    if (caps.freezer === "cgroup-v1") {
      expect(readFileSync(`/sys/fs/cgroup/freezer/sandbox-egress/${ID}/freezer.state`, "utf8").trim()).toBe("FROZEN");
      // v1 frozen tasks sit in the refrigerator, which /proc shows as uninterruptible sleep.
      for (const st of liveStates(members)) expect(st).toMatch(/^D/);
    } else if (caps.freezer === "cgroup-v2") {
      const events = readFileSync(`/sys/fs/cgroup/unified/sandbox-egress/${ID}/cgroup.events`, "utf8");
      expect(events).toMatch(/^frozen 1$/m);
    } else {
      for (const st of liveStates(members)) expect(st).toMatch(/^T/);
    }
    const before = ticks();
    await new Promise((r) => setTimeout(r, 500));
    expect(ticks()).toBe(before);
    const refused = await viaProxySocket(path.join(sdir(ID), "egress", "proxy.sock"), `http://allowed.test:${upstream.port}/`);
    expect(refused.status).toBe(403);
    expect(refused.headers["x-egress-denied"]).toBe("mode-deny-all");
    const t0 = Date.now();
    await expect(run(ID, ["true"], 30_000)).rejects.toThrow(/paused/);
    expect(Date.now() - t0).toBeLessThan(1_000);
    await driver.pause(ID); // idempotent
  });

  it("resume applies the given policy first, then lets egress flow and thaws", async () => {
    const before = ticks();
    await driver.resume(ID, { mode: "custom", allow_domains: ["allowed.test", "denied.test"] });
    expect(await driver.status(ID)).toBe("running");
    await eventually(() => ticks() > before + 2, 5_000, "the ticker to run again");
    const r = await run(ID, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", `http://denied.test:${upstream.port}/`]);
    expect(r.stdout).toBe("200");
  });

  it("setPolicy applies live (revoking access), and a 400 from the proxy becomes a RuntimeError with the field errors", async () => {
    await driver.setPolicy(ID, { mode: "deny-all" });
    const r = await run(ID, ["curl", "-sS", "-i", "--max-time", "5", `http://allowed.test:${upstream.port}/`]);
    expect(r.stdout.toLowerCase()).toContain("x-egress-denied: mode-deny-all");
    const err = await driver.setPolicy(ID, { mode: "custom", allow_domains: ["*.com"] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).message).toMatch(/allow_domains\[0\]/);
    await driver.setPolicy(ID, policy);
    const ok = await run(ID, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", `http://allowed.test:${upstream.port}/`]);
    expect(ok.stdout).toBe("200");
  });

  it("snapshots /workspace as an OCI image layout and restores it into a new sandbox", async () => {
    // A FIFO is not something a layer carries (and node-tar would block on it for ever): skipped, not fatal.
    await run(ID, ["sh", "-c", "mkdir -p sub/deeper && echo nested > sub/deeper/f && ln -s sub/deeper/f link && echo x-content > /workspace/x && mkfifo sub/fifo"]);
    const layout = path.join(base, "snap-1");
    const annotations = { "io.sandbox-egress.policy": JSON.stringify(policy), "org.opencontainers.image.created": new Date().toISOString() };
    const art = await driver.snapshotFilesystem(ID, layout, annotations);
    expect(await driver.status(ID)).toBe("running"); // thawed again after the copy
    expect(JSON.parse(readFileSync(path.join(layout, "oci-layout"), "utf8"))).toEqual({ imageLayoutVersion: "1.0.0" });
    const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as { manifests: { digest: string; mediaType: string }[] };
    expect(index.manifests[0]!.digest).toBe(art.manifestDigest);
    const blob = (d: string): Buffer => readFileSync(path.join(layout, "blobs", "sha256", d.slice(7)));
    for (const f of readdirSync(path.join(layout, "blobs", "sha256"))) {
      expect(createHash("sha256").update(readFileSync(path.join(layout, "blobs", "sha256", f))).digest("hex")).toBe(f);
    }
    const manifest = JSON.parse(blob(art.manifestDigest).toString()) as { config: { mediaType: string; digest: string }; layers: { mediaType: string; size: number }[]; annotations: Record<string, string> };
    expect(manifest.config.mediaType).toBe("application/vnd.oci.image.config.v1+json");
    expect(manifest.layers[0]!.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
    expect(manifest.layers[0]!.size).toBe(art.layerSize);
    const config = JSON.parse(blob(manifest.config.digest).toString()) as { rootfs: { type: string; diff_ids: string[] } };
    expect(config.rootfs.type).toBe("layers");
    expect(config.rootfs.diff_ids[0]).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await readSnapshotManifest(layout)).toEqual(annotations);
    await expect(driver.snapshotFilesystem(ID, layout, {})).rejects.toThrow(/already exists/);

    await driver.create({ id: "rt-restored", image: "local:host", env: {}, policy, restoreFrom: layout });
    const r = await run("rt-restored", ["sh", "-c", "cat /workspace/x sub/deeper/f link; stat -c '%U %a' /workspace/x; readlink link; ls sub"]);
    expect(r.stdout).toBe("x-content\nnested\nnested\nnobody 644\nsub/deeper/f\ndeeper\n");
    await driver.destroy("rt-restored");
  });

  it("refuses a snapshot with a tampered blob (invalid-snapshot) and creates nothing", async () => {
    const layout = path.join(base, "snap-1");
    const tampered = path.join(base, "snap-tampered");
    rmSync(tampered, { recursive: true, force: true });
    await driver.snapshotFilesystem(ID, tampered, {});
    const index = JSON.parse(readFileSync(path.join(tampered, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(readFileSync(path.join(tampered, "blobs", "sha256", index.manifests[0]!.digest.slice(7)), "utf8")) as { layers: { digest: string }[] };
    const layerFile = path.join(tampered, "blobs", "sha256", manifest.layers[0]!.digest.slice(7));
    const bytes = readFileSync(layerFile);
    const at = bytes.length - 20;
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at); // same size, different content
    writeFileSync(layerFile, bytes);
    const err = await driver.create({ id: "rt-tampered", image: "local:host", env: {}, policy, restoreFrom: tampered }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).code).toBe("invalid-snapshot");
    expect((err as RuntimeError).message).toMatch(/does not match its digest/);
    expect(existsSync(sdir("rt-tampered"))).toBe(false);
    expect(existsSync(layout)).toBe(true);
  });

  it("restarts a proxy killed with SIGKILL, from the same files (same policy revision)", async () => {
    const before = (await adminGet(sdir(ID), "/v1/policy")).body as { revision: number };
    const state = JSON.parse(readFileSync(path.join(sdir(ID), "runtime.json"), "utf8")) as { proxy: { pid: number } };
    process.kill(state.proxy.pid, "SIGKILL");
    const restarted = await eventually(
      () => {
        const s = JSON.parse(readFileSync(path.join(sdir(ID), "runtime.json"), "utf8")) as { proxy: { pid: number } };
        return s.proxy.pid !== state.proxy.pid && pidExists(s.proxy.pid) ? s.proxy.pid : undefined;
      },
      10_000,
      "a new proxy pid",
    );
    expect(pidExists(state.proxy.pid)).toBe(false);
    expect(restarted).not.toBe(state.proxy.pid);
    const after = (await adminGet(sdir(ID), "/v1/policy")).body as { revision: number };
    expect(after.revision).toBe(before.revision);
    const r = await run(ID, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", `http://allowed.test:${upstream.port}/`]);
    expect(r.stdout).toBe("200");
    expect(await driver.status(ID)).toBe("running");
  });

  it("fails closed: a proxy that cannot come back freezes the sandbox until one enforces again", async () => {
    const dir = sdir(ID);
    const policyFile = path.join(dir, "policy.json");
    const good = readFileSync(policyFile, "utf8");
    // An invalid policy file makes every restart fail (the proxy refuses to start on it).
    writeFileSync(policyFile, JSON.stringify({ mode: "custom", allow_domains: ["*"] }));
    const state = JSON.parse(readFileSync(path.join(dir, "runtime.json"), "utf8")) as { proxy: { pid: number } };
    process.kill(state.proxy.pid, "SIGKILL");
    await eventually(async () => (await driver.status(ID)) === "paused", 20_000, "the sandbox to be frozen");
    const n = ticks();
    await new Promise((r) => setTimeout(r, 400));
    expect(ticks()).toBe(n);
    writeFileSync(policyFile, good);
    await eventually(async () => (await driver.status(ID)) === "running", 30_000, "the proxy to come back and the sandbox to thaw");
    await eventually(() => ticks() > n, 5_000, "the ticker to run again");
  }, 60_000);

  it("adopt() after detach(): a new driver instance re-attaches and supervises the same sandbox", async () => {
    await driver.detach();
    const d2 = new LocalDriver({ dataDir, proxyArgs, superviseIntervalMs: 200 });
    others.push(d2);
    const adopted = await d2.adopt(record);
    expect(adopted).not.toBeNull();
    expect(adopted!.data.init).toEqual(record.data.init);
    expect(await d2.status(ID)).toBe("running");
    const r = await d2.exec(ID, ["cat", "/workspace/x"], { timeoutMs: 5_000 });
    expect(r.stdout).toBe("x-content\n");
    // Supervision came back with it: kill the proxy once more.
    const state = JSON.parse(readFileSync(path.join(sdir(ID), "runtime.json"), "utf8")) as { proxy: { pid: number } };
    process.kill(state.proxy.pid, "SIGKILL");
    await eventually(
      () => {
        const s = JSON.parse(readFileSync(path.join(sdir(ID), "runtime.json"), "utf8")) as { proxy: { pid: number } };
        return s.proxy.pid !== state.proxy.pid && pidExists(s.proxy.pid);
      },
      10_000,
      "the adopting driver to restart the proxy",
    );
    driver = d2;
  });

  it("adopt() of a sandbox whose processes are gone answers null and removes the leftovers", async () => {
    const rec = await driver.create({ id: "rt-dead", image: "local:host", env: {}, policy });
    await driver.detach();
    const init = rec.data.init as { pid: number };
    const proxy = rec.data.proxy as { pid: number };
    process.kill(init.pid, "SIGKILL");
    await eventually(() => !pidExists(init.pid), 5_000, "the sandbox to die");
    const d3 = new LocalDriver({ dataDir, proxyArgs });
    others.push(d3);
    expect(await d3.adopt(rec)).toBeNull();
    expect(pidExists(proxy.pid)).toBe(false);
    expect(existsSync(sdir("rt-dead"))).toBe(false);
    // The main sandbox keeps being supervised by a fresh instance.
    driver = new LocalDriver({ dataDir, proxyArgs, superviseIntervalMs: 200 });
    others.push(driver);
    expect(await driver.adopt(record)).not.toBeNull();
  });

  it("destroy leaves nothing running and nothing on disk, and is idempotent", async () => {
    const s = JSON.parse(readFileSync(path.join(sdir(ID), "runtime.json"), "utf8")) as { proxy: { pid: number }; bwrap: { pid: number }; init: { pid: number } };
    const members = sandboxPids(s.init.pid);
    await driver.destroy(ID);
    for (const pid of [s.proxy.pid, s.bwrap.pid, s.init.pid, ...members]) expect(pidExists(pid)).toBe(false);
    expect(processesMentioning(path.join("sandboxes", ID))).toEqual([]);
    expect(existsSync(sdir(ID))).toBe(false);
    expect(existsSync(`/sys/fs/cgroup/freezer/sandbox-egress/${ID}`)).toBe(false);
    expect(existsSync(`/sys/fs/cgroup/unified/sandbox-egress/${ID}`)).toBe(false);
    expect(await driver.status(ID)).toBe("gone");
    await driver.destroy(ID);
    await expect(driver.exec(ID, ["true"], { timeoutMs: 1_000 })).rejects.toMatchObject({ code: "not-found" });
  });
});
