import type { Command } from "../main.js";
import { arity } from "../main.js";
import { renderTemplate } from "../format.js";
import type { Engine } from "../../engine/index.js";

/** A container as `docker inspect` shows it (the fields strata has). */
function inspectContainer(engine: Engine, ref: string): Record<string, unknown> {
  const c = engine.runtime.get(ref);
  const s = c.state;
  const command = [...(c.config.Entrypoint ?? []), ...(c.config.Cmd ?? [])];
  const zero = "0001-01-01T00:00:00Z";
  return {
    Id: c.id,
    Created: new Date(c.created).toISOString(),
    Path: command[0] ?? "",
    Args: command.slice(1),
    State: {
      Status: s.Status,
      Running: s.Status === "running",
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: s.Pid,
      ExitCode: s.ExitCode,
      Error: s.Error ?? "",
      StartedAt: s.StartedAt ?? zero,
      FinishedAt: s.FinishedAt ?? zero,
    },
    Image: c.imageId,
    Name: `/${c.name}`,
    Driver: engine.snapshots.driver,
    LogPath: engine.runtime.logPath(c),
    Config: { ...c.config, Image: c.imageRef },
    HostConfig: c.hostConfig,
    Mounts: c.hostConfig.Binds.map((b) => {
      const [source, destination, mode = "rw"] = b.split(":");
      return source.startsWith("/")
        ? { Type: "bind", Source: source, Destination: destination, RW: !mode.includes("ro") }
        : { Type: "volume", Name: source, Source: engine.runtime.volumes.mountpoint(source), Destination: destination, Driver: "local", RW: !mode.includes("ro") };
    }),
  };
}

const cmd: Command = {
  usage: `Usage:  strata inspect [OPTIONS] NAME|ID [NAME|ID...]

Display detailed information on containers or images

Options:
  -f, --format string   Format output using a Go template
      --type string     Return JSON for the specified type (container or image)`,
  options: { format: { type: "string", short: "f" }, type: { type: "string" } },
  async run({ values, positionals }, ctx) {
    arity("inspect", positionals, 1, Infinity);
    const engine = ctx.engine();
    const type = values.type as string | undefined;
    if (type !== undefined && type !== "container" && type !== "image") throw Object.assign(new Error(`"${type}" is not a valid value for --type`), { code: "USAGE" });
    const results: Record<string, unknown>[] = [];
    let failed = 0;
    for (const ref of positionals) {
      try {
        if (type !== "image") {
          try {
            results.push(inspectContainer(engine, ref));
            continue;
          } catch (e) {
            if ((e as { code?: string }).code !== "NOT_FOUND" || type === "container") throw e;
          }
        }
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
