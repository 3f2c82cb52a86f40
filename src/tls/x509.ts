/**
 * X.509 building blocks shared by the CA and the leaf minter.
 *
 * Certificates are assembled from DER parts here (names, extensions, times, OIDs) and Node's native crypto signs
 * the TBSCertificate. Why not node-forge's `cert.sign()`: forge signs only with RSA, in pure JavaScript (~10×
 * slower per leaf than native RSA and ~100× slower than native ECDSA), and cannot represent an EC public key at
 * all; the native signer takes any KeyObject, so the CA and the shared leaf key can be EC P-256 (cheap handshakes)
 * and an operator-supplied RSA CA still works.
 *
 * The encoders below are node-forge's own (asn1.oidToDer, dateToUtcTime, _dnToAsn1, _fillMissingExtensionFields,
 * certificateExtensionToAsn1, ...) ported for the parts this project uses, byte for byte: test/unit/tls/x509-der
 * compares them with forge. forge itself is loaded only for an extension description outside that set, which
 * no caller makes today: loading it (42 modules) cost every proxy start ~2 MiB of idle RSS (DESIGN.md
 * "Performance targets": ≤ 60 MiB idle), since even a proxy without transforms creates or loads its CA.
 */
import { createHash, randomBytes, sign, type KeyObject } from "node:crypto";
import type * as Forge from "node-forge";
import { TlsError } from "./errors.js";
import { requireCjs } from "../util/cjs.js";

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

/** The content octets of an OBJECT IDENTIFIER (forge's asn1.oidToDer, same checks and errors). */
export function oidToDer(dotted: string): Buffer {
  const values = dotted.split(".");
  const first = parseInt(values[0]!, 10);
  const second = parseInt(values[1]!, 10);
  if (!(first >= 0 && first <= 2 && second >= 0) || (first < 2 && second > 39)) {
    throw new Error("Invalid OID; the first two arcs are out of range.");
  }
  const out: number[] = [];
  for (let i = 1; i < values.length; ++i) {
    let value = i === 1 ? 40 * first + second : parseInt(values[i]!, 10);
    if (value > 0xffffffff) throw new Error("OID value too large; max is 32-bits.");
    const valueBytes: number[] = [];
    let last = true;
    do {
      let b = value & 0x7f;
      value = value >>> 7;
      if (!last) b |= 0x80;
      valueBytes.push(b);
      last = false;
    } while (value > 0);
    for (let n = valueBytes.length - 1; n >= 0; --n) out.push(valueBytes[n]!);
  }
  return Buffer.from(out);
}

/** Dotted text of OBJECT IDENTIFIER content octets (forge's asn1.derToOid; undefined for no octets). */
export function derToOid(bytes: Buffer): string | undefined {
  let oid: string | undefined;
  let value = 0;
  let first = true;
  for (const b of bytes) {
    if (value > 0x3fffffffffff) throw new Error("OID value too large; max is 53-bits.");
    value = value * 128;
    if (b & 0x80) {
      value += b & 0x7f;
    } else {
      value += b;
      if (first) {
        oid = value < 80 ? `${Math.floor(value / 40)}.${value % 40}` : `2.${value - 80}`;
        first = false;
      } else {
        oid += `.${value}`;
      }
      value = 0;
    }
  }
  return oid;
}

const oid = (dotted: string): Buffer => tlv(TAG.OID, oidToDer(dotted));

