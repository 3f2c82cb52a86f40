import { caInit, caShow } from "../tls/index.js";

/** `sandbox-egress ca init|show [--ca-dir DIR] [--force]`. */
export async function runCa(sub: "init" | "show", flags: { "ca-dir"?: string; force?: boolean }): Promise<number> {
  const dir = flags["ca-dir"] ?? "./certs";
  try {
    const text = sub === "init" ? await caInit(dir, { force: flags.force === true }) : await caShow(dir);
    process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`sandbox-egress: ${(err as Error).message}\n`);
    return 1;
  }
}
