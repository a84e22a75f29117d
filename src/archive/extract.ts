import * as fs from "node:fs";
import { resolve } from "node:path";
import { StrataError, isErrno, isStrataError } from "../errors/index.js";
import { BATCH_DIR, BATCH_FIELDS, BATCH_FILE, BATCH_SYMLINK, RESTORE_FIELDS, SCAN_FIELDS, nativeFs, type NativeFs, type ScanSet } from "../native/index.js";
import { OVERLAY_OPAQUE_XATTR, isOverlayWhiteout, parseWhiteout, type WhiteoutName } from "./whiteout.js";
import { entryComponents, RootScope } from "./safejoin.js";
import { readTar, type TarEntry, type TarEntrySink, type TarScanner } from "./tar.js";

export interface ApplyOptions {
  /**
   * "apply": `root` already holds a full copy of the parent (the vfs driver);
   * whiteouts delete, opaque markers empty the directory of lower content.
   * "overlay": `root` is an empty overlay lowerdir for this one layer;
   * whiteouts become 0/0 character devices, opaque markers the xattr
   * trusted.overlay.opaque=y.
   */
  whiteouts: "overlay" | "apply";
  /** Apply the entries' owners (default: when running as root). */
  chown?: boolean;
}

export interface ApplyResult {
  /** tar entries applied (PAX and GNU long-name headers not counted) */
  entries: number;
  /** regular file bytes written */
  bytes: number;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, S_IFCHR, S_IFBLK, S_IFIFO } = fs.constants;
const CREATE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW; // libuv adds O_CLOEXEC
/** Files up to this size may go into a native batch; larger ones are written as their data arrives. */
const SMALL_FILE = 1 << 20;
/** A native batch is sent when it holds this many records (at most 512: see distinct_paths in native/strata_fs.c) or bytes. */
const BATCH_RECORDS = 512;
const BATCH_BYTES = 1 << 20;
/**
 * How many batches may be sent and not yet applied before the parser waits:
 * with more than one, the addon goes from one to the next while the parser
 * is busy, and neither waits for the other's slower moments.
 */
const BATCHES_SENT = 3;
/** A path or symlink target longer than this (UTF-16 units, so at most 3 bytes each) is not batched: the arena always has room for one more record. */
const BATCH_PATH = 16 << 10;
/** An arena: below BATCH_BYTES before a record, then at most one small file and one path more. */
const ARENA_BYTES = BATCH_BYTES + SMALL_FILE + 2 * (3 * BATCH_PATH + 1);
const NUMS = BATCH_FIELDS.length;
const [S_USED, S_COUNT, S_LIMITS, S_LAST] = ["used", "count", "maxRecords", "last"].map((f) => SCAN_FIELDS.indexOf(f as (typeof SCAN_FIELDS)[number]));
const RESTORE_NUMS = RESTORE_FIELDS.length;
const OPAQUE = Buffer.from("y");

/** An entry the parser put into a native batch (its parent resolved from the scope's cache): what applying it one by one needs. */
interface Queued {
  h: TarEntry;
  parts: string[];
  rel: string;
}

/** A file being written by applyNow(). */
interface FileSink extends TarEntrySink {
  fd: number;
  /** closes it without finishing (a failure) */
  close(): void;
}

/** A batch: its records' numbers, paths and data; reused from batch to batch. */
interface Arena {
  data: Buffer;
  used: number;
  /** BATCH_FIELDS numbers per record */
  nums: Float64Array;
  out: Float64Array;
  /** records in it */
  n: number;
  /** the records the parser queued, by index (the scanner's have none: their name is their path) */
  queued: (Queued | undefined)[];
  /** the scope's generation when its first record's path was resolved */
  gen: number;
}

/**
 * The process's umask, read afresh for each layer (an embedding program may
 * change it) from /proc: process.umask() without an argument is deprecated.
 * All bits when unknown, so that every mode is then set explicitly.
 */
function currentUmask(): number {
  let status = "";
  try {
    status = fs.readFileSync("/proc/self/status", "latin1");
  } catch {
    // no /proc
  }
  const m = /^Umask:\s*([0-7]+)$/m.exec(status);
  return m ? parseInt(m[1], 8) : 0o777;
}

function newArena(): Arena {
  return { data: Buffer.allocUnsafeSlow(ARENA_BYTES), used: 0, nums: new Float64Array(BATCH_RECORDS * NUMS), out: new Float64Array(BATCH_RECORDS * 3), n: 0, queued: [], gen: 0 };
}

export interface DirMeta {
  mode: number;
  atime: number;
  mtime: number;
  dev: number;
  ino: number;
  /** made here with exactly `mode` already (see Applier.madeExact) */
  exact?: boolean;
}

