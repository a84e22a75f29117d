import { chmodSync, lchownSync, lstatSync, lutimesSync, mkdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { RootScope, safeJoin } from "../archive/safejoin.js";
import { nativeFs } from "../native/index.js";

const OVERLAY_XATTRS = "trusted.overlay.";

/**
 * The root a COPY/ADD step writes, without mounting it: files go straight
 * into the step snapshot's own directory (overlay: its upper directory), and
 * paths resolve as overlayfs shows them, `upper` first, then `lower` (a
 * read-only view of the layers below; none for a vfs snapshot, a full copy).
 * A lower directory that something is written into is copied up first
 * (mode, owner, xattrs, times), as overlayfs does. Writers only create or
 * replace non-directories and never delete through it, so the upper
 * directory holds no whiteouts and stays a valid overlay upper.
 */
export class StepRoot extends RootScope {
  constructor(
    upper: string,
    private readonly lower?: string,
  ) {
    super(upper);
  }

  private lowerStat(rel: string): Stats | undefined {
    return this.lower === undefined ? undefined : lstatSync(safeJoin(this.lower, rel), { throwIfNoEntry: false });
  }

  protected override lstat(rel: string, create: boolean): Stats | undefined {
    const st = lstatSync(this.abs(rel), { throwIfNoEntry: false });
    if (st !== undefined) return st;
    const low = this.lowerStat(rel);
    if (!create || !low?.isDirectory()) return low;
    this.copyUp(rel, low);
    return lstatSync(this.abs(rel));
  }

  protected override readlink(rel: string): string {
    return readlinkSync(this.inUpper(rel) ? this.abs(rel) : safeJoin(this.lower!, rel));
  }

  /** What is at a real relative path (from resolve or dir) in the merged tree. */
  stat(rel: string): Stats | undefined {
    return this.lstat(rel, false);
  }

  inUpper(rel: string): boolean {
    return lstatSync(this.abs(rel), { throwIfNoEntry: false }) !== undefined;
  }

  /** A lower directory made in the upper one with its attributes (its contents stay below); an upper one is left as it is. */
  copyUp(rel: string, low = this.lowerStat(rel)): void {
    if (low === undefined || this.inUpper(rel)) return;
    const abs = this.abs(rel);
    mkdirSync(abs);
    lchownSync(abs, low.uid, low.gid);
    chmodSync(abs, low.mode & 0o7777);
    const native = nativeFs();
    const from = safeJoin(this.lower!, rel);
    for (const name of native.llistxattr(from)) {
      if (name.startsWith(OVERLAY_XATTRS)) continue;
      const v = native.lgetxattr(from, name);
      if (v !== null) native.lsetxattr(abs, name, v);
    }
    lutimesSync(abs, low.atime, low.mtime);
  }

  /** A file of the merged tree, symlinks followed inside it; undefined when missing or unreadable. */
  readFile(path: string): string | undefined {
    const rel = this.resolve(path);
    if (rel === undefined) return undefined;
    try {
      return readFileSync(this.inUpper(rel) ? this.abs(rel) : safeJoin(this.lower!, rel), "utf8");
    } catch {
      return undefined;
    }
  }

  isDir(path: string): boolean {
    try {
      const rel = this.resolve(path);
      return rel !== undefined && (this.stat(rel)?.isDirectory() ?? false);
    } catch {
      return false;
    }
  }
}
