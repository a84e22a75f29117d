import { existsSync, mkdirSync, readdirSync, lstatSync, rmSync, symlinkSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { createRequire } from "node:module";
import { StrataError } from "../errors/index.js";
import type { MetaStore } from "../metastore/index.js";
import { ownerAlive, ownerToken } from "../content/proc.js";

/** A mount is data: only runtime/ (or an explicit mount command) mounts anything. */
export interface Mount {
  type: string;
  source: string;
  options: string[];
}

export type SnapshotKind = "committed" | "active" | "view";

export interface SnapshotInfo {
  key: string;
  parent?: string;
  kind: SnapshotKind;
  created: number;
  /** the directory this snapshot's own changes live in */
  dir: string;
}

export interface Snapshotter {
  readonly driver: "overlay" | "vfs";
  /** An active, writable snapshot on top of `parent` (a committed key); `durable: false` as in MetaStore.write. */
  prepare(key: string, parent?: string, opts?: { durable?: boolean }): Promise<Mount[]>;
  /** An active, read-only snapshot on top of `parent`. */
  view(key: string, parent?: string): Promise<Mount[]>;
  /** Active → committed under `name`; the key goes away. */
  commit(name: string, key: string, parent?: string): Promise<void>;
  has(key: string): boolean;
  release(key: string): void;
  mounts(key: string): Promise<Mount[]>;
  remove(key: string, opts?: { durable?: boolean }): Promise<void>;
  stat(key: string): Promise<SnapshotInfo>;
  usage(key: string): Promise<{ bytes: number; inodes: number }>;
  walk(fn: (info: SnapshotInfo) => void | Promise<void>): Promise<void>;
  /** The directory a layer is applied into for `key`, and how whiteouts must be written there. */
  applyTarget(key: string): Promise<{ dir: string; whiteouts: "overlay" | "apply" }>;
  /** Directories from the top of `key`'s stack down (overlay: upper then lowers; vfs: one full copy). */
  stack(key: string): Promise<string[]>;
  /** Removes snapshots that a dead process left half-made. Returns their keys. */
  cleanup(): Promise<string[]>;
}

interface Row {
  key: string;
  id: string;
  parent: string | null;
  kind: SnapshotKind;
  owner: string | null;
  created: number;
}

/**
 * What both drivers share: rows in meta.db, one directory per snapshot
 * under snapshots/<id>/, a snapshot being filled carries its owner (a process
 * token) until it is committed, so a crash mid-unpack leaves a row that
 * cleanup() recognises and removes.
 */
abstract class BaseSnapshotter implements Snapshotter {
  abstract readonly driver: "overlay" | "vfs";
  readonly dir: string;

  constructor(
    readonly root: string,
    protected readonly meta: MetaStore,
  ) {
    this.dir = join(root, "snapshots");
  }

  protected row(key: string): Row {
    const r = this.meta.db.prepare("SELECT * FROM snapshots WHERE key = ?").get(key) as Row | undefined;
    if (!r) throw new StrataError("NOT_FOUND", `snapshot ${key} does not exist`);
    return r;
  }

  protected info(r: Row): SnapshotInfo {
    return { key: r.key, parent: r.parent ?? undefined, kind: r.kind, created: r.created, dir: this.fsDir(r.id) };
  }

  protected fsDir(id: string): string {
    return join(this.dir, id, "fs");
  }

  /** The chain of rows from `key` down to the base layer. */
  protected chain(key: string): Row[] {
    const out: Row[] = [];
    for (let k: string | null = key; k; k = out[out.length - 1].parent) out.push(this.row(k));
    return out;
  }

  protected create(key: string, parent: string | undefined, kind: SnapshotKind, durable = true): Row {
    const id = randomBytes(8).toString("hex");
    const r: Row = { key, id, parent: parent ?? null, kind, owner: ownerToken(), created: Date.now() };
    this.meta.write(() => {
      if (parent) {
        const p = this.row(parent);
        if (p.kind !== "committed") throw new StrataError("CONFLICT", `snapshot parent ${parent} is not committed`);
      }
      if (this.meta.db.prepare("SELECT 1 FROM snapshots WHERE key = ?").get(key)) throw new StrataError("ALREADY_EXISTS", `snapshot ${key} already exists`);
      this.meta.db.prepare("INSERT INTO snapshots (key, id, parent, kind, owner, created) VALUES (@key, @id, @parent, @kind, @owner, @created)").run(r);
    }, { durable });
    mkdirSync(join(this.dir, id), { recursive: true });
    this.populate(r);
    return r;
  }

  /** Makes the new snapshot's directories. */
  protected abstract populate(r: Row): void;
  protected abstract mountsOf(r: Row): Mount[];

  async prepare(key: string, parent?: string, opts: { durable?: boolean } = {}): Promise<Mount[]> {
    return this.mountsOf(this.create(key, parent, "active", opts.durable));
  }

  async view(key: string, parent?: string): Promise<Mount[]> {
    return this.mountsOf(this.create(key, parent, "view"));
  }

  /**
   * Active → committed. `parent` re-parents a snapshot prepared without one:
   * overlay layers do not depend on what is below them, so they can be
   * unpacked side by side and stacked when committed.
   */
  async commit(name: string, key: string, parent?: string): Promise<void> {
    this.meta.write(() => {
      const r = this.row(key);
      if (r.kind !== "active") throw new StrataError("CONFLICT", `snapshot ${key} is not active`);
      if (this.meta.db.prepare("SELECT 1 FROM snapshots WHERE key = ?").get(name)) throw new StrataError("ALREADY_EXISTS", `snapshot ${name} already exists`);
      if (parent !== undefined) {
        if (this.driver !== "overlay" || r.parent !== null) throw new StrataError("CONFLICT", `snapshot ${key} cannot be re-parented`);
        if (this.row(parent).kind !== "committed") throw new StrataError("CONFLICT", `snapshot parent ${parent} is not committed`);
      }
      this.meta.db.prepare("UPDATE snapshots SET key = ?, kind = 'committed', owner = NULL, parent = COALESCE(?, parent) WHERE key = ?").run(name, parent ?? null, key);
      rmSync(join(this.dir, r.id, "work"), { recursive: true, force: true });
    });
  }

  /** True when a committed snapshot `key` exists. */
  has(key: string): boolean {
    return !!this.meta.db.prepare("SELECT 1 FROM snapshots WHERE key = ? AND kind = 'committed'").get(key);
  }

  /** Marks an active snapshot as in use by a container (no longer owned by the process that prepared it). */
  release(key: string): void {
    this.meta.write(() => this.meta.db.prepare("UPDATE snapshots SET owner = NULL WHERE key = ?").run(key));
  }

  async mounts(key: string): Promise<Mount[]> {
    return this.mountsOf(this.row(key));
  }

  async remove(key: string, opts: { durable?: boolean } = {}): Promise<void> {
    const r = this.meta.write(() => {
      const r = this.row(key);
      if (this.meta.db.prepare("SELECT 1 FROM snapshots WHERE parent = ?").get(key)) throw new StrataError("CONFLICT", `snapshot ${key} has children`);
      this.meta.db.prepare("DELETE FROM snapshots WHERE key = ?").run(key);
      return r;
    }, opts);
    await this.removeDir(r);
  }

  protected async removeDir(r: Row): Promise<void> {
    rmSync(join(this.dir, r.id), { recursive: true, force: true });
  }

  async stat(key: string): Promise<SnapshotInfo> {
    return this.info(this.row(key));
  }

  async usage(key: string): Promise<{ bytes: number; inodes: number }> {
    const r = this.row(key);
    let bytes = 0;
    let inodes = 0;
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        const st = lstatSync(p);
        inodes++;
        if (st.isDirectory()) walk(p);
        else bytes += st.blocks * 512;
      }
    };
    if (existsSync(this.fsDir(r.id))) walk(this.fsDir(r.id));
    return { bytes, inodes };
  }

  async walk(fn: (info: SnapshotInfo) => void | Promise<void>): Promise<void> {
    for (const r of this.meta.db.prepare("SELECT * FROM snapshots ORDER BY created").all() as Row[]) await fn(this.info(r));
  }

  async applyTarget(key: string): Promise<{ dir: string; whiteouts: "overlay" | "apply" }> {
    return { dir: this.fsDir(this.row(key).id), whiteouts: this.driver === "overlay" ? "overlay" : "apply" };
  }

  async stack(key: string): Promise<string[]> {
    const chain = this.chain(key);
    return this.driver === "overlay" ? chain.map((r) => this.fsDir(r.id)) : [this.fsDir(chain[0].id)];
  }

  async cleanup(): Promise<string[]> {
    const dead = (this.meta.db.prepare("SELECT * FROM snapshots WHERE owner IS NOT NULL").all() as Row[]).filter((r) => !ownerAlive(r.owner!));
    const removed: string[] = [];
    for (const r of dead) {
      const gone = this.meta.write(() => {
        const cur = this.meta.db.prepare("SELECT owner FROM snapshots WHERE key = ?").get(r.key) as { owner: string | null } | undefined;
        if (!cur || cur.owner !== r.owner) return false;
        this.meta.db.prepare("DELETE FROM snapshots WHERE key = ?").run(r.key);
        return true;
      });
      if (gone) {
        await this.removeDir(r);
        removed.push(r.key);
      }
    }
    // Directories without a row: a crash between mkdir and the insert, or after the delete.
    const ids = new Set((this.meta.db.prepare("SELECT id FROM snapshots").all() as { id: string }[]).map((r) => r.id));
    for (const name of existsSync(this.dir) ? readdirSync(this.dir) : []) {
      if (name === "l" || ids.has(name)) continue;
      const st = lstatSync(join(this.dir, name), { throwIfNoEntry: false });
      if (!st || Date.now() - st.mtimeMs < 60_000) continue; // gone already, or maybe just being created by a live process
      rmSync(join(this.dir, name), { recursive: true, force: true });
    }
    return removed;
  }
}

