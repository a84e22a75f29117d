import { existsSync, mkdirSync, rmSync, statSync, createReadStream, promises as fs } from "node:fs";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { StrataError, isStrataError, wrap } from "../errors/index.js";
import { randomBytes } from "node:crypto";
import { OverlaySnapshotter, VfsSnapshotter } from "../snapshot/index.js";
import { cleanProbes, probeOverlay } from "../snapshot/mount.js";
import { chainIds, sha256, isDigest, type Digest } from "../digest/index.js";
import { ContentStore, type PendingBlob } from "../content/index.js";
import { ownerAlive, ownerToken } from "../content/proc.js";
import { openMetaStore, type MetaStore, type ImageRow, type ImageLayerRow, type IndexRow } from "../metastore/index.js";
import { MediaType, hostPlatform, parseConfig, parseIndex, parseManifest, MAX_MANIFEST_BYTES, type ImageConfig, type HistoryEntry } from "../oci/index.js";
import { familiarName, familiarString, formatReference, parseReference, splitTagged } from "../reference/index.js";
import { StoreImage, notFound, storeLayer } from "../image/index.js";
import { UnionView } from "../union/index.js";
import type { PreparedImage } from "../layout/load.js";
import type { ArchiveFormat } from "../layout/save.js";
import { ensureLayoutFiles, renderIndex, writeIndexView } from "../layout/view.js";
import { defaultRoot } from "./root.js";
import { Containers } from "./containers.js";
import { ContainerRuntime } from "../runtime/index.js";

export { defaultRoot };

export interface EngineOptions {
  /** data root; default /var/lib/strata (root) or $XDG_DATA_HOME/strata */
  root?: string;
  /** snapshot driver for a new root (default: overlay when the kernel mounts it, else vfs; or STRATA_STORAGE_DRIVER) */
  storageDriver?: "overlay" | "vfs";
}

export interface ImageSummary {
  id: Digest;
  digest: Digest;
  mediaType: string;
  repository?: string;
  tag?: string;
  created?: string;
  /** uncompressed size of the layers, as `docker images` shows */
  size: number;
  addedAt: number;
}

export interface RmiResult {
  untagged: string[];
  deleted: Digest[];
}

export interface DfImage {
  id: Digest;
  digest: Digest;
  names: string[];
  created?: string;
  size: number;
  sharedSize: number;
  uniqueSize: number;
}

export interface DfLayer {
  digest: Digest;
  diffId: Digest;
  size: number;
  images: number;
}

export interface DiskUsage {
  images: DfImage[];
  layers: DfLayer[];
  /** bytes of every blob images reference, each counted once */
  totalBytes: number;
  /** blobs on disk no image references (reclaimable by gc) */
  unreferencedBytes: number;
  /** unpacked layers (committed snapshots): bytes on disk, each layer once */
  snapshots: { count: number; bytes: number };
  /** containers and the bytes of their writable layers */
  containers: { id: string; name: string; image: string; bytes: number; inodes: number }[];
}

/** Bytes gathered before a new layer's tar goes on to gzip and the applier. */
const TEE_BATCH = 256 << 10;

export interface NewLayer {
  pending: PendingBlob;
  digest: Digest;
  size: number;
  diffId: Digest;
  uncompressedSize: number;
  mediaType: string;
}

export interface CheckReport {
  blobs: number;
  images: number;
  problems: string[];
  repaired: string[];
}

/**
 * The strata API: what the CLI calls and what library users embed.
 * Constructing an Engine does no I/O; the store opens on first use.
 */
export class Engine {
  readonly root: string;
  readonly content: ContentStore;
  private metaStore?: MetaStore;
  private snapshotter?: OverlaySnapshotter | VfsSnapshotter;
  private readonly storageDriver?: "overlay" | "vfs";

  constructor(opts: EngineOptions = {}) {
    this.root = opts.root ?? defaultRoot();
    this.content = new ContentStore(this.root);
    const env = process.env.STRATA_STORAGE_DRIVER;
    this.storageDriver = opts.storageDriver ?? (env === "overlay" || env === "vfs" ? env : undefined);
  }

  /**
   * The snapshotter of this root. The driver is chosen once, when the root
   * first needs one (overlay if the kernel mounts it here, else vfs), and
   * recorded with the reason, as `strata info` shows.
   */
  get snapshots(): OverlaySnapshotter | VfsSnapshotter {
    if (this.snapshotter) return this.snapshotter;
    const meta = this.meta;
    let driver = meta.getMeta("storage_driver");
    if (!driver) {
      let reason = "chosen with --storage-driver";
      let want = this.storageDriver;
      if (!want) {
        const probe = probeOverlay(this.root);
        want = probe.ok ? "overlay" : "vfs";
        reason = probe.reason;
      }
      driver = meta.write(() => {
        const now = meta.getMeta("storage_driver");
        if (now) return now;
        meta.setMeta("storage_driver", want!);
        meta.setMeta("storage_driver_reason", reason);
        return want!;
      });
    }
    if (this.storageDriver && this.storageDriver !== driver)
      throw new StrataError("CONFLICT", `this root uses the ${driver} storage driver, not ${this.storageDriver}`);
    this.snapshotter = driver === "overlay" ? new OverlaySnapshotter(this.root, meta) : new VfsSnapshotter(this.root, meta);
    return this.snapshotter;
  }

  private containerStore?: Containers;

  /** Containers: writable copy-on-write layers over images. */
  get containers(): Containers {
    return (this.containerStore ??= new Containers(this));
  }

  private runtimeStore?: ContainerRuntime;

  /** Running containers: runtime bundles, runc/crun, state, logs, volumes. */
  get runtime(): ContainerRuntime {
    return (this.runtimeStore ??= new ContainerRuntime(this));
  }

  /** Where a container's files live: containers/<id>/ (the merged mount point and, later, the runtime bundle). */
  containerDir(id: string): string {
    return join(this.root, "containers", id);
  }

