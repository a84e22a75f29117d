import type { Command } from "../main.js";
import { arity } from "../main.js";
import { REGISTRY_FLAGS, REGISTRY_FLAGS_USAGE, progressPrinter, registryOptions } from "../registry-flags.js";
import { familiarString, parseReference } from "../../reference/index.js";

const cmd: Command = {
  usage: `Usage:  strata pull [OPTIONS] NAME[:TAG|@DIGEST]

Download an image from a registry

Options:
      --platform string          os/arch[/variant] to pick from a multi-platform image (default: the host's)
      --all-platforms            Store every platform's image and the index (only --platform's is tagged and unpacked)
      --no-unpack                Keep the blobs only; do not unpack layers into snapshots
  -q, --quiet                    Print only the image reference
${REGISTRY_FLAGS_USAGE}`,
  options: { quiet: { type: "boolean", short: "q" }, platform: { type: "string" }, "all-platforms": { type: "boolean" }, "no-unpack": { type: "boolean" }, ...REGISTRY_FLAGS },
  async run({ values, positionals }, ctx) {
    arity("pull", positionals, 1);
    const ref = parseReference(positionals[0]);
    const quiet = !!values.quiet;
    const name = familiarString(ref);
    if (!quiet) ctx.out.write(ref.digest ? `${ref.digest}: Pulling from ${familiarString({ ...ref, tag: undefined, digest: undefined })}\n` : `${ref.tag}: Pulling from ${familiarString({ ...ref, tag: undefined })}\n`);
    const r = await ctx.engine().pull(positionals[0], {
      ...registryOptions(values),
      platform: values.platform as string | undefined,
      allPlatforms: !!values["all-platforms"],
      unpack: !values["no-unpack"],
      onProgress: progressPrinter(ctx.out, ctx.err, quiet),
    });
    if (!quiet) {
      ctx.out.write(`Digest: ${r.digest}\n`);
      ctx.out.write(r.upToDate ? `Status: Image is up to date for ${name}\n` : `Status: Downloaded newer image for ${name}\n`);
    }
    ctx.out.write(`${r.reference}\n`);
    return 0;
  },
};
export default cmd;
