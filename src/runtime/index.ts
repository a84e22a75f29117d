import { spawn, spawnSync, type ChildProcess, type StdioOptions } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, renameSync, watch } from "node:fs";
import { basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { StrataError } from "../errors/index.js";
import { RootScope } from "../archive/safejoin.js";
import { ownerAlive, ownerToken } from "../content/proc.js";
import { unmount } from "../snapshot/mount.js";
import type { Engine } from "../engine/index.js";
import type { Container, ContainerState } from "../engine/containers.js";
import { OciRuntime, findBinary, probeRuntime, RUNTIMES, type RuntimeName } from "./oci.js";
import { buildSpec, mergeEnv, processSpec, DEFAULT_PATH, type OciMount } from "./spec.js";
import { resolveUserIn, type ExecUser } from "./user.js";
import { LogWriter, readLogs, type LogEntry } from "./logs.js";
import { ANONYMOUS_LABEL, Volumes, parseBind } from "./volumes.js";

export { parseBind, Volumes } from "./volumes.js";
export type { LogEntry } from "./logs.js";

/** A failure to start the container's process, with the exit code Docker's CLI gives it. */
export class StartError extends StrataError {
  constructor(
    message: string,
    readonly exitCode: 125 | 126 | 127,
  ) {
    super("INVALID_ARGUMENT", message);
  }
}

const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10, SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15, STKFLT: 16, CHLD: 17, CONT: 18, STOP: 19, TSTP: 20, TTIN: 21, TTOU: 22, URG: 23, XCPU: 24, XFSZ: 25, VTALRM: 26, PROF: 27, WINCH: 28, IO: 29, PWR: 30, SYS: 31 };

/** `TERM`, `SIGTERM`, `15` → 15; anything else is an error. */
export function parseSignal(s: string): number {
  const n = /^\d+$/.test(s) ? Number(s) : SIGNALS[s.toUpperCase().replace(/^SIG/, "")];
  if (!n || n < 1 || n > 64) throw new StrataError("INVALID_ARGUMENT", `invalid signal: ${s}`);
  return n;
}

/**
 * The container's pid once the runtime has written its pid file (it renames
 * the file into place: one inotify event on the bundle), or 0 when the
 * runtime exits without writing one.
 */
function startedPid(p: Prepared, exited: Promise<number>): Promise<number> {
  const read = () => {
    try {
      return Number(readFileSync(p.pidFile, "utf8").trim()) || 0;
    } catch {
      return 0;
    }
  };
  return new Promise((resolve) => {
    let ended = false;
    const check = () => {
      const pid = read();
      if (!pid && !ended) return;
      watcher.close();
      resolve(pid);
    };
    const watcher = watch(p.bundle, (_, name) => name === basename(p.pidFile) && check());
    void exited.then(() => {
      ended = true;
      check();
    });
    check();
  });
}

/** Docker's CLI rule for a failed start: not found → 127, not executable → 126, else 125. */
function startExitCode(msg: string): 125 | 126 | 127 {
  if (/executable file not found|no such file or directory/i.test(msg)) return 127;
  if (/permission denied|is a directory/i.test(msg)) return 126;
  return 125;
}

/** Where bin/strata.cjs is, for starting monitors (same path from dist/runtime/ and dist/bundle/). */
const STRATA_BIN = fileURLToPath(new URL("../../bin/strata.cjs", import.meta.url));

interface Prepared {
  bundle: string;
  pidFile: string;
  runtimeLog: string;
}

/**
 * The running half of containers: an OCI runtime bundle from the image config
 * and the run options, the runtime (runc/crun) driven by a supervising process,
 * and the state, logs and exit code that process records in meta.db. With
 * `run` in the foreground the CLI supervises; detached, a small monitor
 * process (`strata __monitor`, like Podman's conmon) does, and outlives the CLI.
 */
export class ContainerRuntime {
  private chosen?: OciRuntime;
  readonly volumes: Volumes;

  constructor(private readonly engine: Engine) {
    this.volumes = new Volumes(engine);
  }

  private get containers() {
    return this.engine.containers;
  }

  // ---- choosing the OCI runtime -------------------------------------------

