import type { Command } from "../main.js";
import { arity, UsageError } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata save [OPTIONS] IMAGE [IMAGE...]

Save one or more images to a tar archive (streamed to STDOUT by default)

Options:
      --format string   docker-archive (default) or oci-archive
  -o, --output string   Write to a file, instead of STDOUT`,
  options: { output: { type: "string", short: "o" }, format: { type: "string" } },
  async run({ values, positionals }, ctx) {
    arity("save", positionals, 1, Infinity);
    const format = (values.format as string | undefined) ?? "docker-archive";
    if (format !== "docker-archive" && format !== "oci-archive") throw new UsageError(`invalid format "${format}": docker-archive or oci-archive`);
    const output = values.output as string | undefined;
    if (!output && process.stdout.isTTY) throw new UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    const engine = ctx.engine();
    if (!output) {
      await engine.save(positionals, process.stdout, format);
      return 0;
    }
    const { writeOutputFile } = await import("../../engine/output.js");
    await writeOutputFile(output, (out) => engine.save(positionals, out, format));
    return 0;
  },
};
export default cmd;
