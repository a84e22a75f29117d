import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata rm [OPTIONS] CONTAINER [CONTAINER...]

Remove one or more containers: their writable layers and nothing else

Options:
  -f, --force     Force the removal of a running container (uses SIGKILL)
  -v, --volumes   Remove anonymous volumes associated with the container`,
  options: { force: { type: "boolean", short: "f" }, volumes: { type: "boolean", short: "v" } },
  async run({ values, positionals }, ctx) {
    arity("rm", positionals, 1, Infinity);
    let failed = 0;
    for (const ref of positionals) {
      try {
        await ctx.engine().runtime.remove(ref, !!values.force, !!values.volumes);
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
