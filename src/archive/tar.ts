import * as fs from "node:fs/promises";
import { lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import tarStream from "tar-stream";
import { StrataError } from "../errors/index.js";
import { sourceDateEpoch } from "./compression.js";

type TarHeader = Partial<tarStream.Header> & { name: string; pax?: Record<string, string> };

/** Files up to this size are read whole rather than streamed. */
const SMALL_FILE = 1 << 20;

const MAX_OCTAL_ID = 0o7777777;
/** PAX records carrying extended attributes (GNU tar, Go's archive/tar, Docker). */
export const PAX_XATTR_PREFIX = "SCHILY.xattr.";

function devMajor(rdev: number): number {
  return ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}
function devMinor(rdev: number): number {
  return (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
}

/*
 * PAX records are `<len> <key>=<value>\n`, the length in bytes. tar-stream
 * reads and writes the values as UTF-8 text, which corrupts binary xattrs
 * (security.capability, user.* blobs), so the two codecs below are ours and
 * are plugged into tar-stream's reader and writer.
 */

/** Encodes PAX records, values byte for byte. */
export function encodePaxRecords(records: readonly (readonly [string, string | Buffer])[]): Buffer {
  const out: Buffer[] = [];
  for (const [key, value] of records) {
    const body = Buffer.concat([Buffer.from(` ${key}=`), typeof value === "string" ? Buffer.from(value) : value, Buffer.from("\n")]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    out.push(Buffer.from(String(len)), body);
  }
  return Buffer.concat(out);
}

/** Decodes PAX records: every value as UTF-8 text in `fields`, and `SCHILY.xattr.*` values as raw bytes in `xattrs`. */
export function decodePaxRecords(buf: Buffer): { fields: Record<string, string>; xattrs: Map<string, Buffer> } {
  const fields: Record<string, string> = {};
  const xattrs = new Map<string, Buffer>();
  let off = 0;
  while (off < buf.length) {
    if (buf[off] === 0) break; // NUL padding after the last record
    const space = buf.indexOf(0x20, off);
    const len = space > off && space - off <= 20 ? Number(buf.toString("latin1", off, space)) : NaN;
    if (!Number.isInteger(len) || len <= space - off + 1 || off + len > buf.length || buf[off + len - 1] !== 0x0a)
      throw new StrataError("INVALID_ARCHIVE", "invalid tar: malformed PAX record");
    const eq = buf.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= off + len - 1) throw new StrataError("INVALID_ARCHIVE", "invalid tar: malformed PAX record");
    const key = buf.toString("utf8", space + 1, eq);
    const value = buf.subarray(eq + 1, off + len - 1);
    fields[key] = value.toString("utf8");
    if (key.startsWith(PAX_XATTR_PREFIX)) xattrs.set(key.slice(PAX_XATTR_PREFIX.length), Buffer.from(value));
    off += len;
  }
  return { fields, xattrs };
}

const paxXattrMap = new WeakMap<object, Map<string, Buffer>>();

/** The extended attributes of an entry read by `tarExtract()`, byte for byte. */
export function paxXattrs(header: { pax?: unknown }): Map<string, Buffer> | undefined {
  const pax = header.pax;
  return pax && typeof pax === "object" ? paxXattrMap.get(pax) : undefined;
}

interface ExtractInternals {
  _header: { type: string } | null;
  _pax: Record<string, string> | null;
  _paxGlobal: Record<string, string> | null;
  _decodeLongHeader(buf: Buffer): void;
}

/**
 * The project's tar reader: tar-stream's extractor (PAX, GNU long names,
 * base-256 numbers) with a binary-safe PAX decoder, so that `paxXattrs()`
 * gives xattr values byte for byte. `header.pax` keeps the text fields
 * (path, linkpath, uid, gid, mtime, …).
 */
export function tarExtract(): tarStream.Extract {
  const extract = tarStream.extract();
  const x = extract as unknown as ExtractInternals;
  const original = x._decodeLongHeader;
  if (typeof original !== "function" || !("_paxGlobal" in x))
    throw new StrataError("UNSUPPORTED", "tar-stream internals changed: cannot read binary PAX records");
  x._decodeLongHeader = function (this: ExtractInternals, buf: Buffer) {
    const type = this._header?.type;
    if (type !== "pax-header" && type !== "pax-global-header") return original.call(this, buf);
    const { fields, xattrs } = decodePaxRecords(buf);
    if (type === "pax-global-header") {
      this._paxGlobal = fields;
      paxXattrMap.set(fields, xattrs);
      return;
    }
    const global = this._paxGlobal;
    const merged = global === null ? fields : Object.assign({}, global, fields);
    const globalX = global === null ? undefined : paxXattrMap.get(global);
    paxXattrMap.set(merged, globalX?.size ? new Map([...globalX, ...xattrs]) : xattrs);
    this._pax = merged;
  };
  return extract;
}

interface PackInternals {
  _encode(header: TarHeader): void;
  push(chunk: Buffer | null): boolean;
}

const rawPax = Symbol("strata.rawPax");
type RawPaxHeader = TarHeader & { [rawPax]?: Buffer };

/** What tar-stream can store in a ustar header without a PAX `path` (ASCII, fits the name/prefix split). */
function ustarName(name: string): boolean {
  if (Buffer.byteLength(name) !== name.length) return false;
  let rest = name;
  let prefix = 0;
  while (rest.length > 100) {
    const i = rest.indexOf("/");
    if (i === -1) return false;
    prefix += (prefix ? 1 : 0) + i;
    rest = rest.slice(i + 1);
  }
  return prefix <= 155;
}
function ustarLink(linkname: string | undefined): boolean {
  return !linkname || (Buffer.byteLength(linkname) === linkname.length && linkname.length <= 100);
}
/** A stand-in ustar name for readers that ignore PAX: printable ASCII, at most 100 bytes, the tail kept. */
function ustarStandIn(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, "_");
  return ascii.length <= 100 ? ascii : ascii.slice(ascii.length - 100);
}

function tarPack(): tarStream.Pack {
  const pack = tarStream.pack();
  const p = pack as unknown as PackInternals;
  const encode = p._encode;
  if (typeof encode !== "function" || typeof p.push !== "function")
    throw new StrataError("UNSUPPORTED", "tar-stream internals changed: cannot write binary PAX records");
  // Headers with binary PAX records: our extended header, then the entry's ustar header.
  p._encode = function (this: PackInternals, header: RawPaxHeader) {
    const raw = header[rawPax];
    if (raw === undefined) return encode.call(this, header);
    encode.call(this, { name: "PaxHeader", type: "pax-header" as tarStream.Header["type"], size: raw.length, mode: header.mode, uid: header.uid, gid: header.gid, mtime: header.mtime, uname: header.uname, gname: header.gname });
    this.push(raw);
    if (raw.length % 512) this.push(Buffer.alloc(512 - (raw.length % 512)));
    encode.call(this, { ...header, [rawPax]: undefined, pax: undefined });
  };
  return pack;
}

/**
 * The one tar writer: turns files of a tree into layer entries, with
 * normalised headers (no user/group names, mtimes in whole seconds and
 * clamped to SOURCE_DATE_EPOCH, big ids in PAX), hardlinks for inodes already
 * written, devices and FIFOs, and optionally xattrs as `SCHILY.xattr.*` PAX
 * records. Callers add entries in the order they want them (sorted, for
 * deterministic output) and await each add (backpressure).
 */
export class LayerWriter {
  private readonly pack = tarPack();
  private readonly epoch = sourceDateEpoch();
  private readonly seen = new Map<string, string>();

  get stream(): Readable {
    return this.pack as unknown as Readable;
  }

  private header(name: string, st: Pick<Stats, "mode" | "uid" | "gid" | "mtimeMs">): TarHeader {
    const epoch = this.epoch;
    const mtime = epoch !== undefined && st.mtimeMs / 1000 > epoch ? new Date(epoch * 1000) : new Date(Math.floor(st.mtimeMs / 1000) * 1000);
    const h: TarHeader = { name, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, uname: "", gname: "", mtime };
    if (st.uid > MAX_OCTAL_ID || st.gid > MAX_OCTAL_ID) {
      h.pax = { uid: String(st.uid), gid: String(st.gid) };
      h.uid = Math.min(st.uid, MAX_OCTAL_ID);
      h.gid = Math.min(st.gid, MAX_OCTAL_ID);
    }
    return h;
  }

  /** Moves the PAX fields of `h` and `xattrs` into one binary-safe extended header. */
  private withXattrs(h: TarHeader, xattrs: readonly (readonly [string, Buffer])[] | undefined): TarHeader {
    if (!xattrs || xattrs.length === 0) return h;
    const records: [string, string | Buffer][] = [];
    const out: RawPaxHeader = { ...h, pax: undefined };
    if (!ustarName(h.name)) {
      records.push(["path", h.name]);
      out.name = ustarStandIn(h.name);
    }
    if (!ustarLink(h.linkname)) {
      records.push(["linkpath", h.linkname!]);
      out.linkname = ustarStandIn(h.linkname!);
    }
    for (const [k, v] of Object.entries(h.pax ?? {})) records.push([k, v]);
    for (const [k, v] of [...xattrs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) records.push([PAX_XATTR_PREFIX + k, v]);
    out[rawPax] = encodePaxRecords(records);
    return out;
  }

  /** One entry whose whole body is in hand; a pack destroyed meanwhile (reader gone) fails it rather than the process. */
  private entry(h: TarHeader, body = Buffer.alloc(0)): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pack.entry(h, body, (err) => (err ? reject(err) : resolve())).on("error", reject);
    });
  }

  /**
   * Adds the file `abs` (already lstat'ed as `st`) as entry `relPath`
   * (relative, no trailing slash). Sockets have no tar form and are skipped,
   * as Docker does.
   */
  async add(relPath: string, abs: string, st: Stats, xattrs?: readonly (readonly [string, Buffer])[]): Promise<void> {
    const h = this.header(relPath, st);
    if (st.isDirectory()) {
      await this.entry(this.withXattrs({ ...h, name: relPath + "/", type: "directory" }, xattrs));
    } else if (st.isSymbolicLink()) {
      await this.entry(this.withXattrs({ ...h, type: "symlink", linkname: readlinkSync(abs) }, xattrs));
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? this.seen.get(key) : undefined;
      if (first !== undefined) {
        await this.entry(this.withXattrs({ ...h, type: "link", linkname: first, size: 0 }, xattrs));
        return;
      }
      if (st.nlink > 1) this.seen.set(key, relPath);
      if (st.size <= SMALL_FILE) {
        // Small files in one read: a stream would allocate a full read buffer per file (GC churn on 10,000-file layers).
        const body = readFileSync(abs);
        if (body.length !== st.size) throw new StrataError("IO", `pack ${relPath}: the file changed size while being read`);
        await this.entry(this.withXattrs({ ...h, type: "file", size: st.size }, xattrs), body);
        return;
      }
      await new Promise<void>((resolve, reject) => {
        const sink = this.pack.entry(this.withXattrs({ ...h, type: "file", size: st.size }, xattrs), (err) => (err ? reject(err) : resolve()));
        sink.on("error", reject); // the pack destroyed mid-file (reader gone): an error for the caller, not an unhandled event
        const src = (async function* () {
          const fh = await fs.open(abs, "r");
          try {
            yield* fh.createReadStream({ highWaterMark: 1 << 20 });
          } finally {
            await fh.close().catch(() => {});
          }
        })();
        // One chunk read ahead at most (an object-mode stream would buffer 16 MiB of them).
        Readable.from(src, { highWaterMark: 1 }).on("error", reject).pipe(sink);
      });
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      await this.entry(this.withXattrs({ ...h, type: st.isCharacterDevice() ? "character-device" : "block-device", devmajor: devMajor(st.rdev), devminor: devMinor(st.rdev) }, xattrs));
    } else if (st.isFIFO()) {
      await this.entry(this.withXattrs({ ...h, type: "fifo" }, xattrs));
    }
  }

  /** Adds an empty regular file, 0644 root:root with mtime 0 (a whiteout or opaque marker: nothing in it depends on the tree). */
  async addMarker(relPath: string): Promise<void> {
    await this.entry({ ...this.header(relPath, { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 }), type: "file" });
  }

  finalize(): void {
    this.pack.finalize();
  }

  fail(e: unknown, context: string): void {
    this.pack.destroy(e instanceof StrataError ? e : new StrataError("IO", `${context}: ${(e as Error).message}`, { cause: e }));
  }
}

/**
 * Packs a directory as a layer tar: entries sorted by name, headers
 * normalised (no user/group names, mtimes clamped to SOURCE_DATE_EPOCH),
 * hardlinks for repeated inodes, devices and FIFOs kept, and `xattrs(abs)`
 * as PAX records when given. The same tree gives the same bytes.
 */
export function packDirectory(root: string, xattrs?: (abs: string) => readonly (readonly [string, Buffer])[]): Readable {
  const writer = new LayerWriter();

  // Synchronous reads: each is a few microseconds, a thread-pool round trip several times that.
  async function walk(rel: string): Promise<void> {
    const names = readdirSync(join(root, rel)).sort();
    for (const n of names) {
      const relPath = rel === "" ? n : `${rel}/${n}`;
      const abs = join(root, relPath);
      const st = lstatSync(abs);
      await writer.add(relPath, abs, st, st.isSocket() ? undefined : xattrs?.(abs));
      if (st.isDirectory()) await walk(relPath);
    }
  }

  walk("")
    .then(() => writer.finalize())
    .catch((e) => writer.fail(e, `pack ${root}`));
  return writer.stream;
}
