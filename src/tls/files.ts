import { open, readdir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { TlsError } from "./errors.js";

const errno = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | null)?.code;

/** fsync a directory so that a rename or unlink in it survives a crash. Not every platform can; those skip it. */
export async function syncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch (err) {
    if (!["EISDIR", "EINVAL", "EPERM", "EACCES"].includes(errno(err) ?? "")) throw err;
  } finally {
    await fh?.close();
  }
}

/** The suffix of util/atomic-file.ts's temp files (`.<name>.<pid>.<random>.tmp`, in the target's directory). */
const TEMP_SUFFIX = ".tmp";

/** Remove temp files that an interrupted writeFileAtomic left for `names`; call only while holding the lock. */
export async function removeStaleTemps(dir: string, names: readonly string[]): Promise<void> {
  for (const entry of await readdir(dir)) {
    if (entry.endsWith(TEMP_SUFFIX) && names.some((n) => entry.startsWith(`.${n}.`))) {
      await unlink(join(dir, entry)).catch(() => undefined);
    }
  }
}

export async function unlinkIfExists(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (err) {
    if (errno(err) === "ENOENT") return false;
    throw err;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errno(err) === "ENOENT") return false;
    throw err;
  }
}

export interface LockOptions {
  /** Give up waiting after this long. */
  readonly waitMs?: number;
  /** A lock file older than this is the leftover of a crashed holder and is taken over. */
  readonly staleMs?: number;
}

/**
 * Run `fn` holding an exclusive lock file (O_EXCL create, which is atomic on local filesystems and NFSv3+).
 * Two proxies starting at once on a shared CA directory would otherwise each write a key and a certificate, and
 * the last rename of each could pair one process's certificate with the other's key.
 */
export async function withLockFile<T>(lockPath: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const { waitMs = 15_000, staleMs = 30_000 } = opts;
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fh = await open(lockPath, "wx", 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      break;
    } catch (err) {
      if (errno(err) !== "EEXIST") throw err;
    }
    const held = await stat(lockPath).catch(() => undefined);
    if (held && Date.now() - held.mtimeMs > staleMs) {
      await unlinkIfExists(lockPath);
      continue;
    }
    if (Date.now() >= deadline) {
      throw new TlsError(
        "ca-locked",
        `${lockPath} is held by another process; if no sandbox-egress process is creating a CA, remove that file.`,
      );
    }
    await sleep(20);
  }
  try {
    return await fn();
  } finally {
    await unlinkIfExists(lockPath);
  }
}
