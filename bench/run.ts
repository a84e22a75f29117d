// strata's benchmarks, each side by side with the peer tool that does the same job.
//   node --import tsx bench/run.ts [images] [startup] [load] [save] [unpack] [commit] [run] [detached] [registry] [build] [pull] [push]   (from the repo root, after a build)
// Every store lives in a temp dir removed at the end; only the fixtures in bench/.cache/ are kept.
import { spawn, spawnSync } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { createReadStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, copyFileSync, openSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { compare, median, timeOnce, type Comparison } from "./harness.js";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
const CACHE = join(REPO, "bench", ".cache");
/** The `strata` command as users run it (bin/strata, the launcher). */
const STRATA = [join(REPO, "bin", "strata")];
const MB = 1 << 20;

// ---- helpers ---------------------------------------------------------------

const temps: string[] = [];
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `strata-bench-${prefix}-`));
  temps.push(d);
  return d;
}

/** Unmounts everything mounted at or under dir, deepest first; returns those mount points. */
function unmountUnder(dir: string): string[] {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]).filter((m) => m === dir || m?.startsWith(dir + "/"));
  for (const m of mounts.sort().reverse()) spawnSync("umount", ["-l", m]);
  return mounts;
}

// On ext4 without a journal (as here) the kernel, allocating an inode, steps one by one over
// the inodes freed in the last 60 s (360 s while their inode table block is dirty): creating
// files right after deleting tens of thousands is several times slower (tar -x of the unpack
// fixture's node_modules layer: 14.5 s instead of 1.7 s). So the runs' stores are moved aside
// rather than deleted, the trash is emptied after each comparison and synced, and the next
// one starts 61 s later.
let trash: string | undefined;
let trashed = 0;
/** When the last big deletion ended; deletions made before this process started (tests, earlier runs) are waited out too. */
let lastDelete = Date.now();

/** Removes every temp dir, unmounting anything left mounted under it first. */
function cleanup(): void {
  for (const d of temps.splice(0)) {
    unmountUnder(d);
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      // podman's overlay driver can mount its storage again while it exits: once more.
      unmountUnder(d);
      spawnSync("rm", ["-rf", d]);
    }
  }
  trash = undefined;
  settle();
  lastDelete = Date.now();
}

/** Moves dir out of the way, unmounting anything in it first; returns what was mounted there. */
function discard(dir: string): string[] {
  const mounts = unmountUnder(dir);
  if (existsSync(dir)) renameSync(dir, join((trash ??= tempDir("trash")), String(trashed++)));
  return mounts;
}

/** How long a synced deletion slows down the next creates (see the note on the trash above). */
const DELETE_SETTLES_MS = 61_000;

/** compare(), between deletions: it waits out the last one, then empties the trash of its runs. */
async function compareApart(c: Comparison): Promise<void> {
  const wait = lastDelete + DELETE_SETTLES_MS - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  try {
    compare(c);
  } finally {
    if (trash) rmSync(trash, { recursive: true, force: true });
    trash = undefined;
    settle(); // the inode table blocks written back: the shorter window applies
    lastDelete = Date.now();
  }
}

/** Clears a strata root for the next run; strata must not have left anything mounted in it. */
function freshStrataRoot(root: string): void {
  const left = discard(root);
  if (left.length) console.error(`# warning: strata left ${left.length} mount(s) under ${root}: ${left.join(" ")}`);
}

/** Flushes dirty pages, so that one run's writeback does not land in the next timed run. */
function settle(): void {
  spawnSync("sync");
}
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

/** Runs argv to completion, loudly failing; returns stdout. */
function sh(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { maxBuffer: 256 * MB });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status ?? r.signal}: ${r.stderr?.toString().trim() ?? r.error}`);
  return r.stdout.toString();
}

/** Runs the commands at most `limit` at a time (setup only; the timed runs are sequential). */
async function parallel(jobs: string[][], limit = 4): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const argv = jobs[next++];
      await new Promise<void>((resolve, reject) => {
        const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
        let err = "";
        child.stderr.on("data", (d) => (err += d));
        child.on("error", reject);
        child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(" ")} exited ${code}: ${err.trim()}`))));
      });
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/** podman on its own storage under dir (vfs by default: no mounts to leave behind), touching nothing system-wide. */
function podman(dir: string, driver: "vfs" | "overlay" = "vfs"): string[] {
  return ["podman", "--root", join(dir, "root"), "--runroot", join(dir, "run"), "--tmpdir", join(dir, "tmp"), "--storage-driver", driver];
}

/** A number in [0, n) that depends only on key: fixtures come out the same on every machine. */
function pick(key: string, n: number): number {
  return createHash("sha256").update(key).digest().readUInt32LE(0) % n;
}

/** Source-like text of about `size` bytes that names key. */
function filler(key: string, size: number): string {
  let s = `// ${key}\n'use strict';\n`;
  for (let i = 0; s.length < size; i++) s += `exports.f${i} = (x) => x * ${i} + ${pick(`${key}#${i}`, 1000)}; // ${key}\n`;
  return s;
}

