import { closeSync, fsyncSync, openSync, renameSync, writeSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import type { MetaStore } from "../metastore/index.js";
import { ANNOTATION_REF_NAME, MediaType, type Descriptor, type Index } from "../oci/index.js";

export const OCI_LAYOUT = JSON.stringify({ imageLayoutVersion: "1.0.0" });

/** Writes a file atomically and durably: temp file in the same directory, fsync, rename. */
export function writeFileAtomicSync(path: string, data: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * The root's index.json, a view of meta.db: one entry per tag (annotated
 * with the full reference) and one per untagged image, sorted, so skopeo and
 * umoci read images straight out of the store.
 */
export function renderIndex(meta: MetaStore): string {
  const manifests: Descriptor[] = [];
  const images = new Map(meta.images().map((i) => [i.digest, i]));
  const tagged = new Set<string>();
  for (const t of meta.tags()) {
    const img = images.get(t.image);
    if (!img) continue;
    tagged.add(img.digest);
    manifests.push({ mediaType: img.media_type, digest: img.digest, size: img.size, annotations: { [ANNOTATION_REF_NAME]: t.name } });
  }
  for (const img of [...images.values()].sort((a, b) => a.digest.localeCompare(b.digest)))
    if (!tagged.has(img.digest)) manifests.push({ mediaType: img.media_type, digest: img.digest, size: img.size });
  const index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  return JSON.stringify(index);
}

/** Rewrites index.json from meta.db. Called inside the write transaction, so views never go backwards. */
export function writeIndexView(root: string, meta: MetaStore): void {
  writeFileAtomicSync(join(root, "index.json"), renderIndex(meta));
}

export function ensureLayoutFiles(root: string, meta: MetaStore): void {
  const layout = join(root, "oci-layout");
  if (!existsSync(layout) || readFileSync(layout, "utf8") !== OCI_LAYOUT) writeFileAtomicSync(layout, OCI_LAYOUT);
  if (!existsSync(join(root, "index.json"))) writeIndexView(root, meta);
}
