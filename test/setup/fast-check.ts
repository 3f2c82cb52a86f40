import fc from "fast-check";

// Property tests run on a fixed seed so that CI is reproducible: a counterexample found once is found on every
// run, on every machine. `npm run fuzz` explores with fresh seeds and ten times the runs (see test/helpers/runs.ts);
// a failure prints its seed, and `FC_SEED=<seed> npx vitest run <file>` replays it.
const fuzzing = process.env.FC_FUZZ === "1";
const fixed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : fuzzing ? undefined : 0x5a4d;
if (fixed !== undefined && !Number.isInteger(fixed)) throw new Error(`FC_SEED must be an integer, got ${process.env.FC_SEED}`);
fc.configureGlobal(fixed !== undefined ? { seed: fixed } : {});
