import type { Command } from "../main.js";
import { arity } from "../main.js";
import { renderTemplate, table } from "../format.js";

export const commands: Record<string, Command> = {
  "volume create": {
    usage: `Usage:  strata volume create [OPTIONS] [VOLUME]

Create a volume (a directory under the data root, seeded from the image on first use)

Options:
      --label list   Set metadata for a volume (KEY=VALUE)`,
    options: { label: { type: "string", multiple: true } },
    async run({ values, positionals }, ctx) {
      arity("volume create", positionals, 0, 1);
      const labels = Object.fromEntries(((values.label as string[] | undefined) ?? []).map((l) => [l.split("=")[0], l.split("=").slice(1).join("=")]));
      ctx.out.write(`${ctx.engine().runtime.volumes.create(positionals[0], labels).Name}\n`);
      return 0;
    },
  },
  "volume ls": {
    usage: `Usage:  strata volume ls [OPTIONS]

List volumes

Options:
      --format string   Format output using a Go template or "json"
  -q, --quiet           Only display volume names`,
    options: { quiet: { type: "boolean", short: "q" }, format: { type: "string" } },
    async run({ values, positionals }, ctx) {
      arity("volume ls", positionals, 0);
      const vols = ctx.engine().runtime.volumes.list();
      if (values.quiet) ctx.out.write(vols.map((v) => v.Name + "\n").join(""));
      else if (values.format === "json") ctx.out.write(vols.map((v) => JSON.stringify(v) + "\n").join(""));
      else if (values.format) ctx.out.write(renderTemplate(values.format as string, vols as unknown as Record<string, unknown>[]));
      else ctx.out.write(table(["DRIVER", "VOLUME NAME"], vols.map((v) => [v.Driver, v.Name])));
      return 0;
    },
  },
  "volume inspect": {
    usage: `Usage:  strata volume inspect VOLUME [VOLUME...]

Display detailed information on one or more volumes`,
    options: {},
    async run({ positionals }, ctx) {
      arity("volume inspect", positionals, 1, Infinity);
      const vols = positionals.map((n) => ctx.engine().runtime.volumes.inspect(n));
      ctx.out.write(JSON.stringify(vols, null, 4) + "\n");
      return 0;
    },
  },
  "volume rm": {
    usage: `Usage:  strata volume rm [OPTIONS] VOLUME [VOLUME...]

Remove one or more volumes (not while a container uses them, unless forced)

Options:
  -f, --force   Force the removal of one or more volumes`,
    options: { force: { type: "boolean", short: "f" } },
    async run({ values, positionals }, ctx) {
      arity("volume rm", positionals, 1, Infinity);
      let failed = 0;
      for (const n of positionals) {
        try {
          ctx.engine().runtime.volumes.remove(n, !!values.force);
          ctx.out.write(`${n}\n`);
        } catch (e) {
          ctx.err.write(`Error: ${(e as Error).message}\n`);
          failed++;
        }
      }
      return failed ? 1 : 0;
    },
  },
};
