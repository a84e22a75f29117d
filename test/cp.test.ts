import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import tarStream from "tar-stream";
import { BIN, ok, tempDir, makeTar, makeDockerArchive, type TarFile } from "./helpers.ts";
import { Engine } from "../src/engine/index.ts";
import { copyFromContainer, copyToContainer, splitCpArg } from "../src/engine/cp.ts";
import { isStrataError } from "../src/errors/index.ts";

// ---- fixtures -----------------------------------------------------------------

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Unmounts everything strata may have mounted under the test's directory (registered before tempDir, so it runs first). */
function guardMounts(t: { after: (fn: () => void) => void }, ref: { dir?: string }): void {
  t.after(() => {
    if (!ref.dir) return;
    for (const m of mountsUnder(ref.dir).reverse()) spawnSync("umount", ["-l", m]);
  });
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1])
    .filter((m) => m && m.startsWith(dir + "/"));
}

/** Type, mode, owner, size, mtime, content and link target of every file below `dir`: equal digests, untouched trees. */
function treeDigest(dir: string): string {
  const h = createHash("sha256");
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const abs = join(dir, p);
      const st = lstatSync(abs);
      h.update(`${p}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.mtimeMs}\0${st.rdev}\n`);
      if (st.isFile()) h.update(readFileSync(abs));
      else if (st.isSymbolicLink()) h.update(readlinkSync(abs));
      else if (st.isDirectory()) walk(p);
    }
  };
  walk("");
  return h.digest("hex");
}

interface Fixture {
  dir: string;
  root: string;
  /** a local directory for copies out and sources in */
  local: string;
  /** a host directory outside the store holding only `sentinel` */
  host: string;
  sentinel: string;
  /** runs the CLI on the fixture's root */
  s(args: string[], opts?: { input?: Buffer | string; cwd?: string }): Run;
  /** the image as it was before the container existed: inspect output and every layer snapshot's tree */
  image: { inspect: string; snapshots: Map<string, string> };
}

/**
 * One image of two layers (files with owners and modes, symlinks within the
 * image and symlinks aimed at the host), a container `c1` of it, a local
 * scratch directory and a host sentinel that must never be read or written.
 */
async function setup(t: { after: (fn: () => void) => void }, driver: "overlay" | "vfs" = "overlay"): Promise<Fixture> {
  const ref: { dir?: string } = {};
  guardMounts(t, ref);
  const dir = (ref.dir = tempDir(t, "strata-cp-"));
  const root = join(dir, "root");
  const local = join(dir, "local");
  const host = join(dir, "host");
  mkdirSync(local);
  mkdirSync(host);
  const sentinel = join(host, "sentinel");
  writeFileSync(sentinel, "host secret\n");
  const s = (args: string[], opts: { input?: Buffer | string; cwd?: string } = {}): Run => {
    const r = spawnSync(process.execPath, [BIN, "--root", root, "--storage-driver", driver, ...args], { input: opts.input, cwd: opts.cwd, maxBuffer: 64 << 20 });
    return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr.toString() };
  };
  const l0: TarFile[] = [
    { name: "etc/", type: "directory" },
    { name: "etc/hostname", content: "c1host\n" },
    { name: "etc/passwd", content: "root:x:0:0:root:/root:/bin/sh\n" },
    { name: "dir/", type: "directory", mode: 0o750 },
    { name: "dir/a", content: "A\n", mode: 0o640, uid: 1000, gid: 1001 },
    { name: "dir/link", type: "symlink", linkname: "a" },
    { name: "dir/sub/", type: "directory" },
    { name: "dir/sub/b", content: "B\n", mode: 0o755 },
    { name: "tmp/", type: "directory", mode: 0o1777 },
    { name: "pipe", type: "fifo" },
    { name: "filelink", type: "symlink", linkname: "/etc/hostname" },
    { name: "dirlink", type: "symlink", linkname: "/dir" },
    { name: "escape-root", type: "symlink", linkname: "/" },
    { name: "escape-up", type: "symlink", linkname: "../../../../../../../../../../.." },
    { name: "hostdir", type: "symlink", linkname: host },
    { name: "hostfile", type: "symlink", linkname: sentinel },
  ];
  const l1: TarFile[] = [
    { name: "etc/", type: "directory" },
    { name: "etc/motd", content: "hello\n" },
    { name: "dir/", type: "directory", mode: 0o750 },
    { name: "dir/c", content: "C\n" },
  ];
  writeFileSync(join(dir, "image.tar"), await makeDockerArchive([{ layers: [await makeTar(l0), await makeTar(l1)], tags: ["cp:1"] }]));
  const must = (r: Run, what: string) => ok({ code: r.code, stdout: r.stdout.toString(), stderr: r.stderr }, what);
  must(s(["load", "-i", join(dir, "image.tar")]), "load");
  const inspect = must(s(["inspect", "cp:1"]), "inspect").stdout;
  const snapshots = new Map<string, string>();
  for (const id of readdirSync(join(root, "snapshots")).filter((n) => n !== "l")) snapshots.set(id, treeDigest(join(root, "snapshots", id)));
  assert.ok(snapshots.size >= 1);
  must(s(["create", "--name", "c1", "cp:1"]), "create");
  return { dir, root, local, host, sentinel, s, image: { inspect, snapshots } };
}

