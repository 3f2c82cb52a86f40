import path from "node:path";

/** The tar entry fields the guard looks at (node-tar's ReadEntry has them). */
export interface TarEntryLike {
  readonly path: string;
  readonly type: string;
  readonly linkpath?: string | undefined;
}

export type EntryVerdict =
  | { readonly ok: true; readonly skip: boolean; /** A symlink target to write instead of the archive's. */ readonly linkpath?: string }
  | { readonly ok: false; readonly problem: string };

const ALLOWED_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"]);

/**
 * Judges every entry of a snapshot layer before it is unpacked into a new workspace. The archive is untrusted
 * (a snapshot directory may have been tampered with, or the workspace held anything the sandbox wrote), so the
 * rules are strict: no absolute paths, no `..`, no device nodes or FIFOs, no entry written through a symlink the
 * archive itself created, hard links only to paths inside, symlinks only to targets that stay inside the
 * workspace as the sandbox sees it (relative ones that do not climb out, absolute ones under /workspace, which
 * are rewritten relative).
 */
export class ArchiveGuard {
  private readonly symlinks = new Set<string>();
  readonly problems: string[] = [];

  constructor(private readonly insideRoot = "/workspace") {}

  check(entry: TarEntryLike): EntryVerdict {
    const verdict = this.judge(entry);
    if (!verdict.ok) this.problems.push(verdict.problem);
    return verdict;
  }

  private judge(entry: TarEntryLike): EntryVerdict {
    const raw = entry.path;
    if (raw.includes("\0")) return bad(raw, "has a NUL byte in its path");
    if (raw.startsWith("/")) return bad(raw, "has an absolute path");
    const rel = normalise(raw);
    if (rel === null) return bad(raw, "has '..' in its path");
    if (rel === "") {
      // "./": the workspace root itself; its owner and mode are the driver's to set.
      return entry.type === "Directory" ? { ok: true, skip: true } : bad(raw, "is not a directory but names the workspace root");
    }
    if (!ALLOWED_TYPES.has(entry.type)) return bad(raw, `has unsupported type ${entry.type}`);
    for (const link of this.symlinks) {
      if (rel.startsWith(`${link}/`)) return bad(raw, `would be written through the symbolic link ${link}`);
    }
    if (entry.type === "Link") {
      const target = entry.linkpath ?? "";
      if (target.startsWith("/") || target.includes("\0")) return bad(raw, `is a hard link to ${target}, outside the workspace`);
      const t = normalise(target);
      if (t === null || t === "") return bad(raw, `is a hard link to ${target}, outside the workspace`);
    }
    if (entry.type === "SymbolicLink") {
      const target = entry.linkpath ?? "";
      if (target === "" || target.includes("\0")) return bad(raw, "is a symbolic link without a valid target");
      if (target.startsWith("/")) {
        const abs = path.posix.normalize(target);
        if (abs !== this.insideRoot && !abs.startsWith(`${this.insideRoot}/`)) return bad(raw, `is a symbolic link to ${target}, outside ${this.insideRoot}`);
        // Same file inside the sandbox, written relative: the unpacker (rightly) refuses absolute link targets.
        this.symlinks.add(rel);
        const from = path.posix.dirname(path.posix.join(this.insideRoot, rel));
        return { ok: true, skip: false, linkpath: path.posix.relative(from, abs) || "." };
      } else {
        const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(rel), target));
        if (resolved === ".." || resolved.startsWith("../")) return bad(raw, `is a symbolic link to ${target}, which climbs out of the workspace`);
      }
      this.symlinks.add(rel);
    }
    return { ok: true, skip: false };
  }
}

/** `a/./b/` → `a/b`; null when a `..` segment appears anywhere (never resolved, always refused). */
function normalise(p: string): string | null {
  const parts: string[] = [];
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") return null;
    parts.push(seg);
  }
  return parts.join("/");
}

function bad(p: string, why: string): EntryVerdict {
  return { ok: false, problem: `${JSON.stringify(p)} ${why}` };
}
