import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata diff CONTAINER

Inspect changes to files or directories on a container's filesystem:
A added, C changed, D deleted (as docker diff prints them)`,
  options: {},
  async run({ positionals }, ctx) {
    arity("diff", positionals, 1);
    const changes = await ctx.engine().containers.diff(positionals[0]);
    ctx.out.write(changes.map((c) => `${c.kind} ${c.path}\n`).join(""));
    return 0;
  },
};
export default cmd;
