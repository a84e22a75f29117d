import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import tarStream from "tar-stream";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { strata, ok, tempDir, makeTar, makeDockerArchive, have, sha256, BIN, type TarFile } from "./helpers.ts";
import { Engine } from "../src/engine/index.ts";
import { UnionView, type UnionEntry, type UnionLayer } from "../src/union/index.ts";
import { isStrataError } from "../src/errors/index.ts";
import type { Digest } from "../src/digest/index.ts";

setFlagsFromString("--expose-gc");
/** A full collection, for measuring what the index keeps. */
const gc = runInNewContext("gc") as () => void;

// ---- layer building -------------------------------------------------------

type EntryKind = "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";

/** A tar entry with every header field the union view records. */
type Ent = TarFile & { type?: EntryKind };

const layerTar = (entries: Ent[]) => makeTar(entries);

/** Loads one image of `layers` (bottom first) with the real CLI; returns the store and a union view of it. */
async function loadImage(t: { after: (fn: () => void) => void }, layers: Buffer[], tag = "u:1"): Promise<{ root: string; view: UnionView; dir: string }> {
  const dir = tempDir(t, "strata-union-");
  const root = join(dir, "root");
  const file = join(dir, "image.tar");
  writeFileSync(file, await makeDockerArchive([{ layers, tags: [tag] }]));
  ok(strata(root, ["load", "-i", file]), "load");
  const engine = new Engine({ root });
  t.after(() => engine.close());
  return { root, dir, view: engine.union(tag) };
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function text(view: UnionView, path: string): Promise<string> {
  return (await readAll(await view.readFile(path))).toString();
}

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isStrataError(e), `a StrataError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** The one-line error contract: exit 1, stdout empty, stderr exactly one `Error: ...` line. */
function fails(r: { code: number; stdout: string; stderr: string }, re: RegExp): void {
  assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^Error: [^\n]+\n$/);
  assert.match(r.stderr, re);
}

/** A layer held in memory, counting how often it is opened. */
function memLayer(tar: Buffer | (() => Buffer), digest = sha256(typeof tar === "function" ? tar() : tar)): UnionLayer & { opened: number } {
  const layer = {
    digest: digest as Digest,
    opened: 0,
    async diffChunks() {
      layer.opened++;
      return Readable.from([typeof tar === "function" ? tar() : tar]);
    },
  };
  return layer;
}

// ---- behaviour through the CLI and the API --------------------------------------

test("adds, overwrites and deletes across layers: fs ls, cat, tree and stat", async (t) => {
  const l0 = await makeTar([
    { name: "etc/", type: "directory" },
    { name: "etc/passwd", content: "root:x:0:0\n" },
    { name: "etc/hosts", content: "h0\n" },
    { name: "bin/", type: "directory" },
    { name: "bin/sh", content: "sh0" },
    { name: "usr/", type: "directory" },
    { name: "usr/lib/", type: "directory" },
    { name: "usr/lib/libc.so", content: "libc" },
  ]);
  const l1 = await makeTar([
    { name: "etc/", type: "directory" },
    { name: "etc/.wh.passwd" },
    { name: "etc/hosts", content: "h1\n" },
    { name: "etc/new", content: "n" },
    { name: "usr/lib/.wh.libc.so" },
  ]);
  const l2 = await makeTar([{ name: "bin/sh", content: "sh2!" }]);
  const { root, view } = await loadImage(t, [l0, l1, l2]);

  assert.equal(ok(strata(root, ["fs", "ls", "u:1", "/etc"])).stdout, "hosts\nnew\n");
  assert.equal(ok(strata(root, ["fs", "ls", "u:1"])).stdout, "bin\netc\nusr\n");
  assert.equal(ok(strata(root, ["fs", "ls", "u:1", "usr/lib/"])).stdout, "");
  assert.equal(ok(strata(root, ["fs", "cat", "u:1", "/etc/hosts"])).stdout, "h1\n");
  assert.equal(ok(strata(root, ["fs", "cat", "u:1", "./bin/sh"])).stdout, "sh2!");
  fails(strata(root, ["fs", "cat", "u:1", "/etc/passwd"]), /^Error: \/etc\/passwd: no such file or directory\n$/);
  fails(strata(root, ["fs", "cat", "u:1", "/usr/lib/libc.so"]), /no such file or directory/);
  assert.equal(
    ok(strata(root, ["fs", "ls", "-l", "u:1", "/etc"])).stdout,
    "-rw-r--r-- 0 0 3 1970-01-01 00:00 hosts\n-rw-r--r-- 0 0 1 1970-01-01 00:00 new\n",
  );
  assert.equal(ok(strata(root, ["fs", "ls", "-l", "u:1", "/etc/new"])).stdout, "-rw-r--r-- 0 0 1 1970-01-01 00:00 /etc/new\n");
  assert.equal(
    ok(strata(root, ["fs", "tree", "u:1"])).stdout,
    ["/", "├── bin", "│   └── sh", "├── etc", "│   ├── hosts", "│   └── new", "└── usr", "    └── lib", "", "4 directories, 3 files", ""].join("\n"),
  );
  assert.equal(ok(strata(root, ["fs", "tree", "u:1", "/etc"])).stdout, "/etc\n├── hosts\n└── new\n\n0 directories, 2 files\n");

  const hosts = await view.stat("/etc/hosts");
  assert.deepEqual({ ...hosts, mtime: hosts.mtime.getTime() }, { path: "/etc/hosts", type: "file", mode: 0o644, uid: 0, gid: 0, size: 3, mtime: 0, layer: 1, implicit: false });
  assert.equal((await view.stat("bin/sh/")).layer, 2);
  assert.equal((await view.stat("/etc")).layer, 1, "an upper directory header shadows the lower one");
  const lib = await view.stat("/usr/lib");
  assert.deepEqual([lib.layer, lib.implicit], [1, true], "the layer that whites out usr/lib/libc.so made usr/lib implicitly");
  assert.deepEqual(await view.readdir("/"), ["bin", "etc", "usr"]);
  await rejectsWith(view.stat("/etc/passwd"), "NOT_FOUND");
});

test("opaque directories hide the lower contents but keep the same layer's entries, wherever the marker sits", async (t) => {
  const l0 = await makeTar([
    { name: "d/", type: "directory" },
    { name: "d/a", content: "a0" },
    { name: "d/keep", content: "k0" },
    { name: "d/sub/", type: "directory" },
    { name: "d/sub/x", content: "x0" },
    { name: "other", content: "o" },
  ]);
  // The same layer's entries on both sides of the marker survive; d/sub is rebuilt from this layer alone.
  const l1 = await makeTar([
    { name: "d/", type: "directory" },
    { name: "d/b", content: "b1" },
    { name: "d/sub/y", content: "y1" },
    { name: "d/.wh..wh..opq" },
    { name: "d/c", content: "c1" },
  ]);
  const l2 = await makeTar([{ name: "d/a", content: "a2" }]);
  const { root, view } = await loadImage(t, [l0, l1, l2]);
  assert.equal(ok(strata(root, ["fs", "ls", "u:1", "/d"])).stdout, "a\nb\nc\nsub\n");
  assert.deepEqual(await view.readdir("/d/sub"), ["y"]);
  assert.equal(await text(view, "/d/a"), "a2");
  assert.equal(await text(view, "/d/b"), "b1");
  await rejectsWith(view.stat("/d/keep"), "NOT_FOUND");
  await rejectsWith(view.stat("/d/sub/x"), "NOT_FOUND");
  assert.equal(await text(view, "/other"), "o", "an opaque directory hides nothing outside it");

  // An opaque root hides every lower layer.
  const top = await makeTar([{ name: ".wh..wh..opq" }, { name: "only", content: "1" }]);
  const { view: v2 } = await loadImage(t, [l0, top], "u:2");
  assert.deepEqual(await v2.readdir("/"), ["only"]);
});

test("file → directory and directory → file replacements, then back", async (t) => {
  const l0 = await makeTar([
    { name: "x", content: "file x" },
    { name: "y/", type: "directory" },
    { name: "y/inner", content: "i" },
    { name: "y/deep/", type: "directory" },
    { name: "y/deep/z", content: "z" },
  ]);
  const l1 = await makeTar([
    { name: "x/", type: "directory" },
    { name: "x/child", content: "c" },
    { name: "y", content: "now a file" },
  ]);
  const l2 = await makeTar([
    { name: "y/", type: "directory" },
    { name: "y/new", content: "n" },
  ]);
  const { root, view } = await loadImage(t, [l0, l1, l2]);
  assert.equal((await view.stat("/x")).type, "dir");
  assert.deepEqual(await view.readdir("/x"), ["child"]);
  assert.deepEqual(await view.readdir("/y"), ["new"], "the old directory's subtree stays hidden under the file that replaced it");
  await rejectsWith(view.stat("/y/deep/z"), "NOT_FOUND");
  assert.equal(ok(strata(root, ["fs", "tree", "u:1"])).stdout, "/\n├── x\n│   └── child\n└── y\n    └── new\n\n2 directories, 2 files\n");

  const { view: v2 } = await loadImage(t, [l0, l1], "u:2");
  assert.equal(await text(v2, "/y"), "now a file");
  await rejectsWith(v2.readdir("/y"), "INVALID_ARGUMENT", /not a directory/);
  await rejectsWith(v2.stat("/y/inner"), "NOT_FOUND", /not a directory/);
});

test("a deleted directory recreated later (or in the same layer) shows only its new contents", async (t) => {
  const l0 = await makeTar([
    { name: "d/", type: "directory" },
    { name: "d/old", content: "o" },
    { name: "d/sub/", type: "directory" },
    { name: "d/sub/f", content: "f" },
    { name: "e/", type: "directory" },
    { name: "e/old", content: "o" },
  ]);
  const l1 = await makeTar([{ name: ".wh.d" }, { name: ".wh.e" }, { name: "e/", type: "directory" }, { name: "e/fresh", content: "fresh" }]);
  const l2 = await makeTar([{ name: "d/", type: "directory" }, { name: "d/new", content: "new" }]);
  const { root, view } = await loadImage(t, [l0, l1, l2]);
  assert.equal(ok(strata(root, ["fs", "ls", "u:1", "/d"])).stdout, "new\n");
  assert.deepEqual(await view.readdir("/e"), ["fresh"]);
  await rejectsWith(view.stat("/d/sub"), "NOT_FOUND");
  assert.equal((await view.stat("/d")).layer, 2);

  const { view: v2 } = await loadImage(t, [l0, l1], "u:2");
  assert.deepEqual(await v2.readdir("/"), ["e"]);
});

test("symlinks resolve inside the view: relative, absolute, ..-escaping, through directories, loops refused", async (t) => {
  const l0 = await layerTar([
    { name: "etc/", type: "directory" },
    { name: "etc/real", content: "real content" },
    { name: "etc/link", type: "symlink", linkname: "real" },
    { name: "etc/up", type: "symlink", linkname: "../etc/real" },
    { name: "abs", type: "symlink", linkname: "/etc/real" },
    { name: "escape", type: "symlink", linkname: "../../../../../etc/real" },
    { name: "hostfile", type: "symlink", linkname: "../../../../../etc/hostname" },
    { name: "top", type: "symlink", linkname: "/../../.." },
    { name: "dirlink", type: "symlink", linkname: "etc" },
    { name: "chain", type: "symlink", linkname: "dirlink/link" },
    { name: "loop1", type: "symlink", linkname: "loop2" },
    { name: "loop2", type: "symlink", linkname: "/loop1" },
    { name: "dangling", type: "symlink", linkname: "/nope" },
  ]);
  const { root, view } = await loadImage(t, [l0]);
  for (const p of ["/etc/link", "/etc/up", "/abs", "/escape", "/dirlink/real", "/dirlink/link", "/chain", "/top/etc/real"]) assert.equal(await text(view, p), "real content", p);
  // The host's /etc/hostname exists; the image's does not: a climbing link stays inside the view.
  await rejectsWith(view.readFile("/hostfile"), "NOT_FOUND");
  await rejectsWith(view.readFile("/loop1"), "INVALID_ARGUMENT", /too many levels of symbolic links/);
  await rejectsWith(view.readFile("/dangling"), "NOT_FOUND");
  const st = await view.stat("/dirlink");
  assert.equal(st.type, "symlink", "stat does not follow a final symlink");
  assert.equal(st.linkname, "etc");
  assert.equal(st.size, 3, "a symlink's size is its target's length, as lstat says");
  assert.equal((await view.stat("/dirlink/real")).type, "file", "symlinks inside a path are followed");
  assert.deepEqual(await view.readdir("/dirlink"), ["link", "real", "up"]);
  assert.deepEqual(await view.readdir("/top"), await view.readdir("/"));

  assert.equal(ok(strata(root, ["fs", "cat", "u:1", "/escape"])).stdout, "real content");
  assert.equal(ok(strata(root, ["fs", "ls", "-l", "u:1", "/abs"])).stdout, "lrwxrwxrwx 0 0 9 1970-01-01 00:00 /abs -> /etc/real\n");
  assert.equal(ok(strata(root, ["fs", "ls", "u:1", "/dirlink"])).stdout, "link\nreal\nup\n", "ls lists through a symlink to a directory");
  assert.match(ok(strata(root, ["fs", "tree", "u:1"])).stdout, /├── dirlink -> etc\n/);
  fails(strata(root, ["fs", "cat", "u:1", "/loop1"]), /too many levels of symbolic links/);
});

test("hardlinks read their target's content, even once the target is whited out", async (t) => {
  const l0 = await layerTar([
    { name: "bin/", type: "directory" },
    { name: "bin/busybox", content: "BUSYBOX", mode: 0o755, uid: 7 },
    { name: "bin/sh", type: "link", linkname: "bin/busybox", mode: 0o755, uid: 7 },
    { name: "bin/ash", type: "link", linkname: "./bin/sh", mode: 0o755, uid: 7 },
  ]);
  const l1 = await layerTar([{ name: "bin/.wh.busybox" }]);
  const { root, view } = await loadImage(t, [l0, l1]);
  assert.equal(await text(view, "/bin/sh"), "BUSYBOX");
  assert.equal(await text(view, "/bin/ash"), "BUSYBOX", "a hardlink to a hardlink");
  await rejectsWith(view.stat("/bin/busybox"), "NOT_FOUND");
  const sh = await view.stat("/bin/sh");
  assert.deepEqual([sh.type, sh.linkname, sh.size, sh.mode, sh.uid, sh.layer], ["hardlink", "/bin/busybox", 7, 0o755, 7, 0]);
  assert.equal(ok(strata(root, ["fs", "cat", "u:1", "/bin/ash"])).stdout, "BUSYBOX");
  assert.equal(ok(strata(root, ["fs", "ls", "-l", "u:1", "/bin"])).stdout, "-rwxr-xr-x 7 0 7 1970-01-01 00:00 ash\n-rwxr-xr-x 7 0 7 1970-01-01 00:00 sh\n");

  // A hardlink to a lower layer's file, as containerd's applier (which applies a layer over its parent)
  // resolves it. `strata load` refuses such a layer (it extracts each layer alone), so this goes through the API.
  const lower = memLayer(await layerTar([{ name: "lib/", type: "directory" }, { name: "lib/l1", content: "lower" }]));
  const upper = memLayer(await layerTar([{ name: "lib/l2", type: "link", linkname: "lib/l1" }, { name: "lib/.wh.l1" }]));
  const v2 = new UnionView([lower, upper]);
  assert.equal(await text(v2, "/lib/l2"), "lower");
  assert.deepEqual(await v2.readdir("/lib"), ["l2"]);
  // A hardlink to nothing: listed, but reading it fails.
  const v3 = new UnionView([memLayer(await layerTar([{ name: "orphan", type: "link", linkname: "nowhere" }]))]);
  assert.equal((await v3.stat("/orphan")).type, "hardlink");
  await rejectsWith(v3.readFile("/orphan"), "INVALID_ARCHIVE", /hardlink target \/nowhere/);
});

/** A path's metadata as lstat shows it, in the union view's terms. */
function statRec(abs: string): { mode: number; uid: number; gid: number; size: number; mtime: number } {
  const st = lstatSync(abs);
  return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size, mtime: Math.floor(st.mtimeMs / 1000) };
}

test("a hardlink header's mode, owner and mtime apply to the shared inode: the union view shows what an overlay mount shows", { skip: process.getuid?.() !== 0 ? "needs root for overlay mounts" : false }, async (t) => {
  const l0 = await layerTar([
    { name: "bin/", type: "directory" },
    { name: "bin/busybox", content: "BUSYBOX", mode: 0o755, uid: 7, gid: 8, mtime: 1000 },
    // Each link header differs from its target; the last one naming the inode wins, for every path to it.
    { name: "bin/sh", type: "link", linkname: "bin/busybox", mode: 0o700, uid: 1, gid: 2, mtime: 2000 },
    { name: "bin/ash", type: "link", linkname: "bin/sh", mode: 0o4750, uid: 3, gid: 4, mtime: 3000 },
    { name: "etc/", type: "directory" },
    { name: "etc/conf", content: "c", mode: 0o600, mtime: 500 },
    { name: "etc/conf.link", type: "link", linkname: "etc/conf", mode: 0o644, uid: 5, gid: 6, mtime: 600 },
  ]);
  // A later layer deletes one path of each inode: the other paths keep the link header's metadata.
  const l1 = await layerTar([{ name: "bin/.wh.busybox" }, { name: "etc/.wh.conf.link" }]);
  const { root, view } = await loadImage(t, [l0, l1]);
  const id = ok(strata(root, ["create", "u:1"])).stdout.trim();
  t.after(() => {
    strata(root, ["umount", id]);
    strata(root, ["rm", id]);
  });
  const merged = ok(strata(root, ["mount", id])).stdout.trim();
  assert.match(readFileSync("/proc/mounts", "utf8"), new RegExp(` ${merged} overlay `), "the container root is an overlay mount");
  try {
    for (const p of ["/bin/sh", "/bin/ash", "/etc/conf"]) {
      const e = await view.stat(p);
      assert.deepEqual({ mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime.getTime() / 1000 }, statRec(join(merged, p)), `${p}: union view vs overlay mount`);
    }
    assert.deepEqual(statRec(join(merged, "bin/sh")), { mode: 0o4750, uid: 3, gid: 4, size: 7, mtime: 3000 }, "the last link header's metadata");
    assert.deepEqual(statRec(join(merged, "etc/conf")), { mode: 0o644, uid: 5, gid: 6, size: 1, mtime: 600 }, "the link's metadata on its target, the link itself deleted");
  } finally {
    ok(strata(root, ["umount", id]));
  }
});

test("entries whose parents are missing from the tar get implicit 0755 root:root parents", async (t) => {
  const l0 = await layerTar([
    { name: "a/b/c", content: "deep" },
    { name: "x/", type: "directory", mode: 0o700, uid: 5, gid: 6 },
    { name: "x/keep", content: "k" },
    { name: "p/", type: "directory", mode: 0o750, uid: 9 },
  ]);
  // x/y/z without x/: the layer's x is made 0755 root:root and shadows the lower x's attributes, as a
  // per-layer extraction mounted with overlay shows (Docker's overlay2); the contents still merge.
  const l1 = await layerTar([{ name: "x/y/z", content: "zz" }, { name: "p/q", content: "q" }, { name: "p/", type: "directory", mode: 0o711, uid: 3 }]);
  const { root, view } = await loadImage(t, [l0, l1]);
  const a = await view.stat("/a");
  assert.deepEqual([a.type, a.mode, a.uid, a.gid, a.implicit], ["dir", 0o755, 0, 0, true]);
  assert.equal((await view.stat("/a/b")).implicit, true);
  assert.equal(await text(view, "/a/b/c"), "deep");
  const x = await view.stat("/x");
  assert.deepEqual([x.mode, x.uid, x.gid, x.implicit, x.layer], [0o755, 0, 0, true, 1]);
  assert.deepEqual(await view.readdir("/x"), ["keep", "y"]);
  const p = await view.stat("/p");
  assert.deepEqual([p.mode, p.uid, p.implicit], [0o711, 3, false], "a directory header after its children wins over the implicit parent");
  assert.equal(ok(strata(root, ["fs", "ls", "-l", "u:1", "/"])).stdout.split("\n")[0], "drwxr-xr-x 0 0 0 1970-01-01 00:00 a");
});

test("errors: one line, exit 1 (or 125 for usage), nothing on stdout", async (t) => {
  const { root, view } = await loadImage(t, [await makeTar([{ name: "etc/", type: "directory" }, { name: "etc/hosts", content: "h" }])]);
  fails(strata(root, ["fs", "ls", "u:1", "/nope"]), /^Error: \/nope: no such file or directory\n$/);
  fails(strata(root, ["fs", "cat", "u:1", "/nope/deeper"]), /^Error: \/nope\/deeper: no such file or directory\n$/);
  fails(strata(root, ["fs", "cat", "u:1", "/etc"]), /^Error: \/etc: is a directory\n$/);
  fails(strata(root, ["fs", "cat", "u:1", "/"]), /^Error: \/: is a directory\n$/);
  fails(strata(root, ["fs", "ls", "u:1", "/etc/hosts/x"]), /not a directory/);
  fails(strata(root, ["fs", "tree", "u:1", "/etc/hosts"]), /^Error: \/etc\/hosts: not a directory\n$/);
  fails(strata(root, ["fs", "cat", "u:1", "/etc/../etc/hosts"]), /"\.\." is not allowed/);
  fails(strata(root, ["fs", "ls", "nope:1", "/"]), /^Error: No such image: nope:1\n$/);
  for (const args of [["fs"], ["fs", "frob", "u:1"], ["fs", "cat", "u:1"], ["fs", "cat", "-l", "u:1", "/etc/hosts"]]) {
    const r = strata(root, args);
    assert.equal(r.code, 125, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^Error: [^\n]+\n$/);
  }
  assert.match(ok(strata(root, ["fs", "--help"])).stdout, /strata fs COMMAND/);
  assert.match(ok(strata(root, ["--help"])).stdout, /\n  fs +Browse an image's merged filesystem/);
  await rejectsWith(view.readdir("/etc/hosts"), "INVALID_ARGUMENT");
  await rejectsWith(view.stat("a/../b"), "INVALID_ARGUMENT");
  await rejectsWith(view.walk(() => {}, "/etc/hosts"), "INVALID_ARGUMENT");
});

test("cat writes binary content byte for byte, large files streamed", async (t) => {
  const big = Buffer.alloc(3 * 1024 * 1024 + 17);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  const { root, dir } = await loadImage(t, [await layerTar([{ name: "blob", content: big }, { name: "empty", content: "" }])]);
  const out = join(dir, "out");
  const r = spawnSync("sh", ["-c", `node "$1" --root "$2" fs cat u:1 /blob > "$3"`, "sh", BIN, root, out]);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.ok(readFileSync(out).equals(big));
  const e = ok(strata(root, ["fs", "cat", "u:1", "/empty"]));
  assert.equal(e.stdout, "");
});

test("deterministic: the same stack in any tar order gives the same listings, twice over", async (t) => {
  const ents: Ent[] = [
    { name: "a/", type: "directory" },
    { name: "a/z", content: "1" },
    { name: "a/b/", type: "directory", mode: 0o700 },
    { name: "a/b/c", content: "2", uid: 1000, gid: 1000 },
    { name: "a/m", type: "symlink", linkname: "b/c" },
    { name: "a/f", type: "fifo" },
    { name: "a/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 },
    { name: "Z", content: "upper-case sorts first" },
  ];
  const { root: r1, view: v1 } = await loadImage(t, [await layerTar(ents)]);
  const { root: r2, view: v2 } = await loadImage(t, [await layerTar([...ents].reverse())]);
  const listings = (root: string) => [
    ok(strata(root, ["fs", "tree", "u:1"])).stdout,
    ok(strata(root, ["fs", "ls", "-l", "u:1", "/a"])).stdout,
  ];
  const first = listings(r1);
  assert.deepEqual(listings(r1), first);
  assert.deepEqual(listings(r2), first);
  assert.equal(
    first[1],
    [
      "drwx------ 0 0    0 1970-01-01 00:00 b",
      "prw-r--r-- 0 0    0 1970-01-01 00:00 f",
      "lrwxrwxrwx 0 0    3 1970-01-01 00:00 m -> b/c",
      "crw-rw-rw- 0 0 1, 3 1970-01-01 00:00 null",
      "-rw-r--r-- 0 0    1 1970-01-01 00:00 z",
      "",
    ].join("\n"),
  );
  const walked = async (v: UnionView) => {
    const out: string[] = [];
    await v.walk((e) => void out.push(`${e.path} ${e.type}`));
    return out;
  };
  assert.deepEqual(await walked(v1), ["/Z file", "/a dir", "/a/b dir", "/a/b/c file", "/a/f fifo", "/a/m symlink", "/a/null char", "/a/z file"]);
  assert.deepEqual(await walked(v2), await walked(v1));
});

test("UnionView: no I/O until used, each layer indexed once, reads verified against the index", async () => {
  const good = await layerTar([{ name: "d/", type: "directory" }, { name: "d/f", content: "hello" }, { name: "g", content: "other" }]);
  const l0 = memLayer(good);
  const l1 = memLayer(await layerTar([{ name: "d/h", content: "upper" }]));
  const view = new UnionView([l0, l1]);
  assert.deepEqual([l0.opened, l1.opened], [0, 0], "the constructor does no I/O");
  await Promise.all([view.stat("/d/f"), view.readdir("/d"), view.stat("/g")]);
  assert.deepEqual([l0.opened, l1.opened], [1, 1], "concurrent first uses share one index");
  assert.equal(await text(view, "/d/f"), "hello");
  assert.deepEqual([l0.opened, l1.opened], [2, 1], "a read reopens only the layer that holds the file");

  // A layer whose bytes change after indexing: the read fails at the end instead of returning wrong bytes.
  let served = good;
  const v2 = new UnionView([memLayer(() => served, sha256(good))]);
  await v2.stat("/d/f");
  served = Buffer.from(good);
  served[served.indexOf("hello")] = "j".charCodeAt(0);
  await assert.rejects(readAll(await v2.readFile("/d/f")), (e: unknown) => isStrataError(e, "DIGEST_MISMATCH"));

  // Hostile or broken layers are refused with a clear code.
  await rejectsWith(new UnionView([memLayer(await layerTar([{ name: "../evil", content: "x" }]))]).stat("/"), "INVALID_ARCHIVE", /"\.\." in an entry name/);
  await rejectsWith(new UnionView([memLayer(await layerTar([{ name: "x", type: "link", linkname: "../../etc/shadow" }]))]).stat("/"), "INVALID_ARCHIVE");
  await rejectsWith(new UnionView([memLayer(await layerTar([{ name: ".wh..wh..plnk/x", content: "x" }]))]).stat("/"), "INVALID_ARCHIVE");
  await rejectsWith(new UnionView([memLayer(Buffer.alloc(1024, 7))]).stat("/"), "INVALID_ARCHIVE");
  // The root takes its attributes from a `./` entry (an upper layer's implicit root keeps them); a fifo
  // has no content to read; returning false from walk skips what is below a directory.
  const v4 = new UnionView([
    memLayer(await layerTar([{ name: "./", type: "directory", mode: 0o700, uid: 4 }, { name: "p", type: "fifo" }, { name: "d/", type: "directory" }, { name: "d/x" }])),
    memLayer(await layerTar([{ name: "d/y" }])),
  ]);
  const top = await v4.stat("/");
  assert.deepEqual([top.type, top.mode, top.uid, top.layer, top.implicit], ["dir", 0o700, 4, 0, false]);
  await rejectsWith(v4.readFile("/p"), "UNSUPPORTED");
  const seen: string[] = [];
  await v4.walk((e) => {
    seen.push(e.path);
    return e.type !== "dir";
  });
  assert.deepEqual(seen, ["/d", "/p"]);
  // A failed index is retried, not cached.
  let broken = true;
  const flaky = memLayer(() => (broken ? Buffer.alloc(1024, 7) : good));
  const v3 = new UnionView([flaky]);
  await rejectsWith(v3.stat("/g"), "INVALID_ARCHIVE");
  broken = false;
  assert.equal((await v3.stat("/g")).size, 5);
});

/** A minimal ustar header (the big-layer test writes 200,000 of them; tar-stream's packer is the slow part there). */
function ustarHeader(name: string, type: "0" | "5", size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100);
  h.write(type === "5" ? "0000755\0" : "0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write("00000000000\0", 136);
  h.write("        ", 148);
  h.write(type, 156);
  h.write("ustar\0" + "00", 257);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += h[i];
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

test("a layer of 200,000 entries: indexed with headers only, a few hundred bytes each", async () => {
  const dirs = 400;
  const per = 500;
  // Generated as it is read, so the test holds no 200 MB tar either.
  function* tar(): Generator<Buffer> {
    for (let d = 0; d < dirs; d++) {
      const parts = [ustarHeader(`dir${d}/`, "5", 0)];
      for (let f = 0; f < per; f++) {
        const body = Buffer.alloc(512);
        const n = body.write(`${d}/${f}`);
        parts.push(ustarHeader(`dir${d}/file-with-a-longish-name-${f}`, "0", n), body);
      }
      yield Buffer.concat(parts);
    }
    yield Buffer.alloc(1024);
  }
  const layer: UnionLayer = { digest: `sha256:${"0".repeat(64)}` as Digest, diffChunks: async () => Readable.from(tar()) };
  const view = new UnionView([layer]);
  gc();
  const before = process.memoryUsage().heapUsed;
  assert.equal((await view.readdir("/dir399")).length, per);
  gc();
  const perEntry = (process.memoryUsage().heapUsed - before) / (dirs * per);
  assert.ok(perEntry < 512, `${Math.round(perEntry)} bytes of heap kept per entry`);
  let n = 0;
  await view.walk(() => void n++);
  assert.equal(n, dirs + dirs * per);
  assert.equal(await text(view, "/dir399/file-with-a-longish-name-499"), "399/499");
  assert.equal(await text(view, "/dir0/file-with-a-longish-name-0"), "0/0");
});

// ---- differential: the union view against the kernel's overlayfs ---------------------

/** mulberry32: a small seeded generator, so a failing seed replays exactly. */
function rng(seed: number): { int(n: number): number; pick<T>(xs: readonly T[]): T; chance(p: number): boolean; bytes(n: number): Buffer } {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  return {
    int: (n) => Math.floor(next() * n),
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
    bytes: (n) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
      return b;
    },
  };
}

const NAMES = ["a", "b", "c", "d", "e"];
const FILE_MODES = [0o644, 0o600, 0o755, 0o4755, 0o2711, 0o444, 0o640, 0o1644];
const DIR_MODES = [0o755, 0o700, 0o775, 0o1777, 0o2755, 0o555, 0o711];
const IDS = [0, 0, 0, 1, 1000, 65534, 3000000];

/**
 * Random layer stacks that a per-layer `tar -x` plus overlayfs can express:
 * within a layer a path appears once, nothing sits below a non-directory or
 * a whiteout of the same layer, and a hardlink follows its target. Across
 * layers anything goes: overwrites, deletes, opaque directories, file ↔
 * directory replacements, symlinks anywhere, hardlinks, modes and owners.
 */
function randomStack(seed: number): Ent[][] {
  const r = rng(seed);
  const history: string[] = [];
  const historyDirs: string[] = [];
  const layers: Ent[][] = [];
  const nLayers = 2 + r.int(4);
  const size = () => r.pick([0, 1 + r.int(100), 511, 512, 513, 1000 + r.int(5000), r.chance(0.1) ? 70000 + r.int(100000) : 7]);
  for (let li = 0; li < nLayers; li++) {
    const entries = new Map<string, Ent>();
    const links: Ent[] = [];
    const under = (p: string) => [...entries.keys()].some((k) => k.startsWith(p + "/"));
    /** Every ancestor of p is a directory of this layer or absent, and none is whited out here. */
    const parentsOk = (p: string) => {
      const parts = p.split("/");
      for (let i = 1; i < parts.length; i++) {
        const a = parts.slice(0, i).join("/");
        const e = entries.get(a);
        if ((e && e.type !== "directory") || entries.has(whiteoutOf(a))) return false;
      }
      return true;
    };
    const free = (p: string, dir: boolean) => !entries.has(p) && parentsOk(p) && (dir || !under(p)) && !entries.has(whiteoutOf(p));
    const randomPath = () => Array.from({ length: 1 + r.int(3) }, () => r.pick(NAMES)).join("/");
    const owner = () => ({ uid: r.pick(IDS), gid: r.pick(IDS) });
    const ops = 4 + r.int(18);
    for (let op = 0; op < ops; op++) {
      const kind = r.pick(["file", "file", "file", "file", "dir", "dir", "dir", "symlink", "symlink", "link", "whiteout", "whiteout", "whiteout", "opaque", "opaque", "fifo", "char"]);
      if (kind === "whiteout") {
        const p = history.length && r.chance(0.8) ? r.pick(history) : randomPath();
        const wh = whiteoutOf(p);
        if (!entries.has(wh) && !entries.has(p) && !under(p) && parentsOk(wh)) entries.set(wh, { name: wh });
        continue;
      }
      if (kind === "opaque") {
        const d = historyDirs.length && r.chance(0.8) ? r.pick(historyDirs) : randomPath();
        const e = entries.get(d);
        const marker = `${d}/.wh..wh..opq`;
        if ((e === undefined || e.type === "directory") && parentsOk(marker) && !entries.has(whiteoutOf(d)) && !entries.has(marker)) entries.set(marker, { name: marker });
        continue;
      }
      if (kind === "link") {
        const targets = [...entries.values(), ...links].filter((e) => e.type === "file" || e.type === "link");
        const p = randomPath();
        if (!targets.length || !free(p, false)) continue;
        const e: Ent = { name: p, type: "link", linkname: r.pick(targets).name, mode: r.pick(FILE_MODES), ...owner() };
        entries.set(p, e);
        links.push(e);
        continue;
      }
      const p = randomPath();
      if (!free(p, kind === "dir")) continue;
      if (kind === "dir") entries.set(p, { name: p, type: "directory", mode: r.pick(DIR_MODES), ...owner() });
      else if (kind === "file") entries.set(p, { name: p, type: "file", content: r.bytes(size()), mode: r.pick(FILE_MODES), ...owner() });
      else if (kind === "symlink") {
        const target = r.pick([r.pick(NAMES), `../${r.pick(NAMES)}`, `/${randomPath()}`, `../../../../${randomPath()}`, `${r.pick(NAMES)}/${r.pick(NAMES)}`, "."]);
        entries.set(p, { name: p, type: "symlink", linkname: target, ...owner() });
      } else if (kind === "fifo") entries.set(p, { name: p, type: "fifo", mode: r.pick([0o644, 0o600]), ...owner() });
      else entries.set(p, { name: p, type: "character-device", devmajor: 1, devminor: r.pick([3, 5, 7]), mode: 0o666, ...owner() });
    }
    // Sometimes no explicit directory headers at all (implicit parents), sometimes out of order.
    let list = [...entries.values()];
    if (r.chance(0.2)) list = list.filter((e) => e.type !== "directory" || r.chance(0.5));
    const hard = list.filter((e) => e.type === "link");
    list = list.filter((e) => e.type !== "link").sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (r.chance(0.3)) {
      for (let i = list.length - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [list[i], list[j]] = [list[j], list[i]];
      }
    }
    list = [...list, ...links.filter((l) => hard.includes(l))];
    for (const e of list) {
      if (!e.name.includes(".wh.")) history.push(e.name);
      if (e.type === "directory") historyDirs.push(e.name);
      // Implicit parents are directories below later layers too.
      for (let i = e.name.indexOf("/"); i > 0; i = e.name.indexOf("/", i + 1)) historyDirs.push(e.name.slice(0, i));
      if (r.chance(0.2)) e.name = `./${e.name}`;
    }
    layers.push(list);
  }
  return layers;
}

function whiteoutOf(p: string): string {
  const i = p.lastIndexOf("/");
  return i < 0 ? `.wh.${p}` : `${p.slice(0, i)}/.wh.${p.slice(i + 1)}`;
}

interface Rec {
  path: string;
  type: string;
  mode?: number;
  uid: number;
  gid: number;
  size?: number;
  link?: string;
  dev?: string;
  sha?: string;
}

/** The merged tree as the kernel shows it: depth-first, names sorted, symlinks not followed. */
function overlayTree(root: string): Rec[] {
  const out: Rec[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = `${rel}/${name}`;
      const abs = join(root, p);
      let st;
      try {
        st = lstatSync(abs);
      } catch (e) {
        // overlayfs lists a whiteout that sits in a directory only one layer has, but looking it up fails.
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw e;
      }
      const type = st.isDirectory() ? "dir" : st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : st.isFIFO() ? "fifo" : st.isCharacterDevice() ? "char" : st.isBlockDevice() ? "block" : "other";
      const rec: Rec = { path: p, type, uid: st.uid, gid: st.gid };
      if (type !== "symlink") rec.mode = st.mode & 0o7777;
      if (type === "file") {
        rec.size = st.size;
        rec.sha = createHash("sha256").update(readFileSync(abs)).digest("hex");
      }
      if (type === "symlink") rec.link = readlinkSync(abs);
      if (type === "char" || type === "block") rec.dev = `${(st.rdev >> 8) & 0xfff},${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
      out.push(rec);
      if (type === "dir") walk(p);
    }
  };
  walk("");
  return out;
}

