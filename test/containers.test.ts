import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync, chmodSync, symlinkSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { strata, ok, tempDir, busyboxRootfs, makeDockerArchive, makeTar } from "./helpers.ts";

/** Unmounts everything strata may have mounted under `root` (registered before tempDir so it runs first). */
function guardMounts(t: { after: (fn: () => void) => void }, dirRef: { dir?: string }) {
  t.after(() => {
    if (!dirRef.dir) return;
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m && m.startsWith(dirRef.dir!));
    for (const m of mounts.reverse()) spawnSync("umount", ["-l", m]);
  });
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m && m.startsWith(dir));
}

/** name → type/mode/size/link/content for a whole tree, to compare trees exactly. */
function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, p));
      if (st.isDirectory()) {
        out[p] = `d ${(st.mode & 0o7777).toString(8)}`;
        walk(p);
      } else if (st.isSymbolicLink()) out[p] = `l -> ${readlinkSync(join(dir, p))}`;
      else out[p] = `f ${(st.mode & 0o7777).toString(8)} ${st.size}`;
    }
  };
  walk("");
  return out;
}

for (const driver of ["overlay", "vfs"]) {
  test(`${driver}: create, mount, change, diff, commit, rm: copy-on-write and the image never changes`, async (t) => {
    const ref: { dir?: string } = {};
    guardMounts(t, ref);
    const dir = (ref.dir = tempDir(t));
    const root = join(dir, "root");
    const s = (...args: string[]) => strata(root, ["--storage-driver", driver, ...args]);
    const rootfs = busyboxRootfs(join(dir, "rootfs"), { "etc/keep": "keep\n", "etc/modify": "old\n", "etc/remove": "bye\n", "opt/dir/a": "a\n", "opt/dir/b": "b\n", "srv/file": "f\n" });
    ok(s("import", "-c", 'CMD ["sh"]', rootfs, "cow/base:1"));
    const [before] = JSON.parse(ok(s("inspect", "cow/base:1")).stdout);

    const id = ok(s("create", "--name", "c1", "cow/base:1")).stdout.trim();
    assert.match(id, /^[a-f0-9]{64}$/);
    const other = ok(s("create", "cow/base:1", "echo", "hi")).stdout.trim();
    const ps = ok(s("ps", "-a")).stdout.split("\n");
    assert.match(ps[0], /^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES$/);
    assert.ok(ps.some((l) => new RegExp(`^${id.slice(0, 12)}\\s+cow/base:1\\s+"sh"\\s+.* ago\\s+Created\\s+c1$`).test(l)), ps.join("\n"));
    assert.ok(ps.some((l) => l.startsWith(other.slice(0, 12)) && l.includes('"echo hi"')));
    assert.equal(ok(s("ps")).stdout.split("\n").length, 2, "ps without -a lists running containers only (none)");

    const merged = ok(s("mount", "c1")).stdout.trim();
    assert.equal(ok(s("mount", "c1")).stdout.trim(), merged, "mount is idempotent");
    assert.equal(readFileSync(join(merged, "etc", "keep"), "utf8"), "keep\n");
    writeFileSync(join(merged, "etc", "modify"), "new\n");
    unlinkSync(join(merged, "etc", "remove"));
    rmSync(join(merged, "opt", "dir"), { recursive: true });
    mkdirSync(join(merged, "new", "deep"), { recursive: true });
    writeFileSync(join(merged, "new", "deep", "file"), "x\n");
    chmodSync(join(merged, "etc", "keep"), 0o600);
    rmSync(join(merged, "srv", "file"));
    mkdirSync(join(merged, "srv", "file"));
    writeFileSync(join(merged, "srv", "file", "inside"), "now a dir\n");
    symlinkSync("/etc/keep", join(merged, "link"));

    const diff = ok(s("diff", "c1")).stdout;
    assert.equal(
      diff,
      ["C /etc", "C /etc/keep", "C /etc/modify", "D /etc/remove", "A /link", "A /new", "A /new/deep", "A /new/deep/file", "C /opt", "D /opt/dir", "C /srv", "C /srv/file", "A /srv/file/inside", ""].join("\n"),
    );
    const tree = snapshotTree(merged);
    ok(s("umount", "c1"));
    assert.deepEqual(mountsUnder(root), []);

    // system df counts each container's writable layer (only what it changed) and the unpacked layers.
    const du = JSON.parse(ok(s("system", "df", "--format", "json")).stdout);
    assert.equal(du.containers.length, 2);
    const mine = du.containers.find((c: { id: string }) => c.id === id);
    assert.ok(mine.inodes >= 8 && mine.bytes > 0, JSON.stringify(mine));
    // overlay keeps only the changes; vfs holds a full copy, and df reports the bytes on disk.
    if (driver === "overlay") assert.ok(du.containers.find((c: { id: string }) => c.id === other).inodes <= 1, "an untouched container's layer is (nearly) empty");
    assert.equal(du.snapshots.count, 1);
    // The other container and the image are untouched.
    const otherMerged = ok(s("mount", other)).stdout.trim();
    assert.equal(readFileSync(join(otherMerged, "etc", "modify"), "utf8"), "old\n");
    assert.ok(existsSync(join(otherMerged, "opt", "dir", "a")));
    ok(s("umount", other));
    const [after] = JSON.parse(ok(s("inspect", "cow/base:1")).stdout);
    assert.deepEqual(after.Layers, before.Layers);

    // commit: one new layer on top, with a history entry, and a container of it sees exactly the changed tree.
    const newId = ok(s("commit", "-m", "my change", "-c", "ENV A=1", "c1", "cow/changed:1")).stdout.trim();
    const [committed] = JSON.parse(ok(s("inspect", "cow/changed:1")).stdout);
    assert.equal(committed.Id, newId);
    assert.equal(committed.Layers.length, 2);
    assert.equal(committed.Layers[0].digest, before.Layers[0].digest, "the base layer is shared, not copied");
    assert.deepEqual(committed.Config.Env, ["A=1"]);
    const hist = ok(s("history", "cow/changed:1")).stdout.split("\n");
    assert.match(hist[1], /\s+sh\s+.*my change$/);
    const layersOut = ok(s("layers", "cow/changed:1")).stdout;
    assert.match(layersOut, /cow\/base:1/, "strata layers names the image sharing the base layer");
    const c2 = ok(s("create", "cow/changed:1")).stdout.trim();
    const m2 = ok(s("mount", c2)).stdout.trim();
    assert.deepEqual(snapshotTree(m2), tree, "the committed image's tree is the container's tree, deletions included");
    ok(s("umount", c2));

    // rmi refuses an image a container uses; rm removes only the container's layer.
    const refused = s("rmi", "cow/base:1");
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /container [a-f0-9]{12} is using its referenced image/);
    for (const c of [id, other, c2]) ok(s("rm", c));
    assert.equal(ok(s("ps", "-a", "-q")).stdout, "");
    assert.deepEqual(readdirSync(join(root, "containers")), []);
    ok(s("rmi", "cow/changed:1"));
    ok(s("rmi", "cow/base:1"));
    ok(s("gc"));
    assert.deepEqual(readdirSync(join(root, "snapshots")).filter((n) => n !== "l"), [], "snapshots go with the images");
    ok(s("check"));
    assert.deepEqual(mountsUnder(root), []);
  });
}

