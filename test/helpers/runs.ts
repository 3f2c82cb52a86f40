/**
 * fast-check parameters for a property: `n` runs in the test suite, ten times as many under `npm run fuzz`
 * (FC_FUZZ=1, fresh seeds), so that a long exploration is one command away without slowing CI.
 */
export function runs(n: number): { numRuns: number } {
  const factor = process.env.FC_FUZZ === "1" ? Number(process.env.FC_FACTOR ?? 10) : 1;
  return { numRuns: Math.max(1, Math.round(n * factor)) };
}
