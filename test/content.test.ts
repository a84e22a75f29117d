// The content store (ingest, verify, resume, locks, clean) and metastore basics, on temp dirs.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync, writeFileSync, openSync, writeSync, closeSync, truncateSync } from "node:fs";
import { join, basename } from "node:path";
import { Readable } from "node:stream";

import { StrataError } from "../src/errors/index.js";
import { ContentStore, type Opener } from "../src/content/index.js";
import { ownerToken } from "../src/content/proc.js";
import { sha256, chainIds, digestHex, type Digest } from "../src/digest/index.js";
import { openMetaStore, type NewImage } from "../src/metastore/index.js";
import { MediaType } from "../src/oci/index.js";
import { REPO, tempDir, rejectsCode } from "./helpers.ts";

/** An owner token naming no live process. */
const DEAD = "999999.1";


async function newStore(t: { after: (fn: () => void) => void }): Promise<ContentStore> {
  const store = new ContentStore(tempDir(t, "strata-content-"));
  await store.init();
  return store;
}

/** An opener over a buffer that records the offsets it was asked for. */
function bufferOpener(buf: Buffer, chunk = 64 * 1024): Opener & { offsets: number[] } {
  const offsets: number[] = [];
  const open = async (offset: number) => {
    offsets.push(offset);
    const parts: Buffer[] = [];
    for (let i = offset; i < buf.length; i += chunk) parts.push(buf.subarray(i, Math.min(i + chunk, buf.length)));
    return Readable.from(parts);
  };
  return Object.assign(open, { offsets });
}

function ingestFiles(store: ContentStore): string[] {
  return readdirSync(store.ingestDir).sort();
}

