import { mkdtempSync, promises as fs, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { StrataError, isErrno } from "../errors/index.js";
import { chainIds, digestHex, sha256, type Digest } from "../digest/index.js";
import { VerifyStream } from "../digest/stream.js";
import { fileChunks } from "../content/index.js";
import {
  ANNOTATION_REF_NAME, MAX_MANIFEST_BYTES, MediaType, hostPlatform, isIndexMediaType, parseConfig, parseIndex, parseManifest, platformMatches, platformString,
  type Descriptor, type Index, type Platform,
} from "../oci/index.js";
import { formatReference, parseReference, repositoryName, type Reference } from "../reference/index.js";
import { RegistryClient, Repository, type RegistryOptions } from "../registry/client/registry.js";
import type { PreparedImage } from "../layout/load.js";
import { OCI_LAYOUT } from "../layout/view.js";
import { childManifest, flatIndex, isIndexDoc, parsePlatform, type ProgressEvent } from "./pull.js";
import { pushImage, pushIndex, storeIndexSource, storeSource, type SourceImage, type SourceIndex } from "./push.js";
import type { Engine } from "./index.js";
import { writeOutputFile } from "./output.js";

/**
 * Where an image is, for `strata copy`, in containers/image's transport
 * syntax: `docker://REF` (or a bare REF) is a registry, `strata:REF` this
 * store, `oci:DIR[:TAG]` an OCI layout directory, `oci-archive:FILE[:TAG]`
 * and `docker-archive:FILE[:REF]` archives.
 */
export type Location =
  | { kind: "registry"; ref: Reference }
  | { kind: "store"; ref: string }
  | { kind: "oci"; dir: string; tag?: string }
  | { kind: "oci-archive" | "docker-archive"; file: string; tag?: string };

export function parseLocation(s: string): Location {
  const colon = s.indexOf(":");
  const scheme = colon > 0 ? s.slice(0, colon) : "";
  const rest = s.slice(colon + 1);
  // As containers/image splits them: the path ends at the first colon; the rest names the image.
  const pathAndTag = (r: string) => {
    const i = r.indexOf(":");
    return i > 0 ? { path: r.slice(0, i), tag: r.slice(i + 1) || undefined } : { path: r, tag: undefined };
  };
  switch (scheme) {
    case "docker":
      if (!rest.startsWith("//")) throw new StrataError("INVALID_REFERENCE", `"${s}": the docker transport is docker://NAME[:TAG]`);
      return { kind: "registry", ref: parseReference(rest.slice(2)) };
    case "strata":
    case "containers-storage":
      if (!rest) throw new StrataError("INVALID_REFERENCE", `"${s}": the store transport needs an image`);
      return { kind: "store", ref: rest };
    case "oci": {
      const { path, tag } = pathAndTag(rest);
      return { kind: "oci", dir: path, tag };
    }
    case "oci-archive":
    case "docker-archive": {
      const { path, tag } = pathAndTag(rest);
      return { kind: scheme, file: path, tag };
    }
    default:
      return { kind: "registry", ref: parseReference(s) };
  }
}

export interface CopyOptions extends RegistryOptions {
  /** the platform to take from a multi-platform source (default: the host's) */
  platform?: string;
  /** copy a multi-platform source whole: every platform's image and the index, byte for byte */
  all?: boolean;
  onProgress?: (e: ProgressEvent) => void;
}

export interface CopyResult {
  digest: Digest;
}

/**
 * Copies one image between any two locations, blob by blob (verified on the
 * way), without unpacking it; with `all`, a multi-platform image whole.
 */
export async function copy(engine: Engine, from: string, to: string, opts: CopyOptions = {}): Promise<CopyResult> {
  const src = parseLocation(from);
  const dst = parseLocation(to);
  const cleanups: (() => void | Promise<void>)[] = [];
  const scratchDir = () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-copy-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  };
  const scratch = () => {
    const { Engine: E } = engineCtor(engine);
    const e = new E({ root: scratchDir(), storageDriver: "vfs" });
    cleanups.push(() => e.close());
    return e;
  };
  try {
    let source: SourceImage | SourceIndex;
    const want = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
    // With --all, an index is taken whole (a source that is one image is copied as it is, as skopeo does).
    const pick = opts.all ? undefined : want;
    if (src.kind === "registry") source = await registrySource(src.ref, pick, opts);
    else if (src.kind === "store") source = (opts.all && (await storeIndexSource(engine, src.ref))) || (await storeSource(engine, src.ref));
    else if (src.kind === "oci") source = await layoutSource(src.dir, src.tag, pick);
    else if (src.kind === "oci-archive" && opts.all) {
      const dir = scratchDir();
      const { applyLayer } = await import("../archive/extract.js");
      await applyLayer(await openFile(src.file), dir, { whiteouts: "apply", chown: false });
      source = await layoutSource(dir, src.tag, undefined);
    } else {
      const tmp = scratch();
      const images = await tmp.load(src.file, { unpack: false });
      const pick = src.tag ? images.find((i) => i.tags.includes(formatReference(parseReference(src.tag!)))) ?? (images.length === 1 ? images[0] : undefined) : images[0];
      if (!pick) throw new StrataError("NOT_FOUND", `${from}: no image named ${src.tag} in the archive`);
      if (images.length > 1 && !src.tag) throw new StrataError("INVALID_ARGUMENT", `${from}: the archive holds ${images.length} images; name one (${src.kind}:FILE:NAME)`);
      source = await storeSource(tmp, pick.manifest.digest);
    }
    if (dst.kind === "registry" && !dst.ref.tag && !dst.ref.digest) throw new StrataError("INVALID_REFERENCE", `${to}: a destination needs a tag`);
    if (isIndexSource(source)) return await copyIndex(engine, source, dst, to, want, opts, scratchDir);
    if (dst.kind === "registry") {
      const r = await pushImage(source, dst.ref, opts);
      return { digest: r.digest };
    }
    if (dst.kind === "store") {
      await importSource(engine, source, formatReference(parseReference(dst.ref)));
      return { digest: source.digest };
    }
    if (dst.kind === "oci") {
      await writeLayout(dst.dir, dst.tag, source);
      return { digest: source.digest };
    }
    // An archive needs each layer's uncompressed size up front: the image goes through a scratch store.
    const tmp = scratch();
    await importSource(tmp, source, undefined);
    // docker-archive names are image references; an OCI archive's ref.name is the tag as given.
    const names = dst.tag ? [dst.kind === "docker-archive" ? formatReference(parseReference(dst.tag)) : dst.tag] : [];
    const { writeArchive } = await import("../layout/save.js");
    await writeOutputFile(dst.file, (out) => writeArchive([{ image: tmp.image(source.digest), names }], dst.kind, out));
    return { digest: source.digest };
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

const isIndexSource = (s: SourceImage | SourceIndex): s is SourceIndex => "rawIndex" in s;

/** `copy --all` of a multi-platform image: every platform's image, then the index as it is. */
async function copyIndex(engine: Engine, source: SourceIndex, dst: Location, to: string, want: Platform, opts: CopyOptions, scratchDir: () => string): Promise<CopyResult> {
  switch (dst.kind) {
    case "registry":
      return { digest: (await pushIndex(source, dst.ref, opts)).digest };
    case "store": {
      // The tag names the platform that runs here; the others are kept as blobs and records.
      const pick = pickPlatform(parseIndex(source.rawIndex, `index ${source.digest}`), want, to);
      for (const image of source.images) await importSource(engine, image, undefined);
      const raw = { digest: source.digest, mediaType: source.mediaType, raw: source.rawIndex };
      await engine.commitIndex(raw, source.images.map((i) => i.digest), pick.digest, [formatReference(parseReference(dst.ref))]);
      break;
    }
    case "oci":
      await writeLayout(dst.dir, dst.tag, source);
      break;
    case "oci-archive": {
      const dir = scratchDir();
      await writeLayout(dir, dst.tag, source);
      const [{ packDirectory }, { pipeline }] = await Promise.all([import("../archive/tar.js"), import("node:stream/promises")]);
      await writeOutputFile(dst.file, (out) => pipeline(packDirectory(dir), out));
      break;
    }
    case "docker-archive":
      throw new StrataError("UNSUPPORTED", `${to}: a docker-archive holds one platform's image, not a multi-platform one: copy without --all (--platform picks one)`);
  }
  return { digest: source.digest };
}

async function openFile(path: string): Promise<Readable> {
  const fh = await fs.open(path, "r").catch((e) => {
    throw new StrataError("NOT_FOUND", `open ${path}: ${(e as Error).message}`, { cause: e });
  });
  return fh.createReadStream({ highWaterMark: 1 << 20 });
}

/** The Engine class, reached through an instance (no import cycle). */
function engineCtor(engine: Engine): { Engine: new (o: { root: string; storageDriver?: "vfs" | "overlay" }) => Engine } {
  return { Engine: engine.constructor as new (o: { root: string; storageDriver?: "vfs" | "overlay" }) => Engine };
}

function verified(src: Readable, d: Descriptor, offset: number): Readable {
  if (offset > 0) return src; // the part before `offset` was verified when it was read; the destination checks the whole
  const v = new VerifyStream({ digest: d.digest, size: d.size }, `blob ${d.digest}`);
  src.on("error", (e) => v.destroy(e));
  v.on("close", () => src.destroy());
  return src.pipe(v);
}

/** An image in a registry: an index resolved to the `want` platform, or, without one, taken whole. */
export async function registrySource(ref: Reference, want: Platform | undefined, opts: RegistryOptions): Promise<SourceImage | SourceIndex> {
  const repo = new Repository(new RegistryClient(ref.domain, opts), ref.path);
  const doc = await repo.manifest(ref.digest ?? ref.tag!);
  if (!isIndexDoc(doc)) return registryImage(repo, ref, doc);
  const index = parseIndex(doc.raw, `index ${doc.digest}`);
  if (want) return registryImage(repo, ref, await repo.manifest(pickPlatform(index, want, formatReference(ref)).digest));
  const images: SourceImage[] = [];
  for (const d of flatIndex(index, formatReference(ref))) images.push(registryImage(repo, ref, await childManifest(repo, d)));
  return { digest: doc.digest, mediaType: isIndexMediaType(doc.mediaType) ? doc.mediaType : (index.mediaType ?? MediaType.OciIndex), rawIndex: doc.raw, images };
}

function registryImage(repo: Repository, ref: Reference, doc: { digest: Digest; raw: Buffer; mediaType: string }): SourceImage {
  const manifest = parseManifest(doc.raw, `manifest ${doc.digest}`);
  return {
    digest: doc.digest,
    mediaType: manifest.mediaType ?? (doc.mediaType || MediaType.OciManifest),
    rawManifest: doc.raw,
    manifest,
    open: async (d, offset) => verified(await repo.blob(d.digest, offset), d, offset),
    mountCandidates: () => [repositoryName(ref)],
  };
}

function pickPlatform(index: Index, want: Platform, what: string): Descriptor {
  const pick = index.manifests.find((m) => !isIndexMediaType(m.mediaType) && platformMatches(want, m.platform));
  if (!pick) throw new StrataError("NOT_FOUND", `${what}: no image for platform ${platformString(want)}`);
  return pick;
}

/**
 * An image in an OCI layout directory: the one named `tag` (ref.name
 * annotation), or the only one; an index resolved to the `want` platform,
 * or, without one, taken whole.
 */
export async function layoutSource(dir: string, tag: string | undefined, want: Platform | undefined): Promise<SourceImage | SourceIndex> {
  const blobPath = (d: Descriptor) => join(dir, "blobs", d.digest.slice(0, d.digest.indexOf(":")), digestHex(d.digest));
  const readSmall = async (d: Descriptor, what: string) => {
    if (d.size > MAX_MANIFEST_BYTES) throw new StrataError("INVALID_MANIFEST", `${what}: over the ${MAX_MANIFEST_BYTES}-byte limit`);
    const raw = await fs.readFile(blobPath(d)).catch((e) => {
      throw new StrataError("NOT_FOUND", `${what}: ${(e as Error).message}`, { cause: e });
    });
    if (raw.length !== d.size || sha256(raw) !== d.digest) throw new StrataError("DIGEST_MISMATCH", `${what}: content does not match ${d.digest}`);
    return raw;
  };
  const indexRaw = await fs.readFile(join(dir, "index.json")).catch((e) => {
    throw new StrataError("NOT_FOUND", `oci:${dir}: no index.json (${(e as Error).message})`, { cause: e });
  });
  const entries = parseIndex(indexRaw, `${dir}/index.json`).manifests;
  const named = tag ? entries.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag) : entries;
  if (named.length === 0) throw new StrataError("NOT_FOUND", `oci:${dir}${tag ? `:${tag}` : ""}: no such image in the layout`);
  if (named.length > 1) throw new StrataError("INVALID_ARGUMENT", `oci:${dir}: the layout holds ${named.length} images; name one (oci:DIR:TAG)`);
  const top = named[0];
  const open = async (d: Descriptor, offset: number) => fileChunks(blobPath(d), d, offset, `oci:${dir}: blob ${d.digest} is missing`);
  const image = async (desc: Descriptor): Promise<SourceImage> => {
    const raw = await readSmall(desc, `manifest ${desc.digest}`);
    return { digest: desc.digest, mediaType: desc.mediaType, rawManifest: raw, manifest: parseManifest(raw, `manifest ${desc.digest}`, desc.mediaType), open };
  };
  if (!isIndexMediaType(top.mediaType)) return image(top);
  const rawIndex = await readSmall(top, `index ${top.digest}`);
  const index = parseIndex(rawIndex, `index ${top.digest}`);
  if (want) return image(pickPlatform(index, want, `oci:${dir}`));
  const images: SourceImage[] = [];
  for (const d of flatIndex(index, `oci:${dir}`)) images.push(await image(d));
  return { digest: top.digest, mediaType: top.mediaType, rawIndex, images };
}

async function readAll(src: AsyncIterable<Buffer>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of src) {
    n += c.length;
    if (n > limit) throw new StrataError("INVALID_CONFIG", `config: over the ${limit}-byte limit`);
    chunks.push(Buffer.from(c)); // the source may reuse its buffer
  }
  return Buffer.concat(chunks);
}

