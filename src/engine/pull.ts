import { PassThrough, Transform, type Readable, type TransformCallback } from "node:stream";
import { randomBytes } from "node:crypto";
import { StrataError, isStrataError, wrap } from "../errors/index.js";
import { chainIds, sha256, type Digest } from "../digest/index.js";
import { DigestStream } from "../digest/stream.js";
import { ownerToken } from "../content/proc.js";
import {
  MAX_MANIFEST_BYTES, MediaType, hostPlatform, isIndexMediaType, parseConfig, parseIndex, parseManifest, platformMatches, platformString,
  type Descriptor, type Index, type Manifest, type Platform,
} from "../oci/index.js";
import { formatReference, parseReference } from "../reference/index.js";
import type { PreparedImage, PreparedLayer } from "../layout/load.js";
import { RegistryClient, Repository, type RegistryOptions } from "../registry/client/registry.js";
import { isNetworkError } from "../registry/client/http.js";
import type { Engine } from "./index.js";

/** One line of `docker pull`/`push`-style progress: a layer's status ("Downloading", "Pull complete", …) and byte counts. */
export interface ProgressEvent {
  /** the layer's short id (12 hex digits), or "" for the image as a whole */
  id: string;
  status: string;
  current?: number;
  total?: number;
}

export interface PullOptions extends RegistryOptions {
  /** `os/arch[/variant]`; default the host's */
  platform?: string;
  /** of an index, store every platform's image and the index itself (only `platform`'s is tagged and unpacked) */
  allPlatforms?: boolean;
  /** unpack layers into snapshots (default true) */
  unpack?: boolean;
  /** layer downloads at once (default 3, as Docker) */
  concurrency?: number;
  onProgress?: (e: ProgressEvent) => void;
}

export interface PullResult {
  reference: string;
  /** the manifest digest the registry served for the reference (an index's, when it was one) */
  digest: Digest;
  image: PreparedImage;
  /** the image was already in the store: nothing downloaded */
  upToDate: boolean;
}

export function parsePlatform(s: string): Platform {
  const parts = s.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === ""))
    throw new StrataError("INVALID_ARGUMENT", `invalid platform "${s}": want os/arch[/variant]`);
  return { os: parts[0], architecture: parts[1], ...(parts[2] ? { variant: parts[2] } : {}) };
}

const short = (d: string) => d.slice(d.indexOf(":") + 1, d.indexOf(":") + 13);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A pass-through for a blob's network stream: counts bytes for progress,
 * turns the socket's errors into NETWORK errors (retried by resuming), and
 * feeds a second consumer (the layer being unpacked) with backpressure.
 * The side consumer is dropped, not the download, if it fails.
 */
class BlobTap extends Transform {
  completed = false;
  constructor(
    private readonly onBytes: (n: number) => void,
    private side?: PassThrough,
  ) {
    super({ highWaterMark: 256 << 10 });
    side?.on("error", () => {});
    side?.on("close", () => (this.side = undefined));
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.onBytes(chunk.length);
    const side = this.side;
    if (side && !side.write(chunk)) {
      const go = () => {
        side.off("drain", go);
        side.off("close", go);
        cb(null, chunk);
      };
      side.on("drain", go);
      side.on("close", go);
      return;
    }
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.completed = true;
    this.side?.end();
    cb();
  }
  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    if (!this.completed) this.side?.destroy(new StrataError("NETWORK", "download interrupted"));
    cb(err);
  }
}

function tapped(src: Readable, tap: BlobTap, what: string): Readable {
  src.on("error", (e) => tap.destroy(isStrataError(e) ? e : new StrataError("NETWORK", `${what}: ${e.message}`, { cause: e })));
  tap.on("close", () => src.destroy());
  return src.pipe(tap);
}

