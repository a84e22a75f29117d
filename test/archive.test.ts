import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import tarStream from "tar-stream";
import { strata, ok, tempDir, busyboxRootfs, makeDockerArchive, makeTar, listTree, sha256, imageConfig, type TarFile } from "./helpers.ts";

/** Reads a tar into name → content. */
async function untar(buf: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const ex = tarStream.extract();
  const done = (async () => {
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      out.set(e.header.name, Buffer.concat(chunks));
    }
  })();
  ex.end(buf);
  await done;
  return out;
}

function storeState(root: string): string {
  return JSON.stringify([listTree(root).filter((p) => !/^meta\.db-(wal|shm)$/.test(p)), readFileSync(join(root, "index.json"), "utf8"), strata(root, ["images", "-q", "--no-trunc"]).stdout]);
}

test("save → load round trips in both formats, digests preserved", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", "-c", 'CMD ["cat", "/hello"]', busyboxRootfs(join(dir, "rootfs"), { hello: "hello\n" }), "rt:1"]));
  ok(strata(root, ["tag", "rt:1", "rt:2"]));
  const [before] = JSON.parse(ok(strata(root, ["inspect", "rt:1"])).stdout);

  const oci = join(dir, "o.tar");
  ok(strata(root, ["save", "--format", "oci-archive", "-o", oci, "rt:1"]));
  const docker = join(dir, "d.tar");
  ok(strata(root, ["save", "-o", docker, "rt:1", "rt:2"]));
  const dm = JSON.parse((await untar(readFileSync(docker))).get("manifest.json")!.toString());
  assert.deepEqual(dm.map((e: { RepoTags: string[] }) => e.RepoTags), [["rt:1"], ["rt:2"]]);
  assert.equal(dm[0].Layers[0], `${before.RootFS.Layers[0].slice(7)}.tar`, "docker-archive layers are uncompressed, named by diffID");

  for (const [file, format] of [[oci, "oci-archive"], [docker, "docker-archive"]]) {
    const fresh = join(dir, `fresh-${format}`);
    const out = ok(strata(fresh, ["load", "-i", file])).stdout;
    assert.match(out, /Loaded image: rt:1\n/);
    const [after] = JSON.parse(ok(strata(fresh, ["inspect", "rt:1"])).stdout);
    assert.equal(after.Id, before.Id, `${format}: same config digest (image ID)`);
    assert.deepEqual(after.RootFS.Layers, before.RootFS.Layers, `${format}: same diffIDs`);
    if (format === "oci-archive") assert.equal(after.Descriptor.digest, before.Descriptor.digest, "oci-archive keeps the manifest digest");
    ok(strata(fresh, ["check"]));
  }
  // Saving is deterministic: same images, same bytes.
  const again = join(dir, "o2.tar");
  ok(strata(root, ["save", "--format", "oci-archive", "-o", again, "rt:1"]));
  assert.equal(sha256(readFileSync(again)), sha256(readFileSync(oci)));
  // stdin and gzip-compressed archives load too.
  const viaStdin = join(dir, "stdin");
  assert.match(ok(strata(viaStdin, ["load"], { input: gzipSync(readFileSync(docker)) })).stdout, /Loaded image: rt:1\nLoaded image: rt:2\n/);
});

