import { StrataError } from "../errors/index.js";
import { isDigest, type Digest } from "../digest/index.js";

export const MediaType = {
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

/** Manifests and configs are buffered; anything larger than this is refused (as registries do). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface Manifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  config?: {
    User?: string;
    ExposedPorts?: Record<string, object>;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    Volumes?: Record<string, object>;
    WorkingDir?: string;
    Labels?: Record<string, string>;
    StopSignal?: string;
    [k: string]: unknown;
  };
  rootfs: { type: "layers"; diff_ids: Digest[] };
  history?: HistoryEntry[];
  [k: string]: unknown;
}

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}

export function isCompressedLayerMediaType(mt: string): "gzip" | "zstd" | undefined {
  if (mt.endsWith("+gzip") || mt.endsWith(".tar.gzip")) return "gzip";
  if (mt.endsWith("+zstd")) return "zstd";
  return undefined;
}

function fail(code: "INVALID_MANIFEST" | "INVALID_CONFIG", what: string, why: string): never {
  throw new StrataError(code, `${what}: ${why}`);
}

function parseJson(raw: Buffer, code: "INVALID_MANIFEST" | "INVALID_CONFIG", what: string): unknown {
  if (raw.length > MAX_MANIFEST_BYTES) fail(code, what, `larger than ${MAX_MANIFEST_BYTES} bytes`);
  try {
    return JSON.parse(raw.toString("utf8"));
  } catch (e) {
    fail(code, what, `not valid JSON (${(e as Error).message})`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function validateDescriptor(v: unknown, what: string): Descriptor {
  if (!isObject(v)) fail("INVALID_MANIFEST", what, "descriptor is not an object");
  if (typeof v.mediaType !== "string" || v.mediaType === "") fail("INVALID_MANIFEST", what, "descriptor has no mediaType");
  if (typeof v.digest !== "string" || !isDigest(v.digest)) fail("INVALID_MANIFEST", what, `descriptor has an invalid digest ${JSON.stringify(v.digest)}`);
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0) fail("INVALID_MANIFEST", what, `descriptor ${v.digest} has an invalid size`);
  if (v.annotations !== undefined && !isObject(v.annotations)) fail("INVALID_MANIFEST", what, "annotations is not an object");
  return v as unknown as Descriptor;
}

/** Parses and validates an image manifest; `mediaTypeHint` comes from the descriptor that pointed at it. */
export function parseManifest(raw: Buffer, what = "manifest", mediaTypeHint?: string): Manifest {
  const v = parseJson(raw, "INVALID_MANIFEST", what);
  if (!isObject(v)) fail("INVALID_MANIFEST", what, "not a JSON object");
  if (v.schemaVersion !== 2) fail("INVALID_MANIFEST", what, `unsupported schemaVersion ${JSON.stringify(v.schemaVersion)}`);
  const mt = (v.mediaType as string | undefined) ?? mediaTypeHint;
  if (mt !== undefined && !isManifestMediaType(mt)) fail("INVALID_MANIFEST", what, `not an image manifest (mediaType ${mt})`);
  if (mediaTypeHint && v.mediaType !== undefined && v.mediaType !== mediaTypeHint)
    fail("INVALID_MANIFEST", what, `mediaType ${String(v.mediaType)} differs from its descriptor's ${mediaTypeHint}`);
  if (!Array.isArray(v.layers)) fail("INVALID_MANIFEST", what, "layers is not an array");
  validateDescriptor(v.config, `${what} config`);
  v.layers.forEach((l, i) => validateDescriptor(l, `${what} layer ${i}`));
  return v as unknown as Manifest;
}

export function parseIndex(raw: Buffer, what = "index"): Index {
  const v = parseJson(raw, "INVALID_MANIFEST", what);
  if (!isObject(v)) fail("INVALID_MANIFEST", what, "not a JSON object");
  if (v.schemaVersion !== 2) fail("INVALID_MANIFEST", what, `unsupported schemaVersion ${JSON.stringify(v.schemaVersion)}`);
  if (v.mediaType !== undefined && !isIndexMediaType(v.mediaType as string))
    fail("INVALID_MANIFEST", what, `not an image index (mediaType ${String(v.mediaType)})`);
  if (!Array.isArray(v.manifests)) fail("INVALID_MANIFEST", what, "manifests is not an array");
  v.manifests.forEach((m, i) => validateDescriptor(m, `${what} entry ${i}`));
  return v as unknown as Index;
}

export function parseConfig(raw: Buffer, what = "config"): ImageConfig {
  const v = parseJson(raw, "INVALID_CONFIG", what);
  if (!isObject(v)) fail("INVALID_CONFIG", what, "not a JSON object");
  if (typeof v.architecture !== "string" || typeof v.os !== "string") fail("INVALID_CONFIG", what, "architecture and os are required");
  const rootfs = v.rootfs;
  if (!isObject(rootfs) || rootfs.type !== "layers" || !Array.isArray(rootfs.diff_ids))
    fail("INVALID_CONFIG", what, "rootfs.diff_ids is missing");
  for (const d of rootfs.diff_ids) if (typeof d !== "string" || !isDigest(d)) fail("INVALID_CONFIG", what, `invalid diff_id ${JSON.stringify(d)}`);
  if (v.config !== undefined && v.config !== null && !isObject(v.config)) fail("INVALID_CONFIG", what, "config is not an object");
  if (v.history !== undefined && !Array.isArray(v.history)) fail("INVALID_CONFIG", what, "history is not an array");
  return v as unknown as ImageConfig;
}

/** The host's platform in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
  return { os: "linux", architecture: arch[process.arch] ?? process.arch };
}

export function platformString(p: { os: string; architecture: string; variant?: string }): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  return want.os === have.os && want.architecture === have.architecture && (!want.variant || want.variant === have.variant);
}
