import { StrataError } from "../errors/index.js";
import { sha256, type Digest } from "../digest/index.js";
import { MAX_MANIFEST_BYTES, MediaType, parseManifest, type Descriptor, type Manifest } from "../oci/index.js";
import { formatReference, parseReference, repositoryName, type Reference } from "../reference/index.js";
import { RegistryClient, Repository, type RegistryOptions } from "../registry/client/registry.js";
import type { ProgressEvent } from "./pull.js";
import type { Engine } from "./index.js";

/**
 * An image to copy, wherever it lives: the manifest's bytes (copied as they
 * are, so the digest stays the same) and an opener per blob.
 */
export interface SourceImage {
  digest: Digest;
  mediaType: string;
  rawManifest: Buffer;
  manifest: Manifest;
  /**
   * the blob's bytes from `offset`, verified against its digest as they are
   * read; a chunk may be overwritten once the next is asked for (copy what you keep)
   */
  open(d: Descriptor, offset: number): Promise<AsyncIterable<Buffer>>;
  /** repositories (domain/path) of a registry where these blobs are known to live, for cross-repository mounts */
  mountCandidates?(d: Descriptor): string[];
  /** a layer whose blob is a plain tar, gzip-compressed: the new blob's descriptor (open() reads it); undefined for a compressed one */
  gzipped?(d: Descriptor): Promise<Descriptor | undefined>;
}

export interface PushOptions extends RegistryOptions {
  /** blob uploads at once (default 5, as Docker's max-concurrent-uploads: the config goes with four layers) */
  concurrency?: number;
  /** PATCH chunk size for blobs larger than `monolithicMax` */
  chunkSize?: number;
  /** blobs up to this size go in one PUT (default 32 MiB) */
  monolithicMax?: number;
  onProgress?: (e: ProgressEvent) => void;
}

export interface PushResult {
  reference: string;
  digest: Digest;
  size: number;
}

const short = (d: string) => d.slice(d.indexOf(":") + 1, d.indexOf(":") + 13);

/** A store image as a copy source; blobs it shares with images tagged in other repositories of `domain` can be mounted from there. */
export async function storeSource(engine: Engine, ref: string): Promise<SourceImage> {
  const img = engine.image(ref);
  const raw = await img.rawManifest();
  const manifest = parseManifest(raw, `manifest ${img.digest}`, img.mediaType);
  return {
    digest: img.digest,
    mediaType: img.mediaType,
    rawManifest: raw,
    manifest,
    open: async (d, offset) => engine.content.chunks(d.digest, d.size, offset),
    mountCandidates: (d) => {
      const rows = engine.meta.db
        .prepare("SELECT DISTINCT t.name FROM tags t JOIN image_layers il ON il.image = t.image WHERE il.layer = ? OR t.image IN (SELECT digest FROM images WHERE config_digest = ?)")
        .all(d.digest, d.digest) as { name: string }[];
      return [...new Set(rows.map((r) => repositoryName(parseReference(r.name))))];
    },
    // A layer is plain when its blob is its own diffID: made here (import, commit, build) or a docker-archive's tar (listed, as c/image lists it, with the gzip type).
    gzipped: async (d) => {
      if (engine.meta.layer(d.digest)?.diff_id !== d.digest) return undefined;
      const layer = await engine.ingestGzipped(await engine.content.open(d.digest, d.size));
      await layer.pending.commit(layer.digest);
      return { mediaType: img.mediaType === MediaType.DockerManifest ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip, digest: layer.digest, size: layer.size };
    },
  };
}

/** `strata push IMAGE [DEST]`: the store's image to a registry, under DEST (default: its own name). */
export async function push(engine: Engine, ref: string, dest: string | undefined, opts: PushOptions = {}): Promise<PushResult> {
  const target = parseReference(dest ?? ref);
  const source = await storeSource(engine, ref);
  return pushImage(source, target, opts);
}

/**
 * Pushes `source` to `target`: each blob is skipped when the registry has
 * it (HEAD), mounted from another repository of the same registry when one
 * is known to hold it, else uploaded (monolithic when small, chunked when
 * large), `concurrency` at a time; the manifest goes last, when every blob
 * it names is there.
 */
