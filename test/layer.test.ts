// Layer application (applyLayer), hostile tars, container changes (overlayChanges / treeChanges) and changeset tars (writeChangeset).
import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { rejectsCode, makeTar, type TarFile } from "./helpers.ts";
import { createHash, randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { Readable } from "node:stream";
import {
  chmodSync,
  chownSync,
  lchownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  appendFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tarStream from "tar-stream";
import { StrataError } from "../src/errors/index.js";
import { nativeFs, MNT_DETACH } from "../src/native/index.js";
import { applyLayer } from "../src/archive/extract.js";
import { safeJoin, entryComponents } from "../src/archive/safejoin.js";
import { overlayChanges, treeChanges, writeChangeset, type Change } from "../src/archive/changes.js";
import { packDirectory } from "../src/archive/tar.js";
import { tempDir } from "./helpers.js";

const native = nativeFs();

// ---------------------------------------------------------------- helpers

type E = TarFile;

/** A hand-made tar (names exactly as given, hostile ones included), mtimes defaulting to 2020-09-13. */
function tarOf(entries: E[]): Promise<Buffer> {
  return makeTar(entries.map((e) => ({ mtime: 1_600_000_000, ...e })));
}

/** The tar as a stream of small chunks, so entries straddle reads. */
function chunked(buf: Buffer, size = 1000): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

/**
 * The read size apply() feeds a tar in: 1000 bytes, so that entries straddle
 * reads and go through readTar's parser, or 1 MiB, as the content store
 * reads, so that in overlay mode the native scanner (scanTar) takes most.
 * The suites below run once with each.
 */
let readSize = 1000;
const READ_SIZES = [1000, 1 << 20];

function apply(buf: Buffer, root: string, whiteouts: "apply" | "overlay" = "apply", chown?: boolean) {
  return applyLayer(chunked(buf, readSize), root, { whiteouts, chown });
}

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}


/** Everything about a tree that a layer can carry, by path (mtimes to the second). */
function fingerprint(dir: string, opts: { skip?: (rel: string) => boolean; mtimes?: boolean; rootMtime?: boolean } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const abs = rel ? join(dir, rel) : dir;
    const st = lstatSync(abs);
    const kind = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "link" : st.isFile() ? "file" : st.isCharacterDevice() ? "chr" : st.isBlockDevice() ? "blk" : st.isFIFO() ? "fifo" : "other";
    const xattrs = native
      .llistxattr(abs)
      .filter((x) => !x.startsWith("trusted.overlay."))
      .sort()
      .map((x) => `${x}=${native.lgetxattr(abs, x)?.toString("hex")}`)
      .join(",");
    const parts = [kind, (st.mode & 0o7777).toString(8), `${st.uid}:${st.gid}`];
    if (st.isFile()) parts.push(createHash("sha256").update(readFileSync(abs)).digest("hex").slice(0, 16), `n${st.nlink}`);
    if (st.isSymbolicLink()) parts.push(readlinkSync(abs));
    if (st.isCharacterDevice() || st.isBlockDevice()) parts.push(`rdev${st.rdev}`);
    if (xattrs) parts.push(xattrs);
    if (opts.mtimes !== false && (rel !== "" || opts.rootMtime)) parts.push(`t${Math.floor(st.mtimeMs / 1000)}`);
    out[rel || "."] = parts.join(" ");
    if (st.isDirectory())
      for (const n of readdirSync(abs).sort()) {
        const child = rel ? `${rel}/${n}` : n;
        if (!opts.skip?.(child)) walk(child);
      }
  };
  walk("");
  return out;
}

/**
 * A temp dir with the root to extract into and, beside it, things a hostile
 * tar would like to reach: `victim/` and `rootx/` (a sibling sharing the
 * root's name as a prefix). `untouched()` checks nothing outside the root
 * changed and nothing new appeared next to it.
 */
function arena(t: { after: (fn: () => void) => void }) {
  const base = tempDir(t, "strata-layer-");
  const root = join(base, "root");
  const victim = join(base, "victim");
  const rootx = join(base, "rootx");
  mkdirSync(root);
  mkdirSync(victim);
  mkdirSync(rootx);
  writeFileSync(join(victim, "file"), "precious\n");
  chmodSync(join(victim, "file"), 0o600);
  mkdirSync(join(victim, "dir"));
  writeFileSync(join(rootx, "secret"), "secret\n");
  const outside = () => fingerprint(base, { skip: (rel) => rel === "root" });
  const before = outside();
  return {
    base,
    root,
    victim,
    rootx,
    untouched() {
      assert.deepEqual(outside(), before, "something outside the root changed");
    },
  };
}

function sh(cmd: string, cwd?: string): string {
  const r = spawnSync("sh", ["-c", cmd], { cwd, encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout;
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1])
    .filter((m) => m !== undefined && (m === dir || m.startsWith(dir + "/")));
}

