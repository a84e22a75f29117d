import type { Readable } from "node:stream";
import type { TarEntrySink } from "../archive/tar.js";
import { StrataError, wrap } from "../errors/index.js";
import type { Digest } from "../digest/index.js";
import type { Layer } from "../image/index.js";
import { parseWhiteout } from "../archive/whiteout.js";

/**
 * A userspace, read-only union view of a layer stack, read straight from the
 * layer blobs: nothing is unpacked. The first access streams every layer's
 * tar once and keeps only its headers (plus a sha256 per regular file, so
 * that later reads are verified); file contents are streamed out of the
 * layer again when read.
 *
 * The merge follows what a per-layer extraction mounted with overlayfs shows
 * (Docker's overlay2): upper layers shadow lower ones, `.wh.x` deletes the
 * lower `x` and all below it, `.wh..wh..opq` hides a directory's lower
 * contents but not the same layer's, a non-directory replaces a lower
 * directory's whole subtree, and a directory missing from a layer's tar but
 * needed by one of its entries is made there as 0755 root:root.
 */

/** What a union view needs of a layer. */
export type UnionLayer = Pick<Layer, "digest" | "diffChunks">;

export type EntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/** One path of the merged tree, with lstat semantics. */
export interface UnionEntry {
  /** normalised absolute path: as asked for (stat) or as found (walk) */
  path: string;
  type: EntryType;
  /** permission bits (0o7777) */
  mode: number;
  uid: number;
  gid: number;
  /** content bytes for files and hardlinks, target length for symlinks, otherwise 0 */
  size: number;
  mtime: Date;
  /** a symlink's target as written; a hardlink's target as an absolute path in its layer */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** index (bottom first) of the layer this entry comes from */
  layer: number;
  /** a directory with no header of its own, made for the entries below it */
  implicit: boolean;
}

const FILE = 0;
const DIR = 1;
const SYMLINK = 2;
const HARDLINK = 3;
const CHAR = 4;
const BLOCK = 5;
const FIFO = 6;
const TYPE_NAMES: readonly EntryType[] = ["file", "dir", "symlink", "hardlink", "char", "block", "fifo"];
const TAR_TYPES: Readonly<Record<string, number>> = {
  file: FILE,
  "contiguous-file": FILE,
  directory: DIR,
  symlink: SYMLINK,
  link: HARDLINK,
  "character-device": CHAR,
  "block-device": BLOCK,
  fifo: FIFO,
};

/** As Linux's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;
/** Layers read at once while indexing (decompression runs on libuv's threads). */
const INDEX_CONCURRENCY = 3;
const MINOR_BITS = 2 ** 20;

/**
 * One path of a layer or of the merged tree. An image can hold hundreds of
 * thousands, so this is a handful of small fields; `data` depends on the
 * type: a directory's children, a file's slot in the digest arena, a
 * hardlink's source file, a device's major/minor.
 */
class Node {
  constructor(
    /** type << 12 | permission bits */
    public bits: number,
    public uid: number,
    public gid: number,
    public size: number,
    /** seconds */
    public mtime: number,
    public layer: number,
    /** the header's position in its layer tar; -1 for an implicit directory */
    public ordinal: number,
    public link: string | undefined,
    public data: Map<string, Node> | Node | number | undefined,
  ) {}

  get type(): number {
    return this.bits >>> 12;
  }

  get children(): Map<string, Node> {
    return this.data as Map<string, Node>;
  }
}

function implicitDir(layer: number): Node {
  return new Node((DIR << 12) | 0o755, 0, 0, 0, 0, layer, -1, undefined, new Map());
}

/** A directory shadowing another takes its attributes, keeping the merged children. */
function copyDirAttrs(to: Node, from: Node): void {
  to.bits = from.bits;
  to.uid = from.uid;
  to.gid = from.gid;
  to.size = from.size;
  to.mtime = from.mtime;
  to.layer = from.layer;
  to.ordinal = from.ordinal;
}

