import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata logs [OPTIONS] CONTAINER

Fetch the logs of a container: its stdout on stdout, its stderr on stderr

Options:
  -f, --follow         Follow log output
  -n, --tail string    Number of lines to show from the end of the logs (default "all")
  -t, --timestamps     Show timestamps`,
  options: {
    follow: { type: "boolean", short: "f" },
    tail: { type: "string", short: "n" },
    timestamps: { type: "boolean", short: "t" },
  },
  async run({ values, positionals }, ctx) {
    arity("logs", positionals, 1);
    const tailArg = (values.tail as string | undefined) ?? "all";
    if (tailArg !== "all" && !/^-?\d+$/.test(tailArg)) throw Object.assign(new Error(`invalid value for --tail: "${tailArg}"`), { code: "USAGE" });
    const tail = tailArg === "all" || Number(tailArg) < 0 ? undefined : Number(tailArg);
    for await (const e of ctx.engine().runtime.logs(positionals[0], { tail, follow: !!values.follow })) {
      const line = values.timestamps ? `${e.time} ${e.log}` : e.log;
      (e.stream === "stderr" ? ctx.err : ctx.out).write(line);
    }
    return 0;
  },
};
export default cmd;
