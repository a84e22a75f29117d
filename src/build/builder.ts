import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  readdirSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  linkSync,
  unlinkSync,
  writeFileSync,
  createReadStream,
  openSync,
  readSync,
  closeSync,
} from "node:fs";
import { basename, join, posix } from "node:path";
import { StrataError } from "../errors/index.js";
import { chainIds, type Digest } from "../digest/index.js";
import { RootScope } from "../archive/safejoin.js";
import { mountAll, unmount } from "../snapshot/mount.js";
import type { Mount } from "../snapshot/index.js";
import { packDirectory } from "../archive/tar.js";
import { nativeFs } from "../native/index.js";
import type { Readable } from "node:stream";
import { hostPlatform, type ImageConfig, type HistoryEntry } from "../oci/index.js";
import { formatReference, parseReference } from "../reference/index.js";
import type { Engine, NewLayer } from "../engine/index.js";
import type { ImageLayerRow } from "../metastore/index.js";
import { makeMountPoints } from "../engine/containers.js";
import { storeLayer } from "../image/index.js";
import { buildSpec, mergeEnv, DEFAULT_PATH } from "../runtime/spec.js";
import { resolveUser, readRootFile } from "../runtime/user.js";
import { parse, parseFlags, type Node } from "./parser.js";
import { ShellLex } from "./shell.js";
import { SourceTree, isDir, isFile, isSymlink, type SourceEntry } from "./context.js";
import { StepRoot } from "./step-root.js";

export interface BuildOptions {
  /** the context directory */
  context: string;
  /** the Dockerfile's path (default: <context>/Dockerfile) */
  dockerfile?: string;
  tags?: string[];
  buildArgs?: Record<string, string>;
  target?: string;
  noCache?: boolean;
  labels?: Record<string, string>;
  network?: "none" | "host";
  /** "oci" (default) or "docker" (schema2) manifests and media types */
  format?: "oci" | "docker";
  /** progress lines (BuildKit's plain output); RUN output included */
  progress?: (line: string) => void;
}

export interface BuildResult {
  id: Digest;
  digest: Digest;
  tags: string[];
}

type Config = NonNullable<ImageConfig["config"]> & {
  Shell?: string[];
  OnBuild?: string[];
  Healthcheck?: Record<string, unknown>;
};

interface Stage {
  index: number;
  name?: string;
  from: Node;
  nodes: Node[];
}

/** A stage while it builds: the image it will be. */
interface StageState {
  config: Config;
  os: string;
  architecture: string;
  variant?: string;
  author?: string;
  layers: ImageLayerRow[];
  history: HistoryEntry[];
  /** ARGs declared in this stage, with their values */
  args: Map<string, string | undefined>;
  shell: string[];
  /**
   * When the stage's filesystem was last made: the time of its newest layer
   * (a cached step keeps the time it was first built, as BuildKit does), so a
   * fully cached rebuild gives the same image; SOURCE_DATE_EPOCH overrides it.
   */
  time: string;
}

/** Docker's predefined proxy args: usable without an ARG line, kept out of history. */
const PROXY_ARGS = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/** Instructions whose arguments Docker expands with the stage's ENV and ARGs. */
const EXPANDED = new Set(["add", "copy", "env", "expose", "from", "label", "stopsignal", "user", "volume", "workdir", "onbuild", "arg", "healthcheck"]);

/** A build failure tied to a Dockerfile line. */
export class BuildError extends StrataError {
  constructor(
    readonly node: Node | undefined,
    message: string,
    readonly processExitCode = 1,
  ) {
    super("INVALID_ARGUMENT", node ? `Dockerfile:${node.startLine}: ${node.original.split("\n")[0]}: ${message}` : message);
  }
}

function goDuration(s: string, node: Node): number {
  const m = /^(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h)$/.exec(s);
  if (!m) throw new BuildError(node, `invalid duration "${s}"`);
  const unit = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[m[2]]!;
  return Math.round(Number(m[1]) * unit);
}

/**
 * `strata build`: a Dockerfile's stages evaluated into images. Every step
 * that changes the filesystem (RUN, COPY, ADD, a WORKDIR that creates its
 * directory) makes one layer through a snapshot: RUN runs in a container on
 * the stage's layers (network none unless asked), COPY/ADD write through the
 * mounted stage root. Steps are cached by parent chainID + expanded step +
 * the content of what they read, and the snapshot a step leaves is the next
 * step's parent: nothing is unpacked twice.
 */
export class Builder {
  private readonly lex: ShellLex;
  private readonly stages: Stage[] = [];
  private readonly results = new Map<number, StageState>();
  private readonly globalArgs = new Map<string, string | undefined>();
  private readonly usedArgs = new Set<string>();
  private step = 0;
  private readonly progress: (line: string) => void;
  private readonly tmp: string;
  private readonly epoch?: number;

  constructor(
    private readonly engine: Engine,
    private readonly opts: BuildOptions,
    dockerfileText: string,
    private readonly ignore: (rel: string) => boolean,
  ) {
    const parsed = parse(dockerfileText);
    this.lex = new ShellLex(parsed.escape);
    this.progress = opts.progress ?? (() => {});
    this.tmp = join(engine.root, "tmp", `build-${process.pid}-${randomBytes(4).toString("hex")}`);
    const sde = process.env.SOURCE_DATE_EPOCH;
    this.epoch = sde && /^\d+$/.test(sde) ? Number(sde) : undefined;
    let current: Stage | undefined;
    for (const n of parsed.nodes) {
      if (n.value === "from") {
        const words = n.next;
        const as = words.length >= 3 && words[1].toLowerCase() === "as" ? words[2].toLowerCase() : undefined;
        if (words.length !== 1 && !(words.length === 3 && as)) throw new BuildError(n, "FROM requires either one or three arguments");
        if (as && !/^[a-z][a-z0-9-_.]*$/.test(as)) throw new BuildError(n, `invalid name for build stage: "${as}", name can't start with a number or contain symbols`);
        if (as && this.stages.some((s) => s.name === as)) throw new BuildError(n, `duplicate stage name "${as}"`);
        current = { index: this.stages.length, name: as, from: n, nodes: [] };
        this.stages.push(current);
      } else if (!current) {
        if (n.value !== "arg") throw new BuildError(n, `no build stage in current context: ${n.value.toUpperCase()} must come after FROM`);
        for (const [k, v] of this.argPairs(n, [])) this.globalArgs.set(k, opts.buildArgs?.[k] ?? v);
      } else current.nodes.push(n);
    }
    if (this.stages.length === 0) throw new BuildError(undefined, "the Dockerfile has no FROM instruction");
  }

  private log(line: string): void {
    this.progress(line);
  }

  /** A history/image time: SOURCE_DATE_EPOCH when set, else `ms`, in RFC 3339 without needless millis. */
  private stamp(ms: number): string {
    return new Date(this.epoch !== undefined ? this.epoch * 1000 : ms).toISOString().replace(/\.000Z$/, "Z");
  }

