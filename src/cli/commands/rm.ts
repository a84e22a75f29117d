import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata rm [OPTIONS] CONTAINER [CONTAINER...]

Remove one or more containers: their writable layers and nothing else

Options:
  -f, --force   Force the removal (of a mounted container)`,
  options: { force: { type: "boolean", short: "f" } },
  async run({ positionals }, ctx) {
    arity("rm", positionals, 1, Infinity);
    let failed = 0;
    for (const ref of positionals) {
      try {
        await ctx.engine().containers.remove(ref);
        ctx.out.write(`${ref}\n`);
      } catch (e) {
        ctx.err.write(`Error: ${(e as Error).message}\n`);
        failed++;
      }
    }
    return failed ? 1 : 0;
  },
};
export default cmd;
