import type { Command } from "../main.js";
import { arity } from "../main.js";
import { createFlags, createFlagsUsage, createFromArgs } from "./run.js";

const cmd: Command = {
  usage: `Usage:  strata create [OPTIONS] IMAGE [COMMAND] [ARG...]

Create a new container: a writable copy-on-write layer on top of the image's
read-only layers, plus what it will run. Prints the container ID.

Options:
${createFlagsUsage}`,
  options: createFlags,
  stopAtPositional: true,
  async run({ values, positionals }, ctx) {
    arity("create", positionals, 1, Infinity);
    const c = await createFromArgs(values, positionals, ctx);
    ctx.out.write(`${c.id}\n`);
    return 0;
  },
};
export default cmd;
