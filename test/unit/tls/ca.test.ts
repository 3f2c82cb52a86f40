import { createHash, generateKeyPairSync, X509Certificate } from "node:crypto";
import { chmod, copyFile, mkdir, readdir, readFile, stat, unlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CertificateAuthority, TLS_ERROR_CODES, TlsError, caInit, caShow } from "../../../src/tls/index.js";
import {
  encodeExtensions,
  encodeName,
  keyIdentifier,
  randomSerial,
  signatureAlgorithmFor,
  signCertificate,
  toPem,
} from "../../../src/tls/x509.js";
import { run, tempDir, type TempDir } from "./tools.js";

const HOUR = 3_600_000;

let dir: TempDir;
beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  await dir.remove();
});

const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777;

async function rejection(p: Promise<unknown>): Promise<TlsError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TlsError);
  return err as TlsError;
}

describe("CertificateAuthority files", () => {
  it("creates a CA on the first loadOrCreate and loads that same CA afterwards", async () => {
    const first = await CertificateAuthority.loadOrCreate(dir.path);
    expect(first.created).toBe(true);
    const second = await CertificateAuthority.loadOrCreate(dir.path);
    expect(second.created).toBe(false);
    expect(second.ca.fingerprintSha256).toBe(first.ca.fingerprintSha256);
    expect(second.ca.certPem).toBe(first.ca.certPem);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).toBe(first.ca.fingerprintSha256);
  });

  it("writes ca.pem as 0644 and ca-key.pem as 0600, whatever the umask", async () => {
    const old = process.umask(0o077);
    try {
      await CertificateAuthority.create(dir.path);
    } finally {
      process.umask(old);
    }
    expect(await mode(join(dir.path, "ca.pem"))).toBe(0o644);
    expect(await mode(join(dir.path, "ca-key.pem"))).toBe(0o600);
  });

  it("creates a missing CA directory", async () => {
    const nested = join(dir.path, "a", "b");
    const { created } = await CertificateAuthority.loadOrCreate(nested);
    expect(created).toBe(true);
    expect((await readdir(nested)).sort()).toEqual(["ca-key.pem", "ca.pem"]);
  });

  it("leaves no temp file or lock file behind", async () => {
    await CertificateAuthority.create(dir.path);
    await CertificateAuthority.create(dir.path, { force: true });
    expect((await readdir(dir.path)).sort()).toEqual(["ca-key.pem", "ca.pem"]);
  });

  it("removes the staged and temp files that an interrupted create left behind", async () => {
    await dir.file("..ca-key.pem.new.4242.deadbeef0000.tmp", "half a key");
    await dir.file("..ca.pem.new.4242.deadbeef0001.tmp", "half a cert");
    await dir.file(".ca-key.pem.new", "a staged key");
    await dir.file(".ca.pem.new", "a staged cert");
    await dir.file("unrelated.tmp", "not ours");
    await CertificateAuthority.create(dir.path);
    expect((await readdir(dir.path)).sort()).toEqual(["ca-key.pem", "ca.pem", "unrelated.tmp"]);
  });

  it.each([0o644, 0o640, 0o604, 0o660])("refuses a CA key with mode 0%s, telling the operator to chmod 600", async (m) => {
    await CertificateAuthority.create(dir.path);
    const keyPath = join(dir.path, "ca-key.pem");
    await chmod(keyPath, m);
    const err = await rejection(CertificateAuthority.load(dir.path));
    expect(err.code).toBe("ca-key-permissions");
    expect(err.message).toContain(`chmod 600 ${keyPath}`);
    // loadOrCreate must not "fix" this by replacing the CA either
    expect((await rejection(CertificateAuthority.loadOrCreate(dir.path))).code).toBe("ca-key-permissions");
  });

  it("accepts a CA key with mode 0400", async () => {
    const ca = await CertificateAuthority.create(dir.path);
    await chmod(join(dir.path, "ca-key.pem"), 0o400);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).toBe(ca.fingerprintSha256);
  });

  it("refuses to create over an existing CA without force, and changes nothing", async () => {
    const ca = await CertificateAuthority.create(dir.path);
    const before = await readFile(join(dir.path, "ca-key.pem"), "utf8");
    const err = await rejection(CertificateAuthority.create(dir.path));
    expect(err.code).toBe("ca-exists");
    expect(err.message).toMatch(/--force/);
    expect(await readFile(join(dir.path, "ca-key.pem"), "utf8")).toBe(before);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).toBe(ca.fingerprintSha256);
  });

  it("replaces the CA (certificate and key) with force", async () => {
    const old = await CertificateAuthority.create(dir.path);
    const oldKey = await readFile(join(dir.path, "ca-key.pem"), "utf8");
    const fresh = await CertificateAuthority.create(dir.path, { force: true });
    expect(fresh.fingerprintSha256).not.toBe(old.fingerprintSha256);
    expect(await readFile(join(dir.path, "ca-key.pem"), "utf8")).not.toBe(oldKey);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).toBe(fresh.fingerprintSha256);
  });

  it("treats a key without a certificate (an interrupted create) as no CA, and replaces it", async () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    await writeFile(join(dir.path, "ca-key.pem"), privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    expect((await rejection(CertificateAuthority.load(dir.path))).code).toBe("ca-not-found");
    const { ca, created } = await CertificateAuthority.loadOrCreate(dir.path);
    expect(created).toBe(true);
    expect(new X509Certificate(ca.certPem).checkPrivateKey(privateKey)).toBe(false);
  });

  it("refuses a certificate whose key is missing instead of silently replacing a distributed CA", async () => {
    const ca = await CertificateAuthority.create(dir.path);
    await unlink(join(dir.path, "ca-key.pem"));
    const err = await rejection(CertificateAuthority.loadOrCreate(dir.path));
    expect(err.code).toBe("ca-key-not-found");
    expect(await readFile(join(dir.path, "ca.pem"), "utf8")).toBe(ca.certPem);
  });

  it("refuses a key that is not the certificate's", async () => {
    await CertificateAuthority.create(join(dir.path, "one"));
    await CertificateAuthority.create(join(dir.path, "two"));
    await copyFile(join(dir.path, "two", "ca-key.pem"), join(dir.path, "one", "ca-key.pem"));
    const err = await rejection(CertificateAuthority.load(join(dir.path, "one")));
    expect(err.code).toBe("ca-key-mismatch");
  });

  it("refuses an unreadable key file and a non-certificate ca.pem with their own codes", async () => {
    await CertificateAuthority.create(dir.path);
    const keyPath = join(dir.path, "ca-key.pem");
    const certPath = join(dir.path, "ca.pem");
    const goodCert = await readFile(certPath, "utf8");
    await writeFile(certPath, "not a certificate\n");
    expect((await rejection(CertificateAuthority.load(dir.path))).code).toBe("ca-invalid");
    await writeFile(certPath, goodCert);
    await writeFile(keyPath, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    expect((await rejection(CertificateAuthority.load(dir.path))).code).toBe("ca-key-invalid");
  });

  it("gives one CA to concurrent loadOrCreate calls on one directory", async () => {
    const results = await Promise.all(Array.from({ length: 8 }, () => CertificateAuthority.loadOrCreate(dir.path)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.ca.fingerprintSha256)).size).toBe(1);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).toBe(results[0]!.ca.fingerprintSha256);
    expect((await readdir(dir.path)).sort()).toEqual(["ca-key.pem", "ca.pem"]);
  });

  it("takes over a lock file that a crashed creator left behind", async () => {
    await mkdir(dir.path, { recursive: true });
    const lock = await dir.file(".ca.lock", "99999\n");
    const old = new Date(Date.now() - 5 * 60_000);
    await utimes(lock, old, old);
    const { created } = await CertificateAuthority.loadOrCreate(dir.path);
    expect(created).toBe(true);
  });
});