/** A temp dir for overlay mounts: on the way out, anything mounted below it is detached first, then it is removed. */
function mountArena(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "strata-ovl-"));
  t.after(() => {
    for (const m of mountsUnder(dir).reverse()) {
      try {
        native.umount2(m.replace(/\\040/g, " "), MNT_DETACH);
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

function isWhiteoutDevice(abs: string): boolean {
  const st = lstatSync(abs);
  return st.isCharacterDevice() && st.rdev === 0;
}

// ---------------------------------------------------------------- safeJoin

describe("safeJoin", () => {
  test("contains absolute names, drops . components, refuses .. and NUL", () => {
    assert.equal(safeJoin("/tmp/root", "/etc/passwd"), "/tmp/root/etc/passwd");
    assert.equal(safeJoin("/tmp/root", "./a//b/./c/"), "/tmp/root/a/b/c");
    assert.equal(safeJoin("/tmp/root", "."), "/tmp/root");
    assert.equal(safeJoin("/tmp/root/", "x"), "/tmp/root/x");
    assert.equal(safeJoin("/tmp/root", "...x/..y"), "/tmp/root/...x/..y");
    assert.deepEqual(entryComponents("/a/./b/"), ["a", "b"]);
    for (const bad of ["..", "../rootx/secret", "a/../../x", "/../x", "a/..", "a\0b"]) {
      assert.throws(() => safeJoin("/tmp/root", bad), (e: unknown) => e instanceof StrataError && e.code === "INVALID_ARCHIVE", bad);
    }
  });
});

// ---------------------------------------------------------------- hostile tars

for (const size of READ_SIZES)
  describe(`applyLayer refuses or contains hostile tars (${size}-byte reads)`, () => {
    before(() => {
      readSize = size;
    });
    test("a .. component is refused and nothing is written", async (t) => {
      const a = arena(t);
      const tar = await tarOf([{ name: "ok", content: "x" }, { name: "../victim/pwned", content: "pwned" }]);
      await rejectsCode(apply(tar, a.root), "INVALID_ARCHIVE", /"\.\.\/victim\/pwned"/);
      a.untouched();
    });

    test("a .. hidden in the middle of a name is refused", async (t) => {
      const a = arena(t);
      await rejectsCode(apply(await tarOf([{ name: "a/../../victim/file", content: "pwned" }]), a.root), "INVALID_ARCHIVE", /a\/\.\.\/\.\.\/victim\/file/);
      await rejectsCode(apply(await tarOf([{ name: "/../../victim/file", content: "pwned" }]), a.root), "INVALID_ARCHIVE");
      a.untouched();
    });

    test("absolute names are contained in the root", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "/abs/", type: "directory" },
        { name: "/abs/file", content: "inside" },
        { name: `${a.victim}/file`, content: "pwned" },
      ]);
      await apply(tar, a.root);
      assert.equal(readFileSync(join(a.root, "abs", "file"), "utf8"), "inside");
      assert.equal(readFileSync(join(a.root, a.victim, "file"), "utf8"), "pwned");
      a.untouched();
    });

    test("a relative symlink out of the root is created, but writing through it lands inside", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "escape", type: "symlink", linkname: "../victim" },
        { name: "escape/pwned", content: "pwned" },
        { name: "escape/file", content: "pwned" },
      ]);
      await apply(tar, a.root);
      assert.equal(readlinkSync(join(a.root, "escape")), "../victim", "the symlink itself is kept as the image has it");
      assert.equal(readFileSync(join(a.root, "victim", "pwned"), "utf8"), "pwned");
      assert.equal(readFileSync(join(a.root, "victim", "file"), "utf8"), "pwned");
      a.untouched();
    });

    test("an absolute symlink is resolved as if the root were /", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "abs", type: "symlink", linkname: a.victim },
        { name: "abs/file", content: "pwned" },
        { name: "abs/dir/deeper", content: "pwned" },
      ]);
      await apply(tar, a.root);
      assert.equal(readFileSync(join(a.root, a.victim, "file"), "utf8"), "pwned");
      assert.equal(readFileSync(join(a.root, a.victim, "dir", "deeper"), "utf8"), "pwned");
      a.untouched();
    });

    test("a symlink chain (a -> .., a/escape -> ../victim) stays in the root", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "a", type: "symlink", linkname: ".." },
        { name: "a/escape", type: "symlink", linkname: "../victim" },
        { name: "a/escape/file", content: "pwned" },
        { name: "escape/pwned2", content: "pwned" },
        { name: "a/a/a/escape/pwned3", content: "pwned" },
      ]);
      await apply(tar, a.root);
      assert.equal(readlinkSync(join(a.root, "escape")), "../victim");
      for (const f of ["file", "pwned2", "pwned3"]) assert.equal(readFileSync(join(a.root, "victim", f), "utf8"), "pwned", f);
      a.untouched();
    });

    test("a link into a sibling sharing the root's prefix (root vs rootx) stays in the root", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "x", type: "symlink", linkname: "../rootx" },
        { name: "x/secret", content: "pwned" },
        { name: "y", type: "symlink", linkname: a.rootx },
        { name: "y/secret", content: "pwned" },
        { name: "z", type: "symlink", linkname: "../../" + a.base.split("/").pop() + "/rootx" },
        { name: "z/secret", content: "pwned" },
      ]);
      await apply(tar, a.root);
      assert.equal(readFileSync(join(a.root, "rootx", "secret"), "utf8"), "pwned");
      assert.equal(readFileSync(join(a.root, a.rootx, "secret"), "utf8"), "pwned");
      a.untouched();
      await rejectsCode(apply(await tarOf([{ name: "h", type: "link", linkname: "../rootx/secret" }]), a.root), "INVALID_ARCHIVE", /"h"/);
      a.untouched();
    });

    test("a symlinked parent already in the root (a lower layer's) is never written through", async (t) => {
      const a = arena(t);
      symlinkSync(a.victim, join(a.root, "lib"));
      symlinkSync("../../victim", join(a.root, "rel"));
      const tar = await tarOf([
        { name: "lib/file", content: "pwned" },
        { name: "lib/dir/", type: "directory", mode: 0o777 },
        { name: "rel/file", content: "pwned" },
      ]);
      await apply(tar, a.root);
      assert.equal(readFileSync(join(a.root, a.victim, "file"), "utf8"), "pwned");
      assert.equal(readFileSync(join(a.root, "victim", "file"), "utf8"), "pwned");
      a.untouched();
    });

    test("a file over a symlink replaces the symlink, it does not write through it", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "evil", type: "symlink", linkname: join(a.victim, "file") },
        { name: "evil", content: "pwned", mode: 0o777 },
        { name: "evil2", type: "symlink", linkname: "../victim/file" },
        { name: "evil2", type: "fifo" },
      ]);
      await apply(tar, a.root);
      assert.ok(lstatSync(join(a.root, "evil")).isFile());
      assert.equal(readFileSync(join(a.root, "evil"), "utf8"), "pwned");
      assert.ok(lstatSync(join(a.root, "evil2")).isFIFO());
      a.untouched();
    });

    test("a directory over a symlink replaces it; late directory metadata never follows a later symlink", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "d", type: "symlink", linkname: a.victim },
        { name: "d/", type: "directory", mode: 0o777, mtime: 1000 },
        { name: "d/f", content: "inside" },
        // e is made (its mode and mtime are applied at the end), then replaced by a symlink out
        { name: "e/", type: "directory", mode: 0o777, mtime: 1000 },
        { name: "e/dir/", type: "directory", mode: 0o777, mtime: 1000 },
        { name: "e", type: "symlink", linkname: "../victim" },
      ]);
      await apply(tar, a.root);
      assert.ok(lstatSync(join(a.root, "d")).isDirectory());
      assert.equal(lstatSync(join(a.root, "d")).mode & 0o777, 0o777);
      assert.equal(readFileSync(join(a.root, "d", "f"), "utf8"), "inside");
      assert.ok(lstatSync(join(a.root, "e")).isSymbolicLink());
      // root/e/dir now opens victim/dir outside: its deferred mode and mtime must not land there
      a.untouched();
    });

    test("many entries (applied in native batches): a symlink in the way mid-batch is replaced, never written through", async (t) => {
      const files = (dir: string, n: number): E[] => Array.from({ length: n }, (_, i) => ({ name: `${dir}/f${i}`, content: `${dir} ${i}` }));
      for (const mode of ["apply", "overlay"] as const) {
        const a = arena(t);
        symlinkSync(a.victim, join(a.root, "lib")); // a lower layer's symlink out
        const tar = await tarOf([
          { name: "fill/", type: "directory" },
          ...files("fill", 300),
          { name: "lib/", type: "directory", mode: 0o750 },
          ...files("lib", 600),
          { name: "same/", type: "directory" },
          ...files("same", 300),
          { name: "same", content: "now a file" },
          ...files("after", 300),
        ]);
        await apply(tar, a.root, mode);
        assert.ok(lstatSync(join(a.root, "lib")).isDirectory(), mode);
        assert.equal(lstatSync(join(a.root, "lib")).mode & 0o777, 0o750);
        assert.equal(readdirSync(join(a.root, "lib")).length, 600);
        assert.equal(readFileSync(join(a.root, "lib", "f599"), "utf8"), "lib 599");
        assert.equal(readFileSync(join(a.root, "same"), "utf8"), "now a file");
        assert.equal(readdirSync(join(a.root, "after")).length, 300);
        a.untouched();
      }
    });

    test("symlinks in a native batch: one over a directory of the same batch is replaced, later entries under it resolve afresh; owner and times are the link's", async (t) => {
      for (const mode of ["apply", "overlay"] as const) {
        const a = arena(t);
        const tar = await tarOf([
          { name: "q", type: "symlink", linkname: "/etc/shadow", mtime: 1234, uid: 7, gid: 8 },
          { name: "r/", type: "directory" },
          { name: "r/s", type: "symlink", linkname: "../q" },
          { name: "p/", type: "directory", mode: 0o777, mtime: 1000 },
          { name: "p/a", content: "first" },
          { name: "p", type: "symlink", linkname: a.victim }, // replaces p/, queued with p/ still cached
          { name: "p/b", content: "through the link" }, // resolved in the root: <root><victim>/b
        ]);
        await apply(tar, a.root, mode, true);
        assert.equal(readlinkSync(join(a.root, "p")), a.victim, mode);
        assert.equal(readFileSync(join(a.root, a.victim, "b"), "utf8"), "through the link");
        const q = lstatSync(join(a.root, "q"));
        assert.ok(q.isSymbolicLink());
        assert.deepEqual([q.uid, q.gid, Math.floor(q.mtimeMs / 1000)], [7, 8, 1234]);
        assert.equal(readlinkSync(join(a.root, "r", "s")), "../q");
        a.untouched();
      }
    });

    test("a symlink over a directory that fails a batch: entries queued in later batches under the directory resolve afresh, never through the link", async (t) => {
      // Batches hold 256 records and several may be queued while one runs:
      // with these fillers the symlink falls at the end of a batch, at its
      // start, or inside one, and the entries under "a/" after it in the
      // same batch or in later ones. Before the fix, those in later batches
      // kept the path resolved while "a" was a directory and were created
      // through the symlink, outside the root.
      for (const fill of [0, 200, 253, 254, 255, 256, 600])
        for (const mode of ["apply", "overlay"] as const) {
          const a = arena(t);
          const tar = await tarOf([
            { name: "a/", type: "directory" },
            ...Array.from({ length: fill }, (_, i): E => ({ name: `f${i}`, content: "x" })),
            { name: "a", type: "symlink", linkname: a.victim },
            ...Array.from({ length: 700 }, (_, i): E => ({ name: `a/x${i}`, content: `x ${i}` })),
          ]);
          await apply(tar, a.root, mode);
          assert.equal(readlinkSync(join(a.root, "a")), a.victim, `${mode} ${fill}`);
          assert.equal(readdirSync(join(a.root, a.victim)).length, 700, `${mode} ${fill}`);
          assert.equal(readFileSync(join(a.root, a.victim, "x699"), "utf8"), "x 699");
          a.untouched();
        }
    });

    test("a name already taken in the middle of a batch applied on two threads: the batch is applied again in order, every entry lands", async (t) => {
      for (const mode of ["overlay", "apply"] as const) {
        const a = arena(t);
        mkdirSync(join(a.root, "d"));
        mkdirSync(join(a.root, "d", "f150")); // in the way of the file of that name
        writeFileSync(join(a.root, "d", "f151"), "old");
        const tar = await tarOf([{ name: "d/", type: "directory", mode: 0o750 }, ...Array.from({ length: 300 }, (_, i): E => ({ name: `d/f${i}`, content: `f ${i}`, mode: 0o640 }))]);
        await apply(tar, a.root, mode);
        assert.equal(readdirSync(join(a.root, "d")).length, 300, mode);
        for (const i of [0, 149, 150, 151, 299]) {
          assert.equal(readFileSync(join(a.root, "d", `f${i}`), "utf8"), `f ${i}`, `${mode} f${i}`);
          assert.equal(lstatSync(join(a.root, "d", `f${i}`)).mode & 0o777, 0o640);
        }
        assert.equal(lstatSync(join(a.root, "d")).mode & 0o777, 0o750);
        a.untouched();
      }
    });

    test("a hardlink target with .. is refused", async (t) => {
      const a = arena(t);
      await rejectsCode(apply(await tarOf([{ name: "h", type: "link", linkname: "../victim/file" }]), a.root), "INVALID_ARCHIVE", /"h".*leaves the root/);
      a.untouched();
    });

    test("an absolute hardlink target is looked up inside the root (and must exist there)", async (t) => {
      const a = arena(t);
      await rejectsCode(apply(await tarOf([{ name: "h", type: "link", linkname: join(a.victim, "file") }]), a.root), "INVALID_ARCHIVE", /does not exist/);
      assert.equal(lstatSync(join(a.victim, "file")).nlink, 1);
      // and when it does exist inside, it is that file that is linked
      await apply(await tarOf([{ name: "etc/passwd", content: "inner" }, { name: "h", type: "link", linkname: "/etc/passwd" }]), a.root);
      assert.equal(lstatSync(join(a.root, "h")).ino, lstatSync(join(a.root, "etc", "passwd")).ino);
      a.untouched();
    });

    test("a hardlink through a symlinked parent resolves inside the root", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "esc", type: "symlink", linkname: a.victim },
        { name: "l", type: "link", linkname: "esc/file" },
      ]);
      await rejectsCode(apply(tar, a.root), "INVALID_ARCHIVE", /"l".*does not exist/);
      assert.equal(lstatSync(join(a.victim, "file")).nlink, 1);
      a.untouched();
    });

    test("a hardlink to a directory is refused", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "d/", type: "directory" },
        { name: "h", type: "link", linkname: "d" },
      ]);
      await rejectsCode(apply(tar, a.root), "INVALID_ARCHIVE", /"h".*is a directory/);
      a.untouched();
    });

    test("a hardlink to a symlink pointing out links the symlink; a chmod or a write never follows it", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "passwdlink", type: "symlink", linkname: join(a.victim, "file") },
        { name: "localpasswd", type: "link", linkname: "passwdlink", mode: 0o777 },
        { name: "rel", type: "symlink", linkname: "../victim/file" },
        { name: "rellink", type: "link", linkname: "rel", mode: 0o777 },
      ]);
      await apply(tar, a.root);
      assert.ok(lstatSync(join(a.root, "localpasswd")).isSymbolicLink());
      assert.equal(readlinkSync(join(a.root, "localpasswd")), join(a.victim, "file"));
      assert.ok(lstatSync(join(a.root, "rellink")).isSymbolicLink());
      // a later entry of the same name replaces the link rather than writing through it
      await apply(await tarOf([{ name: "localpasswd", content: "pwned", mode: 0o666 }]), a.root);
      assert.equal(readFileSync(join(a.root, "localpasswd"), "utf8"), "pwned");
      a.untouched();
    });

    test("a root entry of another type is refused", async (t) => {
      const a = arena(t);
      await rejectsCode(apply(await tarOf([{ name: ".", content: "x" }]), a.root), "INVALID_ARCHIVE", /"\.".*root/);
      await rejectsCode(apply(await tarOf([{ name: "./", type: "symlink", linkname: a.victim }]), a.root), "INVALID_ARCHIVE", /root/);
      await rejectsCode(apply(await tarOf([{ name: "/", type: "link", linkname: "x" }]), a.root), "INVALID_ARCHIVE", /root/);
      assert.ok(lstatSync(a.root).isDirectory());
      // a root directory entry is fine: it sets the root's mode
      await apply(await tarOf([{ name: "./", type: "directory", mode: 0o750 }]), a.root);
      assert.equal(lstatSync(a.root).mode & 0o777, 0o750);
      a.untouched();
    });

    test("whiteouts through a symlinked parent stay in the root, in both modes", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "esc", type: "symlink", linkname: a.victim },
        { name: "esc/.wh.file", content: "" },
        { name: "rel", type: "symlink", linkname: "../victim" },
        { name: "rel/.wh.dir", content: "" },
        { name: "op", type: "symlink", linkname: "../rootx" },
        { name: "op/.wh..wh..opq", content: "" },
      ]);
      await apply(tar, a.root, "apply");
      const other = join(a.base, "root2");
      mkdirSync(other);
      await apply(tar, other, "overlay");
      assert.ok(isWhiteoutDevice(join(other, a.victim, "file")));
      assert.ok(isWhiteoutDevice(join(other, "victim", "dir")));
      assert.equal(native.lgetxattr(join(other, "rootx"), "trusted.overlay.opaque")?.toString(), "y");
      rmSync(other, { recursive: true });
      a.untouched();
    });

    test("invalid whiteout names and whiteout names used as directories are refused", async (t) => {
      const a = arena(t);
      await rejectsCode(apply(await tarOf([{ name: "d/.wh..", content: "" }]), a.root), "INVALID_ARCHIVE", /"d\/\.wh\.\.\"/);
      await rejectsCode(apply(await tarOf([{ name: ".wh.", content: "" }]), a.root), "INVALID_ARCHIVE");
      await rejectsCode(apply(await tarOf([{ name: ".wh.x/y", content: "" }]), a.root), "INVALID_ARCHIVE", /whiteout/);
      a.untouched();
    });

    test("a symlink loop in a parent is refused", async (t) => {
      const a = arena(t);
      const tar = await tarOf([
        { name: "l1", type: "symlink", linkname: "l2" },
        { name: "l2", type: "symlink", linkname: "/l1" },
        { name: "l1/x", content: "x" },
      ]);
      await rejectsCode(apply(tar, a.root), "INVALID_ARCHIVE", /"l1\/x".*symbolic links/);
      a.untouched();
    });

    test("a parent that is not a directory is refused", async (t) => {
      const a = arena(t);
      await rejectsCode(apply(await tarOf([{ name: "f", content: "x" }, { name: "f/x", content: "y" }]), a.root), "INVALID_ARCHIVE", /"f\/x".*not a directory/);
      a.untouched();
    });
  });

