import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
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
    const r = await driver.exec("good", ["sh", "-c", "cat dir/a.txt top.txt dir/rel abs hard; stat -c '%U:%G %a' top.txt dir/a.txt"], { timeoutMs: 5_000 });
    expect(r.stdout).toBe("A\nT\nA\nA\nA\nnobody:nogroup 755\nnobody:nogroup 644\n");
    await driver.destroy("good");
  });

  it.each([
    ["an absolute path", [{ name: "/etc/evil", body: "x" }], /absolute path/],
    ["a '..' path", [{ name: "../escape", body: "x" }], /'\.\.'/],
    ["a '..' in the middle", [{ name: "a/../../escape", body: "x" }], /'\.\.'/],
    ["a symlink to an absolute path outside /workspace", [{ name: "etc", type: "2", linkname: "/etc" }], /outside \/workspace/],
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
    ["a hard link out of the workspace", [{ name: "h", type: "1", linkname: "../admin-token" }], /hard link/],
    ["a hard link to an absolute path", [{ name: "h", type: "1", linkname: "/etc/shadow" }], /hard link/],
    ["a device node", [{ name: "dev", type: "3" }], /unsupported type/],
  ] as [string, Entry[], RegExp][])("refuses a layer with %s", async (_what, entries, pattern) => {
    await refused(layoutOf(fresh(), tarOf(entries)), pattern);
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