  /**
   * Unpacks an image's layers into snapshots, once per chainID: layers
   * another image already unpacked are shared. With overlay the missing
   * layers are applied side by side (a layer's diff does not depend on what
   * is below it) and stacked as they are committed; vfs copies the parent,
   * so it goes one layer after the other. Returns the top chainID.
   */
  async unpack(ref: string | Pick<StoreImage, "layers" | "layerRows">): Promise<string | undefined> {
    const img = typeof ref === "string" ? this.image(ref) : ref;
    const layers = await img.layers();
    const sn = this.snapshots;
    const chains = (await img.layerRows()).map((l) => l.chain_id);
    if (layers.length === 0) return undefined;
    const missing = layers.map((l, i) => ({ layer: l, chain: chains[i], parent: i ? chains[i - 1] : undefined })).filter((x) => !sn.has(x.chain));
    if (missing.length === 0) return chains[chains.length - 1];
    // Before unpacking: what a dead process left half-made goes first.
    await sn.cleanup();
    const { applyLayer } = await import("../archive/extract.js");
    const apply = async (x: (typeof missing)[number], parent: string | undefined) => {
      const key = `extract-${randomBytes(6).toString("hex")}-${x.chain}`;
      await sn.prepare(key, parent);
      try {
        const target = await sn.applyTarget(key);
        await applyLayer(await x.layer.diffChunks(), target.dir, { whiteouts: target.whiteouts });
      } catch (e) {
        await sn.remove(key).catch(() => {});
        throw wrap(e, "IO", `unpack layer ${x.layer.digest}`);
      }
      return key;
    };
    /** Commits `key` as `chain`; another process may have done it first, which is fine. */
    const commit = async (key: string, chain: string, parent: string | undefined, reparent: boolean) => {
      try {
        await sn.commit(chain, key, reparent ? parent : undefined);
      } catch (e) {
        if (!isStrataError(e, "ALREADY_EXISTS")) throw e;
        await sn.remove(key);
      }
    };
    if (sn.driver === "overlay") {
      const keys: string[] = new Array(missing.length);
      let next = 0;
      let failure: unknown;
      const worker = async () => {
        while (next < missing.length && failure === undefined) {
          const i = next++;
          try {
            keys[i] = await apply(missing[i], undefined);
          } catch (e) {
            failure ??= e;
          }
        }
      };
      // Both workers finish before anything is decided, so a failure leaves no layer half-applied behind.
      await Promise.all([worker(), worker()]);
      if (failure !== undefined) {
        for (const k of keys) if (k) await sn.remove(k).catch(() => {});
        throw failure;
      }
      for (const [i, x] of missing.entries()) await commit(keys[i], x.chain, x.parent, x.parent !== undefined);
    } else {
      for (const x of missing) {
        if (sn.has(x.chain)) continue;
        await commit(await apply(x, x.parent), x.chain, x.parent, false);
      }
    }
    return chains[chains.length - 1];
  }

  /** Opens (creating when needed) meta.db and the layout; memoised. */
  get meta(): MetaStore {
    if (!this.metaStore) {
      if (!existsSync(join(this.root, "meta.db"))) {
        mkdirSync(join(this.root, "blobs", "sha256"), { recursive: true });
        mkdirSync(join(this.root, "ingest"), { recursive: true });
      }
      try {
        this.metaStore = openMetaStore(join(this.root, "meta.db"));
      } catch (e) {
        throw wrap(e, "CORRUPT", `open ${join(this.root, "meta.db")}`);
      }
      if (!existsSync(join(this.root, "oci-layout")) || !existsSync(join(this.root, "index.json")))
        this.metaStore.write(() => ensureLayoutFiles(this.root, this.metaStore!));
    }
    return this.metaStore;
  }

  close(): void {
    this.metaStore?.close();
    this.metaStore = undefined;
  }

  // ---- lookups ---------------------------------------------------------

  /** Resolves a name[:tag], name@digest, full image ID or unambiguous ID prefix. */
  resolve(ref: string): ImageRow {
    const meta = this.meta;
    const full = /^sha256:[a-f0-9]{64}$/.exec(ref);
    if (full) {
      const byId = meta.imagesByConfigPrefix(ref);
      if (byId.length) return byId[0];
      const byDigest = meta.image(ref);
      if (byDigest) return byDigest;
      throw notFound(ref);
    }
    let parsed;
    try {
      parsed = parseReference(ref);
    } catch (e) {
      if (!/^[a-f0-9]{1,64}$/.test(ref)) throw e;
    }
    if (parsed?.digest) {
      const img = meta.image(parsed.digest);
      if (img) return img;
      throw notFound(ref);
    }
    if (parsed) {
      const t = meta.tag(formatReference(parsed));
      if (t) return meta.image(t.image)!;
    }
    if (/^[a-f0-9]{1,64}$/.test(ref)) {
      const matches = meta.imagesByConfigPrefix(`sha256:${ref}`);
      const ids = new Set(matches.map((m) => m.config_digest));
      if (ids.size > 1) throw new StrataError("CONFLICT", `image ID prefix "${ref}" is ambiguous: ${ids.size} images match`);
      if (matches.length) return matches[0];
    }
    throw notFound(ref);
  }

  image(ref: string): StoreImage {
    return new StoreImage(this.content, this.meta, this.resolve(ref));
  }

  // ---- images, inspect, history ----------------------------------------

