/**
 * The sandbox's init payload, run by bwrap inside the sandbox's namespaces (pid 2, under bwrap's reaper).
 *
 * 1. Listens on 127.0.0.1:3128 (the sandbox's own loopback) and relays every connection, byte for byte, to the
 *    egress proxy's unix socket, which is bind-mounted at /run/egress/proxy.sock. The sandbox's network namespace
 *    has nothing but `lo`: this relay is its only way out, and the proxy judges everything that goes through.
 * 2. Then starts the sandbox's entrypoint with the environment it was handed on a pipe (never on a command line
 *    that `ps` shows, and never in this process's own environment, so that e.g. NODE_OPTIONS in the sandbox's
 *    env cannot run code in this process), as the unprivileged sandbox user, and exits with its status.
 *
 * Standalone on purpose: node builtins only, because it is bind-mounted alone into the sandbox.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, readFileSync, statSync, writeSync } from "node:fs";
import net from "node:net";
import { constants } from "node:os";

interface BridgeArgs {
  listen: { host: string; port: number; optional: boolean }[];
  socket: string;
  uid?: number;
  gid?: number;
  readyFd?: number;
  envFd?: number;
  cwd: string;
  command: string[];
}

function parseArgs(argv: string[]): BridgeArgs {
  const args: BridgeArgs = { listen: [], socket: "/run/egress/proxy.sock", cwd: "/workspace", command: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--") {
      args.command = argv.slice(i + 1);
      break;
    } else if (a === "--listen" || a === "--listen-optional") {
      const v = next();
      const at = v.lastIndexOf(":");
      args.listen.push({ host: v.slice(0, at).replace(/^\[(.*)\]$/, "$1"), port: Number(v.slice(at + 1)), optional: a === "--listen-optional" });
    } else if (a === "--socket") args.socket = next();
    else if (a === "--uid") args.uid = Number(next());
    else if (a === "--gid") args.gid = Number(next());
    else if (a === "--ready-fd") args.readyFd = Number(next());
    else if (a === "--env-fd") args.envFd = Number(next());
    else if (a === "--cwd") args.cwd = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (args.command.length === 0) throw new Error("no entrypoint after --");
  return args;
}

function relay(client: net.Socket, socketPath: string): void {
  const upstream = net.connect({ path: socketPath, allowHalfOpen: true });
  // Half-close travels through (pipe ends the other side's writable): CONNECT tunnels rely on it.
  client.pipe(upstream);
  upstream.pipe(client);
  const destroy = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", destroy);
  upstream.on("error", destroy);
  client.on("close", destroy);
  upstream.on("close", destroy);
}

async function listen(args: BridgeArgs): Promise<void> {
  for (const l of args.listen) {
    const server = net.createServer({ allowHalfOpen: true }, (c) => relay(c, args.socket));
    server.on("error", (err) => process.stderr.write(`sandbox-egress bridge: ${l.host}:${l.port}: ${err.message}\n`));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: l.host, port: l.port }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      // ::1 is absent when IPv6 is disabled; only the IPv4 listener is required.
      if (!l.optional) throw err;
    }
  }
}

/**
 * setpriv reports a missing entrypoint only by exiting 127 after the sandbox counted as started; check first,
 * as the sandbox user would see it (PATH lookup, an execute bit that applies to that uid/gid).
 */
function notRunnable(cmd: string, pathVar: string, uid: number | undefined, gid: number | undefined): string | null {
  const candidates = cmd.includes("/") ? [cmd] : pathVar.split(":").filter(Boolean).map((d) => `${d}/${cmd}`);
  let seen = false;
  for (const c of candidates) {
    let st;
    try {
      st = statSync(c);
    } catch {
      continue;
    }
    seen = true;
    if (!st.isFile()) continue;
    const bit = uid === undefined || st.uid === uid ? 0o100 : gid !== undefined && st.gid === gid ? 0o010 : 0o001;
    if (st.mode & bit) return null;
  }
  return seen ? "not executable by the sandbox user (ENOENT or EACCES)" : cmd.includes("/") ? "no such file (ENOENT)" : "not found in PATH (ENOENT)";
}

const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));

/**
 * How to start the entrypoint as the sandbox user. With setpriv (util-linux): also empty the capability
 * bounding set and set no_new_privs, exactly like exec'd commands; without it, node's own setuid/setgid, which
 * clears every capability set but the bounding one.
 */
function dropPrivileges(args: BridgeArgs): [string, string[], { uid?: number; gid?: number }] {
  if (args.uid === undefined || args.gid === undefined) return [args.command[0]!, args.command.slice(1), {}];
  if (SETPRIV) {
    const drop = ["--reuid", String(args.uid), "--regid", String(args.gid), "--clear-groups", "--no-new-privs", "--bounding-set", "-all", "--inh-caps", "-all", "--"];
    return [SETPRIV, [...drop, ...args.command], {}];
  }
  return [args.command[0]!, args.command.slice(1), { uid: args.uid, gid: args.gid }];
}

function signalReady(fd: number | undefined, line: string): void {
  if (fd === undefined) return;
  try {
    writeSync(fd, `${line}\n`);
    closeSync(fd);
  } catch {
    /* the driver stopped waiting */
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  let env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
  if (args.envFd !== undefined) {
    env = JSON.parse(readFileSync(args.envFd, "utf8")) as NodeJS.ProcessEnv;
    closeSync(args.envFd);
  }
  await listen(args);
  const problem = notRunnable(args.command[0]!, env.PATH ?? "", args.uid, args.gid);
  if (problem) throw new Error(`cannot start ${args.command[0]}: ${problem}`);
  const [file, argv, ids] = dropPrivileges(args);
  const child = spawn(file, argv, { cwd: args.cwd, env, stdio: ["ignore", "inherit", "inherit"], ...ids });
  child.once("spawn", () => signalReady(args.readyFd, "ready"));
  child.once("error", (err) => {
    signalReady(args.readyFd, `error cannot start ${args.command[0]}: ${err.message}`);
    process.stderr.write(`sandbox-egress bridge: cannot start ${args.command[0]}: ${err.message}\n`);
    process.exit(127);
  });
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, () => child.kill(sig));
  child.once("exit", (code, signal) => {
    process.exit(code ?? 128 + (signal ? constants.signals[signal] : 0));
  });
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  const fd = process.argv.indexOf("--ready-fd");
  signalReady(fd > 0 ? Number(process.argv[fd + 1]) : undefined, `error ${message}`);
  process.stderr.write(`sandbox-egress bridge: ${message}\n`);
  process.exit(1);
});
