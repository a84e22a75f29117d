import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata create [OPTIONS] IMAGE [COMMAND] [ARG...]

Create a new container: a writable copy-on-write layer on top of the image's
read-only layers, plus what it will run. Prints the container ID.

Options:
      --entrypoint string   Overwrite the default ENTRYPOINT of the image
  -e, --env list            Set environment variables
      --name string         Assign a name to the container
  -u, --user string         Username or UID (format: <name|uid>[:<group|gid>])
  -w, --workdir string      Working directory inside the container`,
  options: {
    name: { type: "string" },
    entrypoint: { type: "string" },
    env: { type: "string", short: "e", multiple: true },
    user: { type: "string", short: "u" },
    workdir: { type: "string", short: "w" },
  },
  async run({ values, positionals }, ctx) {
    arity("create", positionals, 1, Infinity);
    const [image, ...cmdArgs] = positionals;
    const c = await ctx.engine().containers.create(image, {
      name: values.name as string | undefined,
      cmd: cmdArgs,
      entrypoint: values.entrypoint !== undefined ? [values.entrypoint as string] : undefined,
      env: values.env as string[] | undefined,
      user: values.user as string | undefined,
      workdir: values.workdir as string | undefined,
    });
    ctx.out.write(`${c.id}\n`);
    return 0;
  },
};
export default cmd;
