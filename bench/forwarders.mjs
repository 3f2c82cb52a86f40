// Which forwarding library should the HTTP path use? Three minimal absolute-form forward proxies, identical
// apart from the upstream client, measured with wrk against the same upstream in one run:
//   node-http  — node:http server + http.request with a keep-alive Agent (what src/proxy/forward.ts does)
//   undici     — node:http server + undici Pool.stream() per origin
//   http-proxy — node:http server + http-proxy's web() with a keep-alive Agent
// No policy, no logging: this isolates the library's own cost. Usage: node bench/forwarders.mjs [seconds]
import http from "node:http";
import { fork, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const role = process.argv[2];
if (role === "upstream") {
  http.createServer((_req, res) => { res.writeHead(200, { "content-type": "text/plain", "content-length": 2 }); res.end("ok"); })
    .listen(0, "127.0.0.1", function () { process.send(this.address().port); });
} else if (role === "proxy") {
  const kind = process.argv[3];
  const hop = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"]);
  const filter = (raw) => { const out = {}; for (let i = 0; i < raw.length; i += 2) { const k = raw[i].toLowerCase(); if (!hop.has(k)) out[k] = raw[i + 1]; } return out; };
  let handler;
  if (kind === "node-http") {
    const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: "lifo" });
    handler = (req, res) => {
      const u = new URL(req.url);
      const up = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: req.method, headers: { ...filter(req.rawHeaders), host: u.host }, agent });
      up.on("response", (r) => { res.writeHead(r.statusCode, filter(r.rawHeaders)); r.pipe(res); });
      up.on("error", () => res.destroy());
      req.pipe(up);
    };
  } else if (kind === "undici") {
    const { Pool } = await import("undici");
    const pools = new Map();
    handler = (req, res) => {
      const u = new URL(req.url);
      let pool = pools.get(u.origin);
      if (!pool) pools.set(u.origin, (pool = new Pool(u.origin, { connections: 128, pipelining: 1 })));
      pool.stream(
        { path: u.pathname + u.search, method: req.method, headers: { ...filter(req.rawHeaders), host: u.host }, body: req.method === "GET" || req.method === "HEAD" ? null : req },
        ({ statusCode, headers }) => { const h = { ...headers }; for (const k of hop) delete h[k]; res.writeHead(statusCode, h); return res; },
      ).catch(() => res.destroy());
    };
  } else {
    const { default: httpProxy } = await import("http-proxy");
    const proxy = httpProxy.createProxyServer({ agent: new http.Agent({ keepAlive: true, maxFreeSockets: 64 }), xfwd: false });
    proxy.on("error", (_e, _req, res) => res.destroy());
    handler = (req, res) => { const u = new URL(req.url); req.url = u.pathname + u.search; proxy.web(req, res, { target: u.origin }); };
  }
  http.createServer(handler).listen(0, "127.0.0.1", function () { process.send(this.address().port); });
} else {
  const seconds = Number(process.argv[2] ?? 5);
  const self = fileURLToPath(import.meta.url);
  const start = (args) => new Promise((resolve) => { const c = fork(self, args, { stdio: "ignore" }); c.once("message", (port) => resolve({ c, port })); });
  const up = await start(["upstream"]);
  const rows = [];
  for (const kind of ["node-http", "undici", "http-proxy"]) {
    const p = await start(["proxy", kind]);
    const lua = `/tmp/forwarders-${process.pid}.lua`;
    (await import("node:fs")).writeFileSync(lua, `wrk.path="http://127.0.0.1:${up.port}/"\n`);
    spawnSync("wrk", ["-t1", "-c32", "-d1s", "-s", lua, `http://127.0.0.1:${p.port}`]);
    const out = spawnSync("wrk", ["-t1", "-c32", `-d${seconds}s`, "--latency", "-s", lua, `http://127.0.0.1:${p.port}`], { encoding: "utf8" }).stdout;
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
    const p99 = /99%\s+([\d.]+\w+)/.exec(out)?.[1];
    rows.push({ kind, rps: Math.round(rps), p99 });
    p.c.kill();
  }
  up.c.kill();
  console.log("| forwarder | req/s | p99 |\n|---|---:|---:|");
  for (const r of rows) console.log(`| ${r.kind} | ${r.rps.toLocaleString("en")} | ${r.p99} |`);
}
