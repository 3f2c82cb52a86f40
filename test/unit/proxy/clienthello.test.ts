import { spawn, spawnSync } from "node:child_process";
import net from "node:net";
import { PassThrough } from "node:stream";
import tls from "node:tls";
import fc from "fast-check";
import { runs } from "../../helpers/runs.js";
import { captureNodeHello } from "../../helpers/tls-hello.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_CLIENT_HELLO_BYTES, parseClientHello, readClientHello } from "../../../src/proxy/clienthello.js";

// ---------------------------------------------------------------------------------------------------------------
// Byte builders (TLS presentation language, RFC 8446 §3)

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (b: Buffer): Buffer => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
const ext = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), vec16(data)]);
const sniExt = (...names: string[]): Buffer =>
  ext(0, vec16(Buffer.concat(names.map((n) => Buffer.concat([u8(0), vec16(Buffer.from(n, "latin1"))])))));
const alpnExt = (...protocols: string[]): Buffer => ext(16, vec16(Buffer.concat(protocols.map((p) => vec8(Buffer.from(p))))));

interface BodyParts {
  version?: Buffer;
  sessionId?: Buffer;
  cipherSuites?: Buffer;
  compression?: Buffer;
  /** Raw bytes after compression_methods; default: the extensions block built from `extensions`. */
  tail?: Buffer;
  extensions?: Buffer[];
}

function clientHelloBody(p: BodyParts = {}): Buffer {
  return Buffer.concat([
    p.version ?? u16(0x0303),
    Buffer.alloc(32, 7), // random
    vec8(p.sessionId ?? Buffer.alloc(32, 1)),
    vec16(p.cipherSuites ?? Buffer.from([0x13, 0x01, 0x13, 0x02])),
    vec8(p.compression ?? Buffer.from([0])),
    p.tail ?? vec16(Buffer.concat(p.extensions ?? [])),
  ]);
}

const handshake = (body: Buffer, type = 1): Buffer => Buffer.concat([u8(type), u24(body.length), body]);
const record = (payload: Buffer, type = 22): Buffer => Buffer.concat([u8(type), u16(0x0301), u16(payload.length), payload]);

/** Wrap a handshake message into records of the given payload sizes (the last takes the rest). */
function records(message: Buffer, ...sizes: number[]): Buffer {
  const out: Buffer[] = [];
  let off = 0;
  for (const size of sizes) {
    if (off >= message.length) break;
    out.push(record(message.subarray(off, off + size)));
    off += size;
  }
  if (off < message.length) out.push(record(message.subarray(off)));
  return Buffer.concat(out);
}

const hello = (p: BodyParts = {}): Buffer => record(handshake(clientHelloBody(p)));

/** The handshake message inside a single-record ClientHello. */
const messageOf = (recordBytes: Buffer): Buffer => recordBytes.subarray(5);

// ---------------------------------------------------------------------------------------------------------------
// Real ClientHellos

const hasOpenssl = spawnSync("openssl", ["version"]).status === 0;

/** What `openssl s_client` sends to a loopback listener that records the first bytes and hangs up. */
async function captureOpensslHello(args: string[]): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const captured = new Promise<Buffer>((resolve) => {
    server.once("connection", (socket) => {
      socket.on("error", () => undefined);
      void readClientHello(socket, { timeoutMs: 5000 }).then(({ buffered }) => {
        socket.destroy();
        resolve(buffered);
      });
    });
  });
  const child = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, ...args], { stdio: ["pipe", "ignore", "ignore"] });
  child.on("error", () => undefined);
  try {
    return await captured;
  } finally {
    child.kill();
    server.close();
  }
}

let nodeHello: Buffer;
let nodeHelloNoSni: Buffer;

beforeAll(async () => {
  nodeHello = await captureNodeHello({ servername: "API.Example.com", ALPNProtocols: ["h2", "http/1.1"] });
  nodeHelloNoSni = await captureNodeHello({});
});

const okResult = { status: "ok", sni: "api.example.com", alpn: ["h2", "http/1.1"] };

// ---------------------------------------------------------------------------------------------------------------

