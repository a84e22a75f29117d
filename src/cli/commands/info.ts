import type { Command } from "../main.js";
import { arity } from "../main.js";
import { readFileSync } from "node:fs";
import { release, arch } from "node:os";

const cmd: Command = {
  usage: `Usage:  strata info [OPTIONS]

Display system-wide information: the data root, the storage driver and why
it was chosen, and what the store holds

Options:
  -f, --format string   "json" for machine-readable output`,
  options: { format: { type: "string", short: "f" } },
  async run({ values, positionals }, ctx) {
    arity("info", positionals, 0);
    const engine = ctx.engine();
    const sn = engine.snapshots; // chooses and records the driver on first use
    const meta = engine.meta;
    const count = (sql: string) => (meta.db.prepare(sql).get() as { n: number }).n;
    const osRelease = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "unknown";
    let runtime: { name: string; path: string; reason: string };
    try {
      runtime = engine.runtime.info();
    } catch (e) {
      runtime = { name: "none", path: "", reason: (e as Error).message };
    }
    const info = {
      ServerVersion: JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version as string,
      RootDir: engine.root,
      Driver: sn.driver,
      DriverReason: meta.getMeta("storage_driver_reason") ?? "",
      Images: count("SELECT COUNT(*) AS n FROM images"),
      Containers: count("SELECT COUNT(*) AS n FROM containers"),
      ContainersRunning: count("SELECT COUNT(*) AS n FROM containers WHERE json_extract(state, '$.Status') = 'running'"),
      DefaultRuntime: runtime.name,
      RuntimePath: runtime.path,
      RuntimeReason: runtime.reason,
      Layers: count("SELECT COUNT(*) AS n FROM layers"),
      UnpackedLayers: count("SELECT COUNT(*) AS n FROM snapshots WHERE kind = 'committed' AND key NOT LIKE 'init-%'"),
      KernelVersion: release(),
      OperatingSystem: osRelease,
      Architecture: arch() === "x64" ? "x86_64" : arch(),
    };
    if (values.format === "json") {
      ctx.out.write(JSON.stringify(info) + "\n");
      return 0;
    }
    ctx.out.write(
      [
        `Server Version: ${info.ServerVersion} (daemonless)`,
        `Root Dir: ${info.RootDir}`,
        `Storage Driver: ${info.Driver}`,
        ` Reason: ${info.DriverReason}`,
        `Images: ${info.Images}`,
        ` Layers: ${info.Layers} (${info.UnpackedLayers} unpacked)`,
        `Containers: ${info.Containers}`,
        ` Running: ${info.ContainersRunning}`,
        `Default Runtime: ${info.DefaultRuntime} (${info.RuntimePath})`,
        ` Reason: ${info.RuntimeReason}`,
        `Kernel Version: ${info.KernelVersion}`,
        `Operating System: ${info.OperatingSystem}`,
        `Architecture: ${info.Architecture}`,
        "",
      ].join("\n"),
    );
    return 0;
  },
};
export default cmd;
