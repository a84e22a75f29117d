import type { Readable } from "node:stream";
import { StrataError, isStrataError } from "../../errors/index.js";
import { sha256, isDigest, type Digest } from "../../digest/index.js";
import { MAX_MANIFEST_BYTES, MediaType } from "../../oci/index.js";
import { lookupCredentials, type Credentials } from "./credentials.js";
import { discard, isNetworkError, nodeTransport, readBody, type HttpRequest, type HttpResponse, type Transport } from "./http.js";

export interface RegistryOptions {
  /** hosts (host or host:port) that may be reached over plain HTTP; `true` for all. Loopback always may. */
  insecure?: string[] | boolean;
  /** the login to use; by default read from Docker's config.json (and its helpers) */
  credentials?: Credentials | (() => Promise<Credentials | undefined>);
  transport?: Transport;
  /** attempts after the first for a failed request (network error, 5xx, 429); default 4 */
  retries?: number;
  /** the first back-off delay, doubled on each retry (ms); default 250 */
  retryDelayMs?: number;
  /** called before each retry, to say what failed */
  onRetry?: (what: string, attempt: number, delayMs: number, why: string) => void;
}

/** The manifest Accept header: every image manifest and index type we understand. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest].join(", ");

interface Challenge {
  scheme: "basic" | "bearer";
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate header: `Bearer realm="…",service="…",scope="…"`. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const scheme = m[1].toLowerCase();
  if (scheme !== "basic" && scheme !== "bearer") return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  for (let p; (p = re.exec(m[2])); ) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
  return { scheme, params };
}

function isLoopback(host: string): boolean {
  const h = host.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** The host that serves a registry domain (Docker Hub's API is not at docker.io). */
