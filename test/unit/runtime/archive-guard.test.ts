import { describe, expect, it } from "vitest";
import { ArchiveGuard, type EntryVerdict, type TarEntryLike } from "../../../src/runtime/local/archive-guard.js";

const file = (p: string): TarEntryLike => ({ path: p, type: "File" });
const dir = (p: string): TarEntryLike => ({ path: p, type: "Directory" });
const symlink = (p: string, linkpath: string): TarEntryLike => ({ path: p, type: "SymbolicLink", linkpath });
const hardlink = (p: string, linkpath: string): TarEntryLike => ({ path: p, type: "Link", linkpath });

/** The verdict on the last entry, after the guard has seen the ones before it (in archive order). */
function judge(...entries: TarEntryLike[]): EntryVerdict {
  const guard = new ArchiveGuard();
  let last: EntryVerdict = { ok: true, skip: true };
  for (const e of entries) last = guard.check(e);
  return last;
}

const ok = { ok: true, skip: false };
const refused = (pattern: RegExp) => ({ ok: false, problem: expect.stringMatching(pattern) as unknown });

describe("ArchiveGuard: symbolic links to absolute targets are restored as they are", () => {
  it.each([
    ["a venv interpreter", "venv/bin/python", "/usr/bin/python3"],
    ["a directory of the read-only root", "etc", "/etc"],
    ["the root itself", "root", "/"],
    ["a path under /workspace", "abs", "/workspace/dir/a.txt"],
    ["/workspace itself", "ws", "/workspace"],
    ["a host path next to the sandbox's own files", "tok", "/var/lib/sandbox-egress/sandboxes/x/admin-token"],
    ["a non-normalised absolute path", "odd", "/usr//lib/../bin/./python3"],
  ])("keeps a link to %s, with no rewritten target", (_what, p, target) => {
    const verdict = judge(dir("venv/"), dir("venv/bin/"), symlink(p, target));
    // Exactly { ok, skip }: no replacement link text (the unpacker writes the archive's, byte for byte).
    expect(verdict).toStrictEqual(ok);
  });

  it("keeps relative links that stay inside, including links to links (python3 -> python -> /usr/bin/python3)", () => {
    const guard = new ArchiveGuard();
    for (const e of [
      dir("venv/"),
      dir("venv/bin/"),
      dir("venv/lib/"),
      symlink("venv/bin/python", "/usr/bin/python3"),
      symlink("venv/bin/python3", "python"),
      symlink("venv/bin/python3.11", "python"),
      symlink("venv/lib64", "lib"),
      symlink("venv/bin/up", "../lib"),
      symlink("top", "venv/bin/python3"),
      symlink("self", "."),
    ]) {
      expect(guard.check(e)).toStrictEqual(ok);
    }
    expect(guard.problems).toEqual([]);
  });

  it("refuses links without a target or with a NUL byte in it", () => {
    expect(judge(symlink("l", ""))).toEqual(refused(/without a valid target/));
    expect(judge(symlink("l", "/usr/bin\0/python3"))).toEqual(refused(/without a valid target/));
  });
});