/** forge's dateToUtcTime / dateToGeneralizedTime: YYMMDDhhmmssZ or YYYYMMDDhhmmssZ, fields zero-padded to 2. */
export function timeText(date: Date, generalized: boolean): string {
  const year = `${date.getUTCFullYear()}`;
  const fields = [
    generalized ? year : year.slice(2),
    `${date.getUTCMonth() + 1}`,
    `${date.getUTCDate()}`,
    `${date.getUTCHours()}`,
    `${date.getUTCMinutes()}`,
    `${date.getUTCSeconds()}`,
  ];
  return `${fields.map((f) => (f.length < 2 ? `0${f}` : f)).join("")}Z`;
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Sub-second precision is dropped. */
function derTime(date: Date): Buffer {
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? tlv(TAG.UTC_TIME, binary(timeText(date, false)))
    : tlv(TAG.GENERALIZED_TIME, binary(timeText(date, true)));
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

function readTime(buf: Buffer, t: Tlv): Date {
  const s = content(buf, t).toString("latin1");
  if (t.tag === TAG.UTC_TIME) return utcTimeToDate(s);
  if (t.tag === TAG.GENERALIZED_TIME) return generalizedTimeToDate(s);
  throw new Error("validity is not a time");
}

const num = (s: string, start: number, length: number): number => parseInt(s.slice(start, start + length), 10);

/** forge's asn1.utcTimeToDate: YYMMDDhhmm[ss](Z|+hh'mm'|-hh'mm'); YY < 50 is 20YY. */
export function utcTimeToDate(utc: string): Date {
  const date = new Date();
  let year = num(utc, 0, 2);
  year = year >= 50 ? 1900 + year : 2000 + year;
  const MM = num(utc, 2, 2) - 1;
  const DD = num(utc, 4, 2);
  const hh = num(utc, 6, 2);
  const mm = num(utc, 8, 2);
  let ss = 0;
  let end = 0;
  let c = "";
  if (utc.length > 11) {
    c = utc.charAt(10);
    end = 10;
    if (c !== "+" && c !== "-") {
      ss = num(utc, 10, 2);
      end += 2;
    }
  }
  date.setUTCFullYear(year, MM, DD);
  date.setUTCHours(hh, mm, ss, 0);
  if (end) {
    c = utc.charAt(end);
    if (c === "+" || c === "-") {
      const offset = (num(utc, end + 1, 2) * 60 + num(utc, end + 4, 2)) * 60000;
      date.setTime(c === "+" ? +date - offset : +date + offset);
    }
  }
  return date;
}

/** forge's asn1.generalizedTimeToDate: YYYYMMDDhhmmss[.fff][Z|+hh'mm'|-hh'mm'] (no zone: local time). */
export function generalizedTimeToDate(gentime: string): Date {
  const date = new Date();
  const YYYY = num(gentime, 0, 4);
  const MM = num(gentime, 4, 2) - 1;
  const DD = num(gentime, 6, 2);
  const hh = num(gentime, 8, 2);
  const mm = num(gentime, 10, 2);
  const ss = num(gentime, 12, 2);
  let fff = 0;
  let offset = 0;
  let isUTC = gentime.charAt(gentime.length - 1) === "Z";
  const end = gentime.length - 5;
  const c = gentime.charAt(end);
  if (c === "+" || c === "-") {
    offset = (num(gentime, end + 1, 2) * 60 + num(gentime, end + 4, 2)) * 60000;
    if (c === "+") offset *= -1;
    isUTC = true;
  }
  if (gentime.charAt(14) === ".") fff = parseFloat(gentime.slice(14)) * 1000;
  if (isUTC) {
    date.setUTCFullYear(YYYY, MM, DD);
    date.setUTCHours(hh, mm, ss, fff);
    date.setTime(+date + offset);
  } else {
    date.setFullYear(YYYY, MM, DD);
    date.setHours(hh, mm, ss, fff);
  }
  return date;
}

const OID_SUBJECT_KEY_IDENTIFIER = "2.5.29.14";
const OID_KEY_USAGE = "2.5.29.15";

export interface CertificateParts {
  /** DER of the subject Name, byte for byte: a leaf's issuer must be exactly this (RFC 5280 §7.1). */
  readonly subject: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
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
  const [validity, subject, spki] = [f[o + 3], f[o + 4], f[o + 5]];
  if (!validity || !subject || !spki) throw new Error("truncated TBSCertificate");
  const [nb, na] = childrenOf(der, validity);
  if (!nb || !na) throw new Error("malformed validity");

  let subjectKeyId: Buffer | undefined;
  let keyCertSign: boolean | undefined;
  const extsWrapper = f.slice(o + 6).find((t) => t.tag === TAG.CONTEXT_3);
  const extsSeq = extsWrapper ? childrenOf(der, extsWrapper)[0] : undefined;
  for (const ext of extsSeq ? childrenOf(der, extsSeq) : []) {
    const parts = childrenOf(der, ext);
    const id = parts[0] && derToOid(content(der, parts[0]));
    const value = parts[parts.length - 1]; // OCTET STRING; an optional `critical` BOOLEAN sits between
    if (!value) continue;
    if (id === OID_SUBJECT_KEY_IDENTIFIER) {
      subjectKeyId = Buffer.from(content(der, readTlv(der, value.start, value.end)));
    } else if (id === OID_KEY_USAGE) {
      const bits = content(der, readTlv(der, value.start, value.end));
      keyCertSign = ((bits[1] ?? 0) & 0x04) !== 0; // bits[0] = unused-bit count; keyCertSign is bit 5
    }
  }
  return {
    subject: Buffer.from(raw(der, subject)),
    notBefore: readTime(der, nb),
    notAfter: readTime(der, na),
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

// ECDSA identifiers carry no parameters at all (RFC 5758 §3.2); RSA PKCS#1 v1.5 ones carry NULL (RFC 4055 §5).
const ECDSA: Record<string, SignatureAlgorithm> = {
  prime256v1: { name: "ecdsa-with-SHA256", hash: "sha256", identifier: seq(oid("1.2.840.10045.4.3.2")) },
  secp384r1: { name: "ecdsa-with-SHA384", hash: "sha384", identifier: seq(oid("1.2.840.10045.4.3.3")) },
  secp521r1: { name: "ecdsa-with-SHA512", hash: "sha512", identifier: seq(oid("1.2.840.10045.4.3.4")) },
};
const RSA_SHA256: SignatureAlgorithm = {
  name: "sha256WithRSAEncryption",
  hash: "sha256",
  identifier: seq(oid("1.2.840.113549.1.1.11"), tlv(TAG.NULL)),
};

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
const TAG_UTF8_STRING = 0x0c;
const TAG_SET = 0x31;

/** A UTF8String value as forge writes it (unescape(encodeURIComponent(s)): a lone surrogate throws URIError). */
function utf8(value: string): Buffer {
  encodeURIComponent(value);
  return Buffer.from(value, "utf8");
}

/** A Name of UTF8String attributes (RFC 5280 §4.1.2.6: UTF8String for new certificates), in the order given. */
export function encodeName(attrs: { readonly commonName: string; readonly organization?: string }): Buffer {
  const rdn = (type: string, value: string): Buffer => tlv(TAG_SET, seq(oid(type), tlv(TAG_UTF8_STRING, utf8(value))));
  const rdns: Buffer[] = [];
  if (attrs.organization !== undefined) rdns.push(rdn(OID_ORGANIZATION, attrs.organization));
  rdns.push(rdn(OID_COMMON_NAME, attrs.commonName));
  return seq(...rdns);
}

/** A forge extension description (`{ name, critical?, ...fields }`) as forge's `setExtensions` takes it. */
export type ExtensionSpec = Record<string, unknown> & { readonly name: string };

const EXTENSION_OIDS: Readonly<Record<string, string>> = {
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
};

const EXT_KEY_USAGE_OIDS: Readonly<Record<string, string>> = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  codeSigning: "1.3.6.1.5.5.7.3.3",
  emailProtection: "1.3.6.1.5.5.7.3.4",
  timeStamping: "1.3.6.1.5.5.7.3.8",
};

/** forge's integerToDer + toDer for a small INTEGER: two's complement in 1-4 octets, one redundant octet dropped. */
function smallInteger(x: number): Buffer | undefined {
  if (!Number.isInteger(x) || x < -0x80000000 || x >= 0x80000000) return undefined;
  const bits = x >= -0x80 && x < 0x80 ? 8 : x >= -0x8000 && x < 0x8000 ? 16 : x >= -0x800000 && x < 0x800000 ? 24 : 32;
  let i = x < 0 ? x + 2 ** bits : x;
  const bytes: number[] = [];
  for (let n = bits; n > 0; n -= 8) {
    bytes.unshift(i % 256);
    i = Math.floor(i / 256);
  }
  if (bytes.length > 1 && ((bytes[0] === 0 && (bytes[1]! & 0x80) === 0) || (bytes[0] === 0xff && (bytes[1]! & 0x80) === 0x80))) {
    bytes.shift();
  }
  return tlv(TAG.INTEGER, Buffer.from(bytes));
}

/** keyUsage BIT STRING content, as forge's _fillMissingExtensionFields builds it (trailing zero octets dropped). */
function keyUsageBits(e: ExtensionSpec): Buffer {
  const flags: Array<[string, number, number, number]> = [
    ["digitalSignature", 0, 0x80, 7],
    ["nonRepudiation", 0, 0x40, 6],
    ["keyEncipherment", 0, 0x20, 5],
    ["dataEncipherment", 0, 0x10, 4],
    ["keyAgreement", 0, 0x08, 3],
    ["keyCertSign", 0, 0x04, 2],
    ["cRLSign", 0, 0x02, 1],
    ["encipherOnly", 0, 0x01, 0],
    ["decipherOnly", 1, 0x80, 7],
  ];
  let unused = 0;
  const b = [0, 0];
  for (const [field, octet, bit, u] of flags) {
    if (e[field]) {
      b[octet]! |= bit;
      unused = u;
    }
  }
  const octets = b[1] !== 0 ? [unused, b[0]!, b[1]!] : b[0] !== 0 ? [unused, b[0]!] : [unused];
  return Buffer.from(octets);
}

/** The DER extnValue of one extension description, or undefined when it is outside what this file encodes. */
function extensionValue(e: ExtensionSpec): Buffer | undefined {
  if (e.value !== undefined) return typeof e.value === "string" ? binary(e.value) : undefined;
  switch (e.name) {
    case "keyUsage":
      return tlv(TAG.BIT_STRING, keyUsageBits(e));
    case "basicConstraints": {
      const parts: Buffer[] = [];
      if (e.cA) parts.push(tlv(TAG.BOOLEAN, Buffer.from([0xff])));
      if ("pathLenConstraint" in e) {
        const n = smallInteger(e.pathLenConstraint as number);
        if (!n) return undefined;
        parts.push(n);
      }
      return seq(...parts);
    }
    case "extKeyUsage": {
      const parts: Buffer[] = [];
      for (const key in e) {
        if (e[key] !== true || key === "critical") continue;
        if (!Object.hasOwn(EXT_KEY_USAGE_OIDS, key)) return undefined;
        parts.push(oid(EXT_KEY_USAGE_OIDS[key]!));
      }
      return seq(...parts);
    }
    case "subjectAltName": {
      if (!Array.isArray(e.altNames)) return undefined;
      const parts: Buffer[] = [];
      for (const altName of e.altNames as Array<{ type: unknown; value: unknown; ip?: unknown }>) {
        const type = altName.type;
        if (typeof type !== "number" || !Number.isInteger(type) || type < 0 || type > 30 || type === 8) return undefined;
        if ((type === 7 && altName.ip) || typeof altName.value !== "string") return undefined;
        parts.push(tlv(0x80 | type, binary(altName.value)));
      }
      return seq(...parts);
    }
    default:
      return undefined;
  }
}

/** The `[3] EXPLICIT Extensions` element of a TBSCertificate. */
export function encodeExtensions(exts: readonly ExtensionSpec[]): Buffer {
  const encoded: Buffer[] = [];
  for (const e of exts) {
    const id = "id" in e || !Object.hasOwn(EXTENSION_OIDS, e.name) ? undefined : EXTENSION_OIDS[e.name];
    const value = id === undefined ? undefined : extensionValue(e);
    if (id === undefined || value === undefined) return encodeExtensionsWithForge(exts);
    encoded.push(seq(oid(id), ...(e.critical ? [tlv(TAG.BOOLEAN, Buffer.from([0xff]))] : []), tlv(TAG.OCTET_STRING, value)));
  }
  return tlv(TAG.CONTEXT_3, seq(...encoded));
}

/** Anything else goes through forge itself, loaded on first use. */
function encodeExtensionsWithForge(exts: readonly ExtensionSpec[]): Buffer {
  const forge = requireCjs("node-forge") as typeof Forge;
  // forge's extension encoder; it exists at runtime but @types/node-forge does not declare it.
  const encodeList = (forge.pki as unknown as { certificateExtensionsToAsn1(exts: unknown[]): Forge.asn1.Asn1 }).certificateExtensionsToAsn1;
  // setExtensions fills in each extension's DER value from its fields; the certificate itself is a scratch holder.
  const holder = forge.pki.createCertificate();
  holder.setExtensions(exts.map((e) => ({ ...e })));
  return binary(forge.asn1.toDer(encodeList(holder.extensions)).getBytes());
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
