// Upstream servers for the bench, run as forked processes (one per role) so their CPU is not the client's.
//
//   node upstream.mjs http   node:http, keep-alive. `GET /` → 200 "ok"; `GET /bulk?bytes=N` → N bytes.
//   node upstream.mjs tcp    raw TCP, a tiny command protocol so one listener serves every tunnel workload:
//       'U' + uint64be N   client uploads N bytes; server answers 'K' once all N arrived   (sink)
//       'D' + uint64be N   server sends N bytes                                           (source)
//       'P'                server answers 'p'                                             (ping)
//     Commands can follow each other on one connection; an idle connection is simply held open.
//   node upstream.mjs https CERT KEY   node:https, keep-alive, `GET *` → 200 "ok". Counts what arrived so the
//       brokering workloads can prove the header was injected: IPC {cmd:"stats"} → {requests, injected, wrong,
//       missing, duplicated, handshakes (TLS), hosts (distinct Host values)}; {cmd:"reset"} zeroes them;
//       {cmd:"closeIdle"} closes every idle keep-alive connection (as a server's keep-alive timeout would).
//       The expected value is `Bearer $BENCH_SECRET`.
//
// Sends {ready:true, port} over IPC once listening; exits when the parent goes away.
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";

const role = process.argv[2];
const CHUNK = Buffer.alloc(256 * 1024, 0x61);

function startHttp() {
  const OK = Buffer.from("ok");
  const server = http.createServer((req, res) => {
    if (req.url.startsWith("/bulk")) {
      const n = Number(new URL(req.url, "http://x").searchParams.get("bytes") ?? 1048576);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(n) });
      let left = n;
      const pump = () => {
        while (left > 0) {
          const c = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
          left -= c.length;
          if (!res.write(c)) { res.once("drain", pump); return; }
        }
        res.end();
      };
      pump();
      return;
    }
    res.writeHead(200, { "content-type": "text/plain", "content-length": "2" });
    res.end(OK);
  });
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
  server.requestTimeout = 0;
  server.maxRequestsPerSocket = 0;
  return server;
}

function startTcp() {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    let state = "cmd"; // cmd | len | sink
    let mode = "";
    let header = Buffer.alloc(0);
    let remaining = 0;
    sock.on("error", () => {});
    const source = (n) => {
      let left = n;
      const pump = () => {
        while (left > 0) {
          const c = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
          left -= c.length;
          if (!sock.write(c)) { sock.once("drain", pump); return; }
        }
      };
      pump();
    };
    sock.on("data", (buf) => {
      let i = 0;
      while (i < buf.length) {
        if (state === "cmd") {
          const c = buf[i++];
          if (c === 0x50 /* P */) sock.write("p");
          else if (c === 0x55 /* U */ || c === 0x44 /* D */) { mode = c === 0x55 ? "U" : "D"; state = "len"; header = Buffer.alloc(0); }
          else { sock.destroy(); return; }
        } else if (state === "len") {
          const need = 8 - header.length;
          header = Buffer.concat([header, buf.subarray(i, i + need)]);
          i += Math.min(need, buf.length - i);
          if (header.length === 8) {
            const n = Number(header.readBigUInt64BE(0));
            if (mode === "U") { state = n > 0 ? "sink" : "cmd"; remaining = n; if (n === 0) sock.write("K"); }
            else { state = "cmd"; source(n); }
          }
        } else { // sink: count and drop
          const take = Math.min(remaining, buf.length - i);
          remaining -= take;
          i += take;
          if (remaining === 0) { state = "cmd"; sock.write("K"); }
        }
      }
    });
  });
  return server;
}

function startHttps(certPath, keyPath) {
  const OK = Buffer.from("ok");
  const expected = `Bearer ${process.env.BENCH_SECRET ?? ""}`;
  let stats;
  const reset = () => { stats = { requests: 0, injected: 0, wrong: 0, missing: 0, duplicated: 0, handshakes: 0, hosts: new Set() }; };
  reset();
  const server = https.createServer({ cert: readFileSync(certPath), key: readFileSync(keyPath), ALPNProtocols: ["http/1.1"] }, (req, res) => {
    stats.requests++;
    const auth = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === "authorization") auth.push(req.rawHeaders[i + 1]);
    if (auth.length === 0) stats.missing++;
    else if (auth.length > 1) stats.duplicated++;
    else if (auth[0] === expected && process.env.BENCH_SECRET) stats.injected++;
    else stats.wrong++;
    stats.hosts.add(req.headers.host);
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/plain", "content-length": "2" });
      res.end(OK);
    });
  });
  server.on("tlsClientError", () => {});
  server.on("secureConnection", () => stats.handshakes++);
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
  server.requestTimeout = 0;
  server.maxRequestsPerSocket = 0;
  process.on("message", (m) => {
    if (!m || !m.id) return;
    if (m.cmd === "reset") reset();
    if (m.cmd === "closeIdle") server.closeIdleConnections(); // what a server's keep-alive timeout would do
    const { hosts, ...rest } = stats;
    process.send({ id: m.id, result: { ...rest, hosts: hosts.size } });
  });
  return server;
}

const server = role === "http" ? startHttp() : role === "tcp" ? startTcp() : role === "https" ? startHttps(process.argv[3], process.argv[4]) : null;
if (!server) { process.stderr.write(`upstream: unknown role ${role}\n`); process.exit(2); }
server.maxConnections = 100_000;
server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () => {
  process.send({ ready: true, port: server.address().port });
});
process.on("disconnect", () => process.exit(0));
