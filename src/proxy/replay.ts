import { Duplex } from "node:stream";
import type { Socket } from "node:net";

/**
 * A stream that yields `replay` (bytes already read off `socket`, e.g. a peeked ClientHello) and then the
 * socket's own data, and writes to the socket. Needed because tls.TLSSocket over a net.Socket reads straight
 * from the socket's native handle: bytes put back with socket.unshift() are never seen by the TLS engine, and
 * the handshake stalls. With nothing to replay the socket itself is returned (the fast native path).
 */
export function withReplay(socket: Socket, replay: Buffer): Duplex {
  if (replay.length === 0) return socket;
  let pending: Buffer | null = replay;
  const duplex = new Duplex({
    read() {
      if (pending) {
        const first = pending;
        pending = null;
        this.push(first);
      }
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.once("end", () => duplex.push(null));
  socket.once("close", () => duplex.destroy());
  socket.on("error", (err) => duplex.destroy(err));
  socket.pause();
  return duplex;
}
