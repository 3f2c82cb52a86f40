import { expect } from "vitest";

export interface ApiResponse {
  status: number;
  headers: Headers;
  // Tests index into bodies freely; shapes are asserted explicitly where they matter.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
  text: string;
}

/** One request to the control REST; `body` as a string is sent verbatim (for malformed-JSON tests). */
export async function api(base: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse> {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = null;
  if (res.headers.get("content-type")?.includes("json") && text !== "") json = JSON.parse(text);
  return { status: res.status, headers: res.headers, json, text };
}

/** Poll GET /v1/sandboxes/{id} until status.state is `state` (fails fast on an unexpected final state). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function waitForState(base: string, id: string, state: string, timeoutMs = 20_000, headers: Record<string, string> = {}): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const r = await api(base, "GET", `/v1/sandboxes/${id}`, undefined, headers);
    last = r.json;
    if (r.json?.status?.state === state) return r.json;
    if (["Failed", "Terminated"].includes(r.json?.status?.state) && state !== r.json.status.state) {
      expect.fail(`sandbox ${id} ended ${r.json.status.state} (${r.json.status.reason}: ${r.json.status.message}) while waiting for ${state}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  expect.fail(`sandbox ${id} did not reach ${state} within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function waitForSnapshot(base: string, id: string, states: string[], timeoutMs = 60_000, headers: Record<string, string> = {}): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const r = await api(base, "GET", `/v1/snapshots/${id}`, undefined, headers);
    last = r.json;
    if (states.includes(r.json?.status?.state)) return r.json;
    await new Promise((r) => setTimeout(r, 50));
  }
  expect.fail(`snapshot ${id} did not reach ${states.join("/")} within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

/** Delete every sandbox that is not Terminated yet and wait until they are (so no test leaves processes behind). */
export async function deleteAll(base: string, headers: Record<string, string> = {}): Promise<void> {
  const r = await api(base, "GET", "/v1/sandboxes?pageSize=1000", undefined, headers);
  if (r.status !== 200) return;
  const live = (r.json.items as { id: string; status: { state: string } }[]).filter((s) => !["Terminated", "Stopping"].includes(s.status.state));
  for (const s of live) await api(base, "DELETE", `/v1/sandboxes/${s.id}`, undefined, headers);
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const l = await api(base, "GET", "/v1/sandboxes?state=Stopping&state=Running&state=Paused&state=Pending&state=Pausing&state=Resuming", undefined, headers);
    if (l.json.pagination.totalItems === 0) return;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Run a command in a sandbox through the exec extension. */
export async function exec(base: string, id: string, command: string[], headers: Record<string, string> = {}): Promise<{ status: number; exitCode: number; stdout: string; stderr: string }> {
  const r = await api(base, "POST", `/v1/sandboxes/${id}/exec`, { command, timeoutSeconds: 30 }, headers);
  return { status: r.status, exitCode: r.json?.exitCode, stdout: r.json?.stdout ?? "", stderr: r.json?.stderr ?? r.json?.message ?? "" };
}

/** curl inside the sandbox (through its proxy, from the environment): status line, X-Egress-Denied and body. */
export async function curlInside(base: string, id: string, url: string, extra: string[] = [], headers: Record<string, string> = {}) {
  const r = await exec(base, id, ["curl", "-sS", "--max-time", "10", "-D", "-", ...extra, url], headers);
  const status = /^HTTP\/[\d.]+ (\d{3})/m.exec(r.stdout);
  const denied = /^x-egress-denied:\s*(\S+)/im.exec(r.stdout);
  return { exitCode: r.exitCode, status: status ? Number(status[1]) : null, denied: denied ? denied[1]! : null, out: r.stdout, err: r.stderr };
}
