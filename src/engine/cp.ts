import * as fs from "node:fs";
import { constants as fsConstants, type Stats } from "node:fs";
import { posix, resolve as resolveLocal } from "node:path";
import type { Readable, Writable } from "node:stream";
import { StrataError, isErrno, isStrataError } from "../errors/index.js";
import { nativeFs } from "../native/index.js";
import { RootScope, entryComponents } from "../archive/safejoin.js";
import { LayerWriter, readTar, type TarEntry, type TarEntrySink } from "../archive/tar.js";
import { restoreDirs, type DirMeta } from "../archive/extract.js";
import { isMounted, mountAll, unmount } from "../snapshot/mount.js";
import type { Container } from "./containers.js";
import type { Engine } from "./index.js";

/*
 * `strata cp`, with `docker cp`'s rules. Every copy is one tar stream: the
 * source is packed by the project's tar writer (LayerWriter) and the
 * destination is written by a scoped extractor (below), so a local → container
 * copy, a container → local copy and a `-` stream in or out are the same two
 * halves put together differently.
 *
 * Paths inside the container are resolved with RootScope (symlinks followed
 * as if the container root were `/`), on the container's merged mount: what
 * is written lands in its writable layer (copy-up), never in an image layer
 * and never outside the root. Unlike layer application, `.wh.` names are
 * ordinary files here (as in Docker's Untar), and a directory never replaces
 * a non-directory or the other way round (Docker's NoOverwriteDirNonDir).
 */

export interface CopyOptions {
  /** `-a`: keep the source's uid/gid (default: root in the container, the invoking user locally) */
  archive?: boolean;
  /** `-L`: follow a symlink named by SRC_PATH */
  followLink?: boolean;
}

export interface CopyResult {
  /** regular-file bytes written, or the tar bytes streamed for `-` */
  bytes: number;
}

/** `CONTAINER:PATH` → { container, path }; a local path otherwise (absolute, `./x:y`, or no colon), as Docker splits them. */
export function splitCpArg(arg: string): { container?: string; path: string } {
  if (arg.startsWith("/")) return { path: arg };
  const i = arg.indexOf(":");
  if (i < 0 || arg.startsWith(".")) return { path: arg };
  return { container: arg.slice(0, i), path: arg.slice(i + 1) };
}

/**
 * `strata cp SRC DEST` with the argument forms of `docker cp`: exactly one
 * side is `CONTAINER:PATH`; `-` as SRC reads a tar stream from `io.stdin`, as
 * DEST writes one to `io.stdout`.
 */
export async function cp(
  engine: Engine,
  src: string,
  dst: string,
  opts: CopyOptions & { stdin?: Readable; stdout?: Writable } = {},
): Promise<CopyResult & { direction: "from" | "to"; container: string }> {
  if (src === "") throw new StrataError("INVALID_ARGUMENT", "source can not be empty");
  if (dst === "") throw new StrataError("INVALID_ARGUMENT", "destination can not be empty");
  const s = splitCpArg(src);
  const d = splitCpArg(dst);
  if (s.container !== undefined && d.container !== undefined) throw new StrataError("INVALID_ARGUMENT", "copying between containers is not supported");
  if (s.container !== undefined) {
    const to = d.path === "-" ? (opts.stdout ?? (process.stdout as unknown as Writable)) : d.path;
    const r = await copyFromContainer(engine, s.container, s.path, to, opts);
    return { ...r, direction: "from", container: s.container };
  }
  if (d.container !== undefined) {
    const from = s.path === "-" ? (opts.stdin ?? (process.stdin as unknown as Readable)) : s.path;
    const r = await copyToContainer(engine, d.container, from, d.path, opts);
    return { ...r, direction: "to", container: d.container };
  }
  throw new StrataError("INVALID_ARGUMENT", "must specify at least one container source");
}

/**
 * Container → local path (created, overwritten or copied into, by Docker's
 * rules) or → a Writable, which gets a tar stream of the source.
 */
