import type { Command } from "../main.js";
import { arity } from "../main.js";

/** `strata __monitor ID`: started by `run -d`/`start`, supervises the container until it exits (like Podman's conmon). */
const cmd: Command = {
  usage: "Usage:  strata __monitor CONTAINER-ID (internal)",
  options: {},
  async run({ positionals }, ctx) {
    arity("__monitor", positionals, 1);
    await ctx.engine().runtime.monitor(positionals[0]);
    return 0;
  },
};
export default cmd;
