import { lstatSync, mkdirSync, chmodSync, readlinkSync, type Stats } from "node:fs";
import { resolve } from "node:path";
import { StrataError } from "../errors/index.js";

/**
 * Tar input is hostile. Every path a layer names goes through this module:
 *
 * - `safeJoin(root, name)` is the lexical gate. Leading `/` and `.`
 *   components are dropped (an absolute name is contained in the root, as a
 *   chroot would see it), `..` components and NUL bytes are refused, and the
 *   result is checked to be `root` or below `root + "/"` (so `/tmp/root`
 *   never admits `/tmp/rootx`).
 * - `RootScope` resolves the directories an entry is written into. The rule
 *   we chose is scoped resolution, containerd's `fs.RootPath`: a symlink met
 *   in a parent component is followed as if `root` were `/` (an absolute
 *   target restarts at the root, `..` stops at the root), every component is
 *   checked with lstat, and the path handed to the kernel is made of real
 *   directories only. A symlink may point anywhere (it is valid in an image)
 *   but nothing is ever written through it to the outside: `lib -> /usr/lib`
 *   then `lib/x` writes `<root>/usr/lib/x`; `a -> ../../..` then `a/x`
 *   writes `<root>/x`. The final component is never followed (the extractor
 *   creates it with O_EXCL/O_NOFOLLOW semantics or replaces what is there).
 *
 * The resolution assumes nothing else changes the tree while a layer is
 * applied (an unpacked snapshot is private to its extractor).
 */

const MAX_SYMLINKS = 40; // Linux MAXSYMLINKS

/** Names that need the slow path: empty, absolute, trailing or doubled `/`, `.`/`..` components, NUL. */
const UNCLEAN = /^$|^\/|\/$|\/\/|(^|\/)\.\.?(\/|$)|\0/;

function refuse(name: string, why: string): never {
  throw new StrataError("INVALID_ARCHIVE", `invalid layer entry "${name}": ${why}`);
}

/** The clean components of an entry name; `[]` is the root itself. */
export function entryComponents(name: string): string[] {
  if (!UNCLEAN.test(name)) {
    return name.split("/");
  }
  if (name.includes("\0")) refuse(name, "NUL byte in name");
  const parts: string[] = [];
  for (const c of name.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") refuse(name, `".." component`);
    parts.push(c);
  }
  return parts;
}

/**
 * `root` joined with an entry name, lexically contained in `root` (see the
 * module comment). `root` must be absolute; the result never ends in `/`.
 */
export function safeJoin(root: string, name: string): string {
  const base = root.length > 1 && root.endsWith("/") ? root.slice(0, -1) : root;
  const rel = UNCLEAN.test(name) ? entryComponents(name).join("/") : name;
  if (rel === "") return base;
  const out = base === "/" ? "/" + rel : base + "/" + rel;
  // Belt and braces: the lexical rules above already guarantee this.
  if (!(base === "/" || out.startsWith(base + "/"))) refuse(name, "outside the root");
  return out;
}

/**
 * Resolves the directory part of entry names inside one root with
 * chroot-like scoped resolution, remembering the directories it has verified
 * or created so that a layer of many files costs one lstat per new directory.
 * Call `forget()` after removing or replacing anything that is not a regular
 * file: a remembered directory may have become a symlink.
 */
export class RootScope {
  readonly root: string;
  private readonly dirs = new Map<string, string>();

  /**
   * `onCreate(rel)` is told of every directory this scope creates (relative,
   * real). `known` is kept in step with the directories this scope knows to
   * lead to themselves (no symlink on the way): those remembered, and those
   * it may take from `known` (the extractor's scanner adds its own).
   */
  constructor(
    root: string,
    private readonly onCreate?: (rel: string) => void,
    private readonly known?: { has(rel: string): boolean; add(rel: string): void; clear(): void },
  ) {
    this.root = resolve(root);
  }