export async function copyFromContainer(engine: Engine, ref: string, srcPath: string, dest: string | Writable, opts: CopyOptions = {}): Promise<CopyResult> {
  const c = engine.containers.get(ref);
  const local = typeof dest === "string" ? localDestination(dest) : undefined;
  return withMountedRoot(engine, c, async (root) => {
    const spec = parsePath(srcPath, "/");
    const scope = new RootScope(root);
    const loc = locate(scope, spec.parts, opts.followLink || spec.dirOnly);
    if ("missing" in loc || loc.st === undefined) throw notInContainer(srcPath, ref);
    if (spec.dirOnly && !loc.st.isDirectory()) throw new StrataError("INVALID_ARGUMENT", `lstat ${srcPath}: not a directory`);
    const src: Source = { abs: scope.abs(loc.rel), st: loc.st, name: spec.contents || spec.parts.length === 0 ? "." : spec.parts[spec.parts.length - 1] };
    if (typeof dest !== "string") return { bytes: await streamOut(src, dest) };
    const plan = planCopy(src, local!);
    const target = new CopyExtractor(plan.dir, "", opts.archive && process.getuid?.() === 0 ? "keep" : "none", (rel) => posix.join(plan.dir, rel));
    return { bytes: await pipe(src, plan.name, target) };
  });
}

/**
 * Local path (or a tar stream, extracted into DEST which must be a
 * directory) → the container, into its writable layer. Files are owned by
 * root in the container unless `archive` keeps the source's ids.
 */
export async function copyToContainer(engine: Engine, ref: string, src: string | Readable, dstPath: string, opts: CopyOptions = {}): Promise<CopyResult> {
  const c = engine.containers.get(ref);
  return withMountedRoot(engine, c, async (root) => {
    const spec = parsePath(dstPath, "/");
    const scope = new RootScope(root);
    const loc = locate(scope, spec.parts, true);
    const owner: Owner = opts.archive ? "keep" : { uid: 0, gid: 0 };
    const show = (rel: string) => "/" + rel;
    if (!("missing" in loc) && loc.st && !loc.st.isDirectory() && !loc.st.isFile())
      throw new StrataError("INVALID_ARGUMENT", `destination "${ref}:${dstPath}" must be a directory or a regular file`);
    if (typeof src !== "string") {
      if ("missing" in loc || !loc.st?.isDirectory()) throw new StrataError("INVALID_ARGUMENT", `destination "${ref}:${dstPath}" must be a directory`);
      const target = new CopyExtractor(root, loc.rel, owner, show);
      return { bytes: await extractTar(src, target) };
    }
    const source = localSource(src, !!opts.followLink);
    if ("missing" in loc) {
      // Docker's order: the copy rules first, then the extraction point (DEST's directory) that is not there.
      planCopy(source, { exists: false, isDir: false, dirOnly: spec.dirOnly, dir: "", base: "" });
      const dir = locate(scope, loc.missing, true);
      if (!("missing" in dir) && dir.st !== undefined && !dir.st.isDirectory()) throw new StrataError("INVALID_ARGUMENT", "extraction point is not a directory");
      throw notInContainer("/" + loc.missing.join("/"), ref);
    }
    const plan = planCopy(source, { exists: loc.st !== undefined, isDir: !!loc.st?.isDirectory(), dirOnly: spec.dirOnly, dir: loc.parent, base: loc.base, self: loc.rel });
    const target = new CopyExtractor(root, plan.dir, owner, show);
    return { bytes: await pipe(source, plan.name, target, mountIdentity(root)) };
  });
}

// ---- the container's root ------------------------------------------------

/** Runs `fn` on the container's merged root: mounted for the call unless it already was, and unmounted after, whatever happens. */
async function withMountedRoot<T>(engine: Engine, c: Container, fn: (root: string) => Promise<T>): Promise<T> {
  const target = engine.containers.mountPoint(c);
  const wasMounted = isMounted(target);
  if (!wasMounted) {
    const mounts = await engine.snapshots.mounts(c.snapshot);
    try {
      mountAll(mounts, target);
    } catch (e) {
      unmount(target);
      throw e;
    }
  }
  try {
    return await fn(target);
  } finally {
    if (!wasMounted) unmount(target);
  }
}

