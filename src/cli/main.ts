import { writeSync } from "node:fs";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Engine } from "../engine/index.js";

/** What a command gets: lazy access to the engine and the output streams. */
export interface Ctx {
  engine(): Engine;
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
  command: string;
  /** The --root flag, when given. */
  root?: string;
}

export interface Command {
  usage: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  /** options end at the first positional (IMAGE or CONTAINER): what follows belongs to the container's command */
  stopAtPositional?: boolean;
  run(args: { values: Record<string, unknown>; positionals: string[] }, ctx: Ctx): Promise<number>;
}

/** Commands load lazily: `strata images` pays only for what images needs. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ default?: Command; commands?: Record<string, Command> }> }> = {
  images: { summary: "List images", load: () => import("./commands/images.js") },
  import: { summary: "Create an image from a root filesystem (directory or tarball)", load: () => import("./commands/import.js") },
  tag: { summary: "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", load: () => import("./commands/tag.js") },
  rmi: { summary: "Remove one or more images", load: () => import("./commands/rmi.js") },
  inspect: { summary: "Display detailed information on one or more images", load: () => import("./commands/inspect.js") },
  history: { summary: "Show the history of an image", load: () => import("./commands/history.js") },
  save: { summary: "Save one or more images to a tar archive (docker-archive or oci-archive)", load: () => import("./commands/save.js") },
  load: { summary: "Load images from a tar archive (docker-archive or oci-archive)", load: () => import("./commands/load.js") },
  "system df": { summary: "Show disk usage: images, layers, shared and unique bytes", load: () => import("./commands/df.js") },
  gc: { summary: "Remove unreferenced blobs and stale partial writes", load: () => import("./commands/gc.js") },
  check: { summary: "Verify every blob's digest and every reference in the store", load: () => import("./commands/check.js") },
  fs: { summary: "Browse an image's merged filesystem without unpacking it (ls, cat, tree)", load: () => import("./commands/fs.js") },
  create: { summary: "Create a container: a writable copy-on-write layer over an image", load: () => import("./commands/create.js") },
  ps: { summary: "List containers", load: () => import("./commands/ps.js") },
  mount: { summary: "Mount a container's root filesystem and print where", load: () => import("./commands/mount.js") },
  umount: { summary: "Unmount a container's root filesystem", load: () => import("./commands/mount.js") },
  diff: { summary: "Inspect changes to files or directories on a container's filesystem", load: () => import("./commands/diff.js") },
  commit: { summary: "Create a new image from a container's changes", load: () => import("./commands/commit.js") },
  rm: { summary: "Remove one or more containers (their writable layers)", load: () => import("./commands/rm.js") },
  export: { summary: "Export a container's filesystem as a tar archive", load: () => import("./commands/export.js") },
  cp: { summary: "Copy files/folders between a container and the local filesystem", load: () => import("./commands/cp.js") },
  info: { summary: "Display system-wide information (root, storage driver and why)", load: () => import("./commands/info.js") },
  layers: { summary: "Show an image's layers and the local images that share them", load: () => import("./commands/layers.js") },
  build: { summary: "Build an image from a Dockerfile", load: () => import("./commands/build.js") },
  "builder prune": { summary: "Remove the build cache", load: () => import("./commands/builder.js") },
  run: { summary: "Create and run a new container from an image", load: () => import("./commands/run.js") },
  start: { summary: "Start one or more stopped containers", load: () => import("./commands/lifecycle.js") },
  stop: { summary: "Stop one or more running containers", load: () => import("./commands/lifecycle.js") },
  restart: { summary: "Restart one or more containers", load: () => import("./commands/lifecycle.js") },
  kill: { summary: "Kill one or more running containers", load: () => import("./commands/lifecycle.js") },
  wait: { summary: "Block until one or more containers stop, then print their exit codes", load: () => import("./commands/lifecycle.js") },
  logs: { summary: "Fetch the logs of a container", load: () => import("./commands/logs.js") },
  exec: { summary: "Execute a command in a running container", load: () => import("./commands/exec.js") },
  top: { summary: "Display the running processes of a container", load: () => import("./commands/top.js") },
  "volume create": { summary: "Create a volume", load: () => import("./commands/volume.js") },
  "volume ls": { summary: "List volumes", load: () => import("./commands/volume.js") },
  "volume inspect": { summary: "Display detailed information on one or more volumes", load: () => import("./commands/volume.js") },
  "volume rm": { summary: "Remove one or more volumes", load: () => import("./commands/volume.js") },
  __monitor: { summary: "(internal) supervise a detached container", load: () => import("./commands/monitor.js") },
  registry: { summary: "Run a private registry (serve) or collect its garbage (gc)", load: () => import("./registry.js") },
  pull: { summary: "Download an image from a registry", load: () => import("./commands/pull.js") },
  push: { summary: "Upload an image to a registry", load: () => import("./commands/push.js") },
  login: { summary: "Log in to a registry (credentials kept in Docker's config.json)", load: () => import("./commands/login.js") },
  logout: { summary: "Log out from a registry", load: () => import("./commands/logout.js") },
  copy: { summary: "Copy an image between registries, archives, OCI layouts and the store", load: () => import("./commands/copy.js") },
};

const ALIASES: Record<string, string> = {
  "image ls": "images",
  "image list": "images",
  "image import": "import",
  "image tag": "tag",
  "image rm": "rmi",
  "image inspect": "inspect",
  "image history": "history",
  "image pull": "pull",
  "image push": "push",
  "image save": "save",
  "image load": "load",
  "image prune": "gc",
  "system gc": "gc",
  "system check": "check",
  "container create": "create",
  "container ls": "ps",
  "container list": "ps",
  "container rm": "rm",
  "container diff": "diff",
  "container commit": "commit",
  "container export": "export",
  "container cp": "cp",
  "container run": "run",
  "image build": "build",
  "buildx prune": "builder prune",
  "builder build": "build",
  "container start": "start",
  "container stop": "stop",
  "container restart": "restart",
  "container kill": "kill",
  "container wait": "wait",
  "container logs": "logs",
  "container exec": "exec",
  "container top": "top",
  "container inspect": "inspect",
  "volume list": "volume ls",
  "volume remove": "volume rm",
  df: "system df",
  "system info": "info",
};

function globalHelp(): string {
  const lines = Object.entries(COMMANDS).filter(([n]) => !n.startsWith("__")).map(([n, c]) => `  ${n.padEnd(12)}${c.summary}`);
  return `Usage:  strata [OPTIONS] COMMAND

A daemonless, Docker-compatible image and container engine

Options:
      --root DIR   Data root (default /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise; or STRATA_ROOT)
      --storage-driver overlay|vfs   Snapshot driver for a new root (default: overlay when the kernel mounts it)
  -D, --debug      Print stack traces on errors
  -v, --version    Print version information and quit
  -h, --help       Print usage

Commands:
${lines.join("\n")}
`;
}

/**
 * Output through write(2) on the descriptor: creating process.stdout costs
 * start-up time, and most commands print a few lines. A descriptor that
 * would block (a non-blocking pipe that is full) falls back to the stream.
 */