// ---------------------------------------------------------------- entry types, metadata

for (const size of READ_SIZES)
  describe(`applyLayer: entries and metadata (${size}-byte reads)`, () => {
    before(() => {
      readSize = size;
    });
    test("files, dirs, symlinks, hardlinks, devices and FIFOs round trip through packDirectory", async (t) => {
      const dir = tempDir(t);
      const src = join(dir, "src");
      mkdirSync(join(src, "bin"), { recursive: true });
      writeFileSync(join(src, "bin", "tool"), "#!/bin/sh\n");
      chmodSync(join(src, "bin", "tool"), 0o755);
      writeFileSync(join(src, "big"), Buffer.alloc(5 << 20, 0x5a)); // several write batches
      symlinkSync("bin/tool", join(src, "link"));
      symlinkSync("/nonexistent", join(src, "dangling"));
      writeFileSync(join(src, "h1"), "shared");
      linkSync(join(src, "h1"), join(src, "h2"));
      linkSync(join(src, "h1"), join(src, "bin", "h3"));
      native.mknod(join(src, "null"), 0o020000 | 0o666, 1, 3);
      native.mknod(join(src, "loop"), 0o060000 | 0o660, 7, 300);
      native.mknod(join(src, "fifo"), 0o010000 | 0o640, 0, 0);
      sh(`find ${src} -exec touch -h -d @1500000000 {} +`);
      const out = join(dir, "out");
      const r = await applyLayer(packDirectory(src), out, { whiteouts: "apply" });
      assert.equal(r.entries, 11);
      assert.equal(r.bytes, (5 << 20) + 10 + 6);
      assert.deepEqual(fingerprint(out), fingerprint(src));
      assert.equal(lstatSync(join(out, "h1")).nlink, 3);
      assert.equal(lstatSync(join(out, "loop")).rdev, lstatSync(join(src, "loop")).rdev);
    });

    test("owners, setuid/setgid/sticky bits (chmod after chown), modes the umask would strip, and mtimes, directories' set last; in both whiteout modes", async (t) => {
      const dir = tempDir(t);
      const tar = await tarOf([
        { name: "d/", type: "directory", mode: 0o2775, uid: 1000, gid: 1001, mtime: 1_000_000 },
        { name: "d/su", content: "x", mode: 0o4755, uid: 1000, gid: 1001, mtime: 2_000_000 },
        { name: "d/sg", content: "x", mode: 0o2711, uid: 0, gid: 50, mtime: 3_000_000 },
        // owned as the extraction runs (overlay mode skips the chown; the setgid "d" must not give it group 1001)
        { name: "d/plain", content: "x", mode: 0o644, mtime: 3_500_000 },
        { name: "d/open", content: "x", mode: 0o666, mtime: 3_600_000 },
        { name: "d/deeper/", type: "directory", mode: 0o555, mtime: 4_000_000 },
        { name: "d/deeper/f", content: "written after its read-only dir", mode: 0o400, mtime: 5_000_000 },
        { name: "tmp/", type: "directory", mode: 0o1777, mtime: 6_000_000 },
        { name: "tmp/link", type: "symlink", linkname: "../d", uid: 7, gid: 8, mtime: 7_000_000 },
        { name: "pipe", type: "fifo", mode: 0o4640, uid: 9, gid: 9, mtime: 8_000_000 },
      ]);
      for (const mode of ["apply", "overlay"] as const) {
      await apply(tar, join(dir, mode), mode);
      const fp = fingerprint(join(dir, mode));
      assert.deepEqual(fp, {
        ".": fp["."],
        d: "dir 2775 1000:1001 t1000000",
        "d/deeper": "dir 555 0:0 t4000000",
        "d/deeper/f": `file 400 0:0 ${createHash("sha256").update("written after its read-only dir").digest("hex").slice(0, 16)} n1 t5000000`,
        "d/sg": `file 2711 0:50 ${createHash("sha256").update("x").digest("hex").slice(0, 16)} n1 t3000000`,
        "d/open": `file 666 0:0 ${createHash("sha256").update("x").digest("hex").slice(0, 16)} n1 t3600000`,
        "d/plain": `file 644 0:0 ${createHash("sha256").update("x").digest("hex").slice(0, 16)} n1 t3500000`,
        "d/su": `file 4755 1000:1001 ${createHash("sha256").update("x").digest("hex").slice(0, 16)} n1 t2000000`,
        pipe: "fifo 4640 9:9 t8000000",
        tmp: "dir 1777 0:0 t6000000",
        "tmp/link": "link 777 7:8 ../d t7000000",
      }, mode);
      }
    });

    test("directory modes at the end: a merged directory takes the entry's mode, one the umask would strip keeps it, with or without removals in the layer", async (t) => {
      const dir = tempDir(t);
      for (const removal of [false, true]) {
        const root = join(dir, String(removal));
        await apply(await tarOf([{ name: "d/", type: "directory", mode: 0o700, mtime: 1000 }, { name: "gone" }]), root);
        // "d" exists (0700): merged, its mode and times from this entry; "wide" is made 0777 (mkdir's 0777 less the umask is not)
        await apply(
          await tarOf([
            { name: "d/", type: "directory", mode: 0o755, mtime: 2000 },
            { name: "d/f", mtime: 3000 },
            { name: "wide/", type: "directory", mode: 0o777, mtime: 4000 },
            { name: "plain/", type: "directory", mode: 0o755, mtime: 5000 },
            ...(removal ? [{ name: ".wh.gone" }] : []),
          ]),
          root,
        );
        const fp = fingerprint(root);
        assert.equal(fp.d, "dir 755 0:0 t2000", `removal ${removal}`);
        assert.equal(fp.wide, "dir 777 0:0 t4000", `removal ${removal}`);
        assert.equal(fp.plain, "dir 755 0:0 t5000", `removal ${removal}`);
        assert.equal(fp.gone === undefined, removal);
      }
    });

    test("chown: false keeps the extracting user's ownership", async (t) => {
      const dir = tempDir(t);
      await apply(await tarOf([{ name: "f", content: "x", uid: 1234, gid: 5678, mode: 0o640 }]), dir, "apply", false);
      const st = lstatSync(join(dir, "f"));
      assert.equal(st.uid, process.getuid!());
      assert.equal(st.mode & 0o7777, 0o640);
    });

    test("PAX long names, a uid above 2^21, PAX mtimes and GNU long names", async (t) => {
      const dir = tempDir(t);
      const long = Array.from({ length: 6 }, (_, i) => `component-${i}-${"x".repeat(50)}`).join("/");
      const tar = await tarOf([
        { name: `${long}/`, type: "directory" },
        { name: `${long}/file-é`, content: "long", uid: 3_000_000, gid: 4_000_000, pax: { uid: "3000000", gid: "4000000", mtime: "1234567890.5" } },
        { name: "s", type: "symlink", linkname: `${long}/file-é` },
      ]);
      await apply(tar, join(dir, "pax"));
      const st = lstatSync(join(dir, "pax", long, "file-é"));
      assert.equal(st.uid, 3_000_000);
      assert.equal(st.gid, 4_000_000);
      assert.equal(st.mtimeMs, 1234567890500);
      assert.equal(readlinkSync(join(dir, "pax", "s")), `${long}/file-é`);
      // GNU tar's own long-name records (././@LongLink)
      const gsrc = join(dir, "gsrc");
      mkdirSync(join(gsrc, long), { recursive: true });
      writeFileSync(join(gsrc, long, "f"), "gnu");
      symlinkSync(`${long}/f`, join(gsrc, "l"));
      sh(`tar --format=gnu -C ${gsrc} -cf ${dir}/gnu.tar .`);
      assert.ok(readFileSync(join(dir, "gnu.tar")).includes("././@LongLink"));
      await applyLayer(Readable.from([readFileSync(join(dir, "gnu.tar"))]), join(dir, "gnu"), { whiteouts: "apply" });
      assert.equal(readFileSync(join(dir, "gnu", long, "f"), "utf8"), "gnu");
      assert.equal(readlinkSync(join(dir, "gnu", "l")), `${long}/f`);
    });

    test("binary xattrs in PAX records: GNU tar → applyLayer, writeChangeset → GNU tar, writeChangeset → applyLayer", async (t) => {
      const dir = tempDir(t);
      const src = join(dir, "src");
      mkdirSync(src);
      const value = Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x3d, 0x80, 0x01]);
      writeFileSync(join(src, "f"), "x");
      native.lsetxattr(join(src, "f"), "user.bin", value);
      native.lsetxattr(join(src, "f"), "user.text", Buffer.from("héllo=1"));
      native.lsetxattr(src, "user.dir", Buffer.from([0xc3]));
      const long = "n".repeat(120);
      writeFileSync(join(src, long), "y");
      native.lsetxattr(join(src, long), "user.bin", value);
      chownSync(join(src, long), 3_000_000, 3_000_001);
      native.lsetxattr(join(src, "f"), "trusted.overlay.origin", Buffer.from("never copied"));

      sh(`tar --format=posix --xattrs --xattrs-include='user.*' -C ${src} -cf ${dir}/gnu.tar f`);
      await applyLayer(Readable.from([readFileSync(join(dir, "gnu.tar"))]), join(dir, "a"), { whiteouts: "apply" });
      assert.deepEqual(native.lgetxattr(join(dir, "a", "f"), "user.bin"), value);
      assert.equal(native.lgetxattr(join(dir, "a", "f"), "user.text")?.toString(), "héllo=1");

      const changes: Change[] = [
        { kind: "A", path: "/f" },
        { kind: "A", path: "/" + long },
      ];
      const tar = await collect(writeChangeset(changes, src));
      writeFileSync(join(dir, "ours.tar"), tar);
      mkdirSync(join(dir, "g"));
      sh(`tar --xattrs --xattrs-include='*' -C ${dir}/g -xf ${dir}/ours.tar`);
      assert.deepEqual(native.lgetxattr(join(dir, "g", "f"), "user.bin"), value);
      assert.deepEqual(native.lgetxattr(join(dir, "g", long), "user.bin"), value);
      assert.equal(lstatSync(join(dir, "g", long)).uid, 3_000_000);
      assert.equal(native.lgetxattr(join(dir, "g", "f"), "trusted.overlay.origin"), null, "overlay's own xattrs are not exported");

      await applyLayer(Readable.from([tar]), join(dir, "b"), { whiteouts: "apply" });
      assert.deepEqual(native.lgetxattr(join(dir, "b", "f"), "user.bin"), value);
      assert.equal(native.lgetxattr(join(dir, "b", "f"), "user.text")?.toString(), "héllo=1");
      assert.deepEqual(native.lgetxattr(join(dir, "b", long), "user.bin"), value);
      assert.equal(lstatSync(join(dir, "b", long)).uid, 3_000_000);
      assert.equal(lstatSync(join(dir, "b", long)).gid, 3_000_001);
      assert.equal(native.lgetxattr(join(dir, "b", "f"), "trusted.overlay.origin"), null);
    });

    test("trusted.overlay.* xattrs in a layer are never applied (a tar cannot forge opaque dirs)", async (t) => {
      const dir = tempDir(t);
      const src = join(dir, "src");
      mkdirSync(join(src, "d"), { recursive: true });
      native.lsetxattr(join(src, "d"), "trusted.overlay.opaque", Buffer.from("y"));
      native.lsetxattr(join(src, "d"), "user.keep", Buffer.from("1"));
      sh(`tar --format=posix --xattrs --xattrs-include='*' -C ${src} -cf ${dir}/t.tar d`);
      assert.ok(readFileSync(join(dir, "t.tar")).includes("SCHILY.xattr.trusted.overlay.opaque"));
      await applyLayer(Readable.from([readFileSync(join(dir, "t.tar"))]), join(dir, "out"), { whiteouts: "overlay" });
      assert.equal(native.lgetxattr(join(dir, "out", "d"), "trusted.overlay.opaque"), null);
      assert.equal(native.lgetxattr(join(dir, "out", "d"), "user.keep")?.toString(), "1");
    });

    test("file ↔ directory replacement, in the root and within one layer", async (t) => {
      const dir = tempDir(t);
      const root = join(dir, "r");
      mkdirSync(join(root, "was-dir", "sub"), { recursive: true });
      writeFileSync(join(root, "was-dir", "sub", "f"), "lower");
      writeFileSync(join(root, "was-file"), "lower");
      mkdirSync(join(root, "merge"));
      writeFileSync(join(root, "merge", "lower"), "kept");
      chmodSync(join(root, "merge"), 0o700);
      const tar = await tarOf([
        { name: "merge/", type: "directory", mode: 0o755 },
        { name: "merge/upper", content: "added" },
        { name: "same/", type: "directory" },
        { name: "same/child", content: "gone with its dir" },
        { name: "same", content: "now a file" },
        { name: "was-dir", content: "now a file" },
        { name: "was-file/", type: "directory", mode: 0o711 },
        { name: "was-file/child", content: "c" },
      ]);
      await apply(tar, root, "apply");
      assert.equal(readFileSync(join(root, "was-dir"), "utf8"), "now a file");
      assert.ok(lstatSync(join(root, "was-file")).isDirectory());
      assert.equal(lstatSync(join(root, "was-file")).mode & 0o777, 0o711);
      assert.equal(readFileSync(join(root, "was-file", "child"), "utf8"), "c");
      assert.deepEqual(readdirSync(join(root, "merge")).sort(), ["lower", "upper"]);
      assert.equal(lstatSync(join(root, "merge")).mode & 0o777, 0o755);
      assert.equal(readFileSync(join(root, "same"), "utf8"), "now a file");
      const ovl = join(dir, "o");
      await apply(tar, ovl, "overlay");
      assert.equal(readFileSync(join(ovl, "same"), "utf8"), "now a file");
    });

    test("apply mode: whiteouts delete files and whole directories, never following symlinks", async (t) => {
      const dir = tempDir(t);
      const root = join(dir, "r");
      mkdirSync(join(root, "etc"), { recursive: true });
      writeFileSync(join(root, "etc", "motd"), "x");
      mkdirSync(join(root, "var", "cache", "deep"), { recursive: true });
      writeFileSync(join(root, "var", "cache", "deep", "f"), "x");
      mkdirSync(join(root, "keep"));
      writeFileSync(join(root, "keep", "f"), "kept");
      symlinkSync("keep", join(root, "link"));
      const tar = await tarOf([
        { name: "etc/.wh.motd" },
        { name: "var/.wh.cache" },
        { name: ".wh.link" },
        { name: "nowhere/.wh.missing" },
        { name: ".wh.absent" },
      ]);
      const r = await apply(tar, root, "apply");
      assert.equal(r.entries, 5);
      assert.ok(!existsSync(join(root, "etc", "motd")));
      assert.ok(!existsSync(join(root, "var", "cache")));
      assert.ok(!existsSync(join(root, "link")));
      assert.equal(readFileSync(join(root, "keep", "f"), "utf8"), "kept");
      assert.ok(!existsSync(join(root, "nowhere")), "no directory is made for a whiteout of nothing");
      assert.deepEqual(sh(`find ${root} -name '.wh.*'`), "");
    });

    test("overlay mode: whiteouts become 0/0 character devices and no .wh. file is ever written", async (t) => {
      const dir = tempDir(t);
      const tar = await tarOf([
        { name: "etc/", type: "directory" },
        { name: "etc/.wh.motd", uid: 0, gid: 0 },
        { name: "var/.wh.cache" },
        { name: "x" },
        { name: ".wh.x" },
      ]);
      await apply(tar, dir, "overlay");
      assert.ok(isWhiteoutDevice(join(dir, "etc", "motd")));
      assert.ok(isWhiteoutDevice(join(dir, "var", "cache")));
      assert.ok(isWhiteoutDevice(join(dir, "x")), "a whiteout over this layer's own entry replaces it");
      assert.deepEqual(sh(`find ${dir} -name '.wh.*'`), "");
    });

    for (const where of ["before", "after"] as const) {
      test(`opaque directories, marker ${where} the directory's entries: lower content hidden, this layer's kept`, async (t) => {
        const dir = tempDir(t);
        const entries: E[] = [
          { name: "d/", type: "directory" },
          { name: "d/-early", content: "sorts before the marker" },
          { name: "d/new", content: "this layer" },
          { name: "d/sub/", type: "directory" },
          { name: "d/sub/new", content: "this layer" },
          { name: "d/implicit/deep", content: "parent made implicitly" },
        ];
        const marker: E = { name: "d/.wh..wh..opq" };
        const tar = await tarOf(where === "before" ? [entries[0], marker, ...entries.slice(1)] : [...entries, marker]);

        // apply mode over a lower copy
        const root = join(dir, "apply");
        mkdirSync(join(root, "d", "sub"), { recursive: true });
        mkdirSync(join(root, "d", "implicit"), { recursive: true });
        mkdirSync(join(root, "d", "olddir", "x"), { recursive: true });
        for (const f of ["d/old", "d/sub/old", "d/implicit/old", "d/olddir/x/y", "outside"]) writeFileSync(join(root, f), "lower");
        await apply(tar, root, "apply");
        assert.deepEqual(sh(`cd ${root} && find . | sort`).trim().split("\n"), [
          ".",
          "./d",
          "./d/-early",
          "./d/implicit",
          "./d/implicit/deep",
          "./d/new",
          "./d/sub",
          "./d/sub/new",
          "./outside",
        ]);

        // overlay mode: the xattr, and the entries
        const ovl = join(dir, "overlay");
        await apply(tar, ovl, "overlay");
        assert.equal(native.lgetxattr(join(ovl, "d"), "trusted.overlay.opaque")?.toString(), "y");
        assert.deepEqual(sh(`cd ${ovl} && find . | sort`).trim().split("\n"), [".", "./d", "./d/-early", "./d/implicit", "./d/implicit/deep", "./d/new", "./d/sub", "./d/sub/new"]);
      });
    }

    test("overlay mode output is what the kernel's overlayfs reads: whiteouts hide, opaque dirs hide, same-layer entries show", async (t) => {
      const dir = mountArena(t);
      const l1 = join(dir, "l1");
      const l2 = join(dir, "l2");
      const merged = join(dir, "m");
      mkdirSync(merged);
      await apply(await tarOf([{ name: "a/" , type: "directory" }, { name: "a/f" }, { name: "a/g" }, { name: "b/", type: "directory" }, { name: "b/old" }, { name: "c" }]), l1, "overlay");
      const l2tar = await tarOf([
        { name: "a/", type: "directory" },
        { name: "a/.wh.f" },
        { name: "b/", type: "directory" },
        { name: "b/.wh.old" }, // redundant once b is opaque: dropped, or overlayfs would list it
        { name: "b/new" },
        { name: "b/.wh..wh..opq" },
        { name: "b/sub/.wh.x" }, // likewise
        { name: ".wh.c" },
      ]);
      await apply(l2tar, l2, "overlay");
      assert.deepEqual(sh(`cd ${l2} && find . | sort`).trim().split("\n"), [".", "./a", "./a/f", "./b", "./b/new", "./b/sub", "./c"]);
      native.mount("overlay", merged, "overlay", 0, `lowerdir=${l2}:${l1}`);
      try {
        assert.deepEqual(sh(`cd ${merged} && find . | sort`).trim().split("\n"), [".", "./a", "./a/g", "./b", "./b/new", "./b/sub"]);
      } finally {
        native.umount2(merged, MNT_DETACH);
      }
      assert.deepEqual(mountsUnder(dir), []);
    });

    test("errors: truncated and garbage tars are INVALID_ARCHIVE, the input's own error passes through", async (t) => {
      const dir = tempDir(t);
      const tar = await tarOf([{ name: "a", content: "x".repeat(5000) }, { name: "b", content: "y" }]);
      await rejectsCode(apply(tar.subarray(0, 2048), join(dir, "t")), "INVALID_ARCHIVE");
      const garbage = Buffer.alloc(2048, 0x41);
      await rejectsCode(apply(garbage, join(dir, "g")), "INVALID_ARCHIVE");
      const failing = new Readable({
        read() {
          this.push(tar.subarray(0, 1024));
          this.destroy(new StrataError("DIGEST_MISMATCH", "layer sha256:abc: digest mismatch"));
        },
      });
      await rejectsCode(applyLayer(failing, join(dir, "f"), { whiteouts: "apply" }), "DIGEST_MISMATCH");
      await rejectsCode(apply(await tarOf([{ name: "s", type: "symlink", linkname: "" }]), join(dir, "s")), "INVALID_ARCHIVE", /"s"/);
      // a PAX record whose length runs past its header
      const pax = await tarOf([{ name: "p".repeat(150), content: "x" }]);
      const at = pax.indexOf(" path=");
      assert.ok(at > 0);
      pax.write("999", at - 3, "latin1");
      await rejectsCode(apply(pax, join(dir, "p")), "INVALID_ARCHIVE", /PAX/);
    });
  });

