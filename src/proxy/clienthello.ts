/**
 * TLS ClientHello peek: the SNI and ALPN a client sends, read before any byte goes upstream, so that an opaque
 * tunnel can judge the SNI host too (no domain fronting past the policy) and an intercepted one can check it.
 *
 * parseClientHello is sans-io (a buffer in, a value out) and total: it never throws, whatever the bytes.
 * Every length field is checked against its container; nothing is read past the buffer or past the 16 KiB cap.
 *
 * References: RFC 8446 §5.1 (record layer), §4 (handshake framing), §4.1.2 (ClientHello), §4.2 (extensions);
 * RFC 5246 §6.2.1 (record layer), §7.4.1.2 (ClientHello, optional extensions), §7.4.1.4 (extension block);
 * RFC 6066 §3 (server_name); RFC 7301 §3.1 (ALPN).
 */
import type net from "node:net";

/** Upper bound on the record bytes of one ClientHello, headers included. Real ones are 0.5–2 KiB. */
export const MAX_CLIENT_HELLO_BYTES = 16 * 1024;

export type ClientHelloResult =
  | { readonly status: "incomplete" }
  | { readonly status: "ok"; readonly sni: string | null; readonly alpn: string[] }
  | { readonly status: "not-tls" }
  | { readonly status: "invalid"; readonly error: string };

const RECORD_HEADER = 5; // ContentType(1) ProtocolVersion(2) length(2): RFC 8446 §5.1
const HANDSHAKE_HEADER = 4; // HandshakeType(1) uint24 length: RFC 8446 §4
const CONTENT_TYPE_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
/** RFC 8446 §5.1 / RFC 5246 §6.2.1: a plaintext fragment is at most 2^14 bytes. */
const MAX_RECORD_PAYLOAD = 1 << 14;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const NAME_TYPE_HOST_NAME = 0;
/** Bytes a host name may contain (LDH plus "_", which real DNS names carry); the hostport module judges the rest. */
const HOSTNAME_BYTE = /^[A-Za-z0-9._-]+$/;

const INCOMPLETE: ClientHelloResult = Object.freeze({ status: "incomplete" });
const NOT_TLS: ClientHelloResult = Object.freeze({ status: "not-tls" });
const invalid = (error: string): ClientHelloResult => ({ status: "invalid", error });

/**
 * Parse the ClientHello at the start of `buf` (the first bytes a client sent). Bytes after the ClientHello's last
 * record (0-RTT data, say) are ignored. `maxBytes` caps the record bytes examined; a ClientHello needing more is
 * invalid. Returns "incomplete" only while more bytes could still make it parse.
 */
export function parseClientHello(buf: Buffer, maxBytes: number = MAX_CLIENT_HELLO_BYTES): ClientHelloResult {
  if (buf.length === 0) return INCOMPLETE;
  // The first record must be a handshake record with a 3.x version (SSL 3.0 .. TLS 1.3 all say 3 here,
  // RFC 8446 §5.1 legacy_record_version). Anything else (plain HTTP, SSLv2, junk) is not TLS.
  if (buf[0] !== CONTENT_TYPE_HANDSHAKE || (buf.length >= 2 && buf[1] !== 3)) return NOT_TLS;

  const message = reassembleHandshake(buf, maxBytes);
  if ("status" in message) return message;
  return parseClientHelloBody(message.subarray(HANDSHAKE_HEADER));
}

/**
 * RFC 8446 §5.1: "Handshake messages MAY be coalesced into a single TLSPlaintext record or fragmented across
 * several records", and MUST NOT be interleaved with other record types. So: concatenate the payloads of
 * consecutive handshake records until the first handshake message is complete. Returns that message (header
 * included), or a result to hand back as is.
 */