/** A layer consumed while it downloads (unpacked into snapshot `key`, or only hashed): its diffID, or undefined if that must be redone from the store. */
interface StreamingUnpack {
  side: PassThrough;
  key?: string;
  done: Promise<{ diffId: Digest; size: number } | undefined>;
}

/**
 * `strata pull`: resolves the reference (an index to the wanted platform),
 * downloads config and layers in parallel, each verified as it streams into
 * the content store (blobs already there are skipped; an interrupted one
 * resumes with a Range request), unpacks each layer into a snapshot while it
 * downloads (overlay), and records the image in one transaction when every
 * blob has landed. Nothing is visible before that; leases keep gc away from
 * what is in flight.
 */
export async function pull(engine: Engine, refString: string, opts: PullOptions = {}): Promise<PullResult> {
  const ref = parseReference(refString);
  const want = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
  const progress = opts.onProgress ?? (() => {});
  const client = new RegistryClient(ref.domain, {
    ...opts,
    onRetry: (what, n, ms, why) => {
      progress({ id: "", status: `Retrying in ${(ms / 1000).toFixed(1)} s (${why}): ${what}` });
      opts.onRetry?.(what, n, ms, why);
    },
  });
  const repo = new Repository(client, ref.path);
  const top = await repo.manifest(ref.digest ?? ref.tag!);
  const tags = ref.tag ? [formatReference({ ...ref, digest: undefined })] : [];
  const reference = formatReference(ref);
  if (!isIndexDoc(top)) {
    const r = await pullManifest(engine, repo, top, tags, opts.platform ? { want, reference } : undefined, opts, progress);
    return { reference, digest: top.digest, ...r };
  }
  const index = parseIndex(top.raw, `index ${top.digest}`);
  const pick = index.manifests.find((m) => !isIndexMediaType(m.mediaType) && platformMatches(want, m.platform));
  if (!pick) {
    const have = index.manifests.map((m) => (m.platform ? platformString(m.platform) : "?")).join(", ");
    throw new StrataError("NOT_FOUND", `${reference}: no image for platform ${platformString(want)} (the index has ${have || "none"})`);
  }
  if (!opts.allPlatforms) {
    const r = await pullManifest(engine, repo, await childManifest(repo, pick), tags, undefined, opts, progress);
    return { reference, digest: top.digest, ...r };
  }
  // Every platform's image, verified as any pull; only the chosen one is unpacked, then the index is recorded over them.
  flatIndex(index, reference);
  let chosen: { image: PreparedImage; upToDate: boolean } | undefined;
  let upToDate = engine.meta.tagIndex(tags[0] ?? "")?.digest === top.digest;
  for (const d of index.manifests) {
    const r = await pullManifest(engine, repo, await childManifest(repo, d), [], undefined, { ...opts, unpack: d === pick && opts.unpack !== false }, progress);
    if (d === pick) chosen = r;
    upToDate &&= r.upToDate;
  }
  const mediaType = isIndexMediaType(top.mediaType) ? top.mediaType : (index.mediaType ?? MediaType.OciIndex);
  await engine.commitIndex({ digest: top.digest, mediaType, raw: top.raw }, index.manifests.map((m) => m.digest), pick.digest, tags);
  return { reference, digest: top.digest, image: { ...chosen!.image, tags }, upToDate };
}

/** An index's manifests, when it nests no other index (one level is what a multi-platform image is). */
export function flatIndex(index: Index, what: string): Descriptor[] {
  const nested = index.manifests.find((m) => isIndexMediaType(m.mediaType));
  if (nested) throw new StrataError("UNSUPPORTED", `${what}: the index nests another index (${nested.digest}); only one level is supported`);
  return index.manifests;
}

/** A manifest an index names, checked against its descriptor. */
export async function childManifest(repo: Repository, d: Descriptor): Promise<{ digest: Digest; raw: Buffer; mediaType: string }> {
  const doc = await repo.manifest(d.digest);
  if (doc.raw.length !== d.size) throw new StrataError("SIZE_MISMATCH", `manifest ${d.digest}: ${doc.raw.length} bytes, the index says ${d.size}`);
  return doc;
}

