// An OCI distribution-spec v1.1 registry on node:http. Requests are parsed
// from the raw URL (never decoded), every name, tag and digest is validated
// before it reaches storage, uploads stream to storage while hashed and are
// verified before they become visible, and manifests are cached by digest.
import { createHash, type Hash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import { isDigest, digestAlgorithm, type Digest } from "../../digest/index.js";
import { MAX_MANIFEST_BYTES, MediaType, parseIndex, parseManifest, validateDescriptor, type Descriptor } from "../../oci/index.js";
import { StrataError } from "../../errors/index.js";
import { API_VERSION, API_VERSION_HEADER, MANIFEST_MEDIA_TYPES, RegistryError, isRepositoryName, isTag } from "../spec.js";
import type { RegistryStorage } from "./storage.js";
import { Metrics } from "./metrics.js";

export type Action = "pull" | "push" | "delete";

/** Decides who may do what; throws RegistryError UNAUTHORIZED/DENIED. Returns the user name for logs. */
export interface Authorizer {
  authorize(req: IncomingMessage, repository: string | undefined, actions: Action[]): Promise<string | undefined>;
  /** Whether `user` (undefined: anonymous) may pull `repository`: the catalog lists only those. */
  mayPull?(user: string | undefined, repository: string): boolean;
  /** Extra routes (the token endpoint); true when handled. */
  handle?(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams): Promise<boolean>;
}

export interface AccessLogEntry {
  time: string;
  level: "info" | "warn" | "error";
  method: string;
  path: string;
  route: string;
  status: number;
  bytes: number;
  ms: number;
  remote?: string;
  user?: string;
  error?: string;
}

export interface RegistryOptions {
  storage: RegistryStorage;
  auth?: Authorizer;
  /** Mount a blob that exists anywhere in the registry when POST names `mount` without `from` (default true). */
  autoMount?: boolean;
  log?: (e: AccessLogEntry) => void;
  /** Bytes of manifests kept in memory (default 64 MiB). */
  manifestCacheBytes?: number;
}

interface CachedManifest {
  body: Buffer;
  mediaType: string;
  /** For the referrers API. */
  artifactType?: string;
  annotations?: Record<string, string>;
  subject?: Digest;
  /** Digests this manifest refers to (config, layers, manifests) — for GC. */
  refs: Digest[];
}

const TAG_CACHE_MS = 1000;

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Reads a request body whole, refusing more than `max` bytes. An oversized body
 * is drained (up to 4 × max) before the refusal, so the client reads the answer
 * instead of a broken pipe.
 */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const tooBig = () => new RegistryError("SIZE_INVALID", `body larger than ${max} bytes`, { status: 413 });
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > 4 * max) throw tooBig();
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > 4 * max) throw tooBig();
    if (n <= max) chunks.push(c);
  }
  if (n > max) throw tooBig();
  return Buffer.concat(chunks);
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers["content-length"];
  if (len !== undefined) return Number(len) > 0;
  return req.headers["transfer-encoding"] !== undefined;
}

function parseDigestParam(v: string | null | undefined, what = "digest"): Digest {
  if (!v || !isDigest(v)) throw new RegistryError("DIGEST_INVALID", `invalid ${what} ${JSON.stringify(v ?? "")}`);
  return v;
}

/** A simple per-key mutex: one request at a time per upload session. */
class Locks {
  private readonly tails = new Map<string, Promise<void>>();
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

type Route =
  | { kind: "base" }
  | { kind: "catalog" }
  | { kind: "manifest"; name: string; reference: string }
  | { kind: "blob"; name: string; digest: string }
  | { kind: "uploads"; name: string }
  | { kind: "upload"; name: string; id: string }
  | { kind: "tags"; name: string }
  | { kind: "referrers"; name: string; digest: string };

const ROUTES: [RegExp, (m: RegExpExecArray) => Route][] = [
  [/^\/v2\/?$/, () => ({ kind: "base" })],
  [/^\/v2\/_catalog$/, () => ({ kind: "catalog" })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: "manifest", name: m[1], reference: m[2] })],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: "uploads", name: m[1] })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: "upload", name: m[1], id: m[2] })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: "blob", name: m[1], digest: m[2] })],
  [/^\/v2\/(.+)\/tags\/list$/, (m) => ({ kind: "tags", name: m[1] })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: "referrers", name: m[1], digest: m[2] })],
];

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What GC needs to see from the running server: digests in use by requests in flight. */
export class GcGuard {
  /** Set while a collection runs: digests that requests touched since it started. */
  touched: Set<Digest> | undefined;
  /** Digests the sweep is deleting right now: a manifest naming one is refused (its pusher retries). */
  readonly deleting = new Set<Digest>();
  touch(d: Digest): void {
    this.touched?.add(d);
  }
}

