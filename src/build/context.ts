import { createHash } from "node:crypto";
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync, type Stats } from "node:fs";
import { join } from "node:path";
import { StrataError } from "../errors/index.js";

/** One file a COPY/ADD reads: its path relative to the source root and its stat. */
export interface SourceEntry {
  rel: string;
  abs: string;
  st: Stats;
}

/**
 * A tree COPY/ADD reads from: the build context (with .dockerignore applied)
 * or another stage's root filesystem. Paths are relative to `root` and can
 * never leave it.
 */
export class SourceTree {
  private readonly hashes = new Map<string, string>();

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

  private lstat(rel: string): Stats | undefined {
    return lstatSync(rel ? join(this.root, rel) : this.root, { throwIfNoEntry: false });
  }

  private children(rel: string): string[] {
    return readdirSync(rel ? join(this.root, rel) : this.root)
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

  /** `rel` and, for a directory, everything below it that is not excluded; the top is followed if it is a symlink. */
  walk(rel: string): SourceEntry[] {
    const out: SourceEntry[] = [];
    const top = this.lstat(rel)!;
    const st = top.isSymbolicLink() ? (statSync(join(this.root, rel), { throwIfNoEntry: false }) ?? top) : top;
    out.push({ rel, abs: rel ? join(this.root, rel) : this.root, st });
    if (st.isDirectory()) {
      const visit = (dir: string) => {
        for (const c of this.children(dir)) {
          if (this.ignored(c)) {
            // An excluded directory may still hold re-included paths (`!` patterns).
            const cst = this.lstat(c)!;
            if (cst.isDirectory()) visit(c);
            continue;
          }
          const cst = this.lstat(c)!;
          out.push({ rel: c, abs: join(this.root, c), st: cst });
          if (cst.isDirectory()) visit(c);
        }
      };
      visit(rel);
    }
    return out;
  }

  /** What the cache keys on: content, not mtime (plus type, mode and link target). */
  digest(e: SourceEntry): string {
    let h = this.hashes.get(e.rel);
    if (h === undefined) {
      const hash = createHash("sha256").update(`${e.st.mode.toString(8)}:`);
      if (e.st.isSymbolicLink()) hash.update(`link:${readlinkSync(e.abs)}`);
      else if (e.st.isFile()) hashFile(hash, e.abs, e.st.size);
      h = hash.digest("hex");
      this.hashes.set(e.rel, h);
    }
    return h;
  }
}

const CHUNK = 1 << 20;
let chunk: Buffer | undefined;

/** Small files in one read; big ones through one reused 1 MiB buffer, so memory stays flat. */
function hashFile(hash: ReturnType<typeof createHash>, path: string, size: number): void {
  if (size <= CHUNK) {
    hash.update(readFileSync(path));
    return;
  }
  chunk ??= Buffer.allocUnsafe(CHUNK);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, chunk, 0, CHUNK, null)) > 0; ) hash.update(chunk.subarray(0, n));
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