async function drain(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe("content store", () => {
  test("ingest of a known digest writes blobs/sha256/<hex> and leaves nothing in ingest/", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(300 * 1024 + 17);
    const d = sha256(data);
    const open = bufferOpener(data);
    const info = await store.ingest({ digest: d, size: data.length }, open);
    assert.deepEqual(info, { digest: d, size: data.length });
    assert.deepEqual(open.offsets, [0]);
    const path = join(store.root, "blobs", "sha256", digestHex(d));
    assert.equal(store.blobPath(d), path);
    assert.ok(readFileSync(path).equals(data));
    assert.deepEqual(ingestFiles(store), []);
    assert.deepEqual(await store.stat(d), { digest: d, size: data.length });
    assert.deepEqual(await store.list(), [{ digest: d, size: data.length }]);
    // without a declared size too
    const other = Buffer.from("no size given");
    assert.deepEqual(await store.ingest({ digest: sha256(other) }, bufferOpener(other)), { digest: sha256(other), size: other.length });
    assert.deepEqual(ingestFiles(store), []);
  });

  test("put stores a small buffer; read returns it verified", async (t) => {
    const store = await newStore(t);
    const buf = Buffer.from('{"schemaVersion":2}');
    const info = await store.put(buf);
    assert.deepEqual(info, { digest: sha256(buf), size: buf.length });
    assert.ok((await store.read(info.digest, 1024, buf.length)).equals(buf));
    assert.ok((await drain(await store.open(info.digest, buf.length))).equals(buf));
    await rejectsCode(() => store.read(sha256("absent"), 1024), "NOT_FOUND");
    await rejectsCode(store.open(sha256("absent")), "NOT_FOUND");
    await rejectsCode(() => store.read(info.digest, 4), "CORRUPT");
    await rejectsCode(() => store.read(info.digest, 1024, buf.length + 1), "SIZE_MISMATCH");
  });

  test("ingest of a blob that already exists succeeds without calling the opener", async (t) => {
    const store = await newStore(t);
    const data = Buffer.from("already here\n");
    const d = sha256(data);
    await store.ingest({ digest: d, size: data.length }, bufferOpener(data));
    let called = 0;
    const info = await store.ingest({ digest: d, size: data.length }, async () => {
      called++;
      throw new Error("the opener must not be called for an existing blob");
    });
    assert.equal(called, 0);
    assert.deepEqual(info, { digest: d, size: data.length });
    assert.deepEqual(await store.ingest({ digest: d }, async () => Readable.from([Buffer.from("wrong")])), { digest: d, size: data.length });
    // an existing blob of another size than the caller expects is reported, not overwritten
    await rejectsCode(store.ingest({ digest: d, size: data.length + 1 }, bufferOpener(data)), "SIZE_MISMATCH");
    assert.ok(readFileSync(store.blobPath(d)).equals(data));
    assert.deepEqual(ingestFiles(store), []);
  });

  test("wrong content is DIGEST_MISMATCH: no blob, no ingest leftovers", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(200 * 1024);
    const d = sha256(data);
    const wrong = Buffer.from(data);
    wrong[150_000] ^= 0xff;
    const e = await rejectsCode(store.ingest({ digest: d, size: data.length }, bufferOpener(wrong)), "DIGEST_MISMATCH");
    assert.match(e.message, new RegExp(d));
    assert.equal(await store.stat(d), undefined);
    assert.equal(existsSync(store.blobPath(d)), false);
    assert.deepEqual(ingestFiles(store), []);
    await rejectsCode(store.ingest({ digest: d }, bufferOpener(wrong)), "DIGEST_MISMATCH");
    assert.deepEqual(ingestFiles(store), []);
    // the right content afterwards is stored
    await store.ingest({ digest: d, size: data.length }, bufferOpener(data));
    assert.ok(readFileSync(store.blobPath(d)).equals(data));
  });

  test("too few bytes is SIZE_MISMATCH: no blob, no ingest leftovers", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(100 * 1024);
    const d = sha256(data);
    await rejectsCode(store.ingest({ digest: d, size: data.length }, bufferOpener(data.subarray(0, 60 * 1024))), "SIZE_MISMATCH");
    assert.equal(await store.stat(d), undefined);
    assert.deepEqual(ingestFiles(store), []);
  });

  test("too many bytes is SIZE_MISMATCH: no blob, no ingest leftovers, and the next ingest succeeds", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(100 * 1024);
    const d = sha256(data);
    // garbage that only turns out too long in its second chunk
    const garbage = randomBytes(150 * 1024);
    await rejectsCode(store.ingest({ digest: d, size: data.length }, bufferOpener(garbage, 64 * 1024)), "SIZE_MISMATCH");
    assert.equal(await store.stat(d), undefined);
    assert.deepEqual(ingestFiles(store), [], "a rejected write left partial data behind");
    // a later ingest with the right source must not be poisoned by what the failed one wrote
    const open = bufferOpener(data);
    assert.deepEqual(await store.ingest({ digest: d, size: data.length }, open), { digest: d, size: data.length });
    assert.ok(readFileSync(store.blobPath(d)).equals(data));
  });

  test("an invalid digest is refused before anything is written", async (t) => {
    const store = await newStore(t);
    let called = 0;
    await rejectsCode(
      store.ingest({ digest: "sha256:abc" as Digest }, async () => {
        called++;
        return Readable.from([]);
      }),
      "INVALID_DIGEST",
    );
    assert.equal(called, 0);
    assert.deepEqual(ingestFiles(store), []);
  });

  test("5 concurrent ingests of one digest in one process share one write", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(2 * 1024 * 1024);
    const d = sha256(data);
    let opens = 0;
    const slow: Opener = async (offset) => {
      opens++;
      return Readable.from(
        (async function* () {
          for (let i = offset; i < data.length; i += 256 * 1024) {
            await new Promise((r) => setTimeout(r, 5));
            yield data.subarray(i, i + 256 * 1024);
          }
        })(),
      );
    };
    const results = await Promise.all(Array.from({ length: 5 }, () => store.ingest({ digest: d, size: data.length }, slow)));
    assert.equal(opens, 1, "the opener was called more than once");
    for (const r of results) assert.deepEqual(r, { digest: d, size: data.length });
    assert.ok(readFileSync(store.blobPath(d)).equals(data));
    assert.deepEqual(ingestFiles(store), []);
  });

  test("two processes ingesting one 20 MB blob at once both succeed, with one write", { timeout: 120_000 }, async (t) => {
    const store = await newStore(t);
    const work = tempDir(t, "strata-content-work-");
    const data = randomBytes(20 * 1024 * 1024);
    const d = sha256(data);
    const source = join(work, "source.bin");
    writeFileSync(source, data);

    // Each child: announce itself, wait for the other (so the ingests overlap), then ingest slowly.
    const script = `
      import { ContentStore } from ${JSON.stringify(join(REPO, "src", "content", "index.ts"))};
      import { Readable } from "node:stream";
      import { existsSync, writeFileSync } from "node:fs";
      import { open } from "node:fs/promises";
      const [root, source, digest, size, me, other] = process.argv.slice(1);
      writeFileSync(me, "");
      const deadline = Date.now() + 60000;
      while (!existsSync(other)) {
        if (Date.now() > deadline) throw new Error("the other writer never started");
        await new Promise((r) => setTimeout(r, 10));
      }
      const store = new ContentStore(root);
      await store.init();
      const offsets = [];
      const info = await store.ingest({ digest, size: Number(size) }, async (offset) => {
        offsets.push(offset);
        return Readable.from((async function* () {
          const fh = await open(source, "r");
          try {
            for (let pos = offset; ; ) {
              const buf = Buffer.alloc(1024 * 1024);
              const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
              if (bytesRead === 0) return;
              pos += bytesRead;
              await new Promise((r) => setTimeout(r, 40));
              yield buf.subarray(0, bytesRead);
            }
          } finally {
            await fh.close();
          }
        })());
      });
      process.stdout.write(JSON.stringify({ info, offsets }));
    `;
    const children: ChildProcess[] = [];
    t.after(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    });
    const run = (me: string, other: string) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "--input-type=module", "-e", script, store.root, source, d, String(data.length), join(work, me), join(work, other)],
          { cwd: REPO },
        );
        children.push(child);
        let stdout = "";
        let stderr = "";
        child.stdout!.on("data", (c) => (stdout += c));
        child.stderr!.on("data", (c) => (stderr += c));
        child.on("close", (code) => resolve({ code, stdout, stderr }));
      });
    const [a, b] = await Promise.all([run("ready-a", "ready-b"), run("ready-b", "ready-a")]);
    assert.equal(a.code, 0, `writer a failed: ${a.stderr}`);
    assert.equal(b.code, 0, `writer b failed: ${b.stderr}`);
    const ra = JSON.parse(a.stdout) as { info: { digest: string; size: number }; offsets: number[] };
    const rb = JSON.parse(b.stdout) as { info: { digest: string; size: number }; offsets: number[] };
    assert.deepEqual(ra.info, { digest: d, size: data.length });
    assert.deepEqual(rb.info, { digest: d, size: data.length });
    assert.deepEqual([...ra.offsets, ...rb.offsets], [0], "exactly one of the two processes wrote the blob, from the start");
    assert.ok(readFileSync(store.blobPath(d)).equals(data), "the stored blob is not the content");
    assert.deepEqual(ingestFiles(store), []);
  });

  test("a partial ingest left by a dead writer is resumed from its length", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const d = sha256(data);
    const hex = digestHex(d);
    const partial = 1_234_567;
    writeFileSync(join(store.ingestDir, `${hex}.data`), data.subarray(0, partial));
    writeFileSync(join(store.ingestDir, `${hex}.lock`), DEAD);
    const open = bufferOpener(data);
    const info = await store.ingest({ digest: d, size: data.length }, open);
    assert.deepEqual(open.offsets, [partial], "the opener was not asked for the rest only");
    assert.deepEqual(info, { digest: d, size: data.length });
    assert.ok(readFileSync(store.blobPath(d)).equals(data));
    assert.deepEqual(ingestFiles(store), []);
  });

  test("an empty lock left by a writer killed while making it does not hold the digest's ingest forever", { timeout: 30_000 }, async (t) => {
    const store = await newStore(t);
    const data = randomBytes(1000);
    const d = sha256(data);
    writeFileSync(join(store.ingestDir, `${digestHex(d)}.lock`), "");
    const info = await store.ingest({ digest: d, size: data.length }, bufferOpener(data));
    assert.deepEqual(info, { digest: d, size: data.length });
    assert.deepEqual(ingestFiles(store), [], "the lock, and the private file it is made in, are gone");
  });

  test("read() and open() of a blob corrupted on disk fail with DIGEST_MISMATCH", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(2 * 1024 * 1024 + 3);
    const { digest } = await store.put(data);
    const fd = openSync(store.blobPath(digest), "r+");
    writeSync(fd, Buffer.from([data[1_500_000] ^ 0x01]), 0, 1, 1_500_000);
    closeSync(fd);
    await rejectsCode(() => store.read(digest, 4 * 1024 * 1024), "DIGEST_MISMATCH");
    await rejectsCode(() => store.read(digest, 4 * 1024 * 1024, data.length), "DIGEST_MISMATCH");
    await rejectsCode(
      (async () => drain(await store.open(digest)))(),
      "DIGEST_MISMATCH",
    );
    await rejectsCode(
      (async () => drain(await store.open(digest, data.length)))(),
      "DIGEST_MISMATCH",
    );
    // a truncated blob is a size mismatch when the size is known
    truncateSync(store.blobPath(digest), 1000);
    await rejectsCode(
      (async () => drain(await store.open(digest, data.length)))(),
      "SIZE_MISMATCH",
    );
    await rejectsCode(() => store.read(digest, 4 * 1024 * 1024), "DIGEST_MISMATCH");
  });

  test("chunks() reads from an offset into two reused buffers, and hands out no last chunk of a wrong blob", async (t) => {
    const store = await newStore(t);
    const data = randomBytes(2 * 1024 * 1024 + 3);
    const { digest } = await store.put(data);
    const collect = async (offset: number, size = data.length) => {
      const got: Buffer[] = [];
      const buffers = new Set<ArrayBuffer>();
      for await (const c of store.chunks(digest, size, offset)) {
        got.push(Buffer.from(c));
        buffers.add(c.buffer as ArrayBuffer);
      }
      return { bytes: Buffer.concat(got), buffers: buffers.size };
    };
    for (const offset of [0, 1, 1024 * 1024, data.length - 1, data.length]) {
      const { bytes, buffers } = await collect(offset);
      assert.ok(bytes.equals(data.subarray(offset)), `offset ${offset}`);
      // Three chunks of 1 MiB, read one ahead: two buffers, never one per chunk.
      assert.ok(buffers <= 2, `offset ${offset}: ${buffers} buffers`);
    }
    await rejectsCode(collect(0, data.length + 1), "SIZE_MISMATCH");
    // A flipped byte (even one before the offset) fails the read before the chunk that completes the blob.
    const fd = openSync(store.blobPath(digest), "r+");
    writeSync(fd, Buffer.from([data[10] ^ 0x01]), 0, 1, 10);
    closeSync(fd);
    let seen = 0;
    await rejectsCode(
      (async () => {
        for await (const c of store.chunks(digest, data.length, 5)) seen += c.length;
      })(),
      "DIGEST_MISMATCH",
    );
    assert.ok(seen < data.length - 5, `${seen} bytes handed out`);
    // Longer on disk than expected.
    writeFileSync(store.blobPath(digest), Buffer.concat([data, Buffer.from("x")]));
    await rejectsCode(collect(0), "SIZE_MISMATCH");
    await rejectsCode(store.chunks(sha256("absent"), 6).next(), "NOT_FOUND");
  });

  test("cleanIngests removes what dead owners left and keeps live writes", async (t) => {
    const store = await newStore(t);
    const dir = store.ingestDir;
    const hx = (c: string) => c.repeat(64);
    // stale: a dead writer's anonymous ingest, lock + data, data without a lock, an unknown file
    writeFileSync(join(dir, `anon-${DEAD}-0123456789ab`), Buffer.alloc(10));
    writeFileSync(join(dir, `${hx("a")}.lock`), DEAD);
    writeFileSync(join(dir, `${hx("a")}.data`), Buffer.alloc(100));
    writeFileSync(join(dir, `${hx("b")}.data`), Buffer.alloc(50));
    writeFileSync(join(dir, "junk"), Buffer.alloc(7));
    // an empty lock: a lock is linked into place with its owner in it, so this one's writer died making it
    writeFileSync(join(dir, `${hx("e")}.lock`), "");
    // live: this process's unfinished anonymous ingest, its lock + data
    const pending = await store.begin();
    await pending.write(Buffer.from("in progress"));
    writeFileSync(join(dir, `${hx("c")}.lock`), ownerToken());
    writeFileSync(join(dir, `${hx("c")}.data`), Buffer.alloc(20));

    const freed = await store.cleanIngests();
    assert.deepEqual(freed, { files: 6, bytes: 10 + DEAD.length + 100 + 50 + 7 });
    assert.deepEqual(ingestFiles(store), [basename(pending.path), `${hx("c")}.data`, `${hx("c")}.lock`].sort());

    // the live write is still usable
    await pending.write(Buffer.from(" and done"));
    const info = await pending.finish();
    assert.deepEqual(info, { digest: sha256("in progress and done"), size: 20 });
    await pending.commit(info.digest);
    assert.equal(readFileSync(store.blobPath(info.digest), "utf8"), "in progress and done");
    assert.deepEqual(await store.cleanIngests(), { files: 0, bytes: 0 });
  });

  test("PendingBlob: commit moves verified content into place, abort leaves nothing", async (t) => {
    const store = await newStore(t);
    const a = await store.begin();
    assert.ok(a.path.startsWith(store.ingestDir + "/"));
    assert.ok(basename(a.path).startsWith(`anon-${ownerToken()}-`));
    const parts = [randomBytes(100_000), randomBytes(1), randomBytes(70_000)];
    for (const p of parts) await a.write(p);
    const whole = Buffer.concat(parts);
    const info = await a.finish();
    assert.deepEqual(info, { digest: sha256(whole), size: whole.length });
    assert.equal(await store.stat(info.digest), undefined, "nothing is in the store before commit");
    assert.ok(existsSync(a.path));
    await a.commit(info.digest);
    assert.ok((await store.read(info.digest, 1 << 20, whole.length)).equals(whole));
    assert.deepEqual(ingestFiles(store), []);
    await a.abort(); // after commit: harmless
    assert.ok(existsSync(store.blobPath(info.digest)));

    // the same content again: commit finds the blob and drops the duplicate
    const b = await store.begin();
    await b.write(whole);
    const again = await b.finish();
    assert.deepEqual(again, info);
    await b.commit(again.digest);
    assert.deepEqual(ingestFiles(store), []);
    assert.ok(readFileSync(store.blobPath(info.digest)).equals(whole));

    // abort before finish: the partial file is gone and nothing is stored
    const c = await store.begin();
    await c.write(Buffer.from("never finished"));
    await c.abort();
    assert.deepEqual(ingestFiles(store), []);
    assert.equal(await store.stat(sha256("never finished")), undefined);

    // abort after finish
    const e = await store.begin();
    await e.write(Buffer.from("finished, then dropped"));
    const einfo = await e.finish();
    await e.abort();
    assert.deepEqual(ingestFiles(store), []);
    assert.equal(await store.stat(einfo.digest), undefined);
  });

  test("delete removes a blob; a deleted blob can be ingested again", async (t) => {
    const store = await newStore(t);
    const { digest } = await store.put(Buffer.from("x"));
    await store.delete(digest);
    assert.equal(await store.stat(digest), undefined);
    await store.delete(digest); // idempotent
    const open = bufferOpener(Buffer.from("x"));
    await store.ingest({ digest, size: 1 }, open);
    assert.deepEqual(open.offsets, [0]);
  });
});

