import Database from "better-sqlite3";
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Digest } from "../digest/index.js";

/**
 * meta.db: the source of truth for names and references. WAL mode, so
 * readers never block the one writer; every multi-step change is one
 * `BEGIN IMMEDIATE` transaction.
 */
const SCHEMA_VERSION = 5;

const MIGRATIONS: string[] = [
  `CREATE TABLE images (
     digest TEXT PRIMARY KEY,            -- manifest digest
     media_type TEXT NOT NULL,
     size INTEGER NOT NULL,
     config_digest TEXT NOT NULL,
     config_media_type TEXT NOT NULL,
     config_size INTEGER NOT NULL,
     created TEXT,                       -- from the config
     os TEXT NOT NULL,
     architecture TEXT NOT NULL,
     variant TEXT,
     added_at INTEGER NOT NULL           -- ms since epoch
   );
   CREATE INDEX images_config ON images(config_digest);
   CREATE TABLE layers (                 -- one row per distinct layer blob, shared by images
     digest TEXT PRIMARY KEY,
     media_type TEXT NOT NULL,
     size INTEGER NOT NULL,
     diff_id TEXT NOT NULL,
     uncompressed_size INTEGER NOT NULL
   );
   CREATE TABLE image_layers (
     image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
     position INTEGER NOT NULL,
     layer TEXT NOT NULL REFERENCES layers(digest),
     chain_id TEXT NOT NULL,
     PRIMARY KEY (image, position)
   );
   CREATE INDEX image_layers_layer ON image_layers(layer);
   CREATE TABLE tags (
     name TEXT PRIMARY KEY,              -- normalised domain/path:tag
     image TEXT NOT NULL REFERENCES images(digest),
     tagged_at INTEGER NOT NULL
   );
   CREATE INDEX tags_image ON tags(image);
   CREATE TABLE leases (                 -- blobs a live writer is about to reference; gc keeps them
     owner TEXT NOT NULL,
     digest TEXT NOT NULL,
     PRIMARY KEY (owner, digest)
   );`,
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE snapshots (
     key TEXT PRIMARY KEY,               -- committed: the layer's chainID; active: a caller's key
     id TEXT NOT NULL UNIQUE,            -- directory under snapshots/
     parent TEXT REFERENCES snapshots(key),
     kind TEXT NOT NULL CHECK (kind IN ('committed', 'active', 'view')),
     owner TEXT,                         -- the process preparing it, while it is being filled (else NULL)
     created INTEGER NOT NULL
   );
   CREATE INDEX snapshots_parent ON snapshots(parent);
   CREATE TABLE containers (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     image TEXT NOT NULL REFERENCES images(digest),
     image_ref TEXT NOT NULL,            -- what the user asked for, as docker ps shows it
     snapshot TEXT NOT NULL REFERENCES snapshots(key),
     config TEXT NOT NULL,               -- JSON: entrypoint, cmd, env, workdir, user, ...
     created INTEGER NOT NULL
   );
   CREATE INDEX containers_image ON containers(image);`,
  `ALTER TABLE containers ADD COLUMN host_config TEXT NOT NULL DEFAULT '{}';  -- JSON: how it runs (mounts, limits, network …)
   ALTER TABLE containers ADD COLUMN state TEXT NOT NULL DEFAULT '{}';        -- JSON: status, pid, monitor, exit code, times
   CREATE TABLE volumes (
     name TEXT PRIMARY KEY,
     created INTEGER NOT NULL,
     labels TEXT NOT NULL DEFAULT '{}'
   );`,
  `CREATE TABLE build_cache (            -- one row per build step that made (or would make) a layer
     key TEXT PRIMARY KEY,                -- sha256 of the parent chainID, the expanded step and its inputs
     parent TEXT NOT NULL,                -- parent chainID ('' for scratch)
     step TEXT NOT NULL,                  -- the expanded instruction, to say why a later build missed
     inputs TEXT NOT NULL,                -- JSON: path → content digest of what the step read
     layer TEXT,                          -- the layer's digest; NULL when the step changed nothing
     media_type TEXT, size INTEGER, diff_id TEXT, uncompressed_size INTEGER,
     created INTEGER NOT NULL
   );
   CREATE INDEX build_cache_step ON build_cache(parent, step);`,
  `CREATE TABLE image_indexes (           -- a multi-platform image's index, kept byte for byte as a blob
     digest TEXT PRIMARY KEY,
     media_type TEXT NOT NULL,
     size INTEGER NOT NULL,
     added_at INTEGER NOT NULL
   );
   CREATE TABLE index_manifests (         -- its manifests, in the index's order; each one an images row
     index_digest TEXT NOT NULL REFERENCES image_indexes(digest) ON DELETE CASCADE,
     position INTEGER NOT NULL,
     manifest TEXT NOT NULL REFERENCES images(digest),
     PRIMARY KEY (index_digest, position)
   );
   CREATE INDEX index_manifests_manifest ON index_manifests(manifest);
   ALTER TABLE tags ADD COLUMN index_digest TEXT REFERENCES image_indexes(digest);  -- the index the tag came from, if any`,
];

export interface ImageRow {
  digest: Digest;
  media_type: string;
  size: number;
  config_digest: Digest;
  config_media_type: string;
  config_size: number;
  created: string | null;
  os: string;
  architecture: string;
  variant: string | null;
  added_at: number;
}

export interface LayerRow {
  digest: Digest;
  media_type: string;
  size: number;
  diff_id: Digest;
  uncompressed_size: number;
}

export interface ImageLayerRow extends LayerRow {
  position: number;
  chain_id: Digest;
}

export interface NewImage {
  image: Omit<ImageRow, "added_at">;
  layers: (LayerRow & { chain_id: Digest })[];
  tags: string[];
}

export interface IndexRow {
  digest: Digest;
  media_type: string;
  size: number;
  added_at: number;
}

export type DB = Database.Database;

/** The addon's path, given directly: the `bindings` search it otherwise does costs start-up time. */
function nativeBinding(): string | undefined {
  try {
    const p = join(dirname(createRequire(import.meta.url).resolve("better-sqlite3")), "..", "build", "Release", "better_sqlite3.node");
    return existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

export function openMetaStore(path: string, readonly = false): MetaStore {
  const db = new Database(path, { timeout: 60_000, readonly, nativeBinding: nativeBinding() });
  if (!readonly) db.pragma("synchronous = FULL");
  db.pragma("foreign_keys = ON");
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version < SCHEMA_VERSION) {
    if (readonly) throw new Error("meta.db needs a migration; open it writable");
    // WAL is a property of the file: set once, when the database is created.
    if (version === 0) db.pragma("journal_mode = WAL");
    db.transaction(() => {
      const v = db.pragma("user_version", { simple: true }) as number;
      for (let i = v; i < MIGRATIONS.length; i++) db.exec(MIGRATIONS[i]);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
  }
  return new MetaStore(db);
}

export class MetaStore {
  constructor(readonly db: DB) {}

  close(): void {
    this.db.close();
  }

  /**
   * Runs `fn` in one write transaction that takes the write lock up front.
   * Durable by default (synchronous=FULL: the WAL is fsynced at commit).
   * `durable: false` is for records that mean nothing after a power loss,
   * such as a `--rm` container's (its overlay is volatile): the commit skips
   * the fsync, survives a crash of the process, and may roll back on a power
   * loss, leaving the database consistent either way.
   */
  write<T>(fn: () => T, opts: { durable?: boolean } = {}): T {
    if (opts.durable !== false) return this.db.transaction(fn).immediate();
    this.db.pragma("synchronous = NORMAL");
    try {
      return this.db.transaction(fn).immediate();
    } finally {
      this.db.pragma("synchronous = FULL");
    }
  }

  read<T>(fn: () => T): T {
    return this.db.transaction(fn).deferred();
  }

  images(): ImageRow[] {
    return this.db.prepare("SELECT * FROM images ORDER BY added_at DESC").all() as ImageRow[];
  }

  image(digest: string): ImageRow | undefined {
    return this.db.prepare("SELECT * FROM images WHERE digest = ?").get(digest) as ImageRow | undefined;
  }

  imagesByConfigPrefix(prefix: string): ImageRow[] {
    return this.db
      .prepare("SELECT * FROM images WHERE config_digest >= ? AND config_digest < ? ORDER BY added_at DESC")
      .all(prefix, prefix + "\uffff") as ImageRow[];
  }

  tags(): { name: string; image: Digest; tagged_at: number }[] {
    return this.db.prepare("SELECT name, image, tagged_at FROM tags ORDER BY name").all() as { name: string; image: Digest; tagged_at: number }[];
  }

  tag(name: string): { name: string; image: Digest } | undefined {
    return this.db.prepare("SELECT name, image FROM tags WHERE name = ?").get(name) as { name: string; image: Digest } | undefined;
  }

  tagsOf(image: string): string[] {
    return (this.db.prepare("SELECT name FROM tags WHERE image = ? ORDER BY name").all(image) as { name: string }[]).map((r) => r.name);
  }

  layersOf(image: string): ImageLayerRow[] {
    return this.db
      .prepare(
        `SELECT il.position, il.chain_id, l.* FROM image_layers il JOIN layers l ON l.digest = il.layer
         WHERE il.image = ? ORDER BY il.position`,
      )
      .all(image) as ImageLayerRow[];
  }

  allImageLayers(): { image: Digest; layer: Digest; size: number }[] {
    return this.db
      .prepare("SELECT il.image, il.layer, l.size FROM image_layers il JOIN layers l ON l.digest = il.layer")
      .all() as { image: Digest; layer: Digest; size: number }[];
  }

  layer(digest: string): LayerRow | undefined {
    return this.db.prepare("SELECT * FROM layers WHERE digest = ?").get(digest) as LayerRow | undefined;
  }

  /** Inserts an image with its layers and points `tags` at it. Call inside write(). */
  putImage(n: NewImage, now = Date.now()): void {
    const db = this.db;
    db.prepare(
      `INSERT INTO images (digest, media_type, size, config_digest, config_media_type, config_size, created, os, architecture, variant, added_at)
       VALUES (@digest, @media_type, @size, @config_digest, @config_media_type, @config_size, @created, @os, @architecture, @variant, @added_at)
       ON CONFLICT(digest) DO NOTHING`,
    ).run({ ...n.image, added_at: now });
    const putLayer = db.prepare(
      `INSERT INTO layers (digest, media_type, size, diff_id, uncompressed_size) VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO NOTHING`,
    );
    const putImageLayer = db.prepare(
      `INSERT INTO image_layers (image, position, layer, chain_id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    );
    n.layers.forEach((l, i) => {
      putLayer.run(l.digest, l.media_type, l.size, l.diff_id, l.uncompressed_size);
      putImageLayer.run(n.image.digest, i, l.digest, l.chain_id);
    });
    for (const t of n.tags) this.setTag(t, n.image.digest, now);
  }

  /** Points `name` at an image (and, for a multi-platform image, at the index it was chosen from). */
  setTag(name: string, image: string, now = Date.now(), index: string | null = null): void {
    this.db
      .prepare(
        `INSERT INTO tags (name, image, tagged_at, index_digest) VALUES (?, ?, ?, ?)
         ON CONFLICT(name) DO UPDATE SET image = excluded.image, tagged_at = excluded.tagged_at, index_digest = excluded.index_digest`,
      )
      .run(name, image, now, index);
  }

  /** The index a tag came from, if it has one. */
  tagIndex(name: string): IndexRow | undefined {
    return this.db.prepare("SELECT x.* FROM tags t JOIN image_indexes x ON x.digest = t.index_digest WHERE t.name = ?").get(name) as IndexRow | undefined;
  }

  indexes(): IndexRow[] {
    return this.db.prepare("SELECT * FROM image_indexes ORDER BY digest").all() as IndexRow[];
  }

  /** An index's manifests, in its order. */
  indexManifests(index: string): Digest[] {
    return (this.db.prepare("SELECT manifest FROM index_manifests WHERE index_digest = ? ORDER BY position").all(index) as { manifest: Digest }[]).map((r) => r.manifest);
  }

  /** Records an index over manifests already in `images`. Call inside write(). */
  putIndex(index: Omit<IndexRow, "added_at">, manifests: Digest[], now = Date.now()): void {
    const db = this.db;
    db.prepare("INSERT INTO image_indexes (digest, media_type, size, added_at) VALUES (?, ?, ?, ?) ON CONFLICT(digest) DO NOTHING").run(index.digest, index.media_type, index.size, now);
    const put = db.prepare("INSERT INTO index_manifests (index_digest, position, manifest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING");
    manifests.forEach((m, i) => put.run(index.digest, i, m));
  }

  /** Forgets the indexes no tag points at any more; returns them and their manifests (the images themselves stay). */
  dropUntaggedIndexes(): { indexes: Digest[]; manifests: Digest[] } {
    const gone = this.db.prepare("SELECT digest FROM image_indexes x WHERE NOT EXISTS (SELECT 1 FROM tags WHERE index_digest = x.digest)").all() as { digest: Digest }[];
    const manifests = new Set<Digest>();
    for (const { digest } of gone) {
      for (const m of this.indexManifests(digest)) manifests.add(m);
      this.db.prepare("DELETE FROM image_indexes WHERE digest = ?").run(digest);
    }
    return { indexes: gone.map((r) => r.digest), manifests: [...manifests] };
  }

  /** An image no tag and no index names (a container may still use it). */
  untracked(image: string): boolean {
    return !this.db.prepare("SELECT 1 FROM tags WHERE image = ? UNION ALL SELECT 1 FROM index_manifests WHERE manifest = ?").get(image, image);
  }

  removeTag(name: string): void {
    this.db.prepare("DELETE FROM tags WHERE name = ?").run(name);
  }

  /** Deletes an image row and any layer rows no other image uses. */
  removeImage(digest: string): void {
    const layers = this.layersOf(digest).map((l) => l.digest);
    this.db.prepare("DELETE FROM tags WHERE image = ?").run(digest);
    this.db.prepare("DELETE FROM image_layers WHERE image = ?").run(digest);
    this.db.prepare("DELETE FROM images WHERE digest = ?").run(digest);
    const unused = this.db.prepare("DELETE FROM layers WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM image_layers WHERE layer = ?)");
    for (const l of layers) unused.run(l, l);
  }

  /** Every digest an image or index references (index, manifest, config, layers) plus live leases. */
  referencedDigests(): Set<string> {
    const out = new Set<string>();
    for (const r of this.db.prepare("SELECT digest, config_digest FROM images").all() as { digest: string; config_digest: string }[]) {
      out.add(r.digest);
      out.add(r.config_digest);
    }
    for (const r of this.db.prepare("SELECT DISTINCT layer FROM image_layers").all() as { layer: string }[]) out.add(r.layer);
    for (const r of this.db.prepare("SELECT digest FROM image_indexes").all() as { digest: string }[]) out.add(r.digest);
    for (const r of this.db.prepare("SELECT digest FROM leases").all() as { digest: string }[]) out.add(r.digest);
    for (const r of this.db.prepare("SELECT layer FROM build_cache WHERE layer IS NOT NULL").all() as { layer: string }[]) out.add(r.layer);
    return out;
  }

  getMeta(key: string): string | undefined {
    return (this.db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  addLeases(owner: string, digests: Iterable<string>): void {
    const st = this.db.prepare("INSERT OR IGNORE INTO leases (owner, digest) VALUES (?, ?)");
    for (const d of digests) st.run(owner, d);
  }

  dropLeases(owner: string): void {
    this.db.prepare("DELETE FROM leases WHERE owner = ?").run(owner);
  }

  leaseOwners(): string[] {
    return (this.db.prepare("SELECT DISTINCT owner FROM leases").all() as { owner: string }[]).map((r) => r.owner);
  }
}