function writeText(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

/** A root filesystem of /bin/busybox and a few applet links (Debian's busybox-static). */
function busyboxRootfs(dir: string): string {
  mkdirSync(join(dir, "bin"), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  for (const a of ["sh", "ls", "cat", "echo", "true", "sleep"]) symlinkSync("busybox", join(dir, "bin", a));
  return dir;
}

// Entries as an image builder writes them: numeric owners, no atime/ctime records.
const TAR_FLAGS = ["--numeric-owner", "--format=pax", "--pax-option=delete=atime,delete=ctime"];

interface ArchiveImage {
  /** uncompressed layer tars, bottom first (moved into the archive's staging dir) */
  layers: string[];
  tag: string;
  /** one `created_by` per layer */
  history: string[];
  created: string;
  config?: Record<string, unknown>;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MB })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * Writes a docker-archive laid out as `podman save` writes one: <hex>.tar layers, <hex>.json
 * configs, then manifest.json and repositories last. Written aside and renamed into place.
 */
async function writeDockerArchive(out: string, images: ArchiveImage[], stage: string): Promise<void> {
  mkdirSync(stage, { recursive: true });
  const members: string[] = [];
  const manifest = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const img of images) {
    const names: string[] = [];
    const diffIds: string[] = [];
    for (const l of img.layers) {
      const hex = await sha256File(l);
      if (!existsSync(join(stage, `${hex}.tar`))) members.push(`${hex}.tar`);
      renameSync(l, join(stage, `${hex}.tar`));
      names.push(`${hex}.tar`);
      diffIds.push(`sha256:${hex}`);
    }
    const config = Buffer.from(JSON.stringify({
      architecture: ({ x64: "amd64", arm64: "arm64" } as Record<string, string>)[process.arch] ?? process.arch,
      os: "linux",
      created: img.created,
      config: img.config ?? {},
      rootfs: { type: "layers", diff_ids: diffIds },
      history: img.history.map((created_by) => ({ created: img.created, created_by })),
    }));
    const configHex = createHash("sha256").update(config).digest("hex");
    writeFileSync(join(stage, `${configHex}.json`), config);
    members.push(`${configHex}.json`);
    manifest.push({ Config: `${configHex}.json`, RepoTags: [img.tag], Layers: names });
    const [repo, tag] = img.tag.split(":");
    (repositories[repo] ??= {})[tag] = diffIds[diffIds.length - 1].slice(7);
  }
  writeFileSync(join(stage, "manifest.json"), JSON.stringify(manifest));
  writeFileSync(join(stage, "repositories"), JSON.stringify(repositories));
  const list = join(stage, "..", "members.list");
  writeFileSync(list, [...members, "manifest.json", "repositories"].join("\n") + "\n");
  mkdirSync(dirname(out), { recursive: true });
  sh(["tar", "-C", stage, "--numeric-owner", "--owner=0", "--group=0", "-T", list, "-cf", `${out}.partial`]);
  renameSync(`${out}.partial`, out);
}

// ---- images: listing a store of 200 images ---------------------------------