test("save -o and export -o: a device or FIFO is written in place (never replaced), a symlink is followed, a directory refused", async (t) => {
  const { execFileSync, spawn } = await import("node:child_process");
  const { lstatSync, mkdirSync, readlinkSync, symlinkSync } = await import("node:fs");
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", busyboxRootfs(join(dir, "rootfs")), "o:1"]));
  const whole = (f: string) => ok(strata(join(dir, `check-${Math.random()}`), ["load", "-q", "-i", f]), `load ${f}`);

  // A device that is always full (/dev/full's numbers, made here): an ENOSPC error, and the node is still a device.
  if (process.getuid?.() === 0) {
    const full = join(dir, "full");
    execFileSync("mknod", [full, "c", "1", "7"]);
    for (const args of [["save", "-o", full, "o:1"], ["export", "-o", full]]) {
      if (args[0] === "export") args.push(ok(strata(root, ["create", "o:1"])).stdout.trim());
      const r = strata(root, args);
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /^Error: .*(ENOSPC|no space left)[^\n]*\n$/i);
      assert.ok(lstatSync(full).isCharacterDevice(), `${args[0]} -o left the device node in place`);
    }
  }

  // A FIFO: written in place while a reader takes it.
  const fifo = join(dir, "fifo");
  execFileSync("mkfifo", [fifo]);
  const copied = join(dir, "from-fifo.tar");
  const reader = spawn("sh", ["-c", `cat "${fifo}" > "${copied}"`]);
  const readerDone = new Promise((r) => reader.on("exit", r));
  ok(strata(root, ["save", "-o", fifo, "o:1"]));
  await readerDone;
  assert.ok(lstatSync(fifo).isFIFO());
  whole(copied);

  // A symlink: its target is written, the link stays.
  mkdirSync(join(dir, "real"));
  symlinkSync(join(dir, "real", "img.tar"), join(dir, "link.tar"));
  writeFileSync(join(dir, "real", "img.tar"), "old");
  ok(strata(root, ["save", "-o", join(dir, "link.tar"), "o:1"]));
  assert.equal(readlinkSync(join(dir, "link.tar")), join(dir, "real", "img.tar"));
  whole(join(dir, "real", "img.tar"));
  assert.deepEqual(listTree(join(dir, "real")), ["img.tar"], "no temporary file left beside it");

  // A directory: refused before anything is written.
  const r = strata(root, ["save", "-o", join(dir, "real"), "o:1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: open .*real: is a directory\n$/);
});

test("loading the same archive twice is idempotent", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const file = join(dir, "a.tar");
  writeFileSync(file, await makeDockerArchive([{ layers: [await makeTar([{ name: "f", content: "1" }])], tags: ["idem:1"] }]));
  ok(strata(root, ["load", "-i", file]));
  const state = storeState(root);
  ok(strata(root, ["load", "-i", file]));
  assert.equal(storeState(root), state);
});