  /** The absolute path of a real relative path inside the root. */
  abs(rel: string): string {
    return safeJoin(this.root, rel);
  }

  /** How many times forget() was called: a path resolved from the cache under an older generation may lead elsewhere now. */
  generation = 0;

  forget(): void {
    this.dirs.clear();
    this.known?.clear();
    this.generation++;
  }

  /** The real relative path of entry directory `parts` when it is already resolved (no filesystem access). */
  cached(parts: readonly string[]): string | undefined {
    return parts.length === 0 ? "" : this.lookup(parts.join("/"));
  }

  private lookup(key: string): string | undefined {
    const hit = this.dirs.get(key);
    if (hit !== undefined || this.known === undefined) return hit;
    return this.known.has(key) ? key : undefined;
  }

  /** Records that entry directory `parts` is the real directory `rel` (the extractor just made it). */
  remember(parts: string[], rel: string): void {
    this.record(parts.join("/"), rel);
  }

  private record(key: string, rel: string): void {
    // (the native set takes paths of up to 4 KiB of UTF-8)
    if (key === rel && this.known && key.length < 1024) this.known.add(key);
    else this.dirs.set(key, rel);
  }

  /**
   * The real relative path ("" for the root) of the directory the entry
   * components `parts` name, following symlinks within the root. With
   * `create`, missing directories are made (0755) and a non-directory in the
   * way is an INVALID_ARCHIVE error; without, both give `undefined`.
   */
  dir(parts: readonly string[], create: boolean, entry = parts.join("/")): string | undefined {
    if (parts.length === 0) return "";
    const key = parts.join("/");
    const hit = this.lookup(key);
    if (hit !== undefined) return hit;
    const parent = this.dir(parts.slice(0, -1), create, entry);
    if (parent === undefined) return undefined;
    const real = this.walk(parent === "" ? [] : parent.split("/"), [parts[parts.length - 1]], create, entry);
    if (real !== undefined) this.record(key, real);
    return real;
  }

  /**
   * The real relative path of `path` (absolute or relative to the root), following symlinks
   * in every component, the last one too, without leaving the root; `undefined` when missing.
   */
  resolve(path: string): string | undefined {
    return this.walk([], path.split("/"), false, path, true);
  }

  /** What is at the real relative path `rel` (a subclass may merge another tree in; `create`: a directory is about to be written into). */
  protected lstat(rel: string, _create: boolean): Stats | undefined {
    return lstatSync(this.abs(rel), { throwIfNoEntry: false });
  }

  protected readlink(rel: string): string {
    return readlinkSync(this.abs(rel));
  }

  /** Follows `pending` from the real directory `cur`; every component ends up lstat-verified as a directory (the last one may be any file with `last`). */
  private walk(cur: string[], pending: string[], create: boolean, entry: string, last = false): string | undefined {
    let links = 0;
    while (pending.length > 0) {
      const c = pending.shift()!;
      if (c === "" || c === ".") continue;
      if (c === "..") {
        cur.pop(); // `..` at the root stays at the root
        continue;
      }
      cur.push(c);
      const rel = cur.join("/");
      const abs = this.abs(rel);
      const st = this.lstat(rel, create);
      if (st === undefined) {
        if (!create) return undefined;
        mkdirSync(abs, 0o755);
        chmodSync(abs, 0o755); // independent of the umask, for reproducible trees
        this.onCreate?.(rel);
      } else if (st.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS) refuse(entry, "too many levels of symbolic links in its parent path");
        const target = this.readlink(rel);
        cur.pop();
        if (target.startsWith("/")) cur = [];
        pending = target.split("/").concat(pending);
      } else if (!st.isDirectory()) {
        if (last && pending.every((p) => p === "" || p === ".")) break;
        if (!create) return undefined;
        refuse(entry, `parent "${rel}" is not a directory`);
      }
    }
    return cur.join("/");
  }
}