function fdWriter(fd: 1 | 2, stream: () => NodeJS.WritableStream): NodeJS.WritableStream {
  let fallback: NodeJS.WritableStream | undefined;
  const write = (chunk: string | Uint8Array): boolean => {
    if (fallback) return fallback.write(chunk);
    let buf = typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (buf.length) {
      try {
        buf = buf.subarray(writeSync(fd, buf));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        fallback = stream();
        return fallback.write(buf);
      }
    }
    return true;
  };
  return { write } as unknown as NodeJS.WritableStream;
}

export async function main(argv: string[]): Promise<number> {
  const out = fdWriter(1, () => process.stdout);
  const err = fdWriter(2, () => process.stderr);
  let root: string | undefined;
  let storageDriver: "overlay" | "vfs" | undefined;
  let debug = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--root") root = argv[++i];
    else if (a.startsWith("--root=")) root = a.slice(7);
    else if (a === "--storage-driver" || a.startsWith("--storage-driver=")) {
      const d = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
      if (d !== "overlay" && d !== "vfs") {
        err.write(`Error: invalid storage driver "${d}": overlay or vfs\n`);
        return 125;
      }
      storageDriver = d;
    }
    else if (a === "-D" || a === "--debug") debug = true;
    else if (a === "-h" || a === "--help") {
      out.write(globalHelp());
      return 0;
    } else if (a === "-v" || a === "--version") {
      const { readFileSync } = await import("node:fs");
      out.write(`strata version ${JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version}\n`);
      return 0;
    } else break;
  }
  if (root === "") {
    err.write("Error: --root needs a directory\n");
    return 125;
  }
  let name = argv[i];
  if (name === undefined || name === "help") {
    out.write(globalHelp());
    return name === undefined ? 1 : 0;
  }
  let rest = argv.slice(i + 1);
  const two = `${name} ${rest[0] ?? ""}`;
  if (COMMANDS[two] || ALIASES[two]) {
    name = two;
    rest = rest.slice(1);
  }
  name = ALIASES[name] ?? name;
  const entry = COMMANDS[name];
  if (!entry) {
    err.write(`Error: unknown command "${argv[i]}" for "strata" (see 'strata --help')\n`);
    return 125;
  }
  const mod = await entry.load();
  const cmd = (mod.commands?.[name] ?? mod.default)!;
  let parsed;
  try {
    // `-h` is --hostname for run and create, as in Docker; --help always works.
    const hShort = Object.values(cmd.options).some((o) => o.short === "h");
    const options = { ...cmd.options, help: hShort ? { type: "boolean" as const } : { type: "boolean" as const, short: "h" } };
    const [flags, tail] = cmd.stopAtPositional ? splitAtPositional(rest, options) : [rest, []];
    parsed = parseArgs({ args: flags, options, allowPositionals: true, strict: true });
    parsed.positionals.push(...tail);
  } catch (e) {
    err.write(`Error: ${(e as Error).message.split("\n")[0].replace(/^Unknown option '([^']*)'.*$/, "unknown flag: $1")} (see 'strata ${name} --help')\n`);
    return 125;
  }
  if (parsed.values.help) {
    out.write(cmd.usage.endsWith("\n") ? cmd.usage : cmd.usage + "\n");
    return 0;
  }
  let engine: Engine | undefined;
  const ctx: Ctx = {
    command: name,
    root,
    out,
    err,
    engine: () => engine ?? (engine = new EngineCtor!({ root, storageDriver })),
  };
  let EngineCtor: typeof Engine | undefined;
  try {
    EngineCtor = (await import("../engine/index.js")).Engine;
    return await cmd.run(parsed as { values: Record<string, unknown>; positionals: string[] }, ctx);
  } catch (e) {
    if (debug) err.write(`${(e as Error).stack ?? String(e)}\n`);
    else err.write(`Error: ${oneLine(e)}\n`);
    const exitCode = (e as { exitCode?: number }).exitCode;
    if (typeof exitCode === "number") return exitCode;
    return (e as { code?: string }).code === "USAGE" ? 125 : 1;
  } finally {
    engine?.close();
  }
}

