import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanSize, renderTemplate, since, table } from "../format.js";

const cmd: Command = {
  usage: `Usage:  strata history [OPTIONS] IMAGE

Show the history of an image

Options:
      --format string   Format output using a Go template or "json"
  -H, --human           Print sizes and dates in human readable format (default true)
      --no-trunc        Don't truncate output
  -q, --quiet           Only show image IDs`,
  options: {
    format: { type: "string" },
    human: { type: "boolean", short: "H" },
    "no-trunc": { type: "boolean" },
    quiet: { type: "boolean", short: "q" },
  },
  async run({ values, positionals }, ctx) {
    arity("history", positionals, 1);
    const rows = await ctx.engine().history(positionals[0]);
    const noTrunc = !!values["no-trunc"];
    const id = (s: string) => (s === "<missing>" || noTrunc ? s : s.slice(7, 19));
    if (values.quiet) {
      ctx.out.write(rows.map((r) => id(r.id) + "\n").join(""));
      return 0;
    }
    const now = Date.now();
    const shaped = rows.map((r) => ({
      ID: id(r.id),
      CreatedAt: r.created ?? "",
      CreatedSince: since(r.created, now),
      CreatedBy: noTrunc || r.createdBy.length <= 45 ? r.createdBy : r.createdBy.slice(0, 44) + "…",
      Size: humanSize(r.size),
      Comment: r.comment,
    }));
    if (values.format === "json") ctx.out.write(shaped.map((r) => JSON.stringify(r) + "\n").join(""));
    else if (values.format) ctx.out.write(renderTemplate(values.format as string, shaped));
    else ctx.out.write(table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], shaped.map((r) => [r.ID, r.CreatedSince, r.CreatedBy, r.Size, r.Comment])));
    return 0;
  },
};
export default cmd;