function good(r: Run, what = "strata cp"): Run {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return r;
}

/** The one-line error contract: exit 1, nothing on stdout, exactly this on stderr. */
function fails(r: Run, stderr: string | RegExp): void {
  assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout.length, 0);
  assert.match(r.stderr, /^Error: [^\n]+\n$/);
  if (typeof stderr === "string") assert.equal(r.stderr, stderr);
  else assert.match(r.stderr, stderr);
}

/** Reads the container's merged root through `strata mount`, then unmounts it. */
function inContainer<T>(f: Fixture, fn: (merged: string) => T): T {
  const merged = good(f.s(["mount", "c1"]), "mount").stdout.toString().trim();
  try {
    return fn(merged);
  } finally {
    good(f.s(["umount", "c1"]), "umount");
  }
}

/** The image did not change: same inspect output, every layer snapshot byte for byte as before. */
function imageUntouched(f: Fixture): void {
  assert.equal(good(f.s(["inspect", "cp:1"])).stdout.toString(), f.image.inspect);
  for (const [id, digest] of f.image.snapshots) assert.equal(treeDigest(join(f.root, "snapshots", id)), digest, `layer snapshot ${id} changed`);
}

function sentinelUntouched(f: Fixture, mtimeMs: number): void {
  assert.equal(readFileSync(f.sentinel, "utf8"), "host secret\n");
  assert.equal(statSync(f.sentinel).mtimeMs, mtimeMs);
  assert.deepEqual(readdirSync(f.host), ["sentinel"]);
}

/** Entries of a tar: name → header. */
async function tarEntries(buf: Buffer): Promise<Map<string, tarStream.Header & { body: string; data: Buffer }>> {
  const out = new Map<string, tarStream.Header & { body: string; data: Buffer }>();
  const ex = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("entry", (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c: unknown) => chunks.push(c as Buffer));
      stream.on("end", () => {
        const data = Buffer.concat(chunks);
        out.set(h.name, { ...h, body: data.toString(), data });
        next();
      });
    });
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  ex.end(buf);
  await done;
  return out;
}

const owner = (p: string) => {
  const st = lstatSync(p);
  return `${st.uid}:${st.gid}`;
};
const mode = (p: string) => (lstatSync(p).mode & 0o7777).toString(8);

// ---- argument forms ----------------------------------------------------------

test("CONTAINER:PATH is split as docker cp splits it", () => {
  assert.deepEqual(splitCpArg("c1:/etc"), { container: "c1", path: "/etc" });
  assert.deepEqual(splitCpArg("c1:"), { container: "c1", path: "" });
  assert.deepEqual(splitCpArg("/abs:colon"), { path: "/abs:colon" });
  assert.deepEqual(splitCpArg("./rel:colon"), { path: "./rel:colon" });
  assert.deepEqual(splitCpArg("plain"), { path: "plain" });
  assert.deepEqual(splitCpArg("-"), { path: "-" });
});

// ---- container → local --------------------------------------------------------

