/**
 * X.509 building blocks shared by the CA and the leaf minter.
 *
 * Certificates are assembled from DER parts: node-forge encodes the parts it knows (names, extensions, times,
 * OIDs) and Node's native crypto signs the TBSCertificate. Why not forge's `cert.sign()`: forge signs only with
 * RSA, in pure JavaScript (~10× slower per leaf than native RSA and ~100× slower than native ECDSA), and cannot
 * represent an EC public key at all; the native signer takes any KeyObject, so the CA and the shared leaf key can
 * be EC P-256 (cheap handshakes) and an operator-supplied RSA CA still works.
 */
import { createHash, randomBytes, sign, type KeyObject } from "node:crypto";
import type * as Forge from "node-forge";
import { TlsError } from "./errors.js";
import { requireCjs } from "../util/cjs.js";

/**
 * node-forge is loaded on first use, not with this module: loading it costs ~1.7 MiB of heap and ~30 ms, and a
 * proxy whose policy has no transforms and that never answers a refusal inside TLS never needs it (loading the
 * CA does not: see parseCertificate). The brokering module preloads it (`loadX509Encoder`) as soon as a policy
 * with transforms is in force, so the first intercepted host does not pay the load on top of its mint.
 */
let forgeModule: typeof Forge | undefined;
function forgeLib(): typeof Forge {
  return (forgeModule ??= requireCjs("node-forge") as typeof Forge);
}

/** Load the certificate encoder now (idempotent). */
export function loadX509Encoder(): void {
  forgeLib();
}

// ---------------------------------------------------------------------------------------------------------------
// DER writing

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = content.length === 1 ? content[0]! : Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  CONTEXT_0: 0xa0,
  CONTEXT_3: 0xa3,
} as const;

export const seq = (...parts: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...parts);

const binary = (s: string): Buffer => Buffer.from(s, "latin1");
const asn1ToDer = (node: Forge.asn1.Asn1): Buffer => binary(forgeLib().asn1.toDer(node).getBytes());
const oid = (dotted: string): Buffer => tlv(TAG.OID, binary(forgeLib().asn1.oidToDer(dotted).getBytes()));

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Sub-second precision is dropped. */
function derTime(date: Date): Buffer {
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? tlv(TAG.UTC_TIME, binary(forgeLib().asn1.dateToUtcTime(date)))
    : tlv(TAG.GENERALIZED_TIME, binary(forgeLib().asn1.dateToGeneralizedTime(date)));
}

/** Whole seconds: what a certificate can carry, so comparisons with parsed dates are exact. */
export function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/**
 * A random positive serial with 128 bits of entropy (CA/B BR 7.1 asks ≥ 64), DER-minimal: a leading 0x00 is added
 * only when the top bit is set (else the INTEGER would be negative, which `-x509_strict` rejects), and a zero first
 * byte is redrawn (else the encoding would not be minimal). At most 17 octets, inside RFC 5280's limit of 20.
 */
