import * as fs from "node:fs/promises";
import { lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { StrataError, isStrataError } from "../errors/index.js";
import { sourceDateEpoch } from "./compression.js";

/** Files up to this size are read whole rather than streamed. */
const SMALL_FILE = 1 << 20;

const MAX_OCTAL_ID = 0o7777777;
/** PAX records carrying extended attributes (GNU tar, Go's archive/tar, Docker). */
export const PAX_XATTR_PREFIX = "SCHILY.xattr.";
const BLOCK = 512;
/** ustar's magic and version, as POSIX writes them */
const USTAR = Buffer.from("ustar\x0000", "latin1");

function devMajor(rdev: number): number {
  return ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}
function devMinor(rdev: number): number {
  return (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
}

/*
 * PAX records are `<len> <key>=<value>\n`, the length in bytes; values are
 * bytes, not text (binary xattrs such as security.capability).
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

// ---- the writer ------------------------------------------------------------

/** One entry to write. A directory's name gets its trailing slash here. */
export interface TarWriteHeader {
  name: string;
  type: Exclude<TarEntryType, "contiguous-file">;
  mode: number;
  uid: number;
  gid: number;
  /** whole seconds since the epoch */
  mtime: number;
  /** a file's bytes of data; 0 for every other type */
  size?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** written as `SCHILY.xattr.*` PAX records, sorted by name */
  xattrs?: readonly (readonly [string, Buffer])[];
}

const TYPEFLAG: Record<TarWriteHeader["type"], string> = { file: "0", link: "1", symlink: "2", "character-device": "3", "block-device": "4", directory: "5", fifo: "6" };
/** Small pieces are gathered into chunks of this size before they are pushed (one chunk, not thousands, per batch of small files). */
const GATHER = 256 << 10;

/** `value` as a NUL-terminated, zero-padded octal field of `width` bytes; false when it does not fit. */
function putOctal(b: Buffer, off: number, width: number, value: number): boolean {
  if (!Number.isInteger(value) || value < 0 || value >= 8 ** (width - 1)) return false;
  b.write(value.toString(8).padStart(width - 1, "0"), off, "latin1");
  return true;
}

/** `value` as a base-256 field (GNU's form for numbers too big for octal, which every reader of layers takes). */
function putBase256(b: Buffer, off: number, width: number, value: number): void {
  for (let i = off + width - 1; i > off; i--) {
    b[i] = value % 256;
    value = Math.floor(value / 256);
  }
  b[off] = 0x80;
}

/** `name` split at a slash into ustar's prefix (≤ 155 bytes) and name (≤ 100) fields; undefined when it cannot be, or is not ASCII. */
function ustarSplit(name: string): [prefix: string, rest: string] | undefined {
  if (!/^[\x01-\x7f]*$/.test(name)) return undefined;
  if (name.length <= 100) return ["", name];
  // The slash nearest the end that leaves a non-empty name and a prefix of at most 155 bytes.
  const i = name.lastIndexOf("/", Math.min(155, name.length - 2));
  if (i <= 0 || name.length - i - 1 > 100) return undefined;
  return [name.slice(0, i), name.slice(i + 1)];
}

/** A stand-in for a name PAX carries, for readers that ignore PAX: printable ASCII, at most 100 bytes, the tail kept. */
function ustarStandIn(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, "_");
  return ascii.length <= 100 ? ascii : ascii.slice(ascii.length - 100);
}

/** One 512-byte ustar header block, checksum included. */
function headerBlock(name: string, prefix: string, typeflag: string, h: { mode: number; uid: number; gid: number; size: number; mtime: number; linkname: string; devmajor: number; devminor: number }): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(name, 0, 100, "latin1");
  putOctal(b, 100, 8, h.mode);
  putOctal(b, 108, 8, h.uid);
  putOctal(b, 116, 8, h.gid);
  if (!putOctal(b, 124, 12, h.size)) putBase256(b, 124, 12, h.size);
  putOctal(b, 136, 12, h.mtime);
  b.write(typeflag, 156, 1, "latin1");
  b.write(h.linkname, 157, 100, "latin1");
  USTAR.copy(b, 257);
  putOctal(b, 329, 8, h.devmajor);
  putOctal(b, 337, 8, h.devminor);
  b.write(prefix, 345, 155, "latin1");
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "latin1");
  return b;
}