/**
 * Pulls one image manifest's config and layers and records it under `tags`.
 * `platform`, when given, is what the user asked of a plain manifest: it must match.
 */
async function pullManifest(
  engine: Engine, repo: Repository, manifestDoc: { digest: Digest; raw: Buffer; mediaType: string }, tags: string[], platform: { want: Platform; reference: string } | undefined,
  opts: PullOptions, progress: (e: ProgressEvent) => void,
): Promise<{ image: PreparedImage; upToDate: boolean }> {
  const meta = engine.meta;
  const manifest = parseManifest(manifestDoc.raw, `manifest ${manifestDoc.digest}`);
  const mediaType = manifest.mediaType ?? (manifestDoc.mediaType || MediaType.OciManifest);

  // Leases first: gc must not take a blob between its download and the commit.
  const owner = ownerToken();
  meta.write(() => meta.addLeases(owner, [manifestDoc.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]));
  try {
    if (meta.image(manifestDoc.digest)) {
      const row = meta.image(manifestDoc.digest)!;
      const image = engine.image(row.digest);
      const prepared = await preparedFromStore(engine, row.digest, tags);
      await engine.commitImages([prepared], new Map());
      if (opts.unpack !== false) await engine.unpack(image);
      return { image: prepared, upToDate: true };
    }
    const configRaw = await fetchSmall(repo, manifest.config, "config");
    const config = parseConfig(configRaw, `config ${manifest.config.digest}`);
    if (platform && !platformMatches(platform.want, { os: config.os, architecture: config.architecture, variant: config.variant }))
      throw new StrataError("NOT_FOUND", `${platform.reference}: the image is for ${platformString(config)}, not ${platformString(platform.want)}`);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length)
      throw new StrataError("INVALID_CONFIG", `config ${manifest.config.digest} lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`);
    const chains = chainIds(diffIds);
    const layers = await fetchLayers(engine, repo, manifest, diffIds, chains, repo.client.retries, opts, progress);
    const prepared: PreparedImage = {
      manifest: { digest: manifestDoc.digest, mediaType, size: manifestDoc.raw.length, raw: manifestDoc.raw, generated: false },
      config: { digest: manifest.config.digest, mediaType: manifest.config.mediaType, size: configRaw.length, parsed: config },
      layers: layers.map((l) => l.layer),
      tags,
    };
    const keys = layers.map((l) => l.unpacked);
    try {
      await engine.commitImages([prepared], new Map<Digest, Buffer>([[manifestDoc.digest, manifestDoc.raw], [manifest.config.digest, configRaw]]));
      if (opts.unpack !== false) await stackSnapshots(engine, prepared, keys);
    } finally {
      for (const k of keys) if (k) await engine.snapshots.remove(k).catch(() => {});
    }
    for (const l of layers) progress({ id: short(l.layer.digest), status: l.existed ? "Already exists" : "Pull complete" });
    return { image: prepared, upToDate: false };
  } finally {
    meta.write(() => meta.dropLeases(owner));
  }
}

/** An index by its media type, or, when the registry gave none, by its shape. */
export function isIndexDoc(doc: { raw: Buffer; mediaType: string }): boolean {
  if (doc.mediaType) return isIndexMediaType(doc.mediaType);
  try {
    const v = JSON.parse(doc.raw.toString("utf8")) as { manifests?: unknown; layers?: unknown };
    return Array.isArray(v.manifests) && v.layers === undefined;
  } catch {
    return false;
  }
}

