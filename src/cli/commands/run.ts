import { readFileSync } from "node:fs";
import type { Command, Ctx } from "../main.js";
import { arity, UsageError } from "../main.js";
import type { Container, HostConfig } from "../../engine/containers.js";

/** The flags `create` and `run` share, as Docker spells them. */
export const createFlags = {
  name: { type: "string" },
  entrypoint: { type: "string" },
  env: { type: "string", short: "e", multiple: true },
  "env-file": { type: "string", multiple: true },
  user: { type: "string", short: "u" },
  workdir: { type: "string", short: "w" },
  hostname: { type: "string", short: "h" },
  interactive: { type: "boolean", short: "i" },
  tty: { type: "boolean", short: "t" },
  volume: { type: "string", short: "v", multiple: true },
  tmpfs: { type: "string", multiple: true },
  "read-only": { type: "boolean" },
  network: { type: "string" },
  net: { type: "string" },
  memory: { type: "string", short: "m" },
  cpus: { type: "string" },
  "pids-limit": { type: "string" },
  init: { type: "boolean" },
  "security-opt": { type: "string", multiple: true },
  runtime: { type: "string" },
  rm: { type: "boolean" },
} as const;

export const createFlagsUsage = `      --cpus decimal             Number of CPUs
      --entrypoint string        Overwrite the default ENTRYPOINT of the image
  -e, --env list                 Set environment variables
      --env-file list            Read in a file of environment variables
      --hostname string          Container host name (default: the short ID)
      --init                     Run an init inside the container that forwards signals and reaps processes
  -i, --interactive              Keep STDIN open
  -m, --memory bytes             Memory limit
      --name string              Assign a name to the container
      --network string           none or host (strata has no bridge networks; default host)
      --pids-limit int           Tune container pids limit
      --read-only                Mount the container's root filesystem as read only
      --rm                       Automatically remove the container when it exits
      --runtime string           Runtime to use for this container (runc or crun; default: probed)
      --security-opt list        Security options (no-new-privileges)
      --tmpfs list               Mount a tmpfs directory (PATH[:OPTIONS])
  -t, --tty                      Allocate a pseudo-TTY
  -u, --user string              Username or UID (format: <name|uid>[:<group|gid>])
  -v, --volume list              Bind mount a volume (HOST:CTR[:ro], NAME:CTR[:ro], or CTR)
  -w, --workdir string           Working directory inside the container`;

/** Docker's env file: KEY=VALUE lines, a bare KEY takes the host's value, # comments. */
export function parseEnvFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`open ${path}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file or directory" : (e as Error).message}`);
  }
  const out: string[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/^\s+/, "").replace(/\r$/, "");
    if (!line || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    const key = eq < 0 ? line.trimEnd() : line.slice(0, eq);
    if (!key) throw new UsageError(`invalid env file ${path}, line ${i + 1}: no variable name`);
    if (/\s/.test(key)) throw new UsageError(`invalid env file ${path}, line ${i + 1}: variable '${key}' contains whitespaces`);
    if (eq >= 0) out.push(line);
    else if (process.env[key] !== undefined) out.push(`${key}=${process.env[key]}`);
  });
  return out;
}

/** `-e KEY` (no `=`) takes the host's value, or is dropped, as Docker does. */
function envArg(e: string): string | undefined {
  if (e.includes("=")) return e;
  return process.env[e] !== undefined ? `${e}=${process.env[e]}` : undefined;
}

/** Docker's RAMInBytes: 64m, 1g, 512k, bytes. */
export function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$/i.exec(s.trim());
  if (!m) throw new UsageError(`invalid size: '${s}'`);
  const mult = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase()]!;
  return Math.floor(Number(m[1]) * mult);
}