test("export flattens a container's merged root", async (t) => {
  const ref: { dir?: string } = {};
  guardMounts(t, ref);
  const dir = (ref.dir = tempDir(t));
  const root = join(dir, "root");
  const l1 = await makeTar([{ name: "a", content: "1" }, { name: "gone", content: "x" }]);
  const l2 = await makeTar([{ name: "b", content: "2" }, { name: ".wh.gone", content: "" }]);
  writeFileSync(join(dir, "i.tar"), await makeDockerArchive([{ layers: [l1, l2], tags: ["ex:1"] }]));
  ok(strata(root, ["load", "-i", join(dir, "i.tar")]));
  const id = ok(strata(root, ["create", "ex:1"])).stdout.trim();
  ok(strata(root, ["export", "-o", join(dir, "out.tar"), id]));
  const names = spawnSync("tar", ["-tf", join(dir, "out.tar")]).stdout.toString().split("\n").filter(Boolean).sort();
  // As in Docker, the init layer's mount points are part of a container's root filesystem.
  assert.deepEqual(names, ["a", "b", "dev/", "etc/", "etc/hostname", "etc/hosts", "etc/resolv.conf", "proc/", "sys/"]);
  assert.deepEqual(mountsUnder(root), []);
  ok(strata(root, ["rm", id]));
});

test("a committed container, moved by save → podman load, shows the same tree in podman as in strata", async (t) => {
  const ref: { dir?: string } = {};
  guardMounts(t, ref);
  const dir = (ref.dir = tempDir(t));
  const root = join(dir, "root");
  ok(strata(root, ["import", busyboxRootfs(join(dir, "rootfs"), { "etc/a": "a\n", "etc/b": "b\n", "var/x/y": "y\n" }), "localhost/cow/pod:1"]));
  const id = ok(strata(root, ["create", "localhost/cow/pod:1"])).stdout.trim();
  const m = ok(strata(root, ["mount", id])).stdout.trim();
  unlinkSync(join(m, "etc", "a"));
  rmSync(join(m, "var", "x"), { recursive: true });
  writeFileSync(join(m, "etc", "c"), randomBytes(100));
  mkdirSync(join(m, "var", "x"));
  writeFileSync(join(m, "var", "x", "z"), "z\n");
  ok(strata(root, ["umount", id]));
  ok(strata(root, ["commit", id, "localhost/cow/pod:2"]));
  ok(strata(root, ["save", "-o", join(dir, "p.tar"), "localhost/cow/pod:2"]));
  const c2 = ok(strata(root, ["create", "localhost/cow/pod:2"])).stdout.trim();
  const ours = ok(strata(root, ["mount", c2])).stdout.trim();
  const find = (cwd: string) => spawnSync("sh", ["-c", "find . -xdev | sort"], { cwd }).stdout.toString();
  const ourTree = find(ours);
  ok(strata(root, ["umount", c2]));
  const pargs = ["--root", join(dir, "podman-root"), "--runroot", join(dir, "podman-run"), "--storage-driver", "vfs"];
  t.after(() => {
    spawnSync("podman", [...pargs, "system", "reset", "-f"], { stdio: "ignore" });
    rmSync(dir, { recursive: true, force: true });
  });
  assert.equal(spawnSync("podman", [...pargs, "load", "-i", join(dir, "p.tar")]).status, 0);
  const r = spawnSync("podman", [...pargs, "run", "--rm", "localhost/cow/pod:2", "sh", "-c", "cd / && find . -xdev | sort"]);
  assert.equal(r.status, 0, r.stderr.toString());
  // podman adds its own mount points (/etc/hosts, /run/.containerenv, ...): compare the image's paths.
  const theirs = new Set(r.stdout.toString().split("\n"));
  const ourLines = ourTree.split("\n").filter(Boolean);
  for (const l of ourLines) assert.ok(theirs.has(l), `podman's tree lacks ${l}`);
  for (const gone of ["./etc/a", "./var/x/y"]) assert.ok(!theirs.has(gone), `${gone} is deleted in podman's view too`);
  assert.ok(theirs.has("./var/x/z") && theirs.has("./etc/c"));
});