  // ---- planning ---------------------------------------------------------------

  private stageRef(ref: string, node: Node, before: number): Stage | undefined {
    const lower = ref.toLowerCase();
    const byName = this.stages.find((s) => s.name === lower && s.index < before);
    if (byName) return byName;
    if (/^\d+$/.test(ref)) {
      const s = this.stages[Number(ref)];
      if (!s || s.index >= before) throw new BuildError(node, `invalid stage index ${ref}: a stage can only copy from an earlier one`);
      return s;
    }
    if (this.stages.some((s) => s.name === lower)) throw new BuildError(node, `stage "${ref}" is not defined before this one (a --from cycle)`);
    return undefined;
  }

  /** The stages the target needs, in order. */
  private plan(): Stage[] {
    let target = this.stages[this.stages.length - 1];
    if (this.opts.target) {
      const t = this.stages.find((s) => s.name === this.opts.target!.toLowerCase());
      if (!t) throw new BuildError(undefined, `target stage "${this.opts.target}" could not be found`);
      target = t;
    }
    const need = new Set<number>();
    const visit = (s: Stage) => {
      if (need.has(s.index)) return;
      need.add(s.index);
      const base = this.expandGlobal(s.from.next[0], s.from);
      const dep = this.stageRef(base, s.from, s.index);
      if (dep) visit(dep);
      for (const n of s.nodes) {
        if (n.value !== "copy" && n.value !== "add") continue;
        const from = parseFlags(n, { from: "string", chown: "string", chmod: "string", link: "bool", "keep-git-dir": "bool", checksum: "string", exclude: "strings", parents: "bool" }).from as string | undefined;
        if (!from) continue;
        const d = this.stageRef(this.expandGlobal(from, n), n, s.index);
        if (d) visit(d);
      }
    };
    visit(target);
    return this.stages.filter((s) => need.has(s.index));
  }

  // ---- words ------------------------------------------------------------------------

  private globalEnv(): string[] {
    return [...this.globalArgs].filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
  }

  private expandGlobal(word: string, node: Node): string {
    try {
      return this.lex.processWord(word, this.globalEnv());
    } catch (e) {
      throw new BuildError(node, (e as Error).message);
    }
  }

  /** What words expand with in a stage: its ARGs, overridden by its ENV (Docker's precedence). */
  private stageEnv(st: StageState): string[] {
    const args = [...st.args].filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
    return mergeEnv(args, st.config.Env ?? []);
  }

  private expand(word: string, st: StageState, node: Node): string {
    try {
      return this.lex.processWord(word, this.stageEnv(st));
    } catch (e) {
      throw new BuildError(node, (e as Error).message);
    }
  }

  /** ARG lines: name[=default] pairs. */
  private argPairs(n: Node, env: string[]): [string, string | undefined][] {
    const out: [string, string | undefined][] = [];
    for (const word of n.next) {
      const eq = word.indexOf("=");
      const name = eq < 0 ? word : word.slice(0, eq);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new BuildError(n, `invalid ARG name "${name}"`);
      out.push([name, eq < 0 ? undefined : this.lex.processWord(word.slice(eq + 1), env)]);
    }
    return out;
  }

  // ---- the build ------------------------------------------------------------------------

  async run(): Promise<BuildResult> {
    const stages = this.plan();
    const target = stages[stages.length - 1];
    try {
      for (const s of stages) this.results.set(s.index, await this.buildStage(s));
    } finally {
      rmSync(this.tmp, { recursive: true, force: true });
    }
    for (const k of Object.keys(this.opts.buildArgs ?? {}))
      if (!this.usedArgs.has(k) && !PROXY_ARGS.includes(k)) this.log(`[Warning] one or more build args were not consumed: ${k}`);
    return this.export(this.results.get(target.index)!);
  }

  private async baseState(s: Stage): Promise<StageState> {
    const ref = this.expandGlobal(s.from.next[0], s.from);
    const flags = parseFlags(s.from, { platform: "string" });
    const host = hostPlatform();
    const empty = (): StageState => ({ config: { Env: [`PATH=${DEFAULT_PATH}`] }, os: host.os, architecture: host.architecture, layers: [], history: [], args: new Map(), shell: ["/bin/sh", "-c"], time: this.stamp(0) });
    if (flags.platform && this.expandGlobal(flags.platform as string, s.from) !== `${host.os}/${host.architecture}`)
      throw new BuildError(s.from, `platform ${flags.platform} is not this host's (${host.os}/${host.architecture}): cross-platform builds are not supported`);
    if (ref === "scratch") return empty();
    const dep = this.stageRef(ref, s.from, s.index);
    if (dep) {
      const base = this.results.get(dep.index)!;
      return { ...structuredClone({ config: base.config, history: base.history }), os: base.os, architecture: base.architecture, variant: base.variant, author: base.author, layers: [...base.layers], args: new Map(), shell: [...base.shell], time: base.time };
    }
    let img;
    try {
      img = this.engine.image(ref);
    } catch (e) {
      if ((e as StrataError).code !== "NOT_FOUND") throw e;
      // Not here: pulled from its registry, as docker build does.
      this.log(`pulling ${ref}`);
      try {
        await this.engine.pull(ref);
      } catch (err) {
        throw new BuildError(s.from, `${ref}: ${(err as Error).message}`);
      }
      img = this.engine.image(ref);
    }
    const [config, rows] = await Promise.all([img.config(), img.layerRows()]);
    const cfg = structuredClone(config.config ?? {}) as Config;
    // BuildKit gives a stage without PATH the default one, first.
    if (!(cfg.Env ?? []).some((e) => e.startsWith("PATH="))) cfg.Env = [`PATH=${DEFAULT_PATH}`, ...(cfg.Env ?? [])];
    return {
      config: cfg,
      os: config.os,
      architecture: config.architecture,
      variant: config.variant,
      author: config.author,
      layers: rows,
      history: structuredClone(config.history ?? []),
      args: new Map(),
      shell: ((config.config as Config | undefined)?.Shell as string[] | undefined) ?? ["/bin/sh", "-c"],
      time: this.stamp(Date.parse(config.created ?? "") || 0),
    };
  }

