import * as fs from "node:fs";
import type { BigIntStats } from "node:fs";
import type { Readable } from "node:stream";
import { StrataError, wrap } from "../errors/index.js";
import { nativeFs, type NativeFs } from "../native/index.js";
import { OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, isOverlayWhiteout, whiteoutName } from "./whiteout.js";
import { entryComponents, safeJoin } from "./safejoin.js";
import { LayerWriter } from "./tar.js";

/** One line of `docker diff`: A added, C changed, D deleted; `path` is absolute in the container. */
export type Change = { kind: "A" | "C" | "D"; path: string };

/*
 * The rules, shared by both drivers so that `strata diff` and `strata
 * commit` give the same answer on overlay and on vfs (Docker's vfs rules,
 * pkg/archive ChangesDirs):
 *
 * - a path only in the new tree is A, and so is everything below it;
 * - a path only in the old tree is D; for a directory only the directory is
 *   listed, not its contents;
 * - a path in both trees whose type, mode, owner, xattrs (or, for a
 *   non-directory, size or mtime to the nanosecond, or device number) differ
 *   is C; a non-directory replacing a directory is C alone, a directory
 *   replacing a non-directory is C with everything below it A;
 * - a directory in both trees is C when anything below it changed (even if
 *   its own metadata did not); a directory's size and mtime are ignored;
 * - the root is never listed.
 *
 * On overlay the upper directory says what was touched: a 0/0 character
 * device is a deletion (D when the lower layers have the path), an opaque
 * directory (trusted.overlay.opaque=y) is C (or A when absent below) and
 * every lower entry under it that the upper does not have again is D (the
 * same rule applies below it, as overlayfs hides all lower content there);
 * a non-directory present in the upper and in a lower layer is C (a copy-up
 * is a change even when the stat matches). Overlay mounts with redirect_dir
 * or metacopy are refused: their upper directory does not hold the data.
 *
 * Output is sorted by path in tree order: by component, so a directory comes
 * right before its contents (`/a`, `/a/b`, `/a-b`), as `docker diff` walks.
 */

const TRUSTED_OVERLAY = "trusted.overlay.";
const YIELD_EVERY = 1024;

/** Tree order: "/" sorts before every other character. */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1;
    if (y === 0x2f) return 1;
    return x - y;
  }
  return a.length - b.length;
}

function sortChanges(changes: Change[]): Change[] {
  return changes.sort((a, b) => comparePaths(a.path, b.path));
}

function lstat(abs: string): BigIntStats | undefined {
  return fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
}

function isDir(st: BigIntStats): boolean {
  return st.isDirectory();
}

function whiteout(st: BigIntStats): boolean {
  return st.isCharacterDevice() && st.rdev === 0n;
}

function childPath(rel: string, name: string): string {
  return rel === "" ? name : `${rel}/${name}`;
}

/** Names in a directory, sorted (readdir order is the filesystem's). */
function names(abs: string): string[] {
  return fs.readdirSync(abs).sort();
}

