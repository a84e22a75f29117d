import * as fs from "node:fs";
import { resolve } from "node:path";
import { StrataError, isErrno, isStrataError } from "../errors/index.js";
import { BATCH_DIR, BATCH_FIELDS, BATCH_FILE, BATCH_SYMLINK, RESTORE_FIELDS, nativeFs, type NativeFs } from "../native/index.js";
import { OVERLAY_OPAQUE_XATTR, isOverlayWhiteout, parseWhiteout, type WhiteoutName } from "./whiteout.js";
import { entryComponents, RootScope } from "./safejoin.js";
import { readTar, type TarEntry, type TarEntrySink } from "./tar.js";

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
/** A native batch is sent when it holds this many records or bytes. */
const BATCH_RECORDS = 256;
const BATCH_BYTES = 1 << 20;
/** A path or symlink target longer than this (UTF-16 units, so at most 3 bytes each) is not batched: the arena always has room for one more record. */
const BATCH_PATH = 16 << 10;
/** An arena: below BATCH_BYTES before a record, then at most one small file and one path more. */
const ARENA_BYTES = BATCH_BYTES + SMALL_FILE + 2 * (3 * BATCH_PATH + 1);
const NUMS = BATCH_FIELDS.length;
const RESTORE_NUMS = RESTORE_FIELDS.length;
const OPAQUE = Buffer.from("y");

/** A small file, a directory or a symlink waiting in the native batch; its parent was resolved from the scope's cache. */
interface Queued {
  h: TarEntry;
  parts: string[];
  rel: string;
  kind: number;
  /** its path's offset in the arena */
  path: number;
  /** a file's data or a symlink's target: offset and length in the arena */
  data: number;
  len: number;
  /** -1: no chown */
  uid: number;
  gid: number;
  atime: number;
  mtime: number;
}

/** A file being written by applyNow(). */
interface FileSink extends TarEntrySink {
  fd: number;
  /** closes it without finishing (a failure) */
  close(): void;
}

/** Where a batch's paths and data are gathered, and its numbers: reused from batch to batch. */
interface Arena {
  data: Buffer;
  used: number;
  nums: Float64Array;
  out: Float64Array;
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
  return { data: Buffer.allocUnsafeSlow(ARENA_BYTES), used: 0, nums: new Float64Array(BATCH_RECORDS * NUMS), out: new Float64Array(BATCH_RECORDS * 3) };
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
  private queue: Queued[] = [];
  /** where the queue's paths and data are; the batch in flight has the other one */
  private arena = newArena();
  private spare: Arena | undefined;
  /** the batch the addon is applying */
  private inflight: Promise<void> | undefined;
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

  constructor(rootDir: string, opts: ApplyOptions) {
    this.overlay = opts.whiteouts === "overlay";
    this.root = process.getuid?.() === 0;
    this.chown = opts.chown ?? this.root;
    this.native = nativeFs();
    this.scope = new RootScope(rootDir, this.overlay ? undefined : (rel) => this.kept(rel));
    const setgid = (fs.lstatSync(rootDir).mode & 0o2000) !== 0;
    this.ownIds = this.overlay && !setgid ? [process.geteuid?.() ?? -1, process.getegid?.() ?? -1] : undefined;
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
    if (this.inflight === undefined && this.queue.length === 0) return fn();
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
    const abs = this.scope.abs(rel);
    if (abs.length > BATCH_PATH || (target !== undefined && target.length > BATCH_PATH)) return this.afterBatch(() => this.applyNow(h, parts));
    const arena = this.arena;
    const path = arena.used;
    arena.used += arena.data.write(abs, path);
    arena.data[arena.used++] = 0;
    const { atime, mtime } = this.times(h);
    const q: Queued = { h, parts, rel, kind, path, data: arena.used, len: 0, uid, gid, atime, mtime };
    if (target !== undefined) {
      q.len = arena.data.write(target, q.data);
      arena.used += q.len;
      arena.data[arena.used++] = 0;
      return this.push(q);
    }
    if (kind === BATCH_DIR) {
      this.scope.remember(parts, rel);
      return this.push(q);
    }
    q.len = h.size;
    arena.used += h.size;
    if (h.size === 0) return this.push(q);
    let at = q.data;
    return {
      data: (piece) => {
        at += piece.copy(arena.data, at);
      },
      end: () => this.push(q),
    };
  }

