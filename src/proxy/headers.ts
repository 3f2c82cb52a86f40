/**
 * Header hygiene for forwarding (RFC 9110 §7.6.1): hop-by-hop headers, and every header named in Connection,
 * belong to one connection and are never forwarded. Works on Node's flat rawHeaders arrays so that the
 * client's header case and order survive, which some upstreams care about.
 */
const ALWAYS_HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  // Set from the request target, never trusted from the client.
  "host",
]);

export interface FilterOptions {
  /** Keep `Upgrade` and `Connection: upgrade` (an allowed WebSocket upgrade). */
  keepUpgrade?: boolean;
  /** Lower-case names to drop as well (transform strip_headers, injected names). */
  drop?: ReadonlySet<string>;
}

/** Returns a new flat [name, value, …] array without hop-by-hop headers. */
export function filterRawHeaders(raw: readonly string[], opts: FilterOptions = {}): string[] {
  const listed = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (opts.keepUpgrade && (lower === "upgrade" || lower === "connection")) continue; // re-added by the caller
    if (ALWAYS_HOP_BY_HOP.has(lower) || listed.has(lower) || opts.drop?.has(lower)) continue;
    out.push(name, raw[i + 1]!);
  }
  return out;
}

function connectionTokens(raw: readonly string[]): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (lower !== "connection" && lower !== "proxy-connection") continue;
    for (const t of raw[i + 1]!.split(",")) {
      const token = t.trim().toLowerCase();
      if (token) tokens.add(token);
    }
  }
  return tokens;
}

/** True when the request asks for a WebSocket upgrade (the only upgrade the proxy relays). */
export function isWebSocketUpgrade(headers: Readonly<Record<string, string | string[] | undefined>>): boolean {
  const upgrade = headers.upgrade;
  const connection = headers.connection;
  return (
    typeof upgrade === "string" &&
    upgrade.trim().toLowerCase() === "websocket" &&
    typeof connection === "string" &&
    connection.toLowerCase().split(",").some((t) => t.trim() === "upgrade")
  );
}
