import type { Command } from "../main.js";
import { arity } from "../main.js";
import { familiarString, parseReference } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata rmi [OPTIONS] IMAGE [IMAGE...]

Remove one or more images. A tag is removed; the image and the blobs that
no other image references are deleted with its last tag.

Options:
  -f, --force      Force removal of the image (all of its tags)`,
  options: { force: { type: "boolean", short: "f" } },
  async run({ values, positionals }, ctx) {
    arity("rmi", positionals, 1, Infinity);
    const engine = ctx.engine();
    let failed = 0;
    for (const ref of positionals) {
      try {
        const r = await engine.rmi([ref], { force: !!values.force });
        for (const u of r.untagged) ctx.out.write(`Untagged: ${familiarString(parseReference(u))}\n`);
        for (const d of r.deleted) ctx.out.write(`Deleted: ${d}\n`);
      } catch (e) {
        ctx.err.write(`Error: ${(e as Error).message}\n`);
        failed++;
      }
    }
    return failed ? 1 : 0;
  },
};
export default cmd;
