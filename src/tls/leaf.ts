/**
 * Leaf certificates for intercepted hosts (DESIGN.md "TLS interception"): one key shared by all leaves, one
 * certificate per host signed by the CA on first use, kept in a bounded LRU, minted once under concurrent use.
 */
import { generateKeyPair } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { promisify } from "node:util";
import type IpAddr from "ipaddr.js";
import { LRUCache } from "lru-cache";
import type { CertificateAuthority } from "./ca.js";
import { TlsError } from "./errors.js";
import { requireCjs } from "../util/cjs.js";
import {
  authorityKeyIdentifierExt,
  encodeExtensions,
  encodeName,
  floorToSecond,
  keyIdentifier,
  randomSerial,
  subjectKeyIdentifierExt,
  toPem,
  type ExtensionSpec,
} from "./x509.js";

const generateKeyPairAsync = promisify(generateKeyPair);
const ipaddr = requireCjs("ipaddr.js") as typeof IpAddr;

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** ub-common-name (RFC 5280 Appendix A). Clients match the SAN, so a cut CN changes nothing for them. */
const MAX_CN_LENGTH = 64;

export type LeafKeyType = "ec-p256" | "rsa-2048";

export interface LeafOptions {
  /** Most certificates kept; the least recently used is dropped beyond it. Default 1000. */
  readonly max?: number;
  /** Validity of a leaf, clamped inside the CA's. Default 7. */
  readonly validityDays?: number;
  /** Default: EC P-256 under an EC CA, RSA 2048 under an RSA CA (a client that needs one needs both). */
  readonly keyType?: LeafKeyType;
  /** Applied to every SecureContext (e.g. minVersion, ciphers); `key` and `cert` are always the leaf's. */
  readonly secureContextOptions?: Omit<SecureContextOptions, "key" | "cert" | "pfx">;
}

export interface LeafStats {
  /** Certificates signed (each host once while it stays cached and valid). */
  readonly minted: number;
  /** Requests answered by a cached or in-flight certificate. */
  readonly hits: number;
}

interface LeafKey {
  readonly keyPem: string;
  readonly spki: Buffer;
  readonly keyId: Buffer;
  readonly rsa: boolean;
}

interface Leaf {
  readonly cert: string;
  readonly key: string;
  readonly notAfter: Date;
  /** Re-mint after this (ms epoch): half the leaf's remaining lifetime at mint, so a cached leaf never expires. */
  readonly renewAt: number;
  context?: SecureContext;
}

interface Entry {
  readonly promise: Promise<Leaf>;
  leaf?: Leaf;
}

export class LeafCertificates {
  readonly #ca: CertificateAuthority;
  readonly #validityMs: number;
  readonly #keyType: LeafKeyType;
  readonly #contextOptions: Omit<SecureContextOptions, "key" | "cert" | "pfx">;
  readonly #cache: LRUCache<string, Entry>;
  #key: Promise<LeafKey> | undefined;
  #minted = 0;
  #hits = 0;