describe("CertificateAuthority certificate", () => {
  it("is a self-signed v3 CA that openssl verifies under -x509_strict", async () => {
    const ca = await CertificateAuthority.create(dir.path);
    const certPath = join(dir.path, "ca.pem");
    const verify = await run("openssl", ["verify", "-x509_strict", "-CAfile", certPath, certPath]);
    expect(verify.stderr).toBe("");
    expect(verify.stdout.trim()).toBe(`${certPath}: OK`);

    const text = (await run("openssl", ["x509", "-in", certPath, "-noout", "-text"])).stdout;
    expect(text).toContain("Version: 3 (0x2)");
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    expect(text).toContain("Signature Algorithm: ecdsa-with-SHA256");
    expect(text).toContain("NIST CURVE: P-256");

    const x509 = new X509Certificate(ca.certPem);
    expect(x509.verify(x509.publicKey)).toBe(true);
    expect(x509.issuer).toBe(x509.subject);
    expect(ca.subject).toMatch(/^O=sandbox-egress, CN=sandbox-egress CA [0-9a-f]{8}$/);
  });

  it("carries SKI = SHA-1 of the public key (RFC 5280 method 1), and a matching AKI", async () => {
    const ca = await CertificateAuthority.create(dir.path);
    const spki = new X509Certificate(ca.certPem).publicKey.export({ type: "spki", format: "der" });
    const point = spki.subarray(spki.length - 65); // P-256 uncompressed point, the BIT STRING's value
    const expected = createHash("sha1").update(point).digest();
    expect(ca.keyIdentifier.equals(expected)).toBe(true);
    const hex = [...expected].map((b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
    const text = (await run("openssl", ["x509", "-in", join(dir.path, "ca.pem"), "-noout", "-text"])).stdout;
    expect(text).toMatch(new RegExp(`Subject Key Identifier: \\n\\s+${hex}`));
    expect(text).toMatch(new RegExp(`Authority Key Identifier: \\n\\s+(keyid:)?${hex}`));
  });

  it("is valid for 10 years, backdated one hour", async () => {
    const before = Date.now();
    const ca = await CertificateAuthority.create(dir.path);
    const after = Date.now();
    expect(ca.notBefore.getTime()).toBeGreaterThanOrEqual(Math.floor((before - HOUR) / 1000) * 1000);
    expect(ca.notBefore.getTime()).toBeLessThanOrEqual(after - HOUR);
    const tenYears = new Date(ca.notBefore.getTime() + HOUR);
    tenYears.setUTCFullYear(tenYears.getUTCFullYear() + 10);
    expect(ca.notAfter.getTime()).toBe(tenYears.getTime());
    const x509 = new X509Certificate(ca.certPem);
    expect(new Date(x509.validTo).getTime()).toBe(ca.notAfter.getTime());
    expect(new Date(x509.validFrom).getTime()).toBe(ca.notBefore.getTime());
  });

  it("gives each install a distinct name, serial and fingerprint; the serial is a positive 128-bit number", async () => {
    const a = await CertificateAuthority.create(join(dir.path, "a"));
    const b = await CertificateAuthority.create(join(dir.path, "b"));
    expect(a.subject).not.toBe(b.subject);
    expect(a.fingerprintSha256).not.toBe(b.fingerprintSha256);
    const sa = new X509Certificate(a.certPem).serialNumber;
    const sb = new X509Certificate(b.certPem).serialNumber;
    expect(sa).not.toBe(sb);
    for (const s of [sa, sb]) {
      const n = BigInt(`0x${s}`);
      expect(n > 0n && n < 1n << 128n).toBe(true);
    }
    expect(a.fingerprintSha256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });

  it("keeps a serial DER-minimal and positive whatever its top byte", () => {
    for (let i = 0; i < 2000; i++) {
      const s = randomSerial();
      expect(s[0]).not.toBe(undefined);
      if (s[0] === 0) expect(s[1]! & 0x80).toBe(0x80);
      else expect(s[0]! & 0x80).toBe(0);
      expect(s.length === 16 || s.length === 17).toBe(true);
    }
  });

  it("uses the common name given", async () => {
    const ca = await CertificateAuthority.create(dir.path, { commonName: "Example Corp egress CA" });
    expect(ca.subject).toBe("O=sandbox-egress, CN=Example Corp egress CA");
  });

  it("can be RSA 2048 for clients without ECDSA", async () => {
    const ca = await CertificateAuthority.create(dir.path, { keyType: "rsa-2048" });
    expect(ca.keyDescription).toBe("RSA 2048");
    const certPath = join(dir.path, "ca.pem");
    const verify = await run("openssl", ["verify", "-x509_strict", "-CAfile", certPath, certPath]);
    expect(verify.stdout.trim()).toBe(`${certPath}: OK`);
  });

  it("loads an operator-made RSA CA (openssl req -x509)", async () => {
    const key = join(dir.path, "ca-key.pem");
    const cert = join(dir.path, "ca.pem");
    const made = await run("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "30",
      "-subj", "/O=Example Corp/CN=Example Corp Root",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    expect(made.code).toBe(0);
    await chmod(key, 0o600);
    const ca = await CertificateAuthority.load(dir.path);
    expect(ca.subject).toBe("O=Example Corp, CN=Example Corp Root");
    expect(ca.keyDescription).toBe("RSA 2048");
  });

  it("refuses a certificate that is not a CA", async () => {
    const key = join(dir.path, "ca-key.pem");
    const cert = join(dir.path, "ca.pem");
    await run("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
      "-days", "30", "-subj", "/CN=not a ca", "-addext", "basicConstraints=critical,CA:FALSE",
    ]);
    await chmod(key, 0o600);
    const err = await rejection(CertificateAuthority.load(dir.path));
    expect(err.code).toBe("ca-invalid");
  });

  it("refuses a CA whose keyUsage does not allow certificate signing, and reads its validity as openssl prints it", async () => {
    const key = join(dir.path, "ca-key.pem");
    const cert = join(dir.path, "ca.pem");
    const made = await run("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
      "-days", "30", "-subj", "/CN=no keyCertSign", "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,digitalSignature",
    ]);
    expect(made.code).toBe(0);
    await chmod(key, 0o600);
    expect((await rejection(CertificateAuthority.load(dir.path))).code).toBe("ca-invalid");

    // The same CA with keyCertSign loads, with the validity openssl wrote (whole seconds, 30 days apart).
    await run("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
      "-days", "30", "-subj", "/CN=with keyCertSign", "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign",
    ]);
    const ca = await CertificateAuthority.load(dir.path);
    const x509 = new X509Certificate(await readFile(cert));
    expect(ca.notBefore.toISOString()).toBe(new Date(x509.validFrom).toISOString());
    expect(ca.notAfter.getTime() - ca.notBefore.getTime()).toBe(30 * 24 * 3600 * 1000);
    expect(ca.notBefore.getUTCMilliseconds()).toBe(0);
  });

  it("refuses an expired CA and says how to rotate", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ type: "spki", format: "der" });
    const subject = encodeName({ commonName: "expired CA" });
    const der = signCertificate(
      {
        serial: randomSerial(),
        issuer: subject,
        subject,
        notBefore: new Date("2015-01-01T00:00:00Z"),
        notAfter: new Date("2016-01-01T00:00:00Z"),
        spki,
        extensions: encodeExtensions([
          { name: "basicConstraints", critical: true, cA: true },
          { name: "keyUsage", critical: true, keyCertSign: true },
        ]),
      },
      privateKey,
      signatureAlgorithmFor(privateKey),
    );
    await dir.file("ca.pem", toPem(der));
    await writeFile(join(dir.path, "ca-key.pem"), privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    const err = await rejection(CertificateAuthority.load(dir.path));
    expect(err.code).toBe("ca-expired");
    expect(err.message).toContain("ca init --force");
    // A CA without SKI still gets a key identifier for its leaves' AKI.
    expect(keyIdentifier(spki)).toHaveLength(20);
  });

  it("refuses a key type it cannot sign certificates with", () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    expect(() => signatureAlgorithmFor(privateKey)).toThrow(expect.objectContaining({ code: "ca-unsupported-key" }));
    const small = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey;
    expect(() => signatureAlgorithmFor(small)).toThrow(/at least 2048/);
  });
});

