import { createHash, randomBytes } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import { once } from "node:events";
import path from "node:path";
import { createGunzip, createGzip } from "node:zlib";
import { Pack, Unpack, type ReadEntry } from "tar";
import { RuntimeError, type SnapshotArtifact } from "../driver.js";
import { ArchiveGuard } from "./archive-guard.js";

/**
 * Filesystem snapshots as OCI image layouts (image-spec v1.1 "image-layout"): `oci-layout`, `index.json`, and
 * content-addressed `blobs/sha256/…` for one gzip layer (the workspace tree), its config and the manifest.
 * Any OCI tool (skopeo, crane, containerd's import) can read one; a Kubernetes driver would push the same
 * blobs to a registry.
 */
export const MEDIA_TYPES = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
} as const;

const DIGEST_RE = /^sha256:([a-f0-9]{64})$/;
/** index.json, manifests and configs are small; anything bigger is not ours. */
const MAX_JSON_BLOB = 4 * 1024 * 1024;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

interface Manifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

interface ImageConfig {
  rootfs?: { type?: string; diff_ids?: string[] };
}

export interface SnapshotHooks {
  /** Called right before the workspace is read (freeze the sandbox) and right after (thaw it). */
  beforeCopy?: () => Promise<void>;
  afterCopy?: () => Promise<void>;
  /** gzip level; 1 keeps a 100 MiB snapshot in the ~1 s range on one core, at some cost in size. */
  gzipLevel?: number;
}

/**
 * Write `workspace` as an OCI layout at `layoutDir` (which must not exist). Everything goes to a sibling temp
 * directory first and is fsynced, then renamed into place, so a crash leaves either no layout or a whole one.
 * The sandbox is frozen only while the uncompressed tar is copied (a consistent view); compression runs after.
 */
