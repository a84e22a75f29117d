import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { strata, ok, tempDir, busyboxRootfs, makeDockerArchive, makeTar, sha256 } from "./helpers.ts";

const blobPath = (root: string, d: string) => join(root, "blobs", "sha256", d.slice(7));

test("import a directory: images lists it the Docker way", (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const rootfs = busyboxRootfs(join(dir, "rootfs"), { "etc/motd": "hi\n" });
  const id = ok(strata(root, ["import", "-c", 'CMD ["sh"]', rootfs, "demo/base:1.0"])).stdout.trim();
  assert.match(id, /^sha256:[a-f0-9]{64}$/);

  const table = ok(strata(root, ["images"])).stdout.split("\n");
  assert.match(table[0], /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/);
  assert.match(table[1], new RegExp(`^demo/base\\s+1\\.0\\s+${id.slice(7, 19)}\\s+(Less than a second|\\d+ seconds?) ago\\s+[\\d.]+MB$`));

  assert.equal(ok(strata(root, ["images", "-q"])).stdout, `${id.slice(7, 19)}\n`);
  assert.equal(ok(strata(root, ["images", "-q", "--no-trunc"])).stdout, `${id}\n`);
  const json = JSON.parse(ok(strata(root, ["images", "--format", "json"])).stdout);
  assert.equal(json.Repository, "demo/base");
  assert.equal(json.Tag, "1.0");
  assert.match(json.Digest, /^sha256:/);
  assert.match(ok(strata(root, ["images", "--digests"])).stdout.split("\n")[1], new RegExp(json.Digest));
  assert.equal(ok(strata(root, ["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout, "demo/base:1.0\n");
  assert.equal(ok(strata(root, ["images", "demo/base:2.0", "-q"])).stdout, "");

  const [inspect] = JSON.parse(ok(strata(root, ["inspect", "demo/base:1.0"])).stdout);
  assert.equal(inspect.Id, id);
  assert.deepEqual(inspect.RepoTags, ["demo/base:1.0"]);
  assert.deepEqual(inspect.Config.Cmd, ["sh"]);
  assert.equal(inspect.RootFS.Layers.length, 1);
  assert.equal(inspect.Layers[0].diffID, inspect.RootFS.Layers[0]);
  assert.equal(inspect.Layers[0].chainID, inspect.RootFS.Layers[0], "chainID of a base layer is its diffID");
  assert.equal(ok(strata(root, ["inspect", "-f", "{{.Os}}/{{.Architecture}}", id.slice(7, 15)])).stdout, `linux/${inspect.Architecture}\n`);

  const history = ok(strata(root, ["history", "demo/base:1.0"])).stdout.split("\n");
  assert.match(history[0], /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/);
  assert.match(history[1], new RegExp(`^${id.slice(7, 19)}\\s+.* ago\\s+strata import\\s+[\\d.]+MB\\s+imported from`));
});

test("the same tree imported twice gives the same layer digest (deterministic tar)", (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const rootfs = busyboxRootfs(join(dir, "rootfs"));
  const env = { SOURCE_DATE_EPOCH: "1700000000" };
  const a = ok(strata(root, ["import", rootfs, "a:1"], { env })).stdout.trim();
  const b = ok(strata(root, ["import", rootfs, "b:1"], { env })).stdout.trim();
  assert.equal(a, b, "same tree, same epoch: same config, same image ID");
  const [ia, ib] = JSON.parse(ok(strata(root, ["inspect", "a:1", "b:1"])).stdout);
  assert.equal(ia.Layers[0].digest, ib.Layers[0].digest);
  assert.equal(ia.Created, "2023-11-14T22:13:20.000Z");
});

test("tag and rmi: untag first, delete with the last tag, -f for an ID with several tags", (t) => {
  const root = join(tempDir(t), "root");
  const rootfs = busyboxRootfs(join(root, "..", "rootfs"));
  const id = ok(strata(root, ["import", rootfs, "one:latest"])).stdout.trim();
  ok(strata(root, ["tag", "one", "two:v1"]));
  ok(strata(root, ["tag", id.slice(7, 19), "localhost:5000/three"]));
  const [info] = JSON.parse(ok(strata(root, ["inspect", "one"])).stdout);
  assert.deepEqual(info.RepoTags.sort(), ["localhost:5000/three:latest", "one:latest", "two:v1"]);

  const conflict = strata(root, ["rmi", id.slice(7, 19)]);
  assert.equal(conflict.code, 1);
  assert.match(conflict.stderr, /^Error: unable to delete [a-f0-9]{12} \(must be forced\) - image is referenced in multiple repositories\n$/);

  assert.equal(ok(strata(root, ["rmi", "two:v1"])).stdout, "Untagged: two:v1\n");
  const layer = info.Layers[0].digest;
  assert.ok(existsSync(blobPath(root, layer)));
  const forced = ok(strata(root, ["rmi", "-f", id]));
  assert.deepEqual(forced.stdout.split("\n").slice(0, 2).sort(), ["Untagged: localhost:5000/three:latest", "Untagged: one:latest"]);
  assert.equal(forced.stdout.split("\n")[2], `Deleted: ${id}`);
  assert.ok(!existsSync(blobPath(root, layer)), "the last image's blobs go with it");
  assert.equal(ok(strata(root, ["images", "-q"])).stdout, "");
  assert.equal(ok(strata(root, ["check"])).code, 0);
});

test("two images sharing a base layer: stored once, kept until both are gone, counted once by df", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const base = await makeTar([{ name: "etc/", type: "directory" }, { name: "etc/base", content: "x".repeat(50_000) }]);
  const a = await makeTar([{ name: "a", content: "a".repeat(7_000) }]);
  const b = await makeTar([{ name: "b", content: "b".repeat(9_000) }]);
  const archive = join(dir, "two.tar");
  writeFileSync(archive, await makeDockerArchive([{ layers: [base, a], tags: ["app/a:1"] }, { layers: [base, b], tags: ["app/b:1"] }]));
  const out = ok(strata(root, ["load", "-i", archive])).stdout;
  assert.equal(out, "Loaded image: app/a:1\nLoaded image: app/b:1\n");

  const baseBlob = blobPath(root, sha256(base));
  assert.ok(existsSync(baseBlob));
  const du = JSON.parse(ok(strata(root, ["system", "df", "--format", "json"])).stdout);
  assert.equal(du.layers.length, 3, "three distinct layers, the base once");
  assert.equal(du.layers.find((l: { digest: string }) => l.digest === sha256(base)).images, 2);
  for (const img of du.images) assert.equal(img.sharedSize, base.length, "each image shares exactly the base layer's bytes");
  const unique = du.images.reduce((s: number, i: { uniqueSize: number }) => s + i.uniqueSize, 0);
  assert.equal(du.totalBytes, unique + base.length, "total counts shared bytes once");
  const verbose = ok(strata(root, ["system", "df", "-v"])).stdout;
  assert.match(verbose, /SHARED SIZE\s+UNIQUE SIZE/);
  assert.match(verbose, /Shared layers: 1 /);

  ok(strata(root, ["rmi", "app/a:1"]));
  assert.ok(existsSync(baseBlob), "rmi of one image keeps the shared layer");
  assert.ok(!existsSync(blobPath(root, sha256(a))), "the layer only it used is gone");
  ok(strata(root, ["rmi", "app/b:1"]));
  ok(strata(root, ["gc"]));
  assert.ok(!existsSync(baseBlob), "rmi of both (and gc) removes it");
  assert.equal(ok(strata(root, ["check"])).stdout, "ok: 0 blobs and 0 images verified\n");
});

test("gc removes unreferenced blobs and stale ingests, and keeps referenced ones", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", busyboxRootfs(join(dir, "rootfs")), "keep:1"]));
  const stray = Buffer.from("nobody references me");
  writeFileSync(blobPath(root, sha256(stray)), stray);
  writeFileSync(join(root, "ingest", "anon-999999.1-abcdef"), "partial");
  writeFileSync(join(root, "ingest", "0".repeat(64) + ".data"), "partial");
  writeFileSync(join(root, "ingest", "0".repeat(64) + ".lock"), "999999.1");
  const r = ok(strata(root, ["gc"])).stdout;
  assert.match(r, new RegExp(`Deleted: ${sha256(stray)}`));
  assert.match(r, /Total reclaimed space: \d+B/);
  assert.ok(!existsSync(blobPath(root, sha256(stray))));
  assert.deepEqual(ok(strata(root, ["images", "-q"])).stdout.trim().length, 12);
  ok(strata(root, ["check"]));
  const { readdirSync } = await import("node:fs");
  assert.deepEqual(readdirSync(join(root, "ingest")), []);
});

test("bad references and unknown images: one clear line, non-zero exit", (t) => {
  const root = join(tempDir(t), "root");
  const cases: [string[], RegExp][] = [
    [["inspect", "nope"], /^Error: No such image: nope\n$/],
    [["tag", "nope", "x"], /^Error: No such image: nope\n$/],
    [["rmi", "nope:1"], /^Error: No such image: nope:1\n$/],
    [["history", "Upper/Case"], /^Error: invalid reference format "Upper\/Case": repository name must be lowercase\n$/],
    [["inspect", "a@sha256:123"], /^Error: invalid reference format "a@sha256:123": invalid digest "sha256:123"\n$/],
    [["images", "--bogus"], /^Error: unknown flag: --bogus \(see 'strata images --help'\)\n$/],
    [["tag", "only-one"], /^Error: "strata tag" requires exactly 2 arguments/],
    [["frobnicate"], /^Error: unknown command "frobnicate"/],
    [["import", "/nonexistent/dir", "x"], /^Error: import \/nonexistent\/dir: /],
  ];
  for (const [args, re] of cases) {
    const r = strata(root, args);
    assert.notEqual(r.code, 0, args.join(" "));
    assert.match(r.stderr, re, args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line for ${args.join(" ")}`);
  }
  const notTar = join(root, "..", "not.tar");
  writeFileSync(notTar, "this is not a tarball at all".repeat(40));
  const r = strata(root, ["import", notTar, "x"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: import .*not\.tar: not a tar archive\n$/);
});
