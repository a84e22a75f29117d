import { existsSync, mkdirSync, rmSync } from "node:fs";
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
}

export interface Container {
  id: string;
  name: string;
  image: string;
  imageRef: string;
  imageId: string;
  snapshot: string;
  config: ContainerConfig;
  created: number;
}

interface ContainerRow {
  id: string;
  name: string;
  image: string;
  image_ref: string;
  snapshot: string;
  config: string;
  created: number;
}

const ADJECTIVES = ["brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nifty", "proud", "quiet", "sharp", "tender", "upbeat", "vivid", "witty", "zealous", "bold"];
const NAMES = ["turing", "hopper", "lovelace", "knuth", "ritchie", "thompson", "torvalds", "liskov", "dijkstra", "hamilton", "shannon", "babbage", "curie", "noether", "euler", "gauss", "kay", "lamport", "perlman", "wirth"];

/** The container half of the engine: writable copy-on-write layers on top of an image's snapshots. */
export class Containers {
  constructor(private readonly engine: Engine) {}

  private toContainer(r: ContainerRow): Container {
    const img = this.engine.meta.image(r.image);
    return { id: r.id, name: r.name, image: r.image, imageRef: r.image_ref, imageId: img?.config_digest ?? "", snapshot: r.snapshot, config: JSON.parse(r.config), created: r.created };
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
  async create(imageRef: string, opts: { name?: string; cmd?: string[]; entrypoint?: string[]; env?: string[]; workdir?: string; user?: string } = {}): Promise<Container> {
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
    };
    const id = randomBytes(32).toString("hex");
    const key = `container-${id}`;
    const sn = engine.snapshots;
    await sn.prepare(key, top);
    try {
      const name = engine.meta.write(() => {
        const taken = (n: string) => !!engine.meta.db.prepare("SELECT 1 FROM containers WHERE name = ?").get(n);
        let name = opts.name;
        if (name !== undefined && taken(name))
          throw new StrataError("CONFLICT", `the container name "/${name}" is already in use`);
        while (name === undefined || taken(name)) name = `${ADJECTIVES[randomBytes(1)[0] % 20]}_${NAMES[randomBytes(1)[0] % 20]}${name ? randomBytes(1)[0] % 10 : ""}`;
        engine.meta.db
          .prepare("INSERT INTO containers (id, name, image, image_ref, snapshot, config, created) VALUES (?, ?, ?, ?, ?, ?, ?)")
          .run(id, name, img.digest, imageRef, key, JSON.stringify(config), Date.now());
        engine.meta.db.prepare("UPDATE snapshots SET owner = NULL WHERE key = ?").run(key);
        return name;
      });
      mkdirSync(engine.containerDir(id), { recursive: true });
      return this.get(name);
    } catch (e) {
      await sn.remove(key).catch(() => {});
      throw e;
    }
  }

  mountPoint(c: Container): string {
    return join(this.engine.containerDir(c.id), "merged");
  }

  /** `strata mount`: the merged root (image layers + the container's layer), mounted once. */
  async mount(ref: string): Promise<string> {
    const c = this.get(ref);
    const target = this.mountPoint(c);
    if (!isMounted(target)) mountAll(await this.engine.snapshots.mounts(c.snapshot), target);
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
    this.engine.meta.write(() => this.engine.meta.db.prepare("DELETE FROM containers WHERE id = ?").run(c.id));
    await this.engine.snapshots.remove(c.snapshot).catch((e) => {
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
