import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]

Create a new image from a container's changes: one new layer on top of the
image's layers, with a history entry

Options:
  -a, --author string    Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
  -c, --change list      Apply Dockerfile instruction to the created image
  -m, --message string   Commit message`,
  options: {
    author: { type: "string", short: "a" },
    change: { type: "string", short: "c", multiple: true },
    message: { type: "string", short: "m" },
  },
  async run({ values, positionals }, ctx) {
    arity("commit", positionals, 1, 2);
    const img = await ctx.engine().commitContainer(positionals[0], positionals[1], {
      author: values.author as string | undefined,
      changes: values.change as string[] | undefined,
      message: values.message as string | undefined,
    });
    ctx.out.write(`${img.config.digest}\n`);
    return 0;
  },
};
export default cmd;