export class Registry {
  readonly storage: RegistryStorage;
  readonly metrics = new Metrics();
  readonly gc = new GcGuard();
  private readonly auth?: Authorizer;
  private readonly autoMount: boolean;
  private readonly log?: (e: AccessLogEntry) => void;
  private readonly manifests = new Map<Digest, CachedManifest>();
  private manifestBytes = 0;
  private readonly manifestCacheBytes: number;
  private readonly tags = new Map<string, { digest: Digest | undefined; at: number }>();
  private readonly revisions = new Map<string, { mediaType: string | undefined; at: number }>();
  private readonly hashes = new Map<string, { hash: Hash; size: number }>();
  private readonly locks = new Locks();
  /** Requests in flight, for graceful shutdown. */
  inflight = 0;
  private idle: (() => void)[] = [];

  constructor(opts: RegistryOptions) {
    this.storage = opts.storage;
    this.auth = opts.auth;
    this.autoMount = opts.autoMount ?? true;
    this.log = opts.log;
    this.manifestCacheBytes = opts.manifestCacheBytes ?? 64 << 20;
  }

  /** Forgets cached lookups of a manifest in a repository (after GC removed it). */
  forget(name: string, d: Digest): void {
    this.revisions.delete(`${name}@${d}`);
    for (const [k, v] of this.tags) if (v.digest === d && k.startsWith(`${name}:`)) this.tags.delete(k);
  }

