/**
 * The interception CA: `DIR/ca.pem` (0644, handed to sandboxes) and `DIR/ca-key.pem` (0600, never leaves the proxy).
 * Created on first proxy start or by `sandbox-egress ca init`; see certs/README.md for trust and rotation.
 */
import { createPrivateKey, generateKeyPair, randomBytes, X509Certificate, type KeyObject } from "node:crypto";
import { chmod, mkdir, open, readFile, rename } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { TlsError, isTlsError } from "./errors.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { exists, removeStaleTemps, syncDir, unlinkIfExists, withLockFile } from "./files.js";
import {
  authorityKeyIdentifierExt,
  encodeExtensions,
  encodeName,
  floorToSecond,
  keyIdentifier,
  parseCertificate,
  randomSerial,
  signatureAlgorithmFor,
  signCertificate,
  subjectKeyIdentifierExt,
  toPem,
  type CertificateParts,
  type SignatureAlgorithm,
  type TbsFields,
} from "./x509.js";

const generateKeyPairAsync = promisify(generateKeyPair);

export const CA_CERT_FILE = "ca.pem";
export const CA_KEY_FILE = "ca-key.pem";
const LOCK_FILE = ".ca.lock";
/** A new CA is written here in full before it replaces the current one. */
const STAGED_KEY = ".ca-key.pem.new";
const STAGED_CERT = ".ca.pem.new";
const CERT_MODE = 0o644;
const KEY_MODE = 0o600;
const HOUR_MS = 3_600_000;
const CA_VALIDITY_YEARS = 10;

/**
 * `ec-p256` (default): the cheapest to sign with and accepted by every current TLS stack.
 * `rsa-2048`: for clients that cannot verify an ECDSA chain.
 */
export type CaKeyType = "ec-p256" | "rsa-2048";

export interface CaCreateOptions {
  /** Default: "sandbox-egress CA <8 hex>", so that two installs are distinguishable in a trust store. */
  readonly commonName?: string;
  /** Replace an existing CA (rotation). Default false: creating over an existing CA fails with `ca-exists`. */
  readonly force?: boolean;
  readonly keyType?: CaKeyType;
}

export interface CaPaths {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
}

export function caPaths(dir: string): CaPaths {
  const abs = resolve(dir);
  return { dir: abs, cert: join(abs, CA_CERT_FILE), key: join(abs, CA_KEY_FILE) };
}

/** The fields of a leaf TBSCertificate that the leaf minter chooses; the CA adds issuer and signature. */
export type IssueFields = Omit<TbsFields, "issuer">;

export class CertificateAuthority {
  readonly #paths: CaPaths;
  readonly #certPem: string;
  readonly #x509: X509Certificate;
  readonly #parts: CertificateParts;
  readonly #key: KeyObject;
  readonly #alg: SignatureAlgorithm;
  readonly #keyId: Buffer;
  readonly #notBefore: Date;
  readonly #notAfter: Date;

