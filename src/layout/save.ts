import type { Writable, Readable } from "node:stream";
import { TarWriter } from "../archive/tar.js";
import { digestHex } from "../digest/index.js";
import type { Image } from "../image/index.js";
import { ANNOTATION_REF_NAME, MediaType, type Descriptor } from "../oci/index.js";
import { familiarString, parseReference } from "../reference/index.js";
import { OCI_LAYOUT } from "./view.js";

export type ArchiveFormat = "docker-archive" | "oci-archive";

export interface NamedImage {
  image: Image;
  /** normalised references to record in the archive */
  names: string[];
}

/**
 * Writes images as one archive. docker-archive: uncompressed layers named by
 * diffID, configs by digest, manifest.json (what `docker load` and
 * `podman load` read). oci-archive: an OCI image layout, blobs as stored.
 * Shared layers are written once. Headers are normalised: same images, same bytes.
 */
export async function writeArchive(images: NamedImage[], format: ArchiveFormat, out: Writable): Promise<void> {
  const tar = new TarWriter();
  const done = new Promise<void>((resolve, reject) => {
    out.on("error", (e) => {
      tar.fail(e, "writing the archive"); // a writer waiting for room gives up
      reject(e);
    });
    tar.stream.on("error", reject);
    out.on("finish", resolve);
    out.on("close", resolve);
  });
  done.catch(() => {}); // awaited below on success; on failure the first error is thrown instead
  tar.stream.pipe(out);
  const written = new Set<string>();
  const header = (name: string, size: number) => ({ name, type: "file" as const, size, mode: 0o444, uid: 0, gid: 0, mtime: 0 });
  const file = (name: string, body: Buffer) => tar.add(header(name, body.length), body);
  const stream = async (name: string, size: number, open: () => Promise<Readable>) => {
    const src = await open();
    try {
      await tar.add(header(name, size), src);
    } finally {
      src.destroy(); // read to its end already, unless the archive failed first
    }
  };

  try {
    if (format === "docker-archive") {
      const entries: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
      for (const { image, names } of images) {
        const manifest = await image.manifest();
        const configName = `${digestHex(manifest.config.digest)}.json`;
        if (!written.has(configName)) {
          await file(configName, await image.rawConfig());
          written.add(configName);
        }
        const layerNames: string[] = [];
        for (const layer of await image.layers()) {
          const name = `${digestHex(layer.diffId)}.tar`;
          if (!written.has(name)) {
            await stream(name, layer.uncompressedSize, () => layer.uncompressed());
            written.add(name);
          }
          layerNames.push(name);
        }
        entries.push({ Config: configName, RepoTags: names.map((n) => familiarString(parseReference(n))), Layers: layerNames });
      }
      await file("manifest.json", Buffer.from(JSON.stringify(entries)));
    } else {
      const manifests: Descriptor[] = [];
      const blob = async (d: { digest: string; size: number }, open: () => Promise<Readable>) => {
        const name = `blobs/sha256/${digestHex(d.digest as `sha256:${string}`)}`;
        if (written.has(name)) return;
        await stream(name, d.size, open);
        written.add(name);
      };
      for (const { image, names } of images) {
        const manifest = await image.manifest();
        for (const layer of await image.layers()) await blob(layer, () => layer.open());
        const config = await image.rawConfig();
        await blob(manifest.config, async () => (await import("node:stream")).Readable.from([config]));
        const raw = await image.rawManifest();
        await blob({ digest: image.digest, size: raw.length }, async () => (await import("node:stream")).Readable.from([raw]));
        const desc = { mediaType: image.mediaType, digest: image.digest, size: image.size };
        if (names.length === 0) manifests.push(desc);
        for (const n of names) manifests.push({ ...desc, annotations: { [ANNOTATION_REF_NAME]: n } });
      }
      await file("index.json", Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests })));
      await file("oci-layout", Buffer.from(OCI_LAYOUT));
    }
    tar.finish();
  } catch (e) {
    tar.fail(e, "save");
    throw e;
  }
  await done;
}
