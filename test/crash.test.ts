import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { BIN, strata, strataAsync, ok, tempDir, busyboxRootfs, makeDockerArchive, makeTar } from "./helpers.ts";

/** Starts `strata args` and SIGKILLs it after `ms`; resolves with how it ended. */
function killAfter(root: string, args: string[], ms: number): Promise<{ killed: boolean; code: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "--root", root, ...args], { stdio: "ignore" });
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ killed: signal === "SIGKILL", code });
    });
  });
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

  let killed = 0;
  const delays: number[] = [];
  for (let i = 0; i < 24; i++) {
    const ms = 40 + Math.floor(Math.random() * 900);
    delays.push(ms);
    const args = i % 2 === 0 ? ["load", "-i", archive] : ["import", rootfs, `crash/imp:${i}`];
    const r = await killAfter(root, args, ms);
    if (r.killed) killed++;
    else assert.equal(r.code, 0, `run ${i} (${args[0]}) finished but failed`);
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