export async function pushImage(source: SourceImage, target: Reference, opts: PushOptions = {}): Promise<PushResult> {
  source = await withGzippedLayers(source);
  const progress = opts.onProgress ?? (() => {});
  const client = new RegistryClient(target.domain, {
    ...opts,
    onRetry: (what, n, ms, why) => {
      progress({ id: "", status: `Retrying in ${(ms / 1000).toFixed(1)} s (${why}): ${what}` });
      opts.onRetry?.(what, n, ms, why);
    },
  });
  const repo = new Repository(client, target.path);
  const blobs: Descriptor[] = [];
  const seen = new Set<string>();
  for (const d of [...source.manifest.layers, source.manifest.config]) if (!seen.has(d.digest) && seen.add(d.digest)) blobs.push(d);
  for (const d of source.manifest.layers) progress({ id: short(d.digest), status: "Preparing" });

  const one = async (d: Descriptor) => {
    const id = short(d.digest);
    const isLayer = d.digest !== source.manifest.config.digest;
    if ((await repo.hasBlob(d.digest)) !== undefined) {
      if (isLayer) progress({ id, status: "Layer already exists" });
      return;
    }
    for (const from of source.mountCandidates?.(d) ?? []) {
      const slash = from.indexOf("/");
      if (from.slice(0, slash) !== target.domain || from.slice(slash + 1) === target.path) continue;
      if (await repo.mount(d.digest, from.slice(slash + 1))) {
        if (isLayer) progress({ id, status: `Mounted from ${from.slice(slash + 1)}` });
        return;
      }
    }
    let sent = 0;
    let shown = 0;
    await repo.upload(d, (offset) => source.open(d, offset), {
      chunkSize: opts.chunkSize,
      monolithicMax: opts.monolithicMax,
      onBytes: (n) => {
        sent += n;
        if (isLayer && (sent - shown >= 512 * 1024 || sent === d.size)) {
          shown = sent;
          progress({ id, status: "Pushing", current: Math.min(sent, d.size), total: d.size });
        }
      },
    });
    if (isLayer) progress({ id, status: "Pushed" });
  };

  const queue = [...blobs];
  let failure: unknown;
  const worker = async () => {
    for (let d = queue.shift(); d && failure === undefined; d = queue.shift()) {
      try {
        await one(d);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 5) }, worker));
  if (failure !== undefined) throw failure;
  const reference = target.tag ?? target.digest!;
  if (target.digest && target.digest !== source.digest)
    throw new StrataError("DIGEST_MISMATCH", `push to ${formatReference(target)}: the image's manifest digest is ${source.digest}`);
  const digest = await repo.putManifest(reference, source.rawManifest, source.mediaType);
  return { reference: formatReference(target), digest, size: source.rawManifest.length };
}

/** A multi-platform image to copy: its index, byte for byte, and each platform's image in the index's order. */
export interface SourceIndex {
  digest: Digest;
  mediaType: string;
  rawIndex: Buffer;
  images: SourceImage[];
}

/** The store's multi-platform image under a tag (pulled with --all-platforms), or undefined when the tag names one image. */
export async function storeIndexSource(engine: Engine, ref: string): Promise<SourceIndex | undefined> {
  const index = engine.indexOf(ref);
  if (!index) return undefined;
  const rawIndex = engine.content.read(index.digest, MAX_MANIFEST_BYTES, index.size);
  const images = await Promise.all(engine.meta.indexManifests(index.digest).map((d) => storeSource(engine, d)));
  return { digest: index.digest, mediaType: index.media_type, rawIndex, images };
}

/**
 * Pushes a multi-platform image: each platform's image by digest (its blobs,
 * then its manifest), then the index, as it is, under `target`; so the
 * registry serves the same index digest.
 */
export async function pushIndex(source: SourceIndex, target: Reference, opts: PushOptions = {}): Promise<PushResult> {
  if (target.digest && target.digest !== source.digest)
    throw new StrataError("DIGEST_MISMATCH", `push to ${formatReference(target)}: the image's index digest is ${source.digest}`);
  for (const image of source.images) await pushImage(image, { ...target, tag: undefined, digest: image.digest }, opts);
  const repo = new Repository(new RegistryClient(target.domain, opts), target.path);
  const digest = await repo.putManifest(target.tag ?? target.digest!, source.rawIndex, source.mediaType);
  return { reference: formatReference(target), digest, size: source.rawIndex.length };
}

/**
 * Plain tar layers go to a registry gzip-compressed, as Docker and podman
 * push them: the source then carries a manifest naming the compressed
 * blobs (so a new digest), and the rest of it unchanged.
 */
async function withGzippedLayers(source: SourceImage): Promise<SourceImage> {
  if (!source.gzipped) return source;
  const layers = await Promise.all(source.manifest.layers.map(async (d) => (await source.gzipped!(d)) ?? d));
  if (layers.every((l, i) => l === source.manifest.layers[i])) return source;
  const doc = JSON.parse(source.rawManifest.toString("utf8")) as { layers: Record<string, unknown>[] };
  doc.layers = doc.layers.map((l, i) => ({ ...l, mediaType: layers[i].mediaType, digest: layers[i].digest, size: layers[i].size }));
  const rawManifest = Buffer.from(JSON.stringify(doc));
  const digest = sha256(rawManifest);
  return { ...source, digest, rawManifest, manifest: parseManifest(rawManifest, `manifest ${digest}`, source.mediaType) };
}
