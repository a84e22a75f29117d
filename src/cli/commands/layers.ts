import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanSize, table } from "../format.js";
import { familiarString, parseReference } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata layers [OPTIONS] IMAGE

Show an image's layers, bottom first: digest, size, what created each, and
the other local images that share it (stored once)

Options:
      --format string   "json" for machine-readable output
      --no-trunc        Don't truncate digests`,
  options: { format: { type: "string" }, "no-trunc": { type: "boolean" } },
  async run({ values, positionals }, ctx) {
    arity("layers", positionals, 1);
    const engine = ctx.engine();
    const img = engine.image(positionals[0]);
    const [rows, config] = await Promise.all([img.layerRows(), img.config()]);
    const history = (config.history ?? []).filter((h) => !h.empty_layer);
    const sharers = engine.meta.db.prepare(
      "SELECT DISTINCT il.image FROM image_layers il WHERE il.layer = ? AND il.image != ?",
    );
    const out = rows.map((l, i) => {
      const others = (sharers.all(l.digest, img.digest) as { image: string }[]).flatMap((r) => {
        const tags = engine.meta.tagsOf(r.image);
        return tags.length ? tags.map((t) => familiarString(parseReference(t))) : [r.image.slice(7, 19)];
      });
      return { index: i, digest: l.digest, diffID: l.diff_id, chainID: l.chain_id, mediaType: l.media_type, size: l.size, uncompressedSize: l.uncompressed_size, createdBy: history[i]?.created_by ?? "", sharedWith: others };
    });
    if (values.format === "json") {
      ctx.out.write(JSON.stringify(out, null, 2) + "\n");
      return 0;
    }
    const t = (d: string) => (values["no-trunc"] ? d : d.slice(7, 19));
    ctx.out.write(
      table(
        ["#", "DIGEST", "DIFF ID", "SIZE", "CREATED BY", "SHARED WITH"],
        out.map((l) => [String(l.index), t(l.digest), t(l.diffID), humanSize(l.size), l.createdBy.length > 40 ? l.createdBy.slice(0, 39) + "…" : l.createdBy, l.sharedWith.join(", ") || "-"]),
      ),
    );
    return 0;
  },
};
export default cmd;
