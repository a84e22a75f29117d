import type { Command } from "../main.js";
import { arity } from "../main.js";

/** Decimal sizes with four significant digits, as Docker's progress line prints them. */
function humanSize(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${Number(n.toPrecision(4))}${units[i]}`;
}

const cmd: Command = {
  usage: `Usage:  strata cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
        strata cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH

Copy files/folders between a container and the local filesystem

Use '-' as the source to read a tar archive from stdin
and extract it to a directory destination in a container.
Use '-' as the destination to stream a tar archive of a
container source to stdout.

Options:
  -a, --archive       Archive mode (copy all uid/gid information)
  -L, --follow-link   Always follow symbol link in SRC_PATH
  -q, --quiet         Suppress progress output during copy. Progress
                      output is automatically suppressed if no terminal
                      is attached`,
  options: {
    archive: { type: "boolean", short: "a" },
    "follow-link": { type: "boolean", short: "L" },
    quiet: { type: "boolean", short: "q" },
  },
  async run({ values, positionals }, ctx) {
    arity("cp", positionals, 2);
    const [src, dst] = positionals;
    const { cp } = await import("../../engine/cp.js");
    const r = await cp(ctx.engine(), src, dst, { archive: !!values.archive, followLink: !!values["follow-link"] });
    if (!values.quiet && dst !== "-") {
      const { isatty } = await import("node:tty");
      if (isatty(2)) ctx.err.write(`Successfully copied ${humanSize(r.bytes)} to ${dst}\n`);
    }
    return 0;
  },
};
export default cmd;
