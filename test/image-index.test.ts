// Multi-platform images kept whole: pull --all-platforms stores the index and every platform's image,
// push sends them back byte for byte, copy --all moves them between locations; rmi, gc and check know
// the index. Judged by a real registry (Debian's docker-registry) and skopeo.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../src/engine/index.ts";
import { hostPlatform } from "../src/oci/index.ts";
import { sha256, tempDir } from "./helpers.ts";
import { multiPlatformLayout, startRegistry, strataRun, tool } from "./registry-client-helpers.ts";

const configHome = mkdtempSync(join(tmpdir(), "strata-dockercfg-"));
process.on("exit", () => rmSync(configHome, { recursive: true, force: true }));
process.env.DOCKER_CONFIG = configHome;
writeFileSync(join(configHome, "config.json"), "{}\n");

function ok(r: { code: number; stdout: string; stderr: string }, what: string) {
  assert.equal(r.code, 0, `${what} failed: ${r.stderr}${r.stdout}`);
  return r;
}

const rawOf = (ref: string) => tool("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${ref}`]);

/** What the store holds, read through the engine; `check` must find nothing wrong. */
async function store(root: string) {
  const engine = new Engine({ root });
  try {
    const report = await engine.check();
    return {
      problems: report.problems,
      rows: report.images,
      images: engine.images().map((i) => `${i.repository ?? "<none>"}:${i.tag ?? "<none>"}`),
      indexes: engine.meta.indexes().map((x) => ({ digest: x.digest, manifests: engine.meta.indexManifests(x.digest) })),
      blobs: (await engine.content.list()).length,
    };
  } finally {
    engine.close();
  }
}

const host = hostPlatform().architecture;
const other = host === "amd64" ? "arm64" : "amd64";

test("pull --all-platforms keeps the index; push sends it back byte for byte; rmi and gc give the space back", async (t) => {
  if (host !== "amd64" && host !== "arm64") return t.skip(`the test image has amd64 and arm64, not ${host}`);
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const layout = join(dir, "multi");
  const { index, manifests } = await multiPlatformLayout(layout, "multi");
  await tool("skopeo", ["copy", "-q", "--all", "--dest-tls-verify=false", `oci:${layout}:multi`, `docker://${reg.host}/m/multi:1`]);
  const root = join(dir, "root");

  const pulled = ok(await strataRun(root, ["pull", "--all-platforms", `${reg.host}/m/multi:1`]), "pull --all-platforms");
  assert.match(pulled.stdout, new RegExp(`Digest: ${index.digest}`));
  let s = await store(root);
  assert.deepEqual(s.problems, []);
  assert.equal(s.rows, 2, "both platforms' images are stored");
  assert.deepEqual(s.images, [`${reg.host}/m/multi:1`], "the other platform is not a dangling image");
  assert.deepEqual(s.indexes, [{ digest: index.digest, manifests: manifests.map((m) => m.digest) }]);
  assert.equal(s.blobs, 7, "the index, two manifests, two configs, two layers");
  // The tag runs as the host's image: inspect and the filesystem are that platform's.
  assert.equal(JSON.parse(ok(await strataRun(root, ["inspect", `${reg.host}/m/multi:1`]), "inspect").stdout)[0].Architecture, host);
  assert.equal(ok(await strataRun(root, ["fs", "cat", `${reg.host}/m/multi:1`, "/arch"]), "fs cat").stdout, `${host}\n`);
  const again = ok(await strataRun(root, ["pull", "--all-platforms", `${reg.host}/m/multi:1`]), "pull --all-platforms again");
  assert.match(again.stdout, /Status: Image is up to date/);

  const pushed = ok(await strataRun(root, ["push", `${reg.host}/m/multi:1`, `${reg.host}/n/copy:2`]), "push");
  assert.match(pushed.stdout, new RegExp(`2: digest: ${index.digest} size: ${index.size}`));
  assert.equal(sha256(await rawOf(`${reg.host}/n/copy:2`)), index.digest, "the registry serves the same index");
  for (const m of manifests) assert.equal(sha256(await rawOf(`${reg.host}/n/copy@${m.digest}`)), m.digest);
  const arm = JSON.parse(await tool("skopeo", ["inspect", "--tls-verify=false", "--override-arch", other, `docker://${reg.host}/n/copy:2`]));
  assert.equal(arm.Architecture, other);

  // A second tag on the same index: rmi of one only untags; of the last, removes everything.
  ok(await strataRun(root, ["tag", `${reg.host}/m/multi:1`, "local/multi:x"]), "tag");
  assert.equal((await store(root)).indexes.length, 1);
  ok(await strataRun(root, ["rmi", `${reg.host}/m/multi:1`]), "rmi first tag");
  s = await store(root);
  assert.deepEqual([s.rows, s.images, s.indexes.length, s.blobs], [2, ["docker.io/local/multi:x"], 1, 7]);
  const rmi = ok(await strataRun(root, ["rmi", "local/multi:x"]), "rmi last tag");
  assert.equal(rmi.stdout.match(/^Deleted: /gm)?.length, 2, rmi.stdout);
  s = await store(root);
  assert.deepEqual([s.problems, s.rows, s.images, s.indexes, s.blobs], [[], 0, [], [], 0]);
  assert.doesNotMatch(ok(await strataRun(root, ["gc"]), "gc").stdout, /Deleted:/, "rmi already gave the blobs back");

  // Without the flag nothing changes: one platform, no index.
  ok(await strataRun(root, ["pull", `${reg.host}/m/multi:1`]), "pull");
  s = await store(root);
  assert.deepEqual([s.problems, s.rows, s.images, s.indexes, s.blobs], [[], 1, [`${reg.host}/m/multi:1`], [], 3]);

  // gc keeps an index and every platform's blobs while a tag names it.
  ok(await strataRun(root, ["pull", "--all-platforms", `${reg.host}/m/multi:1`]), "pull --all-platforms over a plain pull");
  ok(await strataRun(root, ["gc"]), "gc");
  s = await store(root);
  assert.deepEqual([s.problems, s.rows, s.images, s.indexes.length, s.blobs], [[], 2, [`${reg.host}/m/multi:1`], 1, 7]);
  assert.equal(readFileSync(join(root, "blobs", "sha256", index.digest.slice(7))).length, index.size);
});
