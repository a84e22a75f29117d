import type { Command } from "../main.js";
import { arity } from "../main.js";
import { humanDuration, renderTemplate, since, table } from "../format.js";
import type { ContainerState } from "../../engine/containers.js";

/** Docker's STATUS column: "Created", "Up 3 seconds", "Exited (0) 2 minutes ago". */
export function statusString(s: ContainerState, now = Date.now()): string {
  if (s.Status === "running") return `Up ${humanDuration(now - Date.parse(s.StartedAt ?? new Date(now).toISOString()))}`;
  if (s.Status === "exited" && s.FinishedAt) return `Exited (${s.ExitCode}) ${since(s.FinishedAt, now)}`;
  return "Created";
}

const cmd: Command = {
  usage: `Usage:  strata ps [OPTIONS]

List containers

Options:
  -a, --all             Show all containers (default shows just running)
      --format string   Format output using a Go template or "json"
      --no-trunc        Don't truncate output
  -q, --quiet           Only display container IDs`,
  options: {
    all: { type: "boolean", short: "a" },
    quiet: { type: "boolean", short: "q" },
    "no-trunc": { type: "boolean" },
    format: { type: "string" },
  },
  async run({ values, positionals }, ctx) {
    arity("ps", positionals, 0);
    // The truth, not the last record: a container whose supervisor died is checked against the runtime.
    const list = ctx.engine().runtime.list().filter((c) => values.all || c.state.Status === "running");
    const noTrunc = !!values["no-trunc"];
    if (values.quiet) {
      ctx.out.write(list.map((c) => (noTrunc ? c.id : c.id.slice(0, 12)) + "\n").join(""));
      return 0;
    }
    const now = Date.now();
    const rows = list.map((c) => {
      const command = [...(c.config.Entrypoint ?? []), ...(c.config.Cmd ?? [])].join(" ");
      return {
        ID: noTrunc ? c.id : c.id.slice(0, 12),
        Image: c.imageRef,
        Command: noTrunc || command.length <= 20 ? JSON.stringify(command) : JSON.stringify(command.slice(0, 19) + "…"),
        CreatedAt: new Date(c.created).toISOString(),
        RunningFor: since(new Date(c.created).toISOString(), now),
        Status: statusString(c.state, now),
        State: c.state.Status,
        Ports: "",
        Names: c.name,
      };
    });
    if (values.format === "json") ctx.out.write(rows.map((r) => JSON.stringify(r) + "\n").join(""));
    else if (values.format) ctx.out.write(renderTemplate(values.format as string, rows));
    else ctx.out.write(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows.map((r) => [r.ID, r.Image, r.Command, r.RunningFor, r.Status, r.Ports, r.Names])));
    return 0;
  },
};
export default cmd;