  /** The runtime for a container: forced by `--runtime`, else the one probed (once per data root) to work here. */
  runtime(forced?: string): OciRuntime {
    const stateBase = join(this.engine.root, "runtime");
    if (forced) {
      if (!RUNTIMES.includes(forced as RuntimeName)) throw new StrataError("INVALID_ARGUMENT", `unknown runtime "${forced}": runc or crun`);
      const path = findBinary(forced);
      if (!path) throw new StrataError("NOT_FOUND", `runtime "${forced}" not found on PATH`);
      return new OciRuntime(forced as RuntimeName, path, join(stateBase, forced));
    }
    if (this.chosen) return this.chosen;
    const meta = this.engine.meta;
    const name = meta.getMeta("runtime") as RuntimeName | undefined;
    const path = meta.getMeta("runtime_path");
    if (name && path && existsSync(path)) return (this.chosen = new OciRuntime(name, path, join(stateBase, name)));
    const { runtime, reason } = probeRuntime(stateBase, join(this.engine.root, "tmp"));
    if (!runtime) throw new StrataError("UNSUPPORTED", `no OCI runtime works on this host: ${reason}`);
    meta.write(() => {
      meta.setMeta("runtime", runtime.name);
      meta.setMeta("runtime_path", runtime.path);
      meta.setMeta("runtime_reason", reason);
    });
    return (this.chosen = runtime);
  }

  info(): { name: string; path: string; reason: string } {
    const rt = this.runtime();
    return { name: rt.name, path: rt.path, reason: this.engine.meta.getMeta("runtime_reason") ?? "" };
  }

  // ---- state ----------------------------------------------------------------

  /**
   * The truth about a container: a "running" one whose supervisor died is
   * checked against the runtime; if its process is gone it is marked exited
   * (exit code unknown, 255) and its mounts and runtime state are cleaned up.
   */
  refresh(c: Container): Container {
    const s = c.state;
    if (s.Status !== "running" || (s.Monitor && ownerAlive(s.Monitor))) return c;
    const rt = this.runtime(c.hostConfig.Runtime);
    const st = rt.state(c.id);
    if (st && (st.status === "running" || st.status === "paused" || st.status === "created")) return c;
    this.cleanup(c, rt);
    const state: ContainerState = { ...s, Status: "exited", Pid: 0, Monitor: undefined, ExitCode: 255, Error: "the process supervising the container died; its exit code is unknown", FinishedAt: new Date().toISOString() };
    this.containers.setState(c, state);
    return { ...c, state };
  }

  get(ref: string): Container {
    return this.refresh(this.containers.get(ref));
  }

  list(): Container[] {
    return this.containers.list().map((c) => this.refresh(c));
  }

  private dir(c: Container): string {
    return this.engine.containerDir(c.id);
  }

  logPath(c: Container): string {
    return join(this.dir(c), "ctr.log");
  }

  // ---- preparing a start ------------------------------------------------------

