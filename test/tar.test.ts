// readTar and TarWriter, the one tar reader and writer: GNU tar is the judge of
// what an archive holds, in every format it writes, however the input is cut
// into chunks and even when the input reuses one buffer for every chunk; and
// GNU tar lists and extracts what TarWriter writes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, symlinkSync, linkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { StrataError } from "../src/errors/index.ts";
import { encodeTarHeader, readTar, TarWriter, type TarEntry, type TarWriteHeader } from "../src/archive/tar.ts";
import { rejectsCode, tempDir } from "./helpers.ts";

/** The buffers as an input. */
async function* of(...bufs: Buffer[]): AsyncGenerator<Buffer> {
  yield* bufs;
}

interface Seen {
  name: string;
  type: string | undefined;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  sha: string;
}

/** Chunks of `buf`, `size(i)` bytes each, every one copied into the same reused buffer (the old one overwritten). */
async function* reused(buf: Buffer, size: (i: number) => number): AsyncGenerator<Buffer> {
  const scratch = Buffer.alloc(buf.length);
  let last = 0;
  for (let off = 0, i = 0; off < buf.length; i++) {
    const n = Math.min(Math.max(1, size(i)), buf.length - off);
    scratch.fill(0xee, 0, last); // whatever a reader kept from the last chunk is garbage now
    last = n;
    buf.copy(scratch, 0, off, off + n);
    yield scratch.subarray(0, n);
    off += n;
  }
}

async function read(input: AsyncIterable<Buffer>): Promise<Seen[]> {
  const seen: Seen[] = [];
  await readTar(input, (e: TarEntry) => {
    const hash = createHash("sha256");
    const s: Seen = { name: e.name, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, mtime: Math.floor(e.mtime), linkname: e.linkname, sha: "" };
    seen.push(s);
    return {
      data: (p) => {
        hash.update(p);
      },
      end: () => {
        s.sha = hash.digest("hex");
      },
    };
  });
  return seen;
}

/** What GNU tar lists: type letter, mode, uid/gid, size and name (link targets after " -> " / " link to "). */
function gnuList(file: string): { name: string; type: string; size: number; uid: number; gid: number; link: string }[] {
  const out = execFileSync("tar", ["--list", "--verbose", "--numeric-owner", "--quoting-style=literal", "--full-time", "-f", file], { encoding: "utf8" });
  return out
    .trim()
    .split("\n")
    .map((line) => {
      const m = /^(\S)\S{9} (\d+)\/(\d+)\s+(\d+|\d+,\s*\d+) \S+ \S+ (.*)$/.exec(line);
      assert.ok(m, `tar listing line: ${line}`);
      let [, type, uid, gid, size, rest] = m;
      let link = "";
      const arrow = rest.indexOf(type === "l" ? " -> " : " link to ");
      if ((type === "l" || type === "h" || type === "-") && arrow > 0) {
        link = rest.slice(arrow + (type === "l" ? 4 : 9));
        rest = rest.slice(0, arrow);
        if (type === "-") type = "h"; // GNU tar shows hardlinks as "-" with "link to"
      }
      return { name: rest.replace(/\/$/, ""), type, size: /,/.test(size) ? 0 : Number(size), uid: Number(uid), gid: Number(gid), link };
    });
}

/** GNU tar's archive of "a" (5000 bytes) and "b" (1 byte), in `format`. */
function twoFiles(t: { after: (fn: () => void) => void }, format: string): Buffer {
  const dir = tempDir(t);
  const root = join(dir, "src");
  mkdirSync(root);
  writeFileSync(join(root, "a"), "a".repeat(5000));
  writeFileSync(join(root, "b"), "b");
  const file = join(dir, "ok.tar");
  execFileSync("tar", ["--create", `--format=${format}`, "-f", file, "-C", root, "a", "b"]);
  return readFileSync(file);
}

/** Writes a header block's checksum again after an edit. */
function reseal(block: Buffer, at = 0): Buffer {
  block.write("        ", at + 148, "latin1");
  let sum = 0;
  for (let i = at; i < at + 512; i++) sum += block[i];
  block.write(sum.toString(8).padStart(6, "0") + "\0 ", at + 148, "latin1");
  return block;
}

const LETTER: Record<string, string> = { file: "-", directory: "d", symlink: "l", link: "h", "character-device": "c", "block-device": "b", fifo: "p" };