async function fetchSmall(repo: Repository, d: Descriptor, what: string): Promise<Buffer> {
  if (d.size > MAX_MANIFEST_BYTES) throw new StrataError("INVALID_MANIFEST", `${what} ${d.digest}: ${d.size} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit`);
  for (let n = 0; ; n++) {
    try {
      const chunks: Buffer[] = [];
      let len = 0;
      for await (const c of await repo.blob(d.digest)) {
        len += (c as Buffer).length;
        if (len > d.size) throw new StrataError("SIZE_MISMATCH", `${what} ${d.digest}: more than the expected ${d.size} bytes`);
        chunks.push(c as Buffer);
      }
      const raw = Buffer.concat(chunks);
      if (raw.length !== d.size) throw new StrataError("SIZE_MISMATCH", `${what} ${d.digest}: got ${raw.length} bytes, expected ${d.size}`);
      if (sha256(raw) !== d.digest) throw new StrataError("DIGEST_MISMATCH", `${what}: digest mismatch: expected ${d.digest}, got ${sha256(raw)}`);
      return raw;
    } catch (e) {
      // The request was already retried; a body cut short is worth another go.
      const midBody = isNetworkError(e) && !isStrataError(e);
      if (!midBody) throw e;
      if (n >= repo.client.retries) throw new StrataError("NETWORK", `${what} ${d.digest}: ${(e as Error).message}`, { cause: e });
    }
  }
}

/** What the store needs to know of an image already there (re-tagging it). */
async function preparedFromStore(engine: Engine, digest: Digest, tags: string[]): Promise<PreparedImage> {
  const img = engine.image(digest);
  const [config, rows] = await Promise.all([img.config(), img.layerRows()]);
  return {
    manifest: { digest: img.digest, mediaType: img.mediaType, size: img.size, raw: await img.rawManifest(), generated: false },
    config: { digest: img.id, mediaType: img.row.config_media_type, size: img.row.config_size, parsed: config },
    layers: rows.map((r) => ({ digest: r.digest, mediaType: r.media_type, size: r.size, diffId: r.diff_id, uncompressedSize: r.uncompressed_size, chainId: r.chain_id })),
    tags,
  };
}

interface FetchedLayer {
  layer: PreparedLayer;
  existed: boolean;
  /** an active snapshot holding this layer, unpacked while it downloaded */
  unpacked?: string;
}

