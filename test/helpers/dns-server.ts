import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";

/** What the test server answers for one question: addresses, NXDOMAIN, or silence (the client times out). */
export type DnsAnswer = string[] | "nxdomain" | "timeout";

export interface DnsServerHandle {
  /** "127.0.0.1:PORT", ready for `--dns-server` or `new Resolver({ dnsServer })`. */
  readonly address: string;
  /** Every A/AAAA question received, in arrival order (names lower-cased, no trailing dot). */
  readonly queries: { name: string; type: string }[];
  close(): Promise<void>;
}

export interface DnsServerOptions {
  /** TTL of every answer record. Default 0, so that no resolver along the way may reuse an answer. */
  ttl?: number;
}

const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;

/**
 * A real UDP DNS server on 127.0.0.1 for tests. `answer` is called for every A and AAAA question, so a test can
 * change the answer between lookups (a DNS-rebinding attacker does exactly that). Addresses of the other family
 * are left out of each answer; an empty list is NODATA. Other query types get NOTIMP.
 */
export async function startDnsServer(
  answer: (name: string, type: "A" | "AAAA") => DnsAnswer,
  opts: DnsServerOptions = {},
): Promise<DnsServerHandle> {
  const ttl = opts.ttl ?? 0;
  const queries: { name: string; type: string }[] = [];
  const socket = dgram.createSocket("udp4");

  socket.on("message", (msg, rinfo) => {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS: a real server would drop it too
    }
    const question = query.questions?.[0];
    if (query.type !== "query" || question === undefined) return;
    const name = question.name.toLowerCase().replace(/\.$/, "");
    queries.push({ name, type: question.type });

    let rcode = 0;
    const answers: dnsPacket.Answer[] = [];
    if (question.type === "A" || question.type === "AAAA") {
      const result = answer(name, question.type);
      if (result === "timeout") return;
      if (result === "nxdomain") rcode = RCODE_NXDOMAIN;
      else {
        // Only addresses of the asked family, so that `() => ["192.0.2.1", "2001:db8::1"]` describes a dual-stack name.
        const family = question.type === "A" ? 4 : 6;
        for (const data of result.filter((a) => net.isIP(a) === family)) {
          answers.push({ type: question.type, name: question.name, ttl, class: "IN", data });
        }
      }
    } else {
      rcode = RCODE_NOTIMP;
    }
    const response = dnsPacket.encode({
      type: "response",
      id: query.id ?? 0,
      // The rcode is the low four bits of the flags word (RFC 1035 §4.1.1); dns-packet has no separate field.
      flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE | ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | rcode,
      questions: [question],
      answers,
    });
    socket.send(response, rinfo.port, rinfo.address);
  });

  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => {
      socket.off("error", reject);
      resolve();
    });
  });
  // Errors after bind (e.g. ICMP port unreachable reported on send) must not crash the test process.
  socket.on("error", () => undefined);

  return {
    address: `127.0.0.1:${socket.address().port}`,
    queries,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