// ---------------------------------------------------------------- changes

/** The scenario run on an overlay mount and on a vfs copy alike. */
function containerScenario(root: string): void {
  writeFileSync(join(root, "new.txt"), "new\n");
  mkdirSync(join(root, "newdir", "sub"), { recursive: true });
  writeFileSync(join(root, "newdir", "sub", "file"), "nested\n");
  linkSync(join(root, "newdir", "sub", "file"), join(root, "newdir", "hard"));
  symlinkSync("/etc/hosts", join(root, "newlink"));
  appendFileSync(join(root, "etc", "hosts"), "10.0.0.1 db\n");
  chmodSync(join(root, "bin", "tool"), 0o700);
  native.lsetxattr(join(root, "etc", "hosts2"), "user.note", Buffer.from([1, 2, 0xff]));
  rmSync(join(root, "etc", "motd"));
  rmSync(join(root, "var", "cache"), { recursive: true });
  rmSync(join(root, "opt", "thing"));
  mkdirSync(join(root, "opt", "thing"));
  writeFileSync(join(root, "opt", "thing", "child"), "child\n");
  rmSync(join(root, "srv", "data"), { recursive: true });
  writeFileSync(join(root, "srv", "data"), "was a dir\n");
  rmSync(join(root, "usr", "share", "doc"), { recursive: true });
  mkdirSync(join(root, "usr", "share", "doc"));
  writeFileSync(join(root, "usr", "share", "doc", "README"), "new readme\n");
  writeFileSync(join(root, "usr", "share", "doc", "NEW"), "new\n");
  rmSync(join(root, "lib", "old", "f2"));
  // back where a lower layer's whiteout or opaque directory had hidden them: added, not changed
  writeFileSync(join(root, "etc", "gone"), "back\n");
  writeFileSync(join(root, "lib", "old", "f1"), "f1 again\n");
}