/**
 * Copies a source into the store: every blob ingested (verified), each
 * layer's diffID checked against the config, then the image recorded in
 * one transaction. Nothing is unpacked.
 */
export async function importSource(engine: Engine, source: SourceImage, tag: string | undefined): Promise<PreparedImage> {
  const m = source.manifest;
  const configRaw = await readAll(await source.open(m.config, 0), MAX_MANIFEST_BYTES);
  const config = parseConfig(configRaw, `config ${m.config.digest}`);
  if (config.rootfs.diff_ids.length !== m.layers.length)
    throw new StrataError("INVALID_CONFIG", `config ${m.config.digest} lists ${config.rootfs.diff_ids.length} diff_ids for ${m.layers.length} layers`);
  const { ownerToken } = await import("../content/proc.js");
  const meta = engine.meta;
  const owner = ownerToken();
  meta.write(() => meta.addLeases(owner, [source.digest, m.config.digest, ...m.layers.map((l) => l.digest)]));
  try {
    const { decompress } = await import("../archive/compression.js");
    const { DigestStream } = await import("../digest/stream.js");
    const chains = chainIds(config.rootfs.diff_ids);
    const layers = [];
    for (const [i, d] of m.layers.entries()) {
      await engine.content.ingest({ digest: d.digest, size: d.size }, (offset) => source.open(d, offset));
      const known = meta.layer(d.digest);
      let diffId = known?.diff_id;
      let size = known?.uncompressed_size;
      if (!known) {
        const h = new DigestStream();
        const plain = await decompress(await engine.content.open(d.digest, d.size));
        plain.on("error", (e) => h.destroy(e));
        for await (const _ of plain.pipe(h)) void _;
        diffId = h.digest();
        size = h.bytes;
      }
      if (diffId !== config.rootfs.diff_ids[i]) throw new StrataError("DIGEST_MISMATCH", `layer ${d.digest}: content has diffID ${diffId}, the config says ${config.rootfs.diff_ids[i]}`);
      layers.push({ digest: d.digest, mediaType: d.mediaType, size: d.size, diffId: diffId!, uncompressedSize: size!, chainId: chains[i] });
    }
    const prepared: PreparedImage = {
      manifest: { digest: source.digest, mediaType: source.mediaType, size: source.rawManifest.length, raw: source.rawManifest, generated: false },
      config: { digest: m.config.digest, mediaType: m.config.mediaType, size: configRaw.length, parsed: config },
      layers,
      tags: tag ? [tag] : [],
    };
    await engine.commitImages([prepared], new Map<Digest, Buffer>([[source.digest, source.rawManifest], [m.config.digest, configRaw]]));
    return prepared;
  } finally {
    meta.write(() => meta.dropLeases(owner));
  }
}

