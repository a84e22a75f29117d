import { closeSync, createReadStream, existsSync, openSync, statSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A container's output, one JSON object per line as Docker's json-file log
 * driver writes it: {"log":"…\n","stream":"stdout"|"stderr","time":"…"}.
 * A line is written when complete (or when the stream ends), so stdout and
 * stderr stay apart and every line has its own time.
 */
export class LogWriter {
  private readonly fd: number;
  private readonly partial: Record<"stdout" | "stderr", string> = { stdout: "", stderr: "" };

  constructor(path: string) {
    this.fd = openSync(path, "a", 0o640);
  }

  write(stream: "stdout" | "stderr", chunk: Buffer): void {
    const text = this.partial[stream] + chunk.toString("utf8");
    const end = text.lastIndexOf("\n");
    if (end < 0) {
      this.partial[stream] = text;
      return;
    }
    this.partial[stream] = text.slice(end + 1);
    const time = new Date().toISOString();
    let out = "";
    for (const line of text.slice(0, end).split("\n")) out += JSON.stringify({ log: line + "\n", stream, time }) + "\n";
    writeSync(this.fd, out);
  }

  /** Flushes unterminated lines (as Docker does at the end of a stream) and closes the file. */
  close(): void {
    const time = new Date().toISOString();
    for (const stream of ["stdout", "stderr"] as const)
      if (this.partial[stream]) writeSync(this.fd, JSON.stringify({ log: this.partial[stream], stream, time }) + "\n");
    closeSync(this.fd);
  }
}

export interface LogEntry {
  log: string;
  stream: "stdout" | "stderr";
  time: string;
}

export interface ReadLogOptions {
  /** only the last n lines; undefined for all */
  tail?: number;
  /** keep reading while this says the container may still write */
  follow?: () => boolean;
}

/** Yields a container's log entries: the last `tail`, then (with follow) new ones until the container stops. */
export async function* readLogs(path: string, opts: ReadLogOptions = {}): AsyncGenerator<LogEntry> {
  if (!existsSync(path)) {
    if (!opts.follow) return;
    while (!existsSync(path) && opts.follow()) await sleep(50);
    if (!existsSync(path)) return;
  }
  let offset = 0;
  const backlog: LogEntry[] = [];
  let rest = "";
  const readFrom = async (start: number, sink: (e: LogEntry) => void): Promise<number> => {
    const size = statSync(path).size;
    if (size <= start) return start;
    const { createInterface } = await import("node:readline");
    const rl = createInterface({ input: createReadStream(path, { start, end: size - 1, encoding: "utf8" }), crlfDelay: Infinity });
    let consumed = start;
    const lines: string[] = [];
    for await (const line of rl) lines.push(line);
    // A line the writer has not finished yet stays for the next round.
    const text = rest + lines.join("\n");
    const complete = text.split("\n");
    rest = "";
    for (const l of complete) {
      if (!l) continue;
      try {
        sink(JSON.parse(l) as LogEntry);
      } catch {
        rest = l;
      }
    }
    consumed = size;
    return consumed;
  };
  offset = await readFrom(0, (e) => backlog.push(e));
  const first = opts.tail === undefined ? backlog : opts.tail <= 0 ? [] : backlog.slice(-opts.tail);
  yield* first;
  if (!opts.follow) return;
  for (;;) {
    const running = opts.follow();
    const fresh: LogEntry[] = [];
    offset = await readFrom(offset, (e) => fresh.push(e));
    yield* fresh;
    if (!running) return;
    await sleep(100);
  }
}
