import type { Command } from "../main.js";
import { arity } from "../main.js";
import { familiarString, parseReference } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata load [OPTIONS]

Load images from a tar archive (docker-archive or oci-archive, plain or
gzip-compressed) or STDIN

Options:
  -i, --input string   Read from tar archive file, instead of STDIN
      --no-unpack      Keep the blobs only; do not unpack layers into snapshots
  -q, --quiet          Suppress the load output`,
  options: { input: { type: "string", short: "i" }, quiet: { type: "boolean", short: "q" }, "no-unpack": { type: "boolean" } },
  async run({ values, positionals }, ctx) {
    arity("load", positionals, 0);
    const input = (values.input as string | undefined) ?? "-";
    if (input === "-" && process.stdin.isTTY) throw new Error("requested load from stdin, but stdin is empty");
    const images = await ctx.engine().load(input, { unpack: !values["no-unpack"] });
    if (values.quiet) return 0;
    for (const img of images) {
      if (img.tags.length === 0) ctx.out.write(`Loaded image ID: ${img.config.digest}\n`);
      for (const t of img.tags) ctx.out.write(`Loaded image: ${familiarString(parseReference(t))}\n`);
    }
    return 0;
  },
};
export default cmd;
