import { chmodSync, closeSync, existsSync, lchownSync, lstatSync, mkdirSync, openSync, rmSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { StrataError } from "../errors/index.js";
import type { ImageConfig } from "../oci/index.js";
import type { Engine } from "./index.js";
import { isMounted, mountAll, unmount } from "../snapshot/mount.js";

/** What a container runs, resolved from the image config and the create arguments (Docker's rules). */
export interface ContainerConfig {
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  Env: string[];
  WorkingDir: string;
  User: string;
  Labels: Record<string, string>;
  Hostname: string;
  Tty: boolean;
  OpenStdin: boolean;
  StopSignal: string;
  /** container paths the image declares as volumes */
  Volumes: Record<string, object>;
}

/** How a container runs, beyond what the image says (Docker's HostConfig). */
export interface HostConfig {
  AutoRemove: boolean;
  /** `-v` as given: HOST:CTR[:ro], NAME:CTR[:ro] */
  Binds: string[];
  /** `--tmpfs` path → options */
  Tmpfs: Record<string, string>;
  ReadonlyRootfs: boolean;
  NetworkMode: "host" | "none";
  /** bytes, 0 for none */
  Memory: number;
  NanoCpus: number;
  PidsLimit: number;
  Init: boolean;
  SecurityOpt: string[];
  /** the runtime forced with --runtime, else the probed one */
  Runtime?: string;
}

/** The lifecycle state, kept in meta.db and updated by whoever supervises the runtime. */
export interface ContainerState {
  Status: "created" | "running" | "exited";
  Pid: number;
  /** owner token of the process supervising the runtime while it runs */
  Monitor?: string;
  ExitCode: number;
  Error?: string;
  StartedAt?: string;
  FinishedAt?: string;
}

export function defaultHostConfig(): HostConfig {
  return { AutoRemove: false, Binds: [], Tmpfs: {}, ReadonlyRootfs: false, NetworkMode: "host", Memory: 0, NanoCpus: 0, PidsLimit: 0, Init: false, SecurityOpt: [] };
}

export interface CreateOptions {
  name?: string;
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workdir?: string;
  user?: string;
  hostname?: string;
  tty?: boolean;
  openStdin?: boolean;
  hostConfig?: Partial<HostConfig>;
}

export interface Container {
  id: string;
  name: string;
  image: string;
  imageRef: string;
  imageId: string;
  snapshot: string;
  config: ContainerConfig;
  hostConfig: HostConfig;
  state: ContainerState;
  created: number;
}

interface ContainerRow {
  id: string;
  name: string;
  image: string;
  image_ref: string;
  snapshot: string;
  config: string;
  host_config: string;
  state: string;
  created: number;
}

/** The mount points the runtime needs, made in a container's init layer so that diff and commit never show them. */
const INIT_DIRS = ["proc", "sys", "dev", "etc"];
const INIT_FILES = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

const ADJECTIVES = ["brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nifty", "proud", "quiet", "sharp", "tender", "upbeat", "vivid", "witty", "zealous", "bold"];
const NAMES = ["turing", "hopper", "lovelace", "knuth", "ritchie", "thompson", "torvalds", "liskov", "dijkstra", "hamilton", "shannon", "babbage", "curie", "noether", "euler", "gauss", "kay", "lamport", "perlman", "wirth"];

/** The container half of the engine: writable copy-on-write layers on top of an image's snapshots. */
export class Containers {
  constructor(private readonly engine: Engine) {}

  private toContainer(r: ContainerRow): Container {
    const img = this.engine.meta.image(r.image);
    const state = JSON.parse(r.state || "{}") as Partial<ContainerState>;
    return {
      id: r.id,
      name: r.name,
      image: r.image,
      imageRef: r.image_ref,
      imageId: img?.config_digest ?? "",
      snapshot: r.snapshot,
      config: { Hostname: r.id.slice(0, 12), Tty: false, OpenStdin: false, StopSignal: "SIGTERM", Volumes: {}, ...JSON.parse(r.config) },
      hostConfig: { ...defaultHostConfig(), ...JSON.parse(r.host_config || "{}") },
      state: { Status: "created", Pid: 0, ExitCode: 0, ...state },
      created: r.created,
    };
  }

  /** Records a container's new state (one small transaction). */
  setState(c: Container, state: ContainerState): void {
    this.engine.meta.write(() => this.engine.meta.db.prepare("UPDATE containers SET state = ? WHERE id = ?").run(JSON.stringify(state), c.id), { durable: !c.hostConfig.AutoRemove });
  }

  list(): Container[] {
    return (this.engine.meta.db.prepare("SELECT * FROM containers ORDER BY created DESC").all() as ContainerRow[]).map((r) => this.toContainer(r));
  }

  /** By full ID, unambiguous ID prefix, or name (Docker's lookup order). */
  get(ref: string): Container {
    const db = this.engine.meta.db;
    const exact = db.prepare("SELECT * FROM containers WHERE id = ? OR name = ?").get(ref, ref.replace(/^\//, "")) as ContainerRow | undefined;
    if (exact) return this.toContainer(exact);
    if (/^[a-f0-9]+$/.test(ref)) {
      const rows = db.prepare("SELECT * FROM containers WHERE id >= ? AND id < ?").all(ref, ref + "g") as ContainerRow[];
      if (rows.length > 1) throw new StrataError("CONFLICT", `multiple containers match "${ref}"`);
      if (rows.length === 1) return this.toContainer(rows[0]);
    }
    throw new StrataError("NOT_FOUND", `No such container: ${ref}`);
  }

  /** `strata create`: an active writable snapshot on the image's layers plus the container's config. */
  async create(imageRef: string, opts: CreateOptions = {}): Promise<Container> {
    const engine = this.engine;
    const img = engine.image(imageRef);
    if (opts.name !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(opts.name))
      throw new StrataError("INVALID_ARGUMENT", `invalid container name "${opts.name}", only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
    const top = await engine.unpack(img);
    const image: ImageConfig = await img.config();
    const c = image.config ?? {};
    const entrypoint = opts.entrypoint ?? (c.Entrypoint?.length ? c.Entrypoint : null);
    const config: ContainerConfig = {
      Entrypoint: entrypoint,
      // Arguments replace Cmd; a new entrypoint drops the image's Cmd, as Docker does.
      Cmd: opts.cmd?.length ? opts.cmd : opts.entrypoint ? null : (c.Cmd ?? null),
      Env: [...(c.Env ?? []), ...(opts.env ?? [])],
      WorkingDir: opts.workdir ?? c.WorkingDir ?? "",
      User: opts.user ?? c.User ?? "",
      Labels: c.Labels ?? {},
      Hostname: "",
      Tty: !!opts.tty,
      OpenStdin: !!opts.openStdin,
      StopSignal: c.StopSignal ?? "SIGTERM",
      Volumes: c.Volumes ?? {},
    };
    const id = randomBytes(32).toString("hex");
    config.Hostname = opts.hostname ?? id.slice(0, 12);
    const hostConfig: HostConfig = { ...defaultHostConfig(), ...opts.hostConfig };
    const key = `container-${id}`;
    const init = `init-${id}`;
    const sn = engine.snapshots;
    // Nothing of a --rm container outlives it: its records need no fsync (MetaStore.write).
    const durable = !hostConfig.AutoRemove;
    if (!durable) {
      // Its mount points go straight into its own layer.
      await sn.prepare(key, top, { durable });
      await this.makeMountPoints(key).catch(async (e) => {
        await sn.remove(key, { durable }).catch(() => {});
        throw e;
      });
    } else {
      await this.prepareInit(init, top);
      try {
        await sn.prepare(key, init);
      } catch (e) {
        await sn.remove(init).catch(() => {});
        throw e;
      }
    }
    try {
      const name = engine.meta.write(() => {
        const taken = (n: string) => !!engine.meta.db.prepare("SELECT 1 FROM containers WHERE name = ?").get(n);
        let name = opts.name;
        if (name !== undefined && taken(name))
          throw new StrataError("CONFLICT", `the container name "/${name}" is already in use`);
        while (name === undefined || taken(name)) name = `${ADJECTIVES[randomBytes(1)[0] % 20]}_${NAMES[randomBytes(1)[0] % 20]}${name ? randomBytes(1)[0] % 10 : ""}`;
        engine.meta.db
          .prepare("INSERT INTO containers (id, name, image, image_ref, snapshot, config, host_config, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
          .run(id, name, img.digest, imageRef, key, JSON.stringify(config), JSON.stringify(hostConfig), JSON.stringify({ Status: "created", Pid: 0, ExitCode: 0 }), Date.now());
        engine.meta.db.prepare("UPDATE snapshots SET owner = NULL WHERE key = ?").run(key);
        return name;
      }, { durable });
      mkdirSync(engine.containerDir(id), { recursive: true });
      return this.get(name);
    } catch (e) {
      await sn.remove(key, { durable }).catch(() => {});
      if (durable) await sn.remove(init).catch(() => {});
      throw e;
    }
  }

  /**
   * The init layer (Docker's "-init"): a committed snapshot between the image
   * and the container's writable layer holding the mount points the runtime
   * needs and the image lacks, so they never show up as the container's changes.
   */
  private async prepareInit(key: string, parent: string | undefined): Promise<void> {
    const sn = this.engine.snapshots;
    const active = `${key}-active`;
    await sn.prepare(active, parent);
    try {
      await this.makeMountPoints(active);
      await sn.commit(key, active);
    } catch (e) {
      await sn.remove(active).catch(() => {});
      throw e;
    }
  }

  private async makeMountPoints(key: string): Promise<void> {
    makeMountPoints(await this.engine.snapshots.stack(key));
  }




  mountPoint(c: Container): string {
    return join(this.engine.containerDir(c.id), "merged");
  }

  /**
   * `strata mount`: the merged root (image layers + the container's layer),
   * mounted once. `volatile` (for containers removed when they exit) skips
   * overlayfs's sync of the whole upper filesystem at unmount: nothing of
   * theirs outlives them.
   */
  async mount(ref: string, opts: { volatile?: boolean } = {}): Promise<string> {
    const c = this.get(ref);
    const target = this.mountPoint(c);
    if (!isMounted(target)) {
      const mounts = await this.engine.snapshots.mounts(c.snapshot);
      mountAll(opts.volatile ? mounts.map((m) => (m.type === "overlay" ? { ...m, options: [...m.options, "volatile"] } : m)) : mounts, target);
    }
    return target;
  }

  async umount(ref: string): Promise<string> {
    const c = this.get(ref);
    const target = this.mountPoint(c);
    unmount(target);
    return target;
  }

  /** `strata rm`: the container's writable layer goes, and nothing else. */
  async remove(ref: string): Promise<Container> {
    const c = this.get(ref);
    unmount(this.mountPoint(c));
    const durable = !c.hostConfig.AutoRemove;
    this.engine.meta.write(() => this.engine.meta.db.prepare("DELETE FROM containers WHERE id = ?").run(c.id), { durable });
    for (const key of durable ? [c.snapshot, `init-${c.id}`] : [c.snapshot])
      await this.engine.snapshots.remove(key, { durable }).catch((e) => {
        if ((e as StrataError).code !== "NOT_FOUND") throw e;
      });
    rmSync(this.engine.containerDir(c.id), { recursive: true, force: true });
    return c;
  }

  /** `strata diff`: what the container changed, as `docker diff` lists it. */
  async diff(ref: string): Promise<{ kind: "A" | "C" | "D"; path: string }[]> {
    const c = this.get(ref);
    return this.changes(c);
  }

  private async changes(c: Container) {
    const sn = this.engine.snapshots;
    const stack = await sn.stack(c.snapshot);
    const { overlayChanges, treeChanges } = await import("../archive/changes.js");
    if (sn.driver === "overlay") return overlayChanges(stack[0], stack.slice(1));
    const info = await sn.stat(c.snapshot);
    const parentDir = info.parent ? (await sn.stat(info.parent)).dir : undefined;
    if (!parentDir) {
      const empty = join(this.engine.root, "tmp", `empty-${process.pid}`);
      mkdirSync(empty, { recursive: true });
      try {
        return await treeChanges(empty, info.dir);
      } finally {
        rmSync(empty, { recursive: true, force: true });
      }
    }
    return treeChanges(parentDir, info.dir);
  }

  /** The changes as an OCI layer tar (whiteouts for deletions, opaque markers for replaced directories). */
  async changesetTar(c: Container): Promise<Readable> {
    const changes = await this.changes(c);
    const { writeChangeset } = await import("../archive/changes.js");
    const upper = (await this.engine.snapshots.stack(c.snapshot))[0];
    return writeChangeset(changes, upper);
  }

  /** `strata export`: the merged root filesystem as one tar. */
  async export(ref: string): Promise<Readable> {
    const c = this.get(ref);
    const target = this.mountPoint(c);
    const wasMounted = isMounted(target);
    if (!wasMounted) mountAll(await this.engine.snapshots.mounts(c.snapshot), target);
    const { packDirectory } = await import("../archive/tar.js");
    const tar = packDirectory(target);
    if (!wasMounted) tar.on("close", () => unmount(target));
    return tar;
  }

  /** Containers using an image (rmi refuses to remove it while there are any). */
  usersOf(imageDigest: string): string[] {
    return (this.engine.meta.db.prepare("SELECT id FROM containers WHERE image = ?").all(imageDigest) as { id: string }[]).map((r) => r.id);
  }

  exists(id: string): boolean {
    return existsSync(this.engine.containerDir(id));
  }
}

/**
 * Creates the runtime's mount points the image lacks (/proc, /sys, /dev, /etc
 * and /etc/hosts, /etc/hostname, /etc/resolv.conf) in the top directory of a
 * snapshot stack (overlay: [upper, ...lowers]; vfs: [the full copy]),
 * straight in its directory: no mount, since an overlay unmount syncs the
 * whole upper filesystem. Returns what it created, relative, deepest last.
 */
export function makeMountPoints(stack: string[]): string[] {
  const upper = stack[0];
  const made: string[] = [];
  /** The top-most entry at `rel` in the stack; undefined when absent or whited out. */
  const merged = (rel: string) => {
    for (const dir of stack) {
      const st = lstatSync(join(dir, rel), { throwIfNoEntry: false });
      if (st) return st.isCharacterDevice() && st.rdev === 0 ? undefined : st;
    }
    return undefined;
  };
  for (const d of INIT_DIRS)
    if (!merged(d)) {
      mkdirSync(join(upper, d), { mode: 0o755 });
      made.push(d);
    }
  const etc = merged("etc");
  if (!etc?.isDirectory()) return made;
  if (!lstatSync(join(upper, "etc"), { throwIfNoEntry: false })) {
    // The same directory as below (mode, owner, times), now with the mount points in it.
    mkdirSync(join(upper, "etc"));
    chmodSync(join(upper, "etc"), etc.mode & 0o7777);
    lchownSync(join(upper, "etc"), etc.uid, etc.gid);
    made.push("etc");
  }
  for (const f of INIT_FILES)
    if (!merged(f)) {
      closeSync(openSync(join(upper, f), "w", 0o644));
      made.push(f);
    }
  utimesSync(join(upper, "etc"), etc.atime, etc.mtime);
  return made;
}