/** Writes a blob into a layout atomically (temp file, fsync, rename); an existing blob is kept. */
async function layoutBlob(dir: string, d: Descriptor, open: () => Promise<AsyncIterable<Buffer>>): Promise<void> {
  const path = join(dir, "blobs", "sha256", digestHex(d.digest));
  try {
    if ((await fs.stat(path)).size === d.size) return;
  } catch (e) {
    if (!isErrno(e, "ENOENT")) throw e;
  }
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await fs.open(tmp, "w", 0o644);
  try {
    for await (const c of await open()) await fh.write(c);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await fs.rename(tmp, path);
}

/** Copies a source (an image, or an index with its images) into an OCI layout directory (created if needed), named `tag` in its index.json. */
export async function writeLayout(dir: string, tag: string | undefined, source: SourceImage | SourceIndex): Promise<void> {
  await fs.mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  const layoutFile = join(dir, "oci-layout");
  await fs.access(layoutFile).catch(() => fs.writeFile(layoutFile, OCI_LAYOUT));
  const { Readable } = await import("node:stream");
  const small = (mediaType: string, digest: Digest, raw: Buffer) => layoutBlob(dir, { mediaType, digest, size: raw.length }, async () => Readable.from([raw]));
  // Blobs before the manifest naming them, manifests before the index.
  for (const image of isIndexSource(source) ? source.images : [source]) {
    const m = image.manifest;
    for (const d of [...m.layers, m.config]) await layoutBlob(dir, d, () => image.open(d, 0));
    await small(image.mediaType, image.digest, image.rawManifest);
  }
  const raw = isIndexSource(source) ? source.rawIndex : source.rawManifest;
  if (isIndexSource(source)) await small(source.mediaType, source.digest, raw);
  let index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  try {
    index = parseIndex(await fs.readFile(join(dir, "index.json")), `${dir}/index.json`);
  } catch (e) {
    if (!isErrno(e, "ENOENT")) throw e;
  }
  const desc: Descriptor = { mediaType: source.mediaType, digest: source.digest, size: raw.length, ...(tag ? { annotations: { [ANNOTATION_REF_NAME]: tag } } : {}) };
  index.manifests = index.manifests.filter((x) => (tag ? x.annotations?.[ANNOTATION_REF_NAME] !== tag : x.digest !== source.digest));
  index.manifests.push(desc);
  const tmp = join(dir, `index.json.tmp-${process.pid}`);
  await fs.writeFile(tmp, JSON.stringify(index));
  await fs.rename(tmp, join(dir, "index.json"));
}