  /** Resolves when no request is in flight. */
  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  /** The node:http request listener. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const started = process.hrtime.bigint();
    this.inflight++;
    let route = "unknown";
    let user: string | undefined;
    let errorText: string | undefined;
    res.setHeader(API_VERSION_HEADER, API_VERSION);
    const finish = () => {
      this.inflight--;
      if (this.inflight === 0) for (const r of this.idle.splice(0)) r();
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const bytes = res.socket?.bytesWritten ?? 0;
      this.metrics.request(req.method ?? "", route, res.statusCode, ms / 1000);
      this.log?.({
        time: new Date().toISOString(),
        level: res.statusCode >= 500 ? "error" : res.statusCode >= 400 ? "warn" : "info",
        method: req.method ?? "",
        path: req.url ?? "",
        route,
        status: res.statusCode,
        bytes: Number(res.getHeader("content-length") ?? bytes) || 0,
        ms: Math.round(ms * 1000) / 1000,
        remote: req.socket.remoteAddress,
        ...(user ? { user } : {}),
        ...(errorText ? { error: errorText } : {}),
      });
    };
    res.once("close", finish);
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
    this.dispatch(req, res, path, query, (r) => (route = r), (u) => (user = u)).catch((e: unknown) => {
      const err = toRegistryError(e);
      if (err.status >= 500) errorText = (e as Error)?.stack ?? String(e);
      else errorText = err.message;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // Unread request bodies: tell the client not to send more on this connection.
      if (!req.complete) res.setHeader("Connection", "close");
      sendJson(res, err.status, err.body(), err.headers);
      if (!req.complete) req.resume();
    });
  };

  private async dispatch(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
    setRoute: (r: string) => void,
    setUser: (u: string | undefined) => void,
  ): Promise<void> {
    if (path === "/metrics") {
      setRoute("metrics");
      const body = Buffer.from(this.metrics.render());
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4", "Content-Length": body.length });
      res.end(body);
      return;
    }
    if (path === "/-/gc") {
      setRoute("gc");
      // Operators only: from this machine.
      const remote = req.socket.remoteAddress ?? "";
      if (!(remote === "127.0.0.1" || remote === "::1" || remote === "::ffff:127.0.0.1")) throw new RegistryError("DENIED", "garbage collection is triggered from the registry's own host");
      if (req.method !== "POST") throw methodNotAllowed(req.method ?? "", path);
      const { collectGarbage } = await import("./gc.js");
      const grace = query.get("graceSeconds");
      const report = await collectGarbage(this, { dryRun: query.get("dryRun") === "true", graceMs: grace !== null && /^\d+$/.test(grace) ? Number(grace) * 1000 : undefined });
      sendJson(res, 200, report);
      return;
    }
    if (this.auth?.handle && (await this.auth.handle(req, res, path, query))) {
      setRoute("token");
      return;
    }
    let route: Route | undefined;
    for (const [re, make] of ROUTES) {
      const m = re.exec(path);
      if (m) {
        route = make(m);
        break;
      }
    }
    if (!route) {
      setRoute("unknown");
      throw new RegistryError("UNSUPPORTED", `no route for ${req.method} ${path}`, { status: 404 });
    }
    setRoute(route.kind);
    const method = req.method ?? "GET";
    if (route.kind === "base") {
      setUser(await this.authorize(req, undefined, []));
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": 2 });
      res.end("{}");
      return;
    }
    if (route.kind === "catalog") {
      if (method !== "GET") throw methodNotAllowed(method, path);
      const user = await this.authorize(req, "", ["pull"]);
      setUser(user);
      return this.catalog(res, query, user);
    }
    const name = route.name;
    if (!isRepositoryName(name)) throw new RegistryError("NAME_INVALID", `invalid repository name ${JSON.stringify(name.slice(0, 300))}`);
    const need: Action[] =
      method === "GET" || method === "HEAD" ? ["pull"] : method === "DELETE" && route.kind !== "upload" ? ["delete"] : ["pull", "push"];
    setUser(await this.authorize(req, name, need));
    switch (route.kind) {
      case "manifest":
        if (method === "GET" || method === "HEAD") return this.getManifest(res, name, route.reference, method === "HEAD");
        if (method === "PUT") return this.putManifest(req, res, name, route.reference);
        if (method === "DELETE") return this.deleteManifest(res, name, route.reference);
        throw methodNotAllowed(method, path);
      case "blob": {
        const d = parseDigestParam(route.digest);
        if (method === "GET" || method === "HEAD") return this.getBlob(req, res, name, d, method === "HEAD");
        if (method === "DELETE") return this.deleteBlob(res, name, d);
        throw methodNotAllowed(method, path);
      }
      case "uploads":
        if (method === "POST") return this.startUpload(req, res, name, query);
        throw methodNotAllowed(method, path);
      case "upload": {
        if (!UUID_RE.test(route.id)) throw new RegistryError("BLOB_UPLOAD_UNKNOWN", `unknown upload ${JSON.stringify(route.id)}`);
        const id = route.id;
        return this.locks.run(id, async () => {
          const upload = await this.storage.upload(id);
          if (!upload || upload.repository !== name) throw new RegistryError("BLOB_UPLOAD_UNKNOWN", `unknown upload ${id}`);
          if (method === "GET") return this.uploadStatus(res, name, id, upload.size);
          if (method === "PATCH") return this.patchUpload(req, res, name, id, upload.size);
          if (method === "PUT") return this.finishUpload(req, res, name, id, upload.size, query);
          if (method === "DELETE") {
            this.hashes.delete(id);
            await this.storage.cancelUpload(id);
            res.writeHead(204);
            res.end();
            return;
          }
          throw methodNotAllowed(method, path);
        });
      }
      case "tags":
        if (method !== "GET") throw methodNotAllowed(method, path);
        return this.listTags(res, name, query);
      case "referrers":
        if (method !== "GET") throw methodNotAllowed(method, path);
        return this.referrers(res, name, parseDigestParam(route.digest), query);
    }
  }

  private async authorize(req: IncomingMessage, repository: string | undefined, actions: Action[]): Promise<string | undefined> {
    if (!this.auth) return undefined;
    return this.auth.authorize(req, repository, actions);
  }

  // ---- manifests ------------------------------------------------------------

  private async resolveTag(name: string, tag: string): Promise<Digest | undefined> {
    const key = `${name}:${tag}`;
    const hit = this.tags.get(key);
    const now = Date.now();
    if (hit && now - hit.at < TAG_CACHE_MS) return hit.digest;
    const digest = await this.storage.getTag(name, tag);
    if (this.tags.size > 100_000) this.tags.clear();
    this.tags.set(key, { digest, at: now });
    return digest;
  }

  /** The manifest's media type if it is in the repository. */
  private async revision(name: string, d: Digest): Promise<string | undefined> {
    const key = `${name}@${d}`;
    const hit = this.revisions.get(key);
    const now = Date.now();
    if (hit && now - hit.at < TAG_CACHE_MS) return hit.mediaType;
    const mediaType = await this.storage.readLink(name, "revisions", d);
    if (this.revisions.size > 100_000) this.revisions.clear();
    this.revisions.set(key, { mediaType, at: now });
    return mediaType;
  }

