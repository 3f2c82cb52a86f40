import { createRequire } from "node:module";
import type { Socket } from "node:net";

/**
 * The native zero-copy relay for raw tunnels (src/native/splice-relay.c, built by `npm ci` through node-gyp).
 * A tunnel is handed over once JavaScript has nothing left to do on it; the native thread then moves the bytes
 * with splice(2) and reports the end, after which (and only after which) the sockets are closed here.
 *
 * Where the addon is missing (another OS, no compiler at install) or SANDBOX_EGRESS_TUNNEL_RELAY=js is set,
 * tunnels stay on the JavaScript relay: same semantics, more CPU per byte.
 */
interface NativeRelay {
  start(onDone: (id: number, up: number, down: number, errno: number) => void): void;
  add(clientFd: number, upstreamFd: number, idleMs: number): number;
  cancel(id: number): void;
  trimHeap(): boolean;
}

export interface SplicedTunnel {
  /** End the tunnel now; `onDone` still runs (once), after the native side has let go of the descriptors. */
  cancel(): void;
}

type DoneCallback = (bytes: { up: number; down: number }, errno: number) => void;

const pending = new Map<number, DoneCallback>();
let native: NativeRelay | null | undefined;
let loadError: string | null = null;

function load(): NativeRelay | null {
  if (native !== undefined) return native;
  native = null;
  const wanted = process.env.SANDBOX_EGRESS_TUNNEL_RELAY ?? "auto";
  if (wanted === "js" || process.platform !== "linux") return native;
  try {
    // dist/proxy/ → the package root's build/Release/.
    const addon = createRequire(import.meta.url)("../../build/Release/splice_relay.node") as NativeRelay;
    addon.start((id, up, down, errno) => {
      const done = pending.get(id);
      pending.delete(id);
      done?.({ up, down }, errno);
    });
    native = addon;
  } catch (err) {
    loadError = (err as Error).message;
    if (wanted === "splice") throw new Error(`SANDBOX_EGRESS_TUNNEL_RELAY=splice, but the native relay cannot load: ${loadError}`);
  }
  return native;
}

/**
 * Resolves once the native relay holds no descriptor any more (or after `timeoutMs`): a shutdown must not close
 * sockets the relay thread may still be splicing (a closed descriptor's number can be reused at once).
 */
export async function splicedReleased(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pending.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

/**
 * Give the memory start-up freed back to the kernel (glibc's malloc_trim, through the addon; see
 * splice-relay.c). A no-op where the addon is not loaded.
 */
export function trimNativeHeap(): void {
  load()?.trimHeap();
}

/** Which relay raw tunnels use in this process, for the startup log line and the bench. */
export function tunnelRelayKind(): { kind: "splice" | "js"; why?: string } {
  if (load() !== null) return { kind: "splice" };
  return { kind: "js", why: process.env.SANDBOX_EGRESS_TUNNEL_RELAY === "js" ? "SANDBOX_EGRESS_TUNNEL_RELAY=js" : (loadError ?? `not built for ${process.platform}`) };
}

interface StreamHandle {
  fd?: number;
  reading?: boolean;
  readStop?(): number;
}

function handleOf(s: Socket): StreamHandle | null {
  return ((s as unknown as { _handle?: StreamHandle | null })._handle ?? null) as StreamHandle | null;
}

/**
 * Stop JavaScript from reading `s` and return its descriptor, or null when it cannot be handed over. Bytes the
 * stream already buffered are passed to `spill` first (they were read from the kernel and must not be lost).
 */
function detachReader(s: Socket, spill: (chunk: Buffer) => void): number | null {
  const h = handleOf(s);
  if (h === null || typeof h.fd !== "number" || h.fd < 0 || typeof h.readStop !== "function") return null;
  for (let chunk: unknown = s.read(); chunk !== null; chunk = s.read()) spill(chunk as Buffer);
  h.reading = false;
  h.readStop();
  return s.readableLength === 0 ? h.fd : null;
}

/**
 * Hand a tunnel whose JavaScript side is finished to the native relay. Preconditions, checked here: both
 * sockets open in both directions, nothing of ours still queued for writing. Returns null when the relay is
 * unavailable or a precondition fails; the caller then relays in JavaScript (piping restarts the reads this
 * may have stopped, and no byte was dropped).
 */
export function spliceTunnel(client: Socket, upstream: Socket, idleMs: number, onDone: DoneCallback): SplicedTunnel | null {
  const relay = load();
  if (relay === null) return null;
  for (const s of [client, upstream]) {
    if (s.destroyed || s.readableEnded || s.writableEnded || s.writableLength > 0 || s.connecting) return null;
  }
  // The upstream side was read with its own buffer (net.connect onread): pausing it stops the read at once.
  upstream.pause();
  const spilled: Buffer[] = [];
  const ufd = detachReader(upstream, (c) => spilled.push(c));
  const cfd = detachReader(client, (c) => upstream.write(c));
  if (ufd === null || cfd === null || spilled.length > 0 || upstream.writableLength > 0) {
    // Rare (data raced in while we stopped): give the bytes back and let the JavaScript relay carry on.
    for (const c of spilled) client.write(c);
    return null;
  }
  // JavaScript sees no traffic from now on: its idle timers would fire on a busy tunnel. The native side
  // enforces the idle limit instead.
  client.setTimeout(0);
  upstream.setTimeout(0);
  const id = relay.add(cfd, ufd, idleMs);
  pending.set(id, onDone);
  return { cancel: () => relay.cancel(id) };
}
