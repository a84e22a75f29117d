import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { ownerAlive, ownerToken } from "../content/proc.js";
import { dirname, join, relative } from "node:path";
import { StrataError } from "../errors/index.js";
import { nativeFs, MNT_DETACH } from "../native/index.js";
import type { Mount } from "./index.js";

const MS_RDONLY = 1;
const MS_REMOUNT = 32;
const MS_BIND = 4096;
const MS_REC = 16384;
/** Mount data must fit in one page. */
const PAGE = 4096;

/** Mounts `mounts` (as a snapshotter returns them) at `target`. */
export function mountAll(mounts: Mount[], target: string): void {
  mkdirSync(target, { recursive: true });
  const native = nativeFs();
  for (const m of mounts) {
    try {
      if (m.type === "bind") {
        const rec = m.options.includes("rbind") ? MS_REC : 0;
        native.mount(m.source, target, "", MS_BIND | rec, "");
        if (m.options.includes("ro")) native.mount("", target, "", MS_REMOUNT | MS_BIND | MS_RDONLY | rec, "");
      } else if (m.type === "overlay") {
        mountOverlay(m, target);
      } else throw new StrataError("UNSUPPORTED", `mount type ${m.type}`);
    } catch (e) {
      if (e instanceof StrataError) throw e;
      throw new StrataError("IO", `mount ${m.type} at ${target}: ${(e as Error).message}`, { cause: e });
    }
  }
}

/**
 * Overlay with absolute lowerdirs when they fit in a page; otherwise the
 * lowerdirs (short links under snapshots/l/) are given relative to their
 * common parent, with the process's working directory there for the call.
 */
function mountOverlay(m: Mount, target: string): void {
  const native = nativeFs();
  const data = m.options.join(",");
  if (data.length < PAGE) {
    native.mount("overlay", target, "overlay", 0, data);
    return;
  }
  const lower = m.options.find((o) => o.startsWith("lowerdir="))!.slice(9).split(":");
  const base = dirname(dirname(lower[0]));
  const rel = m.options.map((o) => (o.startsWith("lowerdir=") ? `lowerdir=${lower.map((l) => relative(base, l)).join(":")}` : o)).join(",");
  if (rel.length >= PAGE) throw new StrataError("UNSUPPORTED", `overlay: ${lower.length} layers do not fit in the mount options`);
  const cwd = process.cwd();
  process.chdir(base);
  try {
    native.mount("overlay", target, "overlay", 0, rel);
  } finally {
    process.chdir(cwd);
  }
}

/** Lazily detaches whatever is mounted at `target` (and below it). */
export function unmount(target: string): void {
  try {
    nativeFs().umount2(target, MNT_DETACH);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "ENOENT") throw new StrataError("IO", `unmount ${target}: ${(e as Error).message}`, { cause: e });
  }
}

export function isMounted(target: string): boolean {
  const esc = (s: string) => s.replace(/\\/g, "\\134").replace(/ /g, "\\040").replace(/\t/g, "\\011").replace(/\n/g, "\\012");
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === esc(target));
}

/** A probe's scratch directory: probe-<owner token>-<ms>. */
const PROBE = /^probe-(\d+\.\d+)-\d+$/;

/**
 * Removes the probes' scratch directories whose process is dead (killed
 * between the probe's mount and its unmount, one was left mounted):
 * unmounted, then removed. Returns their names.
 */
export function cleanProbes(root: string): string[] {
  const tmp = join(root, "tmp");
  const gone: string[] = [];
  for (const name of existsSync(tmp) ? readdirSync(tmp) : []) {
    const m = PROBE.exec(name);
    if (!m || ownerAlive(m[1])) continue;
    unmount(join(tmp, name, "merged"));
    rmSync(join(tmp, name), { recursive: true, force: true });
    gone.push(name);
  }
  return gone;
}

/** Whether kernel overlayfs works here: one real mount in a scratch directory under the root (what a dead probe left goes first). */
export function probeOverlay(root: string): { ok: boolean; reason: string } {
  cleanProbes(root);
  const base = join(root, "tmp", `probe-${ownerToken()}-${Date.now()}`);
  try {
    for (const d of ["lower1", "lower2", "upper", "work", "merged"]) mkdirSync(join(base, d), { recursive: true });
    mountAll([{ type: "overlay", source: "overlay", options: [`lowerdir=${base}/lower1:${base}/lower2`, `upperdir=${base}/upper`, `workdir=${base}/work`] }], join(base, "merged"));
    unmount(join(base, "merged"));
    return { ok: true, reason: "kernel overlayfs mounts" };
  } catch (e) {
    return { ok: false, reason: `overlay unavailable (${(e as Error).message.split("\n")[0]})` };
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}