function reassembleHandshake(buf: Buffer, maxBytes: number): Buffer | ClientHelloResult {
  const fragments: Buffer[] = [];
  let have = 0; // handshake bytes collected so far
  let needed = -1; // handshake header + body length, once the header is known
  let off = 0;

  for (;;) {
    if (off + RECORD_HEADER > maxBytes) return invalid(`the ClientHello is larger than ${maxBytes} bytes`);
    if (off + RECORD_HEADER > buf.length) return INCOMPLETE;
    if (buf[off] !== CONTENT_TYPE_HANDSHAKE) return invalid("a non-handshake record interrupts the ClientHello");
    if (buf[off + 1] !== 3) return invalid("a record has an unknown protocol version");
    const length = buf.readUInt16BE(off + 3);
    if (length === 0) return invalid("an empty handshake record"); // RFC 8446 §5.1: MUST NOT be sent
    if (length > MAX_RECORD_PAYLOAD) return invalid("a record is longer than 2^14 bytes");
    if (off + RECORD_HEADER + length > maxBytes) return invalid(`the ClientHello is larger than ${maxBytes} bytes`);

    // Take what has arrived of this record, so that the handshake header is judged as early as possible.
    const start = off + RECORD_HEADER;
    const available = Math.min(length, buf.length - start);
    fragments.push(buf.subarray(start, start + available));
    have += available;

    if (needed < 0 && have >= 1) {
      const first = concatFirst(fragments, 1)[0];
      if (first !== HANDSHAKE_CLIENT_HELLO) return invalid("the first handshake message is not a ClientHello");
    }
    if (needed < 0 && have >= HANDSHAKE_HEADER) {
      const header = concatFirst(fragments, HANDSHAKE_HEADER);
      needed = HANDSHAKE_HEADER + header.readUIntBE(1, 3);
      // A cheap early reject: even packed into full records it cannot fit within the cap.
      const minimumRecords = Math.ceil(needed / MAX_RECORD_PAYLOAD);
      if (needed + minimumRecords * RECORD_HEADER > maxBytes) {
        return invalid(`the ClientHello is larger than ${maxBytes} bytes`);
      }
    }
    if (needed >= 0 && have >= needed) return concatFirst(fragments, needed);
    if (available < length) return INCOMPLETE;
    off = start + length;
  }
}

/** The first `n` bytes of the concatenated fragments (the caller guarantees they hold at least n). */
function concatFirst(fragments: Buffer[], n: number): Buffer {
  return Buffer.concat(fragments).subarray(0, n);
}

/** A bounds-checked cursor over [pos, end): every read returns null instead of overrunning its container. */
class Reader {
  constructor(
    private readonly buf: Buffer,
    private pos = 0,
    private readonly end = buf.length,
  ) {}

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number | null {
    if (this.remaining < 1) return null;
    return this.buf[this.pos++] ?? null;
  }

