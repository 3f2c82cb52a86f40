import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { readStat, readStopPending, stopPending } from "../../../src/runtime/local/procfs.js";

// /proc/PID/status lines as Linux 6.x prints them (the masks are 16 hex digits, signal N is bit N-1).
const status = (sigPnd: string, shdPnd: string): string =>
  `Name:\tsh\nState:\tD (disk sleep)\nTgid:\t42\nSigQ:\t1/95000\nSigPnd:\t${sigPnd}\nShdPnd:\t${shdPnd}\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000010002\n`;

describe("stopPending (a SIGSTOP waiting for a task in uninterruptible sleep)", () => {
  it("reads SIGSTOP (19, bit 18 = 0x40000) from the thread or the process-wide pending set", () => {
    expect(stopPending(status("0000000000040000", "0000000000000000"))).toBe(true);
    expect(stopPending(status("0000000000000000", "0000000000040000"))).toBe(true);
    expect(stopPending(status("0000000000000000", "0000000000040100"))).toBe(true);
  });

  it("is false for other pending signals and for none", () => {
    expect(stopPending(status("0000000000000000", "0000000000000000"))).toBe(false);
    // SIGTSTP (20) and SIGCONT (18) are not SIGSTOP.
    expect(stopPending(status("0000000000080000", "0000000000020000"))).toBe(false);
    expect(stopPending("Name:\tsh\n")).toBe(false);
  });

  it("reads a live process: nothing pending while it runs, and a stopped one is T, not pending", async () => {
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      const pid = child.pid!;
      expect(await readStopPending(pid)).toBe(false);
      process.kill(pid, "SIGSTOP");
      let state = "";
      for (let i = 0; i < 100 && state !== "T"; i++) {
        state = (await readStat(pid))?.state ?? "";
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(state).toBe("T");
      expect(await readStopPending(pid)).toBe(false); // delivered: the task stopped
    } finally {
      child.kill("SIGKILL");
    }
  });
});
