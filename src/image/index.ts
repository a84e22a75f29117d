import type { Readable } from "node:stream";
import type { ContentStore } from "../content/index.js";
import type { MetaStore, ImageRow, ImageLayerRow } from "../metastore/index.js";
import { StrataError } from "../errors/index.js";
import type { Digest } from "../digest/index.js";
import { MAX_MANIFEST_BYTES, parseConfig, parseManifest, type ImageConfig, type Manifest } from "../oci/index.js";

/** A layer: compressed bytes by digest, uncompressed bytes by diffID. Opening does the I/O. */
export interface Layer {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  readonly diffId: Digest;
  readonly uncompressedSize: number;
  open(): Promise<Readable>;
  uncompressed(): Promise<Readable>;
  /**
   * The same uncompressed bytes, verified, as chunks that may be overwritten
   * once the next is asked for (a layer stored plain is read into one reused
   * buffer, with no stream): for readers that copy what they keep, as
   * readTar does.
   */
  diffChunks(): Promise<AsyncIterable<Buffer>>;
}

/** An image, lazy like go-containerregistry's v1.Image: construction does no I/O; accessors are memoised. */
export interface Image {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  rawManifest(): Promise<Buffer>;
  manifest(): Promise<Manifest>;
  rawConfig(): Promise<Buffer>;
  config(): Promise<ImageConfig>;
  layers(): Promise<Layer[]>;
}

function memo<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= fn());
}

/** An image in the local store: metadata from meta.db, bytes from the content store, every read verified. */
export class StoreImage implements Image {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  constructor(
    private readonly content: ContentStore,
    private readonly meta: MetaStore,
    readonly row: ImageRow,
  ) {
    this.digest = row.digest;
    this.mediaType = row.media_type;
    this.size = row.size;
  }

  get id(): Digest {
    return this.row.config_digest;
  }

  rawManifest = memo(async () => this.content.read(this.row.digest, MAX_MANIFEST_BYTES, this.row.size));
  manifest = memo(async () => parseManifest(await this.rawManifest(), `manifest ${this.digest}`, this.mediaType));
  rawConfig = memo(async () => this.content.read(this.row.config_digest, MAX_MANIFEST_BYTES, this.row.config_size));
  config = memo(async () => parseConfig(await this.rawConfig(), `config ${this.row.config_digest}`));
  layerRows = memo(async () => this.meta.layersOf(this.digest));
  layers = memo(async () => (await this.layerRows()).map((r) => storeLayer(this.content, r)));
}

export function storeLayer(content: ContentStore, r: ImageLayerRow): Layer {
  const layer: Layer = {
    digest: r.digest,
    mediaType: r.media_type,
    size: r.size,
    diffId: r.diff_id,
    uncompressedSize: r.uncompressed_size,
    open: () => content.open(r.digest, r.size),
    diffChunks: async () => (r.digest === r.diff_id && r.size === r.uncompressed_size ? content.chunks(r.digest, r.size) : layer.uncompressed()),
    uncompressed: async () => {
      // A blob stored uncompressed is its own diff: the store's verified read checks it once.
      if (r.digest === r.diff_id && r.size === r.uncompressed_size) return content.open(r.digest, r.size);
      const [{ decompress }, { VerifyStream }] = await Promise.all([import("../archive/compression.js"), import("../digest/stream.js")]);
      const plain = await decompress(await content.open(r.digest, r.size));
      const verify = new VerifyStream({ digest: r.diff_id, size: r.uncompressed_size }, `layer ${r.digest} (uncompressed)`);
      plain.on("error", (e: NodeJS.ErrnoException) =>
        verify.destroy(e.code?.startsWith("Z_") ? new StrataError("CORRUPT", `layer ${r.digest}: corrupt compressed data (${e.message})`, { cause: e }) : e),
      );
      // Destroying what the caller holds closes everything below it (the blob's file handle included).
      verify.on("close", () => plain.destroy());
      return plain.pipe(verify);
    },
  };
  return layer;
}

export function notFound(ref: string): StrataError {
  return new StrataError("NOT_FOUND", `No such image: ${ref}`);
}