  u16(): number | null {
    if (this.remaining < 2) return null;
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  skip(n: number): boolean {
    if (this.remaining < n) return false;
    this.pos += n;
    return true;
  }

  /** A TLS vector `opaque x<..2^8-1>` or `<..2^16-1>` (RFC 8446 §3.4): a length prefix, then that many bytes. */
  vector(prefixBytes: 1 | 2): Reader | null {
    const length = prefixBytes === 1 ? this.u8() : this.u16();
    if (length === null || this.remaining < length) return null;
    const inner = new Reader(this.buf, this.pos, this.pos + length);
    this.pos += length;
    return inner;
  }

  bytes(): Buffer {
    return this.buf.subarray(this.pos, this.end);
  }
}

/** RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2, where extensions may be absent). */
function parseClientHelloBody(body: Buffer): ClientHelloResult {
  const r = new Reader(body);
  const legacyVersion = r.u16();
  if (legacyVersion === null) return invalid("the ClientHello is truncated");
  if (legacyVersion >> 8 !== 3) return invalid("the ClientHello has an unknown protocol version");
  if (!r.skip(32)) return invalid("the ClientHello is truncated"); // random
  const sessionId = r.vector(1);
  if (sessionId === null || sessionId.remaining > 32) return invalid("the legacy_session_id is malformed");
  const cipherSuites = r.vector(2);
  if (cipherSuites === null || cipherSuites.remaining < 2 || cipherSuites.remaining % 2 !== 0) {
    return invalid("the cipher_suites list is malformed");
  }
  const compression = r.vector(1);
  if (compression === null || compression.remaining < 1) return invalid("the compression_methods list is malformed");

  // RFC 5246 §7.4.1.2: extensions are present exactly when bytes follow compression_methods.
  if (r.remaining === 0) return { status: "ok", sni: null, alpn: [] };
  const extensions = r.vector(2);
  if (extensions === null || r.remaining !== 0) return invalid("the extensions block length does not match the message");

  let sni: string | null = null;
  let alpn: string[] = [];
  const seen = new Set<number>();
  while (extensions.remaining > 0) {
    const type = extensions.u16();
    const data = extensions.vector(2);
    if (type === null || data === null) return invalid("an extension overruns the extensions block");
    // RFC 8446 §4.2 / RFC 5246 §7.4.1.4: one extension of each type. Two server_names would let the proxy judge
    // one name while the upstream serves the other.
    if (seen.has(type)) return invalid(`extension ${type} appears twice`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const parsed = parseServerName(data);
      if (typeof parsed !== "string") return parsed;
      sni = parsed;
    } else if (type === EXT_ALPN) {
      const parsed = parseAlpn(data);
      if (!Array.isArray(parsed)) return parsed;
      alpn = parsed;
    }
  }
  return { status: "ok", sni, alpn };
}

/**
 * RFC 6066 §3: ServerNameList<1..2^16-1> of { NameType name_type; HostName<1..2^16-1> }. Only host_name (0) is
 * defined; other types are skipped assuming the same length-prefixed layout, as Go's crypto/tls does. More than one
 * host_name is prohibited. The name is returned lower-cased, otherwise as sent (a trailing dot is the hostport
 * module's to remove).
 */
function parseServerName(data: Reader): string | ClientHelloResult {
  const list = data.vector(2);
  if (list === null || data.remaining !== 0 || list.remaining === 0) return invalid("the server_name extension is malformed");
  let hostName: string | null = null;
  while (list.remaining > 0) {
    const nameType = list.u8();
    const name = list.vector(2);
    if (nameType === null || name === null || name.remaining === 0) return invalid("the server_name extension is malformed");
    if (nameType !== NAME_TYPE_HOST_NAME) continue;
    if (hostName !== null) return invalid("the server_name extension names more than one host");
    const text = name.bytes().toString("latin1");
    if (text.length > 255 || !HOSTNAME_BYTE.test(text)) return invalid("the server_name is not a valid host name");
    hostName = text.toLowerCase();
  }
  return hostName ?? invalid("the server_name extension has no host_name");
}

/** RFC 7301 §3.1: ProtocolNameList<2..2^16-1> of ProtocolName<1..2^8-1>. Names are opaque bytes, kept as latin1. */
function parseAlpn(data: Reader): string[] | ClientHelloResult {
  const list = data.vector(2);
  if (list === null || data.remaining !== 0 || list.remaining < 2) return invalid("the ALPN extension is malformed");
  const protocols: string[] = [];
  while (list.remaining > 0) {
    const name = list.vector(1);
    if (name === null || name.remaining === 0) return invalid("the ALPN extension is malformed");
    protocols.push(name.bytes().toString("latin1"));
  }
  return protocols;
}

export interface ReadClientHelloResult {
  result: ClientHelloResult;
  /** Every byte read from the socket, to be replayed (socket.unshift, or written upstream) by the caller. */
  buffered: Buffer;
  /** Why reading stopped: the parser decided, or the client timed out, ended, or errored (result "incomplete"). */
  stoppedBy: "parser" | "timeout" | "eof" | "error";
}

/**
 * Read from `socket` until the parser decides (ok / not-tls / invalid), the client ends or errors, or
 * `timeoutMs` passes (result "incomplete" in those three cases). Never rejects. Leaves the socket paused with
 * none of its listeners attached; bytes after `buffered` stay in the socket's readable buffer. The socket must
 * not have an encoding set (setEncoding): the parser needs the raw bytes.
 */
export function readClientHello(
  socket: net.Socket,
  opts: { timeoutMs: number; maxBytes?: number },
): Promise<ReadClientHelloResult> {
  const maxBytes = opts.maxBytes ?? MAX_CLIENT_HELLO_BYTES;
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    if (socket.readableEnded || socket.destroyed) {
      resolve({ result: INCOMPLETE, buffered, stoppedBy: socket.destroyed ? "error" : "eof" });
      return;
    }

    const finish = (result: ClientHelloResult, stoppedBy: ReadClientHelloResult["stoppedBy"]): void => {
      clearTimeout(timer);
      // Pause before dropping the 'data' listener: a flowing stream with no listener would discard bytes.
      socket.pause();
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onError);
      socket.off("close", onEnd);
      resolve({ result, buffered, stoppedBy });
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const result = parseClientHello(buffered, maxBytes);
      if (result.status !== "incomplete") finish(result, "parser");
    };
    const onEnd = (): void => finish(INCOMPLETE, "eof");
    const onError = (): void => finish(INCOMPLETE, "error");
    const timer = setTimeout(() => finish(INCOMPLETE, "timeout"), opts.timeoutMs);

    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.once("error", onError);
    // An explicitly paused socket does not start flowing when a 'data' listener is added; resume it ourselves.
    socket.resume();
  });
}
