import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";

export interface Upstream {
  port: number;
  url: string;
  /** Every request seen: method, url, headers (raw pairs). */
  requests: { method: string; url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[] }[];
  /** TCP connections accepted so far. */
  readonly connections: number;
  close(): Promise<void>;
}

/** A loopback HTTP server that echoes what it received as JSON (or runs `handler`). */
export async function startHttpUpstream(handler?: http.RequestListener, host = "127.0.0.1"): Promise<Upstream> {
  const requests: Upstream["requests"] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, rawHeaders: req.rawHeaders });
    if (handler) return handler(req, res);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { "content-type": "application/json", "x-upstream": "yes", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  let connections = 0;
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return {
    get connections() {
      return connections;
    },
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A raw TCP echo server (for CONNECT tunnels): echoes bytes, half-closes when the client does. */
export async function startEchoServer(host = "127.0.0.1"): Promise<{ port: number; connections: number; close(): Promise<void> }> {
  const state = { connections: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    state.connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
