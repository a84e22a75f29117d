import { spawn, spawnSync, type ChildProcess, type StdioOptions } from "node:child_process";
import { accessSync, constants, lstatSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { StrataError } from "../errors/index.js";
import { buildSpec, type OciMount } from "./spec.js";

export type RuntimeName = "runc" | "crun";
export const RUNTIMES: RuntimeName[] = ["runc", "crun"];

/** Where a runtime's binary is, found on PATH. */
export function findBinary(name: string): string | undefined {
  for (const dir of (process.env.PATH || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    const p = join(dir || ".", name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export interface RuntimeState {
  id: string;
  pid: number;
  status: "creating" | "created" | "running" | "stopped" | "paused";
}

/**
 * An OCI runtime binary (runc or crun) driven through its command line, the
 * way containerd's shim and Podman's conmon drive it. Its state lives under
 * `stateDir` (its `--root`), one per data root, so strata's containers never
 * mix with anyone else's.
 */
export class OciRuntime {
  constructor(
    readonly name: RuntimeName,
    readonly path: string,
    readonly stateDir: string,
  ) {}

  private argv(args: string[]): string[] {
    return ["--root", this.stateDir, ...args];
  }

  /** `run` in the foreground: the runtime stays the parent of the container and exits with its code. */
  run(id: string, bundle: string, stdio: StdioOptions, pidFile: string, logFile: string): ChildProcess {
    // The runtime's own messages go to logFile, so the container's stderr carries only the container's.
    return spawn(this.path, ["--root", this.stateDir, "--log", logFile, "--log-format", "json", "run", "--bundle", bundle, "--pid-file", pidFile, id], { stdio });
  }

  /** `exec` a process (a process.json) into a running container, in the foreground. */
  exec(id: string, processFile: string, logFile: string, tty: boolean, stdio: StdioOptions): ChildProcess {
    return spawn(this.path, ["--root", this.stateDir, "--log", logFile, "--log-format", "json", "exec", "--process", processFile, ...(tty ? ["--tty"] : []), id], { stdio });
  }

  private sync(args: string[]): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync(this.path, this.argv(args), { encoding: "utf8" });
    if (r.error) throw new StrataError("IO", `${this.name}: ${r.error.message}`);
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  private fail(op: string, stderr: string): never {
    const msg = stderr
      .trim()
      .split("\n")
      .map(runtimeMessage)
      .pop();
    throw new StrataError("IO", `${this.name} ${op}: ${msg || "failed"}`);
  }

  kill(id: string, signal: string | number): void {
    const r = this.sync(["kill", id, String(signal)]);
    if (r.status !== 0) this.fail("kill", r.stderr);
  }

  /** Removes the runtime's record (and cgroup) of a container; a missing one is fine. */
  delete(id: string, force = false): void {
    const r = this.sync(["delete", ...(force ? ["--force"] : []), id]);
    if (r.status !== 0 && !/does not exist|not exist/.test(r.stderr)) this.fail("delete", r.stderr);
  }

  state(id: string): RuntimeState | undefined {
    const r = this.sync(["state", id]);
    if (r.status !== 0) return undefined;
    return JSON.parse(r.stdout) as RuntimeState;
  }

  list(): RuntimeState[] {
    const r = this.sync(["list", "--format", "json"]);
    if (r.status !== 0) this.fail("list", r.stderr);
    return (JSON.parse(r.stdout || "[]") ?? []) as RuntimeState[];
  }

  /** The host pids of a container's processes. */
  ps(id: string): number[] {
    const r = this.sync(["ps", "--format", "json", id]);
    if (r.status !== 0) this.fail("ps", r.stderr);
    return (JSON.parse(r.stdout || "[]") ?? []) as number[];
  }
}

/**
 * Finds a runtime that works here by running a real container with it (the
 * host's /usr, read-only, running /bin/true): a binary can be present and
 * still refuse the host (crun 1.8 and hybrid cgroups). Returns the first
 * that works, and why.
 */
export function probeRuntime(stateBase: string, tmp: string, only?: string): { runtime?: OciRuntime; reason: string } {
  const candidates = only ? [only] : RUNTIMES;
  const why: string[] = [];
  for (const name of candidates) {
    if (!RUNTIMES.includes(name as RuntimeName)) return { reason: `unknown runtime "${name}" (runc or crun)` };
    const path = findBinary(name);
    if (!path) {
      why.push(`${name}: not found on PATH`);
      continue;
    }
    const rt = new OciRuntime(name as RuntimeName, path, join(stateBase, name));
    mkdirSync(rt.stateDir, { recursive: true });
    mkdirSync(tmp, { recursive: true });
    const bundle = mkdtempSync(join(tmp, "probe-"));
    const id = `strata-probe-${process.pid}`;
    try {
      // A root of the host's own /usr (and /bin, /lib … as the host has them), read-only.
      const rootfs = join(bundle, "rootfs");
      mkdirSync(rootfs);
      const mounts: OciMount[] = [];
      for (const d of ["usr", "bin", "sbin", "lib", "lib64"]) {
        const st = lstatSync(`/${d}`, { throwIfNoEntry: false });
        if (st?.isSymbolicLink()) symlinkSync(readlinkSync(`/${d}`), join(rootfs, d));
        else if (st?.isDirectory()) mounts.push({ destination: `/${d}`, type: "bind", source: `/${d}`, options: ["rbind", "ro"] });
      }
      const spec = buildSpec({
        rootfs,
        readonlyRootfs: true,
        args: ["/bin/true"],
        env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        cwd: "/",
        user: { uid: 0, gid: 0, additionalGids: [], home: "/" },
        hostname: "probe",
        terminal: false,
        network: "none",
        mounts,
        noNewPrivileges: true,
        cgroupsPath: `/${id}`,
      });
      writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
      const r = spawnSync(path, ["--root", rt.stateDir, "run", "--bundle", bundle, id], { encoding: "utf8", stdio: ["ignore", "ignore", "pipe"], timeout: 20000 });
      if (r.status === 0) return { runtime: rt, reason: `${name} ran a probe container${why.length ? ` (${why.join("; ")})` : ""}` };
      spawnSync(path, ["--root", rt.stateDir, "delete", "--force", id], { stdio: "ignore" });
      const line = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split("\n").pop()!;
      why.push(`${name}: ${runtimeMessage(line)}`);
    } finally {
      rmSync(bundle, { recursive: true, force: true });
    }
  }
  return { reason: why.join("; ") };
}

/** The message of a runtime log line (logfmt `msg="…"` with escapes, or plain text). */
function runtimeMessage(line: string): string {
  const m = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
  return m ? m[1].replace(/\\(.)/g, "$1") : line.replace(/^time="[^"]*" level=\w+ /, "");
}
