import { readFile } from "node:fs/promises";
import { compilePolicy } from "../policy/compile.js";
import { decideResolving } from "../policy/decide.js";
import { parsePolicy } from "../policy/schema.js";
import { hostString, parseHostPort } from "../net/hostport.js";
import { Resolver } from "../net/resolve.js";
import { resolveTransforms } from "../live/secrets.js";
import { describeJsonError } from "../util/json-error.js";

async function load(file: string): Promise<{ ok: true; value: unknown } | { ok: false; line: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    return { ok: false, line: `(file): cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})` };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { ok: false, line: `(file): ${describeJsonError(err, text)}` };
  }
}

/** `policy check FILE`: exit 0 when valid; else exit 1 and one `FIELD: WHY` line per problem. */
export async function runPolicyCheck(file: string): Promise<number> {
  const loaded = await load(file);
  if (!loaded.ok) {
    process.stdout.write(`${loaded.line}\n`);
    return 1;
  }
  const parsed = parsePolicy(loaded.value);
  const errors = parsed.ok ? [] : [...parsed.errors];
  if (parsed.ok) {
    // References are checked as the proxy would resolve them, so a missing secret is caught before deploy.
    const secrets = resolveTransforms(parsed.policy);
    if (!secrets.ok) errors.push(...secrets.errors);
  }
  if (errors.length === 0) {
    process.stdout.write(`${file}: valid\n`);
    return 0;
  }
  for (const e of errors) process.stdout.write(`${e.field}: ${e.error}\n`);
  return 1;
}

/** `policy explain FILE HOST[:PORT]`: the Decision a CONNECT would get, as JSON, without dialling. */
export async function runPolicyExplain(
  file: string,
  target: string,
  flags: { hosts?: string; "dns-server"?: string; "internal-allow"?: string[] },
): Promise<number> {
  const loaded = await load(file);
  if (!loaded.ok) {
    process.stderr.write(`${loaded.line}\n`);
    return 1;
  }
  const parsed = parsePolicy(loaded.value);
  if (!parsed.ok) {
    for (const e of parsed.errors) process.stderr.write(`${e.field}: ${e.error}\n`);
    return 1;
  }
  const t = parseHostPort(target, 443);
  if (!t.ok) {
    process.stdout.write(`${JSON.stringify({ allowed: false, reason: "invalid-target", rule: null, host: target, error: t.error })}\n`);
    return 1;
  }
  const compiled = compilePolicy(parsed.policy, { internalAllow: flags["internal-allow"] ?? [] });
  const resolver = new Resolver({ hostsFile: flags.hosts, dnsServer: flags["dns-server"] });
  try {
    const d = await decideResolving(compiled, t.host, t.port, (name) => resolver.resolve(name));
    process.stdout.write(`${JSON.stringify({ ...d, host: hostString(t.host) }, null, 2)}\n`);
    return 0;
  } finally {
    resolver.close();
  }
}