function invalid(name: string, why: string): StrataError {
  return new StrataError("INVALID_ARCHIVE", `invalid layer entry "${name}": ${why}`);
}

/** A failure applying entry `name`: a filesystem error gets the entry's name, a StrataError stays as it is. */
function entryError(e: unknown, name: string): unknown {
  return isStrataError(e) ? e : new StrataError("IO", `apply layer entry "${name}": ${(e as Error).message}`, { cause: e });
}

function checkedId(h: TarEntry, key: "uid" | "gid"): number {
  const n = h[key];
  if (!Number.isInteger(n) || n < 0 || n > 0xfffffffe) throw invalid(h.name, `${key} ${n} is out of range`);
  return n;
}

/** A symlink entry's target, checked. */
function symlinkTarget(h: TarEntry): string {
  const target = h.linkname;
  if (!target) throw invalid(h.name, "symlink without a target");
  if (target.includes("\0")) throw invalid(h.name, "NUL byte in symlink target");
  return target;
}

/** The NUL-terminated string at `off` of a batch's data (a scanner's paths are ASCII). */
function arenaString(arena: Arena, off: number): string {
  return arena.data.toString("latin1", off, arena.data.indexOf(0, off));
}

function rel2(parent: string, base: string): string {
  return parent === "" ? base : parent + "/" + base;
}

/** Writes all of `buf` to `fd`, however the kernel splits it. */
function writeAllSync(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off);
}

/** The same on a libuv thread. */
function writeAll(fd: number, buf: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const more = (off: number) =>
      fs.write(fd, buf, off, buf.length - off, null, (err, n) => {
        if (err) reject(err);
        else if (off + n < buf.length) more(off + n);
        else resolve();
      });
    more(0);
  });
}

/**
 * One layer application into one root. Metadata order per entry: content,
 * owner, mode (after chown, which clears setuid/setgid), xattrs (after chown,
 * which clears security.capability), times. Directory modes and times are
 * applied at the end, deepest first, so later entries neither change their
 * mtimes nor are refused by a read-only mode.
 *
 * Small files, directories and symlinks whose parent is already resolved go into a
 * batch that the native addon applies in order on a libuv thread, while the
 * next entries are parsed (the kernel's work overlaps ours, and two layers
 * applied side by side use two cores). Anything else waits for the batch to
 * be done first, so every filesystem change still happens in entry order: the
 * batch only creates (O_EXCL, O_NOFOLLOW) or merges directories, never
 * removes or follows anything, and stops at the first failure, from which
 * the remaining records are applied here one by one, resolved afresh.
 */
class Applier {
  readonly scope: RootScope;
  private readonly native: NativeFs;
  private readonly overlay: boolean;
  private readonly chown: boolean;
  private readonly root: boolean;
  /** real relative paths this layer made or merged, and their ancestors ("apply" mode: survivors of an opaque marker) */
  private readonly keep = new Set<string>();
  private readonly dirs = new Map<string, DirMeta>();
  entries = 0;
  bytes = 0;
  /** the batch being filled */
  private arena = newArena();
  /** arenas of batches done, to reuse */
  private readonly spare: Arena[] = [];
  /** batches sent and not yet done, oldest first: each is done once the addon has applied it and its results are taken */
  private readonly sent: Promise<void>[] = [];
  /** the last batch sent (the chain they are applied in) */
  private tail: Promise<void> = Promise.resolve();
  /** the file applyNow() is writing */
  private writing: FileSink | undefined;
  /** something was removed or replaced: a recorded directory may be gone, or reached through a symlink now */
  private removed = false;
  /**
   * What a new file or symlink's owner already is, when chown needs no call
   * for it: overlay mode, where every directory is made here without a
   * setgid bit until the end, so new files get the process's ids.
   */
  private readonly ownIds: [number, number] | undefined;
  private readonly umask = currentUmask();
  /** the root, open: batched paths are relative to it (shorter lookups); applyLayer closes it */
  readonly rootFd: number;
  private readonly known: ScanSet | undefined;

