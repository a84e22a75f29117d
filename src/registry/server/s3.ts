// The registry's S3-compatible storage driver: the same keys as the filesystem
// layout, as objects in one bucket, so several stateless registry processes can
// share it. S3 has no append: each PATCH is one part object under the upload;
// finishing streams the parts, in order, through a verifying hash into the blob
// object (a multipart upload that is aborted on a mismatch, so an unverified
// blob never becomes visible).
import { createRequire } from "node:module";
import { randomUUID, type Hash } from "node:crypto";
import { PassThrough, Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type * as S3 from "@aws-sdk/client-s3";
import type * as S3Storage from "@aws-sdk/lib-storage";
import { digestAlgorithm, digestHex, isDigest, type Digest } from "../../digest/index.js";
import { VerifyStream } from "../../digest/stream.js";
import { StrataError, isStrataError } from "../../errors/index.js";
import { RegistryError } from "../spec.js";
import type { LinkKind, RegistryStorage, UploadInfo } from "./storage.js";

export interface S3Options {
  bucket: string;
  /** For S3-compatible servers (MinIO, Ceph, s3rver …); path-style addressing is used with it. */
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Key prefix inside the bucket (default none). */
  prefix?: string;
}

// The AWS SDK is loaded at run time, only by registries configured for S3: it stays out of the CLI bundle.
const requireModule = createRequire(import.meta.url);
function sdk(): { s3: typeof S3; storage: typeof S3Storage } {
  const names = ["@aws-sdk/client-s3", "@aws-sdk/lib-storage"];
  try {
    return { s3: requireModule(names[0]) as typeof S3, storage: requireModule(names[1]) as typeof S3Storage };
  } catch (e) {
    throw new StrataError("UNSUPPORTED", `S3 storage needs ${names.join(" and ")} (npm install): ${(e as Error).message}`);
  }
}

function notFound(e: unknown): boolean {
  const x = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return x?.name === "NotFound" || x?.name === "NoSuchKey" || x?.$metadata?.httpStatusCode === 404;
}

/** Counts bytes, refuses more than `limit`, feeds `hash`. */
class Meter extends Transform {
  bytes = 0;
  constructor(private readonly limit: number, private readonly hash?: Hash) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null, c?: Buffer) => void): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) return cb(new RegistryError("SIZE_INVALID", `upload is larger than the ${this.limit} bytes announced`));
    this.hash?.update(chunk);
    cb(null, chunk);
  }
}

const PART = (offset: number) => `part-${String(offset).padStart(16, "0")}`;

export class S3RegistryStorage implements RegistryStorage {
  private readonly client: S3.S3Client;
  private readonly s3: typeof S3;
  private readonly Upload: typeof S3Storage.Upload;
  private readonly prefix: string;

