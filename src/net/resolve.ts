/**
 * Name resolution for the proxy: a hosts(5) override file first, then either one configured DNS server or the
 * system resolver. The policy judges every address this returns, and the proxy dials only judged addresses, so this
 * module has no security decision of its own; it only has to return what the name resolves to, canonically.
 *
 * No cache here, on purpose: each CONNECT resolves once, is judged on that answer and dials that answer, so a
 * cache would buy little and would let a stale (or rebinding) answer outlive its TTL. Node's c-ares resolver keeps
 * no query cache either; dns.lookup is as cached as the OS makes it (nscd, systemd-resolved).
 */
import dns from "node:dns";
import { readFileSync, unwatchFile, watchFile, type StatsListener } from "node:fs";
import { readFile } from "node:fs/promises";
import net from "node:net";

export type ResolveErrorCode = "dns-failed" | "upstream-timeout";

/** A failed resolution. The message may name the host, never an address (CONTRACT.md "Proxy behaviour"). */
export class ResolveError extends Error {
  readonly code: ResolveErrorCode;
  constructor(code: ResolveErrorCode, host: string, options?: { cause?: unknown }) {
    super(
      code === "upstream-timeout" ? `Resolving ${host} timed out.` : `The name ${host} does not resolve.`,
      options,
    );
    this.name = "ResolveError";
    this.code = code;
  }
}

export interface ResolverOptions {
  /** hosts(5)-format file consulted before DNS; reloaded when it changes. */
  hostsFile?: string;
  /** DNS server as HOST:PORT (IPv6 in brackets); without it the system resolver (getaddrinfo) is used. */
  dnsServer?: string;
  /** Deadline for one resolve() in ms, over every query it makes. Default 5000. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5000;
/** stat() polling interval for the hosts file. Polling, not fs.watch: it survives atomic renames and symlink swaps (ConfigMaps). */
const HOSTS_POLL_MS = 500;

/**
 * Canonical text of an IP address (IPv4 dotted quad, IPv6 lower-case RFC 5952 compressed), or null when `text`
 * is not a plain address. Zone IDs are refused (DESIGN.md "Names"). IPv4-mapped IPv6 stays IPv6: the classifier
 * judges it by its embedded IPv4, and the dialler must dial exactly the string that was judged.
 */
export function canonicalAddress(text: string): string | null {
  if (text.includes("%")) return null;
  const family = net.isIP(text);
  if (family === 4) return text;
  if (family !== 6) return null;
  // The WHATWG URL serialiser implements RFC 5952 compression; cheaper to reuse than to reimplement.
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

/**
 * Parse hosts(5) text into name → addresses. `#` starts a comment; each line is an address followed by one or
 * more names (canonical name and aliases, all treated alike). A name on several lines collects every address in
 * file order (so `127.0.0.1 x` and `::1 x` give both families, as getaddrinfo does). Lines whose address is not
 * a plain IPv4/IPv6 address are ignored, as glibc ignores them.
 */
export function parseHosts(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const rawLine of text.split(/\r?\n/)) {
    const hash = rawLine.indexOf("#");
    const fields = (hash === -1 ? rawLine : rawLine.slice(0, hash)).split(/[ \t]+/).filter((f) => f !== "");
    const [addressField, ...names] = fields;
    if (addressField === undefined || names.length === 0) continue;
    const address = canonicalAddress(addressField);
    if (address === null) continue;
    for (const rawName of names) {
      const name = normaliseName(rawName);
      if (name === "") continue;
      const list = map.get(name);
      if (list === undefined) map.set(name, [address]);
      else if (!list.includes(address)) list.push(address);
    }
  }
  return map;
}

function normaliseName(name: string): string {
  return name.toLowerCase().replace(/\.+$/, "");
}

/**
 * Resolves names to canonical, de-duplicated addresses. Order: hosts-file order for overridden names; A answers
 * before AAAA answers with `dnsServer`; the system resolver's own order otherwise (verbatim, so the result follows
 * the OS's RFC 6724 sorting and /etc/gai.conf rather than Node's).
 */
export class Resolver {
  private readonly hostsFile: string | undefined;
  private readonly timeoutMs: number;
  private readonly dns: dns.promises.Resolver | undefined;
  private hosts = new Map<string, string[]>();
  /** Guards against an older, slower reload overwriting a newer one. */
  private reloadGeneration = 0;
  private readonly onHostsChange: StatsListener | undefined;

  constructor(opts: ResolverOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) throw new RangeError("timeoutMs must be a positive number");