  constructor(rootDir: string, opts: ApplyOptions) {
    this.overlay = opts.whiteouts === "overlay";
    this.root = process.getuid?.() === 0;
    this.chown = opts.chown ?? this.root;
    this.native = nativeFs();
    // The directories the scanner may write into: those it queued, and those the scope resolved to themselves.
    this.known = this.overlay ? this.native.scanNew() : undefined;
    const known = this.known;
    this.scope = new RootScope(
      rootDir,
      this.overlay ? undefined : (rel) => this.kept(rel),
      known && {
        has: (rel) => this.native.scanHas(known, rel),
        add: (rel) => this.native.scanAdd(known, rel),
        clear: () => this.native.scanForget(known),
      },
    );
    this.rootFd = fs.openSync(rootDir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | O_NOFOLLOW);
    const setgid = (fs.fstatSync(this.rootFd).mode & 0o2000) !== 0;
    this.ownIds = this.overlay && !setgid ? [process.geteuid?.() ?? -1, process.getegid?.() ?? -1] : undefined;
    this.scanState = new Float64Array(SCAN_FIELDS.length);
    this.scanState.set([BATCH_RECORDS, BATCH_BYTES, SMALL_FILE, this.ownIds?.[0] ?? -2, this.ownIds?.[1] ?? -2, this.chown ? 1 : 0, this.umask], S_LIMITS);
    this.scanner = known && { scan: (chunk, off) => this.scan(chunk, off), last: () => this.lastScanned };
  }

  private kept(rel: string): void {
    if (this.overlay) return;
    while (rel !== "" && !this.keep.has(rel)) {
      this.keep.add(rel);
      const i = rel.lastIndexOf("/");
      rel = i < 0 ? "" : rel.slice(0, i);
    }
  }

  /** Removes whatever is at `abs` (rm -rf, never following a symlink); false when nothing was there. */
  private remove(abs: string): boolean {
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (st === undefined) return false;
    this.removed = true;
    if (st.isDirectory()) fs.rmSync(abs, { recursive: true, force: true });
    else fs.unlinkSync(abs);
    if (st.isDirectory() || st.isSymbolicLink()) this.scope.forget();
    return true;
  }

  /** Runs `make`; if the name is taken, removes what is there and runs it again. */
  private replace<T>(abs: string, make: () => T): T {
    try {
      return make();
    } catch (e) {
      if (!isErrno(e, "EEXIST")) throw e;
    }
    this.remove(abs);
    return make();
  }

  private xattrs(abs: string, h: TarEntry): void {
    if (!h.xattrs) return;
    for (const [name, value] of h.xattrs) {
      // Overlay's own attributes are never taken from a layer: they would
      // let a tar forge opaque directories or redirects in a lowerdir.
      if (name.startsWith("trusted.overlay.")) continue;
      try {
        this.native.lsetxattr(abs, name, value);
      } catch (e) {
        // As Docker: a filesystem (or a symlink, for user.*) without support is not an error.
        if (!isErrno(e, "ENOTSUP") && !isErrno(e, "EOPNOTSUPP") && !isErrno(e, "EPERM")) throw e;
      }
    }
  }

  private times(h: TarEntry): { atime: number; mtime: number } {
    return { atime: h.atime ?? h.mtime, mtime: h.mtime };
  }

  /** Applies one entry: a sink when it has data to write, a promise when it waits for the batch. */
  entry(h: TarEntry): TarEntrySink | undefined | Promise<TarEntrySink | undefined> {
    this.entries++;
    const name = h.name;
    const parts = entryComponents(name);
    if (parts.length === 0) {
      if (h.type !== "directory") throw invalid(name, `the root can only be a directory, not a ${h.type ?? `typeflag ${JSON.stringify(h.typeflag)}`}`);
      return this.afterBatch(() => {
        this.directoryMeta("", h);
        return undefined;
      });
    }
    for (let i = 0; i < parts.length - 1; i++) if (parts[i].startsWith(".wh.")) throw invalid(name, "a whiteout name used as a directory");
    const base = parts[parts.length - 1];
    let wh: WhiteoutName;
    try {
      wh = parseWhiteout(base);
    } catch (e) {
      throw invalid(name, (e as Error).message);
    }
    if (wh.kind !== "none")
      return this.afterBatch(() => {
        this.whiteout(parts, wh, h);
        return undefined;
      });
    const file = h.type === "file" || h.type === "contiguous-file";
    const batched = file ? h.size <= SMALL_FILE : h.type === "directory" || h.type === "symlink";
    if (batched && !h.xattrs?.size) {
      const parent = this.scope.cached(parts.slice(0, -1));
      if (parent !== undefined) return this.enqueue(h, parts, rel2(parent, base));
    }
    return this.afterBatch(() => this.applyNow(h, parts));
  }

  /** Applies an entry here and now (no batch pending): a sink for a file's data. */
  private applyNow(h: TarEntry, parts: string[]): FileSink | undefined {
    const parent = this.scope.dir(parts.slice(0, -1), true, h.name)!;
    const rel = rel2(parent, parts[parts.length - 1]);
    const abs = this.scope.abs(rel);
    this.kept(rel);
    switch (h.type) {
      case "file":
      case "contiguous-file":
        return this.file(abs, h);
      case "directory":
        this.directory(parts, rel, abs, h);
        break;
      case "symlink":
        this.symlink(abs, h);
        break;
      case "link":
        this.hardlink(rel, abs, h);
        break;
      case "character-device":
      case "block-device":
      case "fifo":
        this.node(abs, h);
        break;
      default:
        throw invalid(h.name, `unsupported entry type (typeflag ${JSON.stringify(h.typeflag)})`);
    }
    return undefined;
  }

