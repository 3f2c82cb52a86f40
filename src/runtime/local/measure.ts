import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { LocalDriver, type LocalDriverOptions } from "./driver.js";
import { sandboxPaths } from "./layout.js";

export interface LifecycleTimings {
  freezer: string;
  /** create() until the sandbox runs behind an enforcing proxy. */
  createMs: number;
  pauseMs: number;
  resumeMs: number;
  workspaceBytes: number;
  /** snapshotFilesystem() of the workspace (half random, half compressible text). */
  snapshotMs: number;
  snapshotLayerBytes: number;
  /** create() with restoreFrom: verify every blob, unpack, then start proxy and sandbox. */
  restoreMs: number;
  destroyMs: number;
}

/**
 * One lifecycle round on the local runtime, timed: for bench/lifecycle.mjs (import it from
 * dist/runtime/local/measure.js after `npm run build`). Needs root and bubblewrap, like the driver.
 */
export async function measureLocalLifecycle(opts: Partial<LocalDriverOptions> & { workspaceMiB?: number } = {}): Promise<LifecycleTimings> {
  const base = await mkdtemp(path.join(tmpdir(), "se-bench-"));
  const dataDir = opts.dataDir ?? path.join(base, "data");
  const driver = new LocalDriver({ ...opts, dataDir });
  const policy = { mode: "deny-all" } as const;
  const id = `bench-${randomBytes(3).toString("hex")}`;
  const restored = `${id}-r`;
  const time = async <T>(fn: () => Promise<T>): Promise<[number, T]> => {
    const t0 = process.hrtime.bigint();
    const v = await fn();
    return [Number(process.hrtime.bigint() - t0) / 1e6, v];
  };
  try {
    const caps = await driver.capabilities();
    const [createMs] = await time(() => driver.create({ id, image: "local:host", env: {}, policy }));
    const [pauseMs] = await time(() => driver.pause(id));
    const [resumeMs] = await time(() => driver.resume(id, policy));
    const mib = opts.workspaceMiB ?? 100;
    const ws = sandboxPaths(dataDir, id).workspace;
    // Half incompressible, half text: neither best nor worst case for gzip.
    const half = Math.floor((mib * 1024 * 1024) / 2);
    await writeFile(path.join(ws, "random.bin"), randomBytes(half));
    await writeFile(path.join(ws, "text.txt"), "the quick brown fox jumps over the lazy dog 0123456789\n".repeat(Math.ceil(half / 55)).slice(0, half));
    const layout = path.join(base, "snap");
    const [snapshotMs, art] = await time(() => driver.snapshotFilesystem(id, layout, {}));
    const [restoreMs] = await time(() => driver.create({ id: restored, image: "local:host", env: {}, policy, restoreFrom: layout }));
    const [destroyMs] = await time(() => driver.destroy(id));
    await driver.destroy(restored);
    return { freezer: caps.freezer, createMs, pauseMs, resumeMs, workspaceBytes: 2 * half, snapshotMs, snapshotLayerBytes: art.layerSize, restoreMs, destroyMs };
  } finally {
    await driver.destroy(id).catch(() => undefined);
    await driver.destroy(restored).catch(() => undefined);
    await driver.detach();
    await rm(base, { recursive: true, force: true });
  }
}