    if (opts.dnsServer !== undefined) {
      // c-ares doubles the per-try timeout on each retry (1x + 2x), so a third of the budget per try lets two tries
      // fit in it; the deadline in resolve() bounds the total anyway. Two tries survive one lost UDP datagram.
      this.dns = new dns.promises.Resolver({ timeout: Math.max(1, Math.floor(this.timeoutMs / 3)), tries: 2 });
      this.dns.setServers([opts.dnsServer]); // throws on a malformed HOST:PORT: a configuration error, at start
    }

    this.hostsFile = opts.hostsFile;
    if (this.hostsFile !== undefined) {
      // Read synchronously once so that the first request already sees the overrides; an unreadable file at
      // start is a configuration error and throws here, where the CLI reports it.
      this.hosts = parseHosts(readFileSync(this.hostsFile, "utf8"));
      const path = this.hostsFile;
      this.onHostsChange = (curr, prev) => {
        if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
        void this.reloadHosts(path);
      };
      // persistent: false = unref'd; the watcher never keeps the process alive.
      watchFile(path, { interval: HOSTS_POLL_MS, persistent: false }, this.onHostsChange);
    }
  }

  /** `name` is already normalised (lower-case A-label, no trailing dot). Never returns an empty list. */
  async resolve(name: string): Promise<string[]> {
    // An IP literal is itself (DESIGN.md step 3); the caller normally never asks, but DNS must not be asked either.
    const literal = canonicalAddress(name);
    if (literal !== null) return [literal];
    // Normalised again so that a caller's trailing dot or upper case cannot bypass a hosts-file override.
    name = normaliseName(name);
    const overridden = this.hosts.get(name);
    if (overridden !== undefined) return [...overridden];
    const addresses = this.dns !== undefined ? await this.queryServer(this.dns, name) : await this.lookupSystem(name);
    const unique: string[] = [];
    for (const raw of addresses) {
      const address = canonicalAddress(raw);
      if (address !== null && !unique.includes(address)) unique.push(address);
    }
    if (unique.length === 0) throw new ResolveError("dns-failed", name);
    return unique;
  }

  /** Stops watching the hosts file and cancels queries in flight (they reject with dns-failed). */
  close(): void {
    if (this.hostsFile !== undefined && this.onHostsChange !== undefined) unwatchFile(this.hostsFile, this.onHostsChange);
    this.reloadGeneration++;
    this.dns?.cancel();
  }

  private async reloadHosts(path: string): Promise<void> {
    const generation = ++this.reloadGeneration;
    try {
      const parsed = parseHosts(await readFile(path, "utf8"));
      if (generation === this.reloadGeneration) this.hosts = parsed;
    } catch {
      // Deleted, unreadable, mid-swap: keep the last good map rather than dropping every override.
    }
  }

  /** A and AAAA in parallel; a family that fails is simply absent unless both fail. */
  private async queryServer(resolver: dns.promises.Resolver, name: string): Promise<string[]> {
    const [a, aaaa] = await Promise.allSettled([
      withDeadline(resolver.resolve4(name), this.timeoutMs),
      withDeadline(resolver.resolve6(name), this.timeoutMs),
    ]);
    const addresses = [...(a.status === "fulfilled" ? a.value : []), ...(aaaa.status === "fulfilled" ? aaaa.value : [])];
    if (addresses.length > 0) return addresses;
    const errors = [a, aaaa].flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    // NXDOMAIN for either family is a definitive "no such name"; otherwise a timeout means "could not tell".
    const nxdomain = errors.some((e) => errorCode(e) === dns.NOTFOUND);
    const timedOut = errors.some(isTimeout);
    throw new ResolveError(!nxdomain && timedOut ? "upstream-timeout" : "dns-failed", name, { cause: errors[0] });
  }

  private async lookupSystem(name: string): Promise<string[]> {
    try {
      // getaddrinfo has no timeout of its own (it runs on libuv's thread pool); the deadline bounds our wait.
      const results = await withDeadline(dns.promises.lookup(name, { all: true, verbatim: true }), this.timeoutMs);
      return results.map((r) => r.address);
    } catch (err) {
      // EAI_AGAIN ("temporary failure") is reported as dns-failed: it also means "no network", not only "slow".
      throw new ResolveError(isTimeout(err) ? "upstream-timeout" : "dns-failed", name, { cause: err });
    }
  }
}

/** Rejects with an error shaped like c-ares's own timeout (code ETIMEOUT) when `promise` takes longer than `ms`. */
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error("resolution deadline passed"), { code: dns.TIMEOUT })), ms);
    timer.unref();
  });
  // The losing query may still settle later; swallow that so it is not an unhandled rejection.
  promise.catch(() => undefined);
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

function errorCode(err: unknown): unknown {
  return typeof err === "object" && err !== null && "code" in err ? err.code : undefined;
}

function isTimeout(err: unknown): boolean {
  return errorCode(err) === dns.TIMEOUT;
}