function notInContainer(path: string, ref: string): StrataError {
  return new StrataError("NOT_FOUND", `Could not find the file ${path} in container ${ref}`);
}

// ---- paths -----------------------------------------------------------------

interface PathSpec {
  /** lexically clean components below `/` */
  parts: string[];
  /** ends in `/` or `/.` (or is `.`): names a directory */
  dirOnly: boolean;
  /** ends in `/.` (or is `.`): the directory's contents, not the directory */
  contents: boolean;
}

/** A path as Docker reads it: `..` cleaned lexically (at `/` it stays at `/`), the trailing `/` or `/.` remembered. */
function parsePath(p: string, cwd: string): PathSpec {
  const contents = p === "." || p.endsWith("/.");
  const dirOnly = contents || p.endsWith("/");
  const clean = posix.resolve(cwd, p);
  return { parts: clean.split("/").filter(Boolean), dirOnly, contents };
}

interface Located {
  /** real relative path inside the root ("" for the root) */
  rel: string;
  /** real relative path of its directory, and its name there */
  parent: string;
  base: string;
  /** lstat of `rel`; undefined when nothing is there (the directory is) */
  st?: Stats;
}

const MAX_SYMLINKS = 40;

/**
 * Scoped resolution of a whole path in the container (RootScope for every
 * directory; the last component followed too when `follow`, within the root).
 * When a directory on the way is missing or not a directory: `missing`, the
 * path of that directory as last spelt (after the symlinks followed).
 */
function locate(scope: RootScope, parts: string[], follow: boolean): Located | { missing: string[] } {
  for (let hops = 0; ; hops++) {
    if (hops > MAX_SYMLINKS) throw new StrataError("INVALID_ARGUMENT", "too many levels of symbolic links");
    const last = parts[parts.length - 1];
    if (last === undefined || last === "..") {
      // Names a directory itself (the root, or a symlink target ending in `..`).
      const rel = scope.dir(parts, false);
      if (rel === undefined) return { missing: parts };
      const i = rel.lastIndexOf("/");
      return { rel, parent: i < 0 ? "" : rel.slice(0, i), base: i < 0 ? rel : rel.slice(i + 1), st: fs.lstatSync(scope.abs(rel)) };
    }
    const parent = scope.dir(parts.slice(0, -1), false);
    if (parent === undefined) return { missing: parts.slice(0, -1) };
    const rel = parent === "" ? last : `${parent}/${last}`;
    const abs = scope.abs(rel);
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (!follow || !st?.isSymbolicLink()) return { rel, parent, base: last, st };
    const link = fs.readlinkSync(abs);
    const from = link.startsWith("/") ? [] : parent.split("/").filter(Boolean);
    parts = from.concat(link.split("/").filter((c) => c !== "" && c !== "."));
  }
}

interface Source {
  /** absolute path of what is copied (its last component a symlink itself unless followed) */
  abs: string;
  st: Stats;
  /** the name it goes by: its base name, or "." for a directory's contents */
  name: string;
}

/** A local SRC_PATH as Docker resolves it: host symlinks in its directory followed, the last one only with -L. */
function localSource(p: string, follow: boolean): Source {
  const abs = resolveLocal(p);
  const spec = parsePath(p, process.cwd());
  const lstatError = (e: unknown) => new StrataError("NOT_FOUND", `lstat ${abs}: ${errnoText(e)}`, { cause: e });
  let real: string;
  try {
    real = follow || spec.dirOnly ? fs.realpathSync(abs) : posix.join(fs.realpathSync(posix.dirname(abs)), posix.basename(abs));
  } catch (e) {
    throw lstatError(e);
  }
  let st: Stats;
  try {
    st = fs.lstatSync(real);
  } catch (e) {
    throw lstatError(e);
  }
  if (spec.dirOnly && !st.isDirectory()) throw new StrataError("INVALID_ARGUMENT", `lstat ${abs}/: not a directory`);
  return { abs: real, st, name: spec.contents || abs === "/" ? "." : posix.basename(abs) };
}