export async function writeSnapshot(workspace: string, layoutDir: string, annotations: Record<string, string>, hooks: SnapshotHooks = {}): Promise<SnapshotArtifact> {
  const target = path.resolve(layoutDir);
  if (await exists(target)) throw new RuntimeError("failed", `snapshot directory ${target} already exists`);
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = `${target}.tmp-${randomBytes(6).toString("hex")}`;
  const blobs = path.join(tmp, "blobs", "sha256");
  await fs.mkdir(blobs, { recursive: true, mode: 0o700 });
  try {
    const rawTar = path.join(tmp, "layer.tar");
    await hooks.beforeCopy?.();
    let diffId: string;
    try {
      diffId = await writeTar(workspace, rawTar);
    } finally {
      await hooks.afterCopy?.();
    }
    const layer = await gzipToBlob(rawTar, blobs, hooks.gzipLevel ?? 1);
    await fs.rm(rawTar);
    const config = await writeJsonBlob(blobs, {
      architecture: ociArch(process.arch),
      os: "linux",
      config: { WorkingDir: "/workspace" },
      rootfs: { type: "layers", diff_ids: [diffId] },
      history: [{ created: new Date().toISOString(), created_by: "sandbox-egress snapshot of /workspace" }],
    });
    const manifestBody: Manifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.manifest,
      config: { mediaType: MEDIA_TYPES.config, digest: config.digest, size: config.size },
      layers: [{ mediaType: MEDIA_TYPES.layerGzip, digest: layer.digest, size: layer.size }],
      annotations: { ...annotations },
    };
    const manifest = await writeJsonBlob(blobs, manifestBody);
    await writeSynced(path.join(tmp, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    await writeSynced(
      path.join(tmp, "index.json"),
      JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests: [{ mediaType: MEDIA_TYPES.manifest, digest: manifest.digest, size: manifest.size }] }),
    );
    await fsyncDir(blobs);
    await fsyncDir(path.dirname(blobs));
    await fsyncDir(tmp);
    await fs.rename(tmp, target);
    await fsyncDir(path.dirname(target));
    return { manifestDigest: manifest.digest, layerSize: layer.size };
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    if (err instanceof RuntimeError) throw err;
    throw new RuntimeError("failed", `snapshot failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** The workspace tree as an uncompressed tar (paths relative to the workspace), returning its sha256 (diff_id). */
async function writeTar(workspace: string, file: string): Promise<string> {
  const hash = createHash("sha256");
  const fh = await fs.open(file, "wx", 0o600);
  try {
    const names = (await fs.readdir(workspace)).sort();
    if (names.length === 0) {
      // An empty archive is two zero blocks (a valid tar, the OCI "empty layer"); node-tar refuses an empty file
      // list when writing, and an archive without entries when reading (unpackSnapshot handles that).
      const empty = Buffer.alloc(1024);
      hash.update(empty);
      await fh.write(empty);
    } else {
      // portable: no uid/gid/uname, atime or ctime (owners are the restoring driver's to set, and snapshots of
      // the same tree differ less); symlinks are stored as links, never followed.
      const pack = new Pack({
        cwd: workspace,
        portable: true,
        follow: false,
        strict: false,
        // Only what a layer can carry. A FIFO or a socket would make node-tar wait for ever on open(); devices
        // cannot be created in a workspace anyway (nodev, no CAP_MKNOD).
        filter: (_p: string, st: unknown) => {
          const s = st as { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean };
          return s.isFile() || s.isDirectory() || s.isSymbolicLink();
        },
      });
      const done = (async () => {
        for await (const chunk of pack as AsyncIterable<Buffer>) {
          hash.update(chunk);
          await fh.write(chunk);
        }
      })();
      // node-tar reads a leading '@' as "append this archive": such a name must be passed as ./@name.
      for (const n of names) pack.add(n.startsWith("@") ? `./${n}` : n);
      pack.end();
      await done;
    }
    // No fsync: this file is a scratch copy read back at once by gzip; the blob written from it is synced.
  } finally {
    await fh.close();
  }
  return `sha256:${hash.digest("hex")}`;
}

async function gzipToBlob(src: string, blobs: string, level: number): Promise<{ digest: string; size: number }> {
  const tmp = path.join(blobs, `.layer-${randomBytes(6).toString("hex")}`);
  const hash = createHash("sha256");
  let size = 0;
  const fh = await fs.open(tmp, "wx", 0o600);
  try {
    const input = createReadStream(src, { highWaterMark: 1 << 20 });
    const gz = createGzip({ level, memLevel: 9, chunkSize: 256 * 1024 });
    input.on("error", (err) => gz.destroy(err));
    input.pipe(gz);
    for await (const chunk of gz as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
      await fh.write(chunk);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  const digest = `sha256:${hash.digest("hex")}`;
  await fs.rename(tmp, path.join(blobs, digest.slice(7)));
  return { digest, size };
}

async function writeJsonBlob(blobs: string, body: unknown): Promise<{ digest: string; size: number }> {
  const bytes = Buffer.from(JSON.stringify(body));
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  await writeSynced(path.join(blobs, digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

async function writeSynced(file: string, data: string | Buffer): Promise<void> {
  const fh = await fs.open(file, "wx", 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function ociArch(arch: string): string {
  return ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x" } as Record<string, string>)[arch] ?? arch;
}

// ---- reading and restoring ---------------------------------------------------------------------------------

export interface VerifiedLayout {
  readonly dir: string;
  readonly manifestDigest: string;
  readonly manifest: Manifest;
  readonly diffIds: readonly string[];
}

function invalid(message: string, cause?: unknown): RuntimeError {
  return new RuntimeError("invalid-snapshot", message, cause === undefined ? undefined : { cause });
}

/** blobs/sha256/<hex> for a digest; the digest is checked first (it comes from JSON that may be hostile). */
function blobPath(dir: string, digest: unknown): string {
  const m = typeof digest === "string" ? DIGEST_RE.exec(digest) : null;
  if (!m) throw invalid(`digest ${JSON.stringify(digest)} is not sha256:<64 hex digits>`);
  return path.join(dir, "blobs", "sha256", m[1]!);
}

async function regularFile(file: string, what: string): Promise<number> {
  let st;
  try {
    st = await fs.lstat(file);
  } catch (err) {
    throw invalid(`${what} is missing (${path.basename(file)})`, err);
  }
  if (!st.isFile()) throw invalid(`${what} is not a regular file`);
  return st.size;
}

function checkDescriptor(d: unknown, what: string): Descriptor {
  const o = d as Partial<Descriptor> | null;
  if (!o || typeof o !== "object" || typeof o.mediaType !== "string" || typeof o.digest !== "string" || typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) {
    throw invalid(`${what} is not a valid descriptor (mediaType, digest, size)`);
  }
  return o as Descriptor;
}

/** Read a small JSON blob, checking its size and digest against the descriptor before parsing it. */
async function readJsonBlob<T>(dir: string, d: Descriptor, what: string): Promise<T> {
  const file = blobPath(dir, d.digest);
  const size = await regularFile(file, what);
  if (size !== d.size) throw invalid(`${what} is ${size} bytes, its descriptor says ${d.size}`);
  if (size > MAX_JSON_BLOB) throw invalid(`${what} is larger than ${MAX_JSON_BLOB} bytes`);
  const bytes = await fs.readFile(file);
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  if (digest !== d.digest) throw invalid(`${what} does not match its digest (expected ${d.digest}, got ${digest})`);
  try {
    return JSON.parse(bytes.toString("utf8")) as T;
  } catch (err) {
    throw invalid(`${what} is not JSON`, err);
  }
}

async function readManifest(layoutDir: string): Promise<{ manifest: Manifest; digest: string; dir: string }> {
  const dir = path.resolve(layoutDir);
  let layout: { imageLayoutVersion?: unknown };
  try {
    layout = JSON.parse(await fs.readFile(path.join(dir, "oci-layout"), "utf8")) as { imageLayoutVersion?: unknown };
  } catch (err) {
    throw invalid(`${dir} is not an OCI image layout (no readable oci-layout file)`, err);
  }
  if (layout.imageLayoutVersion !== "1.0.0") throw invalid(`unsupported imageLayoutVersion ${JSON.stringify(layout.imageLayoutVersion)}`);
  let index: { manifests?: unknown };
  try {
    const indexFile = path.join(dir, "index.json");
    if ((await regularFile(indexFile, "index.json")) > MAX_JSON_BLOB) throw invalid("index.json is too large");
    index = JSON.parse(await fs.readFile(indexFile, "utf8")) as { manifests?: unknown };
  } catch (err) {
    if (err instanceof RuntimeError) throw err;
    throw invalid("index.json is not JSON", err);
  }
  if (!Array.isArray(index.manifests) || index.manifests.length !== 1) throw invalid("index.json must list exactly one manifest");
  const desc = checkDescriptor(index.manifests[0], "index.json manifests[0]");
  if (desc.mediaType !== MEDIA_TYPES.manifest) throw invalid(`index.json manifests[0] has media type ${desc.mediaType}, expected ${MEDIA_TYPES.manifest}`);
  const manifest = await readJsonBlob<Manifest>(dir, desc, "the manifest");
  if (manifest.schemaVersion !== 2 || !manifest.config || !Array.isArray(manifest.layers)) throw invalid("the manifest is not an OCI image manifest (schemaVersion 2, config, layers)");
  return { manifest, digest: desc.digest, dir };
}

/** The manifest annotations of a snapshot (the control module keeps the policy in `io.sandbox-egress.policy`). */
export async function readSnapshotManifest(layoutDir: string): Promise<Record<string, string>> {
  const { manifest } = await readManifest(layoutDir);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(manifest.annotations ?? {})) if (typeof v === "string") out[k] = v;
  return out;
}

/**
 * Check EVERY blob of a layout (manifest, config, each layer: size and sha256) before anything is unpacked.
 * Throws RuntimeError("invalid-snapshot") on the first mismatch.
 */
export async function verifySnapshot(layoutDir: string): Promise<VerifiedLayout> {
  const { manifest, digest, dir } = await readManifest(layoutDir);
  const configDesc = checkDescriptor(manifest.config, "the manifest's config");
  if (configDesc.mediaType !== MEDIA_TYPES.config) throw invalid(`config media type ${configDesc.mediaType}, expected ${MEDIA_TYPES.config}`);
  const config = await readJsonBlob<ImageConfig>(dir, configDesc, "the image config");
  const diffIds = config.rootfs?.diff_ids;
  if (config.rootfs?.type !== "layers" || !Array.isArray(diffIds)) throw invalid("the image config has no rootfs.diff_ids");
  if (manifest.layers.length !== 1 || diffIds.length !== 1) throw invalid(`a workspace snapshot has exactly one layer (this one has ${manifest.layers.length})`);
  for (const [i, l] of manifest.layers.entries()) {
    const d = checkDescriptor(l, `layers[${i}]`);
    if (d.mediaType !== MEDIA_TYPES.layerGzip && d.mediaType !== MEDIA_TYPES.layerTar) throw invalid(`layers[${i}] has media type ${d.mediaType}`);
    const file = blobPath(dir, d.digest);
    const size = await regularFile(file, `layers[${i}]`);
    if (size !== d.size) throw invalid(`layers[${i}] is ${size} bytes, its descriptor says ${d.size}`);
    const got = await sha256File(file);
    if (got !== d.digest) throw invalid(`layers[${i}] does not match its digest (expected ${d.digest}, got ${got})`);
    if (typeof diffIds[i] !== "string" || !DIGEST_RE.test(diffIds[i])) throw invalid(`rootfs.diff_ids[${i}] is not a sha256 digest`);
  }
  return { dir, manifestDigest: digest, manifest, diffIds };
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) hash.update(chunk);
  return `sha256:${hash.digest("hex")}`;
}

/**
 * Unpack a verified layout's layer into `target` (an existing empty directory), owned by uid:gid. Every entry
 * passes the ArchiveGuard first; any refused entry, or an uncompressed stream whose sha256 is not the config's
 * diff_id, fails the whole restore (the caller removes `target`).
 *
 * Symbolic links are written in two steps. While the entries are unpacked, node-tar creates each one with a
 * placeholder target: a dangling name beside the link that contains a per-restore random nonce. Then, once every
 * entry is written, settleSymlinks() replaces each placeholder with the link text from the archive, byte for
 * byte, absolute targets included (`venv/bin/python -> /usr/bin/python3`).
 *
 * Why not node-tar's `preservePaths`, which writes absolute link targets as they are? It turns off more than
 * the stripping of a leading `/`: also the `..` checks on entry paths and hard-link targets, the check that an
 * entry stays under cwd, the refusal to create a link whose target passes through an existing symlink, and the
 * refusal of mkdir to traverse a symlink (it switches to a recursive mkdir that follows them). Hard links would
 * then resolve through archive-made symlinks (`etc -> /etc`, then a hard link to `etc/shadow`), and only the
 * guard's string rules would remain. With placeholders all of node-tar's protections stay on, and none of them
 * ever meets a link that leads anywhere: a placeholder never passes through another link (so chains such as
 * `python3 -> python -> /usr/bin/python3`, which node-tar refuses once `python` exists, restore too), and it
 * resolves to nothing. Setting the real text uses symlink(2) and rename(2), neither of which follows the link,
 * in parent directories checked to be real directories, before the sandbox (or anything else) can see `target`.
 */
export async function unpackSnapshot(v: VerifiedLayout, target: string, owner: { uid: number; gid: number }): Promise<void> {
  const layer = v.manifest.layers[0]!;
  const guard = new ArchiveGuard();
  const hash = createHash("sha256");
  const nonce = randomBytes(8).toString("hex");
  const links = new Map<string, PendingSymlink>();
  let linkCount = 0;
  const unpack = new Unpack({
    cwd: target,
    strict: true,
    preservePaths: false,
    preserveOwner: false,
    uid: owner.uid,
    gid: owner.gid,
    filter: (_p: string, entry: unknown) => {
      const e = entry as ReadEntry;
      const verdict = guard.check({ path: e.path, type: e.type, linkpath: e.linkpath });
      if (!verdict.ok || verdict.skip) return false;
      if (e.type === "SymbolicLink" && e.linkpath !== undefined) {
        // The guard has refused '..' and absolute entry paths: this is where node-tar will put the link.
        const rel = path.posix.normalize(e.path).replace(/\/+$/, "");
        const placeholder = `.sandbox-egress-link-${nonce}-${linkCount++}`;
        // A later entry for the same path replaces the earlier one (tar order), as on disk.
        links.set(rel, { rel, linkpath: e.linkpath, placeholder });
        e.linkpath = placeholder;
      }
      // Modes from the archive minus setuid/setgid/sticky (the sandbox's mounts are nosuid anyway).
      if (typeof e.mode === "number") e.mode &= 0o777;
      return true;
    },
  });
  // Held in an object: the error listener writes it while the copy loop below reads it.
  const status: { failure: Error | null } = { failure: null };
  const finished = new Promise<void>((resolve, reject) => {
    unpack.on("close", () => resolve());
    unpack.on("error", (err: Error) => {
      status.failure ??= err;
      reject(err);
    });
  });
  // Observed below; until then a rejection must not count as unhandled.
  finished.catch(() => undefined);
  const write = async (chunk: Buffer): Promise<void> => {
    if (!unpack.write(chunk)) await Promise.race([once(unpack, "drain"), finished]);
  };
  // Leading zero bytes are held back (counted, not buffered) until something else arrives. A layer that is
  // nothing but zero blocks is a valid, empty tar: what writeSnapshot makes of an empty workspace (two zero
  // blocks, the OCI "empty layer"), and what node-tar's own Pack ends with when it was handed no entries.
  // node-tar's reader refuses an archive without a single entry (TAR_BAD_ARCHIVE, "Unrecognized archive
  // format", fatal in Unpack), so such a layer never reaches it: there is nothing to unpack.
  let leadingZeros: number | null = 0;
  try {
    const src = createReadStream(blobPath(v.dir, layer.digest), { highWaterMark: 1 << 20 });
    let stream: NodeJS.ReadableStream = src;
    if (layer.mediaType === MEDIA_TYPES.layerGzip) {
      const gz = createGunzip({ chunkSize: 256 * 1024 });
      // pipe() does not forward read errors: destroy the gunzip stream so the loop below sees them.
      src.on("error", (err) => gz.destroy(err));
      stream = src.pipe(gz);
    }
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (status.failure) break;
      hash.update(chunk);
      if (leadingZeros !== null) {
        if (allZero(chunk)) {
          leadingZeros += chunk.length;
          continue;
        }
        // Real content: replay the zeros held back (a tar may not begin with them, but that is node-tar's call).
        for (let left = leadingZeros; left > 0 && !status.failure; left -= ZEROS.length) await write(left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left));
        leadingZeros = null;
      }
      await write(chunk);
    }
    if (status.failure) throw status.failure;
    if (leadingZeros === null) {
      unpack.end();
      await finished;
    } else if (leadingZeros < 1024 || leadingZeros % 512 !== 0) {
      throw invalid(`the layer is not a tar archive (${leadingZeros} zero bytes, no end-of-archive marker)`);
    }
  } catch (err) {
    if (err instanceof RuntimeError) throw err;
    throw invalid(`the layer cannot be unpacked: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  if (guard.problems.length > 0) {
    const more = guard.problems.length > 3 ? ` (and ${guard.problems.length - 3} more)` : "";
    throw invalid(`the layer has entries that may not be restored: ${guard.problems.slice(0, 3).join("; ")}${more}`);
  }
  const diffId = `sha256:${hash.digest("hex")}`;
  if (diffId !== v.diffIds[0]) throw invalid(`the uncompressed layer does not match rootfs.diff_ids[0] (expected ${v.diffIds[0]}, got ${diffId})`);
  await settleSymlinks(target, links.values());
}

interface PendingSymlink {
  /** Where the link is, relative to the unpack directory (normalised, no `..`: the guard saw to that). */
  readonly rel: string;
  /** The link text from the archive. */
  readonly linkpath: string;
  /** What node-tar was told to write instead. */
  readonly placeholder: string;
}

const ZEROS = Buffer.alloc(64 * 1024);

function allZero(chunk: Buffer): boolean {
  for (let off = 0; off < chunk.length; off += ZEROS.length) {
    const part = chunk.subarray(off, off + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

/**
 * Give each placeholder link its archive text. Only a link still holding its own placeholder is touched (a later
 * entry of the same path may have replaced it with a file or a directory, which then stays). Every parent is
 * checked with lstat to be a real directory, so the path never resolves through a link; the new link is made
 * under a fresh name beside it and renamed over the placeholder (rename replaces the link itself).
 */
async function settleSymlinks(root: string, links: Iterable<PendingSymlink>): Promise<void> {
  for (const link of links) {
    const parts = link.rel.split("/");
    const name = parts.pop()!;
    let dir = root;
    for (const part of parts) {
      dir = path.join(dir, part);
      const st = await fs.lstat(dir).catch(() => null);
      if (!st?.isDirectory()) throw invalid(`the symbolic link ${JSON.stringify(link.rel)} cannot be restored: ${JSON.stringify(path.relative(root, dir))} is not a directory`);
    }
    const file = path.join(dir, name);
    const current = await fs.readlink(file).catch(() => null);
    if (current !== link.placeholder) continue;
    const tmp = path.join(dir, `${link.placeholder}.new`);
    try {
      await fs.symlink(link.linkpath, tmp);
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw invalid(`the symbolic link ${JSON.stringify(link.rel)} cannot be restored: ${err instanceof Error ? err.message : String(err)}`, err);
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}