export function randomSerial(): Buffer {
  let bytes = randomBytes(16);
  while (bytes[0] === 0) bytes = randomBytes(16);
  return bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// DER reading (just enough to take a certificate apart)

interface Tlv {
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly offset: number;
  /** Offset of the first content byte. */
  readonly start: number;
  /** Offset just past the content. */
  readonly end: number;
}

function readTlv(buf: Buffer, offset: number, limit = buf.length): Tlv {
  const tag = buf[offset];
  let len = buf[offset + 1];
  if (tag === undefined || len === undefined || (tag & 0x1f) === 0x1f) throw new Error("malformed DER");
  let start = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("malformed DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[start + i] ?? Number.NaN);
    start += n;
  }
  const end = start + len;
  if (!Number.isFinite(end) || end > limit) throw new Error("DER element overruns its container");
  return { tag, offset, start, end };
}

function childrenOf(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let pos = parent.start; pos < parent.end; ) {
    const child = readTlv(buf, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

const raw = (buf: Buffer, t: Tlv): Buffer => buf.subarray(t.offset, t.end);
const content = (buf: Buffer, t: Tlv): Buffer => buf.subarray(t.start, t.end);

// The two extension OIDs the CA reads, as their DER content octets (X.690 §8.19: 2.5 → 40×2+5 = 0x55, then 29, 14|15),
// compared byte for byte so that parsing a CA needs no ASN.1 library.
const OID_SUBJECT_KEY_IDENTIFIER = Buffer.from([0x55, 0x1d, 0x0e]); // 2.5.29.14
const OID_KEY_USAGE = Buffer.from([0x55, 0x1d, 0x0f]); // 2.5.29.15

export interface CertificateParts {
  /** DER of the subject Name, byte for byte: a leaf's issuer must be exactly this (RFC 5280 §7.1). */
  readonly subject: Buffer;
  readonly subjectKeyId: Buffer | undefined;
  /** undefined when the certificate has no keyUsage extension. */
  readonly keyCertSign: boolean | undefined;
  readonly spki: Buffer;
}

export function parseCertificate(der: Buffer): CertificateParts {
  const cert = readTlv(der, 0);
  const tbs = childrenOf(der, cert)[0];
  if (!tbs) throw new Error("no TBSCertificate");
  const f = childrenOf(der, tbs);
  const o = f[0]?.tag === TAG.CONTEXT_0 ? 1 : 0; // version is optional (absent = v1)
  // Validity is read by the caller from X509Certificate (validFrom/validTo), OpenSSL's own parse.
  const [subject, spki] = [f[o + 4], f[o + 5]];
  if (!subject || !spki) throw new Error("truncated TBSCertificate");

  let subjectKeyId: Buffer | undefined;
  let keyCertSign: boolean | undefined;
  const extsWrapper = f.slice(o + 6).find((t) => t.tag === TAG.CONTEXT_3);
  const extsSeq = extsWrapper ? childrenOf(der, extsWrapper)[0] : undefined;
  for (const ext of extsSeq ? childrenOf(der, extsSeq) : []) {
    const parts = childrenOf(der, ext);
    const id = parts[0] && parts[0].tag === TAG.OID ? content(der, parts[0]) : undefined;
    const value = parts[parts.length - 1]; // OCTET STRING; an optional `critical` BOOLEAN sits between
    if (!id || !value) continue;
    if (id.equals(OID_SUBJECT_KEY_IDENTIFIER)) {
      subjectKeyId = Buffer.from(content(der, readTlv(der, value.start, value.end)));
    } else if (id.equals(OID_KEY_USAGE)) {
      const bits = content(der, readTlv(der, value.start, value.end));
      keyCertSign = ((bits[1] ?? 0) & 0x04) !== 0; // bits[0] = unused-bit count; keyCertSign is bit 5
    }
  }
  return {
    subject: Buffer.from(raw(der, subject)),
    subjectKeyId,
    keyCertSign,
    spki: Buffer.from(raw(der, spki)),
  };
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (without the unused-bits octet). */
export function keyIdentifier(spkiDer: Buffer): Buffer {
  const spki = readTlv(spkiDer, 0);
  const bitString = childrenOf(spkiDer, spki)[1];
  if (!bitString || bitString.tag !== TAG.BIT_STRING) throw new Error("malformed SubjectPublicKeyInfo");
  return createHash("sha1").update(spkiDer.subarray(bitString.start + 1, bitString.end)).digest();
}

// ---------------------------------------------------------------------------------------------------------------
// Signature algorithms

export interface SignatureAlgorithm {
  readonly name: string;
  readonly hash: "sha256" | "sha384" | "sha512";
  /** DER AlgorithmIdentifier, used both inside the TBSCertificate and after it. */
  readonly identifier: Buffer;
}

/** The identifier is encoded on first use (it needs the encoder, which loading a CA does not). */
function algorithm(name: string, hash: SignatureAlgorithm["hash"], dottedOid: string, params: Buffer[] = []): SignatureAlgorithm {
  let identifier: Buffer | undefined;
  return Object.freeze({
    name,
    hash,
    get identifier(): Buffer {
      return (identifier ??= seq(oid(dottedOid), ...params));
    },
  });
}

// ECDSA identifiers carry no parameters at all (RFC 5758 §3.2); RSA PKCS#1 v1.5 ones carry NULL (RFC 4055 §5).
const ECDSA: Record<string, SignatureAlgorithm> = {
  prime256v1: algorithm("ecdsa-with-SHA256", "sha256", "1.2.840.10045.4.3.2"),
  secp384r1: algorithm("ecdsa-with-SHA384", "sha384", "1.2.840.10045.4.3.3"),
  secp521r1: algorithm("ecdsa-with-SHA512", "sha512", "1.2.840.10045.4.3.4"),
};
const RSA_SHA256 = algorithm("sha256WithRSAEncryption", "sha256", "1.2.840.113549.1.1.11", [tlv(TAG.NULL)]);

/** The algorithm a private key signs certificates with; throws `ca-unsupported-key` for anything else. */
export function signatureAlgorithmFor(key: KeyObject): SignatureAlgorithm {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec") {
    const alg = details.namedCurve ? ECDSA[details.namedCurve] : undefined;
    if (alg) return alg;
  } else if (key.asymmetricKeyType === "rsa" && (details.modulusLength ?? 0) >= 2048) {
    return RSA_SHA256;
  }
  const what = [key.asymmetricKeyType, details.namedCurve ?? details.modulusLength].filter(Boolean).join(" ");
  throw new TlsError(
    "ca-unsupported-key",
    `Unsupported CA key (${what || "unknown"}): use EC P-256, P-384, P-521 or RSA with at least 2048 bits.`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Names, extensions, certificates

const OID_COMMON_NAME = "2.5.4.3";
const OID_ORGANIZATION = "2.5.4.10";

/** A Name of UTF8String attributes (RFC 5280 §4.1.2.6: UTF8String for new certificates), in the order given. */
export function encodeName(attrs: { readonly commonName: string; readonly organization?: string }): Buffer {
  // forge reads valueTagClass as the value's universal *type*; @types/node-forge mistypes it as a Class.
  const forge = forgeLib();
  const utf8 = forge.asn1.Type.UTF8 as unknown as Forge.asn1.Class;
  const fields: Forge.pki.CertificateField[] = [];
  if (attrs.organization !== undefined) {
    fields.push({ type: OID_ORGANIZATION, value: attrs.organization, valueTagClass: utf8 });
  }
  fields.push({ type: OID_COMMON_NAME, value: attrs.commonName, valueTagClass: utf8 });
  return asn1ToDer(forge.pki.distinguishedNameToAsn1({ attributes: fields }));
}

/** forge's extension encoder; it exists at runtime but @types/node-forge does not declare it. */
const encodeExtensionList = (exts: unknown[]): Forge.asn1.Asn1 =>
  (forgeLib().pki as unknown as { certificateExtensionsToAsn1(exts: unknown[]): Forge.asn1.Asn1 }).certificateExtensionsToAsn1(exts);

/** A forge extension description (`{ name, critical?, ...fields }`) as forge's `setExtensions` takes it. */
export type ExtensionSpec = Record<string, unknown> & { readonly name: string };

/** The `[3] EXPLICIT Extensions` element of a TBSCertificate. */
export function encodeExtensions(exts: readonly ExtensionSpec[]): Buffer {
  // setExtensions fills in each extension's DER value from its fields; the certificate itself is a scratch holder.
  const holder = forgeLib().pki.createCertificate();
  holder.setExtensions(exts.map((e) => ({ ...e })));
  return asn1ToDer(encodeExtensionList(holder.extensions));
}

/** subjectKeyIdentifier with an explicit value (forge would otherwise derive it from an RSA-only key object). */
export function subjectKeyIdentifierExt(keyId: Buffer): ExtensionSpec {
  return { name: "subjectKeyIdentifier", value: tlv(TAG.OCTET_STRING, keyId).toString("latin1") };
}

/** authorityKeyIdentifier carrying only keyIdentifier, the issuer's SKI (RFC 5280 §4.2.1.1). */
export function authorityKeyIdentifierExt(issuerKeyId: Buffer): ExtensionSpec {
  return { name: "authorityKeyIdentifier", value: seq(tlv(0x80, issuerKeyId)).toString("latin1") };
}

export interface TbsFields {
  readonly serial: Buffer;
  /** DER Name. */
  readonly issuer: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** DER Name. */
  readonly subject: Buffer;
  /** DER SubjectPublicKeyInfo. */
  readonly spki: Buffer;
  /** DER `[3] EXPLICIT Extensions` (from encodeExtensions). */
  readonly extensions: Buffer;
}

const VERSION_3 = tlv(TAG.CONTEXT_0, tlv(TAG.INTEGER, Buffer.from([2])));

/** Assembles a v3 TBSCertificate, signs it natively with the issuer's key, and returns the Certificate DER. */
export function signCertificate(fields: TbsFields, issuerKey: KeyObject, alg: SignatureAlgorithm): Buffer {
  const tbs = seq(
    VERSION_3,
    tlv(TAG.INTEGER, fields.serial),
    alg.identifier,
    fields.issuer,
    seq(derTime(fields.notBefore), derTime(fields.notAfter)),
    fields.subject,
    fields.spki,
    fields.extensions,
  );
  // ECDSA signatures come out DER-encoded (Ecdsa-Sig-Value), which is what X.509 carries.
  const signature = sign(alg.hash, tbs, issuerKey);
  return seq(tbs, alg.identifier, tlv(TAG.BIT_STRING, Buffer.from([0]), signature));
}

export function toPem(der: Buffer, label = "CERTIFICATE"): string {
  const b64 = der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** The DER of the first PEM block with the given label, or undefined. */
export function fromPem(pem: string, label = "CERTIFICATE"): Buffer | undefined {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  return m?.[1] ? Buffer.from(m[1].replace(/\s+/g, ""), "base64") : undefined;
}