  private async buildStage(s: Stage): Promise<StageState> {
    const label = (i: number, n: number) => `[${s.name ? `${s.name} ` : ""}${i}/${n}]`;
    const n = s.nodes.length + 1;
    const t0 = Date.now();
    const id = ++this.step;
    this.log(`#${id} ${label(1, n)} FROM ${this.expandGlobal(s.from.next[0], s.from)}`);
    const st = await this.baseState(s);
    this.log(`#${id} DONE ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    // ONBUILD triggers of the base image run first, as Docker does.
    const triggers = st.config.OnBuild ?? [];
    st.config.OnBuild = [];
    for (const t of triggers) {
      const parsed = parse(t).nodes[0];
      if (!parsed) continue;
      parsed.startLine = s.from.startLine;
      await this.instruction(st, parsed, s, `${label(1, n)} ONBUILD`);
    }
    for (const [i, node] of s.nodes.entries()) await this.instruction(st, node, s, label(i + 2, n));
    return st;
  }

  private emptyHistory(st: StageState, createdBy: string): void {
    st.history.push({ created: st.time, created_by: createdBy, comment: "buildkit.dockerfile.v0", empty_layer: true });
  }

  private async instruction(st: StageState, node: Node, stage: Stage, label: string): Promise<void> {
    const v = node.value;
    const id = ++this.step;
    const t0 = Date.now();
    const words = EXPANDED.has(v) && v !== "arg" && v !== "onbuild" && v !== "healthcheck" ? node.next.map((w) => this.expand(w, st, node)) : node.next;
    const shown = node.original.split("\n")[0].trim();
    this.log(`#${id} ${label} ${shown}`);
    const needsArgs = ["env", "label", "workdir", "user", "expose", "volume", "stopsignal", "arg", "copy", "add", "run", "shell", "maintainer", "healthcheck", "onbuild"];
    if (needsArgs.includes(v) && node.next.length === 0 && !node.heredocs.length) throw new BuildError(node, `${v.toUpperCase()} requires at least one argument`);
    const done = (cached = false) => this.log(cached ? `#${id} CACHED` : `#${id} DONE ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const cfg = st.config;
    switch (v) {
      case "env": {
        if (words.length % 2) throw new BuildError(node, "ENV names can not be blank");
        const pairs: string[] = [];
        for (let i = 0; i < words.length; i += 2) pairs.push(`${words[i]}=${words[i + 1]}`);
        cfg.Env = mergeEnv(cfg.Env ?? [], pairs);
        this.emptyHistory(st, `ENV ${pairs.join(" ")}`);
        break;
      }
      case "arg": {
        for (const [k, def] of this.argPairs(node, this.stageEnv(st))) {
          const given = this.opts.buildArgs?.[k];
          const value = given ?? (def !== undefined ? def : this.globalArgs.has(k) ? this.globalArgs.get(k) : predefinedArg(k));
          if (given !== undefined) this.usedArgs.add(k);
          st.args.set(k, value);
        }
        this.emptyHistory(st, `ARG ${node.next.join(" ")}`);
        break;
      }
      case "label": {
        if (words.length % 2) throw new BuildError(node, "LABEL requires name=value pairs");
        cfg.Labels = { ...(cfg.Labels ?? {}) };
        const pairs: string[] = [];
        for (let i = 0; i < words.length; i += 2) {
          cfg.Labels[words[i]] = words[i + 1];
          pairs.push(`${words[i]}=${words[i + 1]}`);
        }
        this.emptyHistory(st, `LABEL ${pairs.join(" ")}`);
        break;
      }
      case "maintainer":
        st.author = node.next.join(" ");
        this.emptyHistory(st, `MAINTAINER ${st.author}`);
        break;
      case "workdir": {
        if (words.length !== 1) throw new BuildError(node, "WORKDIR requires exactly one argument");
        const dir = posix.resolve(cfg.WorkingDir || "/", words[0]);
        cfg.WorkingDir = dir;
        // Docker creates the directory; that is a layer only when it did not exist.
        await this.fsStep(st, node, `WORKDIR ${dir}`, { dir }, "[]", async (root) => {
          if (!root.isDir(dir)) root.dir(dir.split("/").filter(Boolean), true, dir);
        }, done);
        return;
      }
      case "user":
        if (words.length !== 1) throw new BuildError(node, "USER requires exactly one argument");
        cfg.User = words[0];
        this.emptyHistory(st, `USER ${words[0]}`);
        break;
      case "expose": {
        cfg.ExposedPorts = { ...(cfg.ExposedPorts ?? {}) };
        for (const w of words) {
          const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(w);
          if (!m) throw new BuildError(node, `invalid containerPort: ${w}`);
          for (let p = Number(m[1]); p <= Number(m[2] ?? m[1]); p++) cfg.ExposedPorts[`${p}/${(m[3] ?? "tcp").toLowerCase()}`] = {};
        }
        this.emptyHistory(st, `EXPOSE map[${Object.keys(cfg.ExposedPorts).join(" ")}]`);
        break;
      }
      case "volume":
        cfg.Volumes = { ...(cfg.Volumes ?? {}) };
        for (const w of words) {
          if (!w) throw new BuildError(node, "VOLUME specified can not be an empty string");
          cfg.Volumes[w] = {};
        }
        this.emptyHistory(st, `VOLUME [${words.join(" ")}]`);
        break;
      case "stopsignal":
        cfg.StopSignal = words[0];
        this.emptyHistory(st, `STOPSIGNAL ${words[0]}`);
        break;
      case "shell":
        if (!node.json) throw new BuildError(node, "SHELL requires the arguments to be in JSON form");
        st.shell = [...node.next];
        cfg.Shell = [...node.next];
        this.emptyHistory(st, `SHELL ${JSON.stringify(node.next)}`);
        break;
      case "cmd":
      case "entrypoint": {
        const argv = node.json ? [...node.next] : [...st.shell, node.next.join(" ")];
        if (v === "cmd") cfg.Cmd = argv;
        else {
          cfg.Entrypoint = argv;
          // A new ENTRYPOINT drops the base image's CMD (Docker), unless this stage set one.
          if (!stage.nodes.slice(0, stage.nodes.indexOf(node)).some((x) => x.value === "cmd")) cfg.Cmd = null;
        }
        this.emptyHistory(st, `${v.toUpperCase()} ${JSON.stringify(argv)}`);
        break;
      }
      case "healthcheck":
        cfg.Healthcheck = this.healthcheck(node);
        this.emptyHistory(st, `HEALTHCHECK ${node.next.join(" ")}`);
        break;
      case "onbuild": {
        const inner = node.onbuild;
        if (!inner) throw new BuildError(node, "ONBUILD requires an instruction");
        if (["onbuild", "from", "maintainer"].includes(inner.value)) throw new BuildError(node, `${inner.value.toUpperCase()} isn't allowed as an ONBUILD trigger`);
        const text = node.original.replace(/^\s*onbuild\s+/i, "");
        cfg.OnBuild = [...(cfg.OnBuild ?? []), text];
        this.emptyHistory(st, `ONBUILD ${text}`);
        break;
      }
      case "run":
        await this.runStep(st, node, done);
        return;
      case "copy":
      case "add":
        await this.copyStep(st, node, stage, done);
        return;
      default:
        throw new BuildError(node, `unknown instruction: ${v.toUpperCase()}`);
    }
    done();
  }

