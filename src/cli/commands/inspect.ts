import type { Command } from "../main.js";
import { arity } from "../main.js";
import { renderTemplate } from "../format.js";

const cmd: Command = {
  usage: `Usage:  strata inspect [OPTIONS] IMAGE [IMAGE...]

Display detailed information on one or more images

Options:
  -f, --format string   Format output using a Go template`,
  options: { format: { type: "string", short: "f" }, type: { type: "string" } },
  async run({ values, positionals }, ctx) {
    arity("inspect", positionals, 1, Infinity);
    const engine = ctx.engine();
    const results: Record<string, unknown>[] = [];
    let failed = 0;
    for (const ref of positionals) {
      try {
        results.push(await engine.inspect(ref));
      } catch (e) {
        ctx.err.write(`Error: ${(e as Error).message}\n`);
        failed++;
      }
    }
    if (values.format && values.format !== "json") ctx.out.write(renderTemplate(values.format as string, results));
    else ctx.out.write(JSON.stringify(results, null, 4) + "\n");
    return failed ? 1 : 0;
  },
};
export default cmd;
