import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanSize } from "../format.js";

const cmd: Command = {
  usage: `Usage:  strata gc

Remove blobs that no image references and partial writes whose writer is gone`,
  options: {},
  async run({ positionals }, ctx) {
    arity("gc", positionals, 0);
    const r = await ctx.engine().gc();
    for (const b of r.blobs) ctx.out.write(`Deleted: ${b.digest}\n`);
    const total = r.blobs.reduce((a, b) => a + b.size, 0) + r.ingests.bytes;
    ctx.out.write(`Total reclaimed space: ${humanSize(total)}\n`);
    return 0;
  },
};
export default cmd;
