import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, mkdirSync, copyFileSync, symlinkSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";
import tarStream from "tar-stream";
import assert from "node:assert/strict";
import { StrataError } from "../src/errors/index.ts";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
export const BIN = join(REPO, "bin", "strata.cjs");
/** The shared corpora, read in place: ../shared/corpus beside the checkout (a clone elsewhere finds the workplace's copy). */
export const CORPUS =
  process.env.STRATA_CORPUS ?? [join(REPO, "..", "shared", "corpus"), "/work/shared/corpus"].find((p) => existsSync(p)) ?? join(REPO, "..", "shared", "corpus");

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** A fresh directory under /tmp, removed after the test (even when it fails). */
export function tempDir(t: { after: (fn: () => void) => void }, prefix = "strata-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the real CLI against `root`. */
export function strata(root: string, args: string[], opts: { input?: Buffer | string; env?: Record<string, string> } = {}): Run {
  const r = spawnSync(process.execPath, ["--", BIN, "--root", root, ...args], {
    input: opts.input,
    env: { ...process.env, ...opts.env },
    maxBuffer: 256 * 1024 * 1024,
  });
  return { code: r.status ?? 128, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** The same, asynchronously, for tests that run several at once. */
export function strataAsync(root: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--", BIN, "--root", root, ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? 128, stdout, stderr }));
  });
}

export function ok(r: Run, what = "strata"): Run {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr}`);
  return r;
}

export function sha256(b: Buffer | string): string {
  return "sha256:" + createHash("sha256").update(b).digest("hex");
}

/** A minimal root filesystem from Debian's busybox-static: /bin/busybox plus applet links. */
export function busyboxRootfs(dir: string, extra: Record<string, string> = {}): string {
  mkdirSync(join(dir, "bin"), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  for (const a of ["sh", "ls", "cat", "echo", "id", "true"]) symlinkSync("busybox", join(dir, "bin", a));
  for (const [p, content] of Object.entries(extra)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), content);
  }
  return dir;
}

export interface TarFile {
  name: string;
  content?: string | Buffer;
  type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** seconds since the epoch (default 0) */
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

const MAX_OCTAL_ID = 0o7777777;

/** Builds a tar in memory (layers, hand-made archives, hostile input): names are written exactly as given; ids too big for octal go in PAX. */
export async function makeTar(files: TarFile[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on("data", (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on("end", () => r()));
  for (const f of files) {
    const type = f.type ?? "file";
    const body = f.content === undefined ? Buffer.alloc(0) : Buffer.from(f.content);
    const uid = f.uid ?? 0;
    const gid = f.gid ?? 0;
    const pax: Record<string, string> = { ...f.pax };
    if (uid > MAX_OCTAL_ID) pax.uid = String(uid);
    if (gid > MAX_OCTAL_ID) pax.gid = String(gid);
    const header = {
      name: f.name,
      type,
      linkname: f.linkname,
      mode: f.mode ?? (type === "directory" ? 0o755 : type === "symlink" ? 0o777 : 0o644),
      uid: Math.min(uid, MAX_OCTAL_ID),
      gid: Math.min(gid, MAX_OCTAL_ID),
      mtime: new Date((f.mtime ?? 0) * 1000),
      devmajor: f.devmajor ?? 0,
      devminor: f.devminor ?? 0,
      ...(Object.keys(pax).length ? { pax } : {}),
    };
    await new Promise<void>((resolve, reject) => pack.entry(header as tarStream.Header, body, (e) => (e ? reject(e) : resolve())));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Asserts that `p` (a promise, or a function that may also throw synchronously) fails with a StrataError of `code`. */
export async function rejectsCode(p: Promise<unknown> | (() => unknown), code: string, msg?: RegExp): Promise<StrataError> {
  let caught: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected a ${code} error, the call succeeded`);
  assert.ok(caught instanceof StrataError, `expected a StrataError, got ${String(caught)}`);
  assert.equal(caught.code, code, `wrong code for: ${caught.message}`);
  if (msg) assert.match(caught.message, msg);
  return caught;
}

export interface ArchiveImage {
  layers: Buffer[]; // uncompressed layer tars
  tags: string[];
  /** override the config's diff_ids (to make a bad archive) */
  diffIds?: string[];
  created?: string;
}

export function imageConfig(layers: Buffer[], diffIds?: string[], created = "2024-01-01T00:00:00Z"): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      created,
      config: { Cmd: ["sh"] },
      rootfs: { type: "layers", diff_ids: diffIds ?? layers.map((l) => sha256(l)) },
      history: layers.map((_, i) => ({ created, created_by: `layer ${i}` })),
    }),
  );
}

/** A docker-archive (manifest.json + <hex>.tar layers + <hex>.json configs), as `docker save`/`podman save` write. */
export async function makeDockerArchive(images: ArchiveImage[], mutate?: (files: TarFile[]) => TarFile[]): Promise<Buffer> {
  const files: TarFile[] = [];
  const seen = new Set<string>();
  const manifest = images.map((img) => {
    const config = imageConfig(img.layers, img.diffIds, img.created);
    const cname = `${sha256(config).slice(7)}.json`;
    files.push({ name: cname, content: config });
    const lnames = img.layers.map((l) => {
      const n = `${sha256(l).slice(7)}.tar`;
      if (!seen.has(n)) files.push({ name: n, content: l });
      seen.add(n);
      return n;
    });
    return { Config: cname, RepoTags: img.tags, Layers: lnames };
  });
  files.push({ name: "manifest.json", content: JSON.stringify(manifest) });
  return makeTar(mutate ? mutate(files) : files);
}

/** Every file under a directory, relative, sorted (to show a store did not change). */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk("");
  return out.sort();
}

export function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
}
