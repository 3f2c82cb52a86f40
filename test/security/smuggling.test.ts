/**
 * Request smuggling and header hygiene on the forward listener. A message whose framing two parsers could
 * read differently (CL+TE, duplicate Content-Length, obs-fold, bare LF, control characters) answers 400, and
 * one whose headers are too large answers 431, with NOTHING forwarded: the loopback upstream records no
 * request and no new connection. Well-formed bodies are re-framed by the proxy, so bytes hidden behind a
 * body are parsed by the proxy as its own next request, never passed through.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { errorCode, firstResponse, rawExchange, startRecorder, type Recorder } from "./helpers.js";

describe("request smuggling and header hygiene", () => {
  let proxy: RunningProxy;
  let up: Recorder;
  let T: string;

  beforeAll(async () => {
    up = await startRecorder("127.0.0.1");
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1" });
    proxy = await startProxy({ policy: { mode: "custom", allow_domains: ["allowed.test"] }, args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"] });
    T = `http://allowed.test:${up.port}`;
  });
  afterAll(async () => {
    await up?.close();
    await proxy?.stop();
  });

  /** Send one raw message; expect exactly one error response with `status` and `code`, and nothing forwarded. */
  async function expectRejected(message: string, status: number, code: string): Promise<void> {
    const requests = up.requests.length;
    const connections = up.connections;
    const transcript = await rawExchange(proxy.proxy, Buffer.from(message.replaceAll("TARGET", T), "latin1"));
    const r = firstResponse(transcript);
    expect(r.status, transcript).toBe(status);
    expect(errorCode(r.body)).toBe(code);
    // A protocol error, not a policy decision: no X-Egress-Denied, and the connection is closed.
    expect(r.headers["x-egress-denied"]).toBeUndefined();
    expect(r.headers.connection).toBe("close");
    expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
    // Give a late forward the chance to show up before concluding there was none.
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(up.requests.length, "a request reached the upstream").toBe(requests);
    expect(up.connections, "the upstream was dialled").toBe(connections);
  }

  describe("ambiguous framing: 400, nothing forwarded", () => {
    it.each([
      ["Content-Length with Transfer-Encoding (CL.TE)", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
      ["Transfer-Encoding with Content-Length (TE.CL)", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"],
      ["CL.TE on a GET", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
      ["two different Content-Length headers", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"],
      ["two identical Content-Length headers", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"],
      ["a Content-Length list", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"],
      ["a signed Content-Length", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"],
      ["a negative Content-Length", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello"],
      ["a hexadecimal Content-Length", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello"],
      ["a Content-Length with an inner space", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nhello"],
      ["Transfer-Encoding: chunked, identity", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"],
      ["Transfer-Encoding: xchunked", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"],
      ["Transfer-Encoding twice", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
      ["a space before the colon of Transfer-Encoding", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"],
      ["Transfer-Encoding folded onto the next line", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"],
      ["an invalid chunk size", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"],
      ["chunks delimited by bare LF", "POST TARGET/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"],
    ])("%s", async (_name, message) => {
      await expectRejected(message, 400, "bad-request");
    });
  });

  describe("malformed header lines: 400, nothing forwarded", () => {
    it.each([
      ["obs-fold (a header continued on an indented line)", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n"],
      ["obs-fold with a tab", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tfolded\r\n\r\n"],
      ["bare LF line endings", "GET TARGET/ HTTP/1.1\nHost: x\nX-A: a\n\n"],
      ["a bare LF inside the header block", "GET TARGET/ HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n"],
      ["a bare CR in a header value", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: 1\r\n\r\n"],
      ["NUL in a header value", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"],
      ["a control character in a header value", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n"],
      ["DEL in a header value", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n"],
      ["NUL in a header name", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n"],
      ["a space inside a header name", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n"],
      ["a separator inside a header name", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n"],
      ["a header line that starts with whitespace", "GET TARGET/ HTTP/1.1\r\n Host: x\r\n\r\n"],
      ["a header line without a colon", "GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n"],
      ["a request line with an extra token", "GET TARGET/ HTTP/1.1 extra\r\nHost: x\r\n\r\n"],
      ["a NUL in the request target", "GET TARGET/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"],
      ["a bare CR in the request line", "GET TARGET/\rX HTTP/1.1\r\nHost: x\r\n\r\n"],
    ])("%s", async (_name, message) => {
      await expectRejected(message, 400, "bad-request");
    });
  });

  describe("oversized headers: 431, nothing forwarded", () => {
    it.each([
      ["one 20 KB header", `GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`],
      ["3,000 small headers", `GET TARGET/ HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `X-${i}: a`).join("\r\n")}\r\n\r\n`],
      ["a 20 KB request target", `GET TARGET/${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
      ["a 20 KB header name", `GET TARGET/ HTTP/1.1\r\nHost: x\r\nX-${"a".repeat(20_000)}: b\r\n\r\n`],
    ])("%s", async (_name, message) => {
      await expectRejected(message, 431, "headers-too-large");
    });
  });

  describe("well-formed bodies are re-framed, so nothing can hide behind them", () => {
    it("a request hidden after the last chunk is parsed by the proxy as its own request, never forwarded as bytes", async () => {
      const before = up.requests.length;
      const transcript = await rawExchange(
        proxy.proxy,
        `POST ${T}/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: allowed.test\r\n\r\n`,
      );
      expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 400"]);
      // The hidden request is origin-form, which the forward listener does not take.
      expect(transcript).toMatch(/x-egress-denied: invalid-target/i);
      const seen = up.requests.slice(before);
      expect(seen.map((q) => [q.method, q.url, q.body])).toEqual([["POST", "/c", "hello"]]);
    });

    it("chunk extensions and trailers do not travel: the upstream gets the decoded body only", async () => {
      const before = up.requests.length;
      const transcript = await rawExchange(
        proxy.proxy,
        `POST ${T}/ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext="\\r\\nX-Injected: 1"\r\nhello\r\n0\r\nX-Trailer: evil\r\n\r\n`,
      );
      expect(firstResponse(transcript).status).toBe(200);
      const seen = up.requests.slice(before);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.body).toBe("hello");
      expect(seen[0]!.rawHeaders.map((h) => h.toLowerCase())).not.toContain("x-trailer");
      expect(seen[0]!.rawHeaders.map((h) => h.toLowerCase())).not.toContain("x-injected");
    });

    it("a Content-Length body that looks like a request stays a body", async () => {
      const before = up.requests.length;
      const hidden = "GET /smuggled HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
      const transcript = await rawExchange(
        proxy.proxy,
        `POST ${T}/cl HTTP/1.1\r\nHost: x\r\nContent-Length: ${hidden.length}\r\nConnection: close\r\n\r\n${hidden}`,
      );
      expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200"]);
      expect(up.requests.slice(before).map((q) => [q.url, q.body])).toEqual([["/cl", hidden]]);
    });

    it("Content-Length named in Connection cannot strip the framing: the body still arrives whole", async () => {
      const before = up.requests.length;
      const transcript = await rawExchange(
        proxy.proxy,
        `POST ${T}/conn HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close, Content-Length, Transfer-Encoding\r\n\r\nhello`,
      );
      expect(firstResponse(transcript).status).toBe(200);
      expect(up.requests.slice(before).map((q) => [q.url, q.body])).toEqual([["/conn", "hello"]]);
    });

    it("CR LF percent-encoded in the target stays encoded: no header injection upstream", async () => {
      const before = up.requests.length;
      const transcript = await rawExchange(proxy.proxy, `GET ${T}/a%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect(firstResponse(transcript).status).toBe(200);
      const seen = up.requests[before]!;
      expect(seen.url).toBe("/a%0d%0aX-Injected:%201");
      expect(seen.rawHeaders.map((h) => h.toLowerCase())).not.toContain("x-injected");
    });

    it("a POST body that arrives in the same packet as its headers is forwarded intact", async () => {
      const before = up.requests.length;
      await rawExchange(proxy.proxy, `POST ${T}/same-packet HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world`);
      expect(up.requests.slice(before).map((q) => q.body)).toEqual(["hello world"]);
    });

    it("the proxy keeps serving after every malformed message above", async () => {
      const transcript = await rawExchange(proxy.proxy, `GET ${T}/still-alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect(firstResponse(transcript).status).toBe(200);
    });
  });
});
