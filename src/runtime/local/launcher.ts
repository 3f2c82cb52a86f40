import { existsSync } from "node:fs";

/**
 * The first thing every process the driver starts runs (proxy, bwrap, exec's nsenter): a tiny bash that
 *   1. closes every inherited file descriptor from `keepFds` up (node only marks its own fds close-on-exec;
 *      whatever the control module itself inherited, e.g. a supervisor's pipe, must not leak into a sandbox or
 *      be held open for ever by a detached proxy), then
 *   2. writes its own pid into the sandbox's cgroup.procs, so that the kernel puts every descendant in the
 *      group before a single sandbox instruction runs (pause then freezes all of them), then
 *   3. execs the real program (same pid).
 * bash, not sh: dash cannot name file descriptors above 9 in a redirection.
 */
const SCRIPT = [
  'k=$1; cg=$2; shift 2',
  'for f in /proc/self/fd/*; do n=${f##*/}; if [ "$n" -ge "$k" ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null; fi; done',
  'if [ -n "$cg" ]; then echo $$ > "$cg" || exit 125; fi',
  'exec "$@"',
].join("\n");

const BASH = ["/bin/bash", "/usr/bin/bash"].find((p) => existsSync(p));

export function launcherArgv(argv: readonly string[], opts: { procsFile: string | null; keepFds: number }): string[] {
  if (BASH) return [BASH, "-c", SCRIPT, "sandbox-egress-launch", String(opts.keepFds), opts.procsFile ?? "", ...argv];
  // Without bash, fds are not closed (dash cannot), but the cgroup is still joined first.
  return ["/bin/sh", "-c", 'cg=$0; if [ -n "$cg" ]; then echo $$ > "$cg" || exit 125; fi; exec "$@"', opts.procsFile ?? "", ...argv];
}