  /** Runs `fn` once the batch is applied (at once when there is none). */
  private afterBatch<T>(fn: () => T): T | Promise<T> {
    if (this.sent.length === 0 && this.arena.n === 0) return fn();
    return this.flush().then(fn);
  }

  /** Adds a directory, a symlink, or a small file once its data is in, to the batch; sends the batch when full. */
  private enqueue(h: TarEntry, parts: string[], rel: string): TarEntrySink | undefined | Promise<TarEntrySink | undefined> {
    // Read now, so that a bad header fails at its own entry.
    const kind = h.type === "symlink" ? BATCH_SYMLINK : h.type === "directory" ? BATCH_DIR : BATCH_FILE;
    const target = kind === BATCH_SYMLINK ? symlinkTarget(h) : undefined;
    let uid = this.chown ? checkedId(h, "uid") : -1;
    let gid = this.chown ? checkedId(h, "gid") : -1;
    if (uid === this.ownIds?.[0] && gid === this.ownIds[1] && kind !== BATCH_DIR) uid = gid = -1;
    if (rel.length > BATCH_PATH || (target !== undefined && target.length > BATCH_PATH)) return this.afterBatch(() => this.applyNow(h, parts));
    const arena = this.arena;
    const i = arena.n;
    if (i === 0) arena.gen = this.scope.generation;
    arena.queued[i] = { h, parts, rel };
    const path = arena.used;
    arena.used += arena.data.write(rel, path);
    arena.data[arena.used++] = 0;
    const data = arena.used;
    let len = 0;
    if (target !== undefined) {
      len = arena.data.write(target, data);
      arena.used += len;
      arena.data[arena.used++] = 0;
    } else if (kind === BATCH_DIR) {
      this.scope.remember(parts, rel);
    } else {
      len = h.size;
      arena.used += len;
    }
    const { atime, mtime } = this.times(h);
    const nums = arena.nums;
    const o = i * NUMS;
    nums[o] = kind;
    nums[o + 1] = h.mode & 0o7777;
    nums[o + 2] = uid;
    nums[o + 3] = gid;
    nums[o + 4] = atime;
    nums[o + 5] = mtime;
    nums[o + 6] = path;
    nums[o + 7] = data;
    nums[o + 8] = len;
    // Set after the owner when open's mode (less the umask) cannot be it: chown clears setuid/setgid.
    nums[o + 9] = h.mode & 0o7000 || h.mode & this.umask ? 1 : 0;
    if (kind !== BATCH_FILE || len === 0) return this.push();
    let at = data;
    return {
      data: (piece) => {
        at += piece.copy(arena.data, at);
      },
      end: () => this.push(),
    };
  }

  /** The record being written is complete: counts it, and sends the batch when full. */
  private push(): undefined | Promise<undefined> {
    this.arena.n++;
    return this.sendIfFull();
  }

  private sendIfFull(): undefined | Promise<undefined> {
    if (this.arena.n < BATCH_RECORDS && this.arena.used < BATCH_BYTES) return undefined;
    this.send();
    // The parser goes on while fewer than BATCHES_SENT batches wait; else it waits for the oldest.
    return this.sent.length < BATCHES_SENT ? undefined : this.sent[0].then(() => undefined);
  }

  /**
   * The scanner (native/strata_fs.c, scanTar) for readTar: from `off` in
   * `chunk`, it adds to the batch the entries that the parser and entry()
   * would have put there as they are, stopping at the first other one, and
   * returns where it stopped. Overlay mode only: "apply" mode keeps the
   * paths it made (kept()).
   */
  readonly scanner: TarScanner | undefined;
  private readonly scanState: Float64Array;
  private lastScanned = "";

  private scan(chunk: Buffer, off: number): number | Promise<number> {
    const arena = this.arena;
    const st = this.scanState;
    if (arena.n === 0) arena.gen = this.scope.generation;
    st[S_USED] = arena.used;
    st[S_COUNT] = arena.n;
    st[S_LAST] = -1;
    const next = this.native.scanTar(this.known!, chunk, off, arena.data, arena.nums, st);
    this.entries += st[S_COUNT] - arena.n;
    arena.used = st[S_USED];
    arena.n = st[S_COUNT];
    if (st[S_LAST] >= 0) this.lastScanned = arenaString(arena, st[S_LAST]);
    const wait = this.sendIfFull();
    return wait ? wait.then(() => next) : next;
  }