const EXPECTED: Change[] = [
  { kind: "C", path: "/bin" },
  { kind: "C", path: "/bin/tool" },
  { kind: "C", path: "/etc" },
  { kind: "A", path: "/etc/gone" },
  { kind: "C", path: "/etc/hosts" },
  { kind: "C", path: "/etc/hosts2" },
  { kind: "D", path: "/etc/motd" },
  { kind: "C", path: "/lib" },
  { kind: "C", path: "/lib/old" },
  { kind: "A", path: "/lib/old/f1" },
  { kind: "D", path: "/lib/old/f2" },
  { kind: "A", path: "/new.txt" },
  { kind: "A", path: "/newdir" },
  { kind: "A", path: "/newdir/hard" },
  { kind: "A", path: "/newdir/sub" },
  { kind: "A", path: "/newdir/sub/file" },
  { kind: "A", path: "/newlink" },
  { kind: "C", path: "/opt" },
  { kind: "C", path: "/opt/thing" },
  { kind: "A", path: "/opt/thing/child" },
  { kind: "C", path: "/srv" },
  { kind: "C", path: "/srv/data" },
  { kind: "C", path: "/usr" },
  { kind: "C", path: "/usr/share" },
  { kind: "C", path: "/usr/share/doc" },
  { kind: "A", path: "/usr/share/doc/NEW" },
  { kind: "C", path: "/usr/share/doc/README" },
  { kind: "D", path: "/usr/share/doc/pkg" },
  { kind: "C", path: "/var" },
  { kind: "D", path: "/var/cache" },
];