interface Destination {
  exists: boolean;
  isDir: boolean;
  dirOnly: boolean;
  /** the directory DEST is in (real), and DEST's name there */
  dir: string;
  base: string;
  /** DEST itself (real), when it exists */
  self?: string;
}

/** A local DEST_PATH as Docker resolves it: its parent must exist; a symlink as DEST is followed (even a dangling one). */
function localDestination(p: string): Destination {
  const abs = resolveLocal(p);
  const spec = parsePath(p, process.cwd());
  const parentDir = posix.dirname(abs);
  if (!fs.existsSync(parentDir)) throw new StrataError("NOT_FOUND", `invalid output path: directory "${parentDir}" does not exist`);
  let path = abs;
  let st = fs.lstatSync(path, { throwIfNoEntry: false });
  for (let hops = 0; st?.isSymbolicLink(); hops++) {
    if (hops > 10) throw new StrataError("INVALID_ARGUMENT", `too many symlinks in ${abs}`);
    path = resolveLocal(posix.dirname(path), fs.readlinkSync(path));
    st = fs.lstatSync(path, { throwIfNoEntry: false });
  }
  if (st && !st.isDirectory() && !st.isFile()) throw new StrataError("INVALID_ARGUMENT", `invalid output path: "${abs}" must be a directory or a regular file`);
  let dir: string;
  try {
    dir = fs.realpathSync(posix.dirname(path));
  } catch (e) {
    throw new StrataError("NOT_FOUND", `stat ${posix.dirname(path)}: ${errnoText(e)}`, { cause: e });
  }
  if (!fs.statSync(dir).isDirectory()) throw new StrataError("INVALID_ARGUMENT", "not a directory");
  const base = posix.basename(path);
  return { exists: st !== undefined, isDir: !!st?.isDirectory(), dirOnly: spec.dirOnly, dir, base, self: posix.join(dir, base) };
}

function errnoText(e: unknown): string {
  if (isErrno(e, "ENOENT")) return "no such file or directory";
  if (isErrno(e, "ENOTDIR")) return "not a directory";
  if (isErrno(e, "ELOOP")) return "too many levels of symbolic links";
  if (isErrno(e, "EACCES")) return "permission denied";
  return (e as Error).message;
}

/**
 * Docker's copy rules (its PrepareArchiveCopy): where the source is
 * extracted and under which name.
 */
function planCopy(src: Source, dst: Destination): { dir: string; name: string } {
  const isDir = src.st.isDirectory();
  if (dst.exists && dst.isDir) return { dir: dst.self ?? "", name: src.name }; // into it
  if (dst.exists && isDir) throw new StrataError("INVALID_ARGUMENT", "cannot copy directory");
  if (dst.exists) return { dir: dst.dir, name: dst.base }; // a file over a file
  if (isDir) return { dir: dst.dir, name: dst.base }; // created, with the source's contents
  if (dst.dirOnly) throw new StrataError("NOT_FOUND", "no such directory");
  return { dir: dst.dir, name: dst.base };
}

// ---- the source side: a tar of a tree ----------------------------------

/** The xattrs a copy carries: user.* and file capabilities (overlay's own and security labels stay where they are). */
function readXattrs(abs: string): [string, Buffer][] | undefined {
  const native = nativeFs();
  let names: string[];
  try {
    names = native.llistxattr(abs);
  } catch {
    return undefined;
  }
  const out: [string, Buffer][] = [];
  for (const n of names) {
    if (!n.startsWith("user.") && n !== "security.capability") continue;
    const v = native.lgetxattr(abs, n);
    if (v !== null) out.push([n, v]);
  }
  return out.length ? out : undefined;
}

