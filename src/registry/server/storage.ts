// The registry's storage: what a registry needs from a store, as one small
// interface, and its filesystem driver. Blobs are global and content-addressed;
// a repository holds links to them (layers, manifest revisions, referrers) and tags.
//
//   <root>/blobs/sha256/<hex>                               verified content, immutable
//   <root>/uploads/<id>/{data,info}                         partial uploads (same filesystem)
//   <root>/repositories/<name>/_layers/sha256/<hex>          "this repository may read this blob"
//   <root>/repositories/<name>/_manifests/revisions/sha256/<hex>   manifest in repository; content: its media type
//   <root>/repositories/<name>/_manifests/tags/<tag>         the tag's manifest digest
//   <root>/repositories/<name>/_referrers/sha256/<subject-hex>/sha256/<hex>   manifest <hex> has subject <subject-hex>
import { createReadStream, createWriteStream, promises as fs } from "node:fs";
import { randomUUID, createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { digestAlgorithm, digestHex, isDigest, type Digest } from "../../digest/index.js";
import { isErrno } from "../../errors/index.js";
import { RegistryError } from "../spec.js";

export type LinkKind = "layers" | "revisions";

export interface UploadInfo {
  id: string;
  repository: string;
  size: number;
  startedAt: number;
}

/** The operations the server needs; a driver for another store implements the same. */
export interface RegistryStorage {
  init(): Promise<void>;
  blobSize(d: Digest): Promise<number | undefined>;
  /** The blob's bytes from `start` to `end` inclusive (whole blob without a range). */
  blobStream(d: Digest, range?: { start: number; end: number }): Promise<Readable>;
  /** A small blob (manifest) whole; undefined when absent. */
  blobBytes(d: Digest): Promise<Buffer | undefined>;
  /** Stores a small blob (manifest) that was hashed by the caller. */
  putBlob(d: Digest, data: Buffer): Promise<void>;
  deleteBlob(d: Digest): Promise<void>;
  /** Every blob with its modification time (ms). */
  walkBlobs(fn: (d: Digest, mtimeMs: number) => Promise<void> | void): Promise<void>;

  createUpload(repository: string): Promise<UploadInfo>;
  upload(id: string): Promise<UploadInfo | undefined>;
  /** Appends `src` at the upload's end; all or nothing: on error the upload is cut back. Returns the new size. */
  appendUpload(id: string, src: Readable, hash?: Hash, limit?: number): Promise<number>;
  /** Verifies the upload against `digest` and makes it the blob (never overwriting one); the upload is gone either way. */
  commitUpload(id: string, digest: Digest, hash?: Hash): Promise<number>;
  cancelUpload(id: string): Promise<void>;
  listUploads(): Promise<UploadInfo[]>;

  hasLink(repository: string, kind: LinkKind, d: Digest): Promise<boolean>;
  /** The link's content (a revision stores the manifest's media type). */
  readLink(repository: string, kind: LinkKind, d: Digest): Promise<string | undefined>;
  putLink(repository: string, kind: LinkKind, d: Digest, content?: string): Promise<void>;
  deleteLink(repository: string, kind: LinkKind, d: Digest): Promise<boolean>;
  /** When the link was last written (ms), undefined when absent. */
  linkTime(repository: string, kind: LinkKind, d: Digest): Promise<number | undefined>;
  listLinks(repository: string, kind: LinkKind): Promise<Digest[]>;

  getTag(repository: string, tag: string): Promise<Digest | undefined>;
  putTag(repository: string, tag: string, d: Digest): Promise<void>;
  deleteTag(repository: string, tag: string): Promise<boolean>;
  /** undefined when the repository is unknown (neither manifests nor blobs). */
  listTags(repository: string): Promise<string[] | undefined>;

  putReferrer(repository: string, subject: Digest, d: Digest): Promise<void>;
  deleteReferrer(repository: string, subject: Digest, d: Digest): Promise<void>;
  listReferrers(repository: string, subject: Digest): Promise<Digest[]>;

  repositories(): Promise<string[]>;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (e) {
    if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return [];
    throw e;
  }
}

/** Counts bytes and refuses more than `limit`. */
class Limit extends Transform {
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

export class FilesystemStorage implements RegistryStorage {
  constructor(readonly root: string) {}

  private blobPath(d: Digest): string {
    return join(this.root, "blobs", digestAlgorithm(d), digestHex(d));
  }
  private uploadDir(id: string): string {
    return join(this.root, "uploads", id);
  }
  private repoDir(repository: string): string {
    return join(this.root, "repositories", repository);
  }
  private linkPath(repository: string, kind: LinkKind, d: Digest): string {
    const base = kind === "layers" ? "_layers" : join("_manifests", "revisions");
    return join(this.repoDir(repository), base, digestAlgorithm(d), digestHex(d));
  }
  private tagPath(repository: string, tag: string): string {
    return join(this.repoDir(repository), "_manifests", "tags", tag);
  }
  private referrerDir(repository: string, subject: Digest): string {
    return join(this.repoDir(repository), "_referrers", digestAlgorithm(subject), digestHex(subject));
  }

  async init(): Promise<void> {
    for (const d of ["blobs/sha256", "uploads", "repositories", "tmp"]) await fs.mkdir(join(this.root, d), { recursive: true });
  }

  /** Writes a small file atomically: temp file in the same filesystem, then rename. */
  private async writeAtomic(path: string, data: string | Buffer): Promise<void> {
    const tmp = join(this.root, "tmp", randomUUID());
    await fs.writeFile(tmp, data);
    try {
      await fs.rename(tmp, path);
    } catch (e) {
      if (!isErrno(e, "ENOENT")) throw e;
      await fs.mkdir(join(path, ".."), { recursive: true });
      await fs.rename(tmp, path);
    }
  }

  async blobSize(d: Digest): Promise<number | undefined> {
    try {
      return (await fs.stat(this.blobPath(d))).size;
    } catch (e) {
      if (isErrno(e, "ENOENT")) return undefined;
      throw e;
    }
  }

  async blobStream(d: Digest, range?: { start: number; end: number }): Promise<Readable> {
    const fh = await fs.open(this.blobPath(d), "r");
    return fh.createReadStream({ highWaterMark: 256 << 10, ...(range ? { start: range.start, end: range.end } : {}) });
  }

  async blobBytes(d: Digest): Promise<Buffer | undefined> {
    try {
      return await fs.readFile(this.blobPath(d));
    } catch (e) {
      if (isErrno(e, "ENOENT")) return undefined;
      throw e;
    }
  }

  async putBlob(d: Digest, data: Buffer): Promise<void> {
    if ((await this.blobSize(d)) !== undefined) return this.touchBlob(d);
    const tmp = join(this.root, "tmp", randomUUID());
    const fh = await fs.open(tmp, "w");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await this.linkIntoPlace(tmp, d);
  }

  /** Links verified content at its blob path (an existing blob wins), then drops the source name. */
  private async linkIntoPlace(src: string, d: Digest): Promise<void> {
    try {
      await fs.link(src, this.blobPath(d));
    } catch (e) {
      if (isErrno(e, "ENOENT")) {
        await fs.mkdir(join(this.blobPath(d), ".."), { recursive: true });
        try {
          await fs.link(src, this.blobPath(d));
        } catch (e2) {
          if (!isErrno(e2, "EEXIST")) throw e2;
          await this.touchBlob(d);
        }
      } else if (isErrno(e, "EEXIST")) await this.touchBlob(d);
      else throw e;
    } finally {
      await fs.rm(src, { force: true });
    }
  }

  /** Pushed again: a collector's grace period starts over. */
  private async touchBlob(d: Digest): Promise<void> {
    const now = new Date();
    await fs.utimes(this.blobPath(d), now, now).catch(() => undefined);
  }

  async deleteBlob(d: Digest): Promise<void> {
    await fs.rm(this.blobPath(d), { force: true });
  }

  async walkBlobs(fn: (d: Digest, mtimeMs: number) => Promise<void> | void): Promise<void> {
    for (const alg of await readdirOrEmpty(join(this.root, "blobs")))
      for (const hex of await readdirOrEmpty(join(this.root, "blobs", alg))) {
        const d = `${alg}:${hex}`;
        if (!isDigest(d)) continue;
        try {
          await fn(d, (await fs.stat(join(this.root, "blobs", alg, hex))).mtimeMs);
        } catch (e) {
          if (!isErrno(e, "ENOENT")) throw e;
        }
      }
  }

  async createUpload(repository: string): Promise<UploadInfo> {
    const info: UploadInfo = { id: randomUUID(), repository, size: 0, startedAt: Date.now() };
    const dir = this.uploadDir(info.id);
    await fs.mkdir(dir);
    await fs.writeFile(join(dir, "data"), "");
    await fs.writeFile(join(dir, "info"), JSON.stringify({ repository, startedAt: info.startedAt }));
    return info;
  }

  async upload(id: string): Promise<UploadInfo | undefined> {
    const dir = this.uploadDir(id);
    try {
      const [raw, st] = await Promise.all([fs.readFile(join(dir, "info"), "utf8"), fs.stat(join(dir, "data"))]);
      const { repository, startedAt } = JSON.parse(raw) as { repository: string; startedAt: number };
      return { id, repository, startedAt, size: st.size };
    } catch (e) {
      if (isErrno(e, "ENOENT") || e instanceof SyntaxError) return undefined;
      throw e;
    }
  }

  async appendUpload(id: string, src: Readable, hash?: Hash, limit = Number.MAX_SAFE_INTEGER): Promise<number> {
    const path = join(this.uploadDir(id), "data");
    const before = (await fs.stat(path)).size;
    const counter = new Limit(limit, hash);
    try {
      await pipeline(src, counter, createWriteStream(path, { flags: "a", highWaterMark: 1 << 20 }));
    } catch (e) {
      await fs.truncate(path, before).catch(() => undefined);
      throw e;
    }
    return before + counter.bytes;
  }

  async commitUpload(id: string, digest: Digest, hash?: Hash): Promise<number> {
    const dir = this.uploadDir(id);
    const path = join(dir, "data");
    try {
      const fh = await fs.open(path, "r+");
      let size: number;
      try {
        await fh.sync();
        size = (await fh.stat()).size;
      } finally {
        await fh.close();
      }
      let got: string;
      if (hash) got = `${digestAlgorithm(digest)}:${hash.digest("hex")}`;
      else {
        const h = createHash(digestAlgorithm(digest));
        await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), async function* (src) {
          for await (const c of src) h.update(c as Buffer);
        });
        got = `${digestAlgorithm(digest)}:${h.digest("hex")}`;
      }
      if (got !== digest) throw new RegistryError("DIGEST_INVALID", `digest mismatch: the upload has ${got}, the request says ${digest}`);
      await this.linkIntoPlace(path, digest);
      return size;
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  async cancelUpload(id: string): Promise<void> {
    await fs.rm(this.uploadDir(id), { recursive: true, force: true });
  }

  async listUploads(): Promise<UploadInfo[]> {
    const out: UploadInfo[] = [];
    for (const id of await readdirOrEmpty(join(this.root, "uploads"))) {
      const u = await this.upload(id);
      if (u) out.push(u);
    }
    return out;
  }

  async hasLink(repository: string, kind: LinkKind, d: Digest): Promise<boolean> {
    try {
      await fs.access(this.linkPath(repository, kind, d));
      return true;
    } catch {
      return false;
    }
  }

  async readLink(repository: string, kind: LinkKind, d: Digest): Promise<string | undefined> {
    try {
      return await fs.readFile(this.linkPath(repository, kind, d), "utf8");
    } catch (e) {
      if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return undefined;
      throw e;
    }
  }

  async putLink(repository: string, kind: LinkKind, d: Digest, content = ""): Promise<void> {
    await this.writeAtomic(this.linkPath(repository, kind, d), content);
  }

  async deleteLink(repository: string, kind: LinkKind, d: Digest): Promise<boolean> {
    try {
      await fs.unlink(this.linkPath(repository, kind, d));
      return true;
    } catch (e) {
      if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return false;
      throw e;
    }
  }

  async linkTime(repository: string, kind: LinkKind, d: Digest): Promise<number | undefined> {
    try {
      return (await fs.stat(this.linkPath(repository, kind, d))).mtimeMs;
    } catch (e) {
      if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return undefined;
      throw e;
    }
  }

  async listLinks(repository: string, kind: LinkKind): Promise<Digest[]> {
    const base = join(this.repoDir(repository), kind === "layers" ? "_layers" : join("_manifests", "revisions"));
    const out: Digest[] = [];
    for (const alg of await readdirOrEmpty(base))
      for (const hex of await readdirOrEmpty(join(base, alg))) {
        const d = `${alg}:${hex}`;
        if (isDigest(d)) out.push(d);
      }
    return out;
  }

  async getTag(repository: string, tag: string): Promise<Digest | undefined> {
    try {
      const d = (await fs.readFile(this.tagPath(repository, tag), "utf8")).trim();
      return isDigest(d) ? d : undefined;
    } catch (e) {
      if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return undefined;
      throw e;
    }
  }

  async putTag(repository: string, tag: string, d: Digest): Promise<void> {
    await this.writeAtomic(this.tagPath(repository, tag), d);
  }

  async deleteTag(repository: string, tag: string): Promise<boolean> {
    try {
      await fs.unlink(this.tagPath(repository, tag));
      return true;
    } catch (e) {
      if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return false;
      throw e;
    }
  }

  async listTags(repository: string): Promise<string[] | undefined> {
    const names = await readdirOrEmpty(this.repoDir(repository));
    if (!names.includes("_manifests") && !names.includes("_layers")) return undefined;
    return (await readdirOrEmpty(join(this.repoDir(repository), "_manifests", "tags"))).sort();
  }

  async putReferrer(repository: string, subject: Digest, d: Digest): Promise<void> {
    await this.writeAtomic(join(this.referrerDir(repository, subject), digestAlgorithm(d), digestHex(d)), "");
  }

  async deleteReferrer(repository: string, subject: Digest, d: Digest): Promise<void> {
    await fs.rm(join(this.referrerDir(repository, subject), digestAlgorithm(d), digestHex(d)), { force: true });
  }

  async listReferrers(repository: string, subject: Digest): Promise<Digest[]> {
    const base = this.referrerDir(repository, subject);
    const out: Digest[] = [];
    for (const alg of await readdirOrEmpty(base))
      for (const hex of await readdirOrEmpty(join(base, alg))) {
        const d = `${alg}:${hex}`;
        if (isDigest(d)) out.push(d);
      }
    return out;
  }

  async repositories(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      const names = await readdirOrEmpty(join(this.root, "repositories", rel));
      if (names.includes("_manifests") || names.includes("_layers")) out.push(rel);
      for (const n of names) if (!n.startsWith("_")) await walk(rel ? `${rel}/${n}` : n);
    };
    await walk("");
    return out.sort();
  }
}
