import * as fs from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import tarStream from "tar-stream";
import { StrataError } from "../errors/index.js";

type TarHeader = Partial<tarStream.Header> & { name: string; pax?: Record<string, string> };

export type Compression = "gzip" | "zstd" | "none";

/** Detects compression from the first bytes, never from a name or media type. */
export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  return "none";
}

/** True when `block` is a plausible ustar/gnu/v7 tar header (its checksum matches). */
export function isTarHeader(block: Buffer): boolean {
  if (block.length < 512) return false;
  const stored = parseInt(block.subarray(148, 156).toString("ascii").replace(/\0.*$/, "").trim(), 8);
  if (!Number.isFinite(stored)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i];
  return sum === stored;
}

/** SOURCE_DATE_EPOCH, when set, clamps every timestamp written (reproducible output). */
export function sourceDateEpoch(): number | undefined {
  const v = process.env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new StrataError("INVALID_ARGUMENT", `SOURCE_DATE_EPOCH "${v}" is not a non-negative integer`);
  return n;
}

const MAX_OCTAL_ID = 0o7777777;

function devMajor(rdev: number): number {
  return ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}
function devMinor(rdev: number): number {
  return (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
}

/**
 * Packs a directory as a layer tar: entries sorted by name, headers
 * normalised (no user/group names, mtimes clamped to SOURCE_DATE_EPOCH),
 * hardlinks for repeated inodes, devices and FIFOs kept. The same tree gives
 * the same bytes.
 */
export function packDirectory(root: string): Readable {
  const pack = tarStream.pack();
  const epoch = sourceDateEpoch();
  const seen = new Map<string, string>();

  const header = (name: string, st: import("node:fs").Stats): TarHeader => {
    const mtime = epoch !== undefined && st.mtimeMs / 1000 > epoch ? new Date(epoch * 1000) : new Date(Math.floor(st.mtimeMs / 1000) * 1000);
    const h: TarHeader = { name, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, uname: "", gname: "", mtime };
    if (st.uid > MAX_OCTAL_ID || st.gid > MAX_OCTAL_ID) {
      h.pax = { uid: String(st.uid), gid: String(st.gid) };
      h.uid = Math.min(st.uid, MAX_OCTAL_ID);
      h.gid = Math.min(st.gid, MAX_OCTAL_ID);
    }
    return h;
  };

  const entry = (h: TarHeader) =>
    new Promise<void>((resolve, reject) => pack.entry(h, Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));

  async function walk(rel: string): Promise<void> {
    const names = (await fs.readdir(join(root, rel))).sort();
    for (const n of names) {
      const relPath = rel === "" ? n : `${rel}/${n}`;
      const abs = join(root, relPath);
      const st = await fs.lstat(abs);
      const h = header(relPath, st);
      if (st.isDirectory()) {
        await entry({ ...h, name: relPath + "/", type: "directory" });
        await walk(relPath);
      } else if (st.isSymbolicLink()) {
        await entry({ ...h, type: "symlink", linkname: await fs.readlink(abs) });
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? seen.get(key) : undefined;
        if (first !== undefined) {
          await entry({ ...h, type: "link", linkname: first, size: 0 });
          continue;
        }
        if (st.nlink > 1) seen.set(key, relPath);
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry({ ...h, type: "file", size: st.size }, (err) => (err ? reject(err) : resolve()));
          const src = (async function* () {
            const fh = await fs.open(abs, "r");
            try {
              yield* fh.createReadStream({ highWaterMark: 1 << 20 });
            } finally {
              await fh.close().catch(() => {});
            }
          })();
          Readable.from(src).on("error", reject).pipe(sink);
        });
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        await entry({ ...h, type: st.isCharacterDevice() ? "character-device" : "block-device", devmajor: devMajor(st.rdev), devminor: devMinor(st.rdev) });
      } else if (st.isFIFO()) {
        await entry({ ...h, type: "fifo" });
      }
      // Sockets have no tar form and are skipped, as Docker does.
    }
  }

  walk("")
    .then(() => pack.finalize())
    .catch((e) => pack.destroy(e instanceof StrataError ? e : new StrataError("IO", `pack ${root}: ${(e as Error).message}`, { cause: e })));
  return pack as unknown as Readable;
}

/**
 * Returns a stream of the uncompressed bytes of `src`, detecting gzip or
 * zstd from its first bytes. zstd goes through the `zstd` executable
 * (Node 20's zlib has none).
 */
export async function decompress(src: Readable): Promise<Readable> {
  const head = await peek(src, 4);
  const kind = detectCompression(head.head);
  if (kind === "none") return head.stream;
  if (kind === "gzip") {
    const { createGunzip } = await import("node:zlib");
    const gunzip = createGunzip();
    head.stream.on("error", (e) => gunzip.destroy(e));
    return head.stream.pipe(gunzip);
  }
  const { spawn } = await import("node:child_process");
  const child = spawn("zstd", ["-dc", "-q"], { stdio: ["pipe", "pipe", "inherit"] });
  child.on("error", (e) => child.stdout.destroy(new StrataError("UNSUPPORTED", `zstd layer: cannot run zstd (${e.message})`)));
  child.on("exit", (code) => {
    if (code !== 0) child.stdout.destroy(new StrataError("CORRUPT", `zstd layer: zstd exited with ${code}`));
  });
  head.stream.on("error", (e) => child.stdout.destroy(e));
  head.stream.pipe(child.stdin);
  return child.stdout;
}

/** Reads at least `n` bytes (or to EOF) and gives back a stream that still yields everything. */
export async function peek(src: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const chunks: Buffer[] = [];
  let len = 0;
  const it = src[Symbol.asyncIterator]();
  let done = false;
  while (len < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    chunks.push(r.value as Buffer);
    len += (r.value as Buffer).length;
  }
  const head = Buffer.concat(chunks);
  const stream = Readable.from(
    (async function* () {
      if (head.length) yield head;
      if (done) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value as Buffer;
      }
    })(),
    { objectMode: false },
  );
  return { head, stream };
}