test("bad archives: one clear error line, non-zero exit, the store unchanged", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", busyboxRootfs(join(dir, "rootfs")), "existing:1"]));
  const l1 = await makeTar([{ name: "etc/", type: "directory" }, { name: "etc/one", content: "1".repeat(3000) }]);
  const l2 = await makeTar([{ name: "two", content: "2".repeat(3000) }]);
  const good = { layers: [l1, l2], tags: ["bad:1"] };
  const ociGood = join(dir, "good-oci.tar");
  writeFileSync(join(dir, "good.tar"), await makeDockerArchive([good]));
  const scratch = join(dir, "scratch");
  ok(strata(scratch, ["load", "-i", join(dir, "good.tar")]));
  ok(strata(scratch, ["save", "--format", "oci-archive", "-o", ociGood, "bad:1"]));
  const ociFiles = await untar(readFileSync(ociGood));
  const ociIndex = JSON.parse(ociFiles.get("index.json")!.toString());
  const manifestDigest: string = ociIndex.manifests[0].digest;
  const manifest = JSON.parse(ociFiles.get(`blobs/sha256/${manifestDigest.slice(7)}`)!.toString());
  const layerPath = `blobs/sha256/${manifest.layers[0].digest.slice(7)}`;
  const rebuild = (edit: (m: Map<string, Buffer>) => void) => {
    const m = new Map(ociFiles);
    edit(m);
    return makeTar([...m].map(([name, content]) => ({ name, content })));
  };
  const dockerWith = (mutate: (files: TarFile[]) => TarFile[]) => makeDockerArchive([good], mutate);
  const layerName = `${sha256(l2).slice(7)}.tar`;

  const cases: [string, Buffer, RegExp][] = [
    ["docker layer corrupt", await dockerWith((fs) => fs.map((f) => (f.name === layerName ? { ...f, content: Buffer.from(l2.toString().replace("2222", "2223")) } : f))), /layer 1 \(sha256:[a-f0-9]+\): content has diffID sha256:[a-f0-9]+, config says sha256:/],
    ["docker layer missing", await dockerWith((fs) => fs.filter((f) => f.name !== layerName)), /"[a-f0-9]+\.tar" is missing from the archive/],
    ["docker manifest.json malformed", await dockerWith((fs) => fs.map((f) => (f.name === "manifest.json" ? { ...f, content: "[{" } : f))), /manifest\.json: not valid JSON/],
    ["docker manifest.json wrong shape", await dockerWith((fs) => fs.map((f) => (f.name === "manifest.json" ? { ...f, content: '[{"Config": 3}]' } : f))), /manifest\.json: entry 0 needs Config and Layers/],
    ["docker config malformed", await makeDockerArchive([good], (fs) => fs.map((f) => (f.name.endsWith(".json") && f.name !== "manifest.json" ? { ...f, content: "{not json" } : f))), /config .*: not valid JSON/],
    ["docker config without diff_ids", await makeDockerArchive([good], (fs) => fs.map((f) => (f.name.endsWith(".json") && f.name !== "manifest.json" ? { ...f, content: JSON.stringify({ architecture: "amd64", os: "linux" }) } : f))), /rootfs\.diff_ids is missing/],
    ["docker bad tag", await makeDockerArchive([{ ...good, tags: ["Bad:Tag:x"] }]), /invalid reference format/],
    ["oci blob wrong digest", await rebuild((m) => m.set(layerPath, Buffer.concat([m.get(layerPath)!.subarray(0, 10), Buffer.from("X"), m.get(layerPath)!.subarray(11)]))), /blob sha256:[a-f0-9]+ has content with digest sha256:/],
    ["oci blob truncated", await rebuild((m) => m.set(layerPath, m.get(layerPath)!.subarray(0, 100))), /has content with digest|bytes, descriptor says/],
    ["oci wrong size in descriptor", await rebuild((m) => m.set("index.json", Buffer.from(JSON.stringify({ ...ociIndex, manifests: [{ ...ociIndex.manifests[0], size: 7 }] })))), /descriptor says 7/],
    ["oci index.json malformed", await rebuild((m) => m.set("index.json", Buffer.from("{\"schemaVersion\": 2, \"manifests\": 5}"))), /index\.json: manifests is not an array/],
    ["oci manifest malformed", await rebuild((m) => {
      const raw = Buffer.from(JSON.stringify({ ...manifest, layers: "nope" }));
      m.set(`blobs/sha256/${sha256(raw).slice(7)}`, raw);
      m.set("index.json", Buffer.from(JSON.stringify({ ...ociIndex, manifests: [{ ...ociIndex.manifests[0], digest: sha256(raw), size: raw.length }] })));
    }), /layers is not an array/],
    ["oci layer blob missing", await rebuild((m) => m.delete(layerPath)), /is missing from the archive/],
    ["archive truncated", readFileSync(ociGood).subarray(0, Math.floor(statSync(ociGood).size / 2)), /unexpected end|archive|truncated/i],
    ["not a tar", Buffer.from("hello, I am not an archive".repeat(100)), /archive/i],
    ["empty tar", Buffer.alloc(1024), /archive is empty or not a tar file/],
    ["no manifest at all", await makeTar([{ name: "random.txt", content: "x" }]), /neither manifest\.json \(docker-archive\) nor index\.json/],
    ["wrong diff_ids count", await makeDockerArchive([{ ...good, diffIds: [sha256(l1)] }]), /config lists 1 diff_ids for 2 layers/],
  ];
  const state = storeState(root);
  for (const [name, buf, re] of cases) {
    const file = join(dir, "case.tar");
    writeFileSync(file, buf);
    const r = strata(root, ["load", "-i", file]);
    assert.equal(r.code, 1, `${name}: exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, /^Error: .+\n$/, `${name}: one line`);
    assert.match(r.stderr, re, name);
    assert.equal(storeState(root), state, `${name}: store unchanged`);
  }
  ok(strata(root, ["check"]));
  assert.equal(imageConfig([l1]).length > 0, true);
});

test("check finds a corrupted blob and a missing one", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", busyboxRootfs(join(dir, "rootfs")), "c:1"]));
  const [info] = JSON.parse(ok(strata(root, ["inspect", "c:1"])).stdout);
  const layer = join(root, "blobs", "sha256", info.Layers[0].digest.slice(7));
  const bytes = readFileSync(layer);
  bytes[100] ^= 0xff;
  writeFileSync(layer, bytes);
  const r = strata(root, ["check"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`problem: blob ${info.Layers[0].digest}: .*digest mismatch`));
  assert.match(r.stderr, /Error: store check failed: \d+ problem/);
  // A corrupted layer is never handed out: save fails with a digest error instead of writing bad bytes.
  const s = strata(root, ["save", "-o", join(dir, "x.tar"), "c:1"]);
  assert.equal(s.code, 1);
  assert.match(s.stderr, /^Error: (blob|layer) sha256:[a-f0-9]+: (digest mismatch|corrupt compressed data).*\n$/);
  assert.equal(listTree(dir).includes("x.tar"), false, "no half-written archive is left");
  const { rmSync } = await import("node:fs");
  rmSync(join(root, "blobs", "sha256", info.Id.slice(7)));
  assert.match(strata(root, ["check"]).stderr, new RegExp(`image ${info.Descriptor.digest}: blob ${info.Id} is missing`));
});
