import { networkInterfaces } from "node:os";
import type { AddressInfo } from "node:net";

/**
 * The proxy's own listening sockets, as address:port pairs. A request aimed at one of them would loop
 * through the proxy (or reach its admin API from the sandbox), so it is refused as internal-address even
 * where `--internal-allow` exempts the range: the pair, not the whole address, is what is refused, so that
 * upstreams on the same loopback address keep working in tests.
 */
export class SelfAddresses {
  private readonly pairs = new Set<string>();
  /** Ports of listeners bound to 0.0.0.0 or ::, which answer on every local address. */
  private readonly wildcardPorts = new Set<number>();

  add(info: AddressInfo | string | null): void {
    if (!info || typeof info === "string") return;
    if (info.address === "0.0.0.0" || info.address === "::") {
      this.wildcardPorts.add(info.port);
      for (const a of interfaceAddresses()) this.pairs.add(`${stripMapped(a)}|${info.port}`);
      return;
    }
    this.pairs.add(`${stripMapped(info.address)}|${info.port}`);
  }

  has(address: string, port: number): boolean {
    const a = stripMapped(address);
    if (this.pairs.has(`${a}|${port}`)) return true;
    // A wildcard listener is reached through every loopback address (all of 127/8, not only the ones an
    // interface lists), the unspecified address, and addresses added to interfaces after it started.
    return this.wildcardPorts.has(port) && (isLoopbackOrUnspecified(a) || interfaceAddresses().includes(a));
  }
}

function interfaceAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) out.push(stripMapped(i.address));
  return out;
}

function isLoopbackOrUnspecified(a: string): boolean {
  return a.startsWith("127.") || a === "0.0.0.0" || a === "::1" || a === "::" || a.startsWith("0.");
}

function stripMapped(a: string): string {
  return a.toLowerCase().startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a.toLowerCase();
}
