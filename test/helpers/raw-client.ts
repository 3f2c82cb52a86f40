import net from "node:net";

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The socket, still open after a 200 to CONNECT. */
  socket: net.Socket;
  /** Bytes received after the response head (the start of tunnel data). */
  rest: Buffer;
}

/** Send raw bytes to host:port and read one HTTP/1.1 response head (+ Content-Length body). */
export function rawRequest(hostPort: string, data: string | Buffer, opts: { timeoutMs?: number } = {}): Promise<RawResponse> {
  const i = hostPort.lastIndexOf(":");
  const host = hostPort.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  const port = Number(hostPort.slice(i + 1));
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no response within ${opts.timeoutMs ?? 5000} ms; got ${JSON.stringify(buf.toString())}`));
    }, opts.timeoutMs ?? 5000);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      tryParse(false);
    };
    const tryParse = (ended: boolean): void => {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (ended) {
          clearTimeout(timer);
          reject(new Error(`connection closed without a response head: ${JSON.stringify(buf.toString())}`));
        }
        return;
      }
      const head = buf.subarray(0, end).toString("latin1").split("\r\n");
      const status = Number(head[0]!.split(" ")[1]);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const c = line.indexOf(":");
        headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
      }
      const after = buf.subarray(end + 4);
      if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
        const decoded = decodeChunked(after);
        if (!decoded) {
          if (ended) {
            clearTimeout(timer);
            reject(new Error("connection closed inside a chunked body"));
          }
          return;
        }
        clearTimeout(timer);
        socket.off("data", onData);
        socket.off("end", onEnd);
        resolve({ status, headers, body: decoded.body.toString(), rest: decoded.rest, socket });
        return;
      }
      const len = headers["content-length"] !== undefined ? Number(headers["content-length"]) : status === 200 ? 0 : -1;
      if (len >= 0 && after.length < len && !ended) return;
      if (len < 0 && !ended) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      const bodyLen = len >= 0 ? len : after.length;
      resolve({ status, headers, body: after.subarray(0, bodyLen).toString(), rest: after.subarray(bodyLen), socket });
    };
    const onEnd = (): void => tryParse(true);
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.write(data);
  });
}

export function connectRequest(proxy: string, target: string, extra = ""): Promise<RawResponse> {
  return rawRequest(proxy, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${extra}\r\n`);
}

/** Parse a refusal body and return the error code. */
export function refusalCode(r: RawResponse): string {
  return (JSON.parse(r.body) as { error: { code: string } }).error.code;
}

/** Decode a complete chunked body (RFC 9112 §7.1); null while incomplete. */
function decodeChunked(buf: Buffer): { body: Buffer; rest: Buffer } | null {
  const parts: Buffer[] = [];
  let i = 0;
  for (;;) {
    const lineEnd = buf.indexOf("\r\n", i);
    if (lineEnd < 0) return null;
    const size = parseInt(buf.subarray(i, lineEnd).toString().split(";")[0]!, 16);
    if (Number.isNaN(size)) throw new Error("bad chunk size");
    const start = lineEnd + 2;
    if (size === 0) {
      const trailerEnd = buf.indexOf("\r\n", start);
      if (trailerEnd < 0) return null;
      return { body: Buffer.concat(parts), rest: buf.subarray(trailerEnd + 2) };
    }
    if (buf.length < start + size + 2) return null;
    parts.push(buf.subarray(start, start + size));
    i = start + size + 2;
  }
}