function tree(dir: string): string {
  const root = join(dir, "src");
  const long = "l".repeat(60) + "/" + "m".repeat(60) + "/" + "n".repeat(90);
  mkdirSync(join(root, long), { recursive: true });
  writeFileSync(join(root, long, "deep-file-with-a-long-name-" + "x".repeat(80)), "deep\n");
  // 130 bytes: over ustar's 100-byte name, split into its prefix and name fields
  mkdirSync(join(root, "p".repeat(70)));
  writeFileSync(join(root, "p".repeat(70), "q".repeat(55)), "split\n");
  writeFileSync(join(root, "empty"), "");
  writeFileSync(join(root, "block-513"), Buffer.alloc(513, 7));
  writeFileSync(join(root, "random"), createHash("sha512").update("seed").digest().toString("hex").repeat(600)); // 77 KB
  writeFileSync(join(root, "ünïcødé"), "utf-8 name\n");
  symlinkSync("random", join(root, "to-random"));
  symlinkSync("t".repeat(150), join(root, "long-target"));
  linkSync(join(root, "block-513"), join(root, "hard"));
  execFileSync("mkfifo", [join(root, "fifo")]);
  if (process.getuid?.() === 0) execFileSync("mknod", [join(root, "null"), "c", "1", "3"]);
  return root;
}

test("readTar reads what GNU tar lists, in the gnu, posix, ustar and v7 formats, however the input is chunked", async (t) => {
  const dir = tempDir(t);
  const root = tree(dir);
  for (const format of ["gnu", "posix", "ustar", "v7"]) {
    const file = join(dir, `${format}.tar`);
    // ustar and v7 cannot hold every name here: those are left out, the rest must still read the same.
    const args = format === "ustar" || format === "v7" ? ["--exclude=long-target", "--exclude=l*l", "--exclude=ünïcødé"] : [];
    if (format === "v7") args.push("--exclude=fifo", "--exclude=null", "--exclude=p*p");
    execFileSync("tar", ["--create", `--format=${format}`, "--sort=name", "--owner=1234", "--group=5678", "-f", file, ...args, "-C", root, "."]);
    const buf = readFileSync(file);
    const whole = await read(of(buf));
    const listed = gnuList(file);
    assert.deepEqual(
      whole.map((e) => ({ name: e.name.replace(/\/$/, ""), type: LETTER[e.type!] ?? "?", size: e.size, uid: e.uid, gid: e.gid, link: e.type === "symlink" || e.type === "link" ? e.linkname : "" })),
      listed,
      `${format}: as GNU tar lists it`,
    );
    const random = whole.find((e) => e.name === "./random")!;
    assert.equal(random.sha, createHash("sha256").update(readFileSync(join(root, "random"))).digest("hex"), `${format}: file data`);
    for (const cut of [() => 1, () => 511, () => 512, () => 4096, (i: number) => 1 + ((i * 7919) % 3000)]) {
      assert.deepEqual(await read(reused(buf, cut)), whole, `${format}: chunked as ${cut.toString()}`);
    }
  }
});

test("readTar: base-256 ids and a PAX-only mtime fraction; header-only types carry no data whatever their size says", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "src");
  mkdirSync(root);
  writeFileSync(join(root, "f"), "x");
  const gnu = join(dir, "big-ids.tar");
  execFileSync("tar", ["--create", "--format=gnu", "--owner=3000000", "--group=4000000", "-f", gnu, "-C", root, "f"]);
  const [e] = await read(of(readFileSync(gnu)));
  assert.deepEqual([e.uid, e.gid], [3000000, 4000000]);

  // A symlink header whose size field says 1024: the next header follows it directly (as Go's reader, and so Docker, reads it).
  const two = readFileSync(gnu);
  const sym = Buffer.from(two.subarray(0, 512));
  sym.fill(0, 0, 100);
  sym.write("link", 0);
  sym[156] = "2".charCodeAt(0);
  sym.write("target", 157);
  sym.write("00000002000\0", 124, "latin1");
  const seen = await read(of(Buffer.concat([reseal(sym), two])));
  assert.deepEqual(
    seen.map((s) => [s.name, s.type, s.size]),
    [
      ["link", "symlink", 0],
      ["f", "file", 1],
    ],
  );
});

