// What pull, push, login and copy share: registry flags and docker-like progress.
import { isatty } from "node:tty";
import { UsageError } from "./main.js";
import { humanSize } from "./format.js";
import type { RegistryOptions } from "../registry/client/registry.js";
import type { ProgressEvent } from "../engine/pull.js";

export const REGISTRY_FLAGS_USAGE = `      --insecure-registry host   Allow plain HTTP to this registry (repeatable; loopback always may;
                                 also STRATA_INSECURE_REGISTRIES=host,host)
      --retry int                Retries of a failed request (default 4)
      --retry-delay duration     First delay between retries, doubled each time (default 250ms)`;

export const REGISTRY_FLAGS = {
  "insecure-registry": { type: "string", multiple: true },
  retry: { type: "string" },
  "retry-delay": { type: "string" },
} as const;

/** "250ms", "2s", "1.5s", "1m" or plain seconds → ms. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new UsageError(`invalid duration "${s}": e.g. 500ms, 2s`);
  const n = Number(m[1]);
  return m[2] === "ms" ? n : m[2] === "m" ? n * 60_000 : n * 1000;
}

export function registryOptions(values: Record<string, unknown>): RegistryOptions {
  const insecure = [...((values["insecure-registry"] as string[] | undefined) ?? []), ...(process.env.STRATA_INSECURE_REGISTRIES ?? "").split(",")]
    .map((s) => s.trim())
    .filter(Boolean);
  const opts: RegistryOptions = { insecure };
  if (values.retry !== undefined) {
    const n = Number(values.retry);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`invalid --retry "${String(values.retry)}": a number of retries`);
    opts.retries = n;
  }
  if (values["retry-delay"] !== undefined) opts.retryDelayMs = parseDuration(values["retry-delay"] as string);
  return opts;
}

/**
 * Progress as `docker pull`/`push` prints it: one line per layer, redrawn
 * in place with a bar on a terminal; each change of status on its own line
 * otherwise (byte counts only on a terminal). Messages about the whole
 * operation (retries) go to stderr.
 */
export function progressPrinter(out: NodeJS.WritableStream, err: NodeJS.WritableStream, quiet: boolean): (e: ProgressEvent) => void {
  if (quiet) return () => {};
  const tty = isatty(1) && process.env.TERM !== "dumb";
  const lines: string[] = [];
  const index = new Map<string, number>();
  const last = new Map<string, string>();
  const drawn = new Map<string, number>();
  return (e) => {
    if (!e.id) {
      err.write(`${e.status}\n`);
      return;
    }
    if (!tty) {
      if (e.status === "Downloading" || e.status === "Pushing" || last.get(e.id) === e.status) return;
      last.set(e.id, e.status);
      out.write(`${e.id}: ${e.status}\n`);
      return;
    }
    // Byte counts redraw at most ten times a second per layer.
    const now = Date.now();
    if (e.total && e.current !== undefined && e.current < e.total && now - (drawn.get(e.id) ?? 0) < 100) return;
    drawn.set(e.id, now);
    let text = `${e.id}: ${e.status}`;
    if (e.total && e.current !== undefined) {
      const width = 50;
      const done = Math.min(width, Math.floor((e.current / e.total) * width));
      text += ` [${"=".repeat(Math.max(0, done - 1))}${done ? ">" : ""}${" ".repeat(width - done)}] ${humanSize(e.current)}/${humanSize(e.total)}`;
    }
    let i = index.get(e.id);
    if (i === undefined) {
      i = lines.length;
      index.set(e.id, i);
      lines.push(text);
      out.write(`${text}\n`);
      return;
    }
    lines[i] = text;
    const up = lines.length - i;
    out.write(`\x1b[${up}A\r\x1b[2K${text}\x1b[${up}B\r`);
  };
}
