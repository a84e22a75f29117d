// fs.promises is reached through the property so that a command that only reads small blobs never loads it.
import { createReadStream, closeSync, fstatSync, openSync, promises as fs, readFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { StrataError, isErrno, isStrataError, wrap } from "../errors/index.js";
import { nativeFs } from "../native/index.js";
import { digestAlgorithm, digestHex, isDigest, sha256, type Digest } from "../digest/index.js";
import { ownerAlive, ownerToken } from "./proc.js";

export interface BlobInfo {
  digest: Digest;
  size: number;
}

/** The content from `offset`; a chunk may be overwritten once the next is asked for. */
export type Opener = (offset: number) => Promise<AsyncIterable<Buffer>>;

const POLL_MS = 20;
/** fileChunks(): one read's size (the buffer each chunk is read into) */
const CHUNK_BYTES = 1 << 20;

/**
 * The content store: immutable blobs under blobs/<alg>/<hex>, written through
 * ingest/ (same filesystem): write → fsync → verify → rename. An existing blob
 * is success; writers of one digest share one write (in-process by a promise
 * map, across processes by an exclusive lock file next to the partial data).
 */
export class ContentStore {
  private readonly inflight = new Map<Digest, Promise<BlobInfo>>();
  readonly blobsDir: string;
  readonly ingestDir: string;

  constructor(readonly root: string) {
    this.blobsDir = join(root, "blobs");
    this.ingestDir = join(root, "ingest");
  }

  blobPath(d: Digest): string {
    return join(this.blobsDir, digestAlgorithm(d), digestHex(d));
  }

  async init(): Promise<void> {
    await fs.mkdir(join(this.blobsDir, "sha256"), { recursive: true });
    await fs.mkdir(this.ingestDir, { recursive: true });
  }

  async stat(d: Digest): Promise<BlobInfo | undefined> {
    try {
      const st = await fs.stat(this.blobPath(d));
      return { digest: d, size: st.size };
    } catch (e) {
      if (isErrno(e, "ENOENT")) return undefined;
      throw wrap(e, "IO", `stat blob ${d}`);
    }
  }

  /** Reads a small blob (manifest, config) whole, verifying digest and size. Synchronous: it is small and bounded. */
  read(d: Digest, maxSize: number, expectedSize?: number): Buffer {
    let buf: Buffer;
    try {
      const fd = openSync(this.blobPath(d), "r");
      try {
        const { size } = fstatSync(fd);
        if (size > maxSize) throw new StrataError("CORRUPT", `blob ${d}: ${size} bytes is over the ${maxSize}-byte limit`);
        buf = readFileSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      if (isErrno(e, "ENOENT")) throw new StrataError("NOT_FOUND", `blob ${d} not found in the content store`, { cause: e });
      throw wrap(e, "IO", `read blob ${d}`);
    }
    if (expectedSize !== undefined && buf.length !== expectedSize)
      throw new StrataError("SIZE_MISMATCH", `blob ${d}: ${buf.length} bytes on disk, expected ${expectedSize}`);
    const got = `${digestAlgorithm(d)}:${createHash(digestAlgorithm(d)).update(buf).digest("hex")}`;
    if (got !== d) throw new StrataError("DIGEST_MISMATCH", `blob ${d}: content has digest ${got}`);
    return buf;
  }

  /** A verifying read stream: it errors at EOF if the content does not match. */
  async open(d: Digest, expectedSize?: number): Promise<Readable> {
    const path = this.blobPath(d);
    let fh: import("node:fs/promises").FileHandle;
    try {
      fh = await fs.open(path, "r");
    } catch (e) {
      if (isErrno(e, "ENOENT")) throw new StrataError("NOT_FOUND", `blob ${d} not found in the content store`, { cause: e });
      throw wrap(e, "IO", `open blob ${d}`);
    }
    const src = fh.createReadStream({ highWaterMark: 256 << 10 });
    const { VerifyStream } = await import("../digest/stream.js");
    const verify = new VerifyStream({ digest: d, size: expectedSize }, `blob ${d}`);
    src.on("error", (e) => verify.destroy(e));
    verify.on("close", () => src.destroy());
    return src.pipe(verify);
  }

  /** A blob's bytes from `offset`, read as fileChunks() reads them. */
  chunks(d: Digest, size: number, offset = 0): AsyncGenerator<Buffer> {
    return fileChunks(this.blobPath(d), { digest: d, size }, offset, `blob ${d} not found in the content store`);
  }

  /** Stores a small buffer (manifest, config). */
  async put(buf: Buffer): Promise<BlobInfo> {
    const digest = sha256(buf);
    const { Readable } = await import("node:stream");
    return this.ingest({ digest, size: buf.length }, async (offset) => Readable.from([buf.subarray(offset)]));
  }

  /**
   * Writes a blob of known digest. `open(offset)` must return the content
   * from that offset: a partial ingest left by a dead writer is resumed.
   */
  ingest(expected: { digest: Digest; size?: number }, open: Opener): Promise<BlobInfo> {
    if (!isDigest(expected.digest)) return Promise.reject(new StrataError("INVALID_DIGEST", `invalid digest "${expected.digest}"`));
    const running = this.inflight.get(expected.digest);
    if (running) return running;
    const p = this.ingestLocked(expected, open).finally(() => this.inflight.delete(expected.digest));
    this.inflight.set(expected.digest, p);
    return p;
  }

  private async ingestLocked(expected: { digest: Digest; size?: number }, open: Opener): Promise<BlobInfo> {
    const hex = digestHex(expected.digest);
    const lockPath = join(this.ingestDir, `${hex}.lock`);
    const dataPath = join(this.ingestDir, `${hex}.data`);
    for (;;) {
      const existing = await this.stat(expected.digest);
      if (existing) {
        if (expected.size !== undefined && existing.size !== expected.size)
          throw new StrataError("SIZE_MISMATCH", `blob ${expected.digest}: stored size ${existing.size}, expected ${expected.size}`);
        return existing;
      }
      if (await this.tryLock(lockPath)) break;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    try {
      if (await this.stat(expected.digest)) return (await this.stat(expected.digest))!;
      const info = await this.writeResumable(expected, dataPath, open);
      await fs.rename(dataPath, this.blobPath(expected.digest));
      await this.syncBlobDir();
      return info;
    } catch (e) {
      throw wrap(e, "IO", `write blob ${expected.digest}`);
    } finally {
      await fs.rm(lockPath, { force: true });
    }
  }

  /**
   * Takes the lock file of one digest's ingest. The lock is made whole under
   * a private name and then linked into place, so a lock never exists
   * without its owner in it (a writer killed between creating and writing
   * it would otherwise leave a lock nobody could tell was dead). A dead
   * owner's lock is taken over.
   */
  private async tryLock(lockPath: string): Promise<boolean> {
    const mine = join(this.ingestDir, `anon-${ownerToken()}-${randomBytes(6).toString("hex")}-lock`);
    try {
      await fs.writeFile(mine, ownerToken(), { mode: 0o644 });
      await fs.link(mine, lockPath);
      return true;
    } catch (e) {
      if (!isErrno(e, "EEXIST")) throw wrap(e, "IO", "lock ingest");
    } finally {
      await fs.rm(mine, { force: true });
    }
    let owner = "";
    try {
      owner = await fs.readFile(lockPath, "utf8");
    } catch (e) {
      if (isErrno(e, "ENOENT")) return false;
      throw e;
    }
    if (!ownerAlive(owner)) await fs.rm(lockPath, { force: true });
    return false;
  }

  /**
   * Writes `dataPath` to completion and verifies it. A source error keeps the
   * partial data for the next writer to resume; a verification failure drops
   * it, and a failed resume is retried once from the start (the partial
   * bytes themselves may have been wrong).
   */
  private async writeResumable(expected: { digest: Digest; size?: number }, dataPath: string, open: Opener, retry = true): Promise<BlobInfo> {
    const hash = createHash(digestAlgorithm(expected.digest));
    let offset = 0;
    try {
      for await (const chunk of createReadStream(dataPath, { highWaterMark: 1 << 20 })) {
        hash.update(chunk as Buffer);
        offset += (chunk as Buffer).length;
      }
    } catch (e) {
      if (!isErrno(e, "ENOENT")) throw e;
    }
    const fail = async (err: StrataError): Promise<BlobInfo> => {
      await fs.rm(dataPath, { force: true });
      if (offset > 0 && retry) return this.writeResumable(expected, dataPath, open, false);
      throw err;
    };
    if (expected.size !== undefined && offset > expected.size)
      return fail(new StrataError("SIZE_MISMATCH", `blob ${expected.digest}: partial ingest is larger than ${expected.size} bytes`));
    const fh = await fs.open(dataPath, offset > 0 ? "a" : "w", 0o644);
    let size = offset;
    let overflow = false;
    try {
      if (expected.size === undefined || offset < expected.size) {
        const src = await open(offset);
        for await (const chunk of src) {
          const b = chunk as Buffer;
          size += b.length;
          if (expected.size !== undefined && size > expected.size) {
            overflow = true;
            break;
          }
          hash.update(b);
          await fh.write(b);
        }
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (overflow) return fail(new StrataError("SIZE_MISMATCH", `blob ${expected.digest}: more than the expected ${expected.size} bytes`));
    if (expected.size !== undefined && size !== expected.size)
      return fail(new StrataError("SIZE_MISMATCH", `blob ${expected.digest}: got ${size} bytes, expected ${expected.size}`));
    const got = `${digestAlgorithm(expected.digest)}:${hash.digest("hex")}` as Digest;
    if (got !== expected.digest) return fail(new StrataError("DIGEST_MISMATCH", `blob ${expected.digest}: content has digest ${got}`));
    return { digest: got, size };
  }

  /**
   * Starts an ingest whose digest is not known up front (an archive member):
   * the content is hashed as it is written; `commit()` moves it into place.
   */
  async begin(): Promise<PendingBlob> {
    const path = join(this.ingestDir, `anon-${ownerToken()}-${randomBytes(6).toString("hex")}`);
    const fh = await fs.open(path, "w", 0o644);
    return new PendingBlob(this, path, fh);
  }

  /** fsync the blob directory so renames into it survive a crash. */
  async syncBlobDir(): Promise<void> {
    const fh = await fs.open(join(this.blobsDir, "sha256"), "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async delete(d: Digest): Promise<void> {
    await fs.rm(this.blobPath(d), { force: true });
  }

  async list(): Promise<BlobInfo[]> {
    const out: BlobInfo[] = [];
    for (const alg of await fs.readdir(this.blobsDir).catch(() => [] as string[])) {
      for (const hex of await fs.readdir(join(this.blobsDir, alg))) {
        const d = `${alg}:${hex}`;
        if (!isDigest(d)) continue;
        const st = await fs.stat(join(this.blobsDir, alg, hex)).catch(() => undefined);
        if (st) out.push({ digest: d, size: st.size });
      }
    }
    return out;
  }

  /** Removes partial ingests whose writer is gone. Returns the bytes freed. */
  async cleanIngests(): Promise<{ files: number; bytes: number }> {
    let files = 0;
    let bytes = 0;
    const names = await fs.readdir(this.ingestDir).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(this.ingestDir, name);
      let stale = false;
      if (name.startsWith("anon-")) stale = !ownerAlive(name.split("-")[1]);
      else if (name.endsWith(".lock")) {
        const owner = await fs.readFile(path, "utf8").catch(() => "");
        stale = !ownerAlive(owner);
      } else if (name.endsWith(".data")) {
        const owner = await fs.readFile(path.replace(/\.data$/, ".lock"), "utf8").catch(() => "");
        stale = owner === "" || !ownerAlive(owner);
      } else stale = true;
      if (!stale) continue;
      const st = await fs.stat(path).catch(() => undefined);
      await fs.rm(path, { force: true });
      files++;
      bytes += st?.size ?? 0;
    }
    return { files, bytes };
  }
}

const STAGE = 1 << 20;

/** An anonymous ingest in progress: write chunks, then commit under the computed digest or abort. */
export class PendingBlob {
  private readonly hash = createHash("sha256");
  size = 0;
  private done = false;
  /** Small chunks (a tar writer emits a header, a body and padding per entry) are gathered here: one write per MiB, not per chunk. */
  private staged?: Buffer;
  private fill = 0;
  constructor(
    private readonly store: ContentStore,
    readonly path: string,
    private readonly fh: import("node:fs/promises").FileHandle,
  ) {}

  async write(chunk: Buffer): Promise<void> {
    this.size += chunk.length;
    if (this.fill + chunk.length > STAGE) await this.flush();
    if (chunk.length >= STAGE) return this.writeOut(chunk);
    chunk.copy((this.staged ??= Buffer.allocUnsafe(STAGE)), this.fill);
    this.fill += chunk.length;
  }

  private async flush(): Promise<void> {
    if (this.fill === 0) return;
    const b = this.staged!.subarray(0, this.fill);
    this.fill = 0;
    await this.writeOut(b);
  }

  private async writeOut(b: Buffer): Promise<void> {
    this.hash.update(b);
    for (let off = 0; off < b.length; ) off += (await this.fh.write(b, off, b.length - off)).bytesWritten;
  }

  /** fsync and close; returns the digest. The data stays in ingest/ until commit. */
  async finish(): Promise<BlobInfo> {
    await this.flush();
    await this.fh.sync();
    await this.fh.close();
    this.done = true;
    this.digest = `sha256:${this.hash.digest("hex")}`;
    return { digest: this.digest, size: this.size };
  }

  private digest?: Digest;

  /** Moves finished content into the store under `digest`, which must be what finish() computed. */
  async commit(digest: Digest): Promise<void> {
    if (digest !== this.digest) throw new StrataError("DIGEST_MISMATCH", `ingest ${this.path}: content has digest ${this.digest ?? "(unfinished)"}, not ${digest}`);
    if (await this.store.stat(digest)) {
      await fs.rm(this.path, { force: true });
      return;
    }
    await fs.rename(this.path, this.store.blobPath(digest));
  }

  async abort(): Promise<void> {
    if (!this.done) await this.fh.close().catch(() => {});
    await fs.rm(this.path, { force: true });
  }
}

/**
 * The bytes of the file at `path` from `offset`, verified against `expected`
 * (the bytes before `offset` are read and hashed too), in pieces of
 * CHUNK_BYTES read into two reused buffers: each is read and hashed on a
 * libuv thread while the caller works on the one before it, so the main
 * thread neither hashes nor waits for the disk, and nothing is allocated per
 * chunk. A chunk is valid only until the next is asked for. Size and digest
 * are checked before the last chunk is handed out: a consumer never gets the
 * whole of a wrong blob. A missing file is NOT_FOUND, said as `missing`.
 */
export async function* fileChunks(path: string, expected: { digest: Digest; size: number }, offset: number, missing: string): AsyncGenerator<Buffer> {
  const { digest: d, size } = expected;
  let fh: import("node:fs/promises").FileHandle;
  try {
    fh = await fs.open(path, "r");
  } catch (e) {
    if (isErrno(e, "ENOENT")) throw new StrataError("NOT_FOUND", missing, { cause: e });
    throw wrap(e, "IO", `open blob ${d}`);
  }
  let next: Promise<number> | undefined;
  try {
    const native = nativeFs();
    const hash = native.hashNew(digestAlgorithm(d));
    const len = Math.max(1, Math.min(size, CHUNK_BYTES));
    const bufs = [Buffer.allocUnsafeSlow(len)];
    const read = (i: number, pos: number) => native.hashRead(fh.fd, (bufs[i & 1] ??= Buffer.allocUnsafeSlow(len)), pos, hash);
    next = read(0, 0);
    for (let pos = 0, i = 0; ; i++) {
      const bytesRead = await next!;
      next = undefined;
      const chunk = bufs[i & 1].subarray(0, bytesRead);
      pos += bytesRead;
      if (pos > size) throw new StrataError("SIZE_MISMATCH", `blob ${d}: more than the expected ${size} bytes`);
      // A piece shorter than the buffer: the file ends there.
      const end = pos === size || bytesRead < len;
      if (end) {
        // The end: nothing more on disk, and the right digest.
        if (pos < size) throw new StrataError("SIZE_MISMATCH", `blob ${d}: got ${pos} bytes, expected ${size}`);
        if ((await fh.read(Buffer.alloc(1), 0, 1, pos)).bytesRead !== 0) throw new StrataError("SIZE_MISMATCH", `blob ${d}: more than the expected ${size} bytes`);
        const got = `${digestAlgorithm(d)}:${native.hashDigest(hash)}`;
        if (got !== d) throw new StrataError("DIGEST_MISMATCH", `blob ${d}: digest mismatch: content has digest ${got}`);
      } else {
        next = read(i + 1, pos);
      }
      if (pos > offset) yield chunk.subarray(Math.max(0, offset - (pos - bytesRead)));
      if (end) return;
    }
  } catch (e) {
    throw isStrataError(e) ? e : wrap(e, "IO", `read blob ${d}`);
  } finally {
    // A read still running (the caller stopped early) finishes before its descriptor is closed.
    await next?.catch(() => {});
    await fh.close();
  }
}