  constructor(private readonly opts: S3Options) {
    const { s3, storage } = sdk();
    this.s3 = s3;
    this.Upload = storage.Upload;
    this.prefix = opts.prefix ? opts.prefix.replace(/\/*$/, "/") : "";
    this.client = new s3.S3Client({
      region: opts.region ?? "us-east-1",
      ...(opts.endpoint ? { endpoint: opts.endpoint, forcePathStyle: true } : {}),
      ...(opts.accessKeyId && opts.secretAccessKey ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } } : {}),
    });
  }

  /** client.send, with the operation and key in the error (the SDK's messages name neither). */
  private async send<T>(cmd: { input: object; constructor: { name: string } }): Promise<T> {
    try {
      return (await this.client.send(cmd as never)) as T;
    } catch (e) {
      if (notFound(e)) throw e;
      const input = cmd.input as { Key?: string; Prefix?: string };
      throw new StrataError("IO", `s3 ${cmd.constructor.name.replace(/Command$/, "")} ${input.Key ?? input.Prefix ?? ""}: ${(e as Error).name}: ${(e as Error).message}`, { cause: e });
    }
  }

  private key(...parts: string[]): string {
    return this.prefix + parts.join("/");
  }
  private blobKey(d: Digest): string {
    return this.key("blobs", digestAlgorithm(d), digestHex(d));
  }
  private linkKey(repository: string, kind: LinkKind, d: Digest): string {
    return this.key("repositories", repository, kind === "layers" ? "_layers" : "_manifests/revisions", digestAlgorithm(d), digestHex(d));
  }

  private async head(key: string): Promise<{ size: number; mtime: number } | undefined> {
    try {
      const r = await this.send<S3.HeadObjectCommandOutput>(new this.s3.HeadObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return { size: r.ContentLength ?? 0, mtime: r.LastModified?.getTime() ?? 0 };
    } catch (e) {
      if (notFound(e)) return undefined;
      throw e;
    }
  }

  private async get(key: string): Promise<Buffer | undefined> {
    try {
      const r = await this.send<S3.GetObjectCommandOutput>(new this.s3.GetObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (e) {
      if (notFound(e)) return undefined;
      throw e;
    }
  }

  private async put(key: string, body: Buffer | string): Promise<void> {
    await this.send<S3.PutObjectCommandOutput>(new this.s3.PutObjectCommand({ Bucket: this.opts.bucket, Key: key, Body: body }));
  }

  private async del(key: string): Promise<boolean> {
    const existed = (await this.head(key)) !== undefined;
    await this.send<S3.DeleteObjectCommandOutput>(new this.s3.DeleteObjectCommand({ Bucket: this.opts.bucket, Key: key }));
    return existed;
  }

  private async *list(prefix: string): AsyncGenerator<{ key: string; size: number; mtime: number }> {
    let token: string | undefined;
    do {
      const r = await this.send<S3.ListObjectsV2CommandOutput>(new this.s3.ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of r.Contents ?? []) if (o.Key) yield { key: o.Key, size: o.Size ?? 0, mtime: o.LastModified?.getTime() ?? 0 };
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  private async listNames(prefix: string): Promise<string[]> {
    const out: string[] = [];
    for await (const o of this.list(prefix)) out.push(o.key.slice(prefix.length));
    return out;
  }

  private async listDigests(prefix: string): Promise<Digest[]> {
    return (await this.listNames(prefix)).map((n) => n.replace("/", ":")).filter((d): d is Digest => isDigest(d));
  }

  /** Streams `body` into one object (multipart when large); an error in the stream aborts it, leaving nothing. */
  private async stream(key: string, body: Readable): Promise<void> {
    const up = new this.Upload({ client: this.client, params: { Bucket: this.opts.bucket, Key: key, Body: body }, queueSize: 4, partSize: 8 << 20 });
    await up.done();
  }

  async init(): Promise<void> {
    await this.send<S3.HeadBucketCommandOutput>(new this.s3.HeadBucketCommand({ Bucket: this.opts.bucket })).catch((e: unknown) => {
      throw new StrataError("NOT_FOUND", `S3 bucket ${this.opts.bucket}: ${(e as Error).name ?? ""} ${(e as Error).message ?? ""}`.trim());
    });
  }

  async blobSize(d: Digest): Promise<number | undefined> {
    return (await this.head(this.blobKey(d)))?.size;
  }

  async blobStream(d: Digest, range?: { start: number; end: number }): Promise<Readable> {
    const r = await this.client.send(
      new this.s3.GetObjectCommand({ Bucket: this.opts.bucket, Key: this.blobKey(d), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
    );
    return r.Body as Readable;
  }

  async blobBytes(d: Digest): Promise<Buffer | undefined> {
    return this.get(this.blobKey(d));
  }

  async putBlob(d: Digest, data: Buffer): Promise<void> {
    if ((await this.head(this.blobKey(d))) === undefined) await this.put(this.blobKey(d), data);
  }

  async deleteBlob(d: Digest): Promise<void> {
    await this.del(this.blobKey(d));
  }

  async walkBlobs(fn: (d: Digest, mtimeMs: number) => Promise<void> | void): Promise<void> {
    const base = this.key("blobs") + "/";
    for await (const o of this.list(base)) {
      const d = o.key.slice(base.length).replace("/", ":");
      if (isDigest(d)) await fn(d, o.mtime);
    }
  }

  async createUpload(repository: string): Promise<UploadInfo> {
    const info: UploadInfo = { id: randomUUID(), repository, size: 0, startedAt: Date.now() };
    await this.put(this.key("uploads", info.id, "info"), JSON.stringify({ repository, startedAt: info.startedAt }));
    return info;
  }

  private async parts(id: string): Promise<{ key: string; size: number }[]> {
    const out: { key: string; size: number }[] = [];
    for await (const o of this.list(this.key("uploads", id) + "/part-")) out.push({ key: o.key, size: o.size });
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async upload(id: string): Promise<UploadInfo | undefined> {
    const raw = await this.get(this.key("uploads", id, "info"));
    if (!raw) return undefined;
    const { repository, startedAt } = JSON.parse(raw.toString("utf8")) as { repository: string; startedAt: number };
    const size = (await this.parts(id)).reduce((a, p) => a + p.size, 0);
    return { id, repository, startedAt, size };
  }

  async appendUpload(id: string, src: Readable, hash?: Hash, limit = Number.MAX_SAFE_INTEGER): Promise<number> {
    const before = (await this.parts(id)).reduce((a, p) => a + p.size, 0);
    const key = this.key("uploads", id, PART(before));
    const meter = new Meter(limit, hash);
    const body = new PassThrough();
    const done = pipeline(src, meter, body);
    try {
      await Promise.all([done, this.stream(key, body)]);
    } catch (e) {
      await this.del(key).catch(() => undefined);
      throw e;
    }
    if (meter.bytes === 0) await this.del(key);
    return before + meter.bytes;
  }

  async commitUpload(id: string, digest: Digest, hash?: Hash): Promise<number> {
    try {
      const parts = await this.parts(id);
      const size = parts.reduce((a, p) => a + p.size, 0);
      if (hash) {
        const got = `${digestAlgorithm(digest)}:${hash.digest("hex")}`;
        if (got !== digest) throw new RegistryError("DIGEST_INVALID", `digest mismatch: the upload has ${got}, the request says ${digest}`);
      }
      if ((await this.head(this.blobKey(digest))) !== undefined) return size;
      const client = this.client;
      const s3 = this.s3;
      const bucket = this.opts.bucket;
      const concat = Readable.from(
        (async function* () {
          for (const p of parts) {
            const r = await client.send(new s3.GetObjectCommand({ Bucket: bucket, Key: p.key }));
            for await (const c of r.Body as Readable) yield c as Buffer;
          }
        })(),
      );
      const verify = new VerifyStream({ digest, size }, "upload");
      const body = new PassThrough();
      try {
        await Promise.all([pipeline(concat, verify, body), this.stream(this.blobKey(digest), body)]);
      } catch (e) {
        if (isStrataError(e, "DIGEST_MISMATCH") || isStrataError(e, "SIZE_MISMATCH")) throw new RegistryError("DIGEST_INVALID", e.message);
        throw e;
      }
      return size;
    } finally {
      await this.cancelUpload(id);
    }
  }

  async cancelUpload(id: string): Promise<void> {
    for await (const o of this.list(this.key("uploads", id) + "/")) await this.del(o.key);
  }

  async listUploads(): Promise<UploadInfo[]> {
    const ids = new Set<string>();
    const base = this.key("uploads") + "/";
    for await (const o of this.list(base)) ids.add(o.key.slice(base.length).split("/")[0]);
    const out: UploadInfo[] = [];
    for (const id of ids) {
      const u = await this.upload(id);
      if (u) out.push(u);
    }
    return out;
  }

  async hasLink(repository: string, kind: LinkKind, d: Digest): Promise<boolean> {
    return (await this.head(this.linkKey(repository, kind, d))) !== undefined;
  }
  async readLink(repository: string, kind: LinkKind, d: Digest): Promise<string | undefined> {
    return (await this.get(this.linkKey(repository, kind, d)))?.toString("utf8");
  }
  async putLink(repository: string, kind: LinkKind, d: Digest, content = ""): Promise<void> {
    await this.put(this.linkKey(repository, kind, d), content);
  }
  async deleteLink(repository: string, kind: LinkKind, d: Digest): Promise<boolean> {
    return this.del(this.linkKey(repository, kind, d));
  }
  async linkTime(repository: string, kind: LinkKind, d: Digest): Promise<number | undefined> {
    return (await this.head(this.linkKey(repository, kind, d)))?.mtime;
  }
  async listLinks(repository: string, kind: LinkKind): Promise<Digest[]> {
    return this.listDigests(this.key("repositories", repository, kind === "layers" ? "_layers" : "_manifests/revisions") + "/");
  }

  async getTag(repository: string, tag: string): Promise<Digest | undefined> {
    const d = (await this.get(this.key("repositories", repository, "_manifests/tags", tag)))?.toString("utf8").trim();
    return d && isDigest(d) ? d : undefined;
  }
  async putTag(repository: string, tag: string, d: Digest): Promise<void> {
    await this.put(this.key("repositories", repository, "_manifests/tags", tag), d);
  }
  async deleteTag(repository: string, tag: string): Promise<boolean> {
    return this.del(this.key("repositories", repository, "_manifests/tags", tag));
  }
  async listTags(repository: string): Promise<string[] | undefined> {
    // A repository has keys under _manifests/ or _layers/ (MaxKeys: 1 trips some S3 servers, e.g. s3rver).
    let known = false;
    for (const sub of ["_manifests", "_layers"]) {
      for await (const _ of this.list(this.key("repositories", repository, sub) + "/")) {
        known = true;
        break;
      }
      if (known) break;
    }
    if (!known) return undefined;
    return (await this.listNames(this.key("repositories", repository, "_manifests/tags") + "/")).sort();
  }

  private referrerPrefix(repository: string, subject: Digest): string {
    return this.key("repositories", repository, "_referrers", digestAlgorithm(subject), digestHex(subject)) + "/";
  }
  async putReferrer(repository: string, subject: Digest, d: Digest): Promise<void> {
    await this.put(this.referrerPrefix(repository, subject) + `${digestAlgorithm(d)}/${digestHex(d)}`, "");
  }
  async deleteReferrer(repository: string, subject: Digest, d: Digest): Promise<void> {
    await this.del(this.referrerPrefix(repository, subject) + `${digestAlgorithm(d)}/${digestHex(d)}`);
  }
  async listReferrers(repository: string, subject: Digest): Promise<Digest[]> {
    return this.listDigests(this.referrerPrefix(repository, subject));
  }

  async repositories(): Promise<string[]> {
    const base = this.key("repositories") + "/";
    const names = new Set<string>();
    for await (const o of this.list(base)) {
      const rel = o.key.slice(base.length);
      const m = /^(.*?)\/_(?:layers|manifests)\//.exec(rel);
      if (m) names.add(m[1]);
    }
    return [...names].sort();
  }
}