/** Extended attributes that belong to the content (everything but overlay's own), sorted by name. */
export function contentXattrs(native: NativeFs, abs: string): [string, Buffer][] {
  const out: [string, Buffer][] = [];
  let list: string[];
  try {
    list = native.llistxattr(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOTSUP" || (e as NodeJS.ErrnoException).code === "EOPNOTSUPP") return out;
    throw e;
  }
  for (const name of list.sort()) {
    if (name.startsWith(TRUSTED_OVERLAY)) continue;
    const v = native.lgetxattr(abs, name);
    if (v !== null) out.push([name, v]);
  }
  return out;
}

function sameXattrs(a: [string, Buffer][], b: [string, Buffer][]): boolean {
  return a.length === b.length && a.every(([k, v], i) => b[i][0] === k && b[i][1].equals(v));
}

class Walker {
  readonly native = nativeFs();
  readonly out: Change[] = [];
  private steps = 0;

  push(kind: Change["kind"], rel: string): void {
    this.out.push({ kind, path: "/" + rel });
  }

  /** Lets other work run during a long walk. */
  async tick(): Promise<void> {
    if (++this.steps % YIELD_EVERY === 0) await new Promise<void>((r) => setImmediate(r));
  }

  /** Everything below the new directory `rel` of `root` is A (overlay whiteouts there delete nothing). */
  async added(root: string, rel: string): Promise<void> {
    for (const name of names(safeJoin(root, rel))) {
      const child = childPath(rel, name);
      const st = lstat(safeJoin(root, child))!;
      await this.tick();
      if (whiteout(st)) continue;
      this.push("A", child);
      if (isDir(st)) await this.added(root, child);
    }
  }

  /** Docker's statDifferent plus xattrs: a directory's size and mtime do not count. */
  differs(oldAbs: string, o: BigIntStats, newAbs: string, n: BigIntStats): boolean {
    if (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdev !== n.rdev) return true;
    if (!isDir(o) && (o.mtimeNs !== n.mtimeNs || o.size !== n.size)) return true;
    return !sameXattrs(contentXattrs(this.native, oldAbs), contentXattrs(this.native, newAbs));
  }
}

/**
 * `docker diff` of two trees (the vfs driver: `upperRoot` is a full copy of
 * `lowerRoot` that a container changed). Compares type, mode, owner,
 * device, xattrs and, for non-directories, size and mtime in nanoseconds;
 * contents are not read (as Docker: a write changes the mtime).
 */
export async function treeChanges(lowerRoot: string, upperRoot: string): Promise<Change[]> {
  const w = new Walker();
  /** Compares the directory `rel` (old: undefined when the old path is not a directory); returns how many changes it added. */
  const dir = async (rel: string, oldIsDir: boolean): Promise<number> => {
    const before = w.out.length;
    const newNames = names(safeJoin(upperRoot, rel));
    const oldNames = oldIsDir ? names(safeJoin(lowerRoot, rel)) : [];
    const oldSet = new Set(oldNames);
    for (const name of newNames) {
      await w.tick();
      const child = childPath(rel, name);
      const newAbs = safeJoin(upperRoot, child);
      const oldAbs = safeJoin(lowerRoot, child);
      const n = lstat(newAbs)!;
      const o = oldSet.has(name) ? lstat(oldAbs) : undefined;
      if (o === undefined) {
        w.push("A", child);
        if (isDir(n)) await w.added(upperRoot, child);
        continue;
      }
      const changed = w.differs(oldAbs, o, newAbs, n);
      if (isDir(n)) {
        const below = await dir(child, isDir(o));
        if (changed || below > 0) w.push("C", child);
      } else if (changed) {
        w.push("C", child);
      }
    }
    const newSet = new Set(newNames);
    for (const name of oldNames) if (!newSet.has(name)) w.push("D", childPath(rel, name));
    return w.out.length - before;
  };
  try {
    await dir("", true);
  } catch (e) {
    throw wrap(e, "IO", `changes of ${upperRoot} against ${lowerRoot}`);
  }
  return sortChanges(w.out);
}

/** A path of the merged lower layers: its top-most stat, and for a directory the layer directories merged into it, top first. */
interface LowerEntry {
  abs: string;
  st: BigIntStats;
  layers: string[];
}

/**
 * `docker diff` of an overlay container: walks `upperDir` and looks paths up
 * in the merged view of `lowerDirs` (top first, which may hold overlay
 * whiteouts and opaque directories of their own). See the rules above.
 */
export async function overlayChanges(upperDir: string, lowerDirs: string[]): Promise<Change[]> {
  const w = new Walker();
  const native = w.native;
  const opaque = (abs: string) => native.lgetxattr(abs, OVERLAY_OPAQUE_XATTR)?.toString() === "y";

  /** `name` in the merged lower directory made of `layers`, as overlayfs would show it. */
  const lowerChild = (layers: string[], name: string): LowerEntry | undefined => {
    let found: LowerEntry | undefined;
    for (const layer of layers) {
      const abs = safeJoin(layer, name);
      const st = lstat(abs);
      if (st === undefined) continue;
      if (whiteout(st)) break;
      if (found === undefined) found = { abs, st, layers: [] };
      else if (!isDir(st)) break;
      if (!isDir(found.st)) break;
      found.layers.push(abs);
      if (opaque(abs)) break;
    }
    return found;
  };
  const lowerNames = (layers: string[]): Set<string> => {
    const all = new Set<string>();
    for (const layer of layers) for (const n of fs.readdirSync(layer)) all.add(n);
    return all;
  };
  const refuseRedirects = (abs: string, rel: string) => {
    for (const name of native.llistxattr(abs))
      if (name === "trusted.overlay.redirect" || name === "trusted.overlay.metacopy")
        throw new StrataError("UNSUPPORTED", `overlay changes: /${rel} has ${name}: mounts with redirect_dir or metacopy are not supported`);
  };

  /** The children of upper directory `rel`; `lower`: the merged lower directory there; `hidden`: lower content there is not merged. Returns how many changes it added. */
  const dir = async (rel: string, lower: string[], hidden: boolean): Promise<number> => {
    const before = w.out.length;
    const upperAbs = safeJoin(upperDir, rel);
    const present = new Set<string>();
    for (const name of names(upperAbs)) {
      await w.tick();
      const child = childPath(rel, name);
      const abs = safeJoin(upperAbs, name);
      const st = lstat(abs)!;
      const low = lower.length > 0 ? lowerChild(lower, name) : undefined;
      if (whiteout(st)) {
        if (low !== undefined && !hidden) w.push("D", child);
        continue;
      }
      present.add(name);
      refuseRedirects(abs, child);
      if (low === undefined) {
        w.push("A", child);
        if (isDir(st)) await w.added(upperDir, child);
      } else if (isDir(st) && isDir(low.st)) {
        const isOpaque = opaque(abs);
        const below = await dir(child, low.layers, hidden || isOpaque);
        if (isOpaque || below > 0 || w.differs(low.abs, low.st, abs, st)) w.push("C", child);
      } else {
        w.push("C", child);
        if (isDir(st)) await w.added(upperDir, child);
      }
    }
    if (hidden) {
      for (const name of lowerNames(lower)) {
        if (present.has(name)) continue;
        if (lowerChild(lower, name) !== undefined) w.push("D", childPath(rel, name));
      }
    }
    return w.out.length - before;
  };
  try {
    await dir("", lowerDirs, opaque(upperDir));
  } catch (e) {
    throw wrap(e, "IO", `overlay changes of ${upperDir}`);
  }
  return sortChanges(w.out);
}

type Planned = { name: string; abs?: string; dir?: boolean };

/**
 * The OCI layer tar of a set of changes: A and C paths taken from
 * `upperRoot` (a directory that is A with its whole subtree), D paths as
 * `.wh.<name>` markers, and `.wh..wh..opq` in every directory of the set that
 * is opaque on overlay. Deterministic: entries in tree order, headers
 * normalised as packDirectory's, xattrs as PAX records (overlay's own
 * excepted), hardlinks within the set kept as links; whiteout markers are
 * empty 0644 root:root files with mtime 0. An overlay whiteout (0/0
 * character device) is never written as a device, and whiteouts below an
 * opaque marker are left out (they would hide nothing).
 */
export function writeChangeset(changes: readonly Change[], upperRoot: string): Readable {
  const writer = new LayerWriter();
  const native = nativeFs();

  const plan = async (): Promise<Planned[]> => {
    const planned = new Map<string, Planned>();
    const add = (p: Planned) => {
      if (!planned.has(p.name)) planned.set(p.name, p);
    };
    const subtree = async (rel: string): Promise<void> => {
      for (const d of fs.readdirSync(safeJoin(upperRoot, rel), { withFileTypes: true })) {
        const child = childPath(rel, d.name);
        add({ name: child, abs: safeJoin(upperRoot, child), dir: d.isDirectory() });
        if (d.isDirectory()) await subtree(child);
      }
    };
    for (const c of changes) {
      const parts = entryComponents(c.path);
      if (parts.length === 0) throw new StrataError("INVALID_ARGUMENT", `changeset: "${c.path}" is the root`);
      const rel = parts.join("/");
      if (c.kind === "D") {
        add({ name: [...parts.slice(0, -1), whiteoutName(parts[parts.length - 1])].join("/") });
        continue;
      }
      const abs = safeJoin(upperRoot, rel);
      const st = fs.lstatSync(abs, { throwIfNoEntry: false });
      if (st === undefined) throw new StrataError("NOT_FOUND", `changeset: ${c.kind} ${c.path} is not in ${upperRoot}`);
      add({ name: rel, abs, dir: st.isDirectory() });
      if (st.isDirectory() && c.kind === "A") await subtree(rel);
    }
    // Opaque markers for opaque directories of the set; below one, whiteouts
    // hide nothing (and an overlay lowerdir would list them), so they go.
    const opaqueDirs: string[] = [];
    for (const p of [...planned.values()]) {
      if (p.abs === undefined || !p.dir) continue;
      if (native.lgetxattr(p.abs, OVERLAY_OPAQUE_XATTR)?.toString() !== "y") continue;
      add({ name: `${p.name}/${OPAQUE_MARKER}` });
      opaqueDirs.push(p.name + "/");
    }
    const redundant = (p: Planned) => p.abs === undefined && !p.name.endsWith(OPAQUE_MARKER) && opaqueDirs.some((d) => p.name.startsWith(d));
    return [...planned.values()].filter((p) => !redundant(p)).sort((a, b) => comparePaths(a.name, b.name));
  };

  (async () => {
    let n = 0;
    for (const p of await plan()) {
      if (++n % YIELD_EVERY === 0) await new Promise<void>((r) => setImmediate(r));
      if (p.abs === undefined) {
        await writer.addMarker(p.name);
        continue;
      }
      const st = fs.lstatSync(p.abs);
      if (isOverlayWhiteout(st)) continue;
      await writer.add(p.name, p.abs, st, st.isSocket() ? undefined : contentXattrs(native, p.abs));
    }
    writer.finalize();
  })().catch((e) => writer.fail(e, `changeset of ${upperRoot}`));
  return writer.stream;
}
