import { once } from "node:events";
import * as fs from "node:fs/promises";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { StrataError, wrap } from "../errors/index.js";
import { chainIds, digestHex, sha256, type Digest } from "../digest/index.js";
import { DigestStream } from "../digest/stream.js";
import type { ContentStore, PendingBlob } from "../content/index.js";
import { decompress, detectCompression, type Compression } from "../archive/compression.js";
import { readTar, type TarEntrySink } from "../archive/tar.js";
import {
  MAX_MANIFEST_BYTES, MediaType, ANNOTATION_REF_NAME, hostPlatform, isIndexMediaType, isManifestMediaType,
  parseConfig, parseIndex, parseManifest, platformMatches, type Descriptor, type ImageConfig,
} from "../oci/index.js";
import { formatReference, parseReference } from "../reference/index.js";

/** One archive member, written to ingest/ while it was read. */
interface Member {
  path: string;
  pending: PendingBlob;
  digest: Digest;
  size: number;
  compression: Compression;
  /** digest and size of the decompressed bytes, for gzip members (computed in the same pass) */
  plain?: { digest: Digest; size: number } | { error: string };
}

export interface PreparedLayer {
  digest: Digest;
  mediaType: string;
  size: number;
  diffId: Digest;
  uncompressedSize: number;
  chainId: Digest;
}

export interface PreparedImage {
  manifest: { digest: Digest; mediaType: string; size: number; raw: Buffer; generated: boolean };
  config: { digest: Digest; mediaType: string; size: number; parsed: ImageConfig };
  layers: PreparedLayer[];
  tags: string[];
}

/** The result of reading an archive: verified images whose blobs still sit in ingest/. */
export interface PreparedLoad {
  format: "docker-archive" | "oci-archive";
  images: PreparedImage[];
  /** The members to move into the store, by digest. */
  blobs: Map<Digest, PendingBlob>;
  /** Removes every ingest file this load made that was not committed. */
  cleanup(): Promise<void>;
}

function normalizePath(p: string): string | undefined {
  const n = posix.normalize("/" + p).slice(1).replace(/\/$/, "");
  return n === "" || n.startsWith("..") ? undefined : n;
}

function bad(msg: string): never {
  throw new StrataError("INVALID_ARCHIVE", msg);
}

/**
 * Reads a docker-archive or an OCI archive in one streaming pass: every
 * member is hashed while it is written to ingest/ (gzip members are also
 * decompressed and hashed for their diffID), then manifest.json or
 * index.json is resolved against what arrived and every digest, size and
 * diffID is checked. Nothing is visible in the store until the caller
 * commits `blobs`.
 */
export async function readArchive(content: ContentStore, input: Readable): Promise<PreparedLoad> {
  const members = new Map<string, Member>();
  const links = new Map<string, string>();
  const all: PendingBlob[] = [];
  const cleanup = async () => {
    await Promise.all(all.map((p) => p.abort()));
  };
  try {
    const plain = await decompress(input);
    const any = await readTar(
      plain,
      async (h) => {
        const path = normalizePath(h.name);
        if (path === undefined) return undefined;
        if (h.type === "symlink" && h.linkname) {
          const target = normalizePath(posix.join(posix.dirname(path), h.linkname));
          if (target) links.set(path, target);
        } else if (h.type === "link" && h.linkname) {
          const target = normalizePath(h.linkname);
          if (target) links.set(path, target);
        } else if (h.type === "file" || h.type === "contiguous-file") {
          const pending = await content.begin();
          all.push(pending);
          return memberSink(path, pending, (m) => members.set(path, m));
        }
        return undefined;
      },
      "archive",
    );
    if (!any) bad("archive is empty or not a tar file");
    return await resolve(members, links, cleanup);
  } catch (e) {
    await cleanup();
    if (e instanceof StrataError) throw e;
    throw wrap(e, "INVALID_ARCHIVE", "read archive");
  }
}

/** Ingests one member as its data arrives; a gzip member is also decompressed and hashed for its diffID. */
function memberSink(path: string, pending: PendingBlob, done: (m: Member) => void): TarEntrySink {
  let compression: Compression | undefined;
  let gunzip: import("node:zlib").Gunzip | undefined;
  let plainHash: DigestStream | undefined;
  let plainError: string | undefined;
  return {
    async data(b) {
      if (compression === undefined) {
        compression = detectCompression(b);
        if (compression === "gzip") {
          gunzip = createGunzip();
          plainHash = new DigestStream();
          gunzip.on("error", (e) => {
            plainError = e.message;
            gunzip?.unpipe();
          });
          gunzip.pipe(plainHash).resume();
        }
      }
      await pending.write(b);
      // gunzip keeps what it is given until it has read it: a copy, not the reader's piece
      if (gunzip && plainError === undefined && !gunzip.write(Buffer.from(b))) await Promise.race([once(gunzip, "drain"), once(gunzip, "error").catch(() => {})]);
    },
    async end() {
      let plain: Member["plain"];
      if (gunzip && plainHash) {
        if (plainError === undefined) {
          gunzip.end();
          await Promise.race([once(plainHash, "end"), once(gunzip, "error").catch(() => {})]);
        }
        plain = plainError === undefined ? { digest: plainHash.digest(), size: plainHash.bytes } : { error: plainError };
      }
      const info = await pending.finish();
      done({ path, pending, digest: info.digest, size: info.size, compression: compression ?? "none", plain });
    },
  };
}