  images(): ImageSummary[] {
    const meta = this.meta;
    return meta.read(() => {
      const sizes = new Map<string, number>();
      for (const r of meta.db.prepare("SELECT il.image, SUM(l.uncompressed_size) AS s FROM image_layers il JOIN layers l ON l.digest = il.layer GROUP BY il.image").all() as { image: string; s: number }[])
        sizes.set(r.image, r.s);
      const rows = meta.images();
      const tags = new Map<string, string[]>();
      for (const t of meta.tags()) tags.set(t.image, [...(tags.get(t.image) ?? []), t.name]);
      // A multi-platform image's other platforms belong to its index, not among the dangling images.
      const inIndex = new Set((meta.db.prepare("SELECT DISTINCT manifest FROM index_manifests").all() as { manifest: string }[]).map((r) => r.manifest));
      const out: ImageSummary[] = [];
      for (const r of rows) {
        const base = { id: r.config_digest, digest: r.digest, mediaType: r.media_type, created: r.created ?? undefined, size: sizes.get(r.digest) ?? 0, addedAt: r.added_at };
        const names = tags.get(r.digest);
        if (!names && inIndex.has(r.digest)) continue;
        if (!names) out.push(base);
        else for (const n of names) out.push({ ...base, ...splitTagged(n) });
      }
      return out;
    });
  }

  async inspect(ref: string): Promise<Record<string, unknown>> {
    const img = this.image(ref);
    const [config, layers] = await Promise.all([img.config(), img.layerRows()]);
    const names = this.meta.tagsOf(img.digest);
    const repos = [...new Set(names.map((n) => splitTagged(n).repository))];
    return {
      Id: img.id,
      RepoTags: names.map((n) => familiarString(parseReference(n))),
      RepoDigests: repos.map((r) => `${familiarName(parseReference(r, { defaultTag: false }))}@${img.digest}`),
      Parent: "",
      Comment: config.history?.[config.history.length - 1]?.comment ?? "",
      Created: config.created ?? "",
      DockerVersion: (config.docker_version as string | undefined) ?? "",
      Author: config.author ?? "",
      Config: config.config ?? {},
      Architecture: config.architecture,
      ...(config.variant ? { Variant: config.variant } : {}),
      Os: config.os,
      Size: layers.reduce((a, l) => a + l.uncompressed_size, 0),
      RootFS: { Type: "layers", Layers: config.rootfs.diff_ids },
      Descriptor: { mediaType: img.mediaType, digest: img.digest, size: img.size },
      Layers: layers.map((l) => ({ digest: l.digest, mediaType: l.media_type, size: l.size, diffID: l.diff_id, chainID: l.chain_id, uncompressedSize: l.uncompressed_size })),
      Metadata: { LastTagTime: this.lastTagTime(img.digest) },
    };
  }

  private lastTagTime(image: string): string {
    const r = this.meta.db.prepare("SELECT MAX(tagged_at) AS t FROM tags WHERE image = ?").get(image) as { t: number | null };
    return r.t ? new Date(r.t).toISOString() : "0001-01-01T00:00:00Z";
  }

  /** History, newest first, with each non-empty entry's layer size (as `docker history`). */
  async history(ref: string): Promise<{ id: string; created?: string; createdBy: string; size: number; comment: string; emptyLayer: boolean }[]> {
    const img = this.image(ref);
    const [config, layers] = await Promise.all([img.config(), img.layerRows()]);
    const history: HistoryEntry[] = config.history?.length ? config.history : layers.map(() => ({}));
    let li = 0;
    const rows = history.map((h) => {
      const layer = h.empty_layer ? undefined : layers[li++];
      return { id: "<missing>", created: h.created, createdBy: h.created_by ?? "", size: layer?.uncompressed_size ?? 0, comment: h.comment ?? "", emptyLayer: !!h.empty_layer };
    });
    rows.reverse();
    if (rows.length) rows[0].id = img.id;
    return rows;
  }

  // ---- tag, rmi ---------------------------------------------------------

  tag(source: string, target: string): void {
    const ref = parseReference(target);
    if (ref.digest) throw new StrataError("INVALID_REFERENCE", `refusing to create a tag with a digest reference: "${target}"`);
    const meta = this.meta;
    meta.write(() => {
      const img = this.resolve(source);
      meta.setTag(formatReference(ref), img.digest, Date.now(), this.indexOf(source)?.digest ?? null);
      meta.dropUntaggedIndexes();
      writeIndexView(this.root, meta);
    });
  }

  /** The index a tag name came from (a multi-platform image pulled with all its platforms), if any. */
  indexOf(ref: string): IndexRow | undefined {
    try {
      const p = parseReference(ref);
      return p.digest ? undefined : this.meta.tagIndex(formatReference(p));
    } catch {
      return undefined; // an image ID
    }
  }

  async rmi(refs: string[], opts: { force?: boolean } = {}): Promise<RmiResult> {
    const result: RmiResult = { untagged: [], deleted: [] };
    const meta = this.meta;
    for (const ref of refs) {
      meta.write(() => {
        const img = this.resolve(ref);
        const tags = meta.tagsOf(img.digest);
        let byName: string | undefined;
        try {
          const p = parseReference(ref);
          if (!p.digest && meta.tag(formatReference(p))?.image === img.digest) byName = formatReference(p);
        } catch {
          // an ID, not a name
        }
        if (byName && tags.length > 1) {
          meta.removeTag(byName);
          result.untagged.push(byName);
          result.deleted.push(...this.dropIndexes());
        } else {
          if (!byName && tags.length > 1 && !opts.force)
            throw new StrataError("CONFLICT", `unable to delete ${img.config_digest.slice(7, 19)} (must be forced) - image is referenced in multiple repositories`);
          const users = this.containers.usersOf(img.digest);
          if (users.length)
            throw new StrataError("CONFLICT", `unable to remove ${byName ? `repository reference "${ref}"` : img.config_digest.slice(7, 19)} - container ${users[0].slice(0, 12)} is using its referenced image ${img.config_digest.slice(7, 19)}`);
          const owner = meta.db
            .prepare("SELECT t.name FROM index_manifests m JOIN tags t ON t.index_digest = m.index_digest WHERE m.manifest = ? AND t.image != ?")
            .get(img.digest, img.digest) as { name: string } | undefined;
          if (owner) throw new StrataError("CONFLICT", `unable to remove ${img.config_digest.slice(7, 19)} - it is one platform of the multi-platform image ${owner.name}`);
          result.untagged.push(...tags);
          for (const t of tags) meta.removeTag(t);
          result.deleted.push(...this.dropIndexes([img.digest]));
        }
        writeIndexView(this.root, meta);
      });
    }
    if (result.deleted.length) await this.pruneSnapshots();
    return result;
  }