  /** A manifest's bytes and what the server derives from them, cached by digest (content never changes). */
  async loadManifest(d: Digest, mediaType?: string): Promise<CachedManifest | undefined> {
    const hit = this.manifests.get(d);
    if (hit) return hit;
    const body = await this.storage.blobBytes(d);
    if (!body) return undefined;
    const got = `${digestAlgorithm(d)}:${createHash(digestAlgorithm(d)).update(body).digest("hex")}`;
    if (got !== d) throw new StrataError("CORRUPT", `stored manifest ${d} has digest ${got}`);
    const m = describeManifest(body, mediaType);
    this.cacheManifest(d, m);
    return m;
  }

  private cacheManifest(d: Digest, m: CachedManifest): void {
    if (m.body.length > this.manifestCacheBytes / 16) return;
    while (this.manifestBytes + m.body.length > this.manifestCacheBytes && this.manifests.size) {
      const [oldest, v] = this.manifests.entries().next().value as [Digest, CachedManifest];
      this.manifests.delete(oldest);
      this.manifestBytes -= v.body.length;
    }
    this.manifests.set(d, m);
    this.manifestBytes += m.body.length;
  }

  private async getManifest(res: ServerResponse, name: string, reference: string, head: boolean): Promise<void> {
    let d: Digest | undefined;
    if (isDigest(reference)) d = reference;
    else if (isTag(reference)) d = await this.resolveTag(name, reference);
    else throw invalidReference(reference);
    const mediaType = d && (await this.revision(name, d));
    const m = d && mediaType !== undefined ? await this.loadManifest(d, mediaType || undefined) : undefined;
    if (!d || !m) throw new RegistryError("MANIFEST_UNKNOWN", `manifest unknown: ${name}:${reference}`);
    this.metrics.manifestGets++;
    res.writeHead(200, { "Content-Type": m.mediaType, "Content-Length": m.body.length, "Docker-Content-Digest": d, ETag: `"${d}"` });
    res.end(head ? undefined : m.body);
  }

  private async putManifest(req: IncomingMessage, res: ServerResponse, name: string, reference: string): Promise<void> {
    const byDigest = isDigest(reference);
    if (!byDigest && !isTag(reference)) throw invalidReference(reference);
    const body = await readBody(req, MAX_MANIFEST_BYTES);
    const contentType = firstHeader(req.headers["content-type"])?.split(";")[0].trim();
    const alg = byDigest ? digestAlgorithm(reference as Digest) : "sha256";
    const digest = `${alg}:${createHash(alg).update(body).digest("hex")}` as Digest;
    if (byDigest && digest !== reference) throw new RegistryError("DIGEST_INVALID", `manifest has digest ${digest}, not ${reference}`);
    let m: CachedManifest;
    try {
      m = describeManifest(body, contentType && (MANIFEST_MEDIA_TYPES as readonly string[]).includes(contentType) ? contentType : undefined, contentType);
    } catch (e) {
      throw new RegistryError("MANIFEST_INVALID", (e as Error).message);
    }
    // Everything it names must already be in this repository (and not being collected).
    for (const d of m.refs) this.gc.touch(d);
    this.gc.touch(digest);
    const isIdx = m.mediaType === MediaType.OciIndex || m.mediaType === MediaType.DockerManifestList;
    const missing: Digest[] = [];
    await Promise.all(
      m.refs.map(async (d) => {
        const present = isIdx ? (await this.storage.readLink(name, "revisions", d)) !== undefined : await this.storage.hasLink(name, "layers", d);
        if (!present || this.gc.deleting.has(d) || (!isIdx && (await this.storage.blobSize(d)) === undefined)) missing.push(d);
      }),
    );
    if (missing.length) throw new RegistryError("MANIFEST_BLOB_UNKNOWN", `manifest references unknown ${isIdx ? "manifests" : "blobs"}: ${missing.join(", ")}`, { detail: { digests: missing } });
    await this.storage.putBlob(digest, body);
    await this.storage.putLink(name, "revisions", digest, m.mediaType);
    this.revisions.delete(`${name}@${digest}`);
    if (m.subject) await this.storage.putReferrer(name, m.subject, digest);
    if (!byDigest) {
      await this.storage.putTag(name, reference, digest);
      this.tags.set(`${name}:${reference}`, { digest, at: Date.now() });
    }
    this.cacheManifest(digest, m);
    const headers: Record<string, string> = { Location: `/v2/${name}/manifests/${digest}`, "Docker-Content-Digest": digest, "Content-Length": "0" };
    if (m.subject) headers["OCI-Subject"] = m.subject;
    res.writeHead(201, headers);
    res.end();
  }