async function baseLayers(): Promise<[Buffer, Buffer]> {
  const l1 = await tarOf([
    { name: "bin/", type: "directory", mtime: 1_500_000_000 },
    { name: "bin/tool", content: "tool v1\n", mode: 0o755 },
    { name: "bin/sh", type: "symlink", linkname: "tool" },
    { name: "etc/", type: "directory" },
    { name: "etc/gone", content: "removed by layer 2\n" },
    { name: "etc/hosts", content: "127.0.0.1 localhost\n" },
    { name: "etc/hosts2", content: "::1 localhost\n" },
    { name: "etc/motd", content: "hello\n" },
    { name: "lib/", type: "directory" },
    { name: "lib/old/", type: "directory" },
    { name: "lib/old/f1", content: "f1\n" },
    { name: "opt/", type: "directory" },
    { name: "opt/thing", content: "a file that becomes a dir\n" },
    { name: "srv/", type: "directory" },
    { name: "srv/data/", type: "directory" },
    { name: "srv/data/a", content: "a\n" },
    { name: "srv/data/b/", type: "directory" },
    { name: "srv/data/b/c", content: "c\n" },
    { name: "usr/", type: "directory" },
    { name: "usr/share/", type: "directory" },
    { name: "usr/share/doc/", type: "directory" },
    { name: "usr/share/doc/README", content: "old readme\n" },
    { name: "usr/share/doc/pkg/", type: "directory" },
    { name: "usr/share/doc/pkg/copyright", content: "(c)\n" },
    { name: "var/", type: "directory" },
    { name: "var/cache/", type: "directory" },
    { name: "var/cache/x/", type: "directory" },
    { name: "var/cache/x/y", content: "y\n" },
    { name: "var/cache/z", content: "z\n" },
  ]);
  const l2 = await tarOf([
    { name: "etc/", type: "directory", mtime: 1_600_000_100 },
    { name: "etc/.wh.gone" },
    { name: "lib/", type: "directory", mtime: 1_600_000_100 },
    { name: "lib/old/", type: "directory", mtime: 1_600_000_100 },
    { name: "lib/old/.wh..wh..opq" },
    { name: "lib/old/f2", content: "f2\n" },
    { name: "lib/old/f3", content: "f3\n" },
  ]);
  return [l1, l2];
}