  constructor(ca: CertificateAuthority, opts: LeafOptions = {}) {
    const max = opts.max ?? 1000;
    const validityDays = opts.validityDays ?? 7;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`max must be a positive integer, got ${max}`);
    if (!(validityDays > 0)) throw new RangeError(`validityDays must be positive, got ${validityDays}`);
    this.#ca = ca;
    this.#validityMs = validityDays * DAY_MS;
    this.#keyType = opts.keyType ?? (ca.keyAlgorithm === "rsa" ? "rsa-2048" : "ec-p256");
    this.#contextOptions = opts.secureContextOptions ?? {};
    this.#cache = new LRUCache<string, Entry>({ max });
  }

  /** A TLS server context presenting `host`'s leaf (for an SNICallback or `tls.TLSSocket({ secureContext })`). */
  async secureContextFor(host: string): Promise<SecureContext> {
    const leaf = await this.#leaf(host);
    leaf.context ??= createSecureContext({ ...this.#contextOptions, key: leaf.key, cert: leaf.cert });
    return leaf.context;
  }

  /** `host`'s leaf certificate and the shared leaf key, PEM. */
  async pemFor(host: string): Promise<{ cert: string; key: string }> {
    const { cert, key } = await this.#leaf(host);
    return { cert, key };
  }

  /** Hosts currently cached (including mints in flight). */
  get size(): number {
    return this.#cache.size;
  }

  get stats(): LeafStats {
    return { minted: this.#minted, hits: this.#hits };
  }

  #leaf(host: string): Promise<Leaf> {
    const cached = this.#cache.get(host); // only valid hosts are ever cached
    if (cached && !(cached.leaf && Date.now() >= cached.leaf.renewAt)) {
      this.#hits++;
      return cached.promise;
    }
    const san = subjectAltNameFor(host);
    // The entry (with its promise) is cached before any await, so concurrent first requests share one mint.
    this.#minted++;
    const entry: Entry = {
      promise: this.#mint(host, san).then(
        (leaf) => (entry.leaf = leaf),
        (err: unknown) => {
          // Never cache a failure: the next request tries again (e.g. after the operator fixes the clock).
          if (this.#cache.peek(host) === entry) this.#cache.delete(host);
          throw err;
        },
      ),
    };
    this.#cache.set(host, entry);
    return entry.promise;
  }

  async #mint(host: string, san: ExtensionSpec): Promise<Leaf> {
    const key = await (this.#key ??= this.#generateKey().catch((err: unknown) => {
      this.#key = undefined; // let the next mint try again
      throw err;
    }));
    const ca = this.#ca;
    const now = Date.now();
    if (now >= ca.notAfter.getTime()) {
      throw new TlsError(
        "ca-expired",
        `The CA expired on ${ca.notAfter.toISOString()}; run \`sandbox-egress ca init --force\`, restart, re-distribute ca.pem.`,
      );
    }
    // Backdated for clients whose clocks lag, but never outside the CA's own validity (a chain must nest).
    const notBefore = floorToSecond(Math.max(now - HOUR_MS, ca.notBefore.getTime()));
    const notAfter = floorToSecond(Math.min(now + this.#validityMs, ca.notAfter.getTime()));
    const der = ca.issue({
      serial: randomSerial(),
      subject: encodeName({ commonName: host.slice(0, MAX_CN_LENGTH) }),
      notBefore,
      notAfter,
      spki: key.spki,
      extensions: encodeExtensions([
        { name: "basicConstraints", critical: true, cA: false },
        // RFC 5480 §3: an EC end-entity key may not assert keyEncipherment; RSA key exchange (TLS ≤ 1.2) needs it.
        { name: "keyUsage", critical: true, digitalSignature: true, keyEncipherment: key.rsa },
        { name: "extKeyUsage", serverAuth: true },
        san,
        subjectKeyIdentifierExt(key.keyId),
        authorityKeyIdentifierExt(ca.keyIdentifier),
      ]),
    });
    return { cert: toPem(der), key: key.keyPem, notAfter, renewAt: now + (notAfter.getTime() - now) / 2 };
  }

  async #generateKey(): Promise<LeafKey> {
    const rsa = this.#keyType === "rsa-2048";
    const { privateKey, publicKey } = rsa
      ? await generateKeyPairAsync("rsa", { modulusLength: 2048 })
      : await generateKeyPairAsync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ type: "spki", format: "der" });
    return { keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), spki, keyId: keyIdentifier(spki), rsa };
  }
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * The SAN for a normalised host: iPAddress for an IP literal (RFC 6125 §6.2.1 forbids matching an IP against a
 * dNSName), dNSName otherwise. The host must already be normalised (net/ does that once); anything else is refused
 * rather than guessed at, so that one host never gets two cache entries.
 */
function subjectAltNameFor(host: string): ExtensionSpec {
  if (isIP(host) !== 0) {
    if (host.includes("%")) throw new TlsError("invalid-host", `A zone ID cannot go in a certificate: ${host}`);
    const bytes = Buffer.from(ipaddr.parse(host).toByteArray());
    // forge encodes altName.value verbatim for type 7; its own IP parser misses IPv4-in-IPv6 forms.
    return { name: "subjectAltName", altNames: [{ type: 7, value: bytes.toString("latin1") }] };
  }
  if (host.length > 253 || !host.split(".").every((label) => LABEL.test(label))) {
    throw new TlsError("invalid-host", `Not a normalised host name: ${JSON.stringify(host.slice(0, 300))}`);
  }
  return { name: "subjectAltName", altNames: [{ type: 2, value: host }] };
}