// ---------------------------------------------------------------------------
describe("metastore", () => {
  const dg = (s: string) => sha256(s);
  const layer = (name: string, diff: string) => ({
    digest: dg(`layer ${name}`),
    media_type: MediaType.OciLayerGzip,
    size: 1000 + name.length,
    diff_id: dg(`diff ${diff}`),
    uncompressed_size: 2000,
  });
  const image = (name: string, layers: ReturnType<typeof layer>[], tags: string[]): NewImage => {
    const chains = chainIds(layers.map((l) => l.diff_id));
    return {
      image: {
        digest: dg(`manifest ${name}`),
        media_type: MediaType.OciManifest,
        size: 400,
        config_digest: dg(`config ${name}`),
        config_media_type: MediaType.OciConfig,
        config_size: 300,
        created: "2024-01-01T00:00:00Z",
        os: "linux",
        architecture: "amd64",
        variant: null,
      },
      layers: layers.map((l, i) => ({ ...l, chain_id: chains[i] })),
      tags,
    };
  };

  test("schema, WAL, and reopen", (t) => {
    const path = join(tempDir(t, "strata-meta-"), "meta.db");
    const meta = openMetaStore(path);
    try {
      assert.equal(meta.db.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(meta.db.pragma("foreign_keys", { simple: true }), 1);
      assert.equal(meta.db.pragma("user_version", { simple: true }), 5, "schema version: images, then snapshots and containers, then container state and volumes, then the build cache, then image indexes");
      meta.write(() => meta.putImage(image("a", [layer("1", "1")], ["docker.io/library/a:latest"])));
    } finally {
      meta.close();
    }
    const again = openMetaStore(path);
    try {
      assert.equal(again.images().length, 1);
      assert.equal(again.tag("docker.io/library/a:latest")?.image, dg("manifest a"));
    } finally {
      again.close();
    }
    const ro = openMetaStore(path, true);
    try {
      assert.equal(ro.images().length, 1);
    } finally {
      ro.close();
    }
  });

  test("putImage shares layers; removeImage keeps a layer another image still uses", (t) => {
    const meta = openMetaStore(join(tempDir(t, "strata-meta-"), "meta.db"));
    try {
      const l1 = layer("shared", "shared");
      const l2 = layer("only-a", "a");
      const l3 = layer("only-b", "b");
      const a = image("a", [l1, l2], ["docker.io/library/a:latest", "docker.io/library/a:v1"]);
      const b = image("b", [l1, l3], ["docker.io/library/b:latest"]);
      meta.write(() => {
        meta.putImage(a, 1000);
        meta.putImage(b, 2000);
        meta.putImage(a, 3000); // again: no duplicate rows
      });
      assert.equal(meta.images().length, 2);
      assert.equal((meta.db.prepare("SELECT COUNT(*) AS n FROM layers").get() as { n: number }).n, 3, "the shared layer is stored once");
      assert.deepEqual(
        meta.layersOf(a.image.digest).map((l) => [l.position, l.digest, l.chain_id]),
        [
          [0, l1.digest, l1.diff_id],
          [1, l2.digest, chainIds([l1.diff_id, l2.diff_id])[1]],
        ],
      );
      assert.deepEqual(meta.tagsOf(a.image.digest), ["docker.io/library/a:latest", "docker.io/library/a:v1"]);
      assert.equal(meta.allImageLayers().filter((r) => r.layer === l1.digest).length, 2);

      meta.write(() => meta.removeImage(a.image.digest));
      assert.equal(meta.image(a.image.digest), undefined);
      assert.deepEqual(meta.tagsOf(a.image.digest), []);
      assert.equal(meta.tag("docker.io/library/a:latest"), undefined);
      assert.ok(meta.layer(l1.digest), "the layer b still uses was deleted");
      assert.equal(meta.layer(l2.digest), undefined, "a's own layer was kept");
      assert.ok(meta.layer(l3.digest));
      assert.deepEqual(meta.layersOf(b.image.digest).map((l) => l.digest), [l1.digest, l3.digest]);

      meta.write(() => meta.removeImage(b.image.digest));
      assert.equal((meta.db.prepare("SELECT COUNT(*) AS n FROM layers").get() as { n: number }).n, 0);
      assert.equal((meta.db.prepare("SELECT COUNT(*) AS n FROM image_layers").get() as { n: number }).n, 0);
    } finally {
      meta.close();
    }
  });

  test("an index lives while a tag names it; its manifests must be images", (t) => {
    const meta = openMetaStore(join(tempDir(t, "strata-meta-"), "meta.db"));
    try {
      const amd = image("amd", [layer("1", "1")], []);
      const arm = image("arm", [layer("2", "2")], []);
      const x = { digest: dg("index"), media_type: MediaType.OciIndex, size: 400 };
      assert.throws(() => meta.write(() => meta.putIndex(x, [dg("not stored")])), /FOREIGN KEY/);
      assert.equal(meta.indexes().length, 0, "the failed write left nothing");
      meta.write(() => {
        meta.putImage(amd);
        meta.putImage(arm);
        meta.putIndex(x, [amd.image.digest, arm.image.digest]);
        meta.setTag("docker.io/library/m:1", amd.image.digest, 1000, x.digest);
        meta.setTag("docker.io/library/m:2", amd.image.digest, 1000, x.digest);
      });
      assert.deepEqual(meta.indexManifests(x.digest), [amd.image.digest, arm.image.digest]);
      assert.equal(meta.tagIndex("docker.io/library/m:1")?.digest, x.digest);
      assert.ok(meta.referencedDigests().has(x.digest));
      assert.equal(meta.untracked(arm.image.digest), false, "an index's manifest is tracked by the index");
      assert.throws(() => meta.write(() => meta.removeImage(arm.image.digest)), /FOREIGN KEY/);
      meta.write(() => meta.removeTag("docker.io/library/m:1"));
      assert.deepEqual(meta.write(() => meta.dropUntaggedIndexes()), { indexes: [], manifests: [] }, "m:2 still names it");
      meta.write(() => meta.setTag("docker.io/library/m:2", amd.image.digest)); // re-tagged without the index
      assert.equal(meta.tagIndex("docker.io/library/m:2"), undefined);
      assert.deepEqual(meta.write(() => meta.dropUntaggedIndexes()), { indexes: [x.digest], manifests: [amd.image.digest, arm.image.digest] });
      assert.deepEqual([meta.indexes(), meta.indexManifests(x.digest)], [[], []]);
      assert.equal(meta.untracked(arm.image.digest), true);
      assert.equal(meta.referencedDigests().has(x.digest), false);
    } finally {
      meta.close();
    }
  });

  test("setTag moves a tag; referencedDigests covers images, configs, layers and leases", (t) => {
    const meta = openMetaStore(join(tempDir(t, "strata-meta-"), "meta.db"));
    try {
      const l1 = layer("1", "1");
      const l2 = layer("2", "2");
      const a = image("a", [l1], ["docker.io/library/x:latest"]);
      const b = image("b", [l1, l2], []);
      meta.write(() => {
        meta.putImage(a);
        meta.putImage(b);
        meta.setTag("docker.io/library/x:latest", b.image.digest);
      });
      assert.equal(meta.tag("docker.io/library/x:latest")?.image, b.image.digest);
      assert.deepEqual(meta.tagsOf(a.image.digest), []);

      const leased = dg("blob being written");
      meta.write(() => meta.addLeases("writer-1", [leased, l2.digest]));
      assert.deepEqual(meta.leaseOwners(), ["writer-1"]);
      const refs = meta.referencedDigests();
      assert.deepEqual(
        [...refs].sort(),
        [a.image.digest, a.image.config_digest, b.image.digest, b.image.config_digest, l1.digest, l2.digest, leased].sort(),
      );
      meta.write(() => meta.dropLeases("writer-1"));
      assert.equal(meta.referencedDigests().has(leased), false);
      assert.equal(meta.referencedDigests().has(l2.digest), true, "still referenced by image b");
      assert.deepEqual(meta.leaseOwners(), []);
    } finally {
      meta.close();
    }
  });

  test("a failed write transaction changes nothing", (t) => {
    const meta = openMetaStore(join(tempDir(t, "strata-meta-"), "meta.db"));
    try {
      assert.throws(() =>
        meta.write(() => {
          meta.putImage(image("a", [layer("1", "1")], ["docker.io/library/a:latest"]));
          throw new Error("boom");
        }),
      );
      assert.equal(meta.images().length, 0);
      assert.deepEqual(meta.tags(), []);
      // a tag must point at an existing image (foreign key)
      assert.throws(() => meta.write(() => meta.setTag("docker.io/library/dangling:latest", dg("nothing"))));
      assert.deepEqual(meta.tags(), []);
    } finally {
      meta.close();
    }
  });
});

