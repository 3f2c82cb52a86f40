/**
 * x509.ts encodes names, extensions, times and OIDs itself, ported from node-forge (which the proxy no longer
 * loads at start). forge is the oracle here: every output must be byte for byte what forge produced, every parse
 * the same Date, every refusal the same error.
 */
import fc from "fast-check";
import forge from "node-forge";
import { describe, expect, it } from "vitest";
import {
  authorityKeyIdentifierExt,
  derToOid,
  encodeExtensions,
  encodeName,
  generalizedTimeToDate,
  oidToDer,
  subjectKeyIdentifierExt,
  timeText,
  utcTimeToDate,
  type ExtensionSpec,
} from "../../../src/tls/x509.js";
import { runs } from "../../helpers/runs.js";

const bytes = (s: string): Buffer => Buffer.from(s, "latin1");

function forgeName(attrs: { commonName: string; organization?: string }): Buffer {
  const utf8 = forge.asn1.Type.UTF8 as unknown as forge.asn1.Class;
  const fields: forge.pki.CertificateField[] = [];
  if (attrs.organization !== undefined) fields.push({ type: "2.5.4.10", value: attrs.organization, valueTagClass: utf8 });
  fields.push({ type: "2.5.4.3", value: attrs.commonName, valueTagClass: utf8 });
  return bytes(forge.asn1.toDer(forge.pki.distinguishedNameToAsn1({ attributes: fields })).getBytes());
}

function forgeExtensions(exts: readonly ExtensionSpec[]): Buffer {
  const encode = (forge.pki as unknown as { certificateExtensionsToAsn1(e: unknown[]): forge.asn1.Asn1 }).certificateExtensionsToAsn1;
  const holder = forge.pki.createCertificate();
  holder.setExtensions(exts.map((e) => ({ ...e })));
  return bytes(forge.asn1.toDer(encode(holder.extensions)).getBytes());
}

/** Same outcome: equal values, or the same error class and message. */
function outcome<T>(f: () => T): { ok: true; value: T } | { ok: false; error: string } {
  try {
    return { ok: true, value: f() };
  } catch (err) {
    return { ok: false, error: `${(err as Error).name}: ${(err as Error).message}` };
  }
}