/**
 * A hardlink shares its source's inode: same content, permissions, owner
 * and times. The link header's own mode, owner and mtime are applied to that
 * inode, as layer extraction does (Docker's rule: the last header naming the
 * inode wins), so the source and every other link to it show them too.
 */
function linkTo(link: Node, source: Node): void {
  link.data = source;
  source.bits = (source.bits & ~0o7777) | (link.bits & 0o7777);
  source.uid = link.uid;
  source.gid = link.gid;
  source.mtime = link.mtime;
}

/** The node holding a path's metadata: a resolved hardlink's shared inode, else the node itself. */
function inodeOf(n: Node): Node {
  return n.type === HARDLINK && n.data instanceof Node ? n.data : n;
}

/** The sha256 of every regular file, 32 bytes each in one buffer rather than a string per file. */
class DigestArena {
  private buf = Buffer.alloc(32 * 1024);
  private count = 0;

  add(digest: Buffer): number {
    if ((this.count + 1) * 32 > this.buf.length) {
      const bigger = Buffer.alloc(this.buf.length * 2);
      this.buf.copy(bigger);
      this.buf = bigger;
    }
    digest.copy(this.buf, this.count * 32);
    return this.count++;
  }

  get(slot: number): Digest {
    return `sha256:${this.buf.toString("hex", slot * 32, slot * 32 + 32)}` as Digest;
  }
}

/**
 * Splits a path into components: `./a`, `a/`, `/a` and `a//b/.` are all
 * fine, `..` is refused (a view path or a tar name never climbs).
 */
function components(path: string, refuse: () => StrataError): string[] {
  const out: string[] = [];
  for (const c of path.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") throw refuse();
    out.push(c);
  }
  return out;
}

function viewPath(path: string): { comps: string[]; shown: string } {
  const comps = components(path, () => new StrataError("INVALID_ARGUMENT", `${path}: ".." is not allowed in a path`));
  return { comps, shown: "/" + comps.join("/") };
}

function notFound(shown: string, why = "no such file or directory"): StrataError {
  return new StrataError("NOT_FOUND", `${shown}: ${why}`);
}

/**
 * Walks `comps` from `root` like the kernel resolves a path inside a chroot:
 * symlinks in the middle are followed (the last one only if `followLast`),
 * an absolute target restarts at the root and `..` never climbs above it.
 */
function resolvePath(root: Node, comps: readonly string[], followLast: boolean, shown: string): Node {
  const stack: Node[] = [root];
  const todo = comps.slice().reverse();
  let links = 0;
  while (todo.length) {
    const c = todo.pop()!;
    if (c === "" || c === ".") continue;
    if (c === "..") {
      if (stack.length > 1) stack.pop();
      continue;
    }
    const dir = stack[stack.length - 1];
    if (dir.type !== DIR) throw notFound(shown, "not a directory");
    const child = dir.children.get(c);
    if (!child) throw notFound(shown);
    if (child.type === SYMLINK && (todo.length > 0 || followLast)) {
      if (++links > MAX_SYMLINKS) throw new StrataError("INVALID_ARGUMENT", `${shown}: too many levels of symbolic links`);
      const target = child.link ?? "";
      if (target === "") throw notFound(shown);
      if (target.startsWith("/")) stack.length = 1;
      const parts = target.split("/");
      for (let i = parts.length - 1; i >= 0; i--) todo.push(parts[i]);
      continue;
    }
    stack.push(child);
  }
  return stack[stack.length - 1];
}

/** One layer's own tree, before it is laid over the layers below. */
interface LayerTree {
  root: Node;
  /** names whited out in a directory (they delete lower paths only) */
  whiteouts: Map<Node, string[]>;
  opaque: Set<Node>;
  /** hardlinks whose target is not earlier in the same tar: resolved against the layers below */
  lowerLinks: { node: Node; target: string[] }[];
}

function invalid(layer: UnionLayer, msg: string): StrataError {
  return new StrataError("INVALID_ARCHIVE", `layer ${layer.digest}: ${msg}`);
}