test("container → local: a file to a new file, over a file, into a directory; DEST/ must be a directory", async (t) => {
  const f = await setup(t);
  const L = f.local;
  good(f.s(["cp", "c1:/etc/hostname", join(L, "h")]));
  assert.equal(readFileSync(join(L, "h"), "utf8"), "c1host\n");
  assert.equal(mode(join(L, "h")), "644");
  writeFileSync(join(L, "existing"), "old old old\n");
  good(f.s(["cp", "c1:etc/motd", join(L, "existing")]), "a path without the leading slash is from the container's root");
  assert.equal(readFileSync(join(L, "existing"), "utf8"), "hello\n", "overwritten: the upper layer's file");
  good(f.s(["cp", "c1:/etc/hostname", L]));
  assert.equal(readFileSync(join(L, "hostname"), "utf8"), "c1host\n", "into an existing directory, under its own name");
  good(f.s(["cp", "c1:/etc/passwd", "rel-passwd"], { cwd: L }));
  assert.match(readFileSync(join(L, "rel-passwd"), "utf8"), /^root:x:0:0/, "a relative DEST is relative to the working directory");
  good(f.s(["cp", "c1:/dir/../etc/./hostname", join(L, "cleaned")]));
  assert.equal(readFileSync(join(L, "cleaned"), "utf8"), "c1host\n");

  fails(f.s(["cp", "c1:/etc/hostname", join(L, "nodir") + "/"]), "Error: no such directory\n");
  assert.ok(!existsSync(join(L, "nodir")));
  fails(f.s(["cp", "c1:/etc/hostname", join(L, "missing", "x")]), `Error: invalid output path: directory "${join(L, "missing")}" does not exist\n`);
  // A symlink as DEST is followed, even a dangling one.
  symlinkSync("target-file", join(L, "dangling"));
  good(f.s(["cp", "c1:/etc/hostname", join(L, "dangling")]));
  assert.ok(lstatSync(join(L, "dangling")).isSymbolicLink());
  assert.equal(readFileSync(join(L, "target-file"), "utf8"), "c1host\n");
  assert.deepEqual(mountsUnder(f.root), []);
});

test("container → local: a directory is created, copied into an existing one, or its contents with /.; never over a file", async (t) => {
  const f = await setup(t);
  const L = f.local;
  good(f.s(["cp", "c1:/dir", join(L, "new")]));
  assert.deepEqual(readdirSync(join(L, "new")).sort(), ["a", "c", "link", "sub"]);
  assert.equal(readFileSync(join(L, "new", "a"), "utf8"), "A\n");
  assert.equal(readFileSync(join(L, "new", "c"), "utf8"), "C\n", "the merged view: both layers");
  assert.equal(readlinkSync(join(L, "new", "link")), "a", "a symlink is copied as a symlink");
  assert.equal(mode(join(L, "new")), "750", "modes are kept");
  assert.equal(mode(join(L, "new", "a")), "640");
  assert.equal(mode(join(L, "new", "sub", "b")), "755");
  assert.equal(owner(join(L, "new", "a")), `${process.getuid!()}:${process.getgid!()}`, "without -a, owned by the user who copies");

  good(f.s(["cp", "-a", "c1:/dir", join(L, "archive")]));
  assert.equal(owner(join(L, "archive", "a")), "1000:1001", "-a keeps the ids");

  good(f.s(["cp", "c1:/dir", L]));
  assert.deepEqual(readdirSync(join(L, "dir")).sort(), ["a", "c", "link", "sub"], "into an existing directory, under its own name");

  mkdirSync(join(L, "contents"), { mode: 0o700 });
  good(f.s(["cp", "c1:/dir/.", join(L, "contents")]));
  assert.deepEqual(readdirSync(join(L, "contents")).sort(), ["a", "c", "link", "sub"], "/. copies the contents");
  assert.equal(mode(join(L, "contents")), "700", "the existing directory keeps its own mode");
  good(f.s(["cp", "c1:/dir/.", join(L, "contents-new")]));
  assert.deepEqual(readdirSync(join(L, "contents-new")).sort(), ["a", "c", "link", "sub"]);
  good(f.s(["cp", "c1:/dir/", join(L, "slash") + "/"]));
  assert.deepEqual(readdirSync(join(L, "slash")).sort(), ["a", "c", "link", "sub"], "DEST/ is created for a directory");

  writeFileSync(join(L, "file"), "f");
  fails(f.s(["cp", "c1:/dir", join(L, "file")]), "Error: cannot copy directory\n");
  assert.equal(readFileSync(join(L, "file"), "utf8"), "f");
  // Merging never turns a directory into a file or back.
  mkdirSync(join(L, "clash", "dir"), { recursive: true });
  writeFileSync(join(L, "clash", "dir", "sub"), "I am a file");
  fails(f.s(["cp", "c1:/dir", join(L, "clash")]), /^Error: cannot overwrite non-directory ".*\/clash\/dir\/sub" with directory/);
  assert.equal(readFileSync(join(L, "clash", "dir", "sub"), "utf8"), "I am a file");

  good(f.s(["cp", "c1:/", join(L, "rootfs")]));
  assert.deepEqual(readdirSync(join(L, "rootfs")).sort(), ["dev", "dir", "dirlink", "escape-root", "escape-up", "etc", "filelink", "hostdir", "hostfile", "pipe", "proc", "sys", "tmp"]);
  assert.equal(readlinkSync(join(L, "rootfs", "escape-root")), "/", "symlinks in a copied tree are not followed");
  assert.ok(lstatSync(join(L, "rootfs", "pipe")).isFIFO());
  assert.equal(mode(join(L, "rootfs", "tmp")), "1777");
  assert.deepEqual(mountsUnder(f.root), []);
});

