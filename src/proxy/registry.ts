import type { CompiledPolicy } from "../policy/compile.js";
import type { Host } from "../policy/types.js";

/** An open connection whose target was judged: re-judged on every policy change. */
export interface TrackedConnection {
  readonly host: Host;
  readonly port: number;
  /** The dialled address; null while still connecting (then only the name is re-judged). */
  address: string | null;
  /** Close it because the policy in force no longer allows it. */
  revoke(): void;
}

/**
 * Open tunnels and in-flight requests. After a policy change every entry is judged again against the new
 * policy with the address it actually dialled (no new DNS lookup), and the denied ones are closed at once,
 * well inside the one second DESIGN.md allows.
 */
export class ConnectionRegistry {
  private readonly open = new Set<TrackedConnection>();

  add(c: TrackedConnection): () => void {
    this.open.add(c);
    return () => this.open.delete(c);
  }

  get size(): number {
    return this.open.size;
  }

  /** Returns how many connections were revoked. */
  revokeDenied(compiled: CompiledPolicy): number {
    let revoked = 0;
    for (const c of [...this.open]) {
      const name = compiled.decideName(c.host, c.port);
      let denied = name.verdict === "deny";
      if (!denied && c.address !== null) denied = !compiled.judgeAddress(c.address, name, c.port).usable;
      else if (!denied && name.needsNoResolution) denied = true;
      if (denied) {
        this.open.delete(c);
        revoked++;
        c.revoke();
      }
    }
    return revoked;
  }

  closeAll(): void {
    for (const c of [...this.open]) c.revoke();
    this.open.clear();
  }
}
