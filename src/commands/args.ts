import { readFileSync } from "node:fs";

/** A command-line mistake: printed with the usage text, exit code 2. */
export class UsageError extends Error {}

/** A secret from FILE (trailing newline dropped) or from an environment variable. */
export function readSecret(file: string | undefined, envName: string): string | undefined {
  if (file) {
    const v = readFileSync(file, "utf8").replace(/\r?\n$/, "");
    if (!v) throw new UsageError(`${file} is empty; put the token in it`);
    return v;
  }
  const env = process.env[envName];
  return env ? env : undefined;
}

/** A positive integer flag, with the flag's name in the error. */
export function intFlag(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}
