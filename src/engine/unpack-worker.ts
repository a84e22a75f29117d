// A worker thread that applies one layer (see ./layer-worker.ts): reading,
// decompressing, verifying and every file system call happen here, so that
// the layers of an image are applied side by side on as many cores.
import { parentPort, workerData } from "node:worker_threads";
import { Readable } from "node:stream";
import { applyLayer } from "../archive/extract.js";
import { ContentStore } from "../content/index.js";
import { storeLayer } from "../image/index.js";
import type { ApplyJob, FromWorker, ToWorker } from "./layer-worker.js";

const port = parentPort!;
const job = workerData as ApplyJob;

/** The chunks the main thread sends, acknowledged once the applier has taken them (its backpressure). */
function streamed(): Readable {
  const queue: Buffer[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  port.on("message", (m: ToWorker) => {
    if (m.type === "chunk") queue.push(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength));
    else ended = true;
    wake?.();
  });
  return Readable.from(
    (async function* () {
      for (;;) {
        while (queue.length) {
          const chunk = queue.shift()!;
          yield chunk;
          port.postMessage({ type: "ack", bytes: chunk.length } satisfies FromWorker);
        }
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    })(),
    { objectMode: false },
  );
}

async function main(): Promise<void> {
  const tar = job.source.kind === "blob" ? await storeLayer(new ContentStore(job.source.contentRoot), job.source.layer).uncompressed() : streamed();
  const result = await applyLayer(tar, job.dir, { whiteouts: job.whiteouts });
  port.postMessage({ type: "done", result } satisfies FromWorker);
}

main().catch((e: unknown) => {
  const err = e as { code?: unknown; message?: unknown; syscall?: unknown };
  port.postMessage({ type: "error", code: typeof err.code === "string" ? err.code : undefined, strata: (e as Error)?.name === "StrataError", message: String(err.message ?? e) } satisfies FromWorker);
});