async function indexLayer(layer: UnionLayer, li: number, digests: DigestArena, stopped: () => boolean): Promise<LayerTree> {
  const [{ readTar }, { createHash }] = await Promise.all([import("../archive/tar.js"), import("node:crypto")]);
  const tree: LayerTree = { root: implicitDir(li), whiteouts: new Map(), opaque: new Set(), lowerLinks: [] };
  let ordinal = -1;
  try {
    await readTar(await layer.diffChunks(), (h): TarEntrySink | undefined => {
      ordinal++;
      if (stopped()) throw new StrataError("IO", "indexing stopped");
      const type = h.type === undefined ? undefined : TAR_TYPES[h.type];
      if (type === undefined) throw new StrataError("UNSUPPORTED", `layer ${layer.digest}: ${h.name}: unsupported tar entry type (typeflag ${JSON.stringify(h.typeflag)})`);
      const comps = components(h.name, () => invalid(layer, `${h.name}: ".." in an entry name`));
      const node = new Node((type << 12) | (h.mode & 0o7777), h.uid, h.gid, 0, Math.floor(h.mtime), li, ordinal, undefined, undefined);

      if (comps.length === 0) {
        if (type !== DIR) throw invalid(layer, `the root entry "${h.name}" is not a directory`);
        copyDirAttrs(tree.root, node);
        return undefined;
      }
      let parent = tree.root;
      for (let i = 0; i < comps.length - 1; i++) {
        if (parseWhiteout(comps[i]).kind !== "none") throw invalid(layer, `${h.name}: a whiteout used as a directory`);
        let next = parent.children.get(comps[i]);
        if (!next) parent.children.set(comps[i], (next = implicitDir(li)));
        else if (next.type !== DIR) throw invalid(layer, `${h.name}: ${comps.slice(0, i + 1).join("/")} is not a directory in the same layer`);
        parent = next;
      }
      const base = comps[comps.length - 1];
      const wh = parseWhiteout(base);
      if (wh.kind === "opaque") {
        tree.opaque.add(parent);
        return undefined;
      }
      if (wh.kind === "whiteout") {
        const names = tree.whiteouts.get(parent);
        if (names) names.push(wh.target);
        else tree.whiteouts.set(parent, [wh.target]);
        return undefined;
      }

      const existing = parent.children.get(base);
      switch (type) {
        case DIR:
          if (existing?.type === DIR) {
            // A repeated directory header updates it; what is below stays.
            copyDirAttrs(existing, node);
            return undefined;
          }
          node.data = new Map();
          break;
        case FILE: {
          const hash = createHash("sha256");
          return {
            data: (piece) => {
              hash.update(piece);
            },
            end: () => {
              node.size = h.size;
              node.data = digests.add(hash.digest());
              parent.children.set(base, node);
            },
          };
        }
        case SYMLINK:
          node.link = h.linkname;
          node.size = Buffer.byteLength(node.link);
          break;
        case HARDLINK: {
          const target = components(h.linkname, () => invalid(layer, `${h.name}: ".." in a hardlink target`));
          if (target.length === 0) throw invalid(layer, `${h.name}: empty hardlink target`);
          node.link = "/" + target.join("/");
          const found = lookupNoFollow(tree.root, target);
          // A link to itself changes nothing (extraction leaves the path as it is).
          if (found !== undefined && found === existing) return undefined;
          if (found?.type === FILE) linkTo(node, found);
          else if (found?.type === HARDLINK && found.data instanceof Node) linkTo(node, found.data);
          else if (found?.type === HARDLINK) tree.lowerLinks.push({ node, target: components(found.link!, () => invalid(layer, "bad link")) });
          else if (found) throw invalid(layer, `${h.name}: hardlink to a ${TYPE_NAMES[found.type]}`);
          else tree.lowerLinks.push({ node, target });
          break;
        }
        case CHAR:
        case BLOCK:
          node.data = h.devmajor * MINOR_BITS + h.devminor;
          break;
      }
      parent.children.set(base, node);
      return undefined;
    });
    return tree;
  } catch (e) {
    // A system call failing is I/O; anything else the tar parser throws is a bad archive.
    throw wrap(e, typeof (e as NodeJS.ErrnoException).syscall === "string" ? "IO" : "INVALID_ARCHIVE", `layer ${layer.digest}`);
  }
}

