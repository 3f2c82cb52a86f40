/**
 * CIDR parsing and a longest-prefix-match table whose lookup cost does not grow with the number of entries:
 * one hash map per distinct prefix length, keyed by the masked network, probed longest first. At most 33
 * (IPv4) or 129 (IPv6) probes, whatever the rule count (DESIGN.md "Performance targets").
 */
import { canonicalIp, formatIPv4, formatIPv6, IPV4_BITS, IPV6_BITS, parseIp, unmapIPv4, type IpFamily, type ParsedIp } from "./ip.js";

export interface Cidr {
  readonly family: IpFamily;
  /** The network address as an integer (host bits zero). */
  readonly network: bigint;
  readonly prefixLength: number;
  /** Canonical text, e.g. `10.0.0.0/8`, `fc00::/7`. */
  readonly text: string;
}

export type CidrParseResult = { readonly ok: true; readonly cidr: Cidr } | { readonly ok: false; readonly error: string };

const PREFIX_RE = /^(?:0|[1-9][0-9]{0,2})$/;

function bits(family: IpFamily): number {
  return family === 4 ? IPV4_BITS : IPV6_BITS;
}

/** The netmask of a prefix length as an integer of the family's width. */
export function prefixMask(family: IpFamily, prefixLength: number): bigint {
  const width = BigInt(bits(family));
  const all = (1n << width) - 1n;
  return all ^ ((1n << (width - BigInt(prefixLength))) - 1n);
}

function makeCidr(family: IpFamily, network: bigint, prefixLength: number): Cidr {
  const addr = family === 4 ? formatIPv4(network) : formatIPv6(network);
  return Object.freeze({ family, network, prefixLength, text: `${addr}/${prefixLength}` });
}

/**
 * Parse `ADDR/LEN` or a bare address (= /32 or /128). Host bits must be zero: `10.0.0.1/8` is refused rather
 * than widened, because a silently widened allow_cidrs rule would allow more than its author wrote.
 * An IPv4-mapped IPv6 range of length ≥ 96 is rewritten to its IPv4 range, since mapped addresses are judged
 * as their IPv4 (see canonicalIp), and a rule in the mapped space would otherwise never match.
 */
export function parseCidr(s: string): CidrParseResult {
  const shown = JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);
  const slash = s.indexOf("/");
  const addrText = slash < 0 ? s : s.slice(0, slash);
  if (addrText.includes("%")) return { ok: false, error: `${shown} has an IPv6 zone ID, which a range cannot have` };
  const ip = parseIp(addrText);
  if (ip === null) {
    return {
      ok: false,
      error: `${shown} is not a CIDR range; write ADDRESS/LENGTH with a dotted-quad IPv4 (no leading zeros) or an IPv6 address, such as "10.0.0.0/8" or "fc00::/7"`,
    };
  }
  const width = bits(ip.family);
  let len = width;
  if (slash >= 0) {
    const lenText = s.slice(slash + 1);
    if (!PREFIX_RE.test(lenText) || Number(lenText) > width) {
      return { ok: false, error: `${shown} has an invalid prefix length; it must be a decimal number in 0..${width}` };
    }
    len = Number(lenText);
  }
  const network = ip.value & prefixMask(ip.family, len);
  if (network !== ip.value) {
    const whole = makeCidr(ip.family, network, len).text;
    const host = `${addrText}/${width}`;
    return {
      ok: false,
      error: `${shown} has host bits set; write "${whole}" for the whole network or "${host}" for the one address`,
    };
  }
  if (ip.family === 6 && len >= 96) {
    const v4 = unmapIPv4(network);
    if (v4 !== null) return { ok: true, cidr: makeCidr(4, v4, len - 96) };
  }
  return { ok: true, cidr: makeCidr(ip.family, network, len) };
}

export function cidrContains(c: Cidr, ip: ParsedIp): boolean {
  return c.family === ip.family && (ip.value & prefixMask(c.family, c.prefixLength)) === c.network;
}

export class InvalidCidrError extends Error {
  readonly code = "invalid-cidr";
  constructor(readonly input: string, reason: string) {
    super(reason);
    this.name = "InvalidCidrError";
  }
}

export interface CidrMatch<T> {
  readonly cidr: string;
  readonly prefixLength: number;
  readonly value: T;
}

interface FamilyTable<T> {
  /** Distinct prefix lengths present, longest first. */
  lengths: number[];
  masks: Map<number, bigint>;
  byLength: Map<number, Map<bigint, CidrMatch<T>>>;
}

function emptyFamily<T>(): FamilyTable<T> {
  return { lengths: [], masks: new Map(), byLength: new Map() };
}

/**
 * Longest-prefix-match table. Adding the same range twice keeps one entry; `merge` decides its value
 * (default: the first one added stays), so callers can make, say, deny win over allow for an identical range.
 */
export class CidrTable<T> {
  readonly #v4 = emptyFamily<T>();
  readonly #v6 = emptyFamily<T>();
  readonly #merge: (existing: T, incoming: T) => T;
  #size = 0;

  constructor(merge?: (existing: T, incoming: T) => T) {
    this.#merge = merge ?? ((existing) => existing);
  }

  get size(): number {
    return this.#size;
  }

  /** Add a range (text is parsed with parseCidr; invalid text throws InvalidCidrError). */
  add(cidr: string | Cidr, value: T): void {
    let c: Cidr;
    if (typeof cidr === "string") {
      const r = parseCidr(cidr);
      if (!r.ok) throw new InvalidCidrError(cidr, r.error);
      c = r.cidr;
    } else {
      c = cidr;
    }
    const t = c.family === 4 ? this.#v4 : this.#v6;
    let m = t.byLength.get(c.prefixLength);
    if (m === undefined) {
      m = new Map();
      t.byLength.set(c.prefixLength, m);
      t.masks.set(c.prefixLength, prefixMask(c.family, c.prefixLength));
      t.lengths.push(c.prefixLength);
      t.lengths.sort((a, b) => b - a);
    }
    const existing = m.get(c.network);
    if (existing === undefined) {
      this.#size++;
      m.set(c.network, { cidr: c.text, prefixLength: c.prefixLength, value });
    } else {
      m.set(c.network, { ...existing, value: this.#merge(existing.value, value) });
    }
  }

  /**
   * The longest matching range for an address text, or undefined. The text is read as canonicalIp does
   * (strict syntax; IPv4-mapped IPv6 is its IPv4), matching how parseCidr stores mapped ranges.
   */
  lookup(ip: string): CidrMatch<T> | undefined {
    const p = canonicalIp(ip);
    return p === null ? undefined : this.lookupParsed(p);
  }

  lookupParsed(ip: ParsedIp): CidrMatch<T> | undefined {
    const t = ip.family === 4 ? this.#v4 : this.#v6;
    for (const len of t.lengths) {
      const hit = t.byLength.get(len)?.get(ip.value & (t.masks.get(len) ?? 0n));
      if (hit !== undefined) return hit;
    }
    return undefined;
  }
}
