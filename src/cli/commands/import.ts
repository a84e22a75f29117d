import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata import [OPTIONS] FILE|DIR|- [REPOSITORY[:TAG]]

Create a one-layer image from a root filesystem: a directory, or a tarball
(plain, gzip or zstd; "-" reads standard input)

Options:
  -c, --change list      Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, ...)
  -m, --message string   Set commit message for imported image
      --no-unpack        Keep the blob only; do not unpack the layer into a snapshot
      --platform string  Set platform (os/arch[/variant]) of the image`,
  options: {
    change: { type: "string", short: "c", multiple: true },
    message: { type: "string", short: "m" },
    platform: { type: "string" },
    "no-unpack": { type: "boolean" },
  },
  async run({ values, positionals }, ctx) {
    arity("import", positionals, 1, 2);
    let platform;
    if (values.platform) {
      const [os, architecture, variant] = (values.platform as string).split("/");
      if (!os || !architecture) throw new Error(`invalid platform "${values.platform}": expected os/arch[/variant]`);
      platform = { os, architecture, variant };
    }
    const img = await ctx.engine().importRootfs(positionals[0], positionals[1], {
      changes: values.change as string[] | undefined,
      message: values.message as string | undefined,
      platform,
      unpack: !values["no-unpack"],
    });
    ctx.out.write(`${img.config.digest}\n`);
    return 0;
  },
};
export default cmd;
