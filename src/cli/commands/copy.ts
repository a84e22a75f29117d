import type { Command } from "../main.js";
import { arity } from "../main.js";
import { REGISTRY_FLAGS, REGISTRY_FLAGS_USAGE, progressPrinter, registryOptions } from "../registry-flags.js";

const cmd: Command = {
  usage: `Usage:  strata copy [OPTIONS] SOURCE DESTINATION

Copy an image, blob by blob and verified, without unpacking it. Locations:
  docker://NAME[:TAG]  or  NAME[:TAG|@DIGEST]   a registry
  strata:NAME[:TAG]    (or containers-storage:)  this store (--root)
  oci:DIR[:TAG]                                  an OCI image layout directory
  oci-archive:FILE[:TAG]                         an OCI layout in a tar
  docker-archive:FILE[:NAME[:TAG]]               what docker save writes

Manifests are copied byte for byte, so the image keeps its digest (a
docker-archive source has no manifest: one is generated, as skopeo does).
With --all, a multi-platform image is copied whole: every platform's image,
then its index (not into a docker-archive, which holds one platform).

Options:
      --platform string          os/arch[/variant] to take from a multi-platform source (default: the host's)
  -a, --all                      Copy every platform of a multi-platform source, and its index
  -q, --quiet                    Print only the manifest digest
${REGISTRY_FLAGS_USAGE}`,
  options: { quiet: { type: "boolean", short: "q" }, platform: { type: "string" }, all: { type: "boolean", short: "a" }, ...REGISTRY_FLAGS },
  async run({ values, positionals }, ctx) {
    arity("copy", positionals, 2);
    const quiet = !!values.quiet;
    const r = await ctx.engine().copy(positionals[0], positionals[1], {
      ...registryOptions(values),
      platform: values.platform as string | undefined,
      all: !!values.all,
      onProgress: progressPrinter(ctx.out, ctx.err, quiet),
    });
    ctx.out.write(quiet ? `${r.digest}\n` : `Copied ${positionals[0]} to ${positionals[1]}: ${r.digest}\n`);
    return 0;
  },
};
export default cmd;
