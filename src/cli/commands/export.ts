import type { Command } from "../main.js";
import { arity, UsageError } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata export [OPTIONS] CONTAINER

Export a container's filesystem (the merged view) as a tar archive

Options:
  -o, --output string   Write to a file, instead of STDOUT`,
  options: { output: { type: "string", short: "o" } },
  async run({ values, positionals }, ctx) {
    arity("export", positionals, 1);
    const output = values.output as string | undefined;
    if (!output && process.stdout.isTTY) throw new UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    const tar = await ctx.engine().containers.export(positionals[0]);
    const { pipeline } = await import("node:stream/promises");
    if (!output) {
      await pipeline(tar, process.stdout);
      return 0;
    }
    const { writeOutputFile } = await import("../../engine/output.js");
    await writeOutputFile(output, (out) => pipeline(tar, out));
    return 0;
  },
};
export default cmd;
