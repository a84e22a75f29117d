import * as fs from "node:fs/promises";
import { lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import tarStream from "tar-stream";
import { StrataError, isStrataError } from "../errors/index.js";
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
 * writes the values as UTF-8 text, which corrupts binary xattrs
 * (security.capability, user.* blobs), so the two codecs below are ours: the
 * writer plugs the encoder into tar-stream's pack, the reader (readTar) is
 * ours altogether.
 */

/** A malformed archive; readTar() turns it into INVALID_ARCHIVE naming its input. */
class BadTar extends Error {}

/** Encodes PAX records, values byte for byte. */
function encodePaxRecords(records: readonly (readonly [string, string | Buffer])[]): Buffer {
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
function decodePaxRecords(buf: Buffer): { fields: Record<string, string>; xattrs: Map<string, Buffer> } {
  const fields: Record<string, string> = {};
  const xattrs = new Map<string, Buffer>();
  let off = 0;
  while (off < buf.length) {
    if (buf[off] === 0) break; // NUL padding after the last record
    const space = buf.indexOf(0x20, off);
    const len = space > off && space - off <= 20 ? Number(buf.toString("latin1", off, space)) : NaN;
    if (!Number.isInteger(len) || len <= space - off + 1 || off + len > buf.length || buf[off + len - 1] !== 0x0a)
      throw new BadTar("malformed PAX record");
    const eq = buf.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= off + len - 1) throw new BadTar("malformed PAX record");
    const key = buf.toString("utf8", space + 1, eq);
    const value = buf.subarray(eq + 1, off + len - 1);
    fields[key] = value.toString("utf8");
    if (key.startsWith(PAX_XATTR_PREFIX)) xattrs.set(key.slice(PAX_XATTR_PREFIX.length), Buffer.from(value));
    off += len;
  }
  return { fields, xattrs };
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

// ---- the reader ------------------------------------------------------------

export type TarEntryType = "file" | "link" | "symlink" | "character-device" | "block-device" | "directory" | "fifo" | "contiguous-file";

/** One entry's header, with its GNU long-name and PAX records applied. */
export interface TarEntry {
  name: string;
  /** undefined: a typeflag this reader does not know (`typeflag` says which) */
  type: TarEntryType | undefined;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  /** a file's bytes of data (0 for every other type, whatever the header says: any data an unknown type has is skipped) */
  size: number;
  /** seconds since the epoch; PAX times may have a fraction */
  mtime: number;
  atime: number | undefined;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** `SCHILY.xattr.*` PAX records, values byte for byte */
  xattrs: Map<string, Buffer> | undefined;
}

/**
 * Where an entry's data goes. A piece is a view into the reader's input and
 * is valid only during the call (or until the promise it returns settles):
 * keep a copy, not the piece.
 */
export interface TarEntrySink {
  data(piece: Buffer): void | Promise<void>;
  end(): void | Promise<void>;
}

/** Called once per entry, in order; a sink receives its data, none skips it. A promise is waited for. */
export type TarVisitor = (entry: TarEntry) => TarEntrySink | undefined | Promise<TarEntrySink | undefined>;

const TYPES: Record<string, TarEntryType> = { "0": "file", "\0": "file", "1": "link", "2": "symlink", "3": "character-device", "4": "block-device", "5": "directory", "6": "fifo", "7": "contiguous-file" };
/** PAX, GNU long name/link: most are a few hundred bytes; more is refused rather than held. */
const MAX_META = 1 << 20;
const BLOCK = 512;

/** An octal field (spaces or NULs around it) or a base-256 one (high bit set); NaN when it is neither. */
function numeric(b: Buffer, off: number, len: number): number {
  const end = off + len;
  if (b[off] & 0x80) {
    // base-256, two's complement: bit 0x40 of the first byte is the sign
    const inv = b[off] & 0x40 ? 0xff : 0;
    let n = 0;
    for (let i = off; i < end; i++) {
      let c = b[i] ^ inv;
      if (i === off) c &= 0x7f;
      n = n * 256 + c;
    }
    if (n > Number.MAX_SAFE_INTEGER) return NaN;
    return inv ? -n - 1 : n;
  }
  let i = off;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let n = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c < 0x30 || c > 0x37) break;
    n = n * 8 + (c - 0x30);
  }
  for (; i < end; i++) if (b[i] !== 0x20 && b[i] !== 0) return NaN;
  return n;
}

function field(b: Buffer, off: number, len: number, what: string): number {
  const n = numeric(b, off, len);
  if (Number.isNaN(n)) throw new BadTar(`header field ${what} is not a number`);
  return n;
}

/** A NUL-terminated string field. */
function text(b: Buffer, off: number, len: number): string {
  let end = off;
  const max = off + len;
  while (end < max && b[end] !== 0) end++;
  return b.toString("utf8", off, end);
}

