/**
 * Helpers shared by the adversarial tests. Every socket they open is on loopback: a test judges any other
 * address only through POST /v1/decide, `policy explain` or the pure policy engine, never by dialling it.
 */
import { execFile } from "node:child_process";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { promisify } from "node:util";
import { CLI, type RunningProxy } from "../helpers/proxy-process.js";

const run = promisify(execFile);

export interface AdminResponse {
  status: number;
  headers: Headers;
  json: Record<string, unknown> | null;
  text: string;
}

/** One admin REST call; a string body is sent as is (for malformed JSON). */
export async function admin(
  p: RunningProxy,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<AdminResponse> {
  const res = await fetch(`http://${p.admin}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> | null = null;
  if (res.headers.get("content-type")?.includes("json")) json = JSON.parse(text) as Record<string, unknown>;
  return { status: res.status, headers: res.headers, json, text };
}

export interface DecideAnswer {
  allowed: boolean;
  reason: string;
  rule: string | null;
  host: string;
  port: number;
  addresses: string[];
  judged: { address: string; usable: boolean; reason: string; rule: string | null }[];
}

/** POST /v1/decide: the decision a CONNECT would get, without dialling anything. */
export async function decide(p: RunningProxy, host: string, port?: number, headers: Record<string, string> = {}): Promise<DecideAnswer> {
  const r = await admin(p, "POST", "/v1/decide", port === undefined ? { host } : { host, port }, headers);
  if (r.status !== 200) throw new Error(`decide ${host}: ${r.status} ${r.text}`);
  return r.json as unknown as DecideAnswer;
}

/** `sandbox-egress policy explain FILE TARGET …` as a child process; the Decision it prints. */
export async function explain(policyFile: string, target: string, args: string[] = []): Promise<DecideAnswer & { code: number }> {
  try {
    const { stdout } = await run(process.execPath, [CLI, "policy", "explain", policyFile, target, ...args]);
    return { ...(JSON.parse(stdout) as DecideAnswer), code: 0 };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { ...(JSON.parse(e.stdout) as DecideAnswer), code: e.code };
  }
}

/** A loopback HTTP server on an exact host and port that records what reaches it and says who it is. */
export interface Recorder {
  readonly host: string;
  readonly port: number;
  readonly connections: number;
  readonly requests: { method: string; url: string; rawHeaders: string[]; body: string }[];
  close(): Promise<void>;
}

export async function startRecorder(host = "127.0.0.1", port = 0): Promise<Recorder> {
  const requests: Recorder["requests"] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("latin1");
      requests.push({ method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders, body });
      const text = JSON.stringify({ served_by: host, url: req.url, headers: req.headers, body });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    });
  });
  let connections = 0;
  server.on("connection", () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    host,
    port: (server.address() as AddressInfo).port,
    get connections() {
      return connections;
    },
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A loopback TCP server that records every byte it receives and sends nothing. */
export interface ByteRecorder {
  readonly port: number;
  readonly connections: number;
  received(): Buffer;
  close(): Promise<void>;
}

export async function startByteRecorder(host = "127.0.0.1"): Promise<ByteRecorder> {
  const chunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    connections++;
    sockets.add(s);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => s.destroy());
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return connections;
    },
    received: () => Buffer.concat(chunks),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Resolves with everything the peer sends until it ends or closes (or `ms` passes); then closes our side. */
export function readAll(socket: Duplex, ms = 5000): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(done, ms);
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("error", () => undefined);
    socket.once("end", done);
    socket.once("close", done);
  });
}

/** Send raw bytes, collect everything until the peer closes (or `ms`), for requests that end the connection. */
export function rawExchange(hostPort: string, data: string | Buffer, ms = 5000): Promise<string> {
  const i = hostPort.lastIndexOf(":");
  const socket = net.connect({ host: hostPort.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port: Number(hostPort.slice(i + 1)) });
  const all = readAll(socket, ms);
  socket.write(data);
  return all;
}

/** Status, headers (lower case) and body of the first response in a raw transcript. */
export function firstResponse(transcript: string): { status: number; headers: Record<string, string>; body: string } {
  const end = transcript.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`no HTTP response in ${JSON.stringify(transcript.slice(0, 200))}`);
  const lines = transcript.slice(0, end).split("\r\n");
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(":")).trim().toLowerCase()] = l.slice(l.indexOf(":") + 1).trim();
  const len = Number(headers["content-length"] ?? transcript.length);
  return { status: Number(lines[0]!.split(" ")[1]), headers, body: transcript.slice(end + 4, end + 4 + len) };
}

/** The `error.code` of a JSON error body. */
export function errorCode(body: string): string {
  return (JSON.parse(body) as { error: { code: string } }).error.code;
}

/**
 * TLS through a CONNECT tunnel whose request line travels in the SAME write as the ClientHello (a client that
 * pipelines the handshake behind CONNECT). The proxy's `200 Connection established` is stripped before the
 * TLS layer sees the stream. Resolves with everything the TLS layer decrypts, until close.
 */
export function pipelinedTls(proxy: string, connectTarget: string, servername: string, ca: string): Promise<{ established: boolean; plaintext: string; error: string | null }> {
  const i = proxy.lastIndexOf(":");
  const socket = net.connect({ host: proxy.slice(0, i), port: Number(proxy.slice(i + 1)) });
  let first = true;
  let head = Buffer.alloc(0);
  let headDone = false;
  let established = false;
  const transport = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      if (first) {
        first = false;
        socket.write(Buffer.concat([Buffer.from(`CONNECT ${connectTarget} HTTP/1.1\r\nHost: ${connectTarget}\r\n\r\n`), chunk]), () => cb());
      } else socket.write(chunk, () => cb());
    },
    final(cb) {
      socket.end();
      cb();
    },
  });
  socket.on("data", (d: Buffer) => {
    if (headDone) {
      transport.push(d);
      return;
    }
    head = Buffer.concat([head, d]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) return;
    headDone = true;
    established = /^HTTP\/1\.1 200/.test(head.toString("latin1"));
    const rest = head.subarray(end + 4);
    if (rest.length > 0) transport.push(rest);
  });
  socket.on("end", () => transport.push(null));
  socket.on("error", () => transport.destroy());
  socket.on("close", () => transport.destroy());
  const secure = tls.connect({ socket: transport as unknown as net.Socket, servername, ca });
  return new Promise((resolve) => {
    let plaintext = "";
    let error: string | null = null;
    const done = (): void => resolve({ established, plaintext, error });
    const timer = setTimeout(() => {
      secure.destroy();
      socket.destroy();
    }, 5000);
    secure.on("secureConnect", () => secure.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\n\r\n`));
    secure.on("data", (d: Buffer) => (plaintext += d.toString("latin1")));
    secure.on("error", (e: Error) => (error = e.message));
    secure.on("close", () => {
      clearTimeout(timer);
      socket.destroy();
      done();
    });
  });
}

/** Fetch the proxy's CA (to complete the in-TLS refusal handshakes). */
export async function proxyCa(p: RunningProxy): Promise<string> {
  return (await fetch(`http://${p.admin}/v1/ca.pem`)).text();
}
