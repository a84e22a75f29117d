import { createHash } from "node:crypto";
import { closeSync, constants, lstatSync, openSync, readdirSync, readlinkSync, readSync, statSync, type Stats } from "node:fs";
import { join } from "node:path";
import { StrataError } from "../errors/index.js";

/**
 * One file a COPY/ADD reads: its path relative to the source root and what
 * the copy keeps of its stat (a build context can hold hundreds of thousands
 * of files: no Stats objects, with their four Dates, are kept).
 */
export interface SourceEntry {
  rel: string;
  /** file type and permission bits */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atimeMs: number;
  mtimeMs: number;
  /** dev:ino of a file with more than one link, so that a copy keeps hardlinks */
  inode?: string;
}

function entry(rel: string, st: Stats): SourceEntry {
  return { rel, mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs, inode: st.nlink > 1 && !st.isDirectory() ? `${st.dev}:${st.ino}` : undefined };
}

export const isDir = (e: SourceEntry): boolean => (e.mode & constants.S_IFMT) === constants.S_IFDIR;
export const isFile = (e: SourceEntry): boolean => (e.mode & constants.S_IFMT) === constants.S_IFREG;
export const isSymlink = (e: SourceEntry): boolean => (e.mode & constants.S_IFMT) === constants.S_IFLNK;

/**
 * A tree COPY/ADD reads from: the build context (with .dockerignore applied)
 * or another stage's root filesystem. Paths are relative to `root` and can
 * never leave it.
 */
export class SourceTree {
  constructor(
    readonly root: string,
    private readonly ignored: (rel: string) => boolean = () => false,
    readonly label = "build context",
  ) {}

  /** A source argument made relative to the root: `..` cannot climb out, as Docker cleans it. */
  static clean(src: string): string {
    const parts: string[] = [];
    for (const c of src.split("/")) {
      if (c === "" || c === ".") continue;
      if (c === "..") parts.pop();
      else parts.push(c);
    }
    return parts.join("/");
  }

  /** The host path of a relative one. */
  abs(rel: string): string {
    return rel ? join(this.root, rel) : this.root;
  }

  private lstat(rel: string): Stats | undefined {
    return lstatSync(this.abs(rel), { throwIfNoEntry: false });
  }

  private children(rel: string): string[] {
    return readdirSync(this.abs(rel))
      .sort()
      .map((n) => (rel ? `${rel}/${n}` : n));
  }

  /** The paths a COPY source names: itself, or what its wildcards match (`*`, `?`, `[…]`, `**`), excluded paths left out. */
  match(src: string): string[] {
    const clean = SourceTree.clean(src);
    if (!/[*?[]/.test(clean)) {
      const st = this.lstat(clean);
      if (!st || (clean && this.ignored(clean))) throw new StrataError("NOT_FOUND", `"${src}": not found in ${this.label}${this.label === "build context" ? " (or excluded by .dockerignore)" : ""}`);
      return [clean];
    }
    const pattern = clean.split("/");
    const out: string[] = [];
    const visit = (rel: string, i: number) => {
      if (i === pattern.length) {
        if (!this.ignored(rel)) out.push(rel);
        return;
      }
      const st = this.lstat(rel);
      if (!st?.isDirectory()) return;
      if (pattern[i] === "**") {
        visit(rel, i + 1);
        for (const c of this.children(rel)) visit(c, i);
        return;
      }
      for (const c of this.children(rel)) if (globMatch(pattern[i], c.slice(c.lastIndexOf("/") + 1))) visit(c, i + 1);
    };
    visit("", 0);
    if (out.length === 0) throw new StrataError("NOT_FOUND", `"${src}": no source files were specified (nothing in the ${this.label} matches)`);
    return [...new Set(out)];
  }

  /** The entry `rel` names, followed if it is a symlink. */
  top(rel: string): SourceEntry {
    const top = this.lstat(rel)!;
    return entry(rel, top.isSymbolicLink() ? (statSync(this.abs(rel), { throwIfNoEntry: false }) ?? top) : top);
  }

  /**
   * `top` and, for a directory, everything below it that is not excluded, in
   * tree order (a directory right before its contents), each as
   * `[entry, false]`; each directory again as `[dir, true]` after its
   * contents. Nothing is kept: a context can hold hundreds of thousands of files.
   */
  *walk(top: SourceEntry): Generator<[SourceEntry, boolean]> {
    const tree = this;
    function* below(dir: string): Generator<[SourceEntry, boolean]> {
      for (const c of tree.children(dir)) {
        const e = entry(c, tree.lstat(c)!);
        // An excluded directory may still hold re-included paths (`!` patterns).
        const shown = !tree.ignored(c);
        if (shown) yield [e, false];
        if (isDir(e)) yield* below(c);
        if (shown && isDir(e)) yield [e, true];
      }
    }
    yield [top, false];
    if (isDir(top)) {
      yield* below(top.rel);
      yield [top, true];
    }
  }

  /** What the cache keys on: content, not mtime (plus type, mode and link target). */
  digest(e: SourceEntry): string {
    const hash = createHash("sha256").update(`${e.mode.toString(8)}:`);
    if (isSymlink(e)) hash.update(`link:${readlinkSync(this.abs(e.rel))}`);
    else if (isFile(e)) hashFile(hash, this.abs(e.rel));
    return hash.digest("hex");
  }
}

const CHUNK = 1 << 20;
let chunk: Buffer | undefined;

/** A file's bytes through one reused 1 MiB buffer (nothing allocated per file); a short read of a regular file is its end. */
function hashFile(hash: ReturnType<typeof createHash>, path: string): void {
  chunk ??= Buffer.allocUnsafe(CHUNK);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, chunk, 0, CHUNK, null)) > 0; ) {
      hash.update(chunk.subarray(0, n));
      if (n < CHUNK) break;
    }
  } finally {
    closeSync(fd);
  }
}

/** Go's filepath.Match for one path component: `*`, `?`, `[…]` (with `^`/`!` negation and ranges), `\` escapes. */
export function globMatch(pattern: string, name: string): boolean {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "\\" && i + 1 < pattern.length) re += escapeRe(pattern[++i]);
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end < 0) throw new StrataError("INVALID_ARGUMENT", `syntax error in pattern "${pattern}"`);
      let body = pattern.slice(i + 1, end);
      if (body.startsWith("^") || body.startsWith("!")) body = "^" + body.slice(1);
      re += `[${body.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else re += escapeRe(c);
  }
  return new RegExp(re + "$").test(name);
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
