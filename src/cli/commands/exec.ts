import type { Command } from "../main.js";
import { arity } from "../main.js";
import { parseEnvFile } from "./run.js";

const cmd: Command = {
  usage: `Usage:  strata exec [OPTIONS] CONTAINER COMMAND [ARG...]

Execute a command in a running container; exits with its exit code

Options:
  -e, --env list          Set environment variables
      --env-file list     Read in a file of environment variables
  -i, --interactive       Keep STDIN open
  -t, --tty               Allocate a pseudo-TTY
  -u, --user string       Username or UID (format: <name|uid>[:<group|gid>])
  -w, --workdir string    Working directory inside the container`,
  options: {
    env: { type: "string", short: "e", multiple: true },
    "env-file": { type: "string", multiple: true },
    interactive: { type: "boolean", short: "i" },
    tty: { type: "boolean", short: "t" },
    user: { type: "string", short: "u" },
    workdir: { type: "string", short: "w" },
  },
  stopAtPositional: true,
  async run({ values, positionals }, ctx) {
    arity("exec", positionals, 2, Infinity);
    const [ref, ...command] = positionals;
    if (values.tty && !process.stdin.isTTY) throw Object.assign(new Error("the input device is not a TTY"), { exitCode: 1 });
    const env = [...((values["env-file"] as string[] | undefined) ?? []).flatMap(parseEnvFile), ...((values.env as string[] | undefined) ?? [])];
    try {
      return await ctx.engine().runtime.exec(ref, command, {
        tty: !!values.tty,
        stdin: !!values.interactive,
        env,
        user: values.user as string | undefined,
        workdir: values.workdir as string | undefined,
      });
    } catch (e) {
      if (typeof (e as { exitCode?: number }).exitCode !== "number") Object.assign(e as Error, { exitCode: (e as { code?: string }).code === "NOT_FOUND" || (e as { code?: string }).code === "CONFLICT" ? 1 : 125 });
      throw e;
    }
  },
};
export default cmd;