  /**
   * Sends the batch: it is applied once the batches sent before it are
   * (each starts as soon as the one before it is done, without waiting for
   * the parser), and not at all after a failure.
   */
  private send(): void {
    const arena = this.arena;
    this.arena = this.spare.pop() ?? newArena();
    this.arena.used = 0;
    this.arena.n = 0;
    this.arena.queued = [];
    const applied = this.tail.then(() => this.apply(arena));
    this.tail = applied;
    this.sent.push(applied);
    applied
      .finally(() => {
        this.sent.shift();
        this.spare.push(arena);
      })
      .catch(() => {}); // reported by whoever waits for it: sendIfFull, flush
  }

  /** Waits until everything queued is applied; rethrows a batch's failure. */
  async flush(): Promise<void> {
    if (this.arena.n > 0) this.send();
    await this.tail;
  }

  /** After a failure elsewhere: closes the file being written and waits for the batches sent, ignoring their outcome. */
  async idle(): Promise<void> {
    this.writing?.close();
    await this.tail.catch(() => {});
  }

  private async apply(arena: Arena): Promise<void> {
    // Something was removed or replaced after this batch's first paths were
    // resolved (the failure of a batch before it): they may lead through a
    // symlink now, so the batch is applied here, each entry resolved afresh.
    if (arena.gen !== this.scope.generation) return this.applyLeft(arena, 0);
    const { nums, out } = arena;
    // In overlay mode a name is taken only by an entry of this layer: re-applying a batch after a failure is rare.
    const done = await this.native.applyBatch(this.rootFd, arena.n, arena.data, nums, out, this.overlay);
    for (let i = 0; i < done; i++) {
      const o = i * NUMS;
      const kind = nums[o];
      if (!this.overlay) this.kept(arena.queued[i]!.rel);
      if (kind === BATCH_FILE) this.bytes += nums[o + 8];
      else if (kind === BATCH_DIR) {
        const mode = nums[o + 1];
        const rel = arena.queued[i]?.rel ?? arenaString(arena, nums[o + 6]);
        this.dirs.set(rel, { mode, atime: nums[o + 4], mtime: nums[o + 5], dev: out[3 * i], ino: out[3 * i + 1], exact: out[3 * i + 2] === 1 && this.madeExact(mode) });
      }
    }
    if (done === arena.n) return;
    // The rest, in order, as if there had been no batch: the failure comes
    // again and is reported (or, for a name taken, replaced) the usual way.
    this.scope.forget();
    this.applyLeft(arena, done);
  }

  /** Applies the records of `arena` from `from` on here, one by one, each resolved afresh. */
  private applyLeft(arena: Arena, from: number): void {
    for (let i = from; i < arena.n; i++) {
      const q = arena.queued[i] ?? this.scanned(arena, i);
      const o = i * NUMS;
      try {
        const sink = this.applyNow(q.h, q.parts);
        if (sink) this.writeFile(sink, arena.data.subarray(arena.nums[o + 7], arena.nums[o + 7] + arena.nums[o + 8]));
      } catch (e) {
        throw entryError(e, q.h.name);
      }
    }
  }

  /** The entry a scanner's record stands for: its name is its path (clean, its parents real directories when it was scanned). */
  private scanned(arena: Arena, i: number): Queued {
    const nums = arena.nums;
    const o = i * NUMS;
    const kind = nums[o];
    const rel = arenaString(arena, nums[o + 6]);
    // -1: the process's own ids (or no chown at all, when they are not used)
    const uid = nums[o + 2] >= 0 ? nums[o + 2] : (this.ownIds?.[0] ?? 0);
    const gid = nums[o + 3] >= 0 ? nums[o + 3] : (this.ownIds?.[1] ?? 0);
    const type = kind === BATCH_DIR ? "directory" : kind === BATCH_SYMLINK ? "symlink" : "file";
    const h: TarEntry = {
      name: rel,
      type,
      typeflag: kind === BATCH_DIR ? "5" : kind === BATCH_SYMLINK ? "2" : "0",
      mode: nums[o + 1],
      uid,
      gid,
      size: kind === BATCH_FILE ? nums[o + 8] : 0,
      mtime: nums[o + 5],
      atime: nums[o + 4],
      linkname: kind === BATCH_SYMLINK ? arenaString(arena, nums[o + 7]) : "",
      devmajor: 0,
      devminor: 0,
      xattrs: undefined,
    };
    return { h, parts: rel.split("/"), rel };
  }