  /** Mounts the root, writes /etc files and config.json, and checks what will run; errors come back as StartError. */
  private async prepare(c: Container): Promise<Prepared> {
    const dir = this.dir(c);
    mkdirSync(dir, { recursive: true });
    const rootfs = await this.containers.mount(c.id, { volatile: c.hostConfig.AutoRemove });
    try {
      const cfg = c.config;
      const hc = c.hostConfig;
      let user: ExecUser;
      try {
        user = resolveUserIn(rootfs, cfg.User);
      } catch (e) {
        throw new StartError((e as Error).message, 125);
      }
      const env = mergeEnv([`PATH=${DEFAULT_PATH}`, `HOSTNAME=${cfg.Hostname}`, ...(cfg.Tty ? ["TERM=xterm"] : [])], cfg.Env);
      const finalEnv = env.some((e) => e.startsWith("HOME=")) ? env : [...env, `HOME=${user.home}`];
      const command = [...(cfg.Entrypoint ?? []), ...(cfg.Cmd ?? [])];
      if (command.length === 0) throw new StartError("no command specified", 125);
      const cwd = cfg.WorkingDir || "/";
      if (!cwd.startsWith("/")) throw new StartError(`the working directory '${cwd}' is invalid, it needs to be an absolute path`, 125);
      const scope = new RootScope(rootfs);
      if (cwd !== "/") scope.dir(cwd.split("/").filter(Boolean), true, cwd);
      checkExecutable(scope, command[0], finalEnv, cwd);

      const mounts: OciMount[] = [];
      // /etc/hosts, /etc/hostname, /etc/resolv.conf: the container's own, as Docker provides them.
      writeFileSync(join(dir, "hostname"), cfg.Hostname + "\n");
      writeFileSync(join(dir, "hosts"), hostsFile(hc.NetworkMode));
      writeFileSync(join(dir, "resolv.conf"), resolvConf());
      for (const f of ["hosts", "hostname", "resolv.conf"]) mounts.push({ destination: `/etc/${f}`, type: "bind", source: join(dir, f), options: ["rbind", "rprivate"] });
      for (const b of hc.Binds) {
        const spec = parseBind(b);
        let source = spec.source;
        if (spec.kind === "volume") {
          this.volumes.create(spec.source);
          source = this.volumes.mountpoint(spec.source);
          if (this.volumes.isEmpty(spec.source)) seedVolume(scope, spec.destination, source);
        }
        mounts.push({ destination: spec.destination, type: "bind", source, options: ["rbind", "rprivate", spec.readonly ? "ro" : "rw"] });
      }
      for (const [path, opts] of Object.entries(hc.Tmpfs))
        mounts.push({ destination: path, type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "noexec", ...(opts ? opts.split(",") : [])] });
      let args = command;
      if (hc.Init) {
        const init = findBinary("catatonit") ?? findBinary("tini-static") ?? findBinary("tini");
        if (!init) throw new StartError("--init needs catatonit or tini on the host", 125);
        mounts.push({ destination: "/dev/init", type: "bind", source: init, options: ["rbind", "ro"] });
        args = ["/dev/init", "--", ...command];
      }
      const spec = buildSpec({
        rootfs,
        readonlyRootfs: hc.ReadonlyRootfs,
        args,
        env: finalEnv,
        cwd,
        user,
        hostname: cfg.Hostname,
        terminal: cfg.Tty,
        network: hc.NetworkMode,
        mounts,
        memory: hc.Memory || undefined,
        nanoCpus: hc.NanoCpus || undefined,
        pidsLimit: hc.PidsLimit || undefined,
        noNewPrivileges: hc.SecurityOpt.includes("no-new-privileges") || hc.SecurityOpt.includes("no-new-privileges:true"),
        cgroupsPath: `/strata-${c.id}`,
      });
      const tmp = join(dir, `config.json.${process.pid}`);
      writeFileSync(tmp, JSON.stringify(spec));
      renameSync(tmp, join(dir, "config.json"));
      const pidFile = join(dir, "pid");
      rmSync(pidFile, { force: true });
      const runtimeLog = join(dir, "runtime.log");
      rmSync(runtimeLog, { force: true });
      return { bundle: dir, pidFile, runtimeLog };
    } catch (e) {
      unmount(rootfs);
      throw e;
    }
  }

  // ---- supervising ----------------------------------------------------------

  /**
   * Runs the runtime in the foreground and stays its parent until the
   * container exits: records running (with the process's pid) once the pid
   * file appears, logs stdout/stderr (unless a terminal owns them), and on
   * exit unmounts, deletes the runtime's record and records the exit code.
   * `started` is told once, with the pid or the start error.
   */
  private async supervise(c: Container, rt: OciRuntime, p: Prepared, io: { stdin: boolean; passthrough: boolean }, started: (err: StartError | undefined) => void): Promise<number> {
    const tty = c.config.Tty;
    // Attached to a --rm container, whose logs go with it, the output goes straight to ours: nothing to record.
    const direct = tty || (io.passthrough && c.hostConfig.AutoRemove);
    const stdio: StdioOptions = tty ? "inherit" : [io.stdin ? "inherit" : "ignore", direct ? "inherit" : "pipe", direct ? "inherit" : "pipe"];
    const child = rt.run(c.id, p.bundle, stdio, p.pidFile, p.runtimeLog);
    const log = direct ? undefined : new LogWriter(this.logPath(c));
    for (const [stream, fd] of [["stdout", 1], ["stderr", 2]] as const) {
      child[stream]?.on("data", (chunk: Buffer) => {
        log!.write(stream, chunk);
        if (io.passthrough) (fd === 1 ? process.stdout : process.stderr).write(chunk);
      });
    }
    // Signals sent to us go on to the container (docker's sig-proxy); a terminal's reach runc directly.
    const forward = (sig: NodeJS.Signals) => {
      if (!tty) child.kill(sig);
    };
    const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
    for (const s of signals) process.on(s, forward);
    const exited = new Promise<number>((resolve) => child.on("close", (code, signal) => resolve(code ?? 128 + (signal ? parseSignal(signal) : 0))));
    let spawnError: Error | undefined;
    child.on("error", (e) => (spawnError = e));
    const pid = await startedPid(p, exited);
    let code: number;
    if (!pid) {
      code = await exited;
      for (const s of signals) process.off(s, forward);
      log?.close();
      const msg = spawnError?.message ?? runtimeError(p.runtimeLog) ?? `${rt.name} exited with ${code}`;
      const err = new StartError(msg, startExitCode(msg));
      this.finish(c, rt, { Status: "exited", Pid: 0, ExitCode: err.exitCode, Error: msg, FinishedAt: new Date().toISOString() });
      started(err);
      return err.exitCode;
    }
    const startedAt = new Date().toISOString();
    this.containers.setState(c, { Status: "running", Pid: pid, Monitor: ownerToken(), ExitCode: 0, StartedAt: startedAt });
    started(undefined);
    code = await exited;
    for (const s of signals) process.off(s, forward);
    log?.close();
    this.finish(c, rt, { Status: "exited", Pid: 0, ExitCode: code, StartedAt: startedAt, FinishedAt: new Date().toISOString() });
    return code;
  }

  /** After the process: unmount, drop the runtime's record, record the state (a --rm container's is about to go with it). */
  private finish(c: Container, rt: OciRuntime, state: ContainerState): void {
    this.cleanup(c, rt);
    if (!c.hostConfig.AutoRemove) this.containers.setState(c, state);
  }

  private cleanup(c: Container, rt: OciRuntime): void {
    if (existsSync(join(rt.stateDir, c.id))) rt.delete(c.id, true);
    unmount(this.containers.mountPoint(c));
  }

  private async removeNow(c: Container): Promise<void> {
    await this.containers.remove(c.id);
    for (const b of c.hostConfig.Binds) {
      const spec = parseBind(b);
      if (spec.kind !== "volume") continue;
      try {
        if (this.volumes.inspect(spec.source).Labels[ANONYMOUS_LABEL]) this.volumes.remove(spec.source, true);
      } catch {
        /* gone already */
      }
    }
  }

  // ---- commands ---------------------------------------------------------------

  /**
   * `-v` arguments made concrete for a new container: checked, anonymous
   * volumes (`-v /path`, and the image's VOLUMEs not otherwise mounted) given
   * a name and created, so every later start mounts the same ones.
   */
  resolveBinds(binds: string[], imageVolumes: Record<string, object>): string[] {
    const out: string[] = [];
    const taken = new Set<string>();
    const anonymous = (dest: string) => {
      const v = this.volumes.create(undefined, { [ANONYMOUS_LABEL]: "true" });
      out.push(`${v.Name}:${dest}`);
    };
    for (const b of binds) {
      const spec = parseBind(b);
      taken.add(spec.destination.replace(/\/+$/, "") || "/");
      if (spec.anonymous) anonymous(spec.destination);
      else out.push(b);
    }
    for (const dest of Object.keys(imageVolumes)) if (!taken.has(dest.replace(/\/+$/, "") || "/")) anonymous(dest);
    return out;
  }

  /** `run` without -d: the CLI supervises; returns the container's exit code. */
  async runAttached(c: Container, opts: { stdin: boolean }): Promise<number> {
    const rt = this.runtime(c.hostConfig.Runtime);
    let p: Prepared;
    try {
      p = await this.prepare(c);
    } catch (e) {
      if (c.hostConfig.AutoRemove) await this.removeNow(c).catch(() => {});
      throw e;
    }
    let startError: StartError | undefined;
    const code = await this.supervise(c, rt, p, { stdin: opts.stdin, passthrough: true }, (e) => (startError = e));
    if (c.hostConfig.AutoRemove) await this.removeNow(c).catch(() => {});
    if (startError) throw startError;
    return code;
  }

  /** `run -d` and `start`: a detached monitor supervises; resolves once the process runs (or fails to). */
  async start(ref: string | Container): Promise<Container> {
    const c = typeof ref === "string" ? this.get(ref) : ref;
    if (c.state.Status === "running") return c;
    if (c.config.Tty) throw new StrataError("UNSUPPORTED", "a detached container with a terminal (-d -t) is not supported yet: run it attached with -it");
    this.runtime(c.hostConfig.Runtime); // fails here, before anything is mounted, when no runtime works
    let prepared = false;
    try {
      await this.prepare(c);
      prepared = true;
      const root = this.engine.root;
      const child = spawn(process.execPath, ["--", STRATA_BIN, "--root", root, "__monitor", c.id], { detached: true, stdio: ["ignore", "ignore", "ignore", "pipe"] });
      const answer = await new Promise<string>((resolve) => {
        let text = "";
        const pipe = child.stdio[3] as NodeJS.ReadableStream;
        pipe.on("data", (d: Buffer) => {
          text += d.toString();
          if (text.includes("\n")) resolve(text.split("\n")[0]);
        });
        pipe.on("end", () => resolve(text || `{"error":"the monitor exited before starting the container","exitCode":125}`));
        child.on("error", (e) => resolve(JSON.stringify({ error: e.message, exitCode: 125 })));
      });
      (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
      child.unref();
      const reply = JSON.parse(answer) as { ok?: boolean; error?: string; exitCode?: 125 | 126 | 127 };
      if (!reply.ok) throw new StartError(reply.error ?? "start failed", reply.exitCode ?? 125);
      return this.containers.get(c.id);
    } catch (e) {
      if (!prepared) {
        this.containers.setState(c, { ...c.state, Error: (e as Error).message });
        if (c.hostConfig.AutoRemove) await this.removeNow(c).catch(() => {});
      }
      throw e;
    }
  }

  /** The monitor process (`strata __monitor ID`): supervises a prepared container, answers on fd 3 once it runs. */
  async monitor(id: string): Promise<number> {
    const c = this.containers.get(id);
    const rt = this.runtime(c.hostConfig.Runtime);
    const dir = this.dir(c);
    const p: Prepared = { bundle: dir, pidFile: join(dir, "pid"), runtimeLog: join(dir, "runtime.log") };
    const { createWriteStream } = await import("node:fs");
    let ack: NodeJS.WritableStream | undefined;
    try {
      ack = createWriteStream("", { fd: 3 });
      ack.on("error", () => {});
    } catch {
      ack = undefined;
    }
    const code = await this.supervise(c, rt, p, { stdin: false, passthrough: false }, (err) => {
      ack?.write(JSON.stringify(err ? { error: err.message, exitCode: err.exitCode } : { ok: true }) + "\n");
      ack?.end();
    });
    if (c.hostConfig.AutoRemove) await this.removeNow(c).catch(() => {});
    return code;
  }

  /** Sends a signal to the container's process. */
  kill(ref: string, signal = "KILL"): Container {
    const c = this.get(ref);
    if (c.state.Status !== "running") throw new StrataError("CONFLICT", `cannot kill container: ${ref}: container ${c.id} is not running`);
    this.runtime(c.hostConfig.Runtime).kill(c.id, parseSignal(signal));
    return c;
  }

  /** Waits until the container is not running; its exit code. */
  async wait(ref: string): Promise<number> {
    const c = this.get(ref);
    for (let wait = 10; ; wait = Math.min(wait * 2, 100)) {
      const now = this.refresh(this.containers.get(c.id));
      if (now.state.Status !== "running") return now.state.ExitCode;
      await sleep(wait);
    }
  }

  /** SIGTERM (or the image's StopSignal), then SIGKILL after `timeout` seconds. */
  async stop(ref: string, timeout = 10): Promise<Container> {
    const c = this.get(ref);
    if (c.state.Status !== "running") return c;
    const rt = this.runtime(c.hostConfig.Runtime);
    const stopped = () => this.refresh(this.containers.get(c.id)).state.Status !== "running";
    try {
      rt.kill(c.id, parseSignal(c.config.StopSignal || "TERM"));
    } catch {
      /* already exiting */
    }
    const deadline = Date.now() + timeout * 1000;
    while (Date.now() < deadline) {
      if (stopped()) return c;
      await sleep(50);
    }
    try {
      rt.kill(c.id, 9);
    } catch {
      /* exited meanwhile */
    }
    await this.wait(c.id);
    return c;
  }

  async restart(ref: string, timeout = 10): Promise<Container> {
    await this.stop(ref, timeout);
    return this.start(ref);
  }

  /** `rm`: a running container needs force (then it is killed first). */
  async remove(ref: string, force = false, volumes = false): Promise<Container> {
    const c = this.get(ref);
    if (c.state.Status === "running") {
      if (!force) throw new StrataError("CONFLICT", `cannot remove container "/${c.name}": container is running: stop the container before removing or force remove`);
      const rt = this.runtime(c.hostConfig.Runtime);
      try {
        rt.kill(c.id, 9);
      } catch {
        /* exiting */
      }
      await this.wait(c.id);
      // The supervisor may be gone (then nobody cleans up but us).
      this.cleanup(c, rt);
    }
    if (volumes || c.hostConfig.AutoRemove) await this.removeNow(c);
    else await this.containers.remove(c.id);
    return c;
  }

  /** `exec`: a new process in a running container; its exit code. */
  async exec(ref: string, cmd: string[], opts: { tty?: boolean; stdin?: boolean; env?: string[]; user?: string; workdir?: string } = {}): Promise<number> {
    const c = this.get(ref);
    if (c.state.Status !== "running") throw new StrataError("CONFLICT", `container ${c.id} is not running`);
    if (cmd.length === 0) throw new StartError("no command specified", 125);
    const rt = this.runtime(c.hostConfig.Runtime);
    const rootfs = this.containers.mountPoint(c);
    let user: ExecUser;
    try {
      user = resolveUserIn(rootfs, opts.user ?? c.config.User);
    } catch (e) {
      throw new StartError((e as Error).message, 125);
    }
    const env = mergeEnv([`PATH=${DEFAULT_PATH}`, `HOSTNAME=${c.config.Hostname}`, ...(opts.tty ? ["TERM=xterm"] : [])], c.config.Env, opts.env ?? []);
    const finalEnv = env.some((e) => e.startsWith("HOME=")) ? env : [...env, `HOME=${user.home}`];
    const cwd = opts.workdir || c.config.WorkingDir || "/";
    const scope = new RootScope(rootfs);
    // Docker's exec does not create the directory; say so before the runtime does it less clearly.
    if (!cwd.startsWith("/") || scope.dir(cwd.split("/").filter(Boolean), false, cwd) === undefined)
      throw new StartError(`unable to start container process: chdir to cwd ("${cwd}") set in config.json failed: no such file or directory`, 126);
    checkExecutable(scope, cmd[0], finalEnv, cwd);
    const proc = processSpec({ args: cmd, env: finalEnv, cwd, user, terminal: !!opts.tty, noNewPrivileges: c.hostConfig.SecurityOpt.some((s) => s.startsWith("no-new-privileges")) });
    const file = join(this.dir(c), `exec-${randomBytes(6).toString("hex")}.json`);
    const log = `${file}.log`;
    writeFileSync(file, JSON.stringify(proc));
    try {
      const child: ChildProcess = rt.exec(c.id, file, log, !!opts.tty, opts.tty ? "inherit" : [opts.stdin ? "inherit" : "ignore", "inherit", "inherit"]);
      const forward = (sig: NodeJS.Signals) => child.kill(sig);
      if (!opts.tty) process.on("SIGINT", forward).on("SIGTERM", forward);
      const code = await new Promise<number>((resolve, reject) => {
        child.on("error", reject);
        child.on("close", (code, signal) => resolve(code ?? 128 + (signal ? parseSignal(signal) : 0)));
      });
      process.off("SIGINT", forward).off("SIGTERM", forward);
      // The runtime's own failure (as opposed to the process exiting 255) is in its log.
      const failure = code === 255 ? runtimeError(log) : undefined;
      if (failure) throw new StartError(failure, 126);
      return code;
    } finally {
      rmSync(file, { force: true });
      rmSync(log, { force: true });
    }
  }

  /** `top`: the container's processes as `ps -f` shows them. */
  top(ref: string, psArgs: string[] = ["-f"]): string {
    const c = this.get(ref);
    if (c.state.Status !== "running") throw new StrataError("CONFLICT", `container ${c.id} is not running`);
    const pids = this.runtime(c.hostConfig.Runtime).ps(c.id);
    const r = spawnSync("ps", [...psArgs, "-p", pids.join(",")], { encoding: "utf8" });
    if (r.status !== 0 && !r.stdout) throw new StrataError("IO", `ps: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** `logs`: entries as recorded; with follow, until the container stops. */
  logs(ref: string, opts: { tail?: number; follow?: boolean } = {}): AsyncGenerator<LogEntry> {
    const c = this.get(ref);
    const running = () => this.refresh(this.containers.get(c.id)).state.Status === "running";
    return readLogs(this.logPath(c), { tail: opts.tail, follow: opts.follow ? running : undefined });
  }
}

/** Docker's start-time check, done before the runtime is involved: 127 for a missing command, 126 for one that cannot run. */
function checkExecutable(scope: RootScope, arg0: string, env: string[], cwd: string): void {
  const fail = (msg: string, code: 126 | 127): never => {
    throw new StartError(`unable to start container process: exec: "${arg0}": ${msg}`, code);
  };
  const check = (path: string): "ok" | "missing" | "denied" => {
    let rel: string | undefined;
    try {
      rel = scope.resolve(path);
    } catch {
      throw new StartError(`unable to start container process: exec: "${arg0}": too many levels of symbolic links`, 125);
    }
    if (rel === undefined) return "missing";
    const st = statSync(rel === "" ? scope.root : `${scope.root}/${rel}`, { throwIfNoEntry: false });
    if (!st) return "missing";
    if (st.isDirectory() || (st.mode & 0o111) === 0) return "denied";
    return "ok";
  };
  if (arg0.includes("/")) {
    const r = check(arg0.startsWith("/") ? arg0 : `${cwd}/${arg0}`);
    if (r === "missing") fail(`stat ${arg0}: no such file or directory`, 127);
    if (r === "denied") fail("permission denied", 126);
    return;
  }
  const path = env.find((e) => e.startsWith("PATH="))?.slice(5) ?? DEFAULT_PATH;
  let denied = false;
  for (const dir of path.split(":")) {
    if (!dir.startsWith("/")) continue;
    const r = check(`${dir}/${arg0}`);
    if (r === "ok") return;
    if (r === "denied") denied = true;
  }
  if (denied) fail("permission denied", 126);
  fail("executable file not found in $PATH", 127);
}

/** Copies what the image has at a volume's path into the new, empty volume (Docker's seeding). */
function seedVolume(scope: RootScope, destination: string, data: string): void {
  const rel = scope.resolve(destination);
  if (rel === undefined) return;
  const src = rel === "" ? scope.root : `${scope.root}/${rel}`;
  if (!statSync(src).isDirectory()) return;
  const r = spawnSync("cp", ["-a", `${src}/.`, `${data}/`], { encoding: "utf8" });
  if (r.status !== 0) throw new StrataError("IO", `seeding volume from ${destination}: ${r.stderr.trim()}`);
}

function hostsFile(network: "host" | "none"): string {
  if (network === "host" && existsSync("/etc/hosts")) return readFileSync("/etc/hosts", "utf8");
  return ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters", ""].join("\n");
}

/** The host's resolv.conf, or systemd-resolved's upstream one when the host's points at its local stub. */
function resolvConf(): string {
  const host = existsSync("/etc/resolv.conf") ? readFileSync("/etc/resolv.conf", "utf8") : "";
  if (/^nameserver\s+127\.0\.0\.53/m.test(host) && existsSync("/run/systemd/resolve/resolv.conf")) return readFileSync("/run/systemd/resolve/resolv.conf", "utf8");
  return host;
}

/** The last error the runtime logged (its --log file, JSON lines). */
function runtimeError(path: string): string | undefined {
  if (!existsSync(path)) return undefined;
  const lines = readFileSync(path, "utf8").trim().split("\n").filter(Boolean);
  for (const l of lines.reverse()) {
    try {
      const e = JSON.parse(l) as { level?: string; msg?: string };
      if (e.level === "error" && e.msg) return e.msg.replace(/^runc (run|create) failed: /, "");
    } catch {
      if (l.trim()) return l.trim();
    }
  }
  return undefined;
}