async function resolve(members: Map<string, Member>, links: Map<string, string>, cleanup: () => Promise<void>): Promise<PreparedLoad> {
  const lookup = (path: string, what: string): Member => {
    let p = normalizePath(path) ?? bad(`${what}: invalid path "${path}"`);
    for (let hops = 0; !members.has(p); hops++) {
      const next = links.get(p);
      if (next === undefined || hops > 16) bad(`${what}: "${path}" is missing from the archive`);
      p = next;
    }
    return members.get(p)!;
  };
  const readSmall = async (m: Member, what: string): Promise<Buffer> => {
    if (m.size > MAX_MANIFEST_BYTES) bad(`${what}: ${m.size} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit`);
    return fs.readFile(m.pending.path);
  };
  const used = new Map<Digest, PendingBlob>();
  const use = (m: Member) => used.set(m.digest, m.pending);

  /** Verifies a layer member and works out its diffID. */
  const layerOf = async (m: Member, mediaType: string, what: string): Promise<Omit<PreparedLayer, "chainId">> => {
    let diffId: Digest;
    let uncompressedSize: number;
    if (m.compression === "none") {
      diffId = m.digest;
      uncompressedSize = m.size;
    } else if (m.plain && "digest" in m.plain) {
      diffId = m.plain.digest;
      uncompressedSize = m.plain.size;
    } else if (m.plain && "error" in m.plain) {
      throw new StrataError("CORRUPT", `${what}: corrupt gzip stream (${m.plain.error})`);
    } else {
      const h = new DigestStream();
      const { createReadStream } = await import("node:fs");
      const { pipeline } = await import("node:stream/promises");
      await pipeline(await decompress(createReadStream(m.pending.path)), h, async function* (src) {
        for await (const _ of src) void _;
      });
      diffId = h.digest();
      uncompressedSize = h.bytes;
    }
    use(m);
    return { digest: m.digest, mediaType, size: m.size, diffId, uncompressedSize };
  };

  const finishImage = (
    manifest: PreparedImage["manifest"],
    config: PreparedImage["config"],
    layers: Omit<PreparedLayer, "chainId">[],
    tags: string[],
  ): PreparedImage => {
    const want = config.parsed.rootfs.diff_ids;
    if (want.length !== layers.length)
      bad(`image ${manifest.digest}: config lists ${want.length} diff_ids for ${layers.length} layers`);
    layers.forEach((l, i) => {
      if (l.diffId !== want[i])
        throw new StrataError("DIGEST_MISMATCH", `layer ${i} (${l.digest}): content has diffID ${l.diffId}, config says ${want[i]}`);
    });
    const chains = chainIds(layers.map((l) => l.diffId));
    return { manifest, config, layers: layers.map((l, i) => ({ ...l, chainId: chains[i] })), tags };
  };

  const normaliseTag = (t: string, what: string): string => {
    try {
      return formatReference(parseReference(t));
    } catch (e) {
      bad(`${what}: ${(e as Error).message}`);
    }
  };

  // Names that a docker-archive's manifest.json gives, by config digest (Docker 25+ writes both files).
  let dockerEntries: { Config: string; RepoTags: string[]; Layers: string[] }[] | undefined;
  if (members.has("manifest.json")) {
    const raw = await readSmall(members.get("manifest.json")!, "manifest.json");
    let v: unknown;
    try {
      v = JSON.parse(raw.toString("utf8"));
    } catch (e) {
      bad(`manifest.json: not valid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(v)) bad("manifest.json: not an array");
    for (const [i, e] of v.entries()) {
      if (typeof e !== "object" || e === null || typeof e.Config !== "string" || !Array.isArray(e.Layers) || e.Layers.some((l: unknown) => typeof l !== "string"))
        bad(`manifest.json: entry ${i} needs Config and Layers`);
      if (e.RepoTags != null && (!Array.isArray(e.RepoTags) || e.RepoTags.some((t: unknown) => typeof t !== "string")))
        bad(`manifest.json: entry ${i}: RepoTags is not a list of strings`);
      e.RepoTags ??= [];
    }
    dockerEntries = v;
  }

  const images: PreparedImage[] = [];
  let format: PreparedLoad["format"];
  if (members.has("index.json")) {
    format = "oci-archive";
    const index = parseIndex(await readSmall(members.get("index.json")!, "index.json"), "index.json");
    const blob = (d: Descriptor, what: string): Member => {
      if (!d.digest.startsWith("sha256:")) throw new StrataError("UNSUPPORTED", `${what}: only sha256 digests are supported (${d.digest})`);
      const m = lookup(`blobs/sha256/${digestHex(d.digest)}`, what);
      if (m.digest !== d.digest) throw new StrataError("DIGEST_MISMATCH", `${what}: blob ${d.digest} has content with digest ${m.digest}`);
      if (m.size !== d.size) throw new StrataError("SIZE_MISMATCH", `${what}: blob ${d.digest} is ${m.size} bytes, descriptor says ${d.size}`);
      return m;
    };
    const namesFor = async (desc: Descriptor, configDigest: Digest): Promise<string[]> => {
      const a = desc.annotations ?? {};
      const full = a["io.containerd.image.name"] ?? (a[ANNOTATION_REF_NAME]?.match(/[/:]/) ? a[ANNOTATION_REF_NAME] : undefined);
      if (full) return [normaliseTag(full, "index.json")];
      const fromDocker = dockerEntries?.find((e) => lookupDigest(e.Config) === configDigest)?.RepoTags ?? [];
      return fromDocker.map((t) => normaliseTag(t, "manifest.json"));
    };
    const lookupDigest = (path: string): Digest | undefined => {
      try {
        return lookup(path, "manifest.json").digest;
      } catch {
        return undefined;
      }
    };
    const imageOf = async (desc: Descriptor, top: Descriptor): Promise<PreparedImage> => {
      const what = `manifest ${desc.digest}`;
      const m = blob(desc, what);
      const raw = await readSmall(m, what);
      const manifest = parseManifest(raw, what, desc.mediaType);
      const cm = blob(manifest.config, `${what} config`);
      const parsed = parseConfig(await readSmall(cm, `config ${cm.digest}`), `config ${cm.digest}`);
      use(m);
      use(cm);
      const layers = [];
      for (const [i, l] of manifest.layers.entries()) layers.push(await layerOf(blob(l, `${what} layer ${i}`), l.mediaType, `${what} layer ${i}`));
      return finishImage(
        { digest: m.digest, mediaType: desc.mediaType, size: m.size, raw, generated: false },
        { digest: cm.digest, mediaType: manifest.config.mediaType, size: cm.size, parsed },
        layers,
        await namesFor(top, cm.digest),
      );
    };
    for (const [i, desc] of index.manifests.entries()) {
      if (isManifestMediaType(desc.mediaType)) images.push(await imageOf(desc, desc));
      else if (isIndexMediaType(desc.mediaType)) {
        const what = `index ${desc.digest}`;
        const child = parseIndex(await readSmall(blob(desc, what), what), what);
        const host = hostPlatform();
        const pick = child.manifests.find((c) => isManifestMediaType(c.mediaType) && platformMatches(host, c.platform));
        if (!pick) throw new StrataError("NOT_FOUND", `${what}: no image for platform ${host.os}/${host.architecture}`);
        images.push(await imageOf(pick, desc));
      } else if (i === 0 && index.manifests.length === 1) bad(`index.json: entry 0 has unsupported mediaType ${desc.mediaType}`);
    }
  } else if (dockerEntries) {
    format = "docker-archive";
    for (const [i, e] of dockerEntries.entries()) {
      const what = `manifest.json entry ${i}`;
      const cm = lookup(e.Config, `${what} config`);
      const parsed = parseConfig(await readSmall(cm, `config ${e.Config}`), `config ${e.Config}`);
      use(cm);
      const layers = [];
      for (const [j, path] of e.Layers.entries()) {
        const m = lookup(path, `${what} layer ${j}`);
        const mediaType = m.compression === "zstd" ? MediaType.OciLayerZstd : MediaType.DockerLayerGzip;
        layers.push(await layerOf(m, mediaType, `${what} layer ${j} (${path})`));
      }
      // The manifest containers/image generates for a docker-archive, byte for byte, so digests agree with skopeo/podman.
      const raw = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.DockerManifest,
          config: { mediaType: MediaType.DockerConfig, size: cm.size, digest: cm.digest },
          layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })),
        }),
      );
      images.push(
        finishImage(
          { digest: sha256(raw), mediaType: MediaType.DockerManifest, size: raw.length, raw, generated: true },
          { digest: cm.digest, mediaType: MediaType.DockerConfig, size: cm.size, parsed },
          layers,
          e.RepoTags.map((t) => normaliseTag(t, what)),
        ),
      );
    }
  } else bad("archive has neither manifest.json (docker-archive) nor index.json (OCI layout)");
  if (images.length === 0) bad("archive holds no image");
  return { format, images, blobs: used, cleanup };
}
