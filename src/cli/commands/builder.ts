import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanSize } from "../format.js";

const cmd: Command = {
  usage: `Usage:  strata builder prune

Remove the build cache: every cached step, then the layers only the cache kept`,
  options: { all: { type: "boolean", short: "a" }, force: { type: "boolean", short: "f" } },
  async run({ positionals }, ctx) {
    arity("builder prune", positionals, 0);
    const engine = ctx.engine();
    const n = engine.meta.write(() => engine.meta.db.prepare("DELETE FROM build_cache").run().changes);
    const r = await engine.gc();
    const total = r.blobs.reduce((a, b) => a + b.size, 0) + r.ingests.bytes;
    ctx.out.write(`Deleted build cache entries: ${n}\nTotal reclaimed space: ${humanSize(total)}\n`);
    return 0;
  },
};
export default cmd;
