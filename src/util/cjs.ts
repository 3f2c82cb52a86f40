import { createRequire } from "node:module";

/**
 * `require` for the CommonJS packages the proxy loads (tldts, pino, prom-client, node-forge, ipaddr.js, undici).
 *
 * Why not `import`: an ESM import of a CommonJS file makes Node run cjs-module-lexer over its source to find the
 * named exports. On tldts's 200 KB bundle that is enough work for V8 to optimise the lexer with TurboFan on a
 * background thread, and the compiler memory left in that thread's malloc arena stays in the process. Loading
 * these five packages with require() took a fresh proxy's idle RSS from 79 to 71 MiB
 * (bench/lib/rss-idle.mjs, median of 7; DESIGN.md "Performance targets": ≤ 60 MiB idle).
 * require() runs the same file without the lexer. Types come from `import type` of the package as before.
 */
export const requireCjs = createRequire(import.meta.url);