describe("applyLayer: the native scanner", () => {
  /** A tree of every kind GNU tar writes, with names as it writes them ("./x"), sizes around the block and batch limits, ids, modes and times. */
  function gnuTarOfTree(t: { after: (fn: () => void) => void }): Buffer {
    const src = tempDir(t, "strata-scan-src-");
    const put = (rel: string, data: string | Buffer, mode: number, ids: [number, number], mtime: number) => {
      mkdirSync(join(src, rel, ".."), { recursive: true });
      writeFileSync(join(src, rel), data);
      lchownSync(join(src, rel), ...ids); // before chmod, which chown would undo for setuid
      chmodSync(join(src, rel), mode);
      utimesSync(join(src, rel), mtime, mtime);
    };
    const sizes = [0, 1, 511, 512, 513, 4096, 100_000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20];
    for (let d = 0; d < 12; d++)
      for (const [i, n] of sizes.entries()) if ((d + i) % 4 === 0 || d < 2) put(`pkg-${d}/lib/f${n}`, randomBytes(n), [0o644, 0o755, 0o4755, 0o600, 0o2711][(d + i) % 5], [(d * 7) % 3, 1000 + d], 1_500_000_000 + d * 100 + i);
    mkdirSync(join(src, "modes/sticky"), { recursive: true });
    chmodSync(join(src, "modes/sticky"), 0o1777);
    mkdirSync(join(src, "modes/shut"));
    chmodSync(join(src, "modes/shut"), 0o700);
    mkdirSync(join(src, "modes/setgid"));
    chmodSync(join(src, "modes/setgid"), 0o2775);
    lchownSync(join(src, "modes/setgid"), 0, 50);
    symlinkSync("../pkg-0/lib/f1", join(src, "modes/rel"));
    symlinkSync("/etc/passwd", join(src, "modes/abs"));
    symlinkSync("t".repeat(150), join(src, "modes/long-target"));
    lchownSync(join(src, "modes/abs"), 3, 4);
    put("naïve/crème", "utf-8 name\n", 0o644, [0, 0], 1_600_000_000);
    put(`deep/${"d".repeat(90)}/${"e".repeat(90)}/${"f".repeat(90)}`, "a long path\n", 0o640, [5, 6], 1_600_000_000);
    linkSync(join(src, "pkg-0/lib/f512"), join(src, "modes/hard"));
    spawnSync("mkfifo", [join(src, "modes/fifo")]);
    for (const d of ["modes/sticky", "modes/shut", "modes/setgid", "modes", "deep"]) utimesSync(join(src, d), 1_400_000_000, 1_400_000_000);
    const r = spawnSync("tar", ["-C", src, "--numeric-owner", "-cf", "-", "."], { maxBuffer: 1 << 28 });
    assert.equal(r.status, 0, r.stderr?.toString());
    return r.stdout;
  }

  test("takes the same tree as readTar's parser: GNU tar's names, every size around the limits, ids, modes, times, non-ASCII and long names", async (t) => {
    const tar = gnuTarOfTree(t);
    const base = tempDir(t, "strata-scan-");
    // overlay mode in 1 MiB reads: the scanner takes what it can; "apply" mode never scans; overlay in 1000-byte reads barely can.
    const scanned = join(base, "scanned");
    const parsed = join(base, "parsed");
    const small = join(base, "small");
    const r1 = await applyLayer(chunked(tar, 1 << 20), scanned, { whiteouts: "overlay" });
    const r2 = await applyLayer(chunked(tar, 1 << 20), parsed, { whiteouts: "apply" });
    const r3 = await applyLayer(chunked(tar, 1000), small, { whiteouts: "overlay" });
    const want = fingerprint(parsed);
    assert.deepEqual(fingerprint(scanned), want);
    assert.deepEqual(fingerprint(small), want);
    assert.deepEqual([r1.entries, r1.bytes], [r2.entries, r2.bytes]);
    assert.deepEqual([r3.entries, r3.bytes], [r2.entries, r2.bytes]);
    assert.equal(want["pkg-0/lib/f1048576"].split(" ").slice(0, 3).join(" "), "file 600 0:1000");
    assert.equal(want["pkg-1/lib/f1"].split(" ").slice(0, 3).join(" "), "file 4755 1:1001");
    assert.equal(want["modes/setgid"], "dir 2775 0:50 t1400000000");
    assert.equal(want["modes/abs"], "link 777 3:4 /etc/passwd t" + want["modes/abs"].split(" t")[1]);
    // And GNU tar itself agrees.
    const gnu = join(base, "gnu");
    mkdirSync(gnu);
    const x = spawnSync("tar", ["-C", gnu, "--numeric-owner", "-p", "-xf", "-"], { input: tar });
    assert.equal(x.status, 0, x.stderr?.toString());
    assert.deepEqual(fingerprint(gnu), want);
  });

  test("an entry over one the scanner queued (a file over a directory, a directory over a file) replaces it, in order", async (t) => {
    const base = tempDir(t, "strata-scan-");
    const tar = await tarOf([
      { name: "d/", type: "directory" },
      { name: "d/x", content: "under d" },
      { name: "d", content: "now a file" },
      { name: "f", content: "a file" },
      { name: "f/", type: "directory", mode: 0o705 },
      { name: "f/y", content: "under f" },
      { name: "s", type: "symlink", linkname: "d" },
      { name: "s", content: "not a link" },
    ]);
    for (const mode of ["overlay", "apply"] as const) {
      const root = join(base, mode);
      const r = await applyLayer(chunked(tar, 1 << 20), root, { whiteouts: mode });
      assert.equal(r.entries, 8);
      assert.equal(readFileSync(join(root, "d"), "utf8"), "now a file", mode);
      assert.equal(lstatSync(join(root, "f")).mode & 0o777, 0o705);
      assert.equal(readFileSync(join(root, "f", "y"), "utf8"), "under f");
      assert.equal(readFileSync(join(root, "s"), "utf8"), "not a link");
    }
  });
});