  /**
   * Forgets the indexes no tag names any more, then removes `images` and
   * those indexes' manifests that nothing else uses (no tag, no other
   * index, no container), with their blobs. Inside a write transaction;
   * returns the image IDs deleted.
   */
  private dropIndexes(images: Digest[] = []): Digest[] {
    const meta = this.meta;
    const dropped = meta.dropUntaggedIndexes();
    const candidates = [...new Set([...images, ...dropped.manifests])];
    const blobs: string[] = [...dropped.indexes];
    const deleted: Digest[] = [];
    for (const d of candidates) {
      const row = meta.image(d);
      if (!row || !meta.untracked(d) || this.containers.usersOf(d).length) continue;
      blobs.push(d, row.config_digest, ...meta.layersOf(d).map((l) => l.digest));
      meta.removeImage(d);
      deleted.push(row.config_digest);
    }
    this.deleteUnreferenced(blobs);
    return deleted;
  }

  /** Removes committed layer snapshots that no image lists and nothing is stacked on. */
  async pruneSnapshots(): Promise<string[]> {
    if (!this.meta.getMeta("storage_driver")) return [];
    const sn = this.snapshots;
    const removed = [...(await sn.cleanup())];
    for (;;) {
      const rows = this.meta.db
        .prepare(
          `SELECT key FROM snapshots s WHERE kind = 'committed'
             AND NOT EXISTS (SELECT 1 FROM image_layers il WHERE il.chain_id = s.key)
             AND NOT EXISTS (SELECT 1 FROM snapshots c WHERE c.parent = s.key)`,
        )
        .all() as { key: string }[];
      if (rows.length === 0) return removed;
      for (const r of rows) {
        await sn.remove(r.key).catch(() => {});
        removed.push(r.key);
      }
    }
  }

  /** Deletes the given blobs that no image and no live writer references. Inside a write transaction. */
  private deleteUnreferenced(candidates: Iterable<string>): { digest: string; size: number }[] {
    const meta = this.meta;
    for (const owner of meta.leaseOwners()) if (!ownerAlive(owner)) meta.dropLeases(owner);
    const live = meta.referencedDigests();
    const removed: { digest: string; size: number }[] = [];
    for (const d of new Set(candidates)) {
      if (live.has(d) || !isDigest(d)) continue;
      const path = this.content.blobPath(d);
      let size = 0;
      try {
        size = statSync(path).size;
      } catch {
        continue;
      }
      rmSync(path, { force: true });
      removed.push({ digest: d, size });
    }
    return removed;
  }

  // ---- writing images ---------------------------------------------------

  /**
   * Makes prepared images visible: lease their blobs, move them from
   * ingest/ into blobs/, then insert every image, layer and tag in one
   * transaction (so no image is ever half-visible) and rewrite index.json.
   */
  async commitImages(images: PreparedImage[], blobs: Map<Digest, PendingBlob | Buffer>): Promise<void> {
    const meta = this.meta;
    const owner = ownerToken();
    const all = new Set<Digest>(blobs.keys());
    for (const img of images) all.add(img.manifest.digest);
    meta.write(() => meta.addLeases(owner, all));
    try {
      for (const img of images) if (img.manifest.generated) blobs.set(img.manifest.digest, img.manifest.raw);
      for (const [digest, src] of blobs) {
        if (Buffer.isBuffer(src)) await this.content.put(src);
        else await src.commit(digest);
      }
      await this.content.syncBlobDir();
      meta.write(() => {
        for (const d of all)
          if (!existsSync(this.content.blobPath(d))) throw new StrataError("CORRUPT", `blob ${d} vanished before its image was recorded`);
        for (const img of images) {
          const cfg = img.config.parsed;
          meta.putImage({
            image: {
              digest: img.manifest.digest,
              media_type: img.manifest.mediaType,
              size: img.manifest.size,
              config_digest: img.config.digest,
              config_media_type: img.config.mediaType,
              config_size: img.config.size,
              created: cfg.created ?? null,
              os: cfg.os,
              architecture: cfg.architecture,
              variant: cfg.variant ?? null,
            },
            layers: img.layers.map((l) => ({ digest: l.digest, media_type: l.mediaType, size: l.size, diff_id: l.diffId, uncompressed_size: l.uncompressedSize, chain_id: l.chainId })),
            tags: img.tags,
          });
        }
        meta.dropUntaggedIndexes(); // a tag moved off a multi-platform image: its other platforms are left dangling, as any old image
        writeIndexView(this.root, meta);
        meta.dropLeases(owner);
      });
    } catch (e) {
      meta.write(() => meta.dropLeases(owner));
      throw e;
    }
  }

  /**
   * Records a multi-platform image: its index, kept byte for byte, over
   * manifests already in the store (`manifests`, in the index's order), and
   * `tags` naming `image` (the platform chosen to run) through it. An index
   * lives as long as a tag names it.
   */
  async commitIndex(index: { digest: Digest; mediaType: string; raw: Buffer }, manifests: Digest[], image: Digest, tags: string[]): Promise<void> {
    const meta = this.meta;
    const owner = ownerToken();
    meta.write(() => meta.addLeases(owner, [index.digest]));
    try {
      const put = await this.content.put(index.raw);
      if (put.digest !== index.digest) throw new StrataError("DIGEST_MISMATCH", `index: expected ${index.digest}, got ${put.digest}`);
      meta.write(() => {
        const now = Date.now();
        meta.putIndex({ digest: index.digest, media_type: index.mediaType, size: index.raw.length }, manifests, now);
        for (const t of tags) meta.setTag(t, image, now, index.digest);
        meta.dropUntaggedIndexes();
        writeIndexView(this.root, meta);
        meta.dropLeases(owner);
      });
    } catch (e) {
      meta.write(() => meta.dropLeases(owner));
      throw e;
    }
  }

