import * as fs from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import tarStream from "tar-stream";
import { StrataError } from "../errors/index.js";
import { sourceDateEpoch } from "./compression.js";

type TarHeader = Partial<tarStream.Header> & { name: string; pax?: Record<string, string> };

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

