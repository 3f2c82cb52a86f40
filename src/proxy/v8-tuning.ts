import { setFlagsFromString } from "node:v8";

/**
 * V8 settings for a proxy process. A sidecar runs next to every sandbox and mostly waits, so its resident memory
 * is paid many times over (DESIGN.md "Performance targets": ≤ 60 MiB idle). Measured with
 * bench/lib/rss-idle.mjs (median of 3, existing CA, default policy): 70.0 MiB with neither setting below,
 * 65.1 with the first, 60.3 with both; the http bench showed no change in requests/s (9,112 vs 9,148).
 */

/**
 * Flags V8 reads only when the process starts, so whatever starts a proxy passes them: the local runtime, the
 * Dockerfile, bin/sandbox-egress.js's shebang, the bench and the tests.
 *
 * --max-semi-space-size=1: start-up (loading ~150 modules, nearly everything surviving) grows the young
 * generation to 16 MiB, which V8 gives back only after ~10 s idle; a proxy's per-request garbage is small and
 * short-lived, and 1 MiB semispaces cost no measurable throughput while keeping those pages out of the RSS.
 */
export const PROXY_NODE_FLAGS: readonly string[] = Object.freeze(["--max-semi-space-size=1"]);

/**
 * Keep TurboFan off while the proxy loads. The functions that get hot during start-up are the module loader's
 * (path normalisation, URL resolution), which never run again; optimising them maps ~4 MiB more of the node
 * binary's compiler code and leaves compiler memory in the worker threads' malloc arenas. Re-enabled
 * (resumeOptimisingCompiler) the moment the proxy listens, before the first request: the request path is
 * optimised exactly as without this. V8 reads the flag at each tier-up decision, so turning it back on works.
 */
export function deferOptimisingCompiler(): void {
  setFlagsFromString("--no-opt");
}

export function resumeOptimisingCompiler(): void {
  setFlagsFromString("--opt");
}
