import { createWriteStream } from "node:fs";
import * as fs from "node:fs/promises";
import type { Writable } from "node:stream";
import { StrataError } from "../errors/index.js";

/**
 * Writes the file a command's `-o` names. A regular file (new or existing,
 * a symlink followed to it) is written beside it under a temporary name and
 * renamed into place when complete: a failed write leaves no half file and
 * the old one untouched. Anything else that exists (a device such as
 * /dev/stdout or /dev/full, a FIFO) is opened and written in place, as
 * `docker save -o` does; renaming over it would replace the device node.
 * `write` resolves once `out` has finished.
 */
export async function writeOutputFile(path: string, write: (out: Writable) => Promise<void>): Promise<void> {
  const st = await fs.stat(path).catch(() => undefined);
  if (st?.isDirectory()) throw new StrataError("INVALID_ARGUMENT", `open ${path}: is a directory`);
  const inPlace = st !== undefined && !st.isFile();
  const target = st && !inPlace ? await fs.realpath(path) : path;
  const tmp = `${target}.strata-tmp-${process.pid}`;
  const out = createWriteStream(inPlace ? path : tmp);
  try {
    await write(out);
    if (!inPlace) await fs.rename(tmp, target);
  } finally {
    out.destroy();
    if (!inPlace) await fs.rm(tmp, { force: true });
  }
}