export function registryHost(domain: string): string {
  return domain === "docker.io" ? "registry-1.docker.io" : domain;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The registry's error, as the distribution spec words it: `{"errors":[{"code","message"}]}`. */
async function registryMessage(res: HttpResponse): Promise<string> {
  try {
    const body = (await readBody(res, 64 * 1024, "error body")).toString("utf8");
    const v = JSON.parse(body) as { errors?: { code?: string; message?: string; detail?: unknown }[] };
    const e = v.errors?.[0];
    if (e) return [e.code, e.message].filter(Boolean).join(": ").toLowerCase();
    return body.trim().slice(0, 200);
  } catch {
    return "";
  }
}

/**
 * A distribution-spec client for one registry. Auth follows the
 * WWW-Authenticate challenge (anonymous, basic, bearer tokens cached per
 * scope and renewed on 401); requests are retried with back-off on network
 * errors, 5xx and 429 (honouring Retry-After); plain HTTP is used only for
 * loopback and hosts marked insecure, and only after HTTPS failed there.
 */
export class RegistryClient {
  readonly host: string;
  private readonly transport: Transport;
  private base?: Promise<URL>;
  private challenge?: Challenge;
  private readonly tokens = new Map<string, { token: string; expires: number }>();
  private creds?: Promise<Credentials | undefined>;
  readonly retries: number;
  private readonly retryDelayMs: number;

  constructor(
    readonly domain: string,
    private readonly opts: RegistryOptions = {},
  ) {
    this.host = registryHost(domain);
    this.transport = opts.transport ?? sharedTransport();
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 250;
  }

  get insecureAllowed(): boolean {
    const i = this.opts.insecure;
    return isLoopback(this.host) || i === true || (Array.isArray(i) && (i.includes(this.host) || i.includes(this.domain)));
  }

  private credentials(): Promise<Credentials | undefined> {
    const c = this.opts.credentials;
    return (this.creds ??= typeof c === "function" ? c() : c ? Promise.resolve(c) : lookupCredentials(this.domain));
  }

  /** The API base: https, or http for an insecure host where https does not answer (probed once, however many ask at once). */
  private endpoint(): Promise<URL> {
    return (this.base ??= this.probe());
  }

  private async probe(): Promise<URL> {
    const https = new URL(`https://${this.host}/v2/`);
    if (!this.insecureAllowed) return https;
    try {
      discard(await this.transport({ method: "GET", url: https }));
      return https;
    } catch (e) {
      if (!isNetworkError(e) && !/ssl|tls|wrong version|EPROTO|certificate/i.test(`${(e as Error).message} ${(e as NodeJS.ErrnoException).code}`)) {
        this.base = undefined; // the next call tries again
        throw e;
      }
      return new URL(`http://${this.host}/v2/`);
    }
  }

  /** A fresh bearer token for `scope` (space-separated scopes), or undefined when the registry needs none. */
  private async token(scope: string, force = false): Promise<string | undefined> {
    const ch = this.challenge;
    if (!ch || ch.scheme !== "bearer") return undefined;
    const cached = this.tokens.get(scope);
    if (cached && !force && cached.expires > Date.now()) return cached.token;
    const realm = ch.params.realm;
    if (!realm) throw new StrataError("UNAUTHORIZED", `${this.host}: bearer challenge without a realm`);
    const url = new URL(realm);
    if (ch.params.service) url.searchParams.set("service", ch.params.service);
    for (const s of scope.split(" ").filter(Boolean)) url.searchParams.append("scope", s);
    const creds = await this.credentials();
    const headers: Record<string, string> = { accept: "application/json" };
    if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    const res = await this.withRetries(`token from ${url.host}`, () => this.transport({ method: "GET", url, headers }));
    if (res.status === 401 || res.status === 403) {
      const why = await registryMessage(res);
      throw new StrataError("UNAUTHORIZED", `${this.host}: ${creds ? "login refused" : "authentication required"} by the token service${why ? ` (${why})` : ""}`);
    }
    if (res.status !== 200) {
      const why = await registryMessage(res);
      throw new StrataError("NETWORK", `${this.host}: token service answered ${res.status}${why ? ` (${why})` : ""}`);
    }
    let v: { token?: string; access_token?: string; expires_in?: number };
    try {
      v = JSON.parse((await readBody(res, 1 << 20, "token")).toString("utf8"));
    } catch (e) {
      throw new StrataError("UNAUTHORIZED", `${this.host}: token service sent no JSON (${(e as Error).message})`);
    }
    const token = v.token ?? v.access_token;
    if (!token) throw new StrataError("UNAUTHORIZED", `${this.host}: token service sent no token`);
    // Renew a little early; 60 s is the spec's default lifetime.
    this.tokens.set(scope, { token, expires: Date.now() + Math.max(10, (v.expires_in ?? 60) - 10) * 1000 });
    return token;
  }

  private async authorization(scope: string, force = false): Promise<string | undefined> {
    if (this.challenge?.scheme === "bearer") {
      const t = await this.token(scope, force);
      return t ? `Bearer ${t}` : undefined;
    }
    if (this.challenge?.scheme === "basic") {
      const creds = await this.credentials();
      if (creds) return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    }
    return undefined;
  }

  /** Runs `attempt` again on network errors, 5xx and 429, with exponential back-off (Retry-After when given). */
  async withRetries(what: string, attempt: () => Promise<HttpResponse>): Promise<HttpResponse> {
    for (let n = 0; ; n++) {
      let res: HttpResponse | undefined;
      let why: string;
      let delay = this.retryDelayMs * 2 ** n;
      try {
        res = await attempt();
        if (res.status < 500 && res.status !== 429) return res;
        why = `HTTP ${res.status}`;
        const after = Number(res.headers["retry-after"]);
        if (res.status === 429 && Number.isFinite(after)) delay = Math.min(after * 1000, 60_000);
        if (n >= this.retries) return res;
        discard(res);
      } catch (e) {
        if (!isNetworkError(e) || n >= this.retries) {
          if (e instanceof StrataError) throw e;
          // Name resolution, TLS (an unknown certificate) and the like: not retried, said with what we were doing.
          throw new StrataError("NETWORK", `${what}: ${(e as Error).message}${n ? ` (after ${n + 1} attempts)` : ""}`, { cause: e });
        }
        why = (e as Error).message;
      }
      this.opts.onRetry?.(what, n + 1, delay, why);
      await sleep(delay);
    }
  }

  /**
   * One API call on `path` (under /v2/) with auth and retries. `scope` is
   * the token scope this call needs. A 401 renews the token (or learns the
   * challenge) and tries once more; redirects are followed, without our
   * Authorization header when they leave the registry.
   */
  async request(scope: string, req: Omit<HttpRequest, "url"> & { path: string }, what: string): Promise<HttpResponse> {
    const base = await this.endpoint();
    let url = new URL(req.path, base);
    for (let authTries = 0, hops = 0; ; ) {
      const auth = url.host === base.host ? await this.authorization(scope, authTries > 0) : undefined;
      const headers = { ...req.headers, ...(auth ? { authorization: auth } : {}) };
      const res = await this.withRetries(what, () => this.transport({ method: req.method, url, headers, body: req.body }));
      // A first 401 teaches the challenge; a second one, to a bearer token we sent, renews the token once.
      if (res.status === 401 && url.host === base.host && (authTries === 0 || (authTries === 1 && auth?.startsWith("Bearer ")))) {
        const ch = parseChallenge(res.headers["www-authenticate"] as string | undefined);
        discard(res);
        if (ch) {
          this.challenge = ch;
          authTries++;
          continue;
        }
      }
      if ([301, 302, 303, 307, 308].includes(res.status) && res.headers.location && hops < 5) {
        discard(res);
        url = new URL(res.headers.location, url);
        hops++;
        if (res.status === 303) req = { ...req, method: "GET", body: undefined };
        continue;
      }
      return res;
    }
  }

  /** Turns an unexpected status into a typed error (and drops the body). */
  async fail(res: HttpResponse, what: string): Promise<never> {
    const why = await registryMessage(res);
    const detail = why ? `: ${why}` : "";
    switch (res.status) {
      case 401:
        throw new StrataError("UNAUTHORIZED", `${what}: authentication required${detail}`);
      case 403:
        throw new StrataError("DENIED", `${what}: access denied${detail}`);
      case 404:
        throw new StrataError("NOT_FOUND", `${what}: not found${detail}`);
      default:
        throw new StrataError("NETWORK", `${what}: ${this.host} answered HTTP ${res.status}${detail}`);
    }
  }

  /** GET /v2/ with the login: checks that the registry accepts it (strata login). */
  async ping(): Promise<void> {
    // A scope-less token is what `docker login` asks for.
    const res = await this.request("", { method: "GET", path: "" }, `log in to ${this.host}`);
    if (res.status !== 401) return res.status === 200 ? discard(res) : this.fail(res, `log in to ${this.host}`);
    discard(res);
    const creds = await this.credentials();
    if (!creds) throw new StrataError("UNAUTHORIZED", `${this.host}: authentication required`);
    // A token registry answers /v2/ with 401 whatever the login: the token service is the judge.
    if (this.challenge?.scheme === "bearer") await this.token("", true);
    else throw new StrataError("UNAUTHORIZED", `${this.host}: login refused (wrong user name or password)`);
  }
}

let shared: Transport | undefined;
/** One keep-alive pool for the whole process. */
export function sharedTransport(): Transport {
  return (shared ??= nodeTransport());
}

/** A repository of a registry: the calls pull and push make. */
export class Repository {
  constructor(
    readonly client: RegistryClient,
    readonly path: string,
  ) {}

  private scope(push = false): string {
    return `repository:${this.path}:${push ? "pull,push" : "pull"}`;
  }

  get name(): string {
    return `${this.client.domain}/${this.path}`;
  }

  /**
   * Fetches a manifest or index by tag or digest; its digest is computed
   * from the bytes, and must equal the reference when that is a digest.
   */
  async manifest(reference: string): Promise<{ raw: Buffer; mediaType: string; digest: Digest }> {
    const what = `manifest ${this.name}:${reference}`.replace(":sha256:", "@sha256:");
    const res = await this.client.request(this.scope(), { method: "GET", path: `${this.path}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT } }, what);
    if (res.status !== 200) return this.client.fail(res, what);
    const raw = await readBody(res, MAX_MANIFEST_BYTES, what);
    const digest = sha256(raw);
    if (isDigest(reference) && reference !== digest)
      throw new StrataError("DIGEST_MISMATCH", `${what}: content has digest ${digest}`);
    const header = res.headers["docker-content-digest"];
    if (!isDigest(reference) && typeof header === "string" && header.startsWith("sha256:") && header !== digest)
      throw new StrataError("DIGEST_MISMATCH", `${what}: content has digest ${digest}, the registry says ${header}`);
    let mediaType = String(res.headers["content-type"] ?? "").split(";")[0].trim();
    try {
      const declared = (JSON.parse(raw.toString("utf8")) as { mediaType?: unknown }).mediaType;
      if (typeof declared === "string") mediaType = declared;
    } catch {
      // parseManifest/parseIndex report bad JSON with the right context
    }
    return { raw, mediaType, digest };
  }

  /** The size of a blob if the registry has it here. */
  async hasBlob(digest: Digest): Promise<number | undefined> {
    const what = `blob ${digest} in ${this.name}`;
    const res = await this.client.request(this.scope(true), { method: "HEAD", path: `${this.path}/blobs/${digest}` }, what);
    discard(res);
    if (res.status === 200) return Number(res.headers["content-length"]);
    if (res.status === 404) return undefined;
    return this.client.fail(res, what);
  }

  /**
   * The bytes of a blob from `offset` (a Range request; a server that
   * ignores it gets the skipped prefix dropped here).
   */
  async blob(digest: Digest, offset = 0): Promise<Readable> {
    const what = `blob ${digest} from ${this.name}`;
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.client.request(this.scope(), { method: "GET", path: `${this.path}/blobs/${digest}`, headers }, what);
    if (res.status === 206 && offset > 0) {
      const m = /^bytes (\d+)-/.exec(String(res.headers["content-range"] ?? ""));
      if (!m || Number(m[1]) !== offset) {
        res.body.destroy();
        throw new StrataError("NETWORK", `${what}: range response starts at ${m?.[1] ?? "?"}, not ${offset}`);
      }
      return res.body;
    }
    if (res.status !== 200) return this.client.fail(res, what);
    if (offset === 0) return res.body;
    return skipBytes(res.body, offset);
  }

  /** Tries a cross-repository mount of a blob from `from` (same registry); true when the registry did it. */
  async mount(digest: Digest, from: string): Promise<boolean> {
    const what = `mount ${digest} from ${from}`;
    const scope = `${this.scope(true)} repository:${from}:pull`;
    const q = new URLSearchParams({ mount: digest, from });
    const res = await this.client.request(scope, { method: "POST", path: `${this.path}/blobs/uploads/?${q}`, headers: { "content-length": "0" } }, what);
    discard(res);
    if (res.status === 201) return true;
    if (res.status === 202) {
      // The registry started an upload instead: cancel it, the caller uploads.
      if (res.headers.location) await this.cancelUpload(String(res.headers.location));
      return false;
    }
    if (res.status === 401 || res.status === 403 || res.status === 404) return false;
    return this.client.fail(res, what);
  }

  private async cancelUpload(location: string): Promise<void> {
    try {
      discard(await this.client.request(this.scope(true), { method: "DELETE", path: location }, "cancel upload"));
    } catch {
      // an abandoned upload is the registry's to expire
    }
  }

  /**
   * Uploads a blob: one monolithic PUT when it is small, else PATCHes of
   * `chunkSize` read from one continuous stream, then a closing PUT with
   * the digest. `open(offset)` gives the bytes from `offset` (a chunk may be
   * overwritten once the next is asked for); a failed chunk
   * resumes where the registry says it got to.
   */
  async upload(
    desc: { digest: Digest; size: number },
    open: (offset: number) => Promise<AsyncIterable<Buffer>>,
    opts: { chunkSize?: number; monolithicMax?: number; onBytes?: (n: number) => void } = {},
  ): Promise<void> {
    const what = `upload ${desc.digest} to ${this.name}`;
    const start = await this.client.request(this.scope(true), { method: "POST", path: `${this.path}/blobs/uploads/`, headers: { "content-length": "0" } }, what);
    discard(start);
    if (start.status !== 202 || !start.headers.location) return this.client.fail(start, what);
    let location = String(start.headers.location);
    const withDigest = (loc: string) => {
      const u = new URL(loc, "http://x/");
      u.searchParams.set("digest", desc.digest);
      return /^https?:/.test(loc) ? u.toString() : u.pathname + u.search;
    };
    const counted = async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) {
        opts.onBytes?.(c.length);
        yield c;
      }
    };
    if (desc.size <= (opts.monolithicMax ?? 32 << 20)) {
      const res = await this.client.request(
        this.scope(true),
        { method: "PUT", path: withDigest(location), headers: { "content-type": "application/octet-stream", "content-length": String(desc.size) }, body: async () => counted(await open(0)) },
        what,
      );
      discard(res);
      if (res.status !== 201) return this.client.fail(res, what);
      return;
    }
    const chunk = opts.chunkSize ?? 128 << 20;
    const cursor = new ByteCursor(open);
    try {
      let offset = 0;
      while (offset < desc.size) {
        const from = offset;
        const end = Math.min(desc.size, offset + chunk);
        let res: HttpResponse;
        try {
          res = await this.client.request(
            this.scope(true),
            {
              method: "PATCH",
              path: location,
              headers: { "content-type": "application/octet-stream", "content-length": String(end - from), "content-range": `${from}-${end - 1}` },
              body: async () => counted(await cursor.take(from, end - from, end === desc.size)),
            },
            what,
          );
        } catch (e) {
          if (!isStrataError(e, "NETWORK")) throw e;
          // Ask how far the registry got, and go on from there.
          const st = await this.client.request(this.scope(true), { method: "GET", path: location }, what);
          discard(st);
          if (st.status !== 204) throw e;
          offset = rangeEnd(st.headers.range);
          if (st.headers.location) location = String(st.headers.location);
          continue;
        }
        discard(res);
        if (res.status !== 202) return this.client.fail(res, what);
        if (res.headers.location) location = String(res.headers.location);
        offset = res.headers.range ? rangeEnd(res.headers.range) : end;
      }
    } finally {
      cursor.close();
    }
    const done = await this.client.request(this.scope(true), { method: "PUT", path: withDigest(location), headers: { "content-length": "0" } }, what);
    discard(done);
    if (done.status !== 201) return this.client.fail(done, what);
  }

  /** PUTs a manifest or index under a tag or its digest. */
  async putManifest(reference: string, raw: Buffer, mediaType: string): Promise<Digest> {
    const what = `manifest ${this.name}:${reference}`;
    const res = await this.client.request(this.scope(true), { method: "PUT", path: `${this.path}/manifests/${reference}`, headers: { "content-type": mediaType }, body: raw }, what);
    discard(res);
    if (res.status !== 201 && res.status !== 200) return this.client.fail(res, what);
    const digest = sha256(raw);
    const header = res.headers["docker-content-digest"];
    if (typeof header === "string" && header.startsWith("sha256:") && header !== digest)
      throw new StrataError("DIGEST_MISMATCH", `${what}: the registry stored digest ${header}, we sent ${digest}`);
    return digest;
  }
}

/** `Range: 0-1234` (inclusive) → the next offset, 1235. */
function rangeEnd(range: string | string[] | undefined): number {
  const m = /(\d+)-(\d+)/.exec(String(range ?? ""));
  return m ? Number(m[2]) + 1 : 0;
}

/** Drops the first `n` bytes of a stream (the source stays verified over all of it); destroying the result closes the source. */
export async function skipBytes(src: Readable, n: number): Promise<Readable> {
  const { Transform } = await import("node:stream");
  let left = n;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (left >= chunk.length) {
        left -= chunk.length;
        return cb();
      }
      const out = left ? chunk.subarray(left) : chunk;
      left = 0;
      cb(null, out);
    },
  });
  src.on("error", (e) => t.destroy(e));
  t.on("close", () => src.destroy());
  return src.pipe(t);
}

/**
 * Hands out consecutive byte ranges of one source, each as its own iterable;
 * asking for an offset other than where it stands reopens the source there.
 * A source chunk is read only when the one before it is used up.
 */
class ByteCursor {
  private it?: AsyncIterator<Buffer>;
  private pos = 0;
  private rest: Buffer = Buffer.alloc(0);
  constructor(private readonly open: (offset: number) => Promise<AsyncIterable<Buffer>>) {}

  /** `last`: the range ends the blob, so the source is read to its end (where a verifying source checks). */
  async take(from: number, n: number, last = false): Promise<AsyncIterable<Buffer>> {
    if (!this.it || this.pos !== from) {
      this.close();
      this.it = (await this.open(from))[Symbol.asyncIterator]();
      this.pos = from;
      this.rest = Buffer.alloc(0);
    }
    const self = this;
    return (async function* () {
      let left = n;
      while (left > 0) {
        let b = self.rest;
        if (b.length === 0) {
          const r = await self.it!.next();
          if (r.done) throw new StrataError("SIZE_MISMATCH", `blob ended at ${self.pos} bytes, before ${from + n}`);
          b = r.value;
        }
        const out = b.length > left ? b.subarray(0, left) : b;
        self.rest = b.subarray(out.length);
        left -= out.length;
        self.pos += out.length;
        yield out;
      }
      if (last && self.rest.length === 0 && !(await self.it!.next()).done) throw new StrataError("SIZE_MISMATCH", `blob is longer than ${from + n} bytes`);
    })();
  }

  close(): void {
    this.it?.return?.().catch(() => {});
    this.it = undefined;
  }
}