describe("parseClientHello on real ClientHellos", () => {
  it("reads SNI (lower-cased) and ALPN from a node:tls ClientHello", () => {
    expect(parseClientHello(nodeHello)).toEqual(okResult);
  });

  it("reports sni null when node:tls sends no server_name", () => {
    expect(parseClientHello(nodeHelloNoSni)).toEqual({ status: "ok", sni: null, alpn: [] });
  });

  it("answers incomplete for every proper prefix, and ok only for the whole ClientHello", () => {
    for (let i = 0; i < nodeHello.length; i++) {
      expect(parseClientHello(nodeHello.subarray(0, i))).toEqual({ status: "incomplete" });
    }
    expect(parseClientHello(nodeHello)).toEqual(okResult);
  });

  it("ignores bytes that follow the ClientHello's last record (0-RTT data, pipelined bytes)", () => {
    const trailing = Buffer.concat([nodeHello, record(Buffer.from("early"), 23), Buffer.from("junk")]);
    expect(parseClientHello(trailing)).toEqual(okResult);
  });

  it.skipIf(!hasOpenssl)("reads SNI and ALPN from an openssl s_client ClientHello", async () => {
    const bytes = await captureOpensslHello(["-servername", "x.example.org", "-alpn", "h2,http/1.1"]);
    expect(parseClientHello(bytes)).toEqual({ status: "ok", sni: "x.example.org", alpn: ["h2", "http/1.1"] });
    for (let i = 0; i < bytes.length; i++) expect(parseClientHello(bytes.subarray(0, i)).status).toBe("incomplete");
  });

  it.skipIf(!hasOpenssl)("reads an openssl s_client ClientHello sent without SNI", async () => {
    const bytes = await captureOpensslHello(["-noservername"]);
    expect(parseClientHello(bytes)).toMatchObject({ status: "ok", sni: null });
  });
});

describe("parseClientHello across record boundaries (RFC 8446 §5.1 fragmentation)", () => {
  it("parses a ClientHello fragmented across two records, at every split point", () => {
    const message = messageOf(nodeHello);
    for (let k = 1; k < message.length; k++) {
      expect(parseClientHello(records(message, k))).toEqual(okResult);
    }
  });

  it("answers incomplete for every prefix of a two-record ClientHello", () => {
    const bytes = records(messageOf(nodeHello), 3); // split inside the handshake header
    for (let i = 0; i < bytes.length; i++) expect(parseClientHello(bytes.subarray(0, i)).status).toBe("incomplete");
    expect(parseClientHello(bytes)).toEqual(okResult);
  });

  it("parses a ClientHello sent one handshake byte per record", () => {
    const message = messageOf(nodeHello);
    const bytes = records(message, ...Array.from({ length: message.length }, () => 1));
    expect(bytes.length).toBeLessThan(MAX_CLIENT_HELLO_BYTES);
    expect(parseClientHello(bytes)).toEqual(okResult);
  });

  it("refuses a non-handshake record in the middle of the ClientHello", () => {
    const message = messageOf(nodeHello);
    const bytes = Buffer.concat([record(message.subarray(0, 10)), record(Buffer.from([1]), 21), record(message.subarray(10))]);
    expect(parseClientHello(bytes)).toMatchObject({ status: "invalid", error: expect.stringContaining("non-handshake") });
  });

  it("refuses an empty handshake record and a record longer than 2^14", () => {
    const message = messageOf(nodeHello);
    expect(parseClientHello(Buffer.concat([record(Buffer.alloc(0)), record(message)])).status).toBe("invalid");
    const oversized = Buffer.concat([u8(22), u16(0x0301), u16((1 << 14) + 1)]);
    expect(parseClientHello(oversized)).toMatchObject({ status: "invalid", error: expect.stringContaining("2^14") });
  });

  it("refuses a ClientHello larger than 16 KiB, even split into legal records", () => {
    const padding = ext(21, Buffer.alloc(17_000)); // RFC 7685 padding extension
    const message = handshake(clientHelloBody({ extensions: [sniExt("a.example"), padding] }));
    const bytes = records(message, 16_000);
    expect(parseClientHello(bytes)).toMatchObject({ status: "invalid", error: expect.stringContaining("larger") });
    // Rejected as soon as the handshake header announces the length: no need to wait for 17 KB.
    expect(parseClientHello(bytes.subarray(0, 9))).toMatchObject({ status: "invalid" });
  });

  it("refuses a ClientHello whose 1-byte records push it past the cap", () => {
    const message = handshake(clientHelloBody({ extensions: [sniExt("a.example"), ext(21, Buffer.alloc(3000))] }));
    const bytes = records(message, ...Array.from({ length: message.length }, () => 1));
    expect(parseClientHello(bytes)).toMatchObject({ status: "invalid", error: expect.stringContaining("larger") });
  });

  it("honours a smaller maxBytes", () => {
    expect(parseClientHello(nodeHello, 100)).toMatchObject({ status: "invalid" });
    expect(parseClientHello(nodeHello, nodeHello.length)).toEqual(okResult);
  });
});

