import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * A throwaway certificate authority made with the openssl CLI, independent of the code under test (src/tls), so
 * that a bug there cannot make a test upstream agree with it.
 */
export interface TestCa {
  /** Directory holding ca.pem, ca-key.pem and every issued pair. */
  readonly dir: string;
  readonly certPath: string;
  readonly certPem: string;
  /** A server certificate for `names` (dNSName SANs), signed by this CA. */
  issue(names: readonly string[]): Promise<{ cert: string; key: string }>;
}

export async function createTestCa(commonName = "egress test upstream CA"): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), "egress-test-ca-"));
  const keyPath = join(dir, "ca-key.pem");
  const certPath = join(dir, "ca.pem");
  await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyPath]);
  await run("openssl", [
    "req", "-x509", "-new", "-key", keyPath, "-sha256", "-days", "2", "-subj", `/CN=${commonName}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-out", certPath,
  ]);
  const certPem = await readFile(certPath, "utf8");
  let n = 0;
  return {
    dir,
    certPath,
    certPem,
    async issue(names) {
      const id = `leaf${n++}`;
      const key = join(dir, `${id}-key.pem`);
      const csr = join(dir, `${id}.csr`);
      const crt = join(dir, `${id}.pem`);
      const ext = join(dir, `${id}.ext`);
      await writeFile(
        ext,
        `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${names.map((d) => `DNS:${d}`).join(",")}\n`,
      );
      await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key]);
      await run("openssl", ["req", "-new", "-key", key, "-subj", `/CN=${names[0]}`, "-out", csr]);
      await run("openssl", [
        "x509", "-req", "-in", csr, "-CA", certPath, "-CAkey", keyPath, "-CAcreateserial", "-days", "1", "-sha256",
        "-extfile", ext, "-out", crt,
      ]);
      return { cert: await readFile(crt, "utf8"), key: await readFile(key, "utf8") };
    },
  };
}

export interface SeenRequest {
  method: string;
  url: string;
  /** Flat [name, value, …] exactly as received. */
  rawHeaders: string[];
  /** The SNI of the TLS connection it arrived on. */
  servername: string | null;
  /** The request body (filled in when it has arrived). */
  body: string;
}

export interface TlsUpstream {
  readonly port: number;
  readonly requests: SeenRequest[];
  /** TCP connections accepted. */
  readonly connections: number;
  /** TLS handshakes completed. */
  readonly handshakes: number;
  /** The SNI and ALPN protocol list of every ClientHello that offered ALPN. */
  readonly alpnOffers: { servername: string; protocols: string[] }[];
  /** Raw bytes received after a WebSocket upgrade. */
  readonly upgradedBytes: number;
  close(): Promise<void>;
}

/** Every value of header `name` (case-insensitive) in a flat rawHeaders array. */
export function headerValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === name.toLowerCase()) out.push(raw[i + 1]!);
  return out;
}

/**
 * An HTTPS upstream on 127.0.0.1 that records what it received and answers WITHOUT echoing headers (the brokering
 * suite searches every response body for secrets; an echoing upstream would put them there itself). Routes:
 * `/redirect?to=URL` answers 302 to URL; anything else 200 `{"ok":true,"n":<request number>}`. A WebSocket
 * upgrade is accepted (RFC 6455 §4.2.2 handshake), then every byte is echoed back raw.
 */
export async function startTlsUpstream(pair: { cert: string; key: string }): Promise<TlsUpstream> {
  const requests: SeenRequest[] = [];
  const alpnOffers: TlsUpstream["alpnOffers"] = [];
  const state = { connections: 0, handshakes: 0, upgradedBytes: 0 };
  const sockets = new Set<Socket>();
  const server = https.createServer({
    cert: pair.cert,
    key: pair.key,
    // Records the offer and picks http/1.1 when offered (ALPNCallback excludes ALPNProtocols).
    ALPNCallback: ({ servername, protocols }) => {
      alpnOffers.push({ servername: servername ?? "", protocols: [...protocols] });
      return protocols.includes("http/1.1") ? "http/1.1" : undefined;
    },
  } as https.ServerOptions);
  const record = (req: http.IncomingMessage): SeenRequest => {
    const s = req.socket as tls.TLSSocket;
    const seen: SeenRequest = { method: req.method ?? "", url: req.url ?? "", rawHeaders: [...req.rawHeaders], servername: (s as { servername?: string | false }).servername || null, body: "" };
    requests.push(seen);
    return seen;
  };
  server.on("connection", (s: Socket) => {
    state.connections++;
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.on("secureConnection", () => state.handshakes++);
  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const seen = record(req);
    req.setEncoding("utf8");
    req.on("data", (d: string) => (seen.body += d));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "https://upstream");
      if (url.pathname === "/redirect") {
        res.writeHead(302, { location: url.searchParams.get("to") ?? "/", "content-length": 0 });
        res.end();
        return;
      }
      const body = JSON.stringify({ ok: true, n: requests.length });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    record(req);
    const key = req.headers["sec-websocket-key"];
    if (typeof key !== "string") {
      socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.on("error", () => socket.destroy());
    const echo = (d: Buffer): void => {
      state.upgradedBytes += d.length;
      socket.write(d);
    };
    if (head.length > 0) echo(head);
    socket.on("data", echo);
    socket.on("end", () => socket.end());
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    alpnOffers,
    get connections() {
      return state.connections;
    },
    get handshakes() {
      return state.handshakes;
    },
    get upgradedBytes() {
      return state.upgradedBytes;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

export interface RecordingTlsServer {
  readonly port: number;
  /** TCP connections accepted. */
  readonly connections: number;
  /** TLS handshakes that completed. */
  readonly handshakes: number;
  /** Decrypted application bytes received, over all connections. */
  readonly applicationBytes: number;
  close(): Promise<void>;
}

/**
 * A raw TLS server (no HTTP parser in between) that counts every decrypted byte it receives: the witness for
 * "nothing was sent" when the proxy must refuse an upstream whose certificate does not verify.
 */
export async function startRecordingTlsServer(pair: { cert: string; key: string }): Promise<RecordingTlsServer> {
  const state = { connections: 0, handshakes: 0, applicationBytes: 0 };
  const sockets = new Set<Socket>();
  const server = tls.createServer({ cert: pair.cert, key: pair.key, ALPNProtocols: ["http/1.1"] }, (s) => {
    state.handshakes++;
    s.on("error", () => s.destroy());
    s.on("data", (d: Buffer) => {
      state.applicationBytes += d.length;
      s.end("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    });
  });
  server.on("connection", (s: Socket) => {
    state.connections++;
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    get handshakes() {
      return state.handshakes;
    },
    get applicationBytes() {
      return state.applicationBytes;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
