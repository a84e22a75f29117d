import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { Command } from "../main.js";
import { arity, UsageError } from "../main.js";

function pairs(list: string[] | undefined, flag: string, fromEnv: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list ?? []) {
    const eq = kv.indexOf("=");
    if (eq === 0) throw new UsageError(`invalid ${flag} "${kv}"`);
    if (eq < 0) {
      // `--build-arg NAME` takes the value from the environment, as Docker does.
      if (fromEnv && process.env[kv] !== undefined) out[kv] = process.env[kv]!;
      else if (!fromEnv) out[kv] = "";
      continue;
    }
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

const cmd: Command = {
  usage: `Usage:  strata build [OPTIONS] PATH

Build an image from a Dockerfile and a context directory. Every step that
changes the filesystem makes one layer; steps are cached by their parent
layer, the expanded instruction and the content of the files they read.

Options:
      --build-arg list      Set build-time variables
  -f, --file string         Name of the Dockerfile (default: PATH/Dockerfile)
      --format string       Manifest format: oci (default) or docker
      --iidfile string      Write the image ID to the file
      --label list          Set metadata for an image
      --network string      Network mode for RUN: none (default) or host
      --no-cache            Do not use cache when building the image
  -q, --quiet               Suppress the build output and print image ID on success
  -t, --tag list            Name and optionally a tag in the "name:tag" format
      --target string       Set the target build stage to build`,
  options: {
    "build-arg": { type: "string", multiple: true },
    file: { type: "string", short: "f" },
    format: { type: "string" },
    iidfile: { type: "string" },
    label: { type: "string", multiple: true },
    network: { type: "string" },
    "no-cache": { type: "boolean" },
    quiet: { type: "boolean", short: "q" },
    tag: { type: "string", short: "t", multiple: true },
    target: { type: "string" },
  },
  async run({ values, positionals }, ctx) {
    arity("build", positionals, 1);
    const context = resolve(positionals[0]);
    if (!existsSync(context) || !statSync(context).isDirectory()) throw new UsageError(`unable to prepare context: path "${positionals[0]}" not found`);
    const file = values.file ? (isAbsolute(values.file as string) ? (values.file as string) : resolve(values.file as string)) : join(context, "Dockerfile");
    if (!existsSync(file)) throw new UsageError(`failed to read dockerfile: open ${file}: no such file or directory`);
    const format = (values.format as string | undefined) ?? "oci";
    if (format !== "oci" && format !== "docker") throw new UsageError(`unknown format "${format}": oci or docker`);
    const network = (values.network as string | undefined) ?? "none";
    if (network !== "none" && network !== "host" && network !== "default") throw new UsageError(`network mode "${network}" not supported: none or host`);
    const { Builder, loadIgnore } = await import("../../build/builder.js");
    const quiet = !!values.quiet;
    const text = readFileSync(file, "utf8");
    const t0 = Date.now();
    const builder = new Builder(
      ctx.engine(),
      {
        context,
        dockerfile: file,
        tags: values.tag as string[] | undefined,
        buildArgs: pairs(values["build-arg"] as string[] | undefined, "--build-arg", true),
        labels: pairs(values.label as string[] | undefined, "--label", false),
        target: values.target as string | undefined,
        noCache: !!values["no-cache"],
        network: network === "host" ? "host" : "none",
        format,
        progress: quiet ? undefined : (line) => ctx.err.write(line + "\n"),
      },
      text,
      await loadIgnore(context, file),
    );
    try {
      const r = await builder.run();
      if (values.iidfile) writeFileSync(values.iidfile as string, r.id);
      if (quiet) ctx.out.write(`${r.id}\n`);
      else {
        ctx.err.write(`#${"done"} writing image ${r.id} in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
        for (const t of r.tags) ctx.err.write(`naming to ${t} done\n`);
        ctx.out.write(`${r.id}\n`);
      }
      return 0;
    } catch (e) {
      const node = (e as { node?: { startLine: number; endLine: number } }).node;
      if (node && !quiet) {
        // The Dockerfile lines around the failure, as BuildKit shows them.
        const lines = text.split("\n");
        ctx.err.write("--------------------\n");
        for (let i = Math.max(1, node.startLine - 2); i <= Math.min(lines.length, node.endLine + 1); i++) ctx.err.write(`${i === node.startLine ? ">>>" : "   "} ${String(i).padStart(3)} | ${lines[i - 1]}\n`);
        ctx.err.write("--------------------\n");
      }
      throw e;
    }
  },
};
export default cmd;