  /** A new file, its data written as it arrives (on a libuv thread: the parser waits, the other layers do not). */
  private file(abs: string, h: TarEntry): FileSink {
    const fd = this.replace(abs, () => fs.openSync(abs, CREATE_FLAGS, 0o600));
    let open = true;
    const done = () => {
      open = false;
      this.writing = undefined;
    };
    const sink: FileSink = {
      fd,
      data: async (piece) => {
        try {
          await writeAll(fd, piece);
          this.bytes += piece.length;
        } catch (e) {
          sink.close();
          throw entryError(e, h.name);
        }
      },
      end: () => {
        if (!open) return;
        done();
        try {
          this.fileMeta(fd, abs, h);
        } catch (e) {
          throw entryError(e, h.name);
        }
      },
      close: () => {
        if (!open) return;
        done();
        fs.closeSync(fd);
      },
    };
    this.writing = sink;
    return sink;
  }

  /** Writes the data of a file opened by file() at once (a batch's leftovers), and finishes it. */
  private writeFile(sink: FileSink, data: Buffer): void {
    try {
      writeAllSync(sink.fd, data);
    } catch (e) {
      sink.close();
      throw e;
    }
    this.bytes += data.length;
    sink.end();
  }

  /** Owner, mode, xattrs and times of a written file; closes it. */
  private fileMeta(fd: number, abs: string, h: TarEntry): void {
    try {
      if (this.chown) fs.fchownSync(fd, checkedId(h, "uid"), checkedId(h, "gid"));
      fs.fchmodSync(fd, h.mode & 0o7777);
      this.xattrs(abs, h);
      const t = this.times(h);
      fs.futimesSync(fd, t.atime, t.mtime);
    } finally {
      fs.closeSync(fd);
    }
  }

  private directory(parts: string[], rel: string, abs: string, h: TarEntry): void {
    const mode = (h.mode & 0o777) | 0o700; // the exact mode at the end (finish)
    let made = true;
    try {
      fs.mkdirSync(abs, mode);
    } catch (e) {
      if (!isErrno(e, "EEXIST")) throw e;
      // A directory over a directory merges; anything else is replaced.
      made = !fs.lstatSync(abs).isDirectory();
      if (made) {
        this.remove(abs);
        fs.mkdirSync(abs, mode);
      }
    }
    this.scope.remember(parts, rel);
    if (this.chown) fs.lchownSync(abs, checkedId(h, "uid"), checkedId(h, "gid"));
    this.xattrs(abs, h);
    this.directoryMeta(rel, h, made);
  }

  private directoryMeta(rel: string, h: TarEntry, made = false): void {
    const st = fs.lstatSync(this.scope.abs(rel));
    if (rel === "" && this.chown) fs.lchownSync(this.scope.root, checkedId(h, "uid"), checkedId(h, "gid"));
    const t = this.times(h);
    this.dirs.set(rel, { mode: h.mode & 0o7777, atime: t.atime, mtime: t.mtime, dev: st.dev, ino: st.ino, exact: made && this.madeExact(h.mode) });
  }

  /** Whether a directory made with its permission bits and 0700 (less the umask) has `mode` exactly. */
  private madeExact(mode: number): boolean {
    return (((mode & 0o777) | 0o700) & ~this.umask) === (mode & 0o7777);
  }

  private symlink(abs: string, h: TarEntry): void {
    const target = symlinkTarget(h);
    this.replace(abs, () => fs.symlinkSync(target, abs));
    if (this.chown) fs.lchownSync(abs, checkedId(h, "uid"), checkedId(h, "gid"));
    this.xattrs(abs, h);
    const t = this.times(h);
    fs.lutimesSync(abs, t.atime, t.mtime);
  }

  /**
   * A hardlink's target is resolved like any entry name (contained in the
   * root, parents resolved within it), must exist and must not be a
   * directory. A link to a symlink links the symlink itself (link(2) does
   * not follow it) and nothing is ever chmod'ed through it.
   */
  private hardlink(rel: string, abs: string, h: TarEntry): void {
    const linkname = h.linkname ?? "";
    let lparts: string[];
    try {
      lparts = entryComponents(linkname);
    } catch {
      throw invalid(h.name, `hardlink target "${linkname}" leaves the root`);
    }
    if (lparts.length === 0) throw invalid(h.name, `hardlink to the root "${linkname}"`);
    const lparent = this.scope.dir(lparts.slice(0, -1), false, h.name);
    const targetRel = lparent === undefined ? undefined : rel2(lparent, lparts[lparts.length - 1]);
    const targetAbs = targetRel === undefined ? undefined : this.scope.abs(targetRel);
    const tst = targetAbs === undefined ? undefined : fs.lstatSync(targetAbs, { throwIfNoEntry: false });
    if (tst === undefined || targetAbs === undefined) throw invalid(h.name, `hardlink target "${linkname}" does not exist`);
    if (tst.isDirectory()) throw invalid(h.name, `hardlink target "${linkname}" is a directory`);
    if (targetRel === rel) return; // a link to itself: nothing to do
    this.replace(abs, () => fs.linkSync(targetAbs, abs));
    if (this.chown) fs.lchownSync(abs, checkedId(h, "uid"), checkedId(h, "gid"));
    if (!tst.isSymbolicLink()) fs.chmodSync(abs, h.mode & 0o7777);
    this.xattrs(abs, h);
    const t = this.times(h);
    fs.lutimesSync(abs, t.atime, t.mtime);
  }

