// readTar, the one tar reader: GNU tar is the judge of what an archive holds,
// in every format it writes, however the input is cut into chunks and even
// when the input reuses one buffer for every chunk.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, symlinkSync, linkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { StrataError } from "../src/errors/index.ts";
import { readTar, type TarEntry } from "../src/archive/tar.ts";
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