/** `dev:ino` of a directory the walk must not enter (the container's own mount, when a local tree holds it). */
function mountIdentity(root: string): string {
  const st = fs.statSync(root);
  return `${st.dev}:${st.ino}`;
}

/** Packs `src` as entries named `name`, `name/child`, … (sorted, not following symlinks). */
function packSource(src: Source, name: string, skip?: string): Readable {
  const writer = new LayerWriter();
  const walk = async (abs: string, st: Stats, rel: string): Promise<void> => {
    if (st.isDirectory() && skip === `${st.dev}:${st.ino}`) return;
    await writer.add(rel, abs, st, readXattrs(abs));
    if (!st.isDirectory()) return;
    for (const n of (await fs.promises.readdir(abs)).sort()) {
      const child = `${abs}/${n}`;
      await walk(child, await fs.promises.lstat(child), `${rel}/${n}`);
    }
  };
  walk(src.abs, src.st, name).then(
    () => writer.finalize(),
    (e) => writer.fail(e, `copy ${src.abs}`),
  );
  return writer.stream;
}

/**
 * When the consumer of a pack stream fails, the rest of the stream is read
 * and dropped: the walk then finishes (no file of the root is still open)
 * before the root is unmounted.
 */
function settle(tar: Readable): Promise<void> {
  return new Promise<void>((resolve) => {
    tar.on("error", () => resolve());
    tar.on("end", () => resolve());
    tar.on("close", () => resolve());
    tar.resume();
  });
}

/** Copies `from` into `to` with backpressure, ending `to` at the end, counting the bytes; `stop()` detaches it. */
function pump(from: Readable, to: Writable, onData?: (c: Buffer) => void): { stop(): void } {
  const onChunk = (c: Buffer) => {
    onData?.(c);
    if (!to.write(c)) from.pause();
  };
  const onDrain = () => from.resume();
  const onEnd = () => to.end();
  from.on("data", onChunk);
  to.on("drain", onDrain);
  from.on("end", onEnd);
  return {
    stop() {
      from.off("data", onChunk);
      to.off("drain", onDrain);
      from.off("end", onEnd);
    },
  };
}

async function streamOut(src: Source, dest: Writable): Promise<number> {
  const tar = packSource(src, src.name);
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const flow = pump(tar, dest, (c) => (bytes += c.length));
    tar.on("error", (e) => {
      if (done) return;
      done = true;
      flow.stop();
      reject(e);
    });
    dest.on("error", (e) => {
      if (done) return;
      done = true;
      flow.stop();
      settle(tar).then(() => reject(new StrataError("IO", `copy: writing the tar stream: ${e.message}`, { cause: e })));
    });
    dest.on("finish", () => {
      if (done) return;
      done = true;
      resolve();
    });
  });
  return bytes;
}

async function pipe(src: Source, name: string, target: CopyExtractor, skip?: string): Promise<number> {
  return extractTar(packSource(src, name, skip), target);
}

// ---- the destination side: scoped extraction --------------------------------

/** "keep": the tar's ids; "none": whoever runs the copy; or these ids for everything. */
type Owner = "keep" | "none" | { uid: number; gid: number };

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, S_IFCHR, S_IFBLK, S_IFIFO } = fsConstants;

/**
 * Writes tar entries below `base` (a real relative directory) inside `root`.
 * Parents are resolved with RootScope, the last component is never
 * followed, `..` is refused and absolute names stay below `base`; an
 * existing file is replaced, an existing directory merged (its metadata
 * taken from the entry), and a directory/non-directory clash is an error.
 */
class CopyExtractor {
  private readonly scope: RootScope;
  private readonly baseParts: string[];
  private readonly dirs = new Map<string, DirMeta>();
  private readonly root = process.getuid?.() === 0;
  /** the file being written */
  private open: fs.promises.FileHandle | undefined;
  bytes = 0;

  constructor(
    rootDir: string,
    private readonly base: string,
    private readonly owner: Owner,
    private readonly show: (rel: string) => string,
  ) {
    this.scope = new RootScope(rootDir);
    this.baseParts = base.split("/").filter(Boolean);
  }