  private node(abs: string, h: TarEntry): void {
    const kind = h.type === "character-device" ? S_IFCHR : h.type === "block-device" ? S_IFBLK : S_IFIFO;
    try {
      this.replace(abs, () => this.native.mknod(abs, kind | (h.mode & 0o7777), h.devmajor ?? 0, h.devminor ?? 0));
    } catch (e) {
      // Without privilege (rootless) devices cannot be made; Docker skips them too.
      if (kind !== S_IFIFO && !this.root && isErrno(e, "EPERM")) return;
      throw e;
    }
    if (this.chown) fs.lchownSync(abs, checkedId(h, "uid"), checkedId(h, "gid"));
    fs.chmodSync(abs, h.mode & 0o7777);
    this.xattrs(abs, h);
    const t = this.times(h);
    fs.lutimesSync(abs, t.atime, t.mtime);
  }

  private whiteout(parts: string[], wh: Exclude<WhiteoutName, { kind: "none" }>, h: TarEntry): void {
    const dirParts = parts.slice(0, -1);
    if (wh.kind === "opaque") {
      const dir = this.scope.dir(dirParts, true, h.name)!;
      if (this.overlay) this.makeOpaque(dir);
      else this.hideLower(dir);
      return;
    }
    if (this.overlay) {
      const dir = this.scope.dir(dirParts, true, h.name)!;
      // Below an opaque directory a whiteout hides nothing, and overlayfs
      // would list it (a directory that is not merged is read as it is).
      if (this.underOpaque(dir)) return;
      const abs = this.scope.abs(rel2(dir, wh.target));
      this.replace(abs, () => this.native.mknod(abs, S_IFCHR, 0, 0));
      if (this.chown) fs.lchownSync(abs, checkedId(h, "uid"), checkedId(h, "gid"));
      return;
    }
    // Nothing to delete when the directory is not there.
    const dir = this.scope.dir(dirParts, false, h.name);
    if (dir !== undefined) this.remove(this.scope.abs(rel2(dir, wh.target)));
  }

  /** Overlay mode: directories this layer made opaque (real relative paths). */
  private readonly opaqueDirs = new Set<string>();

  private underOpaque(rel: string): boolean {
    if (this.opaqueDirs.size === 0) return false;
    for (;;) {
      if (this.opaqueDirs.has(rel)) return true;
      if (rel === "") return false;
      const i = rel.lastIndexOf("/");
      rel = i < 0 ? "" : rel.slice(0, i);
    }
  }

  /** An opaque marker in "overlay" mode: the xattr, and the whiteouts this layer already made below it go (they hide nothing now). */
  private makeOpaque(dir: string): void {
    const abs = this.scope.abs(dir);
    this.native.lsetxattr(abs, OVERLAY_OPAQUE_XATTR, OPAQUE);
    this.opaqueDirs.add(dir);
    const purge = (rel: string) => {
      for (const d of fs.readdirSync(this.scope.abs(rel), { withFileTypes: true })) {
        const child = rel2(rel, d.name);
        if (d.isDirectory()) purge(child);
        else if (d.isCharacterDevice() && isOverlayWhiteout(fs.lstatSync(this.scope.abs(child)))) {
          fs.unlinkSync(this.scope.abs(child));
          this.removed = true;
        }
      }
    };
    purge(dir);
  }

  /**
   * An opaque marker in "apply" mode: removes everything below `dir` that
   * this layer did not make, whether the marker comes before or after the
   * directory's other entries.
   */
  private hideLower(dir: string): void {
    let removed = false;
    const walk = (rel: string) => {
      for (const d of fs.readdirSync(this.scope.abs(rel), { withFileTypes: true })) {
        const child = rel2(rel, d.name);
        if (!this.keep.has(child)) {
          this.removed = true;
          const abs = this.scope.abs(child);
          if (d.isDirectory()) fs.rmSync(abs, { recursive: true, force: true });
          else fs.unlinkSync(abs);
          removed = true;
        } else if (d.isDirectory()) {
          walk(child);
        }
      }
    };
    walk(dir);
    if (removed) this.scope.forget();
  }

