import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, type Stats } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RuntimeError } from "../../../src/runtime/driver.js";
import { LocalDriver, readSnapshotManifest, verifySnapshot } from "../../../src/runtime/local/index.js";
import { unpackSnapshot } from "../../../src/runtime/local/oci.js";
import { bwrapProblem, requireBuild } from "./runtime-helpers.js";

/** One ustar entry, written by hand so that tests can say things node-tar would refuse to write. */
interface Entry {
  name: string;
  type?: "0" | "1" | "2" | "3" | "5";
  body?: string;
  linkname?: string;
  mode?: number;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, "0")}\0`;
}

function tarOf(entries: Entry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? "");
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100, "utf8");
    h.write(octal(e.mode ?? (e.type === "5" ? 0o755 : 0o644), 8), 100);
    h.write(octal(0, 8), 108);
    h.write(octal(0, 8), 116);
    h.write(octal(e.type === undefined || e.type === "0" ? body.length : 0, 12), 124);
    h.write(octal(1_700_000_000, 12), 136);
    h.write("        ", 148);
    h.write(e.type ?? "0", 156);
    if (e.linkname) h.write(e.linkname, 157, 100, "utf8");
    h.write("ustar\0", 257);
    h.write("00", 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    blocks.push(h);
    if (e.type === undefined || e.type === "0") {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const sha = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

interface LayoutTweaks {
  layerSizeDelta?: number;
  diffId?: string;
  manifestDigest?: string;
  annotations?: Record<string, string>;
}

/** An OCI layout around `tar`, with correct digests unless a tweak says otherwise. */
function layoutOf(dir: string, tar: Buffer, t: LayoutTweaks = {}): string {
  const blobs = path.join(dir, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer): string => {
    const d = sha(b);
    writeFileSync(path.join(blobs, d.slice(7)), b);
    return d;
  };
  const layer = gzipSync(tar);
  const layerDigest = put(layer);
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [t.diffId ?? sha(tar)] } }));
  const configDigest = put(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigest, size: layer.length + (t.layerSizeDelta ?? 0) }],
      annotations: t.annotations ?? {},
    }),
  );
  const manifestDigest = put(manifest);
  writeFileSync(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    path.join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: t.manifestDigest ?? manifestDigest, size: manifest.length }] }),
  );
  return dir;
}

describe.skipIf(bwrapProblem !== null)("restoring snapshots: every blob verified, every tar entry judged, nothing created on failure", () => {
  let base: string;
  let driver: LocalDriver;
  let n = 0;
  const fresh = (): string => path.join(base, `layout-${++n}`);
  const sdir = (id: string): string => path.join(base, "data", "sandboxes", id);
  const wsdir = (id: string): string => path.join(sdir(id), "workspace");
  const sh = async (id: string, script: string): Promise<string> => {
    const r = await driver.exec(id, ["sh", "-c", script], { timeoutMs: 10_000 });
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    return r.stdout;
  };

  async function refused(layout: string, pattern: RegExp): Promise<void> {
    const id = `bad-${n}`;
    const err = await driver.create({ id, image: "local:host", env: {}, policy: { mode: "deny-all" }, restoreFrom: layout }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).code).toBe("invalid-snapshot");
    expect((err as RuntimeError).message).toMatch(pattern);
    expect(existsSync(sdir(id))).toBe(false);
    // No proxy was started for it either: its log would be in the (absent) directory, and no cgroup is left.
    expect(existsSync(`/sys/fs/cgroup/freezer/sandbox-egress/${id}`)).toBe(false);
  }

  beforeAll(() => {
    requireBuild();
    base = mkdtempSync(path.join(tmpdir(), "se-snap-"));
    driver = new LocalDriver({ dataDir: path.join(base, "data") });
  });

  afterAll(async () => {
    for (const id of existsSync(path.join(base, "data", "sandboxes")) ? readdirSync(path.join(base, "data", "sandboxes")) : []) await driver.destroy(id).catch(() => undefined);
    await driver?.detach();
    if (base) rmSync(base, { recursive: true, force: true });
  });

  it("restores a hand-made layout: files, directories, links inside, owner = sandbox user, setuid bits dropped", async () => {
    const tar = tarOf([
      { name: "dir/", type: "5" },
      { name: "dir/a.txt", body: "A\n" },
      { name: "./top.txt", body: "T\n", mode: 0o4755 },
      { name: "dir/rel", type: "2", linkname: "a.txt" },
      { name: "abs", type: "2", linkname: "/workspace/dir/a.txt" },
      { name: "hard", type: "1", linkname: "dir/a.txt" },
    ]);
    const layout = layoutOf(fresh(), tar, { annotations: { "io.sandbox-egress.policy": '{"mode":"deny-all"}' } });
    expect(await readSnapshotManifest(layout)).toEqual({ "io.sandbox-egress.policy": '{"mode":"deny-all"}' });
    await driver.create({ id: "good", image: "local:host", env: {}, policy: { mode: "deny-all" }, restoreFrom: layout });
    const r = await driver.exec("good", ["sh", "-c", "cat dir/a.txt top.txt dir/rel abs hard; stat -c '%U:%G %a' top.txt dir/a.txt; readlink abs dir/rel"], { timeoutMs: 5_000 });
    // The link to /workspace/… keeps its absolute text (it is no longer rewritten relative).
    expect(r.stdout).toBe("A\nT\nA\nA\nA\nnobody:nogroup 755\nnobody:nogroup 644\n/workspace/dir/a.txt\na.txt\n");
    await driver.destroy("good");
  });

  it.each([
    ["an absolute path", [{ name: "/etc/evil", body: "x" }], /absolute path/],
    ["a '..' path", [{ name: "../escape", body: "x" }], /'\.\.'/],
    ["a '..' in the middle", [{ name: "a/../../escape", body: "x" }], /'\.\.'/],
    ["a relative symlink that climbs out", [{ name: "d/up", type: "2", linkname: "../../admin-token" }], /climbs out/],
    [
      "a file written through a symlink the archive made",
      [
        { name: "sub/", type: "5" },
        { name: "ln", type: "2", linkname: "sub" },
        { name: "ln/file", body: "x" },
      ],
      /through the symbolic link ln/,
    ],
    [
      "a file written through an absolute symlink out of the workspace",
      [
        { name: "etc", type: "2", linkname: "/etc" },
        { name: "etc/evil", body: "x" },
      ],
      /through the symbolic link etc/,
    ],
    [
      "a hard link through an absolute symlink",
      [
        { name: "etc", type: "2", linkname: "/etc" },
        { name: "h", type: "1", linkname: "etc/passwd" },
      ],
      /hard link to etc\/passwd, through the symbolic link etc/,
    ],
    [
      "a directory made through a venv's absolute interpreter link",
      [
        { name: "venv/bin/", type: "5" },
        { name: "venv/bin/python", type: "2", linkname: "/usr/bin/python3" },
        { name: "venv/bin/python/x/", type: "5" },
      ],
      /through the symbolic link venv\/bin\/python/,
    ],
    ["a hard link out of the workspace", [{ name: "h", type: "1", linkname: "../admin-token" }], /hard link/],
    ["a hard link to an absolute path", [{ name: "h", type: "1", linkname: "/etc/shadow" }], /hard link/],
    ["a device node", [{ name: "dev", type: "3" }], /unsupported type/],
  ] as [string, Entry[], RegExp][])("refuses a layer with %s", async (_what, entries, pattern) => {
    await refused(layoutOf(fresh(), tarOf(entries)), pattern);
  });

  it("restores an empty layer (two zero blocks, or a whole 10 KiB record of them) as an empty workspace", async () => {
    for (const [i, zeros] of [1024, 10240].entries()) {
      const id = `empty-layer-${i}`;
      await driver.create({ id, image: "local:host", env: {}, policy: { mode: "deny-all" }, restoreFrom: layoutOf(fresh(), Buffer.alloc(zeros)) });
      expect(readdirSync(wsdir(id))).toEqual([]);
      expect(await sh(id, "ls -A /workspace; stat -c '%U %a' /workspace; echo ok > /workspace/new && cat /workspace/new")).toBe("nobody 755\nok\n");
      await driver.destroy(id);
    }
  });

  it.each([
    ["no bytes at all", 0],
    ["zeros short of an end-of-archive marker", 512],
    ["zeros that are not whole blocks", 1500],
  ])("refuses a layer of %s", async (_what, zeros) => {
    await refused(layoutOf(fresh(), Buffer.alloc(zeros)), /not a tar archive/);
  });

  it("snapshots an empty workspace and restores it (snapshot → restore → empty /workspace)", async () => {
    await driver.create({ id: "empty-src", image: "local:host", env: {}, policy: { mode: "deny-all" } });
    // Empty, and empty but for a FIFO (which a layer does not carry): both make a layer without entries.
    for (const [i, setup] of ["true", "mkfifo /workspace/fifo"].entries()) {
      await sh("empty-src", `rm -rf /workspace/* && ${setup}`);
      const layout = fresh();
      const art = await driver.snapshotFilesystem("empty-src", layout, { "io.sandbox-egress.policy": '{"mode":"deny-all"}' });
      // A valid layout: every blob named by its digest, the layer the well-known empty tar (two zero blocks).
      const blobs = path.join(layout, "blobs", "sha256");
      for (const f of readdirSync(blobs)) expect(createHash("sha256").update(readFileSync(path.join(blobs, f))).digest("hex")).toBe(f);
      const v = await verifySnapshot(layout);
      expect(v.manifestDigest).toBe(art.manifestDigest);
      expect(v.diffIds).toEqual([sha(Buffer.alloc(1024))]);
      const id = `empty-restored-${i}`;
      await driver.create({ id, image: "local:host", env: {}, policy: { mode: "deny-all" }, restoreFrom: layout });
      expect(readdirSync(wsdir(id))).toEqual([]);
      expect(await sh(id, "ls -A /workspace; touch /workspace/t && stat -c '%U' /workspace/t")).toBe("nobody\n");
      await driver.destroy(id);
    }
    await driver.destroy("empty-src");
  });

  /** What a host path looks like, to show a restore did not write, chmod or chown through a link to it. */
  const fingerprint = (p: string): unknown => {
    const pick = (s: Stats) => ({ mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, ino: s.ino });
    const l = lstatSync(p);
    return { lstat: pick(l), stat: pick(statSync(p)), entries: l.isDirectory() ? readdirSync(p).sort() : null, body: statSync(p).isFile() ? readFileSync(p, "utf8") : null };
  };

  /** Every entry under `dir` that is a placeholder left behind by the unpacker (there must be none). */
  const leftovers = (dir: string): string[] =>
    (readdirSync(dir, { recursive: true }) as string[]).filter((p) => path.basename(p).startsWith(".sandbox-egress-link-"));

  // The interpreter a venv would point at; the shell where there is no python3.
  const interp = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "/bin/sh";
  const probe = interp.endsWith("python3") ? "'print(1)'" : "'echo 1'";

  it(`restores a venv: the absolute interpreter link (-> ${interp}) byte for byte, links to links, and it runs`, async () => {
    const canary = path.join(base, "host-canary");
    mkdirSync(canary);
    writeFileSync(path.join(canary, "keep"), "original\n");
    const before = [fingerprint(canary), fingerprint(path.join(canary, "keep")), fingerprint(interp), fingerprint(path.dirname(interp))];

    await driver.create({ id: "venv-src", image: "local:host", env: {}, policy: { mode: "deny-all" } });
    // The shape `python3 -m venv` leaves (bin/python absolute, bin/python3* -> python, lib64 -> lib), plus links
    // to a host directory the sandbox cannot even see and into /workspace, written by the sandbox itself.
    await sh(
      "venv-src",
      [
        "mkdir -p venv/bin venv/lib/python3/site-packages",
        `ln -s ${interp} venv/bin/python`,
        "ln -s python venv/bin/python3",
        "ln -s python venv/bin/python3.99",
        "ln -s lib venv/lib64",
        "printf 'home = /usr/bin\\n' > venv/pyvenv.cfg",
        `ln -s ${canary} host-dir`,
        `ln -s ${canary}/keep host-file`,
        "ln -s /workspace/venv/bin/python3 py-abs-inside",
      ].join(" && "),
    );
    const layout = fresh();
    await driver.snapshotFilesystem("venv-src", layout, {});
    await driver.destroy("venv-src");

    await driver.create({ id: "venv-restored", image: "local:host", env: {}, policy: { mode: "deny-all" }, restoreFrom: layout });
    const ws = wsdir("venv-restored");
    const links: Record<string, string> = {
      "venv/bin/python": interp,
      "venv/bin/python3": "python",
      "venv/bin/python3.99": "python",
      "venv/lib64": "lib",
      "host-dir": canary,
      "host-file": `${canary}/keep`,
      "py-abs-inside": "/workspace/venv/bin/python3",
    };
    for (const [link, target] of Object.entries(links)) {
      expect(lstatSync(path.join(ws, link)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(path.join(ws, link))).toBe(target);
    }
    expect(leftovers(ws)).toEqual([]);
    expect(await sh("venv-restored", `readlink venv/bin/python; venv/bin/python3 -c ${probe}; /workspace/py-abs-inside -c ${probe}; ls venv/lib64`)).toBe(`${interp}\n1\n1\npython3\n`);
    if (interp.endsWith("python3")) {
      // It really is a venv to python: the interpreter found pyvenv.cfg through the restored links.
      expect(await sh("venv-restored", "venv/bin/python3 -c 'import sys; print(sys.prefix)'")).toBe("/workspace/venv\n");
    }
    // Nothing outside the workspace was written, chmodded or chowned through the links.
    expect([fingerprint(canary), fingerprint(path.join(canary, "keep")), fingerprint(interp), fingerprint(path.dirname(interp))]).toEqual(before);
    expect(readdirSync(sdir("venv-restored")).filter((f) => f.includes("restoring") || f.startsWith(".sandbox-egress-link-"))).toEqual([]);
    await driver.destroy("venv-restored");
    // Teardown removed the links, not what they point at.
    expect([fingerprint(canary), fingerprint(path.join(canary, "keep")), fingerprint(interp), fingerprint(path.dirname(interp))]).toEqual(before);
  });

  it("restores a link to a link in any archive order (python before python3 -> python), and links replaced by later entries", async () => {
    const tar = tarOf([
      { name: "venv/", type: "5" },
      { name: "venv/bin/", type: "5" },
      { name: "venv/bin/python", type: "2", linkname: interp },
      { name: "venv/bin/python3", type: "2", linkname: "python" },
      { name: "venv/lib/", type: "5" },
      { name: "venv/lib64", type: "2", linkname: "lib" },
      // Relative only: node-tar alone refuses c once a exists ("Cannot extract through symbolic link").
      { name: "rel/", type: "5" },
      { name: "rel/f", body: "F\n" },
      { name: "rel/a", type: "2", linkname: "f" },
      { name: "rel/c", type: "2", linkname: "a" },
      // Later entries for the same path win, as with any tar: a link replaced by a file, a file by a link, a
      // link by a link, and a link by a directory.
      { name: "was-link", type: "2", linkname: "/etc" },
      { name: "was-link", body: "now a file\n" },
      { name: "was-file", body: "gone\n" },
      { name: "was-file", type: "2", linkname: "/etc/hostname" },
      { name: "twice", type: "2", linkname: "/first" },
      { name: "twice", type: "2", linkname: "/second" },
      { name: "now-dir", type: "2", linkname: "/usr" },
      { name: "now-dir/", type: "5" },
    ]);
    await driver.create({ id: "chain", image: "local:host", env: {}, policy: { mode: "deny-all" }, restoreFrom: layoutOf(fresh(), tar) });
    const ws = wsdir("chain");
    expect(readlinkSync(path.join(ws, "venv/bin/python"))).toBe(interp);
    expect(readlinkSync(path.join(ws, "venv/bin/python3"))).toBe("python");
    expect(readlinkSync(path.join(ws, "venv/lib64"))).toBe("lib");
    expect(readFileSync(path.join(ws, "was-link"), "utf8")).toBe("now a file\n");
    expect(readlinkSync(path.join(ws, "was-file"))).toBe("/etc/hostname");
    expect(readlinkSync(path.join(ws, "twice"))).toBe("/second");
    expect(lstatSync(path.join(ws, "now-dir")).isDirectory()).toBe(true);
    expect(leftovers(ws)).toEqual([]);
    expect(readlinkSync(path.join(ws, "rel/c"))).toBe("a");
    expect(await sh("chain", `venv/bin/python3 -c ${probe}; cat rel/c`)).toBe("1\nF\n");
    await driver.destroy("chain");
  });

  it("refuses a layer that writes through a link to a host directory, and leaves that directory alone", async () => {
    const canary = path.join(base, "host-canary-2");
    mkdirSync(canary);
    writeFileSync(path.join(canary, "keep"), "original\n");
    const before = [fingerprint(canary), fingerprint(path.join(canary, "keep"))];
    for (const entries of [
      [
        { name: "out", type: "2", linkname: canary },
        { name: "out/new", body: "x" },
      ],
      [
        { name: "out", type: "2", linkname: canary },
        { name: "out/keep", body: "overwritten\n" },
      ],
      [
        { name: "out", type: "2", linkname: canary },
        { name: "h", type: "1", linkname: "out/keep" },
      ],
      [
        { name: "out", type: "2", linkname: `${canary}/keep` },
        { name: "h", type: "1", linkname: "out" },
      ],
    ] as Entry[][]) {
      await refused(layoutOf(fresh(), tarOf(entries)), /symbolic link out/);
      expect([fingerprint(canary), fingerprint(path.join(canary, "keep"))]).toEqual(before);
    }
  });

  it("refuses a layer whose size differs from its descriptor", async () => {
    await refused(layoutOf(fresh(), tarOf([{ name: "f", body: "x" }]), { layerSizeDelta: 1 }), /bytes, its descriptor says/);
  });

  it("refuses an uncompressed layer that does not match the config's diff_id", async () => {
    await refused(layoutOf(fresh(), tarOf([{ name: "f", body: "x" }]), { diffId: sha(Buffer.from("something else")) }), /diff_ids/);
  });

  it("refuses a digest that is not sha256:<hex> (no path tricks through blobs/)", async () => {
    await refused(layoutOf(fresh(), tarOf([{ name: "f", body: "x" }]), { manifestDigest: "sha256:../../../../etc/passwd" }), /is not sha256/);
  });

  it("refuses a blob that is a symbolic link, and a directory that is not a layout", async () => {
    const layout = layoutOf(fresh(), tarOf([{ name: "f", body: "x" }]));
    const blobs = path.join(layout, "blobs", "sha256");
    const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(readFileSync(path.join(blobs, index.manifests[0]!.digest.slice(7)), "utf8")) as { layers: { digest: string }[] };
    const layerPath = path.join(blobs, manifest.layers[0]!.digest.slice(7));
    const moved = path.join(layout, "elsewhere");
    writeFileSync(moved, readFileSync(layerPath));
    rmSync(layerPath);
    symlinkSync(moved, layerPath);
    await refused(layout, /not a regular file/);
    const empty = fresh();
    mkdirSync(empty);
    await refused(empty, /not an OCI image layout/);
  });

  it("verifies before unpacking and unpacks only what the guard allows (library level)", async () => {
    const layout = layoutOf(fresh(), tarOf([{ name: "ok.txt", body: "fine" }, { name: "../bad", body: "x" }]));
    const v = await verifySnapshot(layout);
    const target = path.join(base, "unpack-target");
    mkdirSync(target);
    await expect(unpackSnapshot(v, target, { uid: 65534, gid: 65534 })).rejects.toMatchObject({ code: "invalid-snapshot" });
    expect(existsSync(path.join(base, "bad"))).toBe(false);
    expect(statSync(target).isDirectory()).toBe(true);
  });
});