/**
 * Kernel overlayfs. A committed snapshot is one layer's files (its diff);
 * an active one adds an empty upper dir and a work dir. Each snapshot has a
 * short link snapshots/l/<8 chars> → ../<id>/fs, so that a long stack of
 * lowerdirs fits the one-page limit on mount options (mountOverlay uses
 * relative paths from snapshots/ when the absolute form is too long).
 */
export class OverlaySnapshotter extends BaseSnapshotter {
  readonly driver = "overlay" as const;

  protected populate(r: Row): void {
    mkdirSync(join(this.dir, r.id, "fs"), { recursive: true });
    if (r.kind === "active") mkdirSync(join(this.dir, r.id, "work"), { recursive: true });
    mkdirSync(join(this.dir, "l"), { recursive: true });
    symlinkSync(`../${r.id}/fs`, join(this.dir, "l", linkName(r.id)));
  }

  protected override async removeDir(r: Row): Promise<void> {
    rmSync(join(this.dir, "l", linkName(r.id)), { force: true });
    await super.removeDir(r);
  }

  protected mountsOf(r: Row): Mount[] {
    const lowers = r.parent ? this.chain(r.parent).map((p) => join(this.dir, "l", linkName(p.id))) : [];
    if (r.kind === "active") {
      const upper = `upperdir=${this.fsDir(r.id)}`;
      const work = `workdir=${join(this.dir, r.id, "work")}`;
      if (lowers.length === 0) return [{ type: "bind", source: this.fsDir(r.id), options: ["rbind", "rw"] }];
      return [{ type: "overlay", source: "overlay", options: [`lowerdir=${lowers.join(":")}`, upper, work, "index=off"] }];
    }
    if (r.kind === "view") {
      if (lowers.length === 0) return [{ type: "bind", source: this.fsDir(r.id), options: ["rbind", "ro"] }];
      if (lowers.length === 1) return [{ type: "bind", source: join(this.dir, "l", linkName(this.row(r.parent!).id)), options: ["rbind", "ro"] }];
      return [{ type: "overlay", source: "overlay", options: [`lowerdir=${lowers.join(":")}`, "index=off"] }];
    }
    return [{ type: "bind", source: this.fsDir(r.id), options: ["rbind", "ro"] }];
  }
}

