// strata's benchmarks, each side by side with the peer tool that does the same job.
//   node --import tsx bench/run.ts [images] [startup] [load]      (from the repo root, after a build)
// Every store lives in a temp dir removed at the end; only bench/.cache/load-300.tar is kept.
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { compare } from "./harness.js";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
const CACHE = join(REPO, "bench", ".cache");
const STRATA = [process.execPath, join(REPO, "bin", "strata.cjs")];
const MB = 1 << 20;

// ---- helpers ---------------------------------------------------------------

const temps: string[] = [];
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `strata-bench-${prefix}-`));
  temps.push(d);
  return d;
}

/** Removes every temp dir, unmounting anything left mounted under it first (deepest first). */
function cleanup(): void {
  for (const d of temps.splice(0)) {
    const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]).filter((m) => m?.startsWith(d + "/"));
    for (const m of mounts.sort().reverse()) spawnSync("umount", ["-l", m]);
    rmSync(d, { recursive: true, force: true });
  }
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

/** podman on its own storage under dir (vfs: no mounts to leave behind), touching nothing system-wide. */
function podman(dir: string): string[] {
  return ["podman", "--root", join(dir, "root"), "--runroot", join(dir, "run"), "--tmpdir", join(dir, "tmp"), "--storage-driver", "vfs"];
}

/** A root filesystem of /bin/busybox and a few applet links (Debian's busybox-static). */
function busyboxRootfs(dir: string): string {
  mkdirSync(join(dir, "bin"), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  for (const a of ["sh", "ls", "cat", "echo", "true"]) symlinkSync("busybox", join(dir, "bin", a));
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
  const floor = { label: "node -e 0", cmd: [process.execPath, "-e", "0"] };
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

async function benchLoad(): Promise<void> {
  const archive = join(CACHE, "load-300.tar");
  if (!existsSync(archive)) {
    console.error(`# load: building ${archive} once (debootstrap; a minute or two)`);
    await buildLoadArchive(archive);
  }
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

// ---- main ------------------------------------------------------------------

const BENCHES: Record<string, () => Promise<void>> = { images: benchImages, startup: benchStartup, load: benchLoad };

const wanted = process.argv.slice(2);
for (const w of wanted) if (!BENCHES[w]) throw new Error(`unknown benchmark "${w}"; have: ${Object.keys(BENCHES).join(", ")}`);
if (!existsSync(join(REPO, "dist", "cli", "main.js"))) throw new Error("dist/ is missing: build first (npx tsc -p .)");
for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
  try {
    await BENCHES[name]();
  } finally {
    cleanup();
  }
}
