/**
 * Resource limits under attack: a connection refused with 429 too-many-connections must not have its requests
 * acted on anyway (no decision, no dial, nothing forwarded), whatever it pipelines behind the connect.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { startEchoServer } from "../helpers/upstream.js";
import { firstResponse, readAll, startRecorder, type Recorder } from "./helpers.js";

const LIMIT = 3;

describe("the connection limit", () => {
  let proxy: RunningProxy;
  let web: Recorder;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  const held: net.Socket[] = [];

  beforeAll(async () => {
    web = await startRecorder("127.0.0.1");
    echo = await startEchoServer();
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1" });
    proxy = await startProxy({
      policy: { mode: "custom", allow_domains: ["allowed.test"] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--max-connections", String(LIMIT)],
    });
    const [host, port] = [proxy.proxy.split(":")[0]!, Number(proxy.proxy.split(":")[1])];
    for (let i = 0; i < LIMIT; i++) {
      const s = net.connect(port, host);
      s.on("error", () => undefined);
      await new Promise((r) => s.once("connect", r));
      held.push(s);
    }
    // Let the proxy count them before the over-limit connections arrive.
    await new Promise((r) => setTimeout(r, 100));
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await web?.close();
    await echo?.close();
    await proxy?.stop();
  });

  /** Open one more connection, send `data` with it, return everything the proxy answers. */
  async function overLimit(data: string): Promise<string> {
    const [host, port] = [proxy.proxy.split(":")[0]!, Number(proxy.proxy.split(":")[1])];
    const s = net.connect({ host, port });
    const all = readAll(s, 3000);
    s.write(data);
    return all;
  }

  it("answers 429 too-many-connections, and the GET that came with the connection is not forwarded", async () => {
    const transcript = await overLimit(`GET http://allowed.test:${web.port}/over-limit HTTP/1.1\r\nHost: allowed.test\r\n\r\n`);
    const r = firstResponse(transcript);
    expect(r.status).toBe(429);
    expect(r.headers["x-egress-denied"]).toBe("too-many-connections");
    expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(web.requests.map((q) => q.url)).not.toContain("/over-limit");
    expect(web.connections).toBe(0);
  });

  it("answers 429, and the CONNECT that came with the connection dials nothing", async () => {
    const transcript = await overLimit(`CONNECT allowed.test:${echo.port} HTTP/1.1\r\nHost: allowed.test\r\n\r\nhello`);
    expect(firstResponse(transcript).status).toBe(429);
    expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(echo.connections).toBe(0);
  });

  it("audits the refusals as connections, not as egress decisions", async () => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(proxy.audit().filter((l) => l.host === "allowed.test")).toEqual([]);
  });
});