test("readTar refuses malformed archives with one clear INVALID_ARCHIVE error", async (t) => {
  const good = twoFiles(t, "posix");
  const visit = () => undefined;

  await rejectsCode(readTar(of(good.subarray(0, 2048)), visit), "INVALID_ARCHIVE", /^invalid tar: unexpected end of data after entry "a"$/);
  // a PAX header whose entry never comes
  assert.equal(String.fromCharCode(good[156]), "x");
  await rejectsCode(readTar(of(good.subarray(0, 1024)), visit), "INVALID_ARCHIVE", /^invalid tar: unexpected end of data$/);
  await rejectsCode(readTar(of(Buffer.alloc(2048, 0x41)), visit, "layer tar"), "INVALID_ARCHIVE", /^invalid layer tar: bad header checksum$/);
  const flipped = Buffer.from(good);
  flipped[0] ^= 1; // a name byte changed: the checksum no longer matches
  await rejectsCode(readTar(of(flipped), visit), "INVALID_ARCHIVE", /^invalid tar: bad header checksum$/);
  // one zero block, then a header: not an end of archive, and not an entry either
  const lone = Buffer.concat([Buffer.alloc(512), good]);
  await rejectsCode(readTar(of(lone), visit), "INVALID_ARCHIVE", /lone zero block/);
  // a PAX header larger than 1 MiB is refused before it is gathered
  const pax = Buffer.from(good.subarray(0, 512));
  assert.equal(String.fromCharCode(pax[156]), "x");
  pax.write("00010000000\0", 124, "latin1");
  await rejectsCode(readTar(of(reseal(pax)), visit), "INVALID_ARCHIVE", /PAX header of 2097152 bytes/);
  // a size field that is not a number
  const size = Buffer.from(good);
  size.write("0000000x000\0", 124, "latin1");
  await rejectsCode(readTar(of(reseal(size)), visit), "INVALID_ARCHIVE", /^invalid tar: header field size is not a number$/);

  // what follows the end of the archive is read (a verifying input sees its end) and ignored
  let chunks = 0;
  const trailing = (async function* () {
    yield good;
    chunks++;
    yield Buffer.alloc(4096, 0x41);
    chunks++;
  })();
  assert.equal(await readTar(trailing, visit), 2);
  assert.equal(chunks, 2);
});

test("readTar: the input's errors and the visitor's pass through, and the input is closed when reading stops", async (t) => {
  const good = twoFiles(t, "gnu");

  let closed = false;
  const failing = (err: Error) =>
    (async function* () {
      try {
        yield good.subarray(0, 1024);
        throw err;
      } finally {
        closed = true;
      }
    })();
  await rejectsCode(readTar(failing(new StrataError("DIGEST_MISMATCH", "blob sha256:x: digest mismatch")), () => undefined), "DIGEST_MISMATCH");
  await rejectsCode(readTar(failing(new Error("EIO: i/o error")), () => undefined, "layer tar"), "IO", /^reading the layer tar: EIO: i\/o error$/);

  closed = false;
  let reads = 0;
  const endless = (async function* () {
    try {
      for (;;) {
        reads++;
        yield good;
      }
    } finally {
      closed = true;
    }
  })();
  const boom = new StrataError("CONFLICT", "the visitor says no");
  await assert.rejects(
    readTar(endless, (e) => {
      if (e.name === "b") throw boom;
      return undefined;
    }),
    (e) => e === boom,
  );
  assert.equal(closed, true, "the input was closed");
  assert.equal(reads, 1, "nothing was read past the failure");
});

// ---- the writer: GNU tar and readTar read back what TarWriter wrote ----------------------------

