import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";

/** Times the proxy's main thread went to sleep and was woken again (its voluntary context switches). */
function wakeups(pid: number): number {
  const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no voluntary_ctxt_switches for ${pid}`);
  return Number(m[1]);
}

// A sidecar runs next to every sandbox and mostly waits: it must not poll. Its timers are the HTTP servers'
// 1 s connection checks (the header-timeout guard) and the 1 s event-loop delay sample, so ~4 wake-ups a second.
// prom-client's default 10 ms sampling made it ~100 a second (1.4 % of a core per idle proxy); 60 over 3 s
// leaves room for stray timers and catches a return to polling.
describe.skipIf(process.platform !== "linux")("an idle proxy", () => {
  let proxy: RunningProxy;
  beforeAll(async () => {
    proxy = await startProxy();
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it("sleeps: its main thread wakes only for its few 1 s timers", async () => {
    await new Promise((r) => setTimeout(r, 1_500)); // start-up work (module loading, first GC) settles
    const pid = proxy.proc.pid!;
    const before = wakeups(pid);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(wakeups(pid) - before).toBeLessThan(60);
  });
});