/** A path in a tree as it is, no symlink followed. */
function lookupNoFollow(root: Node, comps: readonly string[]): Node | undefined {
  let n: Node | undefined = root;
  for (const c of comps) {
    if (n.type !== DIR) return undefined;
    n = n.children.get(c);
    if (!n) return undefined;
  }
  return n;
}

/** Lays one layer's tree over the merged tree of the layers below it. */
function applyLayer(merged: Node, tree: LayerTree): void {
  for (const { node, target } of tree.lowerLinks) {
    let found: Node | undefined;
    try {
      found = resolvePath(merged, target, false, "");
    } catch {
      found = undefined;
    }
    if (found?.type === FILE) linkTo(node, found);
    else if (found?.type === HARDLINK && found.data instanceof Node) linkTo(node, found.data);
    // Otherwise the link stays without content: stat works, reading it fails.
  }
  const applyDir = (lower: Node, upper: Node, isRoot: boolean): void => {
    if (!isRoot || upper.ordinal >= 0) copyDirAttrs(lower, upper);
    const below = lower.children;
    if (tree.opaque.has(upper)) below.clear();
    else for (const name of tree.whiteouts.get(upper) ?? []) below.delete(name);
    for (const [name, child] of upper.children) {
      const under = below.get(name);
      if (under?.type === DIR && child.type === DIR) applyDir(under, child, false);
      else below.set(name, child);
    }
  };
  applyDir(merged, tree.root, true);
}

export class UnionView {
  private readonly layers: readonly UnionLayer[];
  private readonly digests = new DigestArena();
  private tree?: Promise<Node>;

  /** `layers` bottom first. Does no I/O: the layers are indexed on first use. */
  constructor(layers: readonly UnionLayer[]) {
    this.layers = [...layers];
  }

  /** The merged tree, built once (a failed build is retried on the next call). */
  private index(): Promise<Node> {
    this.tree ??= this.build().catch((e) => {
      this.tree = undefined;
      throw e;
    });
    return this.tree;
  }

