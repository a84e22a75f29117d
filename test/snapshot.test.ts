import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./helpers.ts";
import { openMetaStore } from "../src/metastore/index.ts";
import { OverlaySnapshotter, VfsSnapshotter, type Snapshotter } from "../src/snapshot/index.ts";
import { isMounted, mountAll, unmount } from "../src/snapshot/mount.ts";

type Make = (root: string) => Snapshotter & { cleanup(): Promise<string[]> };

function setup(t: { after: (fn: () => void) => void }, make: Make) {
  const mounts: string[] = [];
  let meta: ReturnType<typeof openMetaStore> | undefined;
  // Registered before tempDir's removal so that it runs first (after-hooks run in order).
  t.after(() => {
    for (const m of mounts.reverse()) unmount(m);
    meta?.close();
  });
  const root = tempDir(t);
  meta = openMetaStore(join(root, "meta.db"));
  const sn = make(root);
  return {
    root,
    meta,
    sn,
    mount: (ms: Parameters<typeof mountAll>[0], name: string) => {
      const target = join(root, "mnt", name);
      mounts.push(target);
      mountAll(ms, target);
      return target;
    },
  };
}

/** One conformance suite, run against each driver. */
for (const [driver, make] of [
  ["overlay", (root: string) => new OverlaySnapshotter(root, openMetaStore(join(root, "meta.db")))],
  ["vfs", (root: string) => new VfsSnapshotter(root, openMetaStore(join(root, "meta.db")))],
] as [string, Make][]) {
  describe(`snapshotter conformance: ${driver}`, () => {
    test("prepare → write → commit; a child sees its parent; a sibling never sees another's writes", async (t) => {
      const { sn, mount } = setup(t, make);
      await sn.prepare("base-extract");
      const base = await sn.applyTarget("base-extract");
      mkdirSync(join(base.dir, "etc"));
      writeFileSync(join(base.dir, "etc", "base"), "from base\n");
      await sn.commit("layer-1", "base-extract");
      assert.equal((await sn.stat("layer-1")).kind, "committed");
      await assert.rejects(sn.stat("base-extract"), /does not exist/);

      const a = mount(await sn.prepare("ctr-a", "layer-1"), "a");
      const b = mount(await sn.prepare("ctr-b", "layer-1"), "b");
      assert.equal(readFileSync(join(a, "etc", "base"), "utf8"), "from base\n");
      writeFileSync(join(a, "etc", "base"), "changed in a\n");
      writeFileSync(join(a, "only-a"), "a\n");
      assert.equal(readFileSync(join(b, "etc", "base"), "utf8"), "from base\n", "b does not see a's write");
      assert.ok(!existsSync(join(b, "only-a")));
      assert.equal(readFileSync(join((await sn.stat("layer-1")).dir, "etc", "base"), "utf8"), "from base\n", "the committed layer never changes");
      const usage = await sn.usage("ctr-a");
      assert.ok(usage.inodes >= 1);
      const keys: string[] = [];
      await sn.walk((i) => {
        keys.push(`${i.key}:${i.kind}`);
      });
      assert.deepEqual(keys.sort(), ["ctr-a:active", "ctr-b:active", "layer-1:committed"]);
    });

    test("a view is read-only; remove refuses a snapshot with children", async (t) => {
      const { sn, mount } = setup(t, make);
      await sn.prepare("x");
      writeFileSync(join((await sn.applyTarget("x")).dir, "f"), "1");
      await sn.commit("l1", "x");
      await sn.prepare("y", "l1");
      writeFileSync(join((await sn.applyTarget("y")).dir, "g"), "2");
      await sn.commit("l2", "y");
      const v = mount(await sn.view("v", "l2"), "v");
      assert.equal(readFileSync(join(v, "f"), "utf8"), "1");
      assert.equal(readFileSync(join(v, "g"), "utf8"), "2");
      assert.throws(() => writeFileSync(join(v, "h"), "no"), /EROFS|read-only/);
      await assert.rejects(sn.remove("l1"), /has children/);
      await assert.rejects(sn.prepare("bad", "v"), /not committed/);
      await assert.rejects(sn.prepare("l1"), /already exists/);
      unmount(v);
      await sn.remove("v");
      await sn.remove("l2");
      await sn.remove("l1");
      const left: string[] = [];
      await sn.walk((i) => {
        left.push(i.key);
      });
      assert.deepEqual(left, []);
    });

    test("cleanup removes what a dead process left half-made, and keeps committed and live ones", async (t) => {
      const { sn, meta, root } = setup(t, make);
      await sn.prepare("mine");
      await sn.prepare("orphan");
      meta.write(() => meta.db.prepare("UPDATE snapshots SET owner = '999999.1' WHERE key = 'orphan'").run());
      const dirBefore = (await sn.stat("orphan")).dir;
      assert.deepEqual(await sn.cleanup(), ["orphan"]);
      assert.ok(!existsSync(dirBefore));
      assert.equal((await sn.stat("mine")).kind, "active");
      assert.ok(readdirSync(join(root, "snapshots")).length >= 1);
    });
  });
}

test("overlay: a stack of 125 layers mounts (lowerdirs stay under the one-page option limit)", async (t) => {
  const { sn, mount } = setup(t, (root) => new OverlaySnapshotter(root, openMetaStore(join(root, "meta.db"))));
  let parent: string | undefined;
  for (let i = 0; i < 125; i++) {
    const key = `extract-${i}`;
    await sn.prepare(key, parent);
    writeFileSync(join((await sn.applyTarget(key)).dir, `layer-${i}`), String(i));
    await sn.commit(`layer-${i}`, key);
    parent = `layer-${i}`;
  }
  const m = await sn.prepare("top", parent);
  assert.ok(m[0].options.join(",").length > 4096, "the absolute form would not fit a page");
  const merged = mount(m, "top");
  assert.equal(readdirSync(merged).length, 125);
  assert.equal(readFileSync(join(merged, "layer-0"), "utf8"), "0");
  assert.equal(readFileSync(join(merged, "layer-124"), "utf8"), "124");
  unmount(merged);
  assert.ok(!isMounted(merged));
});