describe("parseClientHello on what is not TLS", () => {
  it.each([
    ["plain HTTP", Buffer.from("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    ["an HTTP CONNECT", Buffer.from("CONNECT example.com:443 HTTP/1.1\r\n")],
    ["an SSLv2-format hello", Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])],
    ["a handshake record with version 4.x", Buffer.from([0x16, 0x04])],
    ["an application-data record", record(Buffer.from("hi"), 23)],
  ])("answers not-tls for %s", (_name, bytes) => {
    expect(parseClientHello(bytes)).toEqual({ status: "not-tls" });
  });

  it("answers incomplete for nothing and for a lone handshake content type", () => {
    expect(parseClientHello(Buffer.alloc(0))).toEqual({ status: "incomplete" });
    expect(parseClientHello(Buffer.from([0x16]))).toEqual({ status: "incomplete" });
  });

  it("refuses a first handshake message that is not a ClientHello", () => {
    expect(parseClientHello(record(handshake(clientHelloBody(), 2)))).toMatchObject({ status: "invalid" });
    // Judged on its first byte already.
    expect(parseClientHello(record(Buffer.from([2])))).toMatchObject({ status: "invalid" });
  });
});

describe("parseClientHello length and content checks", () => {
  const invalid = { status: "invalid" };

  it("parses a synthetic TLS 1.3 ClientHello with SNI and ALPN", () => {
    expect(parseClientHello(hello({ extensions: [sniExt("Api.Example.COM"), alpnExt("h2")] }))).toEqual({
      status: "ok",
      sni: "api.example.com",
      alpn: ["h2"],
    });
  });

  it("accepts a TLS 1.2 ClientHello without any extensions (RFC 5246 §7.4.1.2)", () => {
    expect(parseClientHello(hello({ tail: Buffer.alloc(0) }))).toEqual({ status: "ok", sni: null, alpn: [] });
  });

  it("keeps a trailing dot and underscores as sent", () => {
    expect(parseClientHello(hello({ extensions: [sniExt("_srv.Example.com.")] }))).toMatchObject({ sni: "_srv.example.com." });
  });

  it("skips an unknown name_type and keeps the host_name", () => {
    const list = Buffer.concat([u8(7), vec16(Buffer.from("other")), u8(0), vec16(Buffer.from("a.example"))]);
    expect(parseClientHello(hello({ extensions: [ext(0, vec16(list))] }))).toMatchObject({ status: "ok", sni: "a.example" });
  });

  it.each([
    ["a truncated random", record(handshake(Buffer.concat([u16(0x0303), Buffer.alloc(10)])))],
    ["a legacy_version that is not 3.x", hello({ version: u16(0x0203) })],
    ["a 33-byte session id", hello({ sessionId: Buffer.alloc(33) })],
    ["an odd cipher_suites length", hello({ cipherSuites: Buffer.from([0x13, 0x01, 0x13]) })],
    ["an empty cipher_suites list", hello({ cipherSuites: Buffer.alloc(0) })],
    ["an empty compression_methods list", hello({ compression: Buffer.alloc(0) })],
    ["a session id length past the message", record(handshake(Buffer.concat([u16(0x0303), Buffer.alloc(32), u8(200)])))],
    ["an extensions block shorter than its bytes", hello({ tail: Buffer.concat([u16(4), sniExt("a.example")]) })],
    ["an extensions block longer than the message", hello({ tail: Buffer.concat([u16(500), sniExt("a.example")]) })],
    ["a single stray byte after compression_methods", hello({ tail: Buffer.from([0]) })],
    ["an extension overrunning the block", hello({ tail: vec16(Buffer.concat([u16(0), u16(50), Buffer.alloc(4)])) })],
    ["two server_name extensions", hello({ extensions: [sniExt("a.example"), sniExt("b.example")] })],
    ["two ALPN extensions", hello({ extensions: [alpnExt("h2"), alpnExt("h2")] })],
    ["two host_names in one server_name", hello({ extensions: [sniExt("a.example", "b.example")] })],
    ["an empty host_name", hello({ extensions: [sniExt("")] })],
    ["an empty ServerNameList", hello({ extensions: [ext(0, vec16(Buffer.alloc(0)))] })],
    ["an empty server_name extension", hello({ extensions: [ext(0, Buffer.alloc(0))] })],
    ["a ServerNameList length past its extension", hello({ extensions: [ext(0, Buffer.concat([u16(40), u8(0), vec16(Buffer.from("a"))]))] })],
    ["bytes after the ServerNameList", hello({ extensions: [ext(0, Buffer.concat([vec16(Buffer.concat([u8(0), vec16(Buffer.from("a"))])), u8(0)]))] })],
    ["a host_name with a space", hello({ extensions: [sniExt("a b.example")] })],
    ["a host_name with a NUL", hello({ extensions: [sniExt("a.example\u0000.evil")] })],
    ["a host_name with a non-ASCII byte", hello({ extensions: [sniExt("caf\u00e9.example")] })],
    ["a host_name with a colon (IPv6 literal)", hello({ extensions: [sniExt("::1")] })],
    ["a host_name over 255 bytes", hello({ extensions: [sniExt(`${"a".repeat(252)}.com.x`)] })],
    ["an empty ALPN list", hello({ extensions: [ext(16, vec16(Buffer.alloc(0)))] })],
    ["an empty ALPN protocol name", hello({ extensions: [ext(16, vec16(Buffer.from([0, 2, 0x68, 0x32])))] })],
    ["an ALPN name overrunning its list", hello({ extensions: [ext(16, vec16(Buffer.from([5, 0x68, 0x32])))] })],
    ["a ClientHello body too short for its fields", record(Buffer.concat([u8(1), u24(3), Buffer.alloc(3)]))],
  ])("refuses %s", (_name, bytes) => {
    expect(parseClientHello(bytes)).toMatchObject(invalid);
  });

  it("answers incomplete, not invalid, while a declared length can still be satisfied", () => {
    const bytes = record(handshake(clientHelloBody({ extensions: [sniExt("a.example")] })));
    expect(parseClientHello(bytes.subarray(0, bytes.length - 1))).toEqual({ status: "incomplete" });
  });
});