describe("changes", () => {
  test("overlayChanges on a real overlay mount, treeChanges on a vfs copy, and writeChangeset reproducing the merged view", async (t) => {
    const dir = mountArena(t);
    const [t1, t2] = await baseLayers();
    // overlay: one lowerdir per layer, applied in overlay mode
    const l1 = join(dir, "l1");
    const l2 = join(dir, "l2");
    await applyLayer(chunked(t1), l1, { whiteouts: "overlay" });
    await applyLayer(chunked(t2), l2, { whiteouts: "overlay" });
    const upper = join(dir, "upper");
    const work = join(dir, "work");
    const merged = join(dir, "merged");
    for (const d of [upper, work, merged]) mkdirSync(d);
    // vfs: the layers applied one over the other
    const vfsLower = join(dir, "vfs-lower");
    await applyLayer(chunked(t1), vfsLower, { whiteouts: "apply" });
    await applyLayer(chunked(t2), vfsLower, { whiteouts: "apply" });
    const vfsUpper = join(dir, "vfs-upper");
    sh(`cp -a ${vfsLower} ${vfsUpper}`);

    native.mount("overlay", merged, "overlay", 0, `lowerdir=${l2}:${l1},upperdir=${upper},workdir=${work}`);
    try {
      assert.deepEqual(mountsUnder(merged), [merged]);
      assert.deepEqual(fingerprint(merged), fingerprint(vfsLower), "overlay-mode layers and apply-mode layers give the same tree");
      assert.deepEqual(await overlayChanges(upper, [l2, l1]), [], "nothing changed yet");

      containerScenario(merged);
      containerScenario(vfsUpper);

      const ovl = await overlayChanges(upper, [l2, l1]);
      assert.deepEqual(ovl, EXPECTED);
      const vfs = await treeChanges(vfsLower, vfsUpper);
      assert.deepEqual(vfs, EXPECTED);

      // the changeset tar, applied over a copy of the lower tree, gives the merged view
      const tar = await collect(writeChangeset(ovl, upper));
      const again = await collect(writeChangeset(ovl, upper));
      assert.ok(tar.equals(again), "writeChangeset is deterministic");
      const names: string[] = [];
      const ex = tarStream.extract();
      ex.on("entry", (h, s, next) => {
        names.push(h.name + (h.type === "link" ? ` -> ${h.linkname}` : ""));
        s.resume();
        s.on("end", next);
      });
      await new Promise<void>((resolve, reject) => {
        ex.on("finish", resolve);
        ex.on("error", reject);
        ex.end(tar);
      });
      assert.deepEqual(names, [
        "bin/",
        "bin/tool",
        "etc/",
        "etc/.wh.motd",
        "etc/gone",
        "etc/hosts",
        "etc/hosts2",
        "lib/",
        "lib/old/",
        "lib/old/.wh.f2",
        "lib/old/f1",
        "new.txt",
        "newdir/",
        "newdir/hard",
        "newdir/sub/",
        "newdir/sub/file -> newdir/hard",
        "newlink",
        "opt/",
        "opt/thing/",
        "opt/thing/.wh..wh..opq",
        "opt/thing/child",
        "srv/",
        "srv/data",
        "usr/",
        "usr/share/",
        "usr/share/doc/",
        "usr/share/doc/.wh..wh..opq", // no .wh.pkg: below an opaque marker a whiteout is redundant
        "usr/share/doc/NEW",
        "usr/share/doc/README",
        "var/",
        "var/.wh.cache",
      ]);
      const applied = join(dir, "applied");
      sh(`cp -a ${vfsLower} ${applied}`);
      await applyLayer(chunked(tar, 4096), applied, { whiteouts: "apply" });
      assert.deepEqual(fingerprint(applied), fingerprint(merged));

      // the vfs changeset does the same (no opaque markers: every deletion is a whiteout)
      const vfsTar = await collect(writeChangeset(vfs, vfsUpper));
      const applied2 = join(dir, "applied2");
      sh(`cp -a ${vfsLower} ${applied2}`);
      await applyLayer(Readable.from([vfsTar]), applied2, { whiteouts: "apply" });
      assert.deepEqual(fingerprint(applied2), fingerprint(vfsUpper));
      assert.deepEqual(fingerprint(applied2, { mtimes: false }), fingerprint(merged, { mtimes: false }));

      // and as a new overlay layer on top of the old ones
      const l3 = join(dir, "l3");
      await applyLayer(Readable.from([tar]), l3, { whiteouts: "overlay" });
      const view = join(dir, "view");
      mkdirSync(view);
      native.mount("overlay", view, "overlay", 0, `lowerdir=${l3}:${l2}:${l1}`);
      try {
        assert.deepEqual(fingerprint(view), fingerprint(merged));
      } finally {
        native.umount2(view, MNT_DETACH);
      }
    } finally {
      native.umount2(merged, MNT_DETACH);
    }
    assert.deepEqual(mountsUnder(dir), [], "no mount left behind");
  });

  test("treeChanges: metadata-only changes, deleted directories listed alone, everything below a new directory", async (t) => {
    const dir = tempDir(t);
    const lower = join(dir, "lower");
    mkdirSync(join(lower, "a", "deep", "deeper"), { recursive: true });
    writeFileSync(join(lower, "a", "deep", "deeper", "f"), "x");
    writeFileSync(join(lower, "owner"), "x");
    writeFileSync(join(lower, "same"), "x");
    mkdirSync(join(lower, "touched"));
    writeFileSync(join(lower, "touched", "f"), "x");
    mkdirSync(join(lower, "modedir"));
    sh(`find ${lower} -exec touch -h -d @1500000000 {} +`);
    const upper = join(dir, "upper");
    sh(`cp -a ${lower} ${upper}`);
    rmSync(join(upper, "a"), { recursive: true });
    chownSync(join(upper, "owner"), 1, 1);
    utimesSync(join(upper, "touched"), 1_700_000_000, 1_700_000_000); // a directory's mtime alone is no change
    chmodSync(join(upper, "modedir"), 0o700);
    mkdirSync(join(upper, "n", "e", "w"), { recursive: true });
    writeFileSync(join(upper, "n", "e", "w", "f"), "x");
    writeFileSync(join(upper, "same"), "y"); // same size
    utimesSync(join(upper, "same"), 1_500_000_000, 1_500_000_000); // and same mtime (to the ns): not seen, as Docker
    sh(`touch -h -d @1500000000.000000001 ${join(upper, "touched", "f")}`); // a nanosecond later: seen
    assert.deepEqual(await treeChanges(lower, upper), [
      { kind: "D", path: "/a" },
      { kind: "C", path: "/modedir" },
      { kind: "A", path: "/n" },
      { kind: "A", path: "/n/e" },
      { kind: "A", path: "/n/e/w" },
      { kind: "A", path: "/n/e/w/f" },
      { kind: "C", path: "/owner" },
      { kind: "C", path: "/touched" },
      { kind: "C", path: "/touched/f" },
    ]);
    // an empty lower: everything is A, in tree order (a/b before a-b)
    const empty = join(dir, "empty");
    mkdirSync(empty);
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "a", "b"), { recursive: true });
    writeFileSync(join(tree, "a-b"), "");
    assert.deepEqual(await treeChanges(empty, tree), [
      { kind: "A", path: "/a" },
      { kind: "A", path: "/a/b" },
      { kind: "A", path: "/a-b" },
    ]);
  });

  test("overlayChanges refuses upper directories written with redirect_dir or metacopy", async (t) => {
    const dir = tempDir(t);
    const lower = join(dir, "lower");
    const upper = join(dir, "upper");
    mkdirSync(join(lower, "a"), { recursive: true });
    mkdirSync(join(upper, "b"), { recursive: true });
    assert.deepEqual(await overlayChanges(upper, [lower]), [{ kind: "A", path: "/b" }]);
    native.lsetxattr(join(upper, "b"), "trusted.overlay.redirect", Buffer.from("/a"));
    await rejectsCode(overlayChanges(upper, [lower]), "UNSUPPORTED", /\/b.*redirect/);
  });

  test("writeChangeset: the same tree twice gives the same bytes, mtimes clamped by SOURCE_DATE_EPOCH", async (t) => {
    const saved = process.env.SOURCE_DATE_EPOCH;
    t.after(() => {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    });
    delete process.env.SOURCE_DATE_EPOCH;
    const dir = tempDir(t);
    const make = (root: string, when: number) => {
      mkdirSync(join(root, "d", "e"), { recursive: true });
      writeFileSync(join(root, "d", "e", "f"), "content");
      writeFileSync(join(root, "g"), "g");
      linkSync(join(root, "g"), join(root, "d", "g-link"));
      native.lsetxattr(join(root, "g"), "user.z", Buffer.from([0xff]));
      native.lsetxattr(join(root, "g"), "user.a", Buffer.from("a"));
      sh(`find ${root} -exec touch -h -d @${when} {} +`);
    };
    const one = join(dir, "one");
    const two = join(dir, "two");
    make(one, 1_600_000_000);
    make(two, 1_600_000_000);
    const changes: Change[] = [
      { kind: "A", path: "/d" },
      { kind: "C", path: "/g" },
      { kind: "D", path: "/gone" },
    ];
    const a = await collect(writeChangeset(changes, one));
    const b = await collect(writeChangeset(changes, two));
    assert.ok(a.length > 0 && a.equals(b), "two trees alike give different tars");
    process.env.SOURCE_DATE_EPOCH = "1000000";
    const three = join(dir, "three");
    make(three, 1_700_000_000);
    const c = await collect(writeChangeset(changes, three));
    const d = await collect(writeChangeset(changes, one));
    assert.ok(c.equals(d), "SOURCE_DATE_EPOCH does not make mtimes alike");
  });
});