describe("ArchiveGuard: nothing is written through a link the archive made, whatever its target", () => {
  it.each([
    ["a file", [symlink("etc", "/etc"), file("etc/passwd")], /written through the symbolic link etc/],
    ["a directory", [symlink("etc", "/etc"), dir("etc/cron.d/")], /written through the symbolic link etc/],
    ["a deeper file", [symlink("usr", "/usr"), file("usr/local/bin/evil")], /written through the symbolic link usr/],
    ["a file, via a non-normalised entry path", [symlink("etc", "/etc"), file("./etc//passwd")], /written through the symbolic link etc/],
    ["a symlink", [symlink("bin", "/usr/bin"), symlink("bin/python3", "/tmp/evil")], /written through the symbolic link bin/],
    ["a hard link", [dir("d/"), file("d/f"), symlink("etc", "/etc"), hardlink("etc/shadow", "d/f")], /written through the symbolic link etc/],
    ["a file, via a nested link", [dir("venv/"), symlink("venv/bin", "/usr/bin"), file("venv/bin/python3")], /written through the symbolic link venv\/bin/],
    ["a file, via a relative link", [dir("sub/"), symlink("ln", "sub"), file("ln/file")], /written through the symbolic link ln/],
  ] as [string, TarEntryLike[], RegExp][])("refuses %s under an archive symlink", (_what, entries, pattern) => {
    expect(judge(...entries)).toEqual(refused(pattern));
  });

  it("refuses hard links whose target is an archive symlink or lies beneath one (link(2) would resolve it)", () => {
    expect(judge(symlink("etc", "/etc"), hardlink("h", "etc/shadow"))).toEqual(refused(/hard link to etc\/shadow, through the symbolic link etc/));
    expect(judge(symlink("py", "/usr/bin/python3"), hardlink("h", "py"))).toEqual(refused(/through the symbolic link py/));
    expect(judge(symlink("py", "/usr/bin/python3"), hardlink("h", "./py"))).toEqual(refused(/through the symbolic link py/));
  });

  it("still allows a link's name to be reused by a later entry at the same path, and siblings with a common prefix", () => {
    expect(judge(symlink("etc", "/etc"), file("etc"))).toStrictEqual(ok);
    expect(judge(symlink("etc", "/etc"), file("etcetera"))).toStrictEqual(ok);
    expect(judge(symlink("etc", "/etc"), dir("etc.d/"), file("etc.d/x"))).toStrictEqual(ok);
    expect(judge(file("f"), hardlink("h", "f"))).toStrictEqual(ok);
  });
});

describe("ArchiveGuard: the other rules are unchanged", () => {
  it.each([
    ["an absolute entry path", file("/etc/evil"), /absolute path/],
    ["a '..' entry path", file("../escape"), /'\.\.'/],
    ["a '..' in the middle", file("a/../../escape"), /'\.\.'/],
    ["a harmless-looking '..'", file("a/../b"), /'\.\.'/],
    ["a NUL byte in the path", file("a\0b"), /NUL byte/],
    ["a device node", { path: "dev", type: "CharacterDevice" }, /unsupported type CharacterDevice/],
    ["a block device", { path: "sda", type: "BlockDevice" }, /unsupported type BlockDevice/],
    ["a FIFO", { path: "fifo", type: "FIFO" }, /unsupported type FIFO/],
    ["a file that names the workspace root", file("./"), /names the workspace root/],
    ["a hard link out of the workspace", hardlink("h", "../admin-token"), /hard link/],
    ["a hard link to an absolute path", hardlink("h", "/etc/shadow"), /hard link to \/etc\/shadow, outside/],
    ["a hard link to the workspace root", hardlink("h", "."), /hard link/],
    ["a relative symlink that climbs out", symlink("d/up", "../../admin-token"), /climbs out of the workspace/],
    ["a relative symlink to the workspace's parent", symlink("up", ".."), /climbs out of the workspace/],
  ] as [string, TarEntryLike, RegExp][])("refuses %s", (_what, entry, pattern) => {
    expect(judge(entry)).toEqual(refused(pattern));
  });

  it("skips the workspace root directory entry (the driver sets its owner and mode)", () => {
    expect(judge(dir("./"))).toStrictEqual({ ok: true, skip: true });
    expect(judge(dir("."))).toStrictEqual({ ok: true, skip: true });
  });

  it("collects every problem, in archive order, and keeps judging after one", () => {
    const guard = new ArchiveGuard();
    guard.check(file("/abs"));
    expect(guard.check(file("fine"))).toStrictEqual(ok);
    guard.check(symlink("etc", "/etc"));
    guard.check(file("etc/passwd"));
    expect(guard.problems).toEqual(['"/abs" has an absolute path', '"etc/passwd" would be written through the symbolic link etc']);
  });
});