  private healthcheck(node: Node): Record<string, unknown> {
    const f = parseFlags(node, { interval: "string", timeout: "string", "start-period": "string", "start-interval": "string", retries: "string" });
    const kind = (node.next[0] ?? "").toUpperCase();
    if (kind === "NONE") return { Test: ["NONE"] };
    if (kind !== "CMD") throw new BuildError(node, "HEALTHCHECK requires CMD or NONE");
    const rest = node.next.slice(1);
    const hc: Record<string, unknown> = { Test: node.json ? ["CMD", ...rest] : ["CMD-SHELL", rest.join(" ")] };
    if (f.interval) hc.Interval = goDuration(f.interval as string, node);
    if (f.timeout) hc.Timeout = goDuration(f.timeout as string, node);
    if (f["start-period"]) hc.StartPeriod = goDuration(f["start-period"] as string, node);
    if (f["start-interval"]) hc.StartInterval = goDuration(f["start-interval"] as string, node);
    if (f.retries) {
      const r = Number(f.retries);
      if (!Number.isInteger(r) || r < 0) throw new BuildError(node, `invalid retries "${f.retries}"`);
      hc.Retries = r;
    }
    return hc;
  }

  // ---- steps that change the filesystem ------------------------------------------------

  private topChain(st: StageState): string | undefined {
    return st.layers.length ? st.layers[st.layers.length - 1].chain_id : undefined;
  }

  /** The stage's layers unpacked into snapshots (once per chainID; usually already there). */
  private async ensureSnapshots(st: StageState): Promise<string | undefined> {
    if (!st.layers.length) return undefined;
    const rows = st.layers;
    const content = this.engine.content;
    return this.engine.unpack({ layers: async () => rows.map((r) => storeLayer(content, r)), layerRows: async () => rows });
  }

  /**
   * One filesystem step: the cache first (key: parent chainID, the step, the
   * digests of what it reads); on a miss, `apply` changes the stage root, the
   * changes become a layer, and the snapshot is kept as the next step's
   * parent. Only a step that runs something (`mount`) gets the root mounted;
   * the others write straight into the snapshot's own directory, resolving
   * paths against a read-only view of the layers below.
   *
   * Durability: the layer blob is fsynced into the content store before the
   * cache row names it; the step's snapshot, like an unpacked one, is not
   * synced (overlay mounts are `volatile`, and an unmount would otherwise
   * sync the whole filesystem), so after a crash it may need unpacking again
   * from that blob.
   */
  private async fsStep(
    st: StageState,
    node: Node,
    step: string,
    keyParts: Record<string, unknown>,
    /** what the step reads: a JSON array of [path, digest] pairs */
    inputs: string,
    apply: (root: StepRoot) => Promise<void>,
    done: (cached?: boolean) => void,
    mount = false,
  ): Promise<void> {
    const parent = this.topChain(st) ?? "";
    // JSON.stringify([parent, step, keyParts, inputs]), with `inputs` already JSON.
    const key = createHash("sha256").update(`[${JSON.stringify(parent)},${JSON.stringify(step)},${JSON.stringify(keyParts)},${inputs}]`).digest("hex");
    const meta = this.engine.meta;
    const history = (empty: boolean): HistoryEntry => ({ created: st.time, created_by: `${step} # buildkit`, comment: "buildkit.dockerfile.v0", ...(empty ? { empty_layer: true } : {}) });
    if (!this.opts.noCache) {
      const hit = meta.db.prepare("SELECT * FROM build_cache WHERE key = ?").get(key) as CacheRow | undefined;
      if (hit && (!hit.layer || (await this.engine.content.stat(hit.layer as Digest)))) {
        st.time = this.stamp(hit.created);
        if (hit.layer) this.pushLayer(st, { digest: hit.layer as Digest, media_type: hit.media_type!, size: hit.size!, diff_id: hit.diff_id as Digest, uncompressed_size: hit.uncompressed_size! });
        st.history.push(history(!hit.layer));
        done(true);
        return;
      }
      this.log(`#${this.step} cache miss: ${this.whyMiss(parent, step, inputs)}`);
    }
    const top = await this.ensureSnapshots(st);
    const sn = this.engine.snapshots;
    const snapKey = `build-${randomBytes(6).toString("hex")}`;
    await sn.prepare(snapKey, top);
    const rootfs = join(this.tmp, snapKey);
    let committed = false;
    try {
      // overlay: the upper directory then the lowers; vfs: the snapshot's full copy.
      const stack = await sn.stack(snapKey);
      const upper = stack[0];
      const lower = !mount && sn.driver === "overlay" ? await this.viewOf(top) : undefined;
      if (mount) mountAll(volatile(await sn.mounts(snapKey)), rootfs);
      try {
        await apply(mount ? new StepRoot(rootfs) : new StepRoot(upper, lower?.dir));
      } catch (e) {
        throw e instanceof BuildError ? e : new BuildError(node, (e as Error).message);
      } finally {
        if (mount) unmount(rootfs);
        await lower?.cleanup();
      }
      const tar = await this.stepLayer(upper, mount ? stack.slice(1) : undefined, top);
      const now = Date.now();
      st.time = this.stamp(now);
      if (tar === undefined) {
        meta.write(() => insertCache(meta.db, key, parent, step, inputs, undefined, now));
        st.history.push(history(true));
        done();
        return;
      }
      const layer: NewLayer = await this.engine.ingestLayer(tar, "none");
      try {
        // The cache row first (gc keeps what it names), then the blob into the store.
        meta.write(() => insertCache(meta.db, key, parent, step, inputs, layer, now));
        await layer.pending.commit(layer.digest);
      } catch (e) {
        await layer.pending.abort();
        throw e;
      }
      const row = this.pushLayer(st, { digest: layer.digest, media_type: layer.mediaType, size: layer.size, diff_id: layer.diffId, uncompressed_size: layer.uncompressedSize });
      st.history.push(history(false));
      // The step's snapshot is the new layer's: keep it, keyed by its chainID.
      try {
        await sn.commit(row.chain_id, snapKey);
        committed = true;
      } catch (e) {
        if ((e as StrataError).code !== "ALREADY_EXISTS") throw e;
      }
      done();
    } finally {
      if (!committed) await sn.remove(snapKey).catch(() => {});
      rmSync(rootfs, { recursive: true, force: true });
    }
  }

  /**
   * The layer tar of a step's snapshot directory `upper`, undefined when the step changed
   * nothing. Overlay written without a mount (no `lowers`), the upper directory holds only
   * what the step made or copied up to write into, and no whiteouts (nothing is deleted):
   * all of it is the layer, packed as it is walked. Otherwise its changes are diffed.
   */
  private async stepLayer(upper: string, lowers: string[] | undefined, top: string | undefined): Promise<Readable | undefined> {
    const sn = this.engine.snapshots;
    const { overlayChanges, treeChanges, writeChangeset, contentXattrs } = await import("../archive/changes.js");
    if (sn.driver === "overlay" && lowers === undefined) {
      if (readdirSync(upper).length === 0) return undefined;
      const native = nativeFs();
      return packDirectory(upper, (abs) => contentXattrs(native, abs));
    }
    let changes;
    if (sn.driver === "overlay") changes = await overlayChanges(upper, lowers!);
    else {
      const parentDir = top ? (await sn.stat(top)).dir : join(this.tmp, "empty");
      mkdirSync(parentDir, { recursive: true });
      changes = await treeChanges(parentDir, upper);
    }
    return changes.length ? writeChangeset(changes, upper) : undefined;
  }