  private push(q: Queued): undefined | Promise<undefined> {
    this.queue.push(q);
    if (this.queue.length < BATCH_RECORDS && this.arena.used < BATCH_BYTES) return undefined;
    return this.send().then(() => undefined);
  }

  /** Waits for the batch in flight, then sends the queue (not waiting for it). */
  private async send(): Promise<void> {
    await this.inflight;
    this.inflight = undefined;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    const arena = this.arena;
    this.queue = [];
    this.arena = this.spare ?? newArena();
    this.arena.used = 0;
    this.spare = undefined;
    const applied = this.apply(batch, arena).finally(() => {
      this.spare = arena;
    });
    applied.catch(() => {}); // reported by whoever waits for it next
    this.inflight = applied;
  }

  /** Waits until everything queued is applied; rethrows the batch's failure. */
  async flush(): Promise<void> {
    while (this.inflight !== undefined || this.queue.length > 0) await this.send();
  }

  /** After a failure elsewhere: closes the file being written and waits for the batch in flight, ignoring its outcome. */
  async idle(): Promise<void> {
    this.writing?.close();
    await this.inflight?.catch(() => {});
  }

  private async apply(batch: Queued[], arena: Arena): Promise<void> {
    const { nums, out } = arena;
    for (let i = 0; i < batch.length; i++) {
      const q = batch[i];
      const o = i * NUMS;
      nums[o] = q.kind;
      nums[o + 1] = q.h.mode & 0o7777;
      nums[o + 2] = q.uid;
      nums[o + 3] = q.gid;
      nums[o + 4] = q.atime;
      nums[o + 5] = q.mtime;
      nums[o + 6] = q.path;
      nums[o + 7] = q.data;
      nums[o + 8] = q.len;
      // Set after the owner when open's mode (less the umask) cannot be it: chown clears setuid/setgid.
      nums[o + 9] = q.h.mode & 0o7000 || q.h.mode & this.umask ? 1 : 0;
    }
    const done = await this.native.applyBatch(batch.length, arena.data, nums, out);
    for (let i = 0; i < done; i++) {
      const q = batch[i];
      this.kept(q.rel);
      if (q.kind === BATCH_FILE) this.bytes += q.len;
      else if (q.kind === BATCH_DIR) this.dirs.set(q.rel, { mode: q.h.mode & 0o7777, atime: q.atime, mtime: q.mtime, dev: out[3 * i], ino: out[3 * i + 1], exact: out[3 * i + 2] === 1 && this.madeExact(q.h.mode) });
    }
    if (done === batch.length) return;
    // The rest, in order, as if there had been no batch: the failure comes
    // again and is reported (or, for a name taken, replaced) the usual way.
    this.scope.forget();
    for (const q of batch.slice(done)) {
      try {
        const sink = this.applyNow(q.h, q.parts);
        if (sink) this.writeFile(sink, arena.data.subarray(q.data, q.data + q.len));
      } catch (e) {
        throw entryError(e, q.h.name);
      }
    }
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
 * extraction or a copy, deepest first (a parent's mtime last), through a
 * no-follow handle, on a libuv thread (native/strata_fs.c); a directory
 * replaced since it was recorded is skipped. `trusted`: nothing was removed
 * or replaced since they were recorded, so each is set by its path (the
 * mode only where it is not `exact` already).
 */
export function restoreDirs(scope: RootScope, dirs: Map<string, DirMeta>, trusted = false): Promise<void> {
  const byDepth: string[][] = [];
  for (const rel of dirs.keys()) (byDepth[depth(rel)] ??= []).push(rel);
  const paths: string[] = [];
  const nums = new Float64Array(dirs.size * RESTORE_NUMS);
  for (let d = byDepth.length - 1; d >= 0; d--) {
    for (const rel of byDepth[d] ?? []) {
      const m = dirs.get(rel)!;
      nums.set([m.mode, m.atime, m.mtime, m.dev, m.ino, m.exact ? 0 : 1], paths.length * RESTORE_NUMS);
      paths.push(scope.abs(rel));
    }
  }
  return nativeFs().restoreDirs(paths, nums, trusted);
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
    await readTar(tar, (h) => {
      try {
        const r = applier.entry(h);
        return r instanceof Promise ? r.catch((e) => Promise.reject(entryError(e, h.name))) : r;
      } catch (e) {
        throw entryError(e, h.name);
      }
    }, "layer tar");
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