  private async deleteManifest(res: ServerResponse, name: string, reference: string): Promise<void> {
    if (!isDigest(reference)) {
      if (!isTag(reference)) throw invalidReference(reference);
      const removed = await this.storage.deleteTag(name, reference);
      this.tags.delete(`${name}:${reference}`);
      if (!removed) throw new RegistryError("MANIFEST_UNKNOWN", `manifest unknown: ${name}:${reference}`);
      res.writeHead(202, { "Content-Length": "0" });
      res.end();
      return;
    }
    const d = reference;
    const mediaType = await this.storage.readLink(name, "revisions", d);
    if (mediaType === undefined) throw new RegistryError("MANIFEST_UNKNOWN", `manifest unknown: ${name}@${d}`);
    const m = await this.loadManifest(d, mediaType || undefined).catch(() => undefined);
    for (const tag of (await this.storage.listTags(name)) ?? [])
      if ((await this.storage.getTag(name, tag)) === d) {
        await this.storage.deleteTag(name, tag);
        this.tags.delete(`${name}:${tag}`);
      }
    if (m?.subject) await this.storage.deleteReferrer(name, m.subject, d);
    await this.storage.deleteLink(name, "revisions", d);
    this.revisions.delete(`${name}@${d}`);
    res.writeHead(202, { "Content-Length": "0" });
    res.end();
  }

  // ---- blobs ----------------------------------------------------------------