async function unionTree(view: UnionView): Promise<Rec[]> {
  const out: Rec[] = [];
  await view.walk(async (e: UnionEntry) => {
    const type = e.type === "hardlink" ? "file" : e.type;
    const rec: Rec = { path: e.path, type, uid: e.uid, gid: e.gid };
    if (type !== "symlink") rec.mode = e.mode;
    if (type === "file") {
      rec.size = e.size;
      rec.sha = createHash("sha256").update(await readAll(await view.readFile(e.path))).digest("hex");
    }
    if (type === "symlink") rec.link = e.linkname;
    if (type === "char" || type === "block") rec.dev = `${e.devmajor},${e.devminor}`;
    out.push(rec);
  });
  return out;
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr.toString().trim() || `exit ${r.status}`}`);
}

/**
 * A layer as overlayfs wants it: `tar -x` into its own directory, then
 * whiteouts as 0/0 devices and opaque xattrs. GNU tar leaves a hardlinked
 * inode as its first header made it; layer extraction (Docker's rule, and
 * strata's) applies each link header's owner and mode to the inode, so that
 * is done here after tar, in the tar's order.
 */
function extractLayer(tar: string, dir: string, entries: Ent[]): void {
  mkdirSync(dir);
  run("sh", ["-c", 'umask 022 && exec tar --numeric-owner -xpf "$1" -C "$2"', "sh", tar, dir]);
  for (const e of entries) {
    if (e.type !== "link") continue;
    const abs = join(dir, e.name.replace(/^(\.\/)+/, ""));
    lchownSync(abs, e.uid ?? 0, e.gid ?? 0);
    chmodSync(abs, e.mode ?? 0o644);
  }
  const convert = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const abs = join(dir, rel, name);
      if (name === ".wh..wh..opq") {
        unlinkSync(abs);
        run("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(dir, rel)]);
      } else if (name.startsWith(".wh.")) {
        unlinkSync(abs);
        run("mknod", [join(dir, rel, name.slice(4)), "c", "0", "0"]);
      } else if (lstatSync(abs).isDirectory()) convert(join(rel, name));
    }
  };
  convert("");
}

function mounted(path: string): boolean {
  return readFileSync("/proc/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === path);
}

const overlaySkip = (() => {
  if (process.getuid?.() !== 0) return "needs root for overlay mounts";
  if (!readFileSync("/proc/filesystems", "utf8").includes("overlay")) return "the kernel has no overlayfs";
  for (const tool of ["tar", "setfattr", "mknod", "mount", "umount"]) if (!have(tool)) return `${tool} is missing (scripts/setup.sh --test installs it)`;
  return false;
})();

const SEEDS = Array.from({ length: 24 }, (_, i) => 1000 + i * 7919);

/**
 * A layer as a tar writer makes it from a tree, for a driver that applies
 * each layer over a copy of its parent (vfs, like Docker's): every directory
 * named before what it holds. Applied over a parent, an implicit parent
 * merges with (or follows, or is refused by) what the parent has there, so
 * the generator's implicit and out-of-order parents are written out: as
 * 0755 root:root, what `tar -x` makes of an implicit parent, so each layer's
 * own directory, and the overlay reference, is the same tree.
 */
function canonicalLayer(layer: Ent[]): Ent[] {
  const strip = (n: string) => n.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  const byName = new Map(layer.map((e) => [strip(e.name), e]));
  const out: Ent[] = [];
  const emitted = new Set<string>();
  const dir = (p: string): void => {
    if (p === "" || emitted.has(p)) return;
    const i = p.lastIndexOf("/");
    if (i > 0) dir(p.slice(0, i));
    const e = byName.get(p);
    out.push(e?.type === "directory" ? { ...e, name: p } : { name: p, type: "directory", mode: 0o755, uid: 0, gid: 0 });
    emitted.add(p);
  };
  const links: Ent[] = [];
  for (const e of layer) {
    const p = strip(e.name);
    const i = p.lastIndexOf("/");
    if (i > 0) dir(p.slice(0, i));
    if (e.type === "directory") dir(p);
    else if (e.type === "link") links.push(e);
    else out.push({ ...e, name: p });
  }
  for (const l of links) out.push({ ...l, name: strip(l.name) });
  return out;
}

/**
 * The stack loaded into a root made with `--storage-driver vfs` (each layer
 * a full copy, applied over its parent's), seen through a container's
 * mounted root. The unmount and rm guard is registered before tempDir, so it
 * runs first even when the test fails.
 */
async function vfsTree(t: { after: (fn: () => void) => void }, stack: Ent[][], expected: Rec[]): Promise<Rec[]> {
  const tars = await Promise.all(stack.map((l) => layerTar(canonicalLayer(l))));
  const state: { root?: string; id?: string } = {};
  t.after(() => {
    const root = state.root;
    if (!root) return;
    if (state.id) {
      strata(root, ["umount", state.id]);
      strata(root, ["rm", state.id]);
    }
    const left = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m && m.startsWith(root + "/"));
    for (const m of left.reverse()) spawnSync("umount", ["-l", m]);
  });
  const dir = tempDir(t, "strata-union-vfs-");
  const root = (state.root = join(dir, "root"));
  const file = join(dir, "image.tar");
  writeFileSync(file, await makeDockerArchive([{ layers: tars, tags: ["u:1"] }]));
  ok(strata(root, ["--storage-driver", "vfs", "load", "-i", file]), "vfs load");
  const id = (state.id = ok(strata(root, ["create", "u:1"]), "vfs create").stdout.trim());
  const merged = ok(strata(root, ["mount", id]), "vfs mount").stdout.trim();
  assert.ok(mounted(merged), "the vfs container root is mounted");
  // A container's root also holds the mount points its init layer adds where the image has none (as Docker's does).
  const image = new Set(expected.map((r) => r.path));
  const init = /^\/?(proc|sys|dev|etc|etc\/hosts|etc\/hostname|etc\/resolv\.conf)$/;
  const tree = overlayTree(merged).filter((r) => image.has(r.path) || !init.test(r.path));
  ok(strata(root, ["umount", id]), "vfs umount");
  assert.ok(!mounted(merged), "unmounted");
  ok(strata(root, ["rm", id]), "vfs rm");
  state.id = undefined;
  return tree;
}

for (const seed of SEEDS) {
  test(`differential against kernel overlayfs: random stack, seed ${seed}`, { skip: overlaySkip }, async (t) => {
    const work = mkdtempSync(join(tmpdir(), "strata-union-ovl-"));
    const merged = join(work, "merged");
    t.after(() => {
      if (mounted(merged)) spawnSync("umount", ["-l", merged]);
      rmSync(work, { recursive: true, force: true });
    });
    const stack = randomStack(seed);
    const tars = await Promise.all(stack.map((l) => layerTar(l)));
    const lowers: string[] = [];
    for (const [i, tar] of tars.entries()) {
      const file = join(work, `layer${i}.tar`);
      writeFileSync(file, tar);
      extractLayer(file, join(work, `l${i}`), stack[i]);
      lowers.unshift(join(work, `l${i}`));
    }
    mkdirSync(join(work, "empty"));
    lowers.push(join(work, "empty")); // overlayfs wants two lower directories at least
    mkdirSync(merged);
    run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lowers.join(":")}`, merged]);
    const expected = overlayTree(merged);
    run("umount", [merged]);
    assert.ok(!mounted(merged), "unmounted");

    const { root, view } = await loadImage(t, tars);
    const actual = await unionTree(view);
    assert.deepEqual(actual, expected, `seed ${seed}: the union view differs from overlayfs`);
    // Third party: the vfs snapshot driver's container root.
    assert.deepEqual(await vfsTree(t, stack, expected), expected, `seed ${seed}: the vfs driver's tree differs from overlayfs`);
    // The CLI reads the same bytes.
    const file = expected.find((e) => e.type === "file" && (e.size ?? 0) > 0);
    if (file) assert.equal(createHash("sha256").update(spawnSync(process.execPath, [BIN, "--root", root, "fs", "cat", "u:1", file.path]).stdout).digest("hex"), file.sha);
  });
}
