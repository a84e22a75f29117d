import type { Command } from "../main.js";
import { arity } from "../main.js";
import { REGISTRY_FLAGS, REGISTRY_FLAGS_USAGE, progressPrinter, registryOptions } from "../registry-flags.js";
import { familiarString, parseReference } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata push [OPTIONS] IMAGE [DESTINATION]

Upload an image to a registry (under DESTINATION, NAME[:TAG], when given;
else under IMAGE's own name)

Options:
  -q, --quiet                    Print only the pushed reference and digest
${REGISTRY_FLAGS_USAGE}`,
  options: { quiet: { type: "boolean", short: "q" }, ...REGISTRY_FLAGS },
  async run({ values, positionals }, ctx) {
    arity("push", positionals, 1, 2);
    const dest = parseReference(positionals[1] ?? positionals[0]);
    const quiet = !!values.quiet;
    if (!quiet) ctx.out.write(`The push refers to repository [${familiarString({ ...dest, tag: undefined, digest: undefined })}]\n`);
    const r = await ctx.engine().push(positionals[0], positionals[1], { ...registryOptions(values), onProgress: progressPrinter(ctx.out, ctx.err, quiet) });
    if (quiet) ctx.out.write(`${r.reference}@${r.digest}\n`);
    else ctx.out.write(`${dest.tag ?? dest.digest}: digest: ${r.digest} size: ${r.size}\n`);
    return 0;
  },
};
export default cmd;