test("errors, one line as docker prints them, and no mount left behind", async (t) => {
  const f = await setup(t);
  const L = f.local;
  fails(f.s(["cp", "c1:/nope", L]), "Error: Could not find the file /nope in container c1\n");
  fails(f.s(["cp", "c1:nope/deeper", L]), "Error: Could not find the file nope/deeper in container c1\n");
  fails(f.s(["cp", "c1:/etc/hostname/.", L]), /not a directory/);
  fails(f.s(["cp", "x:/etc", L]), "Error: No such container: x\n");
  writeFileSync(join(L, "f"), "f");
  fails(f.s(["cp", join(L, "f"), "x:/tmp"]), "Error: No such container: x\n");
  fails(f.s(["cp", join(L, "nope"), "c1:/tmp"]), `Error: lstat ${join(L, "nope")}: no such file or directory\n`);
  fails(f.s(["cp", "nope", "c1:/tmp"], { cwd: L }), `Error: lstat ${join(L, "nope")}: no such file or directory\n`);
  fails(f.s(["cp", join(L, "f"), join(L, "g")]), "Error: must specify at least one container source\n");
  fails(f.s(["cp", "c1:/etc", "c1:/tmp"]), "Error: copying between containers is not supported\n");
  fails(f.s(["cp", join(L, "f"), "c1:/pipe"]), 'Error: destination "c1:/pipe" must be a directory or a regular file\n');
  const usage = f.s(["cp", "c1:/etc"]);
  assert.equal(usage.code, 125);
  assert.match(usage.stderr, /"strata cp" requires exactly 2 arguments/);
  assert.deepEqual(mountsUnder(f.root), [], "failed copies unmount what they mounted");
  assert.deepEqual(readdirSync(L), ["f"], "failed copies wrote nothing");
});

// ---- local → container ---------------------------------------------------------