describe("parseClientHello properties", () => {
  const hostnameChars = /^[a-z0-9._-]+$/;
  const wellFormed = (r: ReturnType<typeof parseClientHello>): void => {
    expect(["incomplete", "ok", "not-tls", "invalid"]).toContain(r.status);
    if (r.status === "ok") {
      if (r.sni !== null) expect(r.sni).toMatch(hostnameChars);
      expect(r.alpn.every((p) => typeof p === "string" && p.length > 0)).toBe(true);
    }
    if (r.status === "invalid") expect(typeof r.error).toBe("string");
  };

  it("never throws on random bytes, and any ok it gives is well formed", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20_000 }), (bytes) => wellFormed(parseClientHello(Buffer.from(bytes)))),
      runs(2000),
    );
  });

  it("never throws on random bytes behind a handshake record header", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.integer({ min: 0, max: 0xffff }), (bytes, len) => {
        const framed = Buffer.concat([Buffer.from([22, 3, 1]), u16(len), Buffer.from([1]), Buffer.from(bytes)]);
        wellFormed(parseClientHello(framed));
      }),
      runs(2000),
    );
  });

  it("never throws on a real ClientHello with random bytes overwritten", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        (edits) => {
          const bytes = Buffer.from(nodeHello);
          for (const [pos, value] of edits) bytes[pos % bytes.length] = value;
          wellFormed(parseClientHello(bytes));
        },
      ),
      runs(3000),
    );
  });

  it("gives the same answer however a real ClientHello is split into records and truncated", () => {
    const message = messageOf(nodeHello);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 20 }), fc.nat(), (sizes, cut) => {
        const bytes = records(message, ...sizes);
        expect(parseClientHello(bytes)).toEqual(okResult);
        const prefix = bytes.subarray(0, cut % bytes.length);
        expect(parseClientHello(prefix)).toEqual({ status: "incomplete" });
      }),
      runs(1000),
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("readClientHello", () => {
  let server: net.Server;
  let port: number;
  let accepted: (s: net.Socket) => void = () => undefined;
  const open = new Set<net.Socket>();

  /** Listener counts of the events readClientHello uses: it must leave them as it found them. */
  const listeners = (s: net.Socket): number[] => ["data", "end", "close", "error"].map((e) => s.listenerCount(e));

  beforeAll(async () => {
    server = net.createServer({ pauseOnConnect: true }, (s) => {
      s.on("error", () => undefined);
      open.add(s);
      accepted(s);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    // A failed test must not leave a connection that keeps close() waiting.
    for (const s of open) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  /** Connect a client to the loopback server; resolves with both ends. */
  async function pair(): Promise<{ client: net.Socket; serverSide: net.Socket }> {
    const serverSide = new Promise<net.Socket>((r) => (accepted = r));
    const client = net.connect(port, "127.0.0.1");
    client.on("error", () => undefined);
    await new Promise<void>((r) => client.once("connect", () => r()));
    return { client, serverSide: await serverSide };
  }

  it("reads a real TLS client's ClientHello from a paused socket and returns every byte it consumed", async () => {
    const { client, serverSide } = await pair();
    const tlsClient = tls.connect({ socket: client, servername: "api.example.com", ALPNProtocols: ["h2", "http/1.1"] });
    tlsClient.on("error", () => undefined);
    const before = listeners(serverSide);
    const { result, buffered, stoppedBy } = await readClientHello(serverSide, { timeoutMs: 5000 });
    expect(stoppedBy).toBe("parser");
    expect(result).toEqual(okResult);
    expect(parseClientHello(buffered)).toEqual(okResult);
    expect(listeners(serverSide)).toEqual(before);
    expect(serverSide.isPaused()).toBe(true);
    tlsClient.destroy();
    serverSide.destroy();
  });

  it("lets the caller replay the consumed bytes: unshift puts the stream back exactly as sent", async () => {
    const { client, serverSide } = await pair();
    const message = messageOf(nodeHello);
    const sent = Buffer.concat([records(message, 20), Buffer.from("after-the-hello")]);
    // Two writes with a pause between them: the reader must wait for the second record.
    client.write(sent.subarray(0, 30));
    setTimeout(() => client.end(sent.subarray(30)), 50);
    const { result, buffered } = await readClientHello(serverSide, { timeoutMs: 5000 });
    expect(result).toEqual(okResult);
    serverSide.unshift(buffered);
    const replayed: Buffer[] = [];
    serverSide.on("data", (c: Buffer) => replayed.push(c));
    serverSide.resume();
    await new Promise<void>((r) => serverSide.once("end", () => r()));
    expect(Buffer.concat(replayed)).toEqual(sent);
    serverSide.destroy();
  });

  it("hands back plain HTTP as not-tls with the bytes it read", async () => {
    const { client, serverSide } = await pair();
    client.write("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    const { result, buffered } = await readClientHello(serverSide, { timeoutMs: 5000 });
    expect(result).toEqual({ status: "not-tls" });
    expect(buffered.toString()).toMatch(/^GET \/ HTTP\/1\.1/);
    client.destroy();
    serverSide.destroy();
  });

  it("stops at the timeout with incomplete and the partial bytes", async () => {
    const { client, serverSide } = await pair();
    client.write(nodeHello.subarray(0, 10));
    const before = listeners(serverSide);
    const started = Date.now();
    const { result, buffered, stoppedBy } = await readClientHello(serverSide, { timeoutMs: 200 });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(stoppedBy).toBe("timeout");
    expect(result).toEqual({ status: "incomplete" });
    expect(buffered).toEqual(nodeHello.subarray(0, 10));
    expect(listeners(serverSide)).toEqual(before);
    client.destroy();
    serverSide.destroy();
  });

  it("stops at EOF in the middle of a ClientHello", async () => {
    const { client, serverSide } = await pair();
    client.end(nodeHello.subarray(0, 100));
    const { result, buffered, stoppedBy } = await readClientHello(serverSide, { timeoutMs: 5000 });
    expect(stoppedBy).toBe("eof");
    expect(result).toEqual({ status: "incomplete" });
    expect(buffered.length).toBe(100);
    serverSide.destroy();
  });

  it("answers invalid once more than maxBytes would be needed", async () => {
    const { client, serverSide } = await pair();
    client.write(nodeHello);
    const { result } = await readClientHello(serverSide, { timeoutMs: 5000, maxBytes: 64 });
    expect(result).toMatchObject({ status: "invalid" });
    client.destroy();
    serverSide.destroy();
  });

  it("reassembles a ClientHello delivered in two chunks, at every split point", async () => {
    for (let i = 1; i < nodeHello.length; i++) {
      const stream = new PassThrough();
      stream.write(nodeHello.subarray(0, i));
      setImmediate(() => stream.write(nodeHello.subarray(i)));
      const { result, buffered } = await readClientHello(stream as unknown as net.Socket, { timeoutMs: 5000 });
      expect(result).toEqual(okResult);
      expect(buffered).toEqual(nodeHello);
    }
  });
});