  private async build(): Promise<Node> {
    const trees: LayerTree[] = new Array(this.layers.length);
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (!failed && next < this.layers.length) {
        const i = next++;
        try {
          trees[i] = await indexLayer(this.layers[i], i, this.digests, () => failed);
        } catch (e) {
          failed = true;
          throw e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(INDEX_CONCURRENCY, this.layers.length) }, worker));
    const merged = implicitDir(0);
    for (const t of trees) applyLayer(merged, t);
    return merged;
  }

  private entry(path: string, n: Node): UnionEntry {
    const inode = inodeOf(n);
    const e: UnionEntry = {
      path,
      type: TYPE_NAMES[n.type],
      mode: inode.bits & 0o7777,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.size,
      mtime: new Date(inode.mtime * 1000),
      layer: n.layer,
      implicit: n.ordinal < 0,
    };
    if (n.link !== undefined) e.linkname = n.link;
    if (n.type === CHAR || n.type === BLOCK) {
      const dev = n.data as number;
      e.devmajor = Math.floor(dev / MINOR_BITS);
      e.devminor = dev % MINOR_BITS;
    }
    return e;
  }

  /** lstat: symlinks inside the path are followed, a final one is not. NOT_FOUND when absent. */
  async stat(path: string): Promise<UnionEntry> {
    const { comps, shown } = viewPath(path);
    return this.entry(shown, resolvePath(await this.index(), comps, false, shown));
  }

  /** The names in a directory (symlinks followed), sorted. */
  async readdir(path: string): Promise<string[]> {
    const { comps, shown } = viewPath(path);
    const dir = resolvePath(await this.index(), comps, true, shown);
    if (dir.type !== DIR) throw new StrataError("INVALID_ARGUMENT", `${shown}: not a directory`);
    return [...dir.children.keys()].sort();
  }

  /**
   * A file's content (symlinks followed inside the view; a hardlink gives
   * its target's), streamed out of its layer and verified against the
   * sha256 recorded when the layer was indexed.
   */
  async readFile(path: string): Promise<Readable> {
    const { comps, shown } = viewPath(path);
    const node = resolvePath(await this.index(), comps, true, shown);
    if (node.type === DIR) throw new StrataError("INVALID_ARGUMENT", `${shown}: is a directory`);
    let source = node;
    if (node.type === HARDLINK) {
      if (!(node.data instanceof Node)) throw new StrataError("INVALID_ARCHIVE", `${shown}: hardlink target ${node.link} is in no layer`);
      source = node.data;
    }
    if (source.type !== FILE) throw new StrataError("UNSUPPORTED", `${shown}: not a regular file (${TYPE_NAMES[source.type]})`);
    return this.content(source, shown);
  }

  /** The data of `file`, read again from its layer (the entry counted as indexing counted it) and verified against the digest indexing took. */
  private async content(file: Node, shown: string): Promise<Readable> {
    const layer = this.layers[file.layer];
    const [{ readTar }, { VerifyStream }, { PassThrough }] = await Promise.all([import("../archive/tar.js"), import("../digest/stream.js"), import("node:stream")]);
    const body = new PassThrough({ highWaterMark: 1 << 20 });
    const verify = new VerifyStream({ digest: this.digests.get(file.data as number), size: file.size }, `${shown} in layer ${layer.digest}`);
    body.pipe(verify);
    verify.on("close", () => body.destroy());
    /** thrown to stop reading once the entry is out (or its reader gone) */
    const stop = new Error("stop");
    const room = () => new Promise<void>((resolve) => {
      const go = () => {
        body.off("drain", go);
        body.off("close", go);
        resolve();
      };
      body.on("drain", go);
      body.on("close", go);
    });
    let found: () => void = () => {};
    const reached = new Promise<void>((resolve) => (found = resolve));
    let ordinal = -1;
    const reading = readTar(await layer.diffChunks(), (h) => {
      if (++ordinal < file.ordinal) return undefined;
      if (h.size !== file.size) throw new StrataError("CORRUPT", `${shown}: layer ${layer.digest} entry ${file.ordinal} changed since it was indexed`);
      found();
      return {
        data: async (piece) => {
          if (body.destroyed) throw stop;
          if (!body.write(Buffer.from(piece))) await room(); // a copy: the piece is the reader's
        },
        end: () => {
          body.end();
          throw stop;
        },
      };
    }).then(
      () => {
        throw new StrataError("CORRUPT", `${shown}: layer ${layer.digest} ends before entry ${file.ordinal}`);
      },
      (e) => {
        if (e !== stop) throw wrap(e, "CORRUPT", `read ${shown} from layer ${layer.digest}`);
      },
    );
    reading.catch((e) => verify.destroy(e));
    // Errors before the entry is reached are the caller's; after, the stream's.
    await Promise.race([reached, reading]);
    return verify;
  }

  /**
   * Every entry below `path` (default the root; symlinks to it followed),
   * depth-first with names sorted, not following symlinks. Returning false
   * for a directory skips what is below it.
   */
  async walk(fn: (entry: UnionEntry) => void | boolean | Promise<void | boolean>, path = "/"): Promise<void> {
    const { comps, shown } = viewPath(path);
    const start = resolvePath(await this.index(), comps, true, shown);
    if (start.type !== DIR) throw new StrataError("INVALID_ARGUMENT", `${shown}: not a directory`);
    const visit = async (dir: Node, prefix: string): Promise<void> => {
      for (const name of [...dir.children.keys()].sort()) {
        const child = dir.children.get(name)!;
        const p = prefix === "/" ? `/${name}` : `${prefix}/${name}`;
        const more = await fn(this.entry(p, child));
        if (child.type === DIR && more !== false) await visit(child, p);
      }
    };
    await visit(start, shown);
  }
}