  /** Directory modes and times, deepest first; a directory replaced since it was made is skipped. */
  finish(): Promise<void> {
    return restoreDirs(this.scope, this.dirs, !this.removed);
  }

}

/**
 * Sets the recorded modes and times on directories made or merged by an
 * extraction or a copy, deepest first (a parent's mode last), through a
 * no-follow handle, on a libuv thread (native/strata_fs.c); a directory
 * replaced since it was recorded is skipped. `trusted`: nothing was removed
 * or replaced since they were recorded, so each is set by its path (the
 * mode only where it is not `exact` already). As root, whom no mode keeps
 * out of a directory, the order does not matter (a directory's mode and
 * times do not change its parent): the list is split between two threads.
 */
export async function restoreDirs(scope: RootScope, dirs: Map<string, DirMeta>, trusted = false): Promise<void> {
  const n = dirs.size;
  if (n === 0) return;
  const asRoot = process.geteuid?.() === 0;
  const parts = asRoot && n >= 1024 ? 2 : 1;
  const lists = Array.from({ length: parts }, (_, p) => ({ paths: [] as string[], nums: new Float64Array(Math.ceil((n - p) / parts) * RESTORE_NUMS) }));
  let k = 0;
  for (const rel of asRoot ? dirs.keys() : deepestFirst(dirs)) {
    const m = dirs.get(rel)!;
    const l = lists[k++ % parts];
    const o = l.paths.length * RESTORE_NUMS;
    l.nums[o] = m.mode;
    l.nums[o + 1] = m.atime;
    l.nums[o + 2] = m.mtime;
    l.nums[o + 3] = m.dev;
    l.nums[o + 4] = m.ino;
    l.nums[o + 5] = m.exact ? 0 : 1;
    l.paths.push(rel === "" ? "." : rel);
  }
  const root = fs.openSync(scope.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | O_NOFOLLOW);
  try {
    const native = nativeFs();
    const done = await Promise.allSettled(lists.map((l) => native.restoreDirs(root, l.paths, l.nums, trusted)));
    for (const r of done) if (r.status === "rejected") throw r.reason;
  } finally {
    fs.closeSync(root);
  }
}

/** The directories' paths, deepest first: a parent's mode (which may shut its owner out) is set after its children. */
function deepestFirst(dirs: Map<string, DirMeta>): string[] {
  const byDepth: string[][] = [];
  for (const rel of dirs.keys()) (byDepth[depth(rel)] ??= []).push(rel);
  return byDepth.reverse().flatMap((l) => l ?? []);
}

function depth(rel: string): number {
  if (rel === "") return 0;
  let n = 1;
  for (let i = rel.indexOf("/"); i >= 0; i = rel.indexOf("/", i + 1)) n++;
  return n;
}

/**
 * Applies one uncompressed layer tar to `root` (see ApplyOptions for the two
 * whiteout modes). Tar input is hostile: every name goes through safeJoin
 * and scoped resolution (src/archive/safejoin.ts), `..` is refused, absolute
 * names are contained, nothing is written through a symlink, hardlinks must
 * stay in the root, and the root itself can only be a directory. Errors:
 * INVALID_ARCHIVE naming the entry for a bad archive, IO for the filesystem,
 * and the input's own errors (e.g. DIGEST_MISMATCH) as they are. The whole
 * input is consumed, so a verifying input sees its end. Its chunks may be
 * buffers it reuses (see readTar).
 */
export async function applyLayer(tar: AsyncIterable<Buffer>, root: string, opts: ApplyOptions): Promise<ApplyResult> {
  const rootDir = resolve(root);
  fs.mkdirSync(rootDir, { recursive: true });
  if (!fs.lstatSync(rootDir).isDirectory()) throw new StrataError("INVALID_ARGUMENT", `apply layer: ${rootDir} is not a directory`);
  const applier = new Applier(rootDir, opts);
  try {
    return await applyWith(applier, tar);
  } finally {
    fs.closeSync(applier.rootFd);
  }
}

async function applyWith(applier: Applier, tar: AsyncIterable<Buffer>): Promise<ApplyResult> {
  try {
    await readTar(tar, (h) => {
      try {
        const r = applier.entry(h);
        return r instanceof Promise ? r.catch((e) => Promise.reject(entryError(e, h.name))) : r;
      } catch (e) {
        throw entryError(e, h.name);
      }
    }, "layer tar", applier.scanner);
    await applier.flush();
  } catch (e) {
    // Nothing is left writing into the root when the caller cleans it up.
    await applier.idle();
    throw e;
  }
  try {
    await applier.finish();
  } catch (e) {
    throw new StrataError("IO", `apply layer: directory metadata: ${(e as Error).message}`, { cause: e });
  }
  return { entries: applier.entries, bytes: applier.bytes };
}