for (const driver of ["overlay", "vfs"] as const) {
  test(`${driver}: local → container: files and directories by docker's rules, into the writable layer only`, async (t) => {
    const f = await setup(t, driver);
    const L = f.local;
    writeFileSync(join(L, "f"), "F\n");
    chmodSync(join(L, "f"), 0o600);
    chownSync(join(L, "f"), 1234, 4321);
    mkdirSync(join(L, "ld", "sub"), { recursive: true });
    writeFileSync(join(L, "ld", "x"), "X\n");
    writeFileSync(join(L, "ld", "sub", "y"), "Y\n");
    chmodSync(join(L, "ld"), 0o711);
    chownSync(join(L, "ld", "x"), 7, 8);
    writeFileSync(join(L, ".wh.hostname"), "not a whiteout\n");

    good(f.s(["cp", join(L, "f"), "c1:/newfile"]));
    good(f.s(["cp", "-a", join(L, "f"), "c1:/newfile-a"]));
    good(f.s(["cp", join(L, "f"), "c1:/etc/hostname"]));
    good(f.s(["cp", join(L, "f"), "c1:/etc"]));
    good(f.s(["cp", "f", "c1:tmp/"], { cwd: L }));
    good(f.s(["cp", join(L, ".wh.hostname"), "c1:/etc/"]));
    good(f.s(["cp", join(L, "ld"), "c1:/newdir"]));
    good(f.s(["cp", join(L, "ld"), "c1:/etc"]));
    good(f.s(["cp", join(L, "ld") + "/.", "c1:/dir"]));
    good(f.s(["cp", "-a", join(L, "ld"), "c1:/newdir-a/"]));
    fails(f.s(["cp", join(L, "f"), "c1:/nodir/"]), "Error: no such directory\n");
    fails(f.s(["cp", join(L, "f"), "c1:/nope/x"]), "Error: Could not find the file /nope in container c1\n");
    fails(f.s(["cp", join(L, "f"), "c1:/etc/passwd/x"]), "Error: extraction point is not a directory\n");
    fails(f.s(["cp", join(L, "ld"), "c1:/etc/passwd"]), "Error: cannot copy directory\n");
    fails(f.s(["cp", join(L, "ld"), "c1:/dir/a/"]), "Error: cannot copy directory\n");
    mkdirSync(join(L, "clash", "a"), { recursive: true });
    fails(f.s(["cp", join(L, "clash") + "/.", "c1:/dir"]), /^Error: cannot overwrite non-directory "\/dir\/a" with directory "\/dir"\n$/);
    writeFileSync(join(L, "sub"), "file over a directory");
    fails(f.s(["cp", join(L, "sub"), "c1:/dir/"]), /^Error: cannot overwrite directory "\/dir\/sub" with non-directory "\/dir"\n$/);
    assert.deepEqual(mountsUnder(f.root), []);

    inContainer(f, (m) => {
      assert.equal(readFileSync(join(m, "newfile"), "utf8"), "F\n");
      assert.equal(owner(join(m, "newfile")), "0:0", "without -a, owned by root in the container");
      assert.equal(mode(join(m, "newfile")), "600");
      assert.equal(owner(join(m, "newfile-a")), "1234:4321", "-a keeps the ids");
      assert.equal(readFileSync(join(m, "etc", "hostname"), "utf8"), "F\n", "a lower-layer file, replaced (copied up)");
      assert.equal(readFileSync(join(m, "etc", "f"), "utf8"), "F\n");
      assert.equal(readFileSync(join(m, "tmp", "f"), "utf8"), "F\n");
      assert.equal(readFileSync(join(m, "etc", ".wh.hostname"), "utf8"), "not a whiteout\n", ".wh. names are ordinary files in a copy");
      assert.deepEqual(readdirSync(join(m, "newdir")).sort(), ["sub", "x"]);
      assert.equal(mode(join(m, "newdir")), "711");
      assert.equal(owner(join(m, "newdir", "x")), "0:0");
      assert.equal(owner(join(m, "newdir-a", "x")), "7:8");
      assert.equal(readFileSync(join(m, "etc", "ld", "sub", "y"), "utf8"), "Y\n");
      assert.deepEqual(readdirSync(join(m, "dir")).sort(), ["a", "c", "link", "sub", "x"], "/. merges the contents");
      assert.equal(mode(join(m, "dir")), "750", "the existing directory keeps its mode");
      assert.equal(readFileSync(join(m, "dir", "a"), "utf8"), "A\n");
      assert.ok(!existsSync(join(m, "nodir")) && !existsSync(join(m, "nope")));
    });

    const diff = good(f.s(["diff", "c1"])).stdout.toString().split("\n").filter(Boolean);
    for (const line of ["C /etc", "C /etc/hostname", "A /etc/f", "A /etc/.wh.hostname", "A /etc/ld", "A /etc/ld/sub/y", "A /newfile", "A /newdir", "A /newdir/x", "C /dir", "A /dir/x", "A /tmp/f"])
      assert.ok(diff.includes(line), `strata diff lists ${line}:\n${diff.join("\n")}`);
    assert.ok(!diff.some((l) => l.startsWith("D ")), "nothing deleted");
    imageUntouched(f);
    // A second container of the image sees none of it.
    const other = good(f.s(["create", "cp:1"])).stdout.toString().trim();
    const otherTar = await tarEntries(good(f.s(["cp", `${other}:/etc/hostname`, "-"])).stdout);
    assert.equal(otherTar.get("hostname")?.body, "c1host\n");
    assert.deepEqual(mountsUnder(f.root), []);
  });
}

// ---- symlinks ------------------------------------------------------------------

test("-L and symlinks: SRC's last symlink is copied as a link unless -L; DEST's is followed; trailing / follows", async (t) => {
  const f = await setup(t);
  const L = f.local;
  good(f.s(["cp", "c1:/filelink", join(L, "fl")]));
  assert.equal(readlinkSync(join(L, "fl")), "/etc/hostname");
  good(f.s(["cp", "-L", "c1:/filelink", join(L, "fl2")]));
  assert.equal(readFileSync(join(L, "fl2"), "utf8"), "c1host\n");
  assert.ok(lstatSync(join(L, "fl2")).isFile());
  good(f.s(["cp", "--follow-link", "c1:/dirlink", L]));
  assert.deepEqual(readdirSync(join(L, "dirlink")).sort(), ["a", "c", "link", "sub"], "-L copies the target under the link's name");
  good(f.s(["cp", "c1:/dirlink/", join(L, "dl")]));
  assert.deepEqual(readdirSync(join(L, "dl")).sort(), ["a", "c", "link", "sub"]);
  good(f.s(["cp", "c1:/dir/link", join(L, "dirlink-rel")]));
  assert.equal(readlinkSync(join(L, "dirlink-rel")), "a");
  good(f.s(["cp", "-L", "c1:/dir/link", join(L, "dirlink-rel2")]));
  assert.equal(readFileSync(join(L, "dirlink-rel2"), "utf8"), "A\n");

  // Local → container.
  writeFileSync(join(L, "target"), "T\n");
  symlinkSync("target", join(L, "lnk"));
  good(f.s(["cp", join(L, "lnk"), "c1:/tmp/"]));
  good(f.s(["cp", "-L", join(L, "lnk"), "c1:/tmp/followed"]));
  symlinkSync(join(L, "ld-real"), join(L, "ld-link"));
  mkdirSync(join(L, "ld-real"));
  writeFileSync(join(L, "ld-real", "inside"), "I\n");
  good(f.s(["cp", join(L, "ld-link") + "/", "c1:/tmp"]));
  // DEST is a symlink in the container: followed within it.
  writeFileSync(join(L, "newhost"), "new hostname\n");
  good(f.s(["cp", join(L, "newhost"), "c1:/filelink"]));
  inContainer(f, (m) => {
    assert.equal(readlinkSync(join(m, "tmp", "lnk")), "target");
    assert.equal(readFileSync(join(m, "tmp", "followed"), "utf8"), "T\n");
    assert.ok(lstatSync(join(m, "tmp", "followed")).isFile());
    assert.equal(readFileSync(join(m, "tmp", "ld-link", "inside"), "utf8"), "I\n", "SRC/ follows the link and keeps its name");
    assert.ok(lstatSync(join(m, "filelink")).isSymbolicLink());
    assert.equal(readFileSync(join(m, "etc", "hostname"), "utf8"), "new hostname\n");
  });
  imageUntouched(f);
});

