import { Readable } from "node:stream";
import { StrataError } from "../errors/index.js";

export type Compression = "gzip" | "zstd" | "none";
/** Detects compression from the first bytes, never from a name or media type. */
export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  return "none";
}

/** True when `block` is a plausible ustar/gnu/v7 tar header (its checksum matches). */
export function isTarHeader(block: Buffer): boolean {
  if (block.length < 512) return false;
  const stored = parseInt(block.subarray(148, 156).toString("ascii").replace(/\0.*$/, "").trim(), 8);
  if (!Number.isFinite(stored)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i];
  return sum === stored;
}

/** SOURCE_DATE_EPOCH, when set, clamps every timestamp written (reproducible output). */
export function sourceDateEpoch(): number | undefined {
  const v = process.env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new StrataError("INVALID_ARGUMENT", `SOURCE_DATE_EPOCH "${v}" is not a non-negative integer`);
  return n;
}

/**
 * Returns a stream of the uncompressed bytes of `src`, detecting gzip or
 * zstd from its first bytes. zstd goes through the `zstd` executable
 * (Node 20's zlib has none).
 */
export async function decompress(src: Readable): Promise<Readable> {
  const head = await peek(src, 4);
  const kind = detectCompression(head.head);
  if (kind === "none") return head.stream;
  if (kind === "gzip") {
    const { createGunzip } = await import("node:zlib");
    const gunzip = createGunzip({ chunkSize: 1 << 20 }); // large output chunks: fewer, bigger writes downstream
    head.stream.on("error", (e) => gunzip.destroy(e));
    gunzip.on("close", () => head.stream.destroy());
    return head.stream.pipe(gunzip);
  }
  const { spawn } = await import("node:child_process");
  const child = spawn("zstd", ["-dc", "-q"], { stdio: ["pipe", "pipe", "inherit"] });
  child.on("error", (e) => child.stdout.destroy(new StrataError("UNSUPPORTED", `zstd layer: cannot run zstd (${e.message})`)));
  child.on("exit", (code) => {
    if (code !== 0) child.stdout.destroy(new StrataError("CORRUPT", `zstd layer: zstd exited with ${code}`));
  });
  head.stream.on("error", (e) => child.stdout.destroy(e));
  head.stream.pipe(child.stdin);
  return child.stdout;
}

/** Reads at least `n` bytes (or to EOF) and gives back a stream that still yields everything. */
export async function peek(src: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const chunks: Buffer[] = [];
  let len = 0;
  const it = src[Symbol.asyncIterator]();
  let done = false;
  while (len < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    chunks.push(r.value as Buffer);
    len += (r.value as Buffer).length;
  }
  const head = Buffer.concat(chunks);
  const stream = Readable.from(
    (async function* () {
      try {
        if (head.length) yield head;
        if (done) return;
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          yield r.value as Buffer;
        }
      } finally {
        await it.return?.(); // ends (destroys) the source when the consumer stops early
      }
    })(),
    { objectMode: false },
  );
  return { head, stream };
}
