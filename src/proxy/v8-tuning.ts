import { setFlagsFromString } from "node:v8";

/**
 * Keep TurboFan off while the proxy loads. A sidecar runs next to every sandbox and mostly waits, so its resident
 * memory is paid many times over (DESIGN.md "Performance targets": ≤ 60 MiB idle). The functions that get hot
 * during start-up are the module loader's (path normalisation, URL resolution), which never run again;
 * optimising them maps ~4 MiB more of the node binary's compiler code and leaves compiler memory in the worker
 * threads' malloc arenas. Measured with bench/lib/rss-idle.mjs (median of 3, 2 s after start): 69.1 → 64.6 MiB.
 *
 * Re-enabled (resumeOptimisingCompiler) the moment the proxy listens, before the first request: the request path
 * is optimised exactly as without this (V8 reads the flag at each tier-up decision; --trace-opt shows the
 * forwarding functions optimised under load, and CPU per request is unchanged).
 *
 * Tried and rejected: --max-semi-space-size=1 took another 5 MiB off a fresh proxy but cost ~15 % CPU per
 * plain-http request (GC 7.5 % of busy time instead of 2 %); V8 returns the young generation that start-up grew
 * by itself once the proxy has been idle ~10 s, which is what the bench's settled idle figure shows.
 */
export function deferOptimisingCompiler(): void {
  setFlagsFromString("--no-opt");
}

export function resumeOptimisingCompiler(): void {
  setFlagsFromString("--opt");
}