test("symlinks aimed at / or out of the root never make cp read or write host files", async (t) => {
  const f = await setup(t);
  const L = f.local;
  const sentinelMtime = statSync(f.sentinel).mtimeMs;
  const probe = `strata-cp-probe-${randomBytes(6).toString("hex")}`;
  writeFileSync(join(L, probe), "probe\n");

  // Reading: the host's sentinel is not in the container, whichever way it is named.
  fails(f.s(["cp", "-L", "c1:/hostfile", join(L, "o1")]), "Error: Could not find the file /hostfile in container c1\n");
  fails(f.s(["cp", `c1:/hostdir/sentinel`, join(L, "o2")]), "Error: Could not find the file /hostdir/sentinel in container c1\n");
  fails(f.s(["cp", `c1:/escape-up${f.sentinel}`, join(L, "o3")]), `Error: Could not find the file /escape-up${f.sentinel} in container c1\n`);
  fails(f.s(["cp", `c1:/escape-root/../../..${f.sentinel}`, join(L, "o4")]), /Could not find the file/);
  good(f.s(["cp", "c1:/escape-up/etc/hostname", join(L, "o5")]));
  assert.equal(readFileSync(join(L, "o5"), "utf8"), "c1host\n", "../../.. stops at the container's root: its /etc/hostname, not the host's");
  good(f.s(["cp", "c1:/hostfile", join(L, "o6")]));
  assert.equal(readlinkSync(join(L, "o6")), f.sentinel, "copied as the symlink it is, never read through");
  good(f.s(["cp", "-L", "c1:/escape-root", join(L, "o7")]));
  assert.deepEqual(readdirSync(join(L, "o7")).sort(), ["dev", "dir", "dirlink", "escape-root", "escape-up", "etc", "filelink", "hostdir", "hostfile", "pipe", "proc", "sys", "tmp"], "-L on a link to / copies the container's root");
  good(f.s(["cp", "c1:/escape-up/.", join(L, "o8")]));
  assert.deepEqual(readdirSync(join(L, "o8")).sort(), readdirSync(join(L, "o7")).sort());
  fails(f.s(["cp", "-L", "c1:/hostdir", "-"]), "Error: Could not find the file /hostdir in container c1\n");
  const tar = await tarEntries(good(f.s(["cp", "c1:/escape-up", "-"])).stdout);
  assert.deepEqual([...tar.keys()], ["escape-up"], "a tar of the link, not of what it points at");
  for (const [, e] of tar) assert.ok(!e.body.includes("host secret"));
  const noSecret = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) noSecret(join(dir, e.name));
      else if (e.isFile()) assert.ok(!readFileSync(join(dir, e.name), "utf8").includes("host secret"), `${join(dir, e.name)} holds the sentinel's content`);
    }
  };
  noSecret(L);

  // Writing: through the same links, into the container or nowhere.
  fails(f.s(["cp", join(L, probe), `c1:/escape-up${f.sentinel}`]), `Error: Could not find the file /escape-up${f.host} in container c1\n`);
  fails(f.s(["cp", join(L, probe), "c1:/hostfile"]), `Error: Could not find the file ${f.host} in container c1\n`);
  fails(f.s(["cp", join(L, probe), "c1:/hostdir/"]), "Error: no such directory\n");
  fails(f.s(["cp", join(L, "o7"), "c1:/hostdir"]), `Error: Could not find the file ${f.dir} in container c1\n`);
  good(f.s(["cp", join(L, probe), "c1:/escape-up/etc/"]));
  good(f.s(["cp", join(L, probe), "c1:/escape-root/"]));
  assert.ok(!existsSync(join("/etc", probe)) && !existsSync(join("/", probe)), "nothing written on the host's / or /etc");
  // A hostile tar on stdin: `..` refused, absolute names and symlinked parents contained.
  const hostile = await makeTar([
    { name: "/abs-" + probe, content: "abs" },
    { name: "esc", type: "symlink", linkname: "../../../../../../../../../.." },
    { name: `esc/${probe}`, content: "through esc" },
    { name: "hs", type: "symlink", linkname: f.host },
    { name: "hs/sentinel", content: "pwned\n" },
  ]);
  good(f.s(["cp", "-", "c1:/tmp"], { input: hostile }));
  fails(f.s(["cp", "-", "c1:/tmp"], { input: await makeTar([{ name: `../../../../../..${f.sentinel}`, content: "pwned\n" }]) }), /invalid layer entry .*"\.\." component/);
  fails(f.s(["cp", "-", "c1:/tmp"], { input: await makeTar([{ name: "hl", type: "link", linkname: `../../../../../..${f.sentinel}` }]) }), /hardlink target .* leaves the destination/);
  fails(f.s(["cp", "-", "c1:/tmp"], { input: await makeTar([{ name: "hl", type: "link", linkname: f.sentinel }]) }), /hardlink target .* is not a file in the destination/);
  inContainer(f, (m) => {
    assert.equal(readFileSync(join(m, "etc", probe), "utf8"), "probe\n");
    assert.equal(readFileSync(join(m, probe), "utf8"), "through esc", "a parent symlink to .. is followed within the root");
    assert.equal(readFileSync(join(m, "tmp", "abs-" + probe), "utf8"), "abs", "an absolute name lands below DEST");
    assert.equal(readFileSync(join(m, f.sentinel), "utf8"), "pwned\n", "a parent symlink to a host path resolves inside the container");
    assert.ok(!existsSync(join(m, "tmp", "hl")));
  });
  sentinelUntouched(f, sentinelMtime);
  assert.ok(!existsSync(join("/", probe)) && !existsSync(join("/", "abs-" + probe)));
  imageUntouched(f);
  assert.deepEqual(mountsUnder(f.root), []);
});

