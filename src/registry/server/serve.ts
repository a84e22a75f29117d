// Starting and stopping a registry: the config file, the listener (HTTP or
// TLS, keep-alive), access logs as JSON lines, and graceful shutdown that
// lets in-flight requests (uploads) finish.
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { promises as fs } from "node:fs";
import type { AddressInfo } from "node:net";
import { join, resolve, dirname } from "node:path";
import { StrataError } from "../../errors/index.js";
import { Registry, type AccessLogEntry } from "./index.js";
import { FilesystemStorage, type RegistryStorage } from "./storage.js";
import { RegistryAuth, loadHtpasswd, type AccessRule } from "./auth.js";

export type LogLevel = "debug" | "info" | "warn" | "error" | "off";

/** The config file (JSON); flags override its fields. */
export interface RegistryConfig {
  listen?: string;
  tls?: { cert: string; key: string };
  /** The filesystem (default) or an S3-compatible bucket. */
  storage?: { path?: string; s3?: import("./s3.js").S3Options };
  auth?: {
    htpasswd?: string;
    token?: boolean | { service?: string; secretFile?: string; expiresIn?: number };
    anonymousPull?: string[];
    access?: AccessRule[];
  };
  log?: { level?: LogLevel };
  autoMount?: boolean;
  /** Seconds to wait for in-flight requests on shutdown (default 30). */
  shutdownTimeout?: number;
}

const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, off: 9 };

export async function loadConfig(path: string): Promise<RegistryConfig> {
  let raw: string;
  try {
    raw = await fs.readFile(path, "utf8");
  } catch (e) {
    throw new StrataError("NOT_FOUND", `registry config ${path}: ${(e as Error).message}`);
  }
  let cfg: RegistryConfig;
  try {
    cfg = JSON.parse(raw) as RegistryConfig;
  } catch (e) {
    throw new StrataError("INVALID_CONFIG", `registry config ${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) throw new StrataError("INVALID_CONFIG", `registry config ${path}: not a JSON object`);
  // Relative paths in the file are relative to the file.
  const base = dirname(resolve(path));
  const rel = (p: string | undefined) => (p === undefined ? undefined : resolve(base, p));
  if (cfg.tls) cfg.tls = { cert: rel(cfg.tls.cert)!, key: rel(cfg.tls.key)! };
  if (cfg.storage?.path) cfg.storage.path = rel(cfg.storage.path);
  if (cfg.auth?.htpasswd) cfg.auth.htpasswd = rel(cfg.auth.htpasswd);
  if (cfg.auth?.token && typeof cfg.auth.token === "object" && cfg.auth.token.secretFile) cfg.auth.token.secretFile = rel(cfg.auth.token.secretFile);
  if (cfg.log?.level && !(cfg.log.level in LEVELS)) throw new StrataError("INVALID_CONFIG", `registry config ${path}: unknown log level ${cfg.log.level}`);
  return cfg;
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(listen) ?? /^()()(\d+)$/.exec(listen);
  if (!m || Number(m[3]) > 65535) throw new StrataError("INVALID_ARGUMENT", `invalid listen address "${listen}": HOST:PORT`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port: Number(m[3]) };
}

export interface RunningRegistry {
  registry: Registry;
  server: Server;
  url: string;
  address: AddressInfo;
  /** Stops accepting, waits for requests in flight (up to the timeout), closes. */
  close(): Promise<void>;
}

export async function storageFor(cfg: RegistryConfig, dataRoot: string): Promise<RegistryStorage> {
  if (cfg.storage?.s3) {
    const { S3RegistryStorage } = await import("./s3.js");
    const s3 = new S3RegistryStorage(cfg.storage.s3);
    await s3.init();
    return s3;
  }
  const storage = new FilesystemStorage(cfg.storage?.path ?? join(dataRoot, "registry"));
  await storage.init();
  return storage;
}

export async function startRegistry(
  cfg: RegistryConfig,
  dataRoot: string,
  logOut: (line: string) => void = (l) => process.stderr.write(l),
): Promise<RunningRegistry> {
  const storage = await storageFor(cfg, dataRoot);
  let auth: RegistryAuth | undefined;
  if (cfg.auth && (cfg.auth.htpasswd || cfg.auth.token || cfg.auth.anonymousPull)) {
    const users = cfg.auth.htpasswd ? await loadHtpasswd(cfg.auth.htpasswd) : new Map<string, string>();
    const t = cfg.auth.token;
    let token: { service?: string; secret?: Buffer; expiresIn?: number } | undefined;
    if (t) {
      token = typeof t === "object" ? { service: t.service, expiresIn: t.expiresIn } : {};
      if (typeof t === "object" && t.secretFile) token.secret = await fs.readFile(t.secretFile);
    }
    auth = new RegistryAuth({ users, token, anonymousPull: cfg.auth.anonymousPull, access: cfg.auth.access });
  }
  const level = LEVELS[cfg.log?.level ?? "info"];
  const log = (e: AccessLogEntry) => {
    if (LEVELS[e.level] >= level) logOut(JSON.stringify(e) + "\n");
  };
  // Automatic mount would tell a client that a digest exists in repositories it may not read: off with auth unless asked for.
  const registry = new Registry({ storage, auth, autoMount: cfg.autoMount ?? !auth, log: level < LEVELS.off ? log : undefined });
  const { host, port } = parseListen(cfg.listen ?? "127.0.0.1:5000");
  const server = cfg.tls
    ? createHttpsServer({ cert: await fs.readFile(cfg.tls.cert), key: await fs.readFile(cfg.tls.key), keepAlive: true }, registry.handle)
    : createHttpServer({ keepAlive: true }, registry.handle);
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 70_000;
  // Large blob uploads can be slow: no whole-request timeout.
  server.requestTimeout = 0;
  await new Promise<void>((resolveListen, reject) => {
    server.once("error", (e) => reject(new StrataError("IO", `registry: listen on ${host}:${port}: ${(e as Error).message}`)));
    server.listen(port, host, () => resolveListen());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `${cfg.tls ? "https" : "http"}://${shownHost}:${address.port}`;
  const where = cfg.storage?.s3 ? `s3://${cfg.storage.s3.bucket}/${cfg.storage.s3.prefix ?? ""}` : (cfg.storage?.path ?? join(dataRoot, "registry"));
  if (level <= LEVELS.info) logOut(JSON.stringify({ time: new Date().toISOString(), level: "info", msg: "listening", url, storage: where }) + "\n");
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const timeout = (cfg.shutdownTimeout ?? 30) * 1000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([registry.drained(), new Promise<void>((r) => (timer = setTimeout(r, timeout)))]);
      clearTimeout(timer);
      server.closeAllConnections();
      await closed;
    })());
  return { registry, server, url, address, close };
}
