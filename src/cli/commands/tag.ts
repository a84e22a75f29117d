import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]

Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE`,
  options: {},
  async run({ positionals }, ctx) {
    arity("tag", positionals, 2);
    ctx.engine().tag(positionals[0], positionals[1]);
    return 0;
  },
};
export default cmd;