  /** `strata load`: a docker-archive or OCI archive (plain or gzip) from a file or stream. */
  async load(input: string | Readable, opts: { unpack?: boolean } = {}): Promise<PreparedImage[]> {
    void this.meta; // open (or create) the store before reading any input
    const src = typeof input === "string" ? await openInput(input) : input;
    const { readArchive } = await import("../layout/load.js");
    const prepared = await readArchive(this.content, src);
    try {
      await this.commitImages(prepared.images, new Map(prepared.blobs));
    } finally {
      await prepared.cleanup();
    }
    if (opts.unpack !== false) for (const img of prepared.images) await this.unpack(img.manifest.digest);
    return prepared.images;
  }

  /** `strata pull`: an image from a registry (see pull.ts). */
  async pull(ref: string, opts: import("./pull.js").PullOptions = {}): Promise<import("./pull.js").PullResult> {
    return (await import("./pull.js")).pull(this, ref, opts);
  }

  /** `strata push`: an image from the store to a registry (see push.ts). */
  async push(ref: string, dest?: string, opts: import("./push.js").PushOptions = {}): Promise<import("./push.js").PushResult> {
    const { push, pushIndex, storeIndexSource } = await import("./push.js");
    const index = await storeIndexSource(this, ref);
    return index ? pushIndex(index, parseReference(dest ?? ref), opts) : push(this, ref, dest, opts);
  }

  /** `strata copy`: an image between registries, archives, OCI layouts and the store, without unpacking (see copy.ts). */
  async copy(from: string, to: string, opts: import("./copy.js").CopyOptions = {}): Promise<import("./copy.js").CopyResult> {
    return (await import("./copy.js")).copy(this, from, to, opts);
  }

  /** `strata save`: images (by reference) into one archive. */
  async save(refs: string[], out: Writable, format: ArchiveFormat = "docker-archive"): Promise<void> {
    const items = refs.map((ref) => {
      const img = this.image(ref);
      let names: string[];
      try {
        const p = parseReference(ref);
        names = p.digest ? [] : this.meta.tag(formatReference(p)) ? [formatReference(p)] : this.meta.tagsOf(img.digest);
      } catch {
        names = this.meta.tagsOf(img.digest);
      }
      return { image: img, names };
    });
    const { writeArchive } = await import("../layout/save.js");
    await writeArchive(items, format, out);
  }

  /** `strata import`: a one-layer image from a root filesystem (directory, tar, tar.gz, tar.zst or "-"). */
  async importRootfs(source: string | Readable, ref?: string, opts: { message?: string; changes?: string[]; platform?: { os: string; architecture: string; variant?: string }; unpack?: boolean } = {}): Promise<PreparedImage> {
    const target = ref ? formatReference(parseReference(ref)) : undefined;
    void this.meta; // open (or create) the store before reading any input
    const { detectCompression, isTarHeader, peek, sourceDateEpoch } = await import("../archive/compression.js");
    let raw: Readable;
    let label = "-";
    if (typeof source === "string") {
      label = source;
      const st = source === "-" ? undefined : await fs.stat(source).catch((e) => {
        throw new StrataError("NOT_FOUND", `import ${source}: ${(e as Error).message}`);
      });
      raw = st?.isDirectory() ? (await import("../archive/tar.js")).packDirectory(source) : source === "-" ? process.stdin : createReadStream(source);
    } else raw = source;
    const { head, stream } = await peek(raw, 512);
    const compression = detectCompression(head);
    if (compression === "none" && !isTarHeader(head.subarray(0, 512)))
      throw new StrataError("INVALID_ARCHIVE", `import ${label}: not a tar archive`);
    const layer = await this.ingestLayer(stream, compression);
    try {
      const epoch = sourceDateEpoch();
      const created = (epoch !== undefined ? new Date(epoch * 1000) : new Date()).toISOString();
      const runConfig: NonNullable<ImageConfig["config"]> = {};
      if (opts.changes?.length) {
        const { applyChange } = await import("./changes.js");
        for (const c of opts.changes) applyChange(runConfig, c);
      }
      const platform = opts.platform ?? hostPlatform();
      const config: ImageConfig = {
        created,
        architecture: platform.architecture,
        ...(platform.variant ? { variant: platform.variant } : {}),
        os: platform.os,
        config: runConfig,
        rootfs: { type: "layers", diff_ids: [layer.diffId] },
        history: [{ created, created_by: "strata import", comment: opts.message ?? `imported from ${label}` }],
      };
      const prepared = await this.storeImage(config, [], layer, "oci", target);
      if (opts.unpack !== false) await this.unpack(prepared.manifest.digest);
      return prepared;
    } finally {
      await layer.pending.abort();
    }
  }

  /**
   * A layer tar (plain, gzip or zstd) into ingest/, stored as it comes; the
   * caller commits or aborts its PendingBlob. A plain tar is its own diffID
   * (layers made here: import, commit, build, kept uncompressed as podman and
   * Docker keep theirs; push compresses them); a compressed one is
   * decompressed once for its diffID.
   */
  async ingestLayer(stream: Readable, compression: "gzip" | "zstd" | "none"): Promise<NewLayer> {
    const pending = await this.content.begin();
    try {
      for await (const chunk of stream) await pending.write(chunk as Buffer);
      const blob = await pending.finish();
      if (compression === "none") return { pending, digest: blob.digest, size: blob.size, diffId: blob.digest, uncompressedSize: blob.size, mediaType: MediaType.OciLayer };
      const [{ decompress }, { DigestStream }] = await Promise.all([import("../archive/compression.js"), import("../digest/stream.js")]);
      const h = new DigestStream();
      for await (const _ of (await decompress(createReadStream(pending.path))).pipe(h)) void _;
      const mediaType = compression === "zstd" ? MediaType.OciLayerZstd : MediaType.OciLayerGzip;
      return { pending, digest: blob.digest, size: blob.size, diffId: h.digest(), uncompressedSize: h.bytes, mediaType };
    } catch (e) {
      await pending.abort();
      throw e;
    }
  }