  private pushLayer(st: StageState, l: { digest: Digest; media_type: string; size: number; diff_id: Digest; uncompressed_size: number }): ImageLayerRow {
    const chain = chainIds([...st.layers.map((x) => x.diff_id), l.diff_id]).pop()!;
    const row = { ...l, position: st.layers.length, chain_id: chain } as ImageLayerRow;
    st.layers = [...st.layers, row];
    return row;
  }

  /** Why a step missed the cache: which input changed since the last build of the same step on the same parent. */
  private whyMiss(parent: string, step: string, inputs: string): string {
    const db = this.engine.meta.db;
    const prev = db.prepare("SELECT inputs FROM build_cache WHERE parent = ? AND step = ? ORDER BY created DESC LIMIT 1").get(parent, step) as { inputs: string } | undefined;
    if (!prev) {
      const sameStep = db.prepare("SELECT 1 FROM build_cache WHERE step = ? LIMIT 1").get(step);
      return sameStep ? "an earlier step changed (the parent layer is new)" : "this step has not been built before";
    }
    const before = new Map(JSON.parse(prev.inputs) as [string, string][]);
    const now = new Map(JSON.parse(inputs) as [string, string][]);
    const changed: string[] = [];
    for (const [p, h] of now) if (!before.has(p)) changed.push(`${p} added`);
    else if (before.get(p) !== h) changed.push(`${p} changed`);
    for (const p of before.keys()) if (!now.has(p)) changed.push(`${p} removed`);
    return changed.length ? changed.slice(0, 5).join(", ") + (changed.length > 5 ? `, and ${changed.length - 5} more` : "") : "its arguments or environment changed";
  }

  private async runStep(st: StageState, node: Node, done: (cached?: boolean) => void): Promise<void> {
    const flags = parseFlags(node, { network: "string", mount: "strings", security: "string" });
    if (flags.mount && (flags.mount as string[]).length) throw new BuildError(node, "RUN --mount is not supported yet");
    const network = ((flags.network as string | undefined) ?? this.opts.network ?? "none") as string;
    if (network !== "none" && network !== "host" && network !== "default") throw new BuildError(node, `unsupported network mode ${network}`);
    let argv: string[];
    if (node.json) argv = [...node.next];
    else {
      // Heredocs go to the shell as written: the command line, then each body and its delimiter.
      let script = node.next.join(" ");
      for (const h of node.heredocs) script += `\n${h.content}${h.content.endsWith("\n") || h.content === "" ? "" : "\n"}${h.name}`;
      argv = [...st.shell, script];
    }
    // RUN sees the stage's ENV and ARGs (ENV wins); proxy args without being declared.
    const argEnv = [...st.args].filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
    for (const p of PROXY_ARGS) if (this.opts.buildArgs?.[p] !== undefined) argEnv.push(`${p}=${this.opts.buildArgs[p]}`);
    const env = mergeEnv([`PATH=${DEFAULT_PATH}`], argEnv, st.config.Env ?? []);
    const cwd = st.config.WorkingDir || "/";
    const user = st.config.User ?? "";
    const step = `RUN ${node.json ? JSON.stringify(argv) : argv.join(" ")}`;
    await this.fsStep(st, node, step, { env, cwd, user, network }, "[]", (root) => this.runInContainer(node, root.root, argv, env, cwd, user, network === "host" ? "host" : "none"), done, true);
  }

