import { readdirSync } from "node:fs";
import net from "node:net";

/** One request to a proxy's admin REST (loopback, no token). */
// Tests index into bodies freely; shapes are asserted explicitly where they matter.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function admin(base: string, method: string, p: string, body?: unknown): Promise<{ status: number; text: string; json: any }> {
  const res = await fetch(`http://${base}${p}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (metrics)
  }
  return { status: res.status, text, json };
}

/** The value of one unlabelled Prometheus sample in GET /metrics. */
export async function metric(adminAddr: string, name: string): Promise<number> {
  const r = await admin(adminAddr, "GET", "/metrics");
  const m = new RegExp(`^${name}(?:\\{\\})? ([0-9.eE+-]+)$`, "m").exec(r.text);
  if (!m) throw new Error(`metric ${name} not found`);
  return Number(m[1]);
}

export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Poll `pred` every 25 ms until true or `timeoutMs`; returns whether it became true. */
export async function until(pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Send raw bytes, collect everything until the peer closes (or errors); resolves with how it ended. */
export function rawExchange(hostPort: string, data: string, timeoutMs = 5000): Promise<{ bytes: Buffer; ended: "end" | "error" | "timeout"; error?: string }> {
  const i = hostPort.lastIndexOf(":");
  return new Promise((resolve) => {
    const s = net.connect(Number(hostPort.slice(i + 1)), hostPort.slice(0, i));
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (ended: "end" | "error" | "timeout", error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ bytes: Buffer.concat(chunks), ended, error });
    };
    const timer = setTimeout(() => finish("timeout"), timeoutMs);
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("end", () => finish("end"));
    s.on("close", () => finish("end"));
    s.on("error", (e: NodeJS.ErrnoException) => finish("error", e.code ?? e.message));
    s.write(data);
  });
}