// ---- tar streams ----------------------------------------------------------------

test("- as DEST writes a tar of SRC to stdout; - as SRC extracts a tar from stdin into a directory", async (t) => {
  const f = await setup(t);
  const dirTar = await tarEntries(good(f.s(["cp", "c1:/dir", "-"])).stdout);
  assert.deepEqual([...dirTar.keys()], ["dir/", "dir/a", "dir/c", "dir/link", "dir/sub/", "dir/sub/b"]);
  assert.deepEqual([dirTar.get("dir/a")!.uid, dirTar.get("dir/a")!.gid, dirTar.get("dir/a")!.mode, dirTar.get("dir/a")!.body], [1000, 1001, 0o640, "A\n"], "the tar keeps ids and modes");
  assert.equal(dirTar.get("dir/link")!.linkname, "a");
  assert.equal(dirTar.get("dir/")!.mode, 0o750);
  const contents = await tarEntries(good(f.s(["cp", "c1:/dir/.", "-"])).stdout);
  assert.deepEqual([...contents.keys()], ["./", "./a", "./c", "./link", "./sub/", "./sub/b"]);
  const one = await tarEntries(good(f.s(["container", "cp", "c1:/etc/hostname", "-"])).stdout);
  assert.deepEqual([...one.keys()], ["hostname"]);
  const followed = await tarEntries(good(f.s(["cp", "-L", "c1:/filelink", "-"])).stdout);
  assert.equal(followed.get("filelink")?.body, "c1host\n", "-L: the target's content under the link's name");

  const input = await makeTar([
    { name: "x", content: "X", uid: 55, gid: 66, mode: 0o604 },
    { name: "d/", type: "directory", mode: 0o700, uid: 55 },
    { name: "d/y", content: "Y" },
    { name: "ln", type: "symlink", linkname: "x" },
    { name: "hard", type: "link", linkname: "x" },
    { name: ".wh.passwd", content: "literal" },
  ]);
  good(f.s(["cp", "-", "c1:/tmp"], { input }));
  good(f.s(["cp", "-a", "-", "c1:/etc"], { input }));
  good(f.s(["cp", "-", "c1:/tmp"], { input: good(f.s(["cp", "c1:/dir", "-"])).stdout }));
  fails(f.s(["cp", "-", "c1:/etc/hostname"], { input }), 'Error: destination "c1:/etc/hostname" must be a directory\n');
  fails(f.s(["cp", "-", "c1:/nope"], { input }), 'Error: destination "c1:/nope" must be a directory\n');
  fails(f.s(["cp", "-", "c1:/tmp"], { input: Buffer.alloc(1024, 7) }), /invalid tar/);
  fails(f.s(["cp", "-", "-"]), "Error: must specify at least one container source\n");
  inContainer(f, (m) => {
    assert.equal(readFileSync(join(m, "tmp", "x"), "utf8"), "X");
    assert.equal(owner(join(m, "tmp", "x")), "0:0", "root without -a");
    assert.equal(mode(join(m, "tmp", "x")), "604");
    assert.equal(mode(join(m, "tmp", "d")), "700");
    assert.equal(readlinkSync(join(m, "tmp", "ln")), "x");
    assert.equal(lstatSync(join(m, "tmp", "hard")).ino, lstatSync(join(m, "tmp", "x")).ino, "a hardlink within the tar");
    assert.equal(owner(join(m, "etc", "x")), "55:66", "-a keeps the tar's ids");
    assert.equal(readFileSync(join(m, "etc", "passwd"), "utf8"), "root:x:0:0:root:/root:/bin/sh\n", "a .wh. entry whites nothing out");
    assert.equal(readFileSync(join(m, "etc", ".wh.passwd"), "utf8"), "literal");
    assert.equal(readFileSync(join(m, "tmp", "dir", "a"), "utf8"), "A\n", "a tar out of one copy is the input of another");
  });
  imageUntouched(f);
  assert.deepEqual(mountsUnder(f.root), []);
});

