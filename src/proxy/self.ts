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

  add(info: AddressInfo | string | null): void {
    if (!info || typeof info === "string") return;
    const wildcard = info.address === "0.0.0.0" || info.address === "::";
    const addresses = wildcard ? localAddresses() : [info.address];
    for (const a of addresses) this.pairs.add(`${stripMapped(a)}|${info.port}`);
  }

  has(address: string, port: number): boolean {
    return this.pairs.has(`${stripMapped(address)}|${port}`);
  }
}

function localAddresses(): string[] {
  const out = ["0.0.0.0", "::"];
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) out.push(i.address);
  return out;
}

function stripMapped(a: string): string {
  return a.toLowerCase().startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a.toLowerCase();
}