describe("x509 DER encoders match node-forge", () => {
  it("encodes the CA's and the leaves' extension sets identically", () => {
    const keyId = Buffer.from("0123456789abcdef0123456789abcdef01234567", "hex");
    const sets: ExtensionSpec[][] = [
      [
        { name: "basicConstraints", critical: true, cA: true, pathLenConstraint: 0 },
        { name: "keyUsage", critical: true, keyCertSign: true, cRLSign: true },
        subjectKeyIdentifierExt(keyId),
        authorityKeyIdentifierExt(keyId),
      ],
      ...[false, true].flatMap((rsa) =>
        [
          { name: "subjectAltName", altNames: [{ type: 2, value: "api.example.com" }] },
          { name: "subjectAltName", altNames: [{ type: 7, value: bytes("\x7f\x00\x00\x01").toString("latin1") }] },
          { name: "subjectAltName", altNames: [{ type: 7, value: Buffer.alloc(16, 0xfe).toString("latin1") }] },
        ].map((san) => [
          { name: "basicConstraints", critical: true, cA: false },
          san,
          { name: "keyUsage", critical: true, digitalSignature: true, keyEncipherment: rsa },
          { name: "extKeyUsage", serverAuth: true },
          subjectKeyIdentifierExt(keyId),
          authorityKeyIdentifierExt(keyId),
        ]),
      ),
      // A name long enough for a two-octet length.
      [{ name: "subjectAltName", altNames: [{ type: 2, value: `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.example` }] }],
    ];
    for (const exts of sets) expect(encodeExtensions(exts).toString("hex")).toBe(forgeExtensions(exts).toString("hex"));
  });

  it("encodes keyUsage, basicConstraints and extKeyUsage variants identically", () => {
    const usages = ["digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"];
    const ekus = ["serverAuth", "clientAuth", "codeSigning", "emailProtection", "timeStamping"];
    const spec = fc.oneof(
      fc.record({ name: fc.constant("keyUsage"), critical: fc.boolean() }).chain((base) =>
        fc.subarray(usages).map((on) => ({ ...base, ...Object.fromEntries(on.map((u) => [u, true])) })),
      ),
      fc.record(
        { name: fc.constant("basicConstraints"), critical: fc.boolean(), cA: fc.boolean(), pathLenConstraint: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) },
        { requiredKeys: ["name"] },
      ),
      fc.record({ name: fc.constant("extKeyUsage"), critical: fc.boolean() }).chain((base) =>
        fc.subarray(ekus).map((on) => ({ ...base, ...Object.fromEntries(on.map((u) => [u, true])) })),
      ),
      fc.record({ name: fc.constant("subjectAltName"), altNames: fc.array(fc.record({ type: fc.constantFrom(1, 2, 6, 7), value: fc.string({ maxLength: 300 }) }), { maxLength: 4 }) }),
      // Outside the ported set: forge itself encodes these (loaded on demand).
      fc.record({ name: fc.constant("extKeyUsage"), "1.2.3.4": fc.constant(true) }),
      fc.record({ name: fc.constant("nsCertType"), client: fc.boolean(), server: fc.boolean() }),
    ) as fc.Arbitrary<ExtensionSpec>;
    fc.assert(
      fc.property(fc.array(spec, { maxLength: 5 }), (exts) => {
        expect(encodeExtensions(exts).toString("hex")).toBe(forgeExtensions(exts).toString("hex"));
      }),
      runs(500),
    );
  });

  it("encodes Names identically, including non-ASCII and long values, and refuses a lone surrogate alike", () => {
    for (const attrs of [
      { organization: "sandbox-egress", commonName: "sandbox-egress CA 0a1b2c3d" },
      { commonName: "api.example.com" },
      { commonName: "x".repeat(64), organization: "Ünïcødé ✓ 𝄞 Org" },
      { commonName: "y".repeat(300) },
    ]) {
      expect(encodeName(attrs).toString("hex")).toBe(forgeName(attrs).toString("hex"));
    }
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 80 }), fc.option(fc.string({ unit: "binary", maxLength: 80 }), { nil: undefined }), (cn, o) => {
        const attrs = o === undefined ? { commonName: cn } : { commonName: cn, organization: o };
        const a = outcome(() => encodeName(attrs).toString("hex"));
        const b = outcome(() => forgeName(attrs).toString("hex"));
        expect(a).toEqual(b);
      }),
      runs(500),
    );
    expect(outcome(() => encodeName({ commonName: "bad \ud800" }))).toEqual(outcome(() => forgeName({ commonName: "bad \ud800" })));
  });

  it("encodes OIDs identically and refuses the same ones", () => {
    const oids = ["2.5.4.3", "1.2.840.10045.4.3.2", "1.2.840.113549.1.1.11", "2.999.1", "0.39", "1.40", "3.1", "1", "", "1.2.4294967296", "2.5.29.x"];
    for (const o of oids) {
      expect(outcome(() => oidToDer(o).toString("hex"))).toEqual(outcome(() => bytes(forge.asn1.oidToDer(o).getBytes()).toString("hex")));
    }
    fc.assert(
      fc.property(fc.array(fc.nat({ max: 2 ** 32 }), { minLength: 2, maxLength: 8 }), (arcs) => {
        const o = arcs.join(".");
        expect(outcome(() => oidToDer(o).toString("hex"))).toEqual(outcome(() => bytes(forge.asn1.oidToDer(o).getBytes()).toString("hex")));
      }),
      runs(500),
    );
  });

  it("reads OIDs identically", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 24 }), (raw) => {
        const b = Buffer.from(raw);
        expect(outcome(() => derToOid(b))).toEqual(outcome(() => forge.asn1.derToOid(b.toString("latin1"))));
      }),
      runs(1000),
    );
  });

  it("writes and reads times identically", () => {
    const date = fc.date({ min: new Date(Date.UTC(1000, 0, 1)), max: new Date(Date.UTC(9999, 11, 31)), noInvalidDate: true });
    fc.assert(
      fc.property(date, (d) => {
        expect(timeText(d, false)).toBe(forge.asn1.dateToUtcTime(d));
        expect(timeText(d, true)).toBe(forge.asn1.dateToGeneralizedTime(d));
      }),
      runs(500),
    );
    const texts = [
      "2501020304Z", "250102030405Z", "9912312359Z", "491231235959Z", "500101000000Z", "250102030405+0130", "250102030405-1145",
      "2501020304+0200", "2501020304-0030", "20250102030405Z", "20250102030405", "20250102030405.123Z", "20250102030405.5",
      "20250102030405+0130", "20250102030405.25-0245", "99991231235959Z", "", "garbage",
    ];
    for (const t of texts) {
      expect(utcTimeToDate(t).getTime()).toEqual(forge.asn1.utcTimeToDate(t).getTime());
      expect(generalizedTimeToDate(t).getTime()).toEqual(forge.asn1.generalizedTimeToDate(t).getTime());
    }
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."0123456789Z+-.'"), maxLength: 22 }), (t) => {
        expect(utcTimeToDate(t).getTime()).toEqual(forge.asn1.utcTimeToDate(t).getTime());
        expect(generalizedTimeToDate(t).getTime()).toEqual(forge.asn1.generalizedTimeToDate(t).getTime());
      }),
      runs(1000),
    );
  });
});