  private async getBlob(req: IncomingMessage, res: ServerResponse, name: string, d: Digest, head: boolean): Promise<void> {
    const size = (await this.storage.hasLink(name, "layers", d)) ? await this.storage.blobSize(d) : undefined;
    if (size === undefined) throw new RegistryError("BLOB_UNKNOWN", `blob unknown: ${name}@${d}`);
    const headers: Record<string, string | number> = {
      "Content-Type": "application/octet-stream",
      "Docker-Content-Digest": d,
      "Accept-Ranges": "bytes",
      ETag: `"${d}"`,
      "Cache-Control": "max-age=31536000",
    };
    let range: { start: number; end: number } | undefined;
    const rh = firstHeader(req.headers.range);
    if (rh !== undefined) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(rh.trim());
      if (m && (m[1] !== "" || m[2] !== "")) {
        let start: number;
        let end: number;
        if (m[1] === "") {
          start = Math.max(0, size - Number(m[2]));
          end = size - 1;
        } else {
          start = Number(m[1]);
          end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
        }
        if (start > end || start >= size) {
          res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}`, "Content-Length": 0 });
          res.end();
          return;
        }
        range = { start, end };
      } else {
        res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}`, "Content-Length": 0 });
        res.end();
        return;
      }
    }
    if (range) {
      headers["Content-Range"] = `bytes ${range.start}-${range.end}/${size}`;
      headers["Content-Length"] = range.end - range.start + 1;
    } else headers["Content-Length"] = size;
    if (head || size === 0) {
      res.writeHead(range ? 206 : 200, headers);
      res.end();
      return;
    }
    const src = await this.storage.blobStream(d, range);
    res.writeHead(range ? 206 : 200, headers);
    this.metrics.blobGets++;
    await pipeTo(src, res, (n) => (this.metrics.blobBytesOut += n));
  }

  private async deleteBlob(res: ServerResponse, name: string, d: Digest): Promise<void> {
    if (!(await this.storage.deleteLink(name, "layers", d))) throw new RegistryError("BLOB_UNKNOWN", `blob unknown: ${name}@${d}`);
    res.writeHead(202, { "Content-Length": "0", "Docker-Content-Digest": d });
    res.end();
  }

  // ---- uploads --------------------------------------------------------------

  private async startUpload(req: IncomingMessage, res: ServerResponse, name: string, query: URLSearchParams): Promise<void> {
    const mount = query.get("mount");
    if (mount !== null) {
      const d = parseDigestParam(mount, "mount digest");
      const from = query.get("from");
      let mountable = false;
      if (from !== null) {
        if (isRepositoryName(from) && (await this.canPull(req, from))) mountable = await this.storage.hasLink(from, "layers", d);
      } else if (this.autoMount) mountable = true;
      if (mountable && (await this.storage.blobSize(d)) !== undefined && !this.gc.deleting.has(d)) {
        this.gc.touch(d);
        await this.storage.putLink(name, "layers", d);
        res.writeHead(201, { Location: `/v2/${name}/blobs/${d}`, "Docker-Content-Digest": d, "Content-Length": "0" });
        res.end();
        return;
      }
      // Not mountable: fall through to an ordinary upload session.
    }
    const digestParam = query.get("digest");
    const expected = digestParam !== null ? parseDigestParam(digestParam) : undefined;
    const upload = await this.storage.createUpload(name);
    if (expected) {
      // Monolithic: the whole blob in this request.
      try {
        const hash = createHash(digestAlgorithm(expected));
        await this.storage.appendUpload(upload.id, req, hash, contentLength(req));
        this.gc.touch(expected);
        const size = await this.storage.commitUpload(upload.id, expected, hash);
        await this.storage.putLink(name, "layers", expected);
        this.metrics.blobBytesIn += size;
      } catch (e) {
        await this.storage.cancelUpload(upload.id);
        throw e;
      }
      res.writeHead(201, { Location: `/v2/${name}/blobs/${expected}`, "Docker-Content-Digest": expected, "Content-Length": "0" });
      res.end();
      return;
    }
    // Abandoned sessions leave their hash state behind: keep the newest 10,000 (an older one is rehashed from storage at PUT).
    if (this.hashes.size >= 10_000) this.hashes.delete(this.hashes.keys().next().value as string);
    this.hashes.set(upload.id, { hash: createHash("sha256"), size: 0 });
    if (hasBody(req)) req.resume();
    res.writeHead(202, {
      Location: `/v2/${name}/blobs/uploads/${upload.id}`,
      "Docker-Upload-UUID": upload.id,
      Range: "0-0",
      "Content-Length": "0",
    });
    res.end();
  }

  private async canPull(req: IncomingMessage, repository: string): Promise<boolean> {
    if (!this.auth) return true;
    try {
      await this.auth.authorize(req, repository, ["pull"]);
      return true;
    } catch {
      return false;
    }
  }

  private uploadHeaders(name: string, id: string, size: number): Record<string, string> {
    return {
      Location: `/v2/${name}/blobs/uploads/${id}`,
      "Docker-Upload-UUID": id,
      Range: `0-${Math.max(0, size - 1)}`,
      "Content-Length": "0",
    };
  }

  private uploadStatus(res: ServerResponse, name: string, id: string, size: number): void {
    res.writeHead(204, this.uploadHeaders(name, id, size));
    res.end();
  }

  /** Appends the request body at `size`; keeps the running hash when this process saw every byte. */
  private async append(req: IncomingMessage, id: string, size: number): Promise<number> {
    let state = this.hashes.get(id);
    if (state && state.size !== size) {
      this.hashes.delete(id);
      state = undefined;
    }
    // The hash is updated as bytes are written; if the append fails it no longer matches the file.
    const hash = state?.hash;
    try {
      const after = await this.storage.appendUpload(id, req, hash, contentLength(req));
      if (state) state.size = after;
      this.metrics.blobBytesIn += after - size;
      return after;
    } catch (e) {
      this.hashes.delete(id);
      throw e;
    }
  }

  private async patchUpload(req: IncomingMessage, res: ServerResponse, name: string, id: string, size: number): Promise<void> {
    const cr = firstHeader(req.headers["content-range"]);
    if (cr !== undefined) {
      const m = /^(?:bytes )?(\d+)-(\d+)$/.exec(cr.trim());
      if (!m) throw new RegistryError("BLOB_UPLOAD_INVALID", `invalid Content-Range ${JSON.stringify(cr)}`, { status: 416, headers: this.uploadHeaders(name, id, size) });
      const start = Number(m[1]);
      const end = Number(m[2]);
      if (start !== size || end < start)
        throw new RegistryError("BLOB_UPLOAD_INVALID", `chunk ${start}-${end} out of order: the upload has ${size} bytes`, {
          status: 416,
          headers: this.uploadHeaders(name, id, size),
        });
      const len = req.headers["content-length"];
      if (len !== undefined && Number(len) !== end - start + 1)
        throw new RegistryError("BLOB_UPLOAD_INVALID", `Content-Range ${cr} does not match Content-Length ${len}`, { status: 416, headers: this.uploadHeaders(name, id, size) });
    }
    const after = await this.append(req, id, size);
    res.writeHead(202, this.uploadHeaders(name, id, after));
    res.end();
  }

  private async finishUpload(req: IncomingMessage, res: ServerResponse, name: string, id: string, size: number, query: URLSearchParams): Promise<void> {
    const digest = parseDigestParam(query.get("digest"));
    try {
      if (hasBody(req)) size = await this.append(req, id, size);
      const state = this.hashes.get(id);
      const hash = state && state.size === size && digestAlgorithm(digest) === "sha256" ? state.hash : undefined;
      this.hashes.delete(id);
      this.gc.touch(digest);
      await this.storage.commitUpload(id, digest, hash);
    } catch (e) {
      this.hashes.delete(id);
      await this.storage.cancelUpload(id);
      throw e;
    }
    await this.storage.putLink(name, "layers", digest);
    res.writeHead(201, { Location: `/v2/${name}/blobs/${digest}`, "Docker-Content-Digest": digest, "Content-Length": "0" });
    res.end();
  }

  // ---- discovery ------------------------------------------------------------

  private async listTags(res: ServerResponse, name: string, query: URLSearchParams): Promise<void> {
    const all = await this.storage.listTags(name);
    if (!all) throw new RegistryError("NAME_UNKNOWN", `repository name not known to registry: ${name}`);
    const page = paginate(all, query);
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (page.next) headers.Link = `</v2/${name}/tags/list?n=${page.n}&last=${encodeURIComponent(page.next)}>; rel="next"`;
    sendJson(res, 200, { name, tags: page.items }, headers);
  }

  private async catalog(res: ServerResponse, query: URLSearchParams, user: string | undefined): Promise<void> {
    let names = await this.storage.repositories();
    const auth = this.auth;
    if (auth?.mayPull) names = names.filter((n) => auth.mayPull!(user, n));
    const page = paginate(names, query);
    const headers: Record<string, string> = {};
    if (page.next) headers.Link = `</v2/_catalog?n=${page.n}&last=${encodeURIComponent(page.next)}>; rel="next"`;
    sendJson(res, 200, { repositories: page.items }, headers);
  }

  private async referrers(res: ServerResponse, name: string, subject: Digest, query: URLSearchParams): Promise<void> {
    const filter = query.get("artifactType");
    const manifests: Descriptor[] = [];
    for (const d of await this.storage.listReferrers(name, subject)) {
      const mediaType = await this.storage.readLink(name, "revisions", d);
      if (mediaType === undefined) continue;
      const m = await this.loadManifest(d, mediaType || undefined);
      if (!m) continue;
      if (filter !== null && m.artifactType !== filter) continue;
      manifests.push({
        mediaType: m.mediaType,
        digest: d,
        size: m.body.length,
        ...(m.artifactType ? { artifactType: m.artifactType } : {}),
        ...(m.annotations ? { annotations: m.annotations } : {}),
      });
    }
    manifests.sort((a, b) => (a.digest < b.digest ? -1 : 1));
    const headers: Record<string, string> = { "Content-Type": MediaType.OciIndex };
    if (filter !== null) headers["OCI-Filters-Applied"] = "artifactType";
    sendJson(res, 200, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }, headers);
  }
}

