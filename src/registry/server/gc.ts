// Online garbage collection: untagged manifests and unreferenced blobs are
// removed while the registry keeps serving. Mark from the tags (through
// indexes and referrers), then sweep what is unmarked, older than the grace
// period, and untouched by any request since the collection began; a digest
// being deleted is refused to manifest pushes meanwhile (the pusher re-uploads).
import type { Digest } from "../../digest/index.js";
import type { Registry } from "./index.js";

export interface GcOptions {
  /** Content written more recently than this is kept (a push may be in progress). Default 10 minutes. */
  graceMs?: number;
  /** Upload sessions older than this are cancelled. Default 24 hours. */
  uploadMaxAgeMs?: number;
  dryRun?: boolean;
  /** Keep untagged manifests (only blobs are collected). */
  keepUntagged?: boolean;
}

export interface GcReport {
  manifests: { repository: string; digest: Digest }[];
  blobs: { digest: Digest; size: number }[];
  uploads: number;
}

export async function collectGarbage(registry: Registry, opts: GcOptions = {}): Promise<GcReport> {
  const storage = registry.storage;
  const grace = opts.graceMs ?? 10 * 60_000;
  const report: GcReport = { manifests: [], blobs: [], uploads: 0 };
  if (registry.gc.touched) throw new Error("a garbage collection is already running");
  const touched = (registry.gc.touched = new Set<Digest>());
  const started = Date.now();
  try {
    const marked = new Set<Digest>();
    for (const repo of await storage.repositories()) {
      const revisions = await storage.listLinks(repo, "revisions");
      const keep = new Set<Digest>();
      const queue: Digest[] = [];
      for (const tag of (await storage.listTags(repo)) ?? []) {
        const d = await storage.getTag(repo, tag);
        if (d) queue.push(d);
      }
      if (opts.keepUntagged) queue.push(...revisions);
      // Young manifests are roots too: an index's children are pushed before the index.
      for (const d of revisions) {
        const t = await storage.linkTime(repo, "revisions", d);
        if (t === undefined || t > started - grace) queue.push(d);
      }
      while (queue.length) {
        const d = queue.pop()!;
        if (keep.has(d)) continue;
        keep.add(d);
        const mediaType = await storage.readLink(repo, "revisions", d);
        if (mediaType === undefined) continue;
        const m = await registry.loadManifest(d, mediaType || undefined).catch(() => undefined);
        if (!m) continue;
        const isIndex = m.mediaType.includes("index") || m.mediaType.includes("list");
        if (isIndex) queue.push(...m.refs);
        // Referrers of a kept manifest (signatures, SBOMs) are kept with it.
        queue.push(...(await storage.listReferrers(repo, d)));
      }
      for (const d of revisions) {
        if (keep.has(d) || touched.has(d)) continue;
        report.manifests.push({ repository: repo, digest: d });
        if (opts.dryRun) continue;
        const m = await registry.loadManifest(d).catch(() => undefined);
        if (m?.subject) await storage.deleteReferrer(repo, m.subject, d);
        await storage.deleteLink(repo, "revisions", d);
        registry.forget(repo, d);
      }
      for (const d of keep) {
        if (!revisions.includes(d)) continue;
        marked.add(d);
        const m = await registry.loadManifest(d).catch(() => undefined);
        for (const r of m?.refs ?? []) marked.add(r);
      }
    }
    const doomed: { digest: Digest; size: number }[] = [];
    await storage.walkBlobs(async (d, mtime) => {
      if (marked.has(d) || touched.has(d) || mtime > started - grace) return;
      doomed.push({ digest: d, size: (await storage.blobSize(d)) ?? 0 });
    });
    for (const b of doomed) {
      if (touched.has(b.digest)) continue;
      report.blobs.push(b);
      if (opts.dryRun) continue;
      registry.gc.deleting.add(b.digest);
      try {
        await storage.deleteBlob(b.digest);
      } finally {
        registry.gc.deleting.delete(b.digest);
      }
    }
    if (!opts.dryRun && report.blobs.length) {
      const gone = new Set(report.blobs.map((b) => b.digest));
      for (const repo of await storage.repositories())
        for (const d of await storage.listLinks(repo, "layers")) if (gone.has(d) && !touched.has(d)) await storage.deleteLink(repo, "layers", d);
    }
    const maxAge = opts.uploadMaxAgeMs ?? 24 * 3600_000;
    for (const u of await storage.listUploads())
      if (u.startedAt < started - maxAge) {
        report.uploads++;
        if (!opts.dryRun) await storage.cancelUpload(u.id);
      }
    if (!opts.dryRun) {
      registry.metrics.gcRuns++;
      registry.metrics.gcBlobsDeleted += report.blobs.length;
      registry.metrics.gcManifestsDeleted += report.manifests.length;
    }
    return report;
  } finally {
    registry.gc.touched = undefined;
  }
}
