/**
 * The admin REST under attack: missing or wrong credentials, oversized and malformed bodies, rule-count caps,
 * concurrent writers racing on one revision, and the admin port seen from the sandbox side of the proxy.
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { port as portOf, startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest } from "../helpers/raw-client.js";
import { admin, firstResponse, readAll, type AdminResponse } from "./helpers.js";

const TOKEN = "adm1n-t0ken-f0r-the-security-suite";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const MiB = 1024 * 1024;

describe("the admin REST", () => {
  let proxy: RunningProxy;

  beforeAll(async () => {
    proxy = await startProxy({
      policy: { mode: "custom", allow_domains: ["start.example.com"] },
      args: ["--internal-allow", "127.0.0.0/8"],
      env: { SANDBOX_EGRESS_ADMIN_TOKEN: TOKEN },
    });
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<AdminResponse> =>
    admin(proxy, method, path, body, { ...AUTH, ...headers });
  const revision = async (): Promise<number> => (await call("GET", "/v1/policy")).json!.revision as number;

  /** Raw bytes to the admin listener; everything it answers until it closes. */
  function rawAdmin(data: string | Buffer, ms = 5000): Promise<string> {
    const socket = net.connect({ host: "127.0.0.1", port: portOf(proxy.admin) });
    socket.on("error", () => undefined);
    const all = readAll(socket, ms);
    socket.write(data);
    return all;
  }

  describe("authentication: 401 for every route without the right bearer token", () => {
    const ROUTES: [string, string, unknown][] = [
      ["GET", "/v1/policy", undefined],
      ["PUT", "/v1/policy", { mode: "allow-all" }],
      ["POST", "/v1/policy/validate", { mode: "allow-all" }],
      ["POST", "/v1/decide", { host: "example.com", port: 443 }],
      ["GET", "/v1/state", undefined],
      ["PUT", "/v1/state", { paused: true }],
      ["GET", "/metrics", undefined],
      ["GET", "/policy", undefined],
      ["PATCH", "/policy", [{ action: "allow", target: "evil.example.com" }]],
      ["DELETE", "/policy", ["start.example.com"]],
      ["GET", "/v1/no-such-route", undefined],
    ];

    it.each(ROUTES)("%s %s without credentials", async (method, path, body) => {
      const r = await admin(proxy, method, path, body);
      expect(r.status).toBe(401);
      expect(r.json).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
    });

    it.each([
      ["a wrong token", "Bearer wrong"],
      ["the token with a suffix", `Bearer ${TOKEN}x`],
      ["a prefix of the token", `Bearer ${TOKEN.slice(0, -1)}`],
      ["the token without a scheme", TOKEN],
      ["the token as Basic credentials", `Basic ${Buffer.from(`admin:${TOKEN}`).toString("base64")}`],
      ["the token under another scheme", `Token ${TOKEN}`],
      ["an empty bearer", "Bearer "],
      ["the token quoted", `Bearer "${TOKEN}"`],
    ])("GET /v1/policy with %s", async (_name, authorization) => {
      const r = await admin(proxy, "GET", "/v1/policy", undefined, { authorization });
      expect(r.status).toBe(401);
      expect(r.text).not.toContain(TOKEN);
    });

    it("a token in the query string, or forwarding headers claiming loopback, are not credentials", async () => {
      for (const path of [`/v1/policy?token=${TOKEN}`, `/v1/policy?access_token=${TOKEN}`]) expect((await admin(proxy, "GET", path)).status).toBe(401);
      const r = await admin(proxy, "GET", "/v1/policy", undefined, { "x-forwarded-for": "127.0.0.1", forwarded: "for=127.0.0.1", "x-real-ip": "127.0.0.1" });
      expect(r.status).toBe(401);
    });

    it("unauthenticated writes change nothing: policy, revision, file and pause state stay as they were", async () => {
      const rev = await revision();
      const file = readFileSync(proxy.policyFile, "utf8");
      expect((await admin(proxy, "PUT", "/v1/policy", { mode: "allow-all" })).status).toBe(401);
      expect((await admin(proxy, "PATCH", "/policy", [{ action: "allow", target: "evil.example.com" }])).status).toBe(401);
      expect((await admin(proxy, "DELETE", "/policy", ["start.example.com"])).status).toBe(401);
      expect((await admin(proxy, "PUT", "/v1/state", { paused: true })).status).toBe(401);
      expect(await revision()).toBe(rev);
      expect(readFileSync(proxy.policyFile, "utf8")).toBe(file);
      expect((await call("GET", "/v1/state")).json).toMatchObject({ paused: false });
    });

    it("an unauthenticated request is refused before its body is read: 401 at once, and the connection is closed", async () => {
      const started = Date.now();
      const transcript = await rawAdmin(`PUT /v1/policy HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: ${1024 * MiB}\r\n\r\n{`);
      const r = firstResponse(transcript);
      expect(r.status).toBe(401);
      expect(r.headers.connection).toBe("close");
      // Closed by the server, not left open to swallow the announced gigabyte (readAll would wait 5 s).
      expect(Date.now() - started).toBeLessThan(2500);
    });

    it("the auth scheme is case-insensitive (RFC 9110 §11.1); /healthz and /v1/ca.pem need no token", async () => {
      expect((await admin(proxy, "GET", "/v1/policy", undefined, { authorization: `bearer ${TOKEN}` })).status).toBe(200);
      expect((await admin(proxy, "GET", "/healthz")).status).toBe(200);
      expect((await admin(proxy, "GET", "/v1/ca.pem")).status).toBe(200);
    });

    it("the token never appears in the proxy's output", () => {
      expect([...proxy.lines, ...proxy.stderr].join("\n")).not.toContain(TOKEN);
    });
  });

  describe("request bodies", () => {
    it("a declared body over 16 MiB answers 413 body-too-large without being read, and closes", async () => {
      const transcript = await rawAdmin(`PUT /v1/policy HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: ${17 * MiB}\r\n\r\n{`);
      const r = firstResponse(transcript);
      expect(r.status).toBe(413);
      expect(r.headers.connection).toBe("close");
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "body-too-large" } });
    });

    it("a chunked body that grows past 16 MiB answers 413 and changes nothing", async () => {
      const rev = await revision();
      const socket = net.connect({ host: "127.0.0.1", port: portOf(proxy.admin) });
      socket.on("error", () => undefined);
      const all = readAll(socket, 10_000);
      socket.write(`PUT /v1/policy HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      const chunk = Buffer.alloc(MiB, 0x20);
      for (let i = 0; i < 17 && !socket.destroyed; i++) {
        socket.write(`${chunk.length.toString(16)}\r\n`);
        socket.write(chunk);
        if (!socket.write("\r\n")) await new Promise((r) => socket.once("drain", r).once("close", r));
      }
      const r = firstResponse(await all);
      expect(r.status).toBe(413);
      expect(await revision()).toBe(rev);
      expect((await admin(proxy, "GET", "/healthz")).status).toBe(200);
    });

    it.each([
      ["{nope", "broken syntax"],
      ["", "an empty body"],
      ["   \n", "whitespace only"],
      ['{"mode":"allow-all"} trailing', "trailing garbage"],
      ['{"mode":"allow-all",}', "a trailing comma"],
      ['\ufeff{"mode":"allow-all"}', "a byte order mark"],
      ["{'mode':'allow-all'}", "single quotes"],
    ])("PUT /v1/policy with %j (%s) answers 400 invalid-json and changes nothing", async (body) => {
      const rev = await revision();
      const r = await call("PUT", "/v1/policy", body);
      expect(r.status).toBe(400);
      expect(r.json).toEqual({ error: { code: "invalid-json", message: expect.any(String) } });
      expect(await revision()).toBe(rev);
    });

    it.each(["/v1/policy/validate", "/v1/decide"])("POST %s with broken JSON answers 400 invalid-json", async (path) => {
      const r = await call("POST", path, "{nope");
      expect(r.status).toBe(400);
      expect((r.json!.error as { code: string }).code).toBe("invalid-json");
    });

    it.each([["null"], ["[]"], ['"allow-all"'], ["42"], ["true"]])("a policy that is JSON %s, not an object, answers 400 invalid-policy on (root)", async (body) => {
      const r = await call("PUT", "/v1/policy", body);
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ error: { code: "invalid-policy", errors: [{ field: "(root)" }] } });
    });

    it.each([["__proto__"], ["constructor"], ["prototype"]])("a policy with a %s key is refused, naming the key", async (key) => {
      const r = await call("PUT", "/v1/policy", `{"mode":"allow-all","${key}":{"polluted":true}}`);
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ error: { code: "invalid-policy", errors: [{ field: key }] } });
    });

    it("100,000 levels of nesting answer 400 and leave the proxy healthy", async () => {
      const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
      for (const body of [deep, `{"mode":"custom","allow_domains":${deep}}`]) {
        const r = await call("PUT", "/v1/policy", body);
        expect(r.status).toBe(400);
      }
      expect((await admin(proxy, "GET", "/healthz")).status).toBe(200);
    });

    it.each([
      [{}, "host"],
      [{ host: 443 }, "host"],
      [{ host: "example.com", port: 0 }, "port"],
      [{ host: "example.com", port: 65536 }, "port"],
      [{ host: "example.com", port: "443" }, "port"],
      [{ host: "example.com", port: 44.3 }, "port"],
    ])("POST /v1/decide %j answers 400 invalid-request naming %s", async (body, field) => {
      const r = await call("POST", "/v1/decide", body);
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ error: { code: "invalid-request", errors: [{ field }] } });
    });

    it("PUT /v1/state with a non-boolean answers 400 naming paused, and does not pause", async () => {
      const r = await call("PUT", "/v1/state", { paused: "yes" });
      expect(r.json).toMatchObject({ error: { code: "invalid-request", errors: [{ field: "paused" }] } });
      expect((await call("GET", "/v1/state")).json).toMatchObject({ paused: false });
    });

    it("the OpenSandbox routes reject malformed rule lists with the field at fault", async () => {
      const patch = await call("PATCH", "/policy", [{ action: "allow", target: "a.example.com" }, { action: "maybe", target: "b.example.com" }]);
      expect(patch.json).toMatchObject({ error: { code: "invalid-request", errors: [{ field: "[1].action" }] } });
      const del = await call("DELETE", "/policy", { target: "start.example.com" });
      expect(del.json).toMatchObject({ error: { code: "invalid-request", errors: [{ field: "(body)" }] } });
    });
  });

  describe("rule-count caps: a list above the cap answers 400 naming the field", () => {
    const cidrs = (n: number): string[] => Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);

    it.each([
      ["allow_cidrs", () => ({ mode: "custom", allow_cidrs: cidrs(100_001) }), "allow_cidrs", /has 100001 entries; at most 100,000 are allowed/],
      ["deny_cidrs", () => ({ mode: "allow-all", deny_cidrs: cidrs(100_001) }), "deny_cidrs", /has 100001 entries; at most 100,000 are allowed/],
      ["deny_domains", () => ({ mode: "allow-all", deny_domains: Array.from({ length: 100_001 }, (_, i) => `h${i}.example.com`) }), "deny_domains", /at most 100,000/],
      ["transforms", () => ({ mode: "custom", transforms: Array.from({ length: 1001 }, (_, i) => ({ domain: `h${i}.example.com`, strip_headers: ["x-a"] })) }), "transforms", /at most 1,000/],
      [
        "inject_headers",
        () => ({ mode: "custom", transforms: [{ domain: "h.example.com", inject_headers: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-h${i}`, "v"])) }] }),
        "transforms[0].inject_headers",
        /at most 100/,
      ],
      ["strip_headers", () => ({ mode: "custom", transforms: [{ domain: "h.example.com", strip_headers: Array.from({ length: 101 }, (_, i) => `x-h${i}`) }] }), "transforms[0].strip_headers", /at most 100/],
    ])("%s above its cap", async (_name, make, field, why) => {
      const rev = await revision();
      const r = await call("PUT", "/v1/policy", make());
      expect(r.status).toBe(400);
      const err = r.json!.error as { code: string; errors: { field: string; error: string }[] };
      expect(err.code).toBe("invalid-policy");
      expect(err.errors).toEqual([{ field, error: expect.stringMatching(why) }]);
      expect(await revision()).toBe(rev);
    });

    it("the OpenSandbox PATCH route cannot push a list past the cap either", async () => {
      const rules = Array.from({ length: 100_001 }, (_, i) => ({ action: "allow", target: `h${i}.example.com` }));
      const r = await call("PATCH", "/policy", rules);
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ error: { code: "invalid-policy", errors: [{ field: "allow_domains" }] } });
    });

    it("exactly at the cap is accepted", async () => {
      const r = await call("PUT", "/v1/policy", { mode: "custom", allow_cidrs: cidrs(100_000) });
      expect(r.status).toBe(200);
      expect(((r.json!.policy as { allow_cidrs: string[] }).allow_cidrs).length).toBe(100_000);
      expect((await call("PUT", "/v1/policy", { mode: "custom", allow_domains: ["start.example.com"] })).status).toBe(200);
    });
  });

  describe("If-Match revision races", () => {
    it("N parallel PUTs with the same If-Match: exactly one 200, every other one 412, nothing lost or doubled", async () => {
      for (let round = 0; round < 2; round++) {
        const rev = await revision();
        const N = 12;
        const results = await Promise.all(
          Array.from({ length: N }, (_, i) => call("PUT", "/v1/policy", { mode: "custom", allow_domains: [`writer${i}.example.com`] }, { "if-match": `"${rev}"` })),
        );
        const winners = results.filter((r) => r.status === 200);
        expect(winners).toHaveLength(1);
        expect(results.filter((r) => r.status === 412)).toHaveLength(N - 1);
        for (const r of results.filter((x) => x.status === 412)) expect((r.json!.error as { code: string }).code).toBe("revision-mismatch");
        expect(winners[0]!.json!.revision).toBe(rev + 1);
        const now = await call("GET", "/v1/policy");
        expect(now.json!.revision).toBe(rev + 1);
        expect(now.headers.get("etag")).toBe(`"${rev + 1}"`);
        expect(now.json!.policy).toEqual(winners[0]!.json!.policy);
        // The file on disk is the winner's policy too.
        expect(JSON.parse(readFileSync(proxy.policyFile, "utf8"))).toEqual(winners[0]!.json!.policy);
      }
    });

    it("a stale If-Match answers 412 and a malformed one 400; neither changes anything", async () => {
      const rev = await revision();
      const stale = await call("PUT", "/v1/policy", { mode: "deny-all" }, { "if-match": `"${rev - 1}"` });
      expect(stale.status).toBe(412);
      for (const bad of ["abc", '"1", "2"', '"-1"', ""]) {
        const r = await call("PUT", "/v1/policy", { mode: "deny-all" }, { "if-match": bad });
        expect(r.status, bad).toBe(400);
      }
      expect(await revision()).toBe(rev);
    });

    it("parallel OpenSandbox PATCHes never lose an update: each rule is applied, or its PATCH answers 409", async () => {
      const N = 8;
      const results = await Promise.all(Array.from({ length: N }, (_, i) => call("PATCH", "/policy", [{ action: "allow", target: `patch${i}.example.com` }])));
      const policy = (await call("GET", "/v1/policy")).json!.policy as { allow_domains?: string[] };
      results.forEach((r, i) => {
        expect([200, 409], r.text).toContain(r.status);
        if (r.status === 200) expect(policy.allow_domains, `PATCH ${i} answered 200 but its rule is gone`).toContain(`patch${i}.example.com`);
      });
      expect(results.some((r) => r.status === 200)).toBe(true);
    });
  });

  describe("the admin port seen from the sandbox", () => {
    it("is refused through the proxy as internal-address even with the right token (self-address refusal)", async () => {
      // allow-all, and loopback exempted: nothing but the self rule stands between the sandbox and the admin port.
      expect((await call("PUT", "/v1/policy", { mode: "allow-all" })).status).toBe(200);
      const adminPort = portOf(proxy.admin);
      const get = await rawRequest(proxy.proxy, `GET http://127.0.0.1:${adminPort}/v1/policy HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
      get.socket.destroy();
      expect(get.status).toBe(403);
      expect(get.headers["x-egress-denied"]).toBe("internal-address");
      const put = await rawRequest(proxy.proxy, `PUT http://localhost:${adminPort}/v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{"mode":"allow-all"}`);
      put.socket.destroy();
      expect(put.headers["x-egress-denied"]).toBe("internal-address");
      const tunnel = await connectRequest(proxy.proxy, `127.1:${adminPort}`);
      tunnel.socket.destroy();
      expect(tunnel.headers["x-egress-denied"]).toBe("internal-address");
      expect((await call("GET", "/v1/policy")).json!.policy).toEqual({ mode: "allow-all" });
    });
  });
});