  private constructor(paths: CaPaths, certPem: string, x509: X509Certificate, key: KeyObject) {
    this.#paths = paths;
    this.#certPem = certPem;
    this.#x509 = x509;
    this.#key = key;
    this.#alg = signatureAlgorithmFor(key);
    try {
      this.#parts = parseCertificate(x509.raw);
    } catch (err) {
      throw new TlsError("ca-invalid", `${paths.cert} cannot be parsed as an X.509 certificate.`, { cause: err });
    }
    // A CA without SKI (allowed for roots by RFC 5280) still needs an AKI in its leaves: derive it (method 1).
    this.#keyId = this.#parts.subjectKeyId ?? keyIdentifier(this.#parts.spki);
    // OpenSSL's printed form ("Nov 23 16:29:15 2026 GMT"), whole seconds, as the certificate carries them.
    this.#notBefore = new Date(x509.validFrom);
    this.#notAfter = new Date(x509.validTo);
    if (Number.isNaN(this.#notBefore.getTime()) || Number.isNaN(this.#notAfter.getTime())) {
      throw new TlsError("ca-invalid", `${paths.cert} has a validity period that cannot be read.`);
    }
  }

  /** Load the CA in `dir`, or create one when the directory has no ca.pem yet. */
  static async loadOrCreate(
    dir: string,
    opts: Omit<CaCreateOptions, "force"> = {},
  ): Promise<{ ca: CertificateAuthority; created: boolean }> {
    try {
      return { ca: await CertificateAuthority.load(dir), created: false };
    } catch (err) {
      if (!isTlsError(err, "ca-not-found")) throw err;
    }
    const paths = caPaths(dir);
    await mkdir(paths.dir, { recursive: true });
    return withLockFile(join(paths.dir, LOCK_FILE), async () => {
      // Another process may have created it while this one waited for the lock.
      if (await exists(paths.cert)) return { ca: await CertificateAuthority.load(dir), created: false };
      return { ca: await createLocked(paths, opts), created: true };
    });
  }

  /**
   * Load `dir/ca.pem` and `dir/ca-key.pem`. Refuses a key that group or others can access, a key that does not
   * match the certificate, a certificate that is not a CA, and an expired CA, each with its own error code.
   */
  static async load(dir: string): Promise<CertificateAuthority> {
    const paths = caPaths(dir);
    let certPem: string;
    try {
      certPem = await readFile(paths.cert, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new TlsError("ca-not-found", `No CA in ${paths.dir}: ${paths.cert} does not exist.`, { cause: err });
      }
      throw err;
    }
    const keyPem = await readPrivateKeyFile(paths.key);

    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(certPem);
    } catch (err) {
      throw new TlsError("ca-invalid", `${paths.cert} is not a PEM X.509 certificate.`, { cause: err });
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch (err) {
      throw new TlsError("ca-key-invalid", `${paths.key} is not an unencrypted PEM private key.`, { cause: err });
    }
    if (!x509.ca) {
      throw new TlsError("ca-invalid", `${paths.cert} is not a CA certificate (basicConstraints CA:TRUE is missing).`);
    }
    if (!x509.checkPrivateKey(key)) {
      throw new TlsError(
        "ca-key-mismatch",
        `${paths.key} is not the private key of ${paths.cert}; restore the matching pair or run \`sandbox-egress ca init --force\`.`,
      );
    }
    // Re-armour the first certificate of the file, so a stray chain or comment is never served as "the CA".
    const ca = new CertificateAuthority(paths, toPem(x509.raw), x509, key);
    if (ca.#parts.keyCertSign === false) {
      throw new TlsError("ca-invalid", `${paths.cert} has a keyUsage extension without keyCertSign.`);
    }
    const now = Date.now();
    if (now >= ca.notAfter.getTime()) {
      throw new TlsError(
        "ca-expired",
        `The CA in ${paths.dir} expired on ${ca.notAfter.toISOString()}; run \`sandbox-egress ca init --force\` and re-distribute ca.pem.`,
      );
    }
    return ca;
  }

  /**
   * Create a new CA in `dir` (made if missing). Fails with `ca-exists` when `dir/ca.pem` exists, unless `force`.
   * The new pair is staged in full first (a failure there leaves the current CA as it was); then the old
   * certificate is removed, the key moved in, the certificate last. So no crash can leave a ca.pem next to a key
   * that is not its own: at worst there is a key without a certificate, which counts as "no CA" and is replaced by
   * the next create.
   */
  static async create(dir: string, opts: CaCreateOptions = {}): Promise<CertificateAuthority> {
    const paths = caPaths(dir);
    await mkdir(paths.dir, { recursive: true });
    return withLockFile(join(paths.dir, LOCK_FILE), async () => {
      if (!opts.force && (await exists(paths.cert))) {
        throw new TlsError(
          "ca-exists",
          `A CA already exists in ${paths.dir}; pass --force to replace it (every sandbox then needs the new ca.pem).`,
        );
      }
      return createLocked(paths, opts);
    });
  }

  /** The CA certificate, PEM, as sandboxes should trust it. */
  get certPem(): string {
    return this.#certPem;
  }

  /** SHA-256 of the certificate DER, upper-case colon hex (the form `openssl x509 -fingerprint -sha256` prints). */
  get fingerprintSha256(): string {
    return this.#x509.fingerprint256;
  }

  get notBefore(): Date {
    return new Date(this.#notBefore);
  }

  get notAfter(): Date {
    return new Date(this.#notAfter);
  }

  /** The subject as `O=…, CN=…`, in certificate order. */
  get subject(): string {
    return this.#x509.subject.split("\n").join(", ");
  }

  get paths(): CaPaths {
    return this.#paths;
  }

  /** The family of the CA key: leaves default to the same family (an RSA CA is chosen for clients without ECDSA). */
  get keyAlgorithm(): "ec" | "rsa" {
    return this.#key.asymmetricKeyType === "ec" ? "ec" : "rsa";
  }

  /** e.g. "EC P-256", "RSA 2048". */
  get keyDescription(): string {
    const d = this.#key.asymmetricKeyDetails ?? {};
    if (this.#key.asymmetricKeyType === "ec") {
      const curves: Record<string, string> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };
      return `EC ${curves[d.namedCurve ?? ""] ?? d.namedCurve}`;
    }
    return `RSA ${d.modulusLength}`;
  }

  /** The CA's key identifier: the value of its SKI, and of every leaf's AKI keyIdentifier. */
  get keyIdentifier(): Buffer {
    return Buffer.from(this.#keyId);
  }

  /**
   * Sign a certificate issued by this CA; returns its DER. The issuer Name is the CA's subject byte for byte.
   * The CA's private key never leaves this object.
   */
  issue(fields: IssueFields): Buffer {
    return signCertificate({ ...fields, issuer: this.#parts.subject }, this.#key, this.#alg);
  }
}

/** Create while holding the directory lock. */
async function createLocked(paths: CaPaths, opts: Omit<CaCreateOptions, "force">): Promise<CertificateAuthority> {
  const staged = { key: join(paths.dir, STAGED_KEY), cert: join(paths.dir, STAGED_CERT) };
  // Leftovers of an interrupted create (we hold the lock, so nobody is writing them now).
  await removeStaleTemps(paths.dir, [STAGED_KEY, STAGED_CERT]);
  await unlinkIfExists(staged.key);
  await unlinkIfExists(staged.cert);

  const { privateKey, publicKey } =
    opts.keyType === "rsa-2048"
      ? await generateKeyPairAsync("rsa", { modulusLength: 2048 })
      : await generateKeyPairAsync("ec", { namedCurve: "P-256" });

  const spki = publicKey.export({ type: "spki", format: "der" });
  const keyId = keyIdentifier(spki);
  const now = Date.now();
  const notBefore = floorToSecond(now - HOUR_MS); // tolerate clients whose clocks run a little behind
  const notAfter = floorToSecond(now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  const subject = encodeName({
    organization: "sandbox-egress",
    commonName: opts.commonName ?? `sandbox-egress CA ${randomBytes(4).toString("hex")}`,
  });
  const extensions = encodeExtensions([
    // pathLen 0: this CA signs leaves only, never another CA (RFC 5280 §4.2.1.9).
    { name: "basicConstraints", critical: true, cA: true, pathLenConstraint: 0 },
    { name: "keyUsage", critical: true, keyCertSign: true, cRLSign: true },
    subjectKeyIdentifierExt(keyId),
    authorityKeyIdentifierExt(keyId),
  ]);
  const der = signCertificate(
    { serial: randomSerial(), issuer: subject, subject, notBefore, notAfter, spki, extensions },
    privateKey,
    signatureAlgorithmFor(privateKey),
  );
  const certPem = toPem(der);
  const keyPem = privateKey.export({ type: "pkcs8", format: "pem" });

  // Everything that can fail for ordinary reasons (disk full, permissions) happens first, into staged files, while
  // the old CA is untouched. Then the swap: the certificate goes first and comes back last, each step made durable
  // before the next, so no crash leaves a ca.pem beside a key that is not its own (see CertificateAuthority.create).
  // The key's temp file is opened O_EXCL with mode 0600: the key is never readable by others, even half-written.
  await writeFileAtomic(staged.key, keyPem, { mode: KEY_MODE });
  await writeFileAtomic(staged.cert, certPem, { mode: CERT_MODE });
  await chmod(staged.cert, CERT_MODE); // the umask may have narrowed it; sandboxes and the admin REST must read it
  if (await unlinkIfExists(paths.cert)) await syncDir(paths.dir);
  await rename(staged.key, paths.key);
  await syncDir(paths.dir);
  await rename(staged.cert, paths.cert);
  await syncDir(paths.dir);
  return CertificateAuthority.load(paths.dir);
}

/** Read the key through one file handle, so the mode checked is the mode of the file read. */
async function readPrivateKeyFile(path: string): Promise<string> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new TlsError(
        "ca-key-not-found",
        `${path} is missing: the CA certificate is useless without it. Restore it, or run \`sandbox-egress ca init --force\`.`,
        { cause: err },
      );
    }
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TlsError("ca-key-invalid", `${path} is not a regular file.`);
    if ((st.mode & 0o077) !== 0) {
      throw new TlsError(
        "ca-key-permissions",
        `${path} has mode 0${(st.mode & 0o777).toString(8)}: group or others can access the CA private key. ` +
          `Run \`chmod 600 ${path}\` (and consider the key exposed if anyone else could read it).`,
      );
    }
    return await fh.readFile("utf8");
  } finally {
    await fh.close();
  }
}
