import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata check

Verify the store: every blob's digest and size, every image's manifest,
config and layers, every tag, meta.db's integrity and the index.json view`,
  options: {},
  async run({ positionals }, ctx) {
    arity("check", positionals, 0);
    const r = await ctx.engine().check();
    for (const p of r.repaired) ctx.err.write(`repaired: ${p}\n`);
    for (const p of r.problems) ctx.err.write(`problem: ${p}\n`);
    if (r.problems.length) {
      ctx.err.write(`Error: store check failed: ${r.problems.length} problem(s) in ${r.blobs} blobs and ${r.images} images\n`);
      return 1;
    }
    ctx.out.write(`ok: ${r.blobs} blobs and ${r.images} images verified\n`);
    return 0;
  },
};
export default cmd;