/** Splits argv at its first positional: [options and that positional, the rest verbatim]. */
function splitAtPositional(args: string[], options: NonNullable<ParseArgsConfig["options"]>): [string[], string[]] {
  const takesValue = (flag: string): boolean => {
    if (flag.startsWith("--")) return options[flag.slice(2)]?.type === "string";
    // -it, -e K=V, -eK=V: the last letter of a cluster may take the next argument
    const letters = flag.slice(1);
    for (let i = 0; i < letters.length; i++) {
      const opt = Object.values(options).find((o) => o.short === letters[i]);
      if (opt?.type === "string") return i === letters.length - 1;
    }
    return false;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") return [args.slice(0, i), args.slice(i + 1)];
    if (a.startsWith("-") && a !== "-") {
      if (!a.includes("=") && takesValue(a)) i++;
      continue;
    }
    return [args.slice(0, i + 1), args.slice(i + 1)];
  }
  return [args, []];
}

function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0];
}

export class UsageError extends Error {
  readonly code = "USAGE";
}

/** Checks the positional count, Docker style. */
export function arity(name: string, positionals: string[], min: number, max = min): void {
  const n = positionals.length;
  if (n >= min && n <= max) return;
  const want = min === max ? `exactly ${min} argument${min === 1 ? "" : "s"}` : max === Infinity ? `at least ${min} argument${min === 1 ? "" : "s"}` : `between ${min} and ${max} arguments`;
  throw new UsageError(`"strata ${name}" requires ${want} (see 'strata ${name} --help')`);
}
