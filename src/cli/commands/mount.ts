import type { Command } from "../main.js";
import { arity } from "../main.js";

const cmd: Command = {
  usage: `Usage:  strata mount CONTAINER
        strata umount CONTAINER

mount: mounts the container's merged root (image layers read-only, the
container's layer writable on top) and prints where. umount: unmounts it.`,
  options: {},
  async run({ positionals }, ctx) {
    arity(ctx.command, positionals, 1);
    const containers = ctx.engine().containers;
    const path = ctx.command === "umount" ? await containers.umount(positionals[0]) : await containers.mount(positionals[0]);
    if (ctx.command === "mount") ctx.out.write(`${path}\n`);
    return 0;
  },
};
export default cmd;