/** Downloads the layers, `concurrency` at a time, unpacking each while it streams when the driver allows. */
async function fetchLayers(
  engine: Engine, repo: Repository, manifest: Manifest, diffIds: Digest[], chains: Digest[], retries: number, opts: PullOptions, progress: (e: ProgressEvent) => void,
): Promise<FetchedLayer[]> {
  const meta = engine.meta;
  const content = engine.content;
  const sn = opts.unpack === false ? undefined : engine.snapshots;
  const streamUnpack = sn?.driver === "overlay";
  if (sn) await sn.cleanup();
  const out: FetchedLayer[] = new Array(manifest.layers.length);
  const firstOf = new Map<Digest, number>();
  manifest.layers.forEach((l, i) => firstOf.has(l.digest) || firstOf.set(l.digest, i));
  for (const l of manifest.layers) progress({ id: short(l.digest), status: "Pulling fs layer" });
  const retryDelay = opts.retryDelayMs ?? 250;

  const one = async (i: number): Promise<void> => {
    const d = manifest.layers[i];
    const id = short(d.digest);
    const what = `layer ${d.digest}`;
    const base = { digest: d.digest, mediaType: d.mediaType, size: d.size, chainId: chains[i] };
    const known = meta.layer(d.digest);
    const present = await content.stat(d.digest);
    if (present && present.size !== d.size) throw new StrataError("SIZE_MISMATCH", `${what}: stored size ${present.size}, the manifest says ${d.size}`);
    if (present && known) {
      if (known.diff_id !== diffIds[i]) throw new StrataError("DIGEST_MISMATCH", `${what}: known diffID ${known.diff_id}, the config says ${diffIds[i]}`);
      out[i] = { layer: { ...base, diffId: known.diff_id, uncompressedSize: known.uncompressed_size }, existed: true };
      progress({ id, status: "Already exists" });
      return;
    }
    // Unpack while downloading: only a layer's first occurrence, only when nothing has it yet.
    // Unpacked (overlay) or at least hashed for its diffID while it downloads: the blob is read once.
    const first = !present && firstOf.get(d.digest) === i;
    const streaming = !first ? undefined : streamUnpack && !sn!.has(chains[i]) ? await startUnpack(engine, chains[i], what) : startDiffId();
    let got = 0;
    let received = 0; // over every attempt: did the last one move at all?
    let lastShown = 0;
    const onBytes = (n: number) => {
      got += n;
      received += n;
      if (got - lastShown >= 512 * 1024 || got === d.size) {
        lastShown = got;
        progress({ id, status: "Downloading", current: got, total: d.size });
      }
    };
    let tapUsed = false;
    const open = async (offset: number): Promise<Readable> => {
      got = offset;
      const side = !tapUsed && offset === 0 ? streaming?.side : undefined;
      if (streaming && side === undefined) streaming.side.destroy(new StrataError("NETWORK", "resumed download: unpacked from the store instead"));
      tapUsed = true;
      return tapped(await repo.blob(d.digest, offset), new BlobTap(onBytes, side), what);
    };
    try {
      if (!present) {
        for (let n = 0; ; n++) {
          const before = received;
          try {
            await content.ingest({ digest: d.digest, size: d.size }, open);
            break;
          } catch (e) {
            // Resume only a transfer that was moving: a request that failed outright was already retried.
            if (!isStrataError(e, "NETWORK") || received === before || n >= retries) throw e;
            const delay = retryDelay * 2 ** n;
            progress({ id, status: `Retrying in ${(delay / 1000).toFixed(1)} s (${e.message})` });
            await sleep(delay);
          }
        }
        progress({ id, status: "Download complete" });
      }
      // Another writer may have ingested it, so our tap never ran: then the side stream is not coming.
      if (streaming && !tapUsed) streaming.side.destroy(new StrataError("NETWORK", "not downloaded here"));
      if (streaming?.key) progress({ id, status: "Extracting" });
      const result = streaming ? await streaming.done : undefined;
      if (result) {
        if (result.diffId !== diffIds[i]) throw new StrataError("DIGEST_MISMATCH", `${what}: content has diffID ${result.diffId}, the config says ${diffIds[i]}`);
        out[i] = { layer: { ...base, diffId: result.diffId, uncompressedSize: result.size }, existed: false, unpacked: streaming?.key };
        return;
      }
      if (streaming?.key) await sn!.remove(streaming.key).catch(() => {});
      const plain = await diffIdOf(engine, d);
      if (plain.diffId !== diffIds[i]) throw new StrataError("DIGEST_MISMATCH", `${what}: content has diffID ${plain.diffId}, the config says ${diffIds[i]}`);
      out[i] = { layer: { ...base, diffId: plain.diffId, uncompressedSize: plain.size }, existed: !!present };
    } catch (e) {
      if (streaming) {
        streaming.side.destroy();
        await streaming.done.catch(() => {});
        if (streaming.key) await sn!.remove(streaming.key).catch(() => {});
      }
      throw e;
    }
  };

  const queue = manifest.layers.map((_, i) => i);
  let failure: unknown;
  const worker = async () => {
    for (let i = queue.shift(); i !== undefined && failure === undefined; i = queue.shift()) {
      try {
        await one(i);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  // Every worker finishes before the failure is reported, so nothing is left running behind it.
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 3) }, worker));
  if (failure !== undefined) {
    for (const l of out) if (l?.unpacked) await sn!.remove(l.unpacked).catch(() => {});
    throw failure;
  }
  return out;
}

