import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/setup/fast-check.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests start real listeners and child processes; two cores are shared with them.
    pool: "forks",
    maxWorkers: 2,
  },
});
