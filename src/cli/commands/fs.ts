import type { Command, Ctx } from "../main.js";
import { arity, UsageError } from "../main.js";
import type { UnionEntry, UnionView } from "../../union/index.js";

const USAGE = `Usage:  strata fs COMMAND IMAGE [PATH]

Browse an image's merged filesystem, read from its layers without unpacking them

Commands:
  ls [-l] IMAGE [PATH]   List a directory (default /), or show one entry
  cat IMAGE PATH         Write a file's bytes to STDOUT (symlinks followed inside the image)
  tree IMAGE [PATH]      Show the tree below PATH (default /)

Options:
  -l, --long   ls: one line per entry with type and mode, uid, gid, size, mtime, name`;

const TYPE_CHAR: Record<UnionEntry["type"], string> = { file: "-", hardlink: "-", dir: "d", symlink: "l", char: "c", block: "b", fifo: "p" };

/** `drwxr-xr-x`, with setuid/setgid/sticky shown as ls shows them. */
export function modeString(e: UnionEntry): string {
  const m = e.mode;
  const triple = (shift: number, special: number, ch: string) => {
    const x = (m >> shift) & 1;
    const exec = m & special ? (x ? ch : ch.toUpperCase()) : x ? "x" : "-";
    return ((m >> shift) & 4 ? "r" : "-") + ((m >> shift) & 2 ? "w" : "-") + exec;
  };
  return TYPE_CHAR[e.type] + triple(6, 0o4000, "s") + triple(3, 0o2000, "s") + triple(0, 0o1000, "t");
}

function timeString(d: Date): string {
  return Number.isNaN(d.getTime()) || Math.abs(d.getTime()) > 8.64e15 ? "?" : d.toISOString().slice(0, 16).replace("T", " ");
}

/** `ls -l`-like lines, the numeric columns right-aligned across the listing. */
function longLines(rows: { name: string; e: UnionEntry }[]): string[] {
  const cols = rows.map(({ name, e }) => ({
    mode: modeString(e),
    uid: String(e.uid),
    gid: String(e.gid),
    size: e.type === "char" || e.type === "block" ? `${e.devmajor}, ${e.devminor}` : String(e.size),
    time: timeString(e.mtime),
    name: e.type === "symlink" ? `${name} -> ${e.linkname}` : name,
  }));
  const w = (k: "uid" | "gid" | "size") => Math.max(0, ...cols.map((c) => c[k].length));
  const [wu, wg, ws] = [w("uid"), w("gid"), w("size")];
  return cols.map((c) => `${c.mode} ${c.uid.padStart(wu)} ${c.gid.padStart(wg)} ${c.size.padStart(ws)} ${c.time} ${c.name}\n`);
}

/** Writes lines in chunks, so a tree of many thousand entries is a few writes. */
function writer(ctx: Ctx): { line(s: string): void; flush(): void } {
  let buf: string[] = [];
  let n = 0;
  const flush = () => {
    if (buf.length) ctx.out.write(buf.join(""));
    buf = [];
    n = 0;
  };
  return {
    line(s: string) {
      buf.push(s);
      n += s.length;
      if (n > 1 << 16) flush();
    },
    flush,
  };
}

async function ls(view: UnionView, path: string, long: boolean, ctx: Ctx): Promise<void> {
  let e = await view.stat(path);
  // As ls: a symlink to a directory named on the command line is listed through, unless -l.
  if (e.type === "symlink" && !long) {
    const target = await view.readdir(path).then(
      () => true,
      () => false,
    );
    if (target) e = { ...e, type: "dir" };
  }
  if (e.type !== "dir") {
    ctx.out.write(long ? longLines([{ name: path, e }]).join("") : `${path}\n`);
    return;
  }
  const names = await view.readdir(path);
  if (!long) {
    ctx.out.write(names.map((n) => n + "\n").join(""));
    return;
  }
  const base = e.path === "/" ? "" : e.path;
  const rows = await Promise.all(names.map(async (name) => ({ name, e: await view.stat(`${base}/${name}`) })));
  ctx.out.write(longLines(rows).join(""));
}

async function tree(view: UnionView, path: string, ctx: Ctx): Promise<void> {
  const top = await view.stat(path);
  const out = writer(ctx);
  let dirs = 0;
  let files = 0;
  out.line(`${top.path}\n`);
  const visit = async (dir: string, indent: string): Promise<void> => {
    const names = await view.readdir(dir);
    for (const [i, name] of names.entries()) {
      const last = i === names.length - 1;
      const p = dir === "/" ? `/${name}` : `${dir}/${name}`;
      const e = await view.stat(p);
      out.line(`${indent}${last ? "└── " : "├── "}${name}${e.type === "symlink" ? ` -> ${e.linkname}` : ""}\n`);
      if (e.type === "dir") {
        dirs++;
        await visit(p, indent + (last ? "    " : "│   "));
      } else files++;
    }
  };
  await visit(top.path, "");
  out.line(`\n${dirs} director${dirs === 1 ? "y" : "ies"}, ${files} file${files === 1 ? "" : "s"}\n`);
  out.flush();
}

async function cat(view: UnionView, path: string): Promise<void> {
  const body = await view.readFile(path);
  const { pipeline } = await import("node:stream/promises");
  try {
    // Streamed: a file can be larger than memory.
    await pipeline(body, process.stdout, { end: false });
  } catch (e) {
    // The reader went away (`| head`): not an error, as for cat.
    if ((e as NodeJS.ErrnoException).code !== "EPIPE") throw e;
    body.destroy();
  }
}

const cmd: Command = {
  usage: USAGE,
  options: { long: { type: "boolean", short: "l" } },
  async run({ values, positionals }, ctx) {
    const [sub, ...args] = positionals;
    if (values.long && sub !== "ls") throw new UsageError(`-l is an option of "strata fs ls" (see 'strata fs --help')`);
    switch (sub) {
      case "ls":
        arity("fs ls", args, 1, 2);
        await ls(ctx.engine().union(args[0]), args[1] ?? "/", !!values.long, ctx);
        return 0;
      case "cat":
        arity("fs cat", args, 2);
        await cat(ctx.engine().union(args[0]), args[1]);
        return 0;
      case "tree":
        arity("fs tree", args, 1, 2);
        await tree(ctx.engine().union(args[0]), args[1] ?? "/", ctx);
        return 0;
      case undefined:
        throw new UsageError(`"strata fs" requires a command: ls, cat or tree (see 'strata fs --help')`);
      default:
        throw new UsageError(`unknown command "${sub}" for "strata fs": ls, cat or tree (see 'strata fs --help')`);
    }
  },
};
export default cmd;