/** Full copies: each snapshot holds the whole tree (a copy of its parent's, then the layer applied). Works anywhere. */
export class VfsSnapshotter extends BaseSnapshotter {
  readonly driver = "vfs" as const;

  protected populate(r: Row): void {
    const target = this.fsDir(r.id);
    if (!r.parent) {
      mkdirSync(target, { recursive: true });
      return;
    }
    copyTree(this.fsDir(this.row(r.parent).id), target);
  }

  protected mountsOf(r: Row): Mount[] {
    return [{ type: "bind", source: this.fsDir(r.id), options: ["rbind", r.kind === "active" ? "rw" : "ro"] }];
  }
}

function linkName(id: string): string {
  return id.slice(0, 10);
}

/** A faithful copy (owners, modes, times, xattrs, hardlinks, devices) through GNU cp, reflinking where the filesystem can. */
function copyTree(from: string, to: string): void {
  // Loaded lazily: only the vfs driver copies trees.
  const { spawnSync } = createRequire(import.meta.url)("node:child_process") as typeof import("node:child_process");
  const r = spawnSync("cp", ["-a", "--reflink=auto", from, to], { stdio: ["ignore", "ignore", "pipe"] });
  if (r.status !== 0) throw new StrataError("IO", `copy snapshot: cp exited ${r.status}: ${r.stderr.toString().trim()}`);
}