  private ids(h: TarEntry): [number, number] | undefined {
    if (this.owner === "none") return undefined;
    if (this.owner !== "keep") return [this.owner.uid, this.owner.gid];
    const id = (k: "uid" | "gid") => {
      const n = h[k];
      if (!Number.isInteger(n) || n < 0 || n > 0xfffffffe) throw new StrataError("INVALID_ARCHIVE", `invalid tar entry "${h.name}": ${k} ${n} is out of range`);
      return n;
    };
    return [id("uid"), id("gid")];
  }

  private times(h: TarEntry): { atime: number; mtime: number } {
    return { atime: h.atime ?? h.mtime, mtime: h.mtime };
  }

  private xattrs(abs: string, h: TarEntry): void {
    if (!h.xattrs) return;
    for (const [name, value] of h.xattrs) {
      if (name.startsWith("trusted.overlay.")) continue;
      try {
        nativeFs().lsetxattr(abs, name, value);
      } catch (e) {
        if (!isErrno(e, "ENOTSUP") && !isErrno(e, "EOPNOTSUPP") && !isErrno(e, "EPERM")) throw e;
      }
    }
  }

  /** One entry: a sink for a file's data. */
  async entry(h: TarEntry): Promise<TarEntrySink | undefined> {
    const parts = entryComponents(h.name);
    const isDir = h.type === "directory";
    if (parts.length === 0) {
      // The extraction directory itself (`.`): it exists and stays as it is, as Docker's Untar leaves it.
      if (!isDir) throw new StrataError("CONFLICT", `cannot overwrite directory "${this.show(this.base)}" with non-directory "${this.show(this.base)}"`);
      return undefined;
    }
    const full = [...this.baseParts, ...parts];
    const parent = this.scope.dir(full.slice(0, -1), true, h.name)!;
    const name = full[full.length - 1];
    const rel = parent === "" ? name : `${parent}/${name}`;
    const abs = this.scope.abs(rel);
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (st?.isDirectory() && !isDir) throw new StrataError("CONFLICT", `cannot overwrite directory "${this.show(rel)}" with non-directory "${this.show(this.base)}"`);
    if (st && !st.isDirectory() && isDir) throw new StrataError("CONFLICT", `cannot overwrite non-directory "${this.show(rel)}" with directory "${this.show(this.base)}"`);
    if (h.type === "link") {
      await this.hardlink(h, rel, abs);
      return undefined;
    }
    if (st && !isDir) {
      fs.unlinkSync(abs);
      if (st.isSymbolicLink()) this.scope.forget();
    }
    const ids = this.ids(h);
    const t = this.times(h);
    switch (h.type) {
      case "file":
      case "contiguous-file":
        return this.file(abs, h, ids, t);
      case "directory": {
        if (!st) fs.mkdirSync(abs, 0o700);
        this.scope.remember(full, rel);
        if (ids) fs.lchownSync(abs, ids[0], ids[1]);
        this.xattrs(abs, h);
        const now = fs.lstatSync(abs);
        this.dirs.set(rel, { mode: h.mode & 0o7777, ...t, dev: now.dev, ino: now.ino });
        break;
      }
      case "symlink": {
        const target = h.linkname ?? "";
        if (target === "" || target.includes("\0")) throw new StrataError("INVALID_ARCHIVE", `invalid tar entry "${h.name}": bad symlink target`);
        fs.symlinkSync(target, abs);
        if (ids) fs.lchownSync(abs, ids[0], ids[1]);
        this.xattrs(abs, h);
        fs.lutimesSync(abs, t.atime, t.mtime);
        break;
      }
      case "character-device":
      case "block-device":
      case "fifo": {
        const kind = h.type === "character-device" ? S_IFCHR : h.type === "block-device" ? S_IFBLK : S_IFIFO;
        try {
          nativeFs().mknod(abs, kind | (h.mode & 0o7777), h.devmajor ?? 0, h.devminor ?? 0);
        } catch (e) {
          if (kind !== S_IFIFO && !this.root && isErrno(e, "EPERM")) break; // devices need privilege; skipped, as Docker does
          throw e;
        }
        if (ids) fs.lchownSync(abs, ids[0], ids[1]);
        fs.chmodSync(abs, h.mode & 0o7777);
        this.xattrs(abs, h);
        fs.lutimesSync(abs, t.atime, t.mtime);
        break;
      }
      default:
        throw new StrataError("INVALID_ARCHIVE", `invalid tar entry "${h.name}": unsupported type (typeflag ${JSON.stringify(h.typeflag)})`);
    }
    return undefined;
  }