/** The header blocks of one entry: a PAX extended header first when a field does not fit ustar, or xattrs are given. */
export function encodeTarHeader(h: TarWriteHeader): Buffer[] {
  const name = h.type === "directory" && !h.name.endsWith("/") ? h.name + "/" : h.name;
  const linkname = h.linkname ?? "";
  const size = h.type === "file" ? (h.size ?? 0) : 0;
  const records: [string, string | Buffer][] = [];
  let split = ustarSplit(name);
  if (split === undefined) {
    records.push(["path", name]);
    split = ["", ustarStandIn(name)];
  }
  let link = linkname;
  if (!/^[\x01-\x7f]{0,100}$/.test(linkname)) {
    records.push(["linkpath", linkname]);
    link = ustarStandIn(linkname);
  }
  let { uid, gid } = h;
  let mtime = Math.floor(h.mtime);
  if (uid > MAX_OCTAL_ID || gid > MAX_OCTAL_ID) {
    records.push(["uid", String(uid)], ["gid", String(gid)]);
    uid = Math.min(uid, MAX_OCTAL_ID);
    gid = Math.min(gid, MAX_OCTAL_ID);
  }
  if (mtime < 0 || mtime >= 8 ** 11) {
    records.push(["mtime", String(mtime)]);
    mtime = 0;
  }
  const xattrs = [...(h.xattrs ?? [])].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [k, v] of xattrs) records.push([PAX_XATTR_PREFIX + k, v]);
  const fields = { mode: h.mode & 0o7777, uid, gid, size, mtime, linkname: link, devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0 };
  const header = headerBlock(split[1], split[0], TYPEFLAG[h.type], fields);
  if (records.length === 0) return [header];
  const pax = encodePaxRecords(records);
  const paxName = ustarStandIn(`PaxHeaders.0/${name.replace(/\/$/, "").split("/").pop()}`);
  const paxHeader = headerBlock(paxName, "", "x", { mode: 0o644, uid: 0, gid: 0, size: pax.length, mtime, linkname: "", devmajor: 0, devminor: 0 });
  return [paxHeader, pax, Buffer.alloc(padding(pax.length)), header];
}

/** Zero bytes after `size` bytes of data, to the next 512-byte boundary. */
function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * Writes a tar as a stream: ustar headers, a PAX extended header where a
 * field does not fit (long or non-ASCII names and link targets, ids above
 * 2^21, out-of-range mtimes, xattrs), base-256 sizes of 8 GiB and more, and
 * the two zero blocks at the end. `add` resolves when the reader has taken
 * the entry (backpressure); it rejects once the stream is destroyed.
 */
export class TarWriter {
  readonly stream: Readable;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private wake?: () => void;

  constructor() {
    this.stream = new Readable({ highWaterMark: 1 << 20, read: () => this.resume() });
    this.stream.on("close", () => this.resume());
  }

  private resume(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Why the stream is gone: the error it was destroyed with, or its reader closing it. */
  private gone(): Error {
    return this.stream.errored ?? new StrataError("IO", "the tar stream was closed by its reader");
  }

  /** Queues `b`; small pieces are gathered, big ones pushed as they are. */
  private queue(b: Buffer): void {
    if (b.length === 0) return;
    if (b.length < GATHER / 4) {
      this.held.push(b);
      this.heldBytes += b.length;
      if (this.heldBytes >= GATHER) this.flush();
      return;
    }
    this.flush();
    this.stream.push(b);
  }

  private flush(): void {
    if (this.heldBytes === 0) return;
    this.stream.push(this.held.length === 1 ? this.held[0] : Buffer.concat(this.held, this.heldBytes));
    this.held = [];
    this.heldBytes = 0;
  }

  /** Waits while the reader has a full buffer. */
  private async drain(): Promise<void> {
    if (this.stream.destroyed) throw this.gone();
    while (this.stream.readableLength >= this.stream.readableHighWaterMark) {
      await new Promise<void>((resolve) => (this.wake = resolve));
      if (this.stream.destroyed) throw this.gone();
    }
  }

  /** Adds one entry. A file's data is `body` whole, or read from an iterable that must yield exactly `h.size` bytes. */
  async add(h: TarWriteHeader, body?: Buffer | AsyncIterable<Buffer>): Promise<void> {
    if (this.stream.destroyed) throw this.gone();
    const size = h.type === "file" ? (h.size ?? 0) : 0;
    for (const b of encodeTarHeader(h)) this.queue(b);
    let written = 0;
    if (Buffer.isBuffer(body)) {
      written = body.length;
      if (written === size) this.queue(body);
    } else if (body !== undefined) {
      for await (const piece of body) {
        written += piece.length;
        if (written > size) break;
        this.queue(piece);
        await this.drain();
      }
    }
    if (written !== size) throw new StrataError("IO", `tar entry ${h.name}: ${written > size ? "more" : "fewer"} than the ${size} bytes of data its header says (it changed while being read?)`);
    this.queue(Buffer.alloc(padding(size)));
    await this.drain();
  }

  /** Ends the archive: two zero blocks, then the end of the stream (nothing, when the stream is gone already). */
  finish(): void {
    if (this.stream.destroyed) return;
    this.queue(Buffer.alloc(2 * BLOCK));
    this.flush();
    this.stream.push(null);
  }

  /** Ends the stream with `e` (a StrataError as it is, anything else as IO in `context`). */
  fail(e: unknown, context: string): void {
    this.stream.destroy(isStrataError(e) ? e : new StrataError("IO", `${context}: ${(e as Error).message}`, { cause: e }));
  }
}

/**
 * Turns files of a tree into layer entries on a TarWriter, with normalised
 * headers (no user/group names, mtimes in whole seconds and clamped to
 * SOURCE_DATE_EPOCH), hardlinks for inodes already written, devices and
 * FIFOs, and optionally xattrs as `SCHILY.xattr.*` PAX records. Callers add
 * entries in the order they want them (sorted, for deterministic output) and
 * await each add (backpressure).
 */
export class LayerWriter {
  private readonly tar = new TarWriter();
  private readonly epoch = sourceDateEpoch();
  private readonly seen = new Map<string, string>();

