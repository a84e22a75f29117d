import { Worker } from "node:worker_threads";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import { StrataError, type ErrorCode } from "../errors/index.js";
import type { ApplyResult } from "../archive/extract.js";
import type { ImageLayerRow } from "../metastore/index.js";

/**
 * A layer application in a worker thread (./unpack-worker.ts runs
 * applyLayer there). applyLayer makes its file system calls synchronously,
 * and creating tens of thousands of files is mostly kernel time: on the
 * main thread the layers of an image would take turns however many cores
 * there are. The source is either a stored blob, which the worker reads,
 * verifies and decompresses itself, or a tar the caller streams in (commit
 * applies the layer it is writing as it writes it).
 */
export interface ApplyJob {
  source: { kind: "blob"; contentRoot: string; layer: ImageLayerRow } | { kind: "stream" };
  dir: string;
  whiteouts: "overlay" | "apply";
}

export type ToWorker = { type: "chunk"; data: Uint8Array } | { type: "end" };
export type FromWorker = { type: "ack"; bytes: number } | { type: "done"; result: ApplyResult } | { type: "error"; code?: string; strata: boolean; message: string };

/** Bytes sent to a worker and not yet taken by its applier. */
const IN_FLIGHT = 4 << 20;

/** The worker script beside this module, in the same form (src .ts under tsx, dist .js, or the .cjs bundle). */
function workerScript(): URL {
  return new URL(`./unpack-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);
}

function spawnWorker(job: ApplyJob): Worker {
  const script = workerScript();
  if (script.pathname.endsWith(".ts")) {
    // Under tsx (tests, development) a worker does not inherit the TypeScript loader: it registers it first.
    // The keyword is assembled so that scripts/bundle.mjs, which refuses a dynamic import left in the bundle, passes this source-only path.
    const load = ["imp", "ort"].join("");
    return new Worker(`${load}("tsx/esm/api").then((m) => { m.register(); return ${load}(${JSON.stringify(script.href)}); })`, { eval: true, workerData: job });
  }
  return new Worker(script, { workerData: job });
}

export class LayerWorker {
  private readonly worker: Worker;
  /** Settles when the layer is applied, or fails with the applier's error. */
  readonly done: Promise<ApplyResult>;
  private inFlight = 0;
  private waiting: (() => void) | undefined;
  private failure: StrataError | undefined;

  constructor(job: ApplyJob) {
    this.worker = spawnWorker(job);
    this.done = new Promise<ApplyResult>((resolve, reject) => {
      const fail = (e: StrataError) => {
        this.failure ??= e;
        this.release();
        void this.worker.terminate();
        reject(this.failure);
      };
      this.worker.on("message", (m: FromWorker) => {
        if (m.type === "ack") {
          this.inFlight -= m.bytes;
          if (this.inFlight <= IN_FLIGHT) this.release();
        } else if (m.type === "done") {
          void this.worker.terminate();
          resolve(m.result);
        } else {
          fail(new StrataError(m.strata ? (m.code as ErrorCode) : "IO", m.message));
        }
      });
      this.worker.on("error", (e) => fail(new StrataError("IO", `layer worker: ${e.message}`, { cause: e })));
      this.worker.on("exit", (code) => fail(new StrataError("IO", `layer worker exited (${code}) before the layer was applied`)));
    });
    // A failure is reported by whoever awaits `done` or `write`; never as an unhandled rejection.
    this.done.catch(() => {});
  }

  private release(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  /** Sends a chunk of the tar (stream jobs); resolves when the worker has room for more. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.worker.postMessage({ type: "chunk", data: chunk } satisfies ToWorker);
    this.inFlight += chunk.length;
    if (this.inFlight > IN_FLIGHT) await new Promise<void>((resolve) => (this.waiting = resolve));
    if (this.failure) throw this.failure;
  }

  /** The end of a streamed tar. */
  end(): void {
    this.worker.postMessage({ type: "end" } satisfies ToWorker);
  }

  /** Stops the worker (whatever it was doing) and waits for it to be gone. */
  async abort(): Promise<void> {
    await this.worker.terminate();
    await this.done.catch(() => {});
  }
}