/** What `tar.stream` yields, whole. */
async function drained(tar: TarWriter): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of tar.stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** The entries of the writer test, with each one's data. */
function writerEntries(): { h: TarWriteHeader; body?: Buffer; chunked?: boolean }[] {
  const big = Buffer.alloc(3 << 20);
  for (let i = 0; i < big.length; i += 32) createHash("sha256").update(String(i)).digest().copy(big, i);
  const base = { mode: 0o644, uid: 1000, gid: 1000, mtime: 1_600_000_000 };
  return [
    { h: { ...base, name: "dir", type: "directory", mode: 0o750 } },
    { h: { ...base, name: "dir/five", type: "file", size: 5 }, body: Buffer.from("five\n") },
    { h: { ...base, name: "dir/block", type: "file", size: 512, mode: 0o4755 }, body: Buffer.alloc(512, 1) },
    { h: { ...base, name: "dir/empty", type: "file", size: 0, mtime: 0 }, body: Buffer.alloc(0) },
    { h: { ...base, name: "p".repeat(70) + "/" + "q".repeat(55), type: "file", size: 6 }, body: Buffer.from("split\n") },
    { h: { ...base, name: "d".repeat(120) + "/" + "e".repeat(150), type: "file", size: 5 }, body: Buffer.from("long\n") },
    { h: { ...base, name: "ünïcødé/файл", type: "file", size: 6 }, body: Buffer.from("utf-8\n") },
    { h: { ...base, name: "big", type: "file", size: big.length }, body: big, chunked: true },
    { h: { ...base, name: "big-ids", type: "file", size: 1, uid: 3_000_000, gid: 4_000_001 }, body: Buffer.from("x") },
    { h: { ...base, name: "old", type: "file", size: 1, mtime: -86400 }, body: Buffer.from("o") },
    { h: { ...base, name: "xattrs", type: "file", size: 1, xattrs: [["user.text", Buffer.from("hello")], ["user.bin", Buffer.from([0, 255, 10, 61, 0, 32])]] }, body: Buffer.from("a") },
    { h: { ...base, name: "to-five", type: "symlink", linkname: "dir/five", mode: 0o777 } },
    { h: { ...base, name: "long-target", type: "symlink", linkname: "t".repeat(150), mode: 0o777 } },
    { h: { ...base, name: "utf-target", type: "symlink", linkname: "ünïcødé/файл", mode: 0o777 } },
    { h: { ...base, name: "hard", type: "link", linkname: "dir/five" } },
    { h: { ...base, name: "null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666, uid: 0, gid: 0 } },
    { h: { ...base, name: "disk", type: "block-device", devmajor: 259, devminor: 70000, mode: 0o660, uid: 0, gid: 6 } },
    { h: { ...base, name: "fifo", type: "fifo", mode: 0o600 } },
  ];
}

async function writeAll(entries: ReturnType<typeof writerEntries>): Promise<Buffer> {
  const tar = new TarWriter();
  const out = drained(tar);
  for (const { h, body, chunked } of entries) {
    if (chunked && body) {
      await tar.add(h, (async function* () {
        for (let off = 0; off < body.length; off += 65_536) yield body.subarray(off, off + 65_536);
      })());
    } else await tar.add(h, body);
  }
  tar.finish();
  return out;
}

test("TarWriter: GNU tar lists, extracts and reads back what it wrote (long and UTF-8 names, big ids, binary xattrs, devices)", async (t) => {
  const dir = tempDir(t);
  const entries = writerEntries();
  const buf = await writeAll(entries);
  assert.equal(buf.length % 512, 0);
  assert.ok(buf.subarray(buf.length - 1024).equals(Buffer.alloc(1024)), "two zero blocks end it");
  assert.deepEqual(await writeAll(writerEntries()), buf, "the same entries give the same bytes");
  const file = join(dir, "w.tar");
  writeFileSync(file, buf);

  // GNU tar lists it without a warning, entry for entry.
  const { spawnSync } = await import("node:child_process");
  const listing = spawnSync("tar", ["--list", "--verbose", "-f", file], { encoding: "utf8" });
  assert.equal(listing.status, 0, listing.stderr);
  assert.equal(listing.stderr, "", "GNU tar has nothing to warn about");
  assert.deepEqual(
    gnuList(file),
    entries.map(({ h }) => ({ name: h.name, type: LETTER[h.type], size: h.type === "file" ? h.size : 0, uid: h.uid, gid: h.gid, link: h.linkname ?? "" })),
  );

  // readTar gives back every field.
  const back: TarEntry[] = [];
  const data = new Map<string, string>();
  await readTar(of(buf), (e) => {
    back.push(e);
    const hash = createHash("sha256");
    return { data: (p) => void hash.update(p), end: () => void data.set(e.name, hash.digest("hex")) };
  });
  assert.equal(back.length, entries.length);
  entries.forEach(({ h, body }, i) => {
    const e = back[i];
    const want = { name: h.type === "directory" ? h.name + "/" : h.name, type: h.type, mode: h.mode, uid: h.uid, gid: h.gid, mtime: h.mtime, linkname: h.linkname ?? "", devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0, size: h.size ?? 0 };
    assert.deepEqual({ name: e.name, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, linkname: e.linkname, devmajor: e.devmajor, devminor: e.devminor, size: e.size }, want, h.name);
    assert.deepEqual(e.xattrs ? [...e.xattrs].sort() : [], [...(h.xattrs ?? [])].sort(), `${h.name}: xattrs`);
    if (h.type === "file") assert.equal(data.get(e.name), createHash("sha256").update(body!).digest("hex"), `${h.name}: data`);
  });

  // GNU tar extracts it as written: modes, owners, times, links, devices and xattrs.
  if (process.getuid?.() !== 0) return t.skip("extraction with owners and devices needs root");
  const out = join(dir, "out");
  mkdirSync(out);
  execFileSync("tar", ["-x", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-permissions", "-f", file, "-C", out]);
  const { lstatSync, readlinkSync } = await import("node:fs");
  const { nativeFs } = await import("../src/native/index.ts");
  for (const { h, body } of entries) {
    const abs = join(out, h.name);
    const st = lstatSync(abs);
    assert.equal(st.mode & 0o7777, h.mode, `${h.name}: mode`);
    assert.deepEqual([st.uid, st.gid], [h.uid, h.gid], `${h.name}: owner`);
    if (h.type !== "symlink" && h.type !== "link" && h.type !== "directory") assert.equal(Math.floor(st.mtimeMs / 1000), h.mtime, `${h.name}: mtime`);
    if (h.type === "file") assert.ok(readFileSync(abs).equals(body!), `${h.name}: data`);
    if (h.type === "symlink") assert.equal(readlinkSync(abs), h.linkname);
    if (h.type === "link") assert.equal(st.ino, lstatSync(join(out, h.linkname!)).ino, `${h.name}: a hardlink`);
    if (h.type === "character-device" || h.type === "block-device")
      assert.deepEqual([(st.rdev >> 8) & 0xfff, (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)], [h.devmajor, h.devminor], `${h.name}: device numbers`);
    for (const [k, v] of h.xattrs ?? []) assert.deepEqual(nativeFs().lgetxattr(abs, k), v, `${h.name}: ${k}`);
  }
});

test("TarWriter: sizes of 8 GiB and more in base-256; ids above 2^21 in PAX; a directory's name gets its slash", async () => {
  const firstHeader = async (blocks: Buffer[]): Promise<TarEntry> => {
    let seen: TarEntry | undefined;
    const stop = new Error("stop");
    await assert.rejects(
      readTar(of(...blocks), (e) => {
        seen = e;
        throw stop;
      }),
      (e) => e === stop,
    );
    return seen!;
  };
  const huge = encodeTarHeader({ name: "huge", type: "file", size: 2 ** 33 + 5, mode: 0o644, uid: 0, gid: 0, mtime: 0 });
  assert.equal(huge.length, 1, "one ustar block, no PAX");
  assert.equal(huge[0][124], 0x80, "base-256 size");
  assert.equal((await firstHeader(huge)).size, 2 ** 33 + 5);
  const ids = encodeTarHeader({ name: "ids", type: "file", size: 0, mode: 0o644, uid: 2 ** 21, gid: 7, mtime: 0 });
  assert.equal(ids.length, 4, "PAX header, records, padding, ustar header");
  assert.deepEqual([(await firstHeader(ids)).uid, (await firstHeader(ids)).gid], [2 ** 21, 7]);
  const d = await firstHeader(encodeTarHeader({ name: "a/b", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: 0 }));
  assert.deepEqual([d.name, d.type], ["a/b/", "directory"]);
});

test("TarWriter: data that is not the header's size is an error, and a reader that goes away fails a waiting add", async () => {
  const h = { name: "f", type: "file" as const, size: 10, mode: 0o644, uid: 0, gid: 0, mtime: 0 };
  const pieces = async function* (...ps: string[]) {
    for (const p of ps) yield Buffer.from(p);
  };
  for (const [body, why] of [[Buffer.from("short"), /fewer than the 10 bytes/], [pieces("12345", "67890", "x"), /more than the 10 bytes/], [pieces("123"), /fewer than the 10 bytes/]] as const) {
    const tar = new TarWriter();
    await rejectsCode(tar.add(h, body), "IO", why);
  }

  // A reader that destroys the stream: the add waiting for room rejects rather than hanging.
  const tar = new TarWriter();
  const endless = (async function* () {
    for (;;) yield Buffer.alloc(1 << 20);
  })();
  const adding = tar.add({ ...h, size: 2 ** 40 }, endless);
  await new Promise((r) => setTimeout(r, 50));
  tar.stream.destroy();
  await rejectsCode(adding, "IO", /closed by its reader/);
  await rejectsCode(tar.add(h, Buffer.alloc(10)), "IO", /closed by its reader/);

  // fail() ends the stream with the error, which the reader sees.
  const failed = new TarWriter();
  const reading = drained(failed);
  await failed.add({ ...h, size: 3 }, Buffer.from("abc"));
  failed.fail(new StrataError("DIGEST_MISMATCH", "blob sha256:x: digest mismatch"), "save");
  await rejectsCode(reading, "DIGEST_MISMATCH");
});