async function benchImages(): Promise<void> {
  const N = 200;
  const work = tempDir("images");
  const root = join(work, "strata");
  const pod = podman(join(work, "podman"));
  // 200 distinct one-file layers in one docker-archive that both stores load: the same
  // images by digest on both sides, and one process each (200 imports took two minutes).
  const layers: string[] = [];
  for (let n = 0; n < N; n++) {
    const d = join(work, "src", String(n));
    mkdirSync(join(d, "etc"), { recursive: true });
    writeFileSync(join(d, "etc", `img-${n}`), `image ${n}\n`);
    layers.push(join(work, `img-${n}.tar`));
  }
  await parallel(layers.map((t, n) => ["tar", "-C", join(work, "src", String(n)), ...TAR_FLAGS, "-cf", t, "etc"]));
  const archive = join(work, "images.tar");
  const images = layers.map((l, n) => ({
    layers: [l],
    tag: `bench/img-${n}:latest`,
    history: [`ADD img-${n} /etc`],
    created: new Date(Date.UTC(2024, 0, 1) + n * 1000).toISOString().replace(".000", ""),
  }));
  await writeDockerArchive(archive, images, join(work, "stage"));
  const t0 = Date.now();
  sh([...STRATA, "--root", root, "load", "-q", "--no-unpack", "-i", archive]);
  const t1 = Date.now();
  sh([...pod, "load", "-q", "-i", archive]);
  const count = (argv: string[]) => sh(argv).trim().split("\n").filter(Boolean).length;
  const ours = count([...STRATA, "--root", root, "images", "-q"]);
  const theirs = count([...pod, "images", "-q"]);
  if (ours !== N || theirs !== N) throw new Error(`images setup: strata holds ${ours} images, podman ${theirs}; want ${N} each`);
  console.error(`# images: loaded ${N} images into strata in ${((t1 - t0) / 1000).toFixed(1)} s, into podman in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
  compare({
    name: `images (${N} images)`,
    ours: { label: "strata", cmd: [...STRATA, "--root", root, "images"] },
    peer: { label: "podman", cmd: [...pod, "images"] },
    target: 0.35,
  });
}

// ---- startup: what a command costs over a bare node process ------------------

async function benchStartup(): Promise<void> {
  const work = tempDir("startup");
  const root = join(work, "strata");
  const pod = podman(join(work, "podman"));
  const tar = join(work, "busybox.tar");
  sh(["tar", "-C", busyboxRootfs(join(work, "rootfs")), "-cf", tar, "."]);
  sh([...STRATA, "--root", root, "import", tar, "bench/busybox:latest"]);
  sh([...pod, "import", "--quiet", tar, "bench/busybox:latest"]);
  // The floor is Node starting with nothing to do, and no NODE_EXTRA_CA_CERTS to parse (the launcher drops it here too).
  const floor = { label: "node -e 0", cmd: ["env", "-u", "NODE_EXTRA_CA_CERTS", process.execPath, "-e", "0"] };
  compare({ name: "startup: --version", ours: { label: "strata", cmd: [...STRATA, "--version"] }, peer: floor, target: 1.25 });
  const inspect = { label: "strata", cmd: [...STRATA, "--root", root, "inspect", "bench/busybox"] };
  compare({ name: "startup: inspect", ours: inspect, peer: floor, target: 1.25 });
  // For reference only: the same inspect by podman.
  compare({ name: "inspect vs podman", ours: inspect, peer: { label: "podman", cmd: [...pod, "inspect", "bench/busybox"] } });
}

// ---- load: a ≈300 MB docker-archive ----------------------------------------

/** Host paths (relative to /, parents first, sorted) under roots, stopping once `budget` bytes of files are listed. */
function hostFiles(roots: string[], budget: number): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  let bytes = 0;
  const add = (p: string) => {
    const rel = p.slice(1);
    const parts = rel.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const q = parts.slice(0, i).join("/");
      if (seen.has(q)) continue;
      seen.add(q);
      out.push(q);
    }
  };
  const walk = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    } catch {
      return; // missing or unreadable: skip
    }
    for (const e of entries) {
      if (bytes >= budget) return;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSymbolicLink()) add(p);
      else if (e.isFile()) {
        add(p);
        bytes += lstatSync(p).size;
      }
    }
  };
  for (const r of roots) if (bytes < budget) walk(r);
  return out;
}

/** A layer tar of a staged directory (its top-level names, so no "./" prefix). */
function tarDir(dir: string, out: string, extra: string[] = []): void {
  sh(["tar", "-C", dir, ...TAR_FLAGS, "--sort=name", ...extra, "-cf", out, ...readdirSync(dir).sort()]);
}

function tarHostFiles(paths: string[], out: string, listFile: string): void {
  writeFileSync(listFile, paths.join("\n") + "\n");
  sh(["tar", "-C", "/", ...TAR_FLAGS, "--no-recursion", "-T", listFile, "-cf", out]);
}

/**
 * Builds the load fixture once: a Debian minbase layer (debootstrap; or, without a mirror,
 * ≈250 MB of the host's /usr), an "apt-get clean" layer of whiteouts, an app-runtime layer
 * of host files topping the archive up to ≈300 MB, and a small app layer.
 */
async function buildLoadArchive(out: string): Promise<void> {
  const work = tempDir("load-build");
  const t0 = Date.now();
  const layer = (n: number) => join(work, `l${n}.tar`);

  const rootfs = join(work, "rootfs");
  let debs: string[] = [];
  let baseHistory = "debootstrap --variant=minbase bookworm";
  const db = process.getuid?.() === 0
    ? spawnSync("debootstrap", ["--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian"], { stdio: "ignore", timeout: 15 * 60_000 })
    : undefined;
  if (db?.status === 0) {
    // Like any image: /dev, /proc and /sys stay empty.
    tarDir(rootfs, layer(0), ["--anchored", "--exclude=dev/*", "--exclude=proc/*", "--exclude=sys/*"]);
    debs = readdirSync(join(rootfs, "var/cache/apt/archives")).filter((n) => n.endsWith(".deb"));
  } else {
    console.error("# load: debootstrap failed or not root; using ≈250 MB of host files as the base layer");
    tarHostFiles(hostFiles(["/usr/bin", "/usr/lib", "/usr/share"], 250 * MB), layer(0), join(work, "l0.list"));
    baseHistory = "COPY host /usr (debootstrap unavailable)";
  }

  // Whiteouts: the .debs apt left behind, and /usr/share/doc.
  const clean = join(work, "l1");
  mkdirSync(join(clean, "var/cache/apt/archives"), { recursive: true });
  mkdirSync(join(clean, "usr/share"), { recursive: true });
  for (const d of debs) writeFileSync(join(clean, "var/cache/apt/archives", `.wh.${d}`), "");
  writeFileSync(join(clean, "usr/share/.wh.doc"), "");
  tarDir(clean, layer(1));

  // The app layer is made before the runtime layer so that the latter can fill the budget.
  const app = join(work, "l3");
  mkdirSync(join(app, "app/bin"), { recursive: true });
  mkdirSync(join(app, "etc"), { recursive: true });
  writeFileSync(join(app, "app/config.json"), JSON.stringify({ listen: ":8080", workers: 4 }, null, 2) + "\n");
  writeFileSync(join(app, "app/bin/start.sh"), "#!/bin/sh\nexec python3 -m http.server 8080\n", { mode: 0o755 });
  writeFileSync(join(app, "etc/motd"), "bench image\n");
  symlinkSync("bin/start.sh", join(app, "app/start"));
  tarDir(app, layer(3));

  const used = [0, 1, 3].reduce((a, n) => a + statSync(layer(n)).size, 0);
  const runtime = hostFiles(["/usr/lib/python3.11", "/usr/lib/python3", "/usr/share/perl", "/usr/lib/x86_64-linux-gnu"], Math.max(20 * MB, 300 * MB - used));
  tarHostFiles(runtime, layer(2), join(work, "l2.list"));

  const sizes = [0, 1, 2, 3].map((n) => (statSync(layer(n)).size / MB).toFixed(1)).join(" + ");
  await writeDockerArchive(out, [{
    layers: [0, 1, 2, 3].map(layer),
    tag: "bench/load:latest",
    history: [baseHistory, "RUN apt-get clean && rm -rf /usr/share/doc", "COPY runtime /usr/lib", "COPY app /"],
    created: "2024-01-01T00:00:00Z",
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/app/start"], WorkingDir: "/app" },
  }], join(work, "archive"));
  console.error(`# load: built ${out} (${(statSync(out).size / MB).toFixed(0)} MB; layers ${sizes} MB) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

/** The cached load fixture, built when missing. */
async function loadArchive(): Promise<string> {
  const archive = join(CACHE, "load-300.tar");
  if (!existsSync(archive)) {
    console.error(`# load: building ${archive} once (debootstrap; a minute or two)`);
    await buildLoadArchive(archive);
  }
  return archive;
}

async function benchLoad(): Promise<void> {
  const archive = await loadArchive();
  const work = tempDir("load");
  const root = join(work, "strata");
  const oci = join(work, "oci");
  compare({
    name: `load (${(statSync(archive).size / MB).toFixed(0)} MB archive)`,
    ours: { label: "strata", cmd: [...STRATA, "--root", root, "load", "-q", "--no-unpack", "-i", archive] },
    peer: { label: "skopeo", cmd: ["skopeo", "copy", "-q", `docker-archive:${archive}`, `oci:${oci}:bench`] },
    // Each run starts from an empty destination.
    before: () => {
      rmSync(root, { recursive: true, force: true });
      rmSync(oci, { recursive: true, force: true });
    },
    warmup: 1,
    runs: 5,
    target: 1.0,
    rss: 150,
  });
}

// ---- save: the unpack fixture written back out as a docker-archive ----------

async function benchSave(): Promise<void> {
  const archive = join(CACHE, "unpack-300.tar");
  if (!existsSync(archive)) {
    console.error(`# save: building ${archive} once`);
    await buildUnpackArchive(archive);
  }
  const work = tempDir("save");
  const root = join(work, "strata");
  const pod = podman(join(work, "podman"), "overlay");
  sh([...STRATA, "--root", root, "load", "-q", "--no-unpack", "-i", archive]);
  sh([...pod, "load", "-q", "-i", archive]);
  const out = join(work, "out.tar");
  compare({
    name: `save (${(statSync(archive).size / MB).toFixed(0)} MB, 4 layers, docker-archive)`,
    ours: { label: "strata", cmd: [...STRATA, "--root", root, "save", "-o", out, "bench/unpack:latest"] },
    peer: { label: "podman", cmd: [...pod, "save", "-q", "--format", "docker-archive", "-o", out, "bench/unpack:latest"] },
    before: () => rmSync(out, { force: true }),
    warmup: 1,
    runs: 5,
    target: 1.0,
    rss: 150,
  });
}

// ---- unpack: a ≈300 MB image with tens of thousands of files ----------------

/** The layer files of a docker-archive, bottom first, as named in its manifest.json. */
function archiveLayers(archive: string): string[] {
  return (JSON.parse(sh(["tar", "-xOf", archive, "manifest.json"])) as { Layers: string[] }[])[0].Layers;
}

/** A node_modules-like tree: `files` small JS/JSON files in packages, some nested a level down. */
function writeNodeModules(dir: string, files: number): void {
  let n = 0;
  for (let p = 0; n < files; p++) {
    const name = `pkg-${p}`;
    // Every fourth package is a dependency nested under the one before it.
    const base = join(dir, "node_modules", p % 4 === 3 ? join(`pkg-${p - 1}`, "node_modules", name) : name);
    writeText(join(base, "package.json"), JSON.stringify({ name, version: `1.${pick(name, 20)}.0`, main: "lib/index.js", license: "MIT" }, null, 2) + "\n");
    writeText(join(base, "lib", "index.js"), filler(`${name}/index`, 200 + pick(`${name}/index`, 800)));
    const sources = 10 + pick(name, 60);
    for (let f = 0; f < sources; f++) {
      const rel = join("lib", `m${f % 5}`, `s${f % 3}`, `file-${f}.js`);
      writeText(join(base, rel), filler(`${name}/${rel}`, 100 + pick(`${name}/${rel}`, 1000)));
    }
    n += 2 + sources;
  }
}

/** `size` bytes of seeded pseudo-random data (an AES-CTR keystream under a fixed key). */
function writeRandom(path: string, size: number, seed: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const cipher = createCipheriv("aes-128-ctr", createHash("sha256").update(seed).digest().subarray(0, 16), Buffer.alloc(16));
  const zeros = Buffer.alloc(4 * MB);
  const fd = openSync(path, "w", 0o755);
  try {
    for (let done = 0; done < size; done += zeros.length) writeSync(fd, cipher.update(zeros.subarray(0, Math.min(zeros.length, size - done))));
  } finally {
    closeSync(fd);
  }
}

/**
 * Builds the unpack fixture once: the load fixture's Debian minbase layer, a node_modules
 * layer of 30,000 small files, a layer with one 64 MB binary, and a layer deleting /usr/share/doc.
 */
async function buildUnpackArchive(out: string): Promise<void> {
  const load = await loadArchive();
  const work = tempDir("unpack-build");
  const t0 = Date.now();
  const layer = (n: number) => join(work, `l${n}.tar`);
  // Generated layers get fixed times, so the same code makes the same bytes.
  const fixed = ["--mtime=@1704067200"];

  const [base] = archiveLayers(load);
  sh(["tar", "-xf", load, "-C", work, base]);
  renameSync(join(work, base), layer(0));

  writeNodeModules(join(work, "l1", "app"), 30_000);
  tarDir(join(work, "l1"), layer(1), fixed);

  writeRandom(join(work, "l2", "usr", "local", "bin", "server"), 64 * MB, "bench/unpack server");
  tarDir(join(work, "l2"), layer(2), fixed);

  writeText(join(work, "l3", "usr", "share", ".wh.doc"), "");
  tarDir(join(work, "l3"), layer(3), fixed);

  const sizes = [0, 1, 2, 3].map((n) => (statSync(layer(n)).size / MB).toFixed(1)).join(" + ");
  await writeDockerArchive(out, [{
    layers: [0, 1, 2, 3].map(layer),
    tag: "bench/unpack:latest",
    history: ["debootstrap --variant=minbase bookworm", "COPY node_modules /app", "COPY server /usr/local/bin", "RUN rm -rf /usr/share/doc"],
    created: "2024-01-01T00:00:00Z",
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/usr/local/bin/server"], WorkingDir: "/app" },
  }], join(work, "archive"));
  console.error(`# unpack: built ${out} (${(statSync(out).size / MB).toFixed(0)} MB; layers ${sizes} MB) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

/** The fixture's layer tars as plain files (bench/.cache/unpack-layers/layerN.tar), extracted once. */
function unpackLayers(archive: string): string[] {
  const dir = join(CACHE, "unpack-layers");
  const names = archiveLayers(archive);
  const layers = names.map((_, n) => join(dir, `layer${n}.tar`));
  if (!existsSync(dir)) {
    const partial = `${dir}.partial`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial);
    sh(["tar", "-xf", archive, "-C", partial, ...names]);
    names.forEach((name, n) => renameSync(join(partial, name), join(partial, `layer${n}.tar`)));
    renameSync(partial, dir);
  }
  return layers;
}

async function benchUnpack(): Promise<void> {
  const archive = join(CACHE, "unpack-300.tar");
  if (!existsSync(archive)) {
    console.error(`# unpack: building ${archive} once`);
    await buildUnpackArchive(archive);
  }
  const layers = unpackLayers(archive);
  const work = tempDir("unpack");
  const root = join(work, "strata");
  const podDir = join(work, "podman");
  const size = `${(statSync(archive).size / MB).toFixed(0)} MB`;

  // load, which unpacks on both sides, each run into empty stores.
  await compareApart({
    name: `unpack: load (${size})`,
    ours: { label: "strata", cmd: [...STRATA, "--root", root, "load", "-q", "-i", archive], before: () => (freshStrataRoot(root), settle()) },
    peer: { label: "podman", cmd: [...podman(podDir, "overlay"), "load", "-q", "-i", archive], before: () => (discard(podDir), settle()) },
    warmup: 1,
    runs: 5,
    target: 0.5,
    rss: 150,
  });

  // The unpack alone: `create` unpacks the layers of an image loaded with --no-unpack,
  // against GNU tar extracting the same layer tars side by side.
  const tarOut = join(work, "tar");
  const script = [...layers.map((l, n) => `tar -xf ${l} -C ${join(tarOut, String(n))} & p${n}=$!`), layers.map((_, n) => `wait $p${n}`).join(" && ")].join("\n");
  await compareApart({
    name: "unpack: create",
    ours: {
      label: "strata",
      cmd: [...STRATA, "--root", root, "create", "bench/unpack:latest"],
      before: () => {
        freshStrataRoot(root);
        sh([...STRATA, "--root", root, "load", "-q", "--no-unpack", "-i", archive]);
        settle();
      },
    },
    peer: {
      label: `tar -x ×${layers.length}`,
      cmd: ["sh", "-c", script],
      before: () => {
        discard(tarOut);
        layers.forEach((_, n) => mkdirSync(join(tarOut, String(n)), { recursive: true }));
        settle();
      },
    },
    warmup: 1,
    runs: 5,
    target: 1.3,
  });
}

// ---- commit: a container with 10,000 changed files ---------------------------

/** The container's changes: `files` files of 1-4 KB in nested directories. */
function writeChanges(dir: string, files: number): void {
  for (let f = 0; f < files; f++) {
    const rel = join("srv", "data", `d${f % 100}`, `e${Math.floor(f / 100) % 10}`, `file-${f}.txt`);
    writeText(join(dir, rel), filler(rel, 1024 + pick(rel, 3072)));
  }
}

async function benchCommit(): Promise<void> {
  const N = 10_000;
  const work = tempDir("commit");
  const tar = join(work, "busybox.tar");
  sh(["tar", "-C", busyboxRootfs(join(work, "rootfs")), "-cf", tar, "."]);
  const root = join(work, "strata");
  const podDir = join(work, "podman");
  const strata = [...STRATA, "--root", root];
  const pod = podman(podDir, "overlay");
  // Each run commits a fresh container, bench-c, in a fresh store: an imported busybox
  // image and N new files written through the container's mounted root.
  const prepare = (cli: string[], importArgs: string[]) => {
    sh([...cli, "import", ...importArgs, tar, "bench/busybox:latest"]);
    sh([...cli, "create", "--name", "bench-c", "bench/busybox:latest", "sh"]);
    writeChanges(sh([...cli, "mount", "bench-c"]).trim(), N);
    sh([...cli, "umount", "bench-c"]);
    settle();
  };
  await compareApart({
    name: `commit (${N} files)`,
    ours: {
      label: "strata",
      cmd: [...strata, "commit", "bench-c", "bench/committed:latest"],
      before: () => (freshStrataRoot(root), prepare(strata, [])),
    },
    peer: {
      label: "podman",
      cmd: [...pod, "commit", "-q", "bench-c", "bench/committed:latest"],
      before: () => (discard(podDir), prepare(pod, ["--quiet"])),
    },
    warmup: 1,
    runs: 5,
    target: 0.7,
    rss: 150,
  });
}

// ---- pull and push: the unpack fixture through a local docker-registry ------

/** A docker-registry on a free loopback port, with no blob-descriptor cache (so wiping its storage empties it); stopped at exit. */
async function startPullRegistry(work: string): Promise<{ host: string; storage: string; wipe: () => void }> {
  const net = await import("node:net");
  const port = await new Promise<number>((resolve) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (srv.address() as import("node:net").AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
  const storage = join(work, "registry");
  mkdirSync(storage, { recursive: true });
  const config = join(work, "registry.yml");
  writeFileSync(config, `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
  process.on("exit", () => child.kill());
  registries.push(child);
  const host = `127.0.0.1:${port}`;
  sh(["sh", "-c", `for i in $(seq 200); do curl -sf http://${host}/v2/ >/dev/null && exit 0; sleep 0.05; done; exit 1`]);
  const wipe = () => {
    rmSync(join(storage, "docker"), { recursive: true, force: true });
  };
  return { host, storage, wipe };
}

const registries: import("node:child_process").ChildProcess[] = [];

/** The unpack fixture (≈300 MB, 4 layers), pushed gzip-compressed by skopeo into a fresh local registry. */
async function registryFixture(work: string): Promise<{ host: string; ref: string; wipe: () => void }> {
  const archive = join(CACHE, "unpack-300.tar");
  if (!existsSync(archive)) {
    console.error(`# registry: building ${archive} once`);
    await buildUnpackArchive(archive);
  }
  const reg = await startPullRegistry(work);
  const ref = `${reg.host}/bench/unpack:latest`;
  sh(["skopeo", "copy", "-q", "--dest-tls-verify=false", `docker-archive:${archive}`, `docker://${ref}`]);
  return { host: reg.host, ref, wipe: reg.wipe };
}

async function benchPull(): Promise<void> {
  const work = tempDir("pull");
  const { ref } = await registryFixture(work);
  const root = join(work, "strata");
  const podDir = join(work, "podman");
  await compareApart({
    name: "pull (≈160 MB gzip, 4 layers)",
    ours: { label: "strata", cmd: [...STRATA, "--root", root, "pull", "-q", ref], before: () => (freshStrataRoot(root), settle()) },
    peer: { label: "podman", cmd: [...podman(podDir, "overlay"), "pull", "-q", "--tls-verify=false", ref], before: () => (discard(podDir), settle()) },
    warmup: 1,
    runs: 5,
    target: 0.5,
    rss: 150,
  });
}

async function benchPush(): Promise<void> {
  const work = tempDir("push");
  const { ref, host, wipe } = await registryFixture(work);
  // The same compressed blobs on both sides: skopeo reads an OCI layout, strata its store (filled from that layout).
  const oci = join(work, "oci");
  const root = join(work, "strata");
  sh(["skopeo", "copy", "-q", "--src-tls-verify=false", `docker://${ref}`, `oci:${oci}:bench`]);
  sh([...STRATA, "--root", root, "copy", `oci:${oci}:bench`, "strata:bench/push:latest"]);
  await compareApart({
    name: "push (≈160 MB gzip, 4 layers)",
    ours: { label: "strata", cmd: [...STRATA, "--root", root, "push", "-q", "bench/push:latest", `${host}/bench/pushed:latest`] },
    peer: { label: "skopeo", cmd: ["skopeo", "copy", "-q", "--dest-tls-verify=false", `oci:${oci}:bench`, `docker://${host}/bench/pushed:latest`] },
    // Every run pushes into an empty registry.
    before: () => (wipe(), settle()),
    warmup: 1,
    runs: 5,
    target: 1.0,
    rss: 150,
  });
}

// ---- run: a container from start to exit ----------------------------------------

/** Both stores with the busybox image; podman on overlay (its default), as a user runs it. */
function runFixture(name: string): { strata: string[]; pod: string[]; image: string } {
  const work = tempDir(name);
  const tar = join(work, "busybox.tar");
  sh(["tar", "-C", busyboxRootfs(join(work, "rootfs")), "-cf", tar, "."]);
  const strata = [...STRATA, "--root", join(work, "strata")];
  const pod = podman(join(work, "podman"), "overlay");
  sh([...strata, "import", "-c", 'CMD ["sh"]', tar, "bench/busybox:latest"]);
  sh([...pod, "import", "--quiet", tar, "bench/busybox:latest"]);
  return { strata, pod, image: "bench/busybox:latest" };
}

async function benchRun(): Promise<void> {
  const { strata, pod, image } = runFixture("run");
  compare({
    name: "run --rm IMG true",
    ours: { label: "strata", cmd: [...strata, "run", "--rm", image, "true"] },
    peer: { label: "podman", cmd: [...pod, "run", "--rm", image, "true"] },
    warmup: 2,
    runs: 10,
    target: 0.35,
  });
  // For reference: podman without the bridge network it sets up by default (strata shares the host's).
  compare({
    name: "run --rm IMG true (podman without its network set-up)",
    ours: { label: "strata", cmd: [...strata, "run", "--rm", image, "true"] },
    peer: { label: "podman --network host", cmd: [...pod, "run", "--rm", "--network", "host", image, "true"] },
    warmup: 1,
    runs: 6,
  });
}

async function benchDetached(): Promise<void> {
  const { strata, pod, image } = runFixture("detached");
  const N = 20;
  /** N detached containers, then all of them removed, as one shell script per side. */
  const script = (cli: string[]) => {
    const q = cli.map((a) => `'${a}'`).join(" ");
    return ["sh", "-c", `set -e; ids=""; for i in $(seq ${N}); do ids="$ids $(${q} run -d ${image} sleep 600)"; done; ${q} rm -f $ids >/dev/null`];
  };
  compare({
    name: `${N} detached containers started, then removed`,
    ours: { label: "strata", cmd: script(strata) },
    peer: { label: "podman", cmd: script(pod) },
    warmup: 0,
    runs: 3,
  });
}

// ---- registry: strata registry serve vs docker-registry, same image in both ----------

/** A registry process on a free loopback port with its own storage; resolves once it answers /v2/. */
async function startBenchRegistry(kind: "strata" | "distribution", storage: string): Promise<{ host: string; pid: number; stop: () => Promise<void> }> {
  const { createServer } = await import("node:net");
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  let child;
  if (kind === "strata") {
    child = spawn(STRATA[0], [...STRATA.slice(1), "registry", "serve", "--listen", `127.0.0.1:${port}`, "--storage-path", storage, "--log-level", "off"], { stdio: "ignore" });
  } else {
    mkdirSync(storage, { recursive: true });
    const config = join(storage, "..", `${kind}-${port}.yml`);
    writeFileSync(
      config,
      `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
    );
    child = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
  }
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://${host}/v2/`)).ok) break;
    } catch {
      /* starting */
    }
    if (child.exitCode !== null || i > 400) throw new Error(`${kind} registry did not start`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  return { host, pid: child.pid!, stop };
}

function wrk(connections: number, url: string, seconds: number, headers: string[] = []): { rps: number; bytesPerSec: number; errors: string } {
  const out = sh(["wrk", "-t1", `-c${connections}`, `-d${seconds}s`, "--timeout", "30s", ...headers.flatMap((h) => ["-H", h]), url]);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const m = /Transfer\/sec:\s+([\d.]+)([KMG]?B)/.exec(out);
  const unit: Record<string, number> = { B: 1, KB: 1024, MB: MB, GB: 1024 * MB };
  const bytesPerSec = m ? Number(m[1]) * unit[m[2]] : NaN;
  const errors = /Non-2xx or 3xx responses: \d+|Socket errors: [^\n]+/.exec(out)?.[0] ?? "";
  return { rps, bytesPerSec, errors };
}

function line(name: string, ours: string, peer: string, ratio: number, target: string, met: boolean): void {
  console.log([name.padEnd(22), `strata ${ours}`.padEnd(26), `docker-registry ${peer}`.padEnd(26), `ratio ${ratio.toFixed(2)}×`, `(target ${target}: ${met ? "met" : "MISSED"})`].join("  "));
}

async function benchRegistry(): Promise<void> {
  for (const tool of ["skopeo", "docker-registry", "wrk"]) if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`registry bench needs ${tool} (scripts/setup.sh --test)`);
  const archive = join(CACHE, "unpack-300.tar");
  if (!existsSync(archive)) {
    console.error(`# registry: building ${archive} once`);
    await buildUnpackArchive(archive);
  }
  // The image as registries hold it: gzip-compressed layers in an OCI layout, made once.
  const layout = join(CACHE, "registry-oci");
  if (!existsSync(layout)) {
    sh(["skopeo", "copy", "--quiet", "--dest-compress", `docker-archive:${archive}`, `oci:${layout}.partial:bench`]);
    renameSync(`${layout}.partial`, layout);
  }
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(readFileSync(join(layout, "blobs", "sha256", index.manifests[0].digest.slice(7)), "utf8")) as { layers: { digest: string; size: number }[]; config: { digest: string; size: number } };
  const compressed = manifest.layers.reduce((a, l) => a + l.size, 0);
  const largest = manifest.layers.reduce((a, l) => (l.size > a.size ? l : a));
  console.error(`# registry: image of ${(compressed / MB).toFixed(0)} MB compressed, largest layer ${(largest.size / MB).toFixed(0)} MB`);
  const work = tempDir("registry");
  const src = `oci:${layout}:bench`;
  const copy = (from: string, to: string) => ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", from, to];

  // push and pull: each run into a fresh registry (so every blob is uploaded), alternating sides.
  const times: Record<"strata" | "distribution", { push: number[]; pull: number[] }> = { strata: { push: [], pull: [] }, distribution: { push: [], pull: [] } };
  const runs = 3;
  for (let k = 0; k < runs + 1; k++) {
    for (const kind of ["strata", "distribution"] as const) {
      const storage = join(work, `${kind}-${k}`);
      const reg = await startBenchRegistry(kind, storage);
      try {
        settle();
        const push = timeOnce(copy(src, `docker://${reg.host}/bench/img:1`));
        const out = join(work, `pulled-${kind}-${k}`);
        settle();
        const pull = timeOnce(copy(`docker://${reg.host}/bench/img:1`, `dir:${out}`));
        rmSync(out, { recursive: true, force: true });
        if (k > 0) {
          times[kind].push.push(push);
          times[kind].pull.push(pull);
        }
      } finally {
        await reg.stop();
        rmSync(storage, { recursive: true, force: true });
      }
    }
  }
  const secs = (x: number) => `${(x / 1000).toFixed(2)} s`;
  for (const what of ["push", "pull"] as const) {
    const o = median(times.strata[what]);
    const p = median(times.distribution[what]);
    line(`registry: skopeo ${what}`, secs(o), secs(p), o / p, "≤ 1.00×", o <= p);
  }

  // Load: both registries serve the same pushed image, measured one at a time.
  const ours = await startBenchRegistry("strata", join(work, "strata-load"));
  const theirs = await startBenchRegistry("distribution", join(work, "distribution-load"));
  try {
    for (const reg of [ours, theirs]) sh(copy(src, `docker://${reg.host}/bench/img:1`));
    const accept = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    const seconds = 10;
    const mo = wrk(64, `http://${ours.host}/v2/bench/img/manifests/1`, seconds, [accept]);
    const mp = wrk(64, `http://${theirs.host}/v2/bench/img/manifests/1`, seconds, [accept]);
    line("registry: manifest GET ×64", `${mo.rps.toFixed(0)} req/s`, `${mp.rps.toFixed(0)} req/s`, mo.rps / mp.rps, "≥ 2.00×", mo.rps / mp.rps >= 2);
    if (mo.errors || mp.errors) console.error(`# registry: wrk errors: strata ${mo.errors || "none"}; docker-registry ${mp.errors || "none"}`);
    const bo = wrk(16, `http://${ours.host}/v2/bench/img/blobs/${largest.digest}`, seconds);
    const bp = wrk(16, `http://${theirs.host}/v2/bench/img/blobs/${largest.digest}`, seconds);
    const gbs = (x: number) => `${(x / 1024 / MB).toFixed(2)} GB/s`;
    line("registry: blob GET ×16", gbs(bo.bytesPerSec), gbs(bp.bytesPerSec), bo.bytesPerSec / bp.bytesPerSec, "≥ 0.80×", bo.bytesPerSec / bp.bytesPerSec >= 0.8);
    if (bo.errors || bp.errors) console.error(`# registry: wrk errors: strata ${bo.errors || "none"}; docker-registry ${bp.errors || "none"}`);

    // 32 concurrent pulls of the whole image (manifest, config, every layer; each verified), peak RSS of our registry.
    const pullAll = async (host: string) => {
      const base = `http://${host}/v2/bench/img`;
      const m = await fetch(`${base}/manifests/1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
      if (!m.ok) throw new Error(`manifest: HTTP ${m.status}`);
      await m.arrayBuffer();
      for (const d of [manifest.config, ...manifest.layers]) {
        const r = await fetch(`${base}/blobs/${d.digest}`);
        if (!r.ok || !r.body) throw new Error(`blob ${d.digest}: HTTP ${r.status}`);
        const h = createHash("sha256");
        for await (const c of r.body as unknown as AsyncIterable<Uint8Array>) h.update(c);
        if (`sha256:${h.digest("hex")}` !== d.digest) throw new Error(`blob ${d.digest}: digest mismatch`);
      }
    };
    const hwm = (pid: number) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN) / 1024;
    for (const [label, reg] of [["strata", ours], ["docker-registry", theirs]] as const) {
      const t0 = Date.now();
      const results = await Promise.allSettled(Array.from({ length: 32 }, () => pullAll(reg.host)));
      const failed = results.filter((r) => r.status === "rejected");
      const rss = hwm(reg.pid);
      console.log(
        `${"registry: 32 pulls".padEnd(22)}  ${label} ${((Date.now() - t0) / 1000).toFixed(1)} s, ${failed.length} errors, peak RSS ${rss.toFixed(0)} MB` +
          (label === "strata" ? `  (target 0 errors, < 200 MB: ${failed.length === 0 && rss < 200 ? "met" : "MISSED"})` : ""),
      );
      if (failed.length) console.error(`# ${label}: ${(failed[0] as PromiseRejectedResult).reason}`);
    }
  } finally {
    await ours.stop();
    await theirs.stop();
  }
}

// ---- build: a realistic Dockerfile, cold and fully cached -------------------------

async function benchBuild(): Promise<void> {
  const archive = join(CACHE, "unpack-300.tar");
  if (!existsSync(archive)) await buildUnpackArchive(archive);
  const [baseTar] = unpackLayers(archive);
  const work = tempDir("build");
  // The context: a node_modules-like tree of 30,000 small files and a 64 MB binary.
  const ctx = join(work, "ctx");
  writeNodeModules(join(ctx, "node_modules"), 30_000);
  writeRandom(join(ctx, "server"), 64 * MB, "bench/build server");
  writeText(
    join(ctx, "Dockerfile"),
    "FROM bench/debian:minbase\nCOPY node_modules /app/node_modules\nCOPY server /usr/local/bin/server\nRUN rm -rf /usr/share/doc\nWORKDIR /app\nCMD [\"/usr/local/bin/server\"]\n",
  );
  const root = join(work, "strata");
  const podDir = join(work, "podman");
  const strata = [...STRATA, "--root", root];
  const pod = podman(podDir, "overlay");
  const seed = (cli: string[]) => (sh([...cli, "import", ...(cli === pod ? ["--quiet"] : []), baseTar, "bench/debian:minbase"]), settle());
  // Cold: a store holding only the base image (build cache empty) before every run.
  await compareApart({
    name: "build: cold (Debian minbase + 30,000 files + 64 MB + RUN rm)",
    ours: { label: "strata", cmd: [...strata, "build", "-q", "-t", "bench/built", ctx], before: () => (freshStrataRoot(root), seed(strata)) },
    peer: { label: "podman", cmd: [...pod, "build", "--layers", "-q", "-t", "bench/built", ctx], before: () => (discard(podDir), seed(pod)) },
    warmup: 0,
    runs: 3,
    target: 0.7,
    rss: 150,
  });
  // Fully cached: the same build again on a store that already built it.
  freshStrataRoot(root);
  discard(podDir);
  seed(strata);
  seed(pod);
  sh([...strata, "build", "-q", "-t", "bench/built", ctx]);
  sh([...pod, "build", "--layers", "-q", "-t", "bench/built", ctx]);
  await compareApart({
    name: "build: fully cached rebuild",
    ours: { label: "strata", cmd: [...strata, "build", "-q", "-t", "bench/built", ctx] },
    peer: { label: "podman", cmd: [...pod, "build", "--layers", "-q", "-t", "bench/built", ctx] },
    warmup: 1,
    runs: 5,
    target: 0.25,
  });
}

// ---- main ------------------------------------------------------------------

const BENCHES: Record<string, () => Promise<void>> = { images: benchImages, startup: benchStartup, load: benchLoad, save: benchSave, unpack: benchUnpack, commit: benchCommit, run: benchRun, detached: benchDetached, registry: benchRegistry, build: benchBuild, pull: benchPull, push: benchPush };

const wanted = process.argv.slice(2);
for (const w of wanted) if (!BENCHES[w]) throw new Error(`unknown benchmark "${w}"; have: ${Object.keys(BENCHES).join(", ")}`);
if (!existsSync(join(REPO, "dist", "cli", "main.js"))) throw new Error("dist/ is missing: build first (npx tsc -p .)");
for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
  try {
    await BENCHES[name]();
  } finally {
    for (const r of registries.splice(0)) r.kill();
    cleanup();
  }
}
