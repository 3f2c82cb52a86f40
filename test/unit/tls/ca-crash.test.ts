import { X509Certificate, createPrivateKey } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CertificateAuthority, TlsError } from "../../../src/tls/index.js";
import { tempDir, type TempDir } from "./tools.js";

/** When set, writing a file with this name fails as a crash would: after the earlier files were written. */
const crash = vi.hoisted(() => ({ on: undefined as string | undefined }));

vi.mock("../../../src/util/atomic-file.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../../src/util/atomic-file.js")>();
  return {
    ...real,
    writeFileAtomic: async (...args: Parameters<typeof real.writeFileAtomic>) => {
      if (crash.on !== undefined && basename(args[0]) === crash.on) throw new Error(`simulated crash writing ${crash.on}`);
      return real.writeFileAtomic(...args);
    },
  };
});

let dir: TempDir;
beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  crash.on = undefined;
  await dir.remove();
});

describe("CA creation that fails part-way", () => {
  it("leaves no CA when the first create fails, and the next start creates a complete one", async () => {
    crash.on = ".ca.pem.new";
    await expect(CertificateAuthority.loadOrCreate(dir.path)).rejects.toThrow(/simulated crash/);
    const err: unknown = await CertificateAuthority.load(dir.path).catch((e: unknown) => e);
    expect((err as TlsError).code).toBe("ca-not-found");
    expect(await readdir(dir.path)).toEqual([".ca-key.pem.new"]); // no ca.pem, no temp file, no lock

    crash.on = undefined;
    const { ca, created } = await CertificateAuthority.loadOrCreate(dir.path);
    expect(created).toBe(true);
    const key = createPrivateKey(await readFile(join(dir.path, "ca-key.pem"), "utf8"));
    expect(new X509Certificate(ca.certPem).checkPrivateKey(key)).toBe(true);
  });

  it.each([".ca-key.pem.new", ".ca.pem.new"])("keeps the current CA intact when a rotation fails writing %s", async (f) => {
    const old = await CertificateAuthority.create(dir.path);
    crash.on = f;
    await expect(CertificateAuthority.create(dir.path, { force: true })).rejects.toThrow(/simulated crash/);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).toBe(old.fingerprintSha256);
    crash.on = undefined;
    const fresh = await CertificateAuthority.create(dir.path, { force: true });
    expect(fresh.fingerprintSha256).not.toBe(old.fingerprintSha256);
    expect((await readdir(dir.path)).sort()).toEqual(["ca-key.pem", "ca.pem"]);
  });
});
