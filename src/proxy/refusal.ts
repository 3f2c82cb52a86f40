import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { DENY_CODES, type DenyCode } from "../policy/codes.js";

/** The JSON body of every refusal (CONTRACT.md): never an address, never a secret. */
export function refusalBody(code: DenyCode, host: string): string {
  return JSON.stringify({ error: { code, message: DENY_CODES[code].message, host } });
}

/** Refuse a request that has a ServerResponse (forward proxy, intercepted request, transparent HTTP). */
export function refuse(res: ServerResponse, code: DenyCode, host: string, opts: { close?: boolean } = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = refusalBody(code, host);
  res.writeHead(DENY_CODES[code].status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "x-egress-denied": code,
    ...(opts.close ? { connection: "close" } : {}),
  });
  res.end(body);
}

/** Refuse on a raw socket (CONNECT, connection limit, transparent listener) and close it. */
export function refuseRaw(socket: Duplex, code: DenyCode, host: string): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = refusalBody(code, host);
  const status = DENY_CODES[code].status;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\n` +
      "Content-Type: application/json\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      `X-Egress-Denied: ${code}\r\n` +
      "Connection: close\r\n\r\n" +
      body,
  );
}

/** A protocol error that is not a policy decision (malformed request, oversized headers): no X-Egress-Denied. */
export function protocolErrorRaw(socket: Duplex, status: 400 | 408 | 431, code: string, message: string): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  421: "Misdirected Request",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};
