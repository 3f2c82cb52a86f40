import { mkdtemp, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

/** hosts(5) text for `entries` (name → address or addresses), one `ADDRESS NAME` line per address. */
export function formatHosts(entries: Record<string, string | string[]>): string {
  const lines = ["# written by test/helpers/hosts-file.ts"];
  for (const [name, addresses] of Object.entries(entries)) {
    for (const address of typeof addresses === "string" ? [addresses] : addresses) lines.push(`${address}\t${name}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Write a hosts(5) file and return its path: a fresh temp file, or `path` replaced atomically (write + rename, as
 * editors and ConfigMap updates do) so that a watcher never sees a half-written file.
 */
export async function writeHostsFile(entries: Record<string, string | string[]>, path?: string): Promise<string> {
  const target = path ?? join(await mkdtemp(join(tmpdir(), "sandbox-egress-hosts-")), "hosts");
  const temp = join(dirname(target), `.hosts-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  await writeFile(temp, formatHosts(entries));
  await rename(temp, target);
  return target;
}