/** Parses a manifest of any supported kind and derives what the server keeps about it. */
function describeManifest(body: Buffer, mediaTypeHint: string | undefined, contentType?: string): CachedManifest {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new StrataError("INVALID_MANIFEST", `manifest is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new StrataError("INVALID_MANIFEST", "manifest is not a JSON object");
  const declared = typeof raw.mediaType === "string" ? raw.mediaType : undefined;
  if (declared !== undefined && contentType !== undefined && (MANIFEST_MEDIA_TYPES as readonly string[]).includes(contentType) && declared !== contentType)
    throw new StrataError("INVALID_MANIFEST", `manifest mediaType ${declared} differs from Content-Type ${contentType}`);
  const mediaType = declared ?? mediaTypeHint ?? (Array.isArray(raw.manifests) ? MediaType.OciIndex : MediaType.OciManifest);
  if (!(MANIFEST_MEDIA_TYPES as readonly string[]).includes(mediaType)) throw new StrataError("INVALID_MANIFEST", `unsupported manifest media type ${mediaType}`);
  const annotations = raw.annotations && typeof raw.annotations === "object" ? (raw.annotations as Record<string, string>) : undefined;
  let subject: Digest | undefined;
  if (raw.subject !== undefined) subject = validateDescriptor(raw.subject, "manifest subject").digest;
  if (mediaType === MediaType.OciIndex || mediaType === MediaType.DockerManifestList) {
    const idx = parseIndex(body, "manifest");
    const artifactType = typeof raw.artifactType === "string" ? raw.artifactType : undefined;
    return { body, mediaType, artifactType, annotations, subject, refs: [...new Set(idx.manifests.map((m) => m.digest))] };
  }
  const m = parseManifest(body, "manifest", mediaType);
  const refs = [m.config, ...m.layers]
    .filter((l) => !(l.urls?.length && l.mediaType === MediaType.DockerForeignLayerGzip))
    .map((l) => l.digest);
  return { body, mediaType, artifactType: m.artifactType ?? m.config.mediaType, annotations, subject, refs: [...new Set(refs)] };
}

function paginate(all: string[], query: URLSearchParams): { items: string[]; next?: string; n?: number } {
  const last = query.get("last");
  let items = last !== null ? all.filter((t) => t > last) : all;
  const nRaw = query.get("n");
  if (nRaw !== null) {
    if (!/^\d+$/.test(nRaw)) throw new RegistryError("UNSUPPORTED", `invalid n ${JSON.stringify(nRaw)}`, { status: 400 });
    const n = Number(nRaw);
    if (items.length > n) {
      items = items.slice(0, n);
      return { items, next: n > 0 ? items[items.length - 1] : undefined, n };
    }
  }
  return { items };
}

function contentLength(req: IncomingMessage): number | undefined {
  const v = req.headers["content-length"];
  return v === undefined ? undefined : Number(v);
}

/** A reference that is neither a tag nor a digest: with a colon it was meant as a digest. */
function invalidReference(reference: string): RegistryError {
  const shown = JSON.stringify(reference.slice(0, 200));
  return reference.includes(":") ? new RegistryError("DIGEST_INVALID", `invalid digest ${shown}`) : new RegistryError("MANIFEST_INVALID", `invalid tag ${shown}`);
}

function methodNotAllowed(method: string, path: string): RegistryError {
  return new RegistryError("UNSUPPORTED", `method ${method} not allowed on ${path}`, { status: 405 });
}

function toRegistryError(e: unknown): RegistryError {
  if (e instanceof RegistryError) return e;
  if (e instanceof StrataError) {
    if (e.code === "INVALID_MANIFEST") return new RegistryError("MANIFEST_INVALID", e.message);
    if (e.code === "INVALID_DIGEST" || e.code === "DIGEST_MISMATCH") return new RegistryError("DIGEST_INVALID", e.message);
  }
  if ((e as NodeJS.ErrnoException)?.code === "ENOENT") return new RegistryError("BLOB_UNKNOWN", "content not found");
  if ((e as NodeJS.ErrnoException)?.code === "ERR_STREAM_PREMATURE_CLOSE" || (e as NodeJS.ErrnoException)?.code === "ECONNRESET")
    return new RegistryError("BLOB_UPLOAD_INVALID", "the request body ended early");
  return new RegistryError("UNSUPPORTED", "internal error", { status: 500 });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const buf = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { "Content-Type": "application/json", ...headers, "Content-Length": buf.length });
  res.end(buf);
}

/** Streams `src` into the response, honouring backpressure; resolves when done or the client left. */
function pipeTo(src: Readable, res: ServerResponse, count: (n: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    src.on("data", (c: Buffer) => {
      count(c.length);
      if (!res.write(c)) src.pause();
    });
    res.on("drain", () => src.resume());
    src.on("end", () => {
      res.end();
      resolve();
    });
    src.on("error", (e) => {
      res.destroy(e);
      reject(e);
    });
    res.on("close", () => {
      src.destroy();
      resolve();
    });
  });
}