  /** Runs argv in a throwaway container over `rootfs` (already mounted); fails with the exit code and the line. */
  private async runInContainer(node: Node, rootfs: string, argv: string[], env: string[], cwd: string, userSpec: string, network: "host" | "none"): Promise<void> {
    const rt = this.engine.runtime.runtime();
    const id = `strata-build-${randomBytes(8).toString("hex")}`;
    const bundle = join(this.tmp, id);
    mkdirSync(bundle, { recursive: true });
    // Mount points the image lacks, made through the mounted root and removed afterwards (when still empty).
    const made = makeMountPoints([rootfs]);
    let user;
    try {
      user = resolveUser(userSpec, readRootFile(rootfs, "/etc/passwd"), readRootFile(rootfs, "/etc/group"));
    } catch (e) {
      throw new BuildError(node, (e as Error).message);
    }
    const scope = new RootScope(rootfs);
    if (cwd !== "/") scope.dir(cwd.split("/").filter(Boolean), true, cwd);
    writeFileSync(join(bundle, "hostname"), "buildkitsandbox\n");
    writeFileSync(join(bundle, "hosts"), "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    writeFileSync(join(bundle, "resolv.conf"), existsSync("/etc/resolv.conf") ? readFileSync("/etc/resolv.conf") : "");
    const spec = buildSpec({
      rootfs,
      readonlyRootfs: false,
      args: argv,
      env: env.some((e) => e.startsWith("HOME=")) ? env : [...env, `HOME=${user.home}`],
      cwd,
      user,
      hostname: "buildkitsandbox",
      terminal: false,
      network,
      mounts: ["hosts", "hostname", "resolv.conf"].map((f) => ({ destination: `/etc/${f}`, type: "bind", source: join(bundle, f), options: ["rbind", "rprivate", "ro"] })),
      noNewPrivileges: false,
      cgroupsPath: `/${id}`,
    });
    writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
    const { spawn } = await import("node:child_process");
    const log = join(bundle, "runtime.log");
    const child = spawn(rt.path, ["--root", rt.stateDir, "--log", log, "--log-format", "json", "run", "--bundle", bundle, id], { stdio: ["ignore", "pipe", "pipe"] });
    const t0 = Date.now();
    let tail = "";
    const out = (chunk: Buffer) => {
      const text = tail + chunk.toString("utf8");
      const lines = text.split("\n");
      tail = lines.pop()!;
      for (const l of lines) this.log(`#${this.step} ${((Date.now() - t0) / 1000).toFixed(3)} ${l}`);
    };
    child.stdout.on("data", out);
    child.stderr.on("data", out);
    const code = await new Promise<number>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (c, sig) => resolve(c ?? (sig ? 128 + 9 : 1)));
    });
    if (tail) this.log(`#${this.step} ${((Date.now() - t0) / 1000).toFixed(3)} ${tail}`);
    if (existsSync(join(rt.stateDir, id))) rt.delete(id, true);
    // Our mount points go again if nothing was put in them.
    for (const rel of made.reverse()) {
      const p = join(rootfs, rel);
      try {
        const s = lstatSync(p);
        if (s.isDirectory()) rmdirSync(p);
        else if (s.size === 0) unlinkSync(p);
      } catch {
        /* not empty or gone: the step's own */
      }
    }
    if (code !== 0) {
      const msg = code === 255 && existsSync(log) ? lastRuntimeError(log) : undefined;
      const shown = node.json ? JSON.stringify(argv) : JSON.stringify(argv.join(" ")).slice(1, -1);
      throw new BuildError(node, msg ? `${msg}` : `process "${shown}" did not complete successfully: exit code: ${code}`, code);
    }
  }

  private async copyStep(st: StageState, node: Node, stage: Stage, done: (cached?: boolean) => void): Promise<void> {
    const isAdd = node.value === "add";
    const flags = parseFlags(node, { from: "string", chown: "string", chmod: "string", link: "bool", "keep-git-dir": "bool", checksum: "string", exclude: "strings", parents: "bool" });
    const words = node.next.map((w) => this.expand(w, st, node));
    if (words.length < 2) throw new BuildError(node, `${node.value.toUpperCase()} requires at least two arguments, but only one was provided. Destination could not be determined`);
    const destWord = words[words.length - 1];
    const srcWords = words.slice(0, -1);
    const chmod = flags.chmod as string | undefined;
    if (chmod !== undefined && !/^[0-7]{3,4}$/.test(chmod)) throw new BuildError(node, `invalid chmod parameter "${chmod}": only octal modes are supported`);
    // Where the sources come from: the context, an earlier stage, or an image.
    let tree: SourceTree;
    let viewCleanup: (() => Promise<void>) | undefined;
    let fromLabel = "context";
    const heredocs = new Map(node.heredocs.map((h) => [h.name, h]));
    if (flags.from) {
      const ref = this.expand(flags.from as string, st, node);
      const dep = this.stageRef(ref, node, stage.index);
      const srcState = dep ? this.results.get(dep.index) : await this.baseState({ index: -1, from: { ...node, next: [ref], flags: [] }, nodes: [] });
      if (!srcState) throw new BuildError(node, `stage "${ref}" has not been built`);
      const view = await this.viewOf(await this.ensureSnapshots(srcState));
      tree = new SourceTree(view.dir, () => false, `stage ${ref}`);
      viewCleanup = view.cleanup;
      fromLabel = `${dep ? "stage" : "image"} ${ref}:${this.topChain(srcState) ?? "scratch"}`;
    } else tree = new SourceTree(this.opts.context, this.ignore, "build context");
    try {
      // What the step reads, by content: the cache key.
      const sources: { word: string; rel?: string; top?: SourceEntry; heredoc?: string; url?: string }[] = [];
      // [path, digest] pairs, each as JSON text: joined into one flat string below, not kept as arrays.
      const pairs: string[] = [];
      const input = (path: string, digest: string) => void pairs.push(JSON.stringify([path, digest]));
      for (const w of srcWords) {
        if (w.startsWith("<<") && heredocs.has(w.slice(2).replace(/^-/, "").replace(/^["']|["']$/g, ""))) {
          const h = heredocs.get(w.slice(2).replace(/^-/, "").replace(/^["']|["']$/g, ""))!;
          const content = h.expand ? this.expand(h.content, st, node) : h.content;
          sources.push({ word: h.name, heredoc: content });
          input(`<<${h.name}`, createHash("sha256").update(content).digest("hex"));
          continue;
        }
        if (/^https?:\/\//.test(w)) {
          if (!isAdd) throw new BuildError(node, "source can't be a URL for COPY");
          sources.push({ word: w, url: w });
          input(w, "url");
          continue;
        }
        let matches: string[];
        try {
          matches = tree.match(w);
        } catch (e) {
          throw new BuildError(node, `failed to compute cache key: ${(e as Error).message}`);
        }
        for (const rel of matches) {
          const top = tree.top(rel);
          for (const [e, leaving] of tree.walk(top)) if (!leaving) input(`${fromLabel}:${e.rel}`, tree.digest(e));
          sources.push({ word: w, rel, top });
        }
      }
      const inputs = `[${pairs.splice(0).join(",")}]`;
      const chown = flags.chown as string | undefined;
      const wd = st.config.WorkingDir || "/";
      const dest = destWord.startsWith("/") ? destWord : posix.join(wd, destWord) + (destWord.endsWith("/") || destWord === "." ? "/" : "");
      const step = `${node.value.toUpperCase()} ${[...(chown ? [`--chown=${chown}`] : []), ...(chmod ? [`--chmod=${chmod}`] : []), ...(flags.from ? [`--from=${flags.from}`] : []), ...srcWords, destWord].join(" ")}`;
      // A local archive ADD extracts through the mounted root; everything else is written without a mount.
      const extracts = new Set<SourceEntry>();
      for (const s of sources) if (isAdd && !flags.from && s.top && !isDir(s.top) && isArchive(tree.abs(s.top.rel))) extracts.add(s.top);
      await this.fsStep(st, node, step, { dest, chown, chmod, from: fromLabel }, inputs, async (root) => {
        const owner = chown !== undefined ? this.resolveChown(chown, root, node) : undefined;
        const multiple = sources.length > 1 || sources.some((s) => s.word !== s.rel && /[*?[]/.test(s.word));
        const destIsDir = dest.endsWith("/") || multiple || root.isDir(dest);
        if (multiple && !dest.endsWith("/")) throw new BuildError(node, `When using ${node.value.toUpperCase()} with more than one source file, the destination must be a directory and end with a /`);
        const copier = new Copier(root, tree, owner, chmod !== undefined ? parseInt(chmod, 8) : undefined, !!flags.from);
        try {
          for (const s of sources) {
            if (s.heredoc !== undefined) {
              copier.writeFile(destIsDir ? posix.join(dest, s.word) : dest, s.heredoc);
              continue;
            }
            if (s.url) {
              await copier.download(s.url, destIsDir ? posix.join(dest, basename(new URL(s.url).pathname) || "index.html") : dest, node);
              continue;
            }
            const top = s.top!;
            if (isDir(top)) await copier.copyTree(top, dest);
            else if (extracts.has(top)) await copier.extract(tree.abs(top.rel), dest, node);
            else copier.copyEntry(top, destIsDir ? posix.join(dest, basename(top.rel) || basename(tree.root)) : dest);
            // One source's files are all written before the next source's: a later one replaces an earlier one's.
            await copier.settle();
          }
        } finally {
          await copier.settle(true);
        }
      }, done, extracts.size > 0);
    } finally {
      await viewCleanup?.();
    }
  }

  /** The root filesystem of the snapshot `top` (empty without one), read-only: for COPY --from, and below a COPY step. */
  private async viewOf(top: string | undefined): Promise<{ dir: string; cleanup: () => Promise<void> }> {
    const dir = join(this.tmp, `from-${randomBytes(6).toString("hex")}`);
    if (!top) {
      mkdirSync(dir, { recursive: true });
      return { dir, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
    }
    const sn = this.engine.snapshots;
    const key = `view-${randomBytes(6).toString("hex")}`;
    mountAll(await sn.view(key, top), dir);
    return {
      dir,
      cleanup: async () => {
        unmount(dir);
        await sn.remove(key).catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  /** --chown=user[:group], names resolved in the stage's own /etc/passwd and /etc/group; a bare uid is also the gid (Docker's rule). */
  private resolveChown(spec: string, root: StepRoot, node: Node): { uid: number; gid: number } {
    const [u, g] = spec.split(":");
    try {
      const user = resolveUser(g === undefined ? u : `${u}:${g}`, root.readFile("/etc/passwd"), root.readFile("/etc/group"));
      return { uid: user.uid, gid: g === undefined && /^\d+$/.test(u) ? user.uid : user.gid };
    } catch (e) {
      throw new BuildError(node, `unable to convert uid/gid chown string to host mapping: ${(e as Error).message}`);
    }
  }

  // ---- the image -------------------------------------------------------------------------

  private async export(st: StageState): Promise<BuildResult> {
    const config: ImageConfig = {
      created: st.time,
      ...(st.author ? { author: st.author } : {}),
      architecture: st.architecture,
      os: st.os,
      ...(st.variant ? { variant: st.variant } : {}),
      config: { ...st.config, Labels: { ...(st.config.Labels ?? {}), ...(this.opts.labels ?? {}) } },
      rootfs: { type: "layers", diff_ids: st.layers.map((l) => l.diff_id) },
      history: st.history,
    };
    const c = config.config!;
    if (!Object.keys(c.Labels ?? {}).length) delete c.Labels;
    if (!c.OnBuild || !(c.OnBuild as string[]).length) delete c.OnBuild;
    const tags = (this.opts.tags ?? []).map((t) => formatReference(parseReference(t)));
    const prepared = await this.engine.storeImage(config, st.layers, undefined, this.opts.format ?? "oci", tags[0]);
    for (const t of tags.slice(1)) this.engine.tag(prepared.manifest.digest, t);
    return { id: prepared.config.digest, digest: prepared.manifest.digest, tags };
  }
}

interface CacheRow {
  key: string;
  created: number;
  layer: string | null;
  media_type: string | null;
  size: number | null;
  diff_id: string | null;
  uncompressed_size: number | null;
}

function insertCache(db: import("better-sqlite3").Database, key: string, parent: string, step: string, inputs: string, layer: NewLayer | undefined, created: number): void {
  db.prepare("INSERT OR REPLACE INTO build_cache (key, parent, step, inputs, layer, media_type, size, diff_id, uncompressed_size, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").run(
    key,
    parent,
    step,
    inputs,
    layer?.digest ?? null,
    layer?.mediaType ?? null,
    layer?.size ?? null,
    layer?.diffId ?? null,
    layer?.uncompressedSize ?? null,
    created,
  );
}

function predefinedArg(k: string): string | undefined {
  const p = hostPlatform();
  const values: Record<string, string> = {
    TARGETPLATFORM: `${p.os}/${p.architecture}`,
    TARGETOS: p.os,
    TARGETARCH: p.architecture,
    TARGETVARIANT: "",
    BUILDPLATFORM: `${p.os}/${p.architecture}`,
    BUILDOS: p.os,
    BUILDARCH: p.architecture,
    BUILDVARIANT: "",
  };
  return values[k];
}

/** Build steps' overlay mounts skip the sync of the whole upper filesystem at unmount (see fsStep). */
function volatile(mounts: Mount[]): Mount[] {
  return mounts.map((m) => (m.type === "overlay" ? { ...m, options: [...m.options, "volatile"] } : m));
}

/** Whether a local ADD source is an archive to extract, by its first bytes (a tar, or gzip, bzip2, xz or zstd). */
function isArchive(path: string): boolean {
  let fd = Buffer.alloc(512);
  const h = openSync(path, "r");
  try {
    fd = fd.subarray(0, readSync(h, fd, 0, 512, 0));
  } finally {
    closeSync(h);
  }
  if (fd[0] === 0x1f && fd[1] === 0x8b) return true; // gzip
  if (fd[0] === 0x42 && fd[1] === 0x5a && fd[2] === 0x68) return true; // bzip2
  if (fd[0] === 0xfd && fd.subarray(1, 6).toString("latin1") === "7zXZ\0") return true; // xz
  if (fd[0] === 0x28 && fd[1] === 0xb5 && fd[2] === 0x2f && fd[3] === 0xfd) return true; // zstd
  return fd.length >= 262 && fd.subarray(257, 262).toString("latin1") === "ustar";
}

function lastRuntimeError(path: string): string | undefined {
  for (const l of readFileSync(path, "utf8").trim().split("\n").reverse()) {
    try {
      const e = JSON.parse(l) as { level?: string; msg?: string };
      if (e.level === "error" && e.msg) return e.msg;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Files per native copy batch, and the numbers of each (mode, uid, gid, atime, mtime). */
const COPY_BATCH = 128;
const COPY_FIELDS = 5;
const COPY_BATCHES_IN_FLIGHT = 8;

/** What a copied file gets: mode, uid, gid, atime and mtime (seconds), as copyBatch takes them. */
type FileRecord = [number, number, number, number, number];

/** A file copied here and now: owner before mode (chown clears setuid and setgid), then times; what copyBatch does. */
function copyFileNow(src: string, dst: string, [mode, uid, gid, atime, mtime]: FileRecord): void {
  copyFileSync(src, dst);
  lchownSync(dst, uid, gid);
  chmodSync(dst, mode);
  lutimesSync(dst, atime, mtime);
}

/** A batch sent to copyBatch, and how many of its files it copied. */
interface CopyBatch {
  /** source, destination, source, destination, … */
  paths: string[];
  nums: number[];
  done: number;
}

/**
 * COPY/ADD's writes into the step's root: every destination resolved inside
 * it (symlinks followed within the root), parents made 0755 root,
 * modes and mtimes kept, owner root:root from the context (or --chown), the
 * source's own from another stage; hardlinks within one copy kept.
 */
class Copier {
  private readonly links = new Map<string, string>();
  /** Files queued for the native copy (copyBatch, on libuv threads): source and destination host paths, COPY_FIELDS numbers each. */
  private paths: string[] = [];
  private nums: number[] = [];
  private readonly batches: Promise<CopyBatch>[] = [];
  private readonly unfinished: CopyBatch[] = [];
  /** Directories whose times are set once the files queued into them are written (creating one changes its directory's mtime). */
  private readonly dirTimes: [string, number, number][] = [];

  constructor(
    private readonly root: StepRoot,
    private readonly tree: SourceTree,
    private readonly owner: { uid: number; gid: number } | undefined,
    private readonly mode: number | undefined,
    private readonly keepOwner: boolean,
  ) {}

  /** The real relative path of a container path, its parent directories created (and resolved) inside the root. */
  private target(path: string): string {
    const parts = path.split("/").filter(Boolean);
    if (parts.length === 0) return "";
    const parent = this.root.dir(parts.slice(0, -1), true, path)!;
    return parent ? `${parent}/${parts[parts.length - 1]}` : parts[parts.length - 1];
  }

  /** The host path a non-directory is written to at `rel`: what the upper directory has there goes; a directory there is an error. */
  private replace(rel: string, dest: string): string {
    const existing = this.root.stat(rel);
    if (existing?.isDirectory()) throw new StrataError("CONFLICT", `cannot copy to ${dest}: it is a directory`);
    const p = this.root.abs(rel);
    if (existing && this.root.inUpper(rel)) unlinkSync(p);
    return p;
  }

  private ownerOf(st: { uid: number; gid: number }): { uid: number; gid: number } {
    return this.owner ?? (this.keepOwner ? st : { uid: 0, gid: 0 });
  }

  private own(path: string, st: { uid: number; gid: number }): void {
    const o = this.ownerOf(st);
    lchownSync(path, o.uid, o.gid);
  }

  writeFile(dest: string, content: string): void {
    const p = this.replace(this.target(dest), dest);
    writeFileSync(p, content);
    chmodSync(p, this.mode ?? 0o644);
    this.own(p, { uid: 0, gid: 0 });
  }

  copyEntry(e: SourceEntry, dest: string): void {
    const rel = this.target(dest);
    if (isDir(e)) {
      const existing = this.root.stat(rel);
      if (existing && !existing.isDirectory()) throw new StrataError("CONFLICT", `cannot copy a directory to ${dest}: it exists and is not a directory`);
      const p = this.root.abs(rel);
      if (existing) this.root.copyUp(rel);
      else mkdirSync(p);
      chmodSync(p, this.mode ?? e.mode & 0o7777);
      this.own(p, e);
      return;
    }
    const p = this.replace(rel, dest);
    const linked = e.inode !== undefined ? this.links.get(e.inode) : undefined;
    if (linked) {
      linkSync(linked, p);
      return;
    }
    if (isFile(e)) {
      const o = this.ownerOf(e);
      const record: FileRecord = [this.mode ?? e.mode & 0o7777, o.uid, o.gid, e.atimeMs / 1000, e.mtimeMs / 1000];
      if (e.inode !== undefined) {
        // A file a later hardlink names: it must exist when that link is made.
        copyFileNow(this.tree.abs(e.rel), p, record);
        this.links.set(e.inode, p);
        return;
      }
      // Copied by the addon, off this thread.
      this.paths.push(this.tree.abs(e.rel), p);
      this.nums.push(...record);
      if (this.paths.length >= 2 * COPY_BATCH) this.send();
      return;
    }
    if (!isSymlink(e)) return; // sockets, devices, FIFOs: not copied from a context
    symlinkSync(readlinkSync(this.tree.abs(e.rel)), p);
    this.own(p, e);
    lutimesSync(p, e.atimeMs / 1000, e.mtimeMs / 1000);
    if (e.inode !== undefined) this.links.set(e.inode, p);
  }

  /** A directory's contents (not the directory itself) into dest, as Docker copies them. */
  async copyTree(top: SourceEntry, dest: string): Promise<void> {
    const destOf = (e: SourceEntry) => posix.join(dest, e.rel.slice(top.rel.length ? top.rel.length + 1 : 0));
    for (const [e, leaving] of this.tree.walk(top)) {
      if (leaving) this.dirTimes.push([this.root.abs(this.target(destOf(e))), e.atimeMs / 1000, e.mtimeMs / 1000]);
      else this.copyEntry(e, destOf(e));
      // A few batches in flight at most: memory stays flat whatever the number of files.
      if (this.batches.length >= COPY_BATCHES_IN_FLIGHT) await this.collect(this.batches.shift()!);
    }
  }

  private send(): void {
    const batch = { paths: this.paths, nums: this.nums };
    this.paths = [];
    this.nums = [];
    const copied = nativeFs().copyBatch(batch.paths, new Float64Array(batch.nums)).then((done) => ({ ...batch, done }));
    copied.catch(() => {}); // awaited in collect or settle
    this.batches.push(copied);
  }

  /** Keeps a batch that did not copy everything, for settle. */
  private async collect(batch: Promise<CopyBatch>): Promise<void> {
    const b = await batch;
    if (b.done < b.paths.length / 2) this.unfinished.push(b);
  }

  /**
   * Waits until every queued file is written: what a batch did not copy is
   * copied here, in order, meeting (and throwing) its failure again; then
   * directory times. `quiet`: only wait (a step failing anyway).
   */
  async settle(quiet = false): Promise<void> {
    if (this.paths.length) this.send();
    const pending = this.batches.splice(0);
    await Promise.allSettled(pending);
    if (quiet) {
      this.unfinished.length = 0;
      return;
    }
    for (const b of pending) await this.collect(b);
    for (const { paths, nums, done } of this.unfinished.splice(0)) {
      for (let i = done; i < paths.length / 2; i++) {
        rmSync(paths[2 * i + 1], { force: true }); // what the failed record may have made
        copyFileNow(paths[2 * i], paths[2 * i + 1], nums.slice(i * COPY_FIELDS, (i + 1) * COPY_FIELDS) as FileRecord);
      }
    }
    for (const [p, atime, mtime] of this.dirTimes.splice(0)) lutimesSync(p, atime, mtime);
  }

  /** ADD of a local archive: extracted into dest (owners as archived), through strata's own scoped extractor. */
  async extract(archive: string, dest: string, node: Node): Promise<void> {
    const dir = this.root.abs(this.target(dest.endsWith("/") ? dest + "." : dest));
    mkdirSync(dir, { recursive: true });
    const { decompress } = await import("../archive/compression.js");
    const { applyLayer } = await import("../archive/extract.js");
    try {
      await applyLayer(await decompress(createReadStream(archive)), dir, { whiteouts: "apply" });
    } catch (e) {
      throw new BuildError(node, `extracting ${basename(archive)}: ${(e as Error).message}`);
    }
  }

  async download(url: string, dest: string, node: Node): Promise<void> {
    let body: Buffer;
    let modified: Date | undefined;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(30000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      body = Buffer.from(await res.arrayBuffer());
      const lm = res.headers.get("last-modified");
      modified = lm ? new Date(lm) : undefined;
    } catch (e) {
      throw new BuildError(node, `failed to download ${url}: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`);
    }
    const p = this.replace(this.target(dest), dest);
    writeFileSync(p, body);
    chmodSync(p, this.mode ?? 0o600);
    this.own(p, { uid: 0, gid: 0 });
    if (modified) lutimesSync(p, modified, modified);
  }
}

/** Reads the context's .dockerignore (or <Dockerfile>.dockerignore) into a matcher. */
export async function loadIgnore(context: string, dockerfile: string): Promise<(rel: string) => boolean> {
  const candidates = [`${dockerfile}.dockerignore`, join(context, ".dockerignore")];
  const file = candidates.find((f) => existsSync(f));
  if (!file) return () => false;
  const mod = (await import("@balena/dockerignore")) as unknown as { default: (o?: object) => DockerIgnore };
  const factory = mod.default;
  const ig = factory().add(readFileSync(file, "utf8").split("\n"));
  return (rel: string) => ig.ignores(rel);
}

interface DockerIgnore {
  add(p: string[]): DockerIgnore;
  ignores(p: string): boolean;
}