  private async file(abs: string, h: TarEntry, ids: [number, number] | undefined, t: { atime: number; mtime: number }): Promise<TarEntrySink> {
    const fh = await fs.promises.open(abs, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    this.open = fh;
    const finish = async (ok: boolean) => {
      this.open = undefined;
      try {
        if (!ok) return;
        if (ids) await fh.chown(ids[0], ids[1]);
        await fh.chmod(h.mode & 0o7777); // after chown, which clears setuid/setgid
        this.xattrs(abs, h);
        await fh.utimes(t.atime, t.mtime);
      } finally {
        await fh.close();
      }
    };
    return {
      data: async (piece) => {
        try {
          for (let off = 0; off < piece.length; ) off += (await fh.write(piece, off)).bytesWritten;
        } catch (e) {
          await finish(false).catch(() => {});
          throw e;
        }
        this.bytes += piece.length;
      },
      end: () => finish(true),
    };
  }

  /** After a failure: closes the file being written, if any. */
  async abort(): Promise<void> {
    await this.open?.close().catch(() => {});
    this.open = undefined;
  }

  /** A hardlink's target is named like an entry (below `base`, resolved in scope), must exist and must not be a directory. */
  private async hardlink(h: TarEntry, rel: string, abs: string): Promise<void> {
    const linkname = h.linkname ?? "";
    let lparts: string[];
    try {
      lparts = entryComponents(linkname);
    } catch {
      throw new StrataError("INVALID_ARCHIVE", `invalid tar entry "${h.name}": hardlink target "${linkname}" leaves the destination`);
    }
    const full = [...this.baseParts, ...lparts];
    const lparent = lparts.length ? this.scope.dir(full.slice(0, -1), false) : undefined;
    const targetRel = lparent === undefined ? undefined : lparent === "" ? full[full.length - 1] : `${lparent}/${full[full.length - 1]}`;
    const tst = targetRel === undefined ? undefined : fs.lstatSync(this.scope.abs(targetRel), { throwIfNoEntry: false });
    if (targetRel === undefined || tst === undefined || tst.isDirectory())
      throw new StrataError("INVALID_ARCHIVE", `invalid tar entry "${h.name}": hardlink target "${linkname}" is not a file in the destination`);
    if (targetRel === rel) return;
    if (fs.lstatSync(abs, { throwIfNoEntry: false })) fs.unlinkSync(abs);
    fs.linkSync(this.scope.abs(targetRel), abs);
  }

  /** Directory modes and times, deepest first, on the directories this copy made or merged (skipping any replaced since). */
  finish(): Promise<void> {
    return restoreDirs(this.scope, this.dirs);
  }

}

/**
 * Feeds a tar stream to `target`, one entry at a time; returns the file
 * bytes written. On a failure the input is destroyed (our own pack's writer
 * handles that as an error: waiting for it to drain could outlive the command).
 */
async function extractTar(input: Readable, target: CopyExtractor): Promise<number> {
  try {
    await readTar(input, (h) => target.entry(h), "tar stream");
  } catch (e) {
    await target.abort();
    input.destroy();
    throw isStrataError(e) ? e : new StrataError("IO", `copy: ${(e as Error).message}`, { cause: e });
  }
  await target.finish();
  return target.bytes;
}
