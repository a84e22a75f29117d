import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata top CONTAINER [ps OPTIONS]

Display the running processes of a container (ps -f unless told otherwise)`,
  options: {},
  stopAtPositional: true,
  async run({ positionals }, ctx) {
    arity("top", positionals, 1, Infinity);
    const [ref, ...psArgs] = positionals;
    ctx.out.write(ctx.engine().runtime.top(ref, psArgs.length ? psArgs : ["-f"]));
    return 0;
  },
};
export default cmd;
