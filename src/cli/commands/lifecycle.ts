import type { Command, Ctx } from "../main.js";
import { arity } from "../main.js";

/** Runs `op` for every container named, Docker style: prints each ref that worked, reports each that failed, exit 1 if any did. */
async function each(ctx: Ctx, refs: string[], op: (ref: string) => Promise<string | undefined>): Promise<number> {
  let failed = 0;
  for (const ref of refs) {
    try {
      const line = await op(ref);
      if (line !== undefined) ctx.out.write(`${line}\n`);
    } catch (e) {
      ctx.err.write(`Error: ${(e as Error).message.split("\n")[0]}\n`);
      failed++;
    }
  }
  return failed ? 1 : 0;
}

function seconds(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw Object.assign(new Error(`invalid argument "${v}" for "${flag}" flag`), { code: "USAGE" });
  return n;
}

export const commands: Record<string, Command> = {
  start: {
    usage: `Usage:  strata start CONTAINER [CONTAINER...]

Start one or more stopped containers (in the background)`,
    options: {},
    async run({ positionals }, ctx) {
      arity("start", positionals, 1, Infinity);
      return each(ctx, positionals, async (ref) => {
        await ctx.engine().runtime.start(ref);
        return ref;
      });
    },
  },
  stop: {
    usage: `Usage:  strata stop [OPTIONS] CONTAINER [CONTAINER...]

Stop one or more running containers: the stop signal (SIGTERM unless the
image says otherwise), then SIGKILL after the grace period

Options:
  -t, --time int   Seconds to wait before killing the container (default 10)`,
    options: { time: { type: "string", short: "t" } },
    async run({ values, positionals }, ctx) {
      arity("stop", positionals, 1, Infinity);
      const t = seconds(values.time, "--time") ?? 10;
      return each(ctx, positionals, async (ref) => {
        await ctx.engine().runtime.stop(ref, t);
        return ref;
      });
    },
  },
  restart: {
    usage: `Usage:  strata restart [OPTIONS] CONTAINER [CONTAINER...]

Restart one or more containers

Options:
  -t, --time int   Seconds to wait before killing the container (default 10)`,
    options: { time: { type: "string", short: "t" } },
    async run({ values, positionals }, ctx) {
      arity("restart", positionals, 1, Infinity);
      const t = seconds(values.time, "--time") ?? 10;
      return each(ctx, positionals, async (ref) => {
        await ctx.engine().runtime.restart(ref, t);
        return ref;
      });
    },
  },
  kill: {
    usage: `Usage:  strata kill [OPTIONS] CONTAINER [CONTAINER...]

Kill one or more running containers

Options:
  -s, --signal string   Signal to send to the container (default "KILL")`,
    options: { signal: { type: "string", short: "s" } },
    async run({ values, positionals }, ctx) {
      arity("kill", positionals, 1, Infinity);
      const { parseSignal } = await import("../../runtime/index.js");
      const sig = (values.signal as string | undefined) ?? "KILL";
      try {
        parseSignal(sig);
      } catch (e) {
        throw Object.assign(e as Error, { code: "USAGE" });
      }
      return each(ctx, positionals, async (ref) => {
        ctx.engine().runtime.kill(ref, sig);
        return ref;
      });
    },
  },
  wait: {
    usage: `Usage:  strata wait CONTAINER [CONTAINER...]

Block until one or more containers stop, then print their exit codes`,
    options: {},
    async run({ positionals }, ctx) {
      arity("wait", positionals, 1, Infinity);
      return each(ctx, positionals, async (ref) => String(await ctx.engine().runtime.wait(ref)));
    },
  },
};