// ---- mounts ------------------------------------------------------------------------

test("a mounted container stays mounted; one cp mounted for itself is unmounted, also when the copy fails", async (t) => {
  const f = await setup(t);
  const merged = good(f.s(["mount", "c1"])).stdout.toString().trim();
  good(f.s(["cp", "c1:/etc/hostname", join(f.local, "h")]));
  fails(f.s(["cp", "c1:/nope", f.local]), /Could not find the file/);
  assert.deepEqual(mountsUnder(f.root), [merged], "still mounted where strata mount put it");
  good(f.s(["umount", "c1"]));
  assert.deepEqual(mountsUnder(f.root), []);

  // Through the API: a destination stream that fails half-way, a source that is not there.
  const engine = new Engine({ root: f.root });
  t.after(() => engine.close());
  const broken = new Writable({
    write(_chunk, _enc, cb) {
      cb(new Error("disk full"));
    },
  });
  await assert.rejects(copyFromContainer(engine, "c1", "/dir", broken), /disk full/);
  assert.deepEqual(mountsUnder(f.root), []);
  // The same in the middle of a big file: the copy fails with the sink's error, nothing throws from the stream.
  const big = randomBytes(3 << 20);
  writeFileSync(join(f.local, "big"), big);
  assert.equal((await copyToContainer(engine, "c1", join(f.local, "big"), "/tmp")).bytes, big.length);
  let writes = 0;
  const midway = new Writable({
    write(_chunk, _enc, cb) {
      cb(++writes > 3 ? new Error("disk full half-way") : null);
    },
  });
  await assert.rejects(copyFromContainer(engine, "c1", "/tmp/big", midway), (e: unknown) => isStrataError(e, "IO") && /disk full half-way/.test(e.message));
  assert.deepEqual(mountsUnder(f.root), []);
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  await copyFromContainer(engine, "c1", "/tmp/big", sink);
  assert.ok((await tarEntries(Buffer.concat(chunks))).get("big")!.data.equals(big), "the whole file comes out");
  await assert.rejects(copyToContainer(engine, "c1", join(f.local, "absent"), "/tmp"), (e: unknown) => isStrataError(e, "NOT_FOUND"));
  assert.deepEqual(mountsUnder(f.root), []);
  await assert.rejects(copyToContainer(engine, "c1", join(f.local, "h"), "/nope/x"), (e: unknown) => isStrataError(e, "NOT_FOUND") && /Could not find the file \/nope in container c1/.test(e.message));
  const r = await copyToContainer(engine, "c1", join(f.local, "h"), "/tmp/");
  assert.equal(r.bytes, "c1host\n".length);
  assert.deepEqual(mountsUnder(f.root), []);
});