export async function createFromArgs(values: Record<string, unknown>, positionals: string[], ctx: Ctx): Promise<Container> {
  const [image, ...cmdArgs] = positionals;
  const engine = ctx.engine();
  const str = (k: string) => values[k] as string | undefined;
  const list = (k: string) => (values[k] as string[] | undefined) ?? [];
  const env = [...list("env-file").flatMap(parseEnvFile), ...list("env").map(envArg).filter((e): e is string => e !== undefined)];
  const network = str("network") ?? str("net") ?? "host";
  if (network !== "host" && network !== "none") throw new UsageError(`network ${network} not found: strata supports --network host and --network none`);
  const hc: Partial<HostConfig> = { AutoRemove: !!values.rm, ReadonlyRootfs: !!values["read-only"], NetworkMode: network, Init: !!values.init, SecurityOpt: list("security-opt") };
  if (str("memory") !== undefined) {
    hc.Memory = parseBytes(str("memory")!);
    if (hc.Memory < 6 * 1024 * 1024) throw new UsageError("Minimum memory limit allowed is 6MB");
  }
  if (str("cpus") !== undefined) {
    const cpus = Number(str("cpus"));
    if (!(cpus > 0)) throw new UsageError(`invalid argument "${str("cpus")}" for "--cpus" flag: must be a positive number`);
    hc.NanoCpus = Math.round(cpus * 1e9);
  }
  if (str("pids-limit") !== undefined) {
    const n = Number(str("pids-limit"));
    if (!Number.isInteger(n)) throw new UsageError(`invalid argument "${str("pids-limit")}" for "--pids-limit" flag`);
    hc.PidsLimit = n;
  }
  for (const s of hc.SecurityOpt ?? []) if (!/^no-new-privileges(:true|=true)?$/.test(s)) throw new UsageError(`invalid --security-opt: ${s}`);
  hc.Tmpfs = Object.fromEntries(
    list("tmpfs").map((t) => {
      const [path, opts = ""] = [t.split(":")[0], t.split(":").slice(1).join(":")];
      if (!path.startsWith("/")) throw new UsageError(`invalid tmpfs mount: ${t}: the path must be absolute`);
      return [path, opts];
    }),
  );
  if (str("runtime")) {
    engine.runtime.runtime(str("runtime"));
    hc.Runtime = str("runtime");
  }
  // Checked (and anonymous volumes named) before anything is created.
  const { parseBind } = await import("../../runtime/volumes.js");
  for (const v of list("volume")) parseBind(v);
  const c = await engine.containers.create(image, {
    name: str("name"),
    cmd: cmdArgs,
    entrypoint: str("entrypoint") !== undefined ? (str("entrypoint") === "" ? [] : [str("entrypoint")!]) : undefined,
    env,
    user: str("user"),
    workdir: str("workdir"),
    hostname: str("hostname"),
    tty: !!values.tty,
    openStdin: !!values.interactive,
    hostConfig: hc,
  });
  const binds = engine.runtime.resolveBinds(list("volume"), c.config.Volumes);
  if (binds.length) {
    engine.meta.write(() => engine.meta.db.prepare("UPDATE containers SET host_config = ? WHERE id = ?").run(JSON.stringify({ ...c.hostConfig, Binds: binds }), c.id));
    return engine.containers.get(c.id);
  }
  return c;
}

const cmd: Command = {
  usage: `Usage:  strata run [OPTIONS] IMAGE [COMMAND] [ARG...]

Create and run a new container from an image, through the OCI runtime
(runc, or crun where it works). Attached, strata exits with the container's
exit code; 125 means strata itself failed, 126 the command cannot be
executed, 127 it was not found.

Options:
  -d, --detach                   Run container in background and print container ID
${createFlagsUsage}`,
  options: { ...createFlags, detach: { type: "boolean", short: "d" } },
  stopAtPositional: true,
  async run({ values, positionals }, ctx) {
    arity("run", positionals, 1, Infinity);
    const engine = ctx.engine();
    if (values.tty && !values.detach && !process.stdin.isTTY) throw Object.assign(new Error("the input device is not a TTY"), { exitCode: 1 });
    try {
      const c = await createFromArgs(values, positionals, ctx);
      if (values.detach) {
        await engine.runtime.start(c);
        ctx.out.write(`${c.id}\n`);
        return 0;
      }
      return await engine.runtime.runAttached(c, { stdin: !!values.interactive });
    } catch (e) {
      // Whatever strata itself fails at is 125; 126/127 come with the error.
      if (typeof (e as { exitCode?: number }).exitCode !== "number") Object.assign(e as Error, { exitCode: 125 });
      throw e;
    }
  },
};
export default cmd;
