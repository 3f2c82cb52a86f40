import path from "node:path";

/** The tar entry fields the guard looks at (node-tar's ReadEntry has them). */
export interface TarEntryLike {
  readonly path: string;
  readonly type: string;
  readonly linkpath?: string | undefined;
}

export type EntryVerdict =
  | { readonly ok: true; readonly skip: boolean }
  | { readonly ok: false; readonly problem: string };

const ALLOWED_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"]);

/**
 * Judges every entry of a snapshot layer before it is unpacked into a new workspace. The archive is untrusted
 * (a snapshot directory may have been tampered with, or the workspace held anything the sandbox wrote), so the
 * rules for what gets WRITTEN are strict: no absolute entry paths, no `..` in entry paths, no device nodes or
 * FIFOs, no entry written through (or hard-linked through) a symlink the archive itself created, hard links only
 * to paths inside.
 *
 * Symbolic links are judged by what they are: text that only the sandbox ever resolves. A link to any absolute
 * target is restored with that exact text (`venv/bin/python -> /usr/bin/python3`, links into the read-only host
 * root, `/workspace/...`): the sandbox can create such links in its live workspace anyway, so refusing them at
 * restore adds no safety. What keeps the host safe is that host-side code never follows a link in a workspace:
 * unpackSnapshot creates every link with a dangling placeholder target while entries are written (node-tar's
 * mkdir and hard-link checks refuse to pass through any existing symlink, and a file replacing a link unlinks it
 * first), and puts the real text in place afterwards with symlink(2) + rename(2), which never follow it; the
 * snapshot writer stores links as links; teardown removes them without following; the driver chowns only the
 * workspace directory it created itself.
 *
 * Relative links that climb out of the workspace (`../admin-token`) stay refused. From inside they would be no
 * worse than an absolute link (the workspace is mounted at /workspace, so they would point into the read-only
 * root), but on the host they would name the sandbox's own private files next to the workspace; no real
 * workspace needs one, and the links that reach outside are then the ones that say so in their text. The check
 * is lexical (a chain of links can still climb), which is why it is hygiene and not the security boundary.
 */
export class ArchiveGuard {
  private readonly symlinks = new Set<string>();
  readonly problems: string[] = [];

  check(entry: TarEntryLike): EntryVerdict {
    const verdict = this.judge(entry);
    if (!verdict.ok) this.problems.push(verdict.problem);
    return verdict;
  }

  /** The archive symlink that `rel` is, or lies beneath (so that writing `rel` would go through it); else null. */
  private throughSymlink(rel: string, includingItself: boolean): string | null {
    for (const link of this.symlinks) {
      if (rel.startsWith(`${link}/`) || (includingItself && rel === link)) return link;
    }
    return null;
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
    const via = this.throughSymlink(rel, false);
    if (via !== null) return bad(raw, `would be written through the symbolic link ${via}`);
    if (entry.type === "Link") {
      const target = entry.linkpath ?? "";
      if (target.startsWith("/") || target.includes("\0")) return bad(raw, `is a hard link to ${target}, outside the workspace`);
      const t = normalise(target);
      if (t === null || t === "") return bad(raw, `is a hard link to ${target}, outside the workspace`);
      // link(2) resolves every component but the last, and a hard link to a symlink is one more symlink.
      const through = this.throughSymlink(t, true);
      if (through !== null) return bad(raw, `is a hard link to ${target}, through the symbolic link ${through}`);
    }
    if (entry.type === "SymbolicLink") {
      const target = entry.linkpath ?? "";
      if (target === "" || target.includes("\0")) return bad(raw, "is a symbolic link without a valid target");
      if (!target.startsWith("/")) {
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
