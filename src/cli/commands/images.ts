import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanSize, renderTemplate, since, table } from "../format.js";
import { familiarName, parseReference } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata images [OPTIONS] [REPOSITORY[:TAG]]

List images

Options:
  -a, --all             Show all images (untagged ones are always shown)
      --digests         Show digests
      --format string   Format output using a Go template or "json"
      --no-trunc        Don't truncate output
  -q, --quiet           Only show image IDs`,
  options: {
    all: { type: "boolean", short: "a" },
    quiet: { type: "boolean", short: "q" },
    digests: { type: "boolean" },
    "no-trunc": { type: "boolean" },
    format: { type: "string" },
  },
  async run({ values, positionals }, ctx) {
    arity("images", positionals, 0, 1);
    let list = ctx.engine().images();
    if (positionals[0]) {
      const [repoPart, tagPart] = positionals[0].includes(":") && !positionals[0].endsWith("]") ? [positionals[0].slice(0, positionals[0].lastIndexOf(":")), positionals[0].slice(positionals[0].lastIndexOf(":") + 1)] : [positionals[0], undefined];
      const repo = `${parseReference(repoPart, { defaultTag: false }).domain}/${parseReference(repoPart, { defaultTag: false }).path}`;
      list = list.filter((i) => i.repository === repo && (tagPart === undefined || i.tag === tagPart));
    }
    list.sort((a, b) => (Date.parse(b.created ?? "") || 0) - (Date.parse(a.created ?? "") || 0) || b.addedAt - a.addedAt);
    const noTrunc = !!values["no-trunc"];
    const id = (d: string) => (noTrunc ? d : d.slice(7, 19));
    if (values.quiet) {
      const seen = new Set<string>();
      for (const i of list) if (!seen.has(i.id)) seen.add(i.id) && ctx.out.write(id(i.id) + "\n");
      return 0;
    }
    const now = Date.now();
    const rows = list.map((i) => {
      const repo = i.repository ? familiarName(parseReference(i.repository, { defaultTag: false })) : "<none>";
      return {
        Containers: "N/A",
        CreatedAt: i.created ?? "",
        CreatedSince: since(i.created, now),
        Digest: i.digest,
        ID: id(i.id),
        Repository: repo,
        SharedSize: "N/A",
        Size: humanSize(i.size),
        Tag: i.tag ?? "<none>",
        UniqueSize: "N/A",
        VirtualSize: humanSize(i.size),
      };
    });
    const format = values.format as string | undefined;
    if (format === "json") {
      ctx.out.write(rows.map((r) => JSON.stringify(r) + "\n").join(""));
      return 0;
    }
    if (format) {
      ctx.out.write(renderTemplate(format, rows));
      return 0;
    }
    const headers = ["REPOSITORY", "TAG", ...(values.digests ? ["DIGEST"] : []), "IMAGE ID", "CREATED", "SIZE"];
    ctx.out.write(table(headers, rows.map((r) => [r.Repository, r.Tag, ...(values.digests ? [r.Digest] : []), r.ID, r.CreatedSince, r.Size])));
    return 0;
  },
};
export default cmd;