/** Prepares a snapshot and starts applying whatever the side stream brings into it. */
async function startUnpack(engine: Engine, chain: Digest, what: string): Promise<StreamingUnpack> {
  const sn = engine.snapshots;
  const key = `extract-${randomBytes(6).toString("hex")}-${chain}`;
  await sn.prepare(key);
  const target = await sn.applyTarget(key);
  const side = new PassThrough({ highWaterMark: 256 << 10 });
  const done = (async () => {
    const [{ decompress }, { applyLayer }] = await Promise.all([import("../archive/compression.js"), import("../archive/extract.js")]);
    const plain = await decompress(side);
    const hash = new DigestStream();
    plain.on("error", (e) => hash.destroy(e));
    await applyLayer(plain.pipe(hash), target.dir, { whiteouts: target.whiteouts });
    return { diffId: hash.digest(), size: hash.bytes };
  })().catch((e) => {
    side.destroy(); // the download goes on without this consumer
    // A download that was interrupted is redone from the store; anything else is the layer's own fault.
    if (isStrataError(e, "NETWORK")) return undefined;
    throw wrap(e, "IO", `unpack ${what}`);
  });
  done.catch(() => {});
  return { side, key, done };
}

/** Hashes the uncompressed bytes of whatever the side stream brings: the diffID without reading the blob back. */
function startDiffId(): StreamingUnpack {
  const side = new PassThrough({ highWaterMark: 256 << 10 });
  const done = (async () => {
    const { decompress } = await import("../archive/compression.js");
    const hash = new DigestStream();
    const plain = await decompress(side);
    plain.on("error", (e) => hash.destroy(e));
    for await (const _ of plain.pipe(hash)) void _;
    return { diffId: hash.digest(), size: hash.bytes };
  })().catch((e) => {
    side.destroy();
    if (isStrataError(e, "NETWORK")) return undefined;
    throw new StrataError("CORRUPT", `layer: cannot decompress (${(e as Error).message})`, { cause: e });
  });
  done.catch(() => {});
  return { side, done };
}

/** The diffID and size of a stored layer (decompressed once from the store). */
async function diffIdOf(engine: Engine, d: Descriptor): Promise<{ diffId: Digest; size: number }> {
  const { decompress } = await import("../archive/compression.js");
  const hash = new DigestStream();
  const plain = await decompress(await engine.content.open(d.digest, d.size));
  plain.on("error", (e) => hash.destroy(e));
  for await (const _ of plain.pipe(hash)) void _;
  return { diffId: hash.digest(), size: hash.bytes };
}

/**
 * Commits the layers unpacked during the download as the image's snapshots,
 * bottom up, each re-parented onto the one below (overlay layers do not
 * depend on what is under them). A layer that could not be unpacked on the
 * way (a resumed download, a blob another writer fetched) is unpacked from
 * the store in its turn. The vfs driver copies parents, so it unpacks in order.
 */
async function stackSnapshots(engine: Engine, image: PreparedImage, keys: (string | undefined)[]): Promise<void> {
  const sn = engine.snapshots;
  if (sn.driver !== "overlay") {
    await engine.unpack(image.manifest.digest);
    return;
  }
  const { applyLayer } = await import("../archive/extract.js");
  const layers = await engine.image(image.manifest.digest).layers();
  for (const [i, l] of image.layers.entries()) {
    if (sn.has(l.chainId)) continue;
    let key = keys[i];
    if (!key) {
      key = `extract-${randomBytes(6).toString("hex")}-${l.chainId}`;
      await sn.prepare(key);
      keys[i] = key;
      const target = await sn.applyTarget(key);
      await applyLayer(await layers[i].diffChunks(), target.dir, { whiteouts: target.whiteouts }).catch((e) => {
        throw wrap(e, "IO", `unpack layer ${l.digest}`);
      });
    }
    try {
      await sn.commit(l.chainId, key, i ? image.layers[i - 1].chainId : undefined);
      keys[i] = undefined;
    } catch (e) {
      if (!isStrataError(e, "ALREADY_EXISTS")) throw e;
    }
  }
}