describe("ca init / ca show text", () => {
  it("init creates and prints path, subject, fingerprint, validity and the PEM; show prints the same CA", async () => {
    const text = await caInit(dir.path);
    const ca = await CertificateAuthority.load(dir.path);
    expect(text).toContain(`Created a CA in ${dir.path}`);
    for (const s of [join(dir.path, "ca.pem"), ca.subject, ca.fingerprintSha256, ca.notAfter.toISOString(), ca.certPem]) {
      expect(text).toContain(s);
    }
    const shown = await caShow(dir.path);
    expect(shown).toContain(ca.fingerprintSha256);
    expect(shown).toContain(ca.notBefore.toISOString());
    expect(shown.endsWith(ca.certPem)).toBe(true);
  });

  it("init refuses an existing CA without force; with force it names the old fingerprint and what to do", async () => {
    await caInit(dir.path);
    const old = await CertificateAuthority.load(dir.path);
    expect((await rejection(caInit(dir.path))).code).toBe("ca-exists");
    const text = await caInit(dir.path, { force: true });
    expect(text).toContain(`old SHA-256 ${old.fingerprintSha256}`);
    expect(text).toMatch(/Restart every proxy/);
    expect((await CertificateAuthority.load(dir.path)).fingerprintSha256).not.toBe(old.fingerprintSha256);
  });

  it("show on a directory without a CA fails with ca-not-found", async () => {
    expect((await rejection(caShow(dir.path))).code).toBe("ca-not-found");
  });

  it("has a message for every error code", () => {
    for (const [code, message] of Object.entries(TLS_ERROR_CODES)) {
      expect(code).toMatch(/^[a-z]+(-[a-z]+)*$/);
      expect(message.length).toBeGreaterThan(10);
    }
  });
});
