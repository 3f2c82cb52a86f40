/**
 * An index of domain patterns whose cost per lookup depends on the host's label count, not on the number of
 * patterns: exact names and `*.` suffixes are hash lookups over the host's label suffixes; in-label globs are
 * grouped by (label count, fixed suffix), so only globs that could match are run.
 */
import type { DomainPattern, PatternKind } from "./pattern.js";

/** One group of rules sharing a pattern's host part; values are kept per port (null = any port). */
interface Slot<T> {
  readonly kind: PatternKind;
  readonly pinned: number;
  any: T | undefined;
  byPort: Map<number, T> | undefined;
}

interface GlobSlot<T> extends Slot<T> {
  readonly regex: RegExp;
}

/**
 * The globs sharing a (label count, fixed suffix). Within it, each glob is filed under the literal text before
 * the first `*` of its last wildcard label (or, when that is empty, the text after its last `*`), so a lookup
 * probes a few label prefixes and suffixes instead of running every glob: 1,000 globs `api{n}-*.example.org`
 * cost the same as one.
 */
interface GlobGroup<T> {
  readonly byText: Map<string, GlobSlot<T>>;
  readonly byPrefix: Map<string, GlobSlot<T>[]>;
  readonly bySuffix: Map<string, GlobSlot<T>[]>;
  /** Distinct key lengths present, so that only those are probed. */
  readonly prefixLengths: Set<number>;
  readonly suffixLengths: Set<number>;
  /** Labels that are only stars ("**"): no literal text to index by. */
  readonly unindexed: GlobSlot<T>[];
}

function fileGlob<T>(group: GlobGroup<T>, label: string, slot: GlobSlot<T>): void {
  const prefix = label.slice(0, label.indexOf("*"));
  const suffix = label.slice(label.lastIndexOf("*") + 1);
  const push = (m: Map<string, GlobSlot<T>[]>, key: string): void => {
    const list = m.get(key);
    if (list === undefined) m.set(key, [slot]);
    else list.push(slot);
  };
  if (prefix !== "") {
    push(group.byPrefix, prefix);
    group.prefixLengths.add(prefix.length);
  } else if (suffix !== "") {
    push(group.bySuffix, suffix);
    group.suffixLengths.add(suffix.length);
  } else {
    group.unindexed.push(slot);
  }
}

export interface PatternHit<T> {
  readonly kind: PatternKind;
  readonly pinned: number;
  readonly hasPort: boolean;
  readonly value: T;
}

const KIND_RANK: Record<PatternKind, number> = { wild: 0, glob: 1, exact: 2 };

/**
 * Compare two hits by DESIGN.md specificity: pinned labels, then exact > in-label glob > leading `*.`, then a
 * port beats no port. 0 means a tie (which callers resolve to deny).
 */
export function compareSpecificity(a: PatternHit<unknown>, b: PatternHit<unknown>): number {
  return a.pinned - b.pinned || KIND_RANK[a.kind] - KIND_RANK[b.kind] || Number(a.hasPort) - Number(b.hasPort);
}

export class PatternIndex<T> {
  readonly #exact = new Map<string, Slot<T>>();
  readonly #wild = new Map<string, Slot<T>>();
  /** Key `${labelCount}|${fixedSuffix}` → the globs that could match such a host. */
  readonly #globs = new Map<string, GlobGroup<T>>();
  readonly #merge: (existing: T, incoming: T) => T;

  /** `merge` combines values of rules with the same host part and port (e.g. deny wins, or lists concatenate). */
  constructor(merge: (existing: T, incoming: T) => T) {
    this.#merge = merge;
  }

  add(p: DomainPattern, value: T): void {
    let slot: Slot<T> | undefined;
    const host = p.labels.join(".");
    if (p.kind === "exact") {
      slot = this.#exact.get(host);
      if (slot === undefined) this.#exact.set(host, (slot = { kind: p.kind, pinned: p.pinned, any: undefined, byPort: undefined }));
    } else if (p.kind === "wild") {
      slot = this.#wild.get(host);
      if (slot === undefined) this.#wild.set(host, (slot = { kind: p.kind, pinned: p.pinned, any: undefined, byPort: undefined }));
    } else {
      const key = `${p.labels.length}|${p.fixedSuffix}`;
      let group = this.#globs.get(key);
      if (group === undefined) {
        group = { byText: new Map(), byPrefix: new Map(), bySuffix: new Map(), prefixLengths: new Set(), suffixLengths: new Set(), unindexed: [] };
        this.#globs.set(key, group);
      }
      let g = group.byText.get(host);
      if (g === undefined) {
        if (p.regex === null) throw new TypeError("glob pattern without a regex");
        g = { kind: p.kind, pinned: p.pinned, regex: p.regex, any: undefined, byPort: undefined };
        group.byText.set(host, g);
        const lastGlobLabel = p.labels[p.labels.length - 1 - (p.fixedSuffix === "" ? 0 : p.fixedSuffix.split(".").length)] ?? "";
        fileGlob(group, lastGlobLabel, g);
      }
      slot = g;
    }
    if (p.port === null) {
      slot.any = slot.any === undefined ? value : this.#merge(slot.any, value);
    } else {
      slot.byPort ??= new Map();
      const old = slot.byPort.get(p.port);
      slot.byPort.set(p.port, old === undefined ? value : this.#merge(old, value));
    }
  }

  /** Every rule group matching a canonical host name at a port (the name must be normalised already). */
  match(name: string, port: number): PatternHit<T>[] {
    const hits: PatternHit<T>[] = [];
    const collect = (slot: Slot<T> | undefined): void => {
      if (slot === undefined) return;
      if (slot.any !== undefined) hits.push({ kind: slot.kind, pinned: slot.pinned, hasPort: false, value: slot.any });
      const p = slot.byPort?.get(port);
      if (p !== undefined) hits.push({ kind: slot.kind, pinned: slot.pinned, hasPort: true, value: p });
    };
    collect(this.#exact.get(name));
    if (this.#wild.size === 0 && this.#globs.size === 0) return hits;
    let labelCount = 1;
    for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) === 46) labelCount++;
    const tryGlob = (g: GlobSlot<T>): void => {
      if (g.regex.test(name)) collect(g);
    };
    // Every proper suffix that starts after a dot: `*.example.com` is looked up as "example.com", never for
    // the apex itself, which is why the walk starts after the first label.
    let labelStart = 0;
    for (let dot = name.indexOf("."); dot >= 0; labelStart = dot + 1, dot = name.indexOf(".", dot + 1)) {
      const suffix = name.slice(dot + 1);
      collect(this.#wild.get(suffix));
      const group = this.#globs.get(`${labelCount}|${suffix}`);
      if (group === undefined) continue;
      // The host label that the glob's last wildcard label must match.
      const label = name.slice(labelStart, dot);
      for (const n of group.prefixLengths) if (n <= label.length) group.byPrefix.get(label.slice(0, n))?.forEach(tryGlob);
      for (const n of group.suffixLengths) if (n <= label.length) group.bySuffix.get(label.slice(label.length - n))?.forEach(tryGlob);
      group.unindexed.forEach(tryGlob);
    }
    return hits;
  }
}
