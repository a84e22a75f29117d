import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanSize, since, table } from "../format.js";
import { familiarName, parseReference, splitTagged } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata system df [OPTIONS]

Show disk usage of the store: every byte counted once; a layer two images
share is counted as shared, not twice.

Options:
      --format string   "json" for machine-readable output
  -v, --verbose         Show detailed information on space usage`,
  options: { verbose: { type: "boolean", short: "v" }, format: { type: "string" } },
  async run({ values, positionals }, ctx) {
    arity("system df", positionals, 0);
    const du = await ctx.engine().diskUsage();
    if (values.format === "json") {
      ctx.out.write(JSON.stringify(du) + "\n");
      return 0;
    }
    // RECLAIMABLE is what `strata gc` would free: blobs on disk that no image references.
    const reclaim = du.unreferencedBytes;
    const onDisk = du.totalBytes + reclaim;
    const pct = onDisk > 0 ? Math.round((reclaim / onDisk) * 100) : 0;
    const shared = du.layers.filter((l) => l.images > 1);
    const writable = du.containers.reduce((a, c) => a + c.bytes, 0);
    ctx.out.write(
      table(
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        [
          ["Images", String(du.images.length), "0", humanSize(onDisk), `${humanSize(reclaim)} (${pct}%)`],
          ["Layers", String(du.layers.length), String(du.layers.length), humanSize(du.layers.reduce((a, l) => a + l.size, 0)), "0B (0%)"],
          ["Unpacked layers", String(du.snapshots.count), String(du.snapshots.count), humanSize(du.snapshots.bytes), "0B (0%)"],
          // No container runs yet, so every writable layer is reclaimable by `strata rm`.
          ["Containers", String(du.containers.length), "0", humanSize(writable), `${humanSize(writable)} (${writable ? 100 : 0}%)`],
        ],
      ),
    );
    ctx.out.write(`Shared layers: ${shared.length} (${humanSize(shared.reduce((a, l) => a + l.size, 0))} stored once, used by more than one image)\n`);
    if (!values.verbose) return 0;
    const now = Date.now();
    const rows: string[][] = [];
    for (const img of du.images) {
      const names = img.names.length ? img.names : [undefined];
      for (const n of names) {
        const { repository, tag } = n ? splitTagged(n) : { repository: undefined, tag: undefined };
        rows.push([repository ? familiarName(parseReference(repository, { defaultTag: false })) : "<none>", tag ?? "<none>", img.id.slice(7, 19), since(img.created, now), humanSize(img.size), humanSize(img.sharedSize), humanSize(img.uniqueSize), "0"]);
      }
    }
    ctx.out.write("\nImages space usage:\n\n");
    ctx.out.write(table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"], rows));
    ctx.out.write("\nContainers space usage:\n\n");
    ctx.out.write(table(["CONTAINER ID", "IMAGE", "LOCAL VOLUMES", "SIZE", "NAMES"], du.containers.map((c) => [c.id.slice(0, 12), c.image, "0", humanSize(c.bytes), c.name])));
    ctx.out.write("\nLayers space usage:\n\n");
    ctx.out.write(table(["LAYER DIGEST", "DIFF ID", "SIZE", "IMAGES"], du.layers.map((l) => [l.digest.slice(7, 19), l.diffId.slice(7, 19), humanSize(l.size), String(l.images)])));
    return 0;
  },
};
export default cmd;
