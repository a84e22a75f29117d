import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, strata, strataAsync, ok, tempDir, busyboxRootfs, makeDockerArchive, makeTar } from "./helpers.ts";

/** Starts `strata args` and SIGKILLs it after `ms`; resolves with how it ended and when (ms after the start). */
function killAfter(root: string, args: string[], ms: number): Promise<{ killed: boolean; code: number | null; took: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [BIN, "--root", root, ...args], { stdio: "ignore" });
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ killed: signal === "SIGKILL", code, took: Date.now() - t0 });
    });
  });
}

/** Milliseconds `strata args` takes to run whole on `root`. */
function timed(root: string, args: string[]): number {
  const t0 = Date.now();
  ok(strata(root, args));
  return Date.now() - t0;
}

/** Every image the store lists is whole: check passes, and each listed image inspects and saves. */
function assertWhole(root: string, what: string): string[] {
  const check = strata(root, ["check"]);
  assert.equal(check.code, 0, `${what}: strata check: ${check.stderr}`);
  const ids = ok(strata(root, ["images", "-q", "--no-trunc"])).stdout.split("\n").filter(Boolean);
  for (const id of ids) ok(strata(root, ["inspect", id]), `${what}: inspect ${id}`);
  return ids;
}

test("kill -9 of load and import at random moments: the store opens, check passes, no image is half-visible", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const big = () => randomBytes(6 << 20);
  const base = await makeTar([{ name: "base.bin", content: big() }]);
  const archive = join(dir, "big.tar");
  writeFileSync(archive, await makeDockerArchive([
    { layers: [base, await makeTar([{ name: "a.bin", content: big() }])], tags: ["crash/a:1"] },
    { layers: [base, await makeTar([{ name: "b.bin", content: big() }])], tags: ["crash/b:1"] },
  ]));
  const rootfs = busyboxRootfs(join(dir, "rootfs"));
  mkdirSync(join(rootfs, "data"));
  for (let i = 0; i < 4; i++) writeFileSync(join(rootfs, "data", `f${i}`), randomBytes(3 << 20));

  // Kill moments drawn from how long each command takes whole here (a scratch root), so most kills land mid-way.
  // A run that still finishes shortens its command's span.
  const took = (args: string[]) => timed(join(dir, `scratch-${args[0]}`), args);
  const span = { load: took(["load", "-i", archive]), import: took(["import", rootfs, "crash/imp:scratch"]) };
  let killed = 0;
  const delays: number[] = [];
  for (let i = 0; i < 24; i++) {
    const args = i % 2 === 0 ? ["load", "-i", archive] : ["import", rootfs, `crash/imp:${i}`];
    const command = args[0] as "load" | "import";
    const ms = 40 + Math.floor(Math.random() * Math.max(50, 0.9 * span[command] - 40));
    delays.push(ms);
    const r = await killAfter(root, args, ms);
    if (r.killed) killed++;
    else {
      assert.equal(r.code, 0, `run ${i} (${args[0]}) finished but failed`);
      span[command] = Math.min(span[command], r.took);
    }
    const ids = assertWhole(root, `after run ${i} (${args[0]}, killed at ${ms} ms)`);
    if (i % 2 === 0) {
      const tags = ok(strata(root, ["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout;
      // The two images of one archive are committed in one transaction: both or neither.
      assert.equal(tags.includes("crash/a:1"), tags.includes("crash/b:1"), `run ${i}: load half-visible: ${tags}`);
    }
    void ids;
  }
  assert.ok(killed >= 12, `at least half the runs were killed mid-way (killed ${killed}, delays ${delays.join(",")})`);
  // Leftovers of dead writers are garbage, and gc removes them.
  ok(strata(root, ["gc"]));
  assertWhole(root, "after gc");
  const { readdirSync } = await import("node:fs");
  assert.deepEqual(readdirSync(join(root, "ingest")), [], "gc leaves no partial ingests of dead writers");
  // A completed load still works after all that.
  ok(strata(root, ["load", "-i", archive]));
  assertWhole(root, "final load");
});

test("an overlay probe a killed process left mounted: the next probe and check unmount and remove it, a live process's probe stays", async (t) => {
  const mounted = (dir: string) => readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === dir);
  /** What probeOverlay leaves when killed between its mount and its unmount. */
  const leftProbe = (root: string, token: string) => {
    const base = join(root, "tmp", `probe-${token}-1`);
    for (const d of ["lower1", "lower2", "upper", "work", "merged"]) mkdirSync(join(base, d), { recursive: true });
    const m = spawnSync("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${base}/lower1:${base}/lower2,upperdir=${base}/upper,workdir=${base}/work`, join(base, "merged")]);
    assert.equal(m.status, 0, m.stderr.toString());
    probes.push(join(base, "merged"));
    return base;
  };
  const probes: string[] = [];
  const dead = "999999999.1"; // no such process
  const live = `${process.pid}.${readFileSync(`/proc/${process.pid}/stat`, "utf8").split(") ")[1].split(" ")[19]}`;
  const root = tempDir(t, "strata-probe-");
  try {
    // A fresh root: the first command probes, and the dead probe goes first.
    const first = leftProbe(root, dead);
    const mine = leftProbe(root, live);
    ok(strata(root, ["info"]));
    assert.ok(!mounted(join(first, "merged")) && !existsSync(first), "the dead probe is gone");
    assert.ok(mounted(join(mine, "merged")), "a live process's probe is left alone");
    // A root whose driver is chosen already: check repairs it.
    const second = leftProbe(root, dead);
    const check = ok(strata(root, ["check"]));
    assert.match(check.stdout + check.stderr, /removed 1 overlay probe\(s\) a dead process left mounted/);
    assert.ok(!mounted(join(second, "merged")) && !existsSync(second));
  } finally {
    for (const p of probes) if (mounted(p)) spawnSync("umount", ["-l", p]);
  }
});

test("several strata processes on one root at once never corrupt it", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const base = await makeTar([{ name: "shared.bin", content: randomBytes(2 << 20) }]);
  const archives: string[] = [];
  for (let i = 0; i < 4; i++) {
    const file = join(dir, `a${i}.tar`);
    writeFileSync(file, await makeDockerArchive([{ layers: [base, await makeTar([{ name: `own${i}`, content: randomBytes(1 << 20) }])], tags: [`par/a${i}:1`] }]));
    archives.push(file);
  }
  const rootfs = busyboxRootfs(join(dir, "rootfs"));
  const runs = await Promise.all([
    ...archives.map((a) => strataAsync(root, ["load", "-i", a])),
    strataAsync(root, ["import", rootfs, "par/imp:1"]),
    strataAsync(root, ["import", rootfs, "par/imp:2"]),
    ...archives.map((a) => strataAsync(root, ["load", "-i", a])),
    strataAsync(root, ["gc"]),
    strataAsync(root, ["images"]),
  ]);
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  const names = ok(strata(root, ["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout.split("\n").filter(Boolean).sort();
  assert.deepEqual(names, ["par/a0:1", "par/a1:1", "par/a2:1", "par/a3:1", "par/imp:1", "par/imp:2"]);
  assertWhole(root, "after parallel loads");
  // Concurrent tag / rmi / gc against each other.
  const more = await Promise.all([
    strataAsync(root, ["rmi", "par/a0:1"]),
    strataAsync(root, ["rmi", "par/a1:1"]),
    strataAsync(root, ["tag", "par/a2:1", "par/a2:2"]),
    strataAsync(root, ["gc"]),
    strataAsync(root, ["load", "-i", archives[0]]),
  ]);
  for (const r of more) assert.equal(r.code, 0, r.stderr);
  assertWhole(root, "after parallel rmi/tag/gc/load");
  const du = JSON.parse(ok(strata(root, ["system", "df", "--format", "json"])).stdout);
  assert.equal(du.unreferencedBytes, 0, "nothing was orphaned: rmi/gc deleted exactly what became unreferenced");
});

test("kill -9 during unpack and during commit leaves no half snapshot in use; the next command repairs it", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const layers = await Promise.all([0, 1, 2].map(async (i) => makeTar(Array.from({ length: 1000 }, (_, j) => ({ name: `d${i}/f${j}`, content: randomBytes(20_000) })))));
  const archive = join(dir, "u.tar");
  writeFileSync(archive, await makeDockerArchive([{ layers, tags: ["unpack/me:1"] }]));
  const removeAll = () => {
    for (const c of ok(strata(root, ["ps", "-a", "-q", "--no-trunc"])).stdout.split("\n").filter(Boolean)) ok(strata(root, ["rm", c]));
    ok(strata(root, ["rmi", "unpack/me:1"]));
    ok(strata(root, ["gc"]));
  };
  // Kill moments fall between start-up (a command that only opens the store) and the end of the fastest whole
  // create seen so far, so they land inside the unpack; a run that still finishes shortens that span.
  ok(strata(root, ["load", "--no-unpack", "-i", archive]));
  const startup = Math.min(timed(root, ["images"]), timed(root, ["images"]));
  let span = Infinity;
  for (let i = 0; i < 2; i++) {
    span = Math.min(span, timed(root, ["create", "unpack/me:1"]));
    removeAll();
    ok(strata(root, ["load", "--no-unpack", "-i", archive]));
  }
  let killed = 0;
  let runs = 0;
  const delays: number[] = [];
  for (; runs < 16 && killed < 6; runs++) {
    if (runs > 0) ok(strata(root, ["load", "--no-unpack", "-i", archive]));
    const ms = Math.floor(startup + Math.max(20, span - startup) * (0.1 + 0.8 * Math.random()));
    delays.push(ms);
    const r = await killAfter(root, ["create", "unpack/me:1"], ms);
    if (r.killed) killed++;
    else {
      assert.equal(r.code, 0, `run ${runs}: create finished but failed`);
      span = Math.min(span, r.took);
    }
    const check = strata(root, ["check"]);
    assert.equal(check.code, 0, check.stderr);
    // Whatever was half-made is gone; a new container sees the whole image.
    const id = ok(strata(root, ["create", "unpack/me:1"])).stdout.trim();
    const merged = ok(strata(root, ["mount", id])).stdout.trim();
    const { readdirSync } = await import("node:fs");
    assert.deepEqual(readdirSync(merged).sort(), ["d0", "d1", "d2", "dev", "etc", "proc", "sys"], "the image plus the init layer's mount points");
    assert.equal(readdirSync(join(merged, "d2")).length, 1000);
    ok(strata(root, ["umount", id]));
    removeAll();
  }
  t.diagnostic(`killed ${killed} of ${runs} creates (start-up ${startup} ms, create ${span} ms, kills at ${delays.join(",")} ms)`);
  assert.ok(killed >= 6, `runs killed mid-unpack: ${killed} of ${runs} (start-up ${startup} ms, create ${span} ms, kills at ${delays.join(",")} ms)`);
  // Kill during commit.
  ok(strata(root, ["load", "-i", archive]));
  for (let i = 0; i < 6; i++) {
    const id = ok(strata(root, ["create", "unpack/me:1"])).stdout.trim();
    const merged = ok(strata(root, ["mount", id])).stdout.trim();
    for (let j = 0; j < 200; j++) writeFileSync(join(merged, `new-${j}`), randomBytes(20_000));
    ok(strata(root, ["umount", id]));
    await killAfter(root, ["commit", id, `committed/x:${i}`], 100 + Math.floor(Math.random() * 600));
    const check = strata(root, ["check"]);
    assert.equal(check.code, 0, check.stderr);
    ok(strata(root, ["rm", id]));
  }
  const { readFileSync } = await import("node:fs");
  assert.ok(!readFileSync("/proc/self/mounts", "utf8").includes(root), "no mount left behind");
});

test("a full disk during load, unpack and commit: a clear error, nothing corrupted, space given back", async (t) => {
  const { mkdirSync, statfsSync } = await import("node:fs");
  const { spawnSync } = await import("node:child_process");
  let root = "";
  // Registered before tempDir's removal so that it runs first (after-hooks run in order).
  t.after(() => {
    spawnSync("sh", ["-c", `grep -o ' ${root}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    spawnSync("umount", ["-l", root]);
  });
  const dir = tempDir(t);
  root = join(dir, "root");
  mkdirSync(root);
  assert.equal(spawnSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", root]).status, 0);
  const free = () => {
    const s = statfsSync(root);
    return s.bfree * s.bsize;
  };
  const small = await makeTar([{ name: "small", content: "s" }]);
  const archive = join(dir, "small.tar");
  writeFileSync(archive, await makeDockerArchive([{ layers: [small], tags: ["fits:1"] }]));
  ok(strata(root, ["load", "-i", archive]));
  const baseline = free();
  // 5 layers of 2 MB: the blobs fit, their unpacked copies do not (and meta.db keeps room to work).
  const big = await Promise.all([0, 1, 2, 3, 4].map(() => makeTar([{ name: "blob", content: randomBytes(2 << 20) }])));
  const bigArchive = join(dir, "big.tar");
  writeFileSync(bigArchive, await makeDockerArchive([{ layers: big, tags: ["toobig:1"] }]));
  const r = strata(root, ["load", "-i", bigArchive]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: .*(ENOSPC|no space left)/i);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  ok(strata(root, ["check"]));
  // Whatever the failed load reported as done is intact; the rest is garbage that gc gives back.
  strata(root, ["rmi", "-f", "toobig:1"]); // present only if the load got as far as recording it
  ok(strata(root, ["gc"]));
  assert.ok(free() >= baseline - 64 * 1024, `space given back (free ${free()} vs ${baseline} before)`);
  assert.deepEqual(ok(strata(root, ["images", "--format", "{{.Repository}}"])).stdout, "fits\n");
  // Commit into a full disk.
  const id = ok(strata(root, ["create", "fits:1"])).stdout.trim();
  const merged = ok(strata(root, ["mount", id])).stdout.trim();
  // fill the container's layer until the disk is nearly full, then commit (which needs room for the new layer)
  const { writeFileSync: wf } = await import("node:fs");
  let filled = 0;
  try {
    for (; filled < 100; filled++) wf(join(merged, `fill-${filled}`), randomBytes(1 << 20));
  } catch {
    // ENOSPC while filling: the disk is full, as wanted; free one file so meta.db can still work
    const { rmSync } = await import("node:fs");
    rmSync(join(merged, `fill-${filled}`), { force: true });
    rmSync(join(merged, `fill-${filled - 1}`), { force: true });
  }
  ok(strata(root, ["umount", id]));
  const c = strata(root, ["commit", id, "full:1"]);
  assert.equal(c.code, 1);
  assert.match(c.stderr, /^Error: .*(ENOSPC|no space left)/i);
  ok(strata(root, ["check"]));
  ok(strata(root, ["rm", id]));
  ok(strata(root, ["gc"]));
  assert.ok(free() >= baseline - 64 * 1024, "space given back after the failed commit");
});
