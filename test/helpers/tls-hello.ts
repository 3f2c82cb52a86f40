import type net from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";

/** What node:tls writes first (its ClientHello) when connecting over a stream that never answers. */
export function captureNodeHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const transport = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
        setImmediate(() => {
          resolve(Buffer.concat(chunks));
          client.destroy();
        });
      },
    });
    const client = tls.connect({ socket: transport as unknown as net.Socket, ...opts });
    client.on("error", () => undefined);
  });
}