function checksumOk(b: Buffer, off: number): boolean {
  const stored = numeric(b, off + 148, 8);
  let unsigned = 8 * 0x20;
  let signed = 8 * 0x20;
  for (let i = off; i < off + BLOCK; i++) {
    if (i === off + 148) i += 8;
    const c = b[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

const USTAR = Buffer.from("ustar\x0000", "latin1");
/** POSIX ustar magic and version: the name has a prefix field (GNU and v7 headers use those bytes otherwise). */
function isUstar(b: Buffer, off: number): boolean {
  for (let i = 0; i < 8; i++) if (b[off + 257 + i] !== USTAR[i]) return false;
  return true;
}

function isZeroBlock(b: Buffer, off: number): boolean {
  for (let i = off; i < off + BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

function paxNumber(fields: Record<string, string>, key: string): number | undefined {
  const v = fields[key];
  if (v === undefined) return undefined;
  const n = v.trim() === "" ? NaN : Number(v);
  if (!Number.isFinite(n)) throw new BadTar(`PAX ${key} "${v}" is not a number`);
  return n;
}

/** The input's chunks; its failures that are not StrataErrors become IO errors. */
async function* inputChunks(input: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      let r: IteratorResult<Buffer>;
      try {
        r = await it.next();
      } catch (e) {
        done = true;
        throw isStrataError(e) ? e : new StrataError("IO", `reading the ${what}: ${(e as Error).message}`, { cause: e });
      }
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await it.return?.(); // stopped early: the input is closed (a stream destroyed, a file handle closed)
  }
}

/** readTar's states: what the next input bytes are. */
const HEADER = 0;
const META = 1;
const DATA = 2;
const PADDING = 3;
const END = 4;

/**
 * The project's one tar reader. It parses the input as it arrives, with no
 * stream per entry: each entry's header goes to `visit`, and its data, as
 * views into the input, to the sink `visit` returns. Input chunks may be
 * buffers the source reuses once asked for the next (the content store's
 * verified reads do), since nothing here keeps a view past a call.
 *
 * Formats: ustar, GNU and v7 headers; PAX extended headers (path, linkpath,
 * size, uid, gid, mtime, atime, binary-safe `SCHILY.xattr.*`); GNU long
 * names and link names; base-256 numbers. As Go's archive/tar (and so
 * Docker): a `\0` typeflag with a trailing slash is a directory, header-only
 * types (links, devices, directories, FIFOs) carry no data whatever their
 * size field says, global PAX headers are read and ignored, and two zero
 * blocks end the archive (what follows is read and ignored, so a verifying
 * input still sees its end). Malformed input is INVALID_ARCHIVE ("invalid
 * <what>: …", `what` naming the input, default "tar"); the input's own
 * StrataErrors and the visitor's errors pass through as they are, other
 * input failures become IO ("reading the <what>: …").
 * Resolves with the number of entries.
 */
export async function readTar(input: AsyncIterable<Buffer>, visit: TarVisitor, what = "tar"): Promise<number> {
  try {
    return await parse(inputChunks(input, what), visit);
  } catch (e) {
    if (e instanceof BadTar) throw new StrataError("INVALID_ARCHIVE", `invalid ${what}: ${e.message}`);
    throw e;
  }
}

async function parse(input: AsyncIterable<Buffer>, visit: TarVisitor): Promise<number> {
  let state: number = HEADER;
  const partial = Buffer.allocUnsafe(BLOCK); // a header split across input chunks
  let partialLen = 0;
  let zeroBlocks = 0;
  let meta: Buffer | undefined; // a PAX or GNU long-name body being gathered
  let metaLen = 0;
  let metaType = "";
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: ReturnType<typeof decodePaxRecords> | undefined;
  let sink: TarEntrySink | undefined;
  let remaining = 0; // bytes of data (or meta) left
  let padding = 0;
  let entries = 0;
  let last = "";

  const header = async (b: Buffer, off: number): Promise<void> => {
    if (isZeroBlock(b, off)) {
      if (++zeroBlocks === 2) state = END;
      return;
    }
    if (zeroBlocks) throw new BadTar(`a lone zero block before a header${last ? ` (after entry "${last}")` : ""}`);
    if (!checksumOk(b, off)) throw new BadTar(`bad header checksum${last ? ` after entry "${last}"` : ""}`);
    const flag = String.fromCharCode(b[off + 156]);
    const size = field(b, off + 124, 12, "size");
    if (size < 0) throw new BadTar("negative size");
    if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
      if (size > MAX_META) throw new BadTar(`a ${flag === "x" || flag === "g" ? "PAX" : "GNU long name"} header of ${size} bytes (at most ${MAX_META} are read)`);
      metaType = flag;
      meta = Buffer.allocUnsafe(size);
      metaLen = 0;
      remaining = size;
      padding = -size & (BLOCK - 1);
      state = size ? META : padding ? PADDING : HEADER;
      if (!size) endMeta();
      return;
    }
    const ustar = isUstar(b, off);
    let name = text(b, off, 100);
    if (ustar && b[off + 345] !== 0) name = `${text(b, off + 345, 155)}/${name}`;
    let type: TarEntryType | undefined = TYPES[flag];
    if (flag === "\0" && name.endsWith("/")) type = "directory";
    const e: TarEntry = {
      name: longName ?? name,
      type,
      typeflag: flag,
      mode: field(b, off + 100, 8, "mode"),
      uid: field(b, off + 108, 8, "uid"),
      gid: field(b, off + 116, 8, "gid"),
      size,
      mtime: field(b, off + 136, 12, "mtime"),
      atime: undefined,
      linkname: longLink ?? text(b, off + 157, 100),
      devmajor: type === "character-device" || type === "block-device" ? field(b, off + 329, 8, "devmajor") : 0,
      devminor: type === "character-device" || type === "block-device" ? field(b, off + 337, 8, "devminor") : 0,
      xattrs: undefined,
    };
    longName = longLink = undefined;
    if (pax) {
      const f = pax.fields;
      if (f.path !== undefined) e.name = f.path;
      if (f.linkpath !== undefined) e.linkname = f.linkpath;
      const s = paxNumber(f, "size");
      if (s !== undefined) {
        if (!Number.isSafeInteger(s) || s < 0) throw new BadTar(`PAX size "${f.size}" of "${e.name}"`);
        e.size = s;
      }
      e.uid = paxNumber(f, "uid") ?? e.uid;
      e.gid = paxNumber(f, "gid") ?? e.gid;
      e.mtime = paxNumber(f, "mtime") ?? e.mtime;
      e.atime = paxNumber(f, "atime");
      if (pax.xattrs.size) e.xattrs = pax.xattrs;
      if (Object.keys(f).some((k) => k.startsWith("GNU.sparse."))) throw new StrataError("UNSUPPORTED", `tar entry "${e.name}": GNU sparse files are not supported`);
      pax = undefined;
    }
    // Header-only types carry no data; an unknown type's data is skipped.
    remaining = type === undefined || type === "file" || type === "contiguous-file" ? e.size : 0;
    e.size = type === undefined ? 0 : remaining;
    entries++;
    last = e.name;
    padding = -remaining & (BLOCK - 1);
    const got = visit(e);
    sink = got instanceof Promise ? await got : got;
    state = remaining ? DATA : padding ? PADDING : HEADER;
    if (remaining === 0 && sink) {
      const ended = sink.end();
      sink = undefined;
      if (ended) await ended;
    }
  };

  const endMeta = (): void => {
    const body = meta!;
    meta = undefined;
    if (metaType === "x") pax = decodePaxRecords(body);
    else if (metaType === "g") decodePaxRecords(body); // checked, then ignored (as Docker does)
    else {
      const nul = body.indexOf(0);
      const s = body.toString("utf8", 0, nul < 0 ? body.length : nul);
      if (metaType === "L") longName = s;
      else longLink = s;
    }
  };

  for await (const chunk of input) {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      switch (state) {
        case HEADER: {
          if (partialLen === 0 && len - off >= BLOCK) {
            const at = off;
            off += BLOCK;
            await header(chunk, at);
          } else {
            const n = Math.min(BLOCK - partialLen, len - off);
            chunk.copy(partial, partialLen, off, off + n);
            partialLen += n;
            off += n;
            if (partialLen === BLOCK) {
              partialLen = 0;
              await header(partial, 0);
            }
          }
          break;
        }
        case META: {
          const n = Math.min(remaining, len - off);
          chunk.copy(meta!, metaLen, off, off + n);
          metaLen += n;
          off += n;
          remaining -= n;
          if (remaining === 0) {
            endMeta();
            state = padding ? PADDING : HEADER;
          }
          break;
        }
        case DATA: {
          const n = Math.min(remaining, len - off);
          const piece = chunk.subarray(off, off + n);
          off += n;
          remaining -= n;
          if (sink) {
            const wrote = sink.data(piece);
            if (wrote) await wrote;
          }
          if (remaining === 0) {
            state = padding ? PADDING : HEADER;
            if (sink) {
              const ended = sink.end();
              sink = undefined;
              if (ended) await ended;
            }
          }
          break;
        }
        case PADDING: {
          const n = Math.min(padding, len - off);
          off += n;
          padding -= n;
          if (padding === 0) state = HEADER;
          break;
        }
        case END:
          off = len; // trailing blocks: read, ignored
          break;
      }
    }
  }
  // The end of the input at an entry boundary is an end too (as Go's reader takes it), but not after an extended header.
  if (state === END || (state === HEADER && partialLen === 0 && !pax && longName === undefined && longLink === undefined)) return entries;
  throw new BadTar(`unexpected end of data${last ? ` after entry "${last}"` : ""}`);
}