  /** A plain layer tar gzip-compressed into ingest/ (for push), hashing the tar (diffID) and the gzip (digest) in one pass. */
  async ingestGzipped(stream: Readable): Promise<NewLayer> {
    const { DigestStream } = await import("../digest/stream.js");
    const pending = await this.content.begin();
    try {
      const plainHash = new DigestStream();
      const gz = (await import("node:zlib")).createGzip();
      stream.on("error", (e) => gz.destroy(e));
      plainHash.on("error", (e) => gz.destroy(e));
      stream.pipe(plainHash).pipe(gz);
      for await (const chunk of gz) await pending.write(chunk as Buffer);
      const blob = await pending.finish();
      return { pending, digest: blob.digest, size: blob.size, diffId: plainHash.digest(), uncompressedSize: plainHash.bytes, mediaType: MediaType.OciLayerGzip };
    } catch (e) {
      await pending.abort();
      throw e;
    }
  }

  /**
   * Records an image made here: `config` already lists every diffID; the
   * manifest lists `base` layers then `layer`, in the OCI or Docker schema2
   * family (commit keeps its base image's family, as Docker does).
   */
  async storeImage(config: ImageConfig, base: ImageLayerRow[], layer: NewLayer | undefined, family: "oci" | "docker", tag?: string): Promise<PreparedImage> {
    const configRaw = Buffer.from(JSON.stringify(config));
    const docker = family === "docker";
    // Docker schema2 documents gzip layers only: a plain tar is listed with the gzip type there, as load and c/image list one (push compresses it).
    const layerType = (mt: string) => (docker && (mt === MediaType.OciLayerGzip || mt === MediaType.OciLayer) ? MediaType.DockerLayerGzip : mt);
    const layers = [...base.map((l) => ({ digest: l.digest, mediaType: l.media_type, size: l.size, diffId: l.diff_id, uncompressedSize: l.uncompressed_size })), ...(layer ? [{ ...layer, mediaType: layerType(layer.mediaType) }] : [])];
    const configDesc = { mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig, digest: sha256(configRaw), size: configRaw.length };
    const manifestRaw = Buffer.from(
      JSON.stringify(
        docker
          ? { schemaVersion: 2, mediaType: MediaType.DockerManifest, config: { mediaType: configDesc.mediaType, size: configDesc.size, digest: configDesc.digest }, layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })) }
          : { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })) },
      ),
    );
    const chains = chainIds(layers.map((l) => l.diffId));
    const mediaType = docker ? MediaType.DockerManifest : MediaType.OciManifest;
    const prepared: PreparedImage = {
      manifest: { digest: sha256(manifestRaw), mediaType, size: manifestRaw.length, raw: manifestRaw, generated: true },
      config: { ...configDesc, parsed: config },
      layers: layers.map((l, i) => ({ ...l, chainId: chains[i] })),
      tags: tag ? [tag] : [],
    };
    const blobs = new Map<Digest, PendingBlob | Buffer>([[prepared.config.digest, configRaw]]);
    if (layer) blobs.set(layer.digest, layer.pending);
    await this.commitImages([prepared], blobs);
    return prepared;
  }

  /**
   * `strata commit`: the container's changes become one new layer on top of
   * its image's layers (whiteouts for deletions, opaque markers for replaced
   * directories), with a history entry; `changes` are Dockerfile-style config edits.
   */
  async commitContainer(ref: string, target?: string, opts: { message?: string; author?: string; changes?: string[] } = {}): Promise<PreparedImage> {
    const tag = target ? formatReference(parseReference(target)) : undefined;
    const c = this.containers.get(ref);
    const img = this.image(c.image);
    const [base, rows] = await Promise.all([img.config(), img.layerRows()]);
    // The new layer's snapshot is applied, over the image's unpacked layers, from the tar as it is
    // written: not unpacked again afterwards from the stored blob (read, gunzip, hash twice).
    const parent = await this.unpack(img);
    const sn = this.snapshots;
    const key = `commit-${randomBytes(6).toString("hex")}`;
    await sn.prepare(key, parent);
    let keep = false;
    try {
      const layer = await this.writeAndApply(await this.containers.changesetTar(c), await sn.applyTarget(key));
      try {
        const { sourceDateEpoch } = await import("../archive/compression.js");
        const epoch = sourceDateEpoch();
        const created = (epoch !== undefined ? new Date(epoch * 1000) : new Date()).toISOString();
        const config: ImageConfig = structuredClone(base);
        config.created = created;
        if (opts.author !== undefined) config.author = opts.author;
        config.config = { ...(config.config ?? {}) };
        if (opts.changes?.length) {
          const { applyChange } = await import("./changes.js");
          for (const ch of opts.changes) applyChange(config.config, ch);
        }
        config.rootfs = { type: "layers", diff_ids: [...base.rootfs.diff_ids, layer.diffId] };
        const cmd = [...(c.config.Entrypoint ?? []), ...(c.config.Cmd ?? [])].join(" ");
        config.history = [...(base.history ?? []), { created, created_by: cmd, ...(opts.author ? { author: opts.author } : {}), ...(opts.message ? { comment: opts.message } : {}) }];
        const family = img.mediaType === MediaType.DockerManifest ? "docker" : "oci";
        const prepared = await this.storeImage(config, rows, layer, family, tag);
        const chain = prepared.layers[prepared.layers.length - 1].chainId;
        try {
          await sn.commit(chain, key);
          keep = true;
        } catch (e) {
          // The same layer unpacked already (another process, or an identical commit): that one serves.
          if (!isStrataError(e, "ALREADY_EXISTS")) throw e;
        }
        return prepared;
      } finally {
        await layer.pending.abort();
      }
    } finally {
      if (!keep) await sn.remove(key).catch(() => {});
    }
  }

  /**
   * Stores an uncompressed layer tar (as ingestLayer) while applyLayer
   * applies the same bytes into `target`; resolves once both are done.
   */
  private async writeAndApply(tar: Readable, target: { dir: string; whiteouts: "overlay" | "apply" }): Promise<NewLayer> {
    const [{ applyLayer }, { PassThrough, Transform }] = await Promise.all([import("../archive/extract.js"), import("node:stream")]);
    const toApply = new PassThrough();
    // A tar writer emits a header, a body and padding per entry: gathered into
    // large chunks, the ingest and the applier each see a few hundred chunks
    // instead of tens of thousands.
    let batch: Buffer[] = [];
    let batched = 0;
    const send = (push: (b: Buffer) => void, cb: (e?: Error | null) => void) => {
      const chunk = batch.length === 1 ? batch[0] : Buffer.concat(batch, batched);
      batch = [];
      batched = 0;
      push(chunk);
      if (toApply.write(chunk)) cb();
      else toApply.once("drain", () => cb());
    };
    const tee = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        batch.push(chunk);
        batched += chunk.length;
        if (batched < TEE_BATCH) cb();
        else send((b) => this.push(b), cb);
      },
      flush(cb) {
        const end = () => {
          toApply.end();
          cb();
        };
        if (batched > 0) send((b) => this.push(b), end);
        else end();
      },
    });
    tar.on("error", (e) => tee.destroy(e));
    tar.pipe(tee);
    const applied = applyLayer(toApply, target.dir, { whiteouts: target.whiteouts });
    // Whichever side fails first stops the other.
    applied.catch((e) => tee.destroy(e));
    let layer: NewLayer | undefined;
    try {
      layer = await this.ingestLayer(tee, "none");
      await applied;
      return layer;
    } catch (e) {
      tar.destroy();
      toApply.destroy();
      await applied.catch(() => {});
      await layer?.pending.abort();
      throw e;
    }
  }

  // ---- space, gc, check -------------------------------------------------

  async diskUsage(): Promise<DiskUsage> {
    const meta = this.meta;
    const { rows, pairs, tags } = meta.read(() => ({ rows: meta.images(), pairs: meta.allImageLayers(), tags: meta.tags() }));
    const users = new Map<string, Set<string>>();
    const layerSize = new Map<string, number>();
    for (const p of pairs) {
      users.set(p.layer, (users.get(p.layer) ?? new Set()).add(p.image));
      layerSize.set(p.layer, p.size);
    }
    // Configs and manifests can be shared too (same config, two manifests); count every blob once.
    const blobUsers = new Map<string, { size: number; images: Set<string> }>();
    const add = (d: string, size: number, image: string) => {
      const e = blobUsers.get(d) ?? { size, images: new Set<string>() };
      e.images.add(image);
      blobUsers.set(d, e);
    };
    for (const r of rows) {
      add(r.digest, r.size, r.digest);
      add(r.config_digest, r.config_size, r.digest);
    }
    for (const p of pairs) add(p.layer, p.size, p.image);
    const images: DfImage[] = rows.map((r) => {
      let shared = 0;
      let unique = 0;
      for (const [, b] of blobUsers) {
        if (!b.images.has(r.digest)) continue;
        if (b.images.size > 1) shared += b.size;
        else unique += b.size;
      }
      return { id: r.config_digest, digest: r.digest, names: tags.filter((t) => t.image === r.digest).map((t) => t.name), created: r.created ?? undefined, size: shared + unique, sharedSize: shared, uniqueSize: unique };
    });
    const layers: DfLayer[] = [...users].map(([digest, imgs]) => ({ digest: digest as Digest, diffId: meta.layer(digest)!.diff_id, size: layerSize.get(digest)!, images: imgs.size }));
    let totalBytes = 0;
    for (const [, b] of blobUsers) totalBytes += b.size;
    let unreferencedBytes = 0;
    for (const b of await this.content.list()) if (!blobUsers.has(b.digest)) unreferencedBytes += b.size;
    const snapshots = { count: 0, bytes: 0 };
    const containers: DiskUsage["containers"] = [];
    if (meta.getMeta("storage_driver")) {
      const sn = this.snapshots;
      const byKey = new Map(this.containers.list().map((c) => [c.snapshot, c]));
      const infos: { key: string; kind: string }[] = [];
      await sn.walk((i) => {
        infos.push(i);
      });
      for (const i of infos) {
        const u = await sn.usage(i.key);
        const c = byKey.get(i.key);
        if (c) containers.push({ id: c.id, name: c.name, image: c.imageRef, bytes: u.bytes, inodes: u.inodes });
        // A container's init layer holds only empty mount points (like Docker's, it is not counted).
        else if (i.key.startsWith("init-")) continue;
        else if (i.kind === "committed") {
          snapshots.count++;
          snapshots.bytes += u.bytes;
        }
      }
    }
    return { images, layers, totalBytes, unreferencedBytes, snapshots, containers };
  }

  /** Removes blobs no image references (and no live writer holds), and stale ingests. */
  async gc(): Promise<{ blobs: { digest: string; size: number }[]; ingests: { files: number; bytes: number }; snapshots: string[] }> {
    const meta = this.meta;
    const onDisk = (await this.content.list()).map((b) => b.digest);
    const blobs = meta.write(() => this.deleteUnreferenced(onDisk));
    const ingests = await this.content.cleanIngests();
    const snapshots = await this.pruneSnapshots();
    return { blobs, ingests, snapshots };
  }

  /** Verifies every blob's digest and every reference; repairs the index.json view if it lags. */
  async check(): Promise<CheckReport> {
    const meta = this.meta;
    const problems: string[] = [];
    const repaired: string[] = [];
    const integrity = meta.db.pragma("integrity_check", { simple: true });
    if (integrity !== "ok") problems.push(`meta.db: integrity check: ${String(integrity)}`);
    const blobs = await this.content.list();
    const verify = async (d: Digest, size: number) => {
      try {
        const s = await this.content.open(d, size);
        for await (const _ of s) void _;
      } catch (e) {
        problems.push(`blob ${d}: ${(e as Error).message}`);
      }
    };
    for (let i = 0; i < blobs.length; i += 4) await Promise.all(blobs.slice(i, i + 4).map((b) => verify(b.digest, b.size)));
    const { rows, layerRows } = meta.read(() => {
      const rows = meta.images();
      return { rows, layerRows: new Map(rows.map((r) => [r.digest, meta.layersOf(r.digest)])) };
    });
    const present = new Set(blobs.map((b) => b.digest));
    for (const r of rows) problems.push(...(await this.checkImage(r, layerRows.get(r.digest)!, present)));
    const { indexes, members, strays } = meta.read(() => {
      const indexes = meta.indexes();
      const members = new Map(indexes.map((x) => [x.digest, meta.indexManifests(x.digest)]));
      const strays = meta.db
        .prepare("SELECT name FROM tags t WHERE index_digest IS NOT NULL AND NOT EXISTS (SELECT 1 FROM index_manifests m WHERE m.index_digest = t.index_digest AND m.manifest = t.image)")
        .all() as { name: string }[];
      return { indexes, members, strays };
    });
    for (const x of indexes) problems.push(...(await this.checkIndex(x, members.get(x.digest)!, present)));
    for (const t of strays) problems.push(`tag ${t.name}: its image is not one of its index's manifests`);
    const probes = cleanProbes(this.root);
    if (probes.length) repaired.push(`removed ${probes.length} overlay probe(s) a dead process left mounted: ${probes.join(", ")}`);
    if (meta.getMeta("storage_driver")) {
      const removed = await this.snapshots.cleanup();
      if (removed.length) repaired.push(`removed ${removed.length} snapshot(s) a dead process left half-made: ${removed.join(", ")}`);
      await this.snapshots.walk((info) => {
        if (!existsSync(info.dir)) problems.push(`snapshot ${info.key}: directory ${info.dir} is missing`);
      });
      for (const c of this.containers.list())
        if (!meta.db.prepare("SELECT 1 FROM snapshots WHERE key = ?").get(c.snapshot)) problems.push(`container ${c.id.slice(0, 12)}: its snapshot is missing`);
    }
    const view = renderIndex(meta);
    const onDisk = await fs.readFile(join(this.root, "index.json"), "utf8").catch(() => "");
    if (onDisk !== view) {
      meta.write(() => writeIndexView(this.root, meta));
      repaired.push("index.json rewritten from meta.db");
    }
    return { blobs: blobs.length, images: rows.length, problems, repaired };
  }

  private async checkImage(r: ImageRow, layers: ImageLayerRow[], present: Set<string>): Promise<string[]> {
    const what = `image ${r.digest}`;
    for (const d of [r.digest, r.config_digest, ...layers.map((l) => l.digest)]) if (!present.has(d)) return [`${what}: blob ${d} is missing`];
    try {
      const manifest = parseManifest(await this.content.read(r.digest, MAX_MANIFEST_BYTES, r.size), what, r.media_type);
      if (manifest.config.digest !== r.config_digest) return [`${what}: manifest config ${manifest.config.digest} differs from meta.db`];
      if (manifest.layers.map((l) => l.digest).join() !== layers.map((l) => l.digest).join()) return [`${what}: manifest layers differ from meta.db`];
      const config = parseConfig(await this.content.read(r.config_digest, MAX_MANIFEST_BYTES, r.config_size), `config ${r.config_digest}`);
      if (config.rootfs.diff_ids.join() !== layers.map((l) => l.diff_id).join()) return [`${what}: config diff_ids differ from the recorded layers`];
      const chains = chainIds(config.rootfs.diff_ids);
      if (chains.join() !== layers.map((l) => l.chain_id).join()) return [`${what}: recorded chainIDs are wrong`];
    } catch (e) {
      return [`${what}: ${(e as Error).message}`];
    }
    return [];
  }

  private async checkIndex(x: IndexRow, manifests: Digest[], present: Set<string>): Promise<string[]> {
    const what = `index ${x.digest}`;
    if (!present.has(x.digest)) return [`${what}: blob ${x.digest} is missing`];
    try {
      const index = parseIndex(await this.content.read(x.digest, MAX_MANIFEST_BYTES, x.size), what);
      if (index.manifests.map((m) => m.digest).join() !== manifests.join()) return [`${what}: its manifests differ from meta.db`];
    } catch (e) {
      return [`${what}: ${(e as Error).message}`];
    }
    return [];
  }

  /** A read-only view of an image's merged filesystem, read from its layer blobs without unpacking them. */
  union(ref: string): UnionView {
    const img = this.resolve(ref);
    return new UnionView(this.meta.layersOf(img.digest).map((r) => storeLayer(this.content, r)));
  }
}

async function openInput(path: string): Promise<Readable> {
  if (path === "-") return process.stdin;
  try {
    const fh = await fs.open(path, "r");
    return fh.createReadStream({ highWaterMark: 1 << 20 });
  } catch (e) {
    throw new StrataError("NOT_FOUND", `open ${path}: ${(e as Error).message}`, { cause: e });
  }
}