  get stream(): Readable {
    return this.tar.stream;
  }

  private mtime(mtimeMs: number): number {
    const seconds = Math.floor(mtimeMs / 1000);
    return this.epoch !== undefined && seconds > this.epoch ? this.epoch : seconds;
  }

  /**
   * Adds the file `abs` (already lstat'ed as `st`) as entry `relPath`
   * (relative, no trailing slash). Sockets have no tar form and are skipped,
   * as Docker does.
   */
  async add(relPath: string, abs: string, st: Stats, xattrs?: readonly (readonly [string, Buffer])[]): Promise<void> {
    const h = { name: relPath, mode: st.mode, uid: st.uid, gid: st.gid, mtime: this.mtime(st.mtimeMs), xattrs };
    if (st.isDirectory()) return this.tar.add({ ...h, type: "directory" });
    if (st.isSymbolicLink()) return this.tar.add({ ...h, type: "symlink", linkname: readlinkSync(abs) });
    if (st.isCharacterDevice() || st.isBlockDevice())
      return this.tar.add({ ...h, type: st.isCharacterDevice() ? "character-device" : "block-device", devmajor: devMajor(st.rdev), devminor: devMinor(st.rdev) });
    if (st.isFIFO()) return this.tar.add({ ...h, type: "fifo" });
    if (!st.isFile()) return;
    const key = `${st.dev}:${st.ino}`;
    const first = st.nlink > 1 ? this.seen.get(key) : undefined;
    if (first !== undefined) return this.tar.add({ ...h, type: "link", linkname: first });
    if (st.nlink > 1) this.seen.set(key, relPath);
    // Small files in one read: a stream would allocate a full read buffer per file (GC churn on 10,000-file layers).
    if (st.size <= SMALL_FILE) return this.tar.add({ ...h, type: "file", size: st.size }, readFileSync(abs));
    const fh = await fs.open(abs, "r");
    try {
      await this.tar.add({ ...h, type: "file", size: st.size }, fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false }));
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** Adds an empty regular file, 0644 root:root with mtime 0 (a whiteout or opaque marker: nothing in it depends on the tree). */
  addMarker(relPath: string): Promise<void> {
    return this.tar.add({ name: relPath, type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0 });
  }

  finalize(): void {
    this.tar.finish();
  }

  fail(e: unknown, context: string): void {
    this.tar.fail(e, context);
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

/**
 * A visitor's fast path over whole entries (the extractor's native
 * scanner): offered the input at each header, with no extended header
 * pending, it takes the entries it can from `off` on (each whole: header,
 * data and padding) and returns where it stopped; readTar goes on from
 * there, and visits what it stopped at. `last()` names the last entry it took.
 */
export interface TarScanner {
  scan(chunk: Buffer, off: number): number | Promise<number>;
  last(): string;
}

/** Called once per entry, in order; a sink receives its data, none skips it. A promise is waited for. */
export type TarVisitor = (entry: TarEntry) => TarEntrySink | undefined | Promise<TarEntrySink | undefined>;

const TYPES: Record<string, TarEntryType> = { "0": "file", "\0": "file", "1": "link", "2": "symlink", "3": "character-device", "4": "block-device", "5": "directory", "6": "fifo", "7": "contiguous-file" };
/** PAX, GNU long name/link: most are a few hundred bytes; more is refused rather than held. */
const MAX_META = 1 << 20;

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
 * `scanner` may take whole entries instead of `visit` (see TarScanner).
 * Resolves with the number of entries visited.
 */
export async function readTar(input: AsyncIterable<Buffer>, visit: TarVisitor, what = "tar", scanner?: TarScanner): Promise<number> {
  try {
    return await parse(inputChunks(input, what), visit, scanner);
  } catch (e) {
    if (e instanceof BadTar) throw new StrataError("INVALID_ARCHIVE", `invalid ${what}: ${e.message}`);
    throw e;
  }
}

async function parse(input: AsyncIterable<Buffer>, visit: TarVisitor, scanner: TarScanner | undefined): Promise<number> {
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
  let lastVisited = "";
  /** the scanner took the last entries */
  let scanned = false;
  const lastName = () => (scanned ? scanner!.last() : lastVisited);

  const header = async (b: Buffer, off: number): Promise<void> => {
    if (isZeroBlock(b, off)) {
      if (++zeroBlocks === 2) state = END;
      return;
    }
    const last = lastName();
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
    lastVisited = e.name;
    scanned = false;
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
          if (scanner && partialLen === 0 && zeroBlocks === 0 && !pax && longName === undefined && longLink === undefined && len - off >= BLOCK) {
            const r = scanner.scan(chunk, off);
            const next = typeof r === "number" ? r : await r;
            if (next > off) {
              off = next;
              scanned = true;
              break;
            }
          }
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
  const last = lastName();
  throw new BadTar(`unexpected end of data${last ? ` after entry "${last}"` : ""}`);
}
