import * as http from "node:http";
import * as https from "node:https";
import { StrataError } from "../../errors/index.js";

export interface HttpRequest {
  method: "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";
  url: URL;
  headers?: Record<string, string>;
  /**
   * a buffer, or an opener for a streamed body (called once per attempt):
   * each chunk is sent before the next is asked for, so a source may read
   * the next into the same buffer
   */
  body?: Buffer | (() => Promise<AsyncIterable<Buffer>>);
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** the body; the caller must consume or destroy it (a HEAD's is empty) */
  body: http.IncomingMessage;
}

/** One HTTP exchange, no retries, no redirects: injected so that tests can fail it on purpose. */
export type Transport = (req: HttpRequest) => Promise<HttpResponse>;

/** Errors of the network itself (as opposed to an HTTP status): worth another try. */
const NETWORK_CODES = new Set([
  "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN",
  "ERR_STREAM_PREMATURE_CLOSE", "UND_ERR_SOCKET", "HPE_INVALID_CONSTANT", "HPE_UNEXPECTED_CONTENT_LENGTH", "HPE_INVALID_CHUNK_SIZE",
]);

export function isNetworkError(e: unknown): boolean {
  if (e instanceof StrataError) return e.code === "NETWORK";
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code && (NETWORK_CODES.has(code) || code.startsWith("HPE_"))) return true;
  const msg = (e as Error | undefined)?.message ?? "";
  return /socket hang up|aborted|premature close|other side closed/i.test(msg);
}

/**
 * Node's own HTTP client with keep-alive agents: one connection pool per
 * process, reused by every request to a registry. An idle socket that stays
 * silent for `timeoutMs` is destroyed (a stalled transfer becomes a network
 * error and is retried or reported, never a hang).
 */
export function nodeTransport(opts: { timeoutMs?: number; maxSockets?: number } = {}): Transport {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 16, scheduling: "lifo" as const };
  const agents = { http: new http.Agent(agentOpts), https: new https.Agent(agentOpts) };
  return (req) =>
    new Promise<HttpResponse>((resolve, reject) => {
      const secure = req.url.protocol === "https:";
      const headers: Record<string, string> = { "user-agent": "strata/0.1", ...req.headers };
      if (Buffer.isBuffer(req.body)) headers["content-length"] = String(req.body.length);
      const r = (secure ? https : http).request(req.url, { method: req.method, headers, agent: secure ? agents.https : agents.http });
      r.setTimeout(timeoutMs, () => r.destroy(Object.assign(new Error(`no data for ${timeoutMs / 1000} s`), { code: "ETIMEDOUT" })));
      r.on("error", reject);
      r.on("response", (res) => {
        // The stall timer keeps running for the body, which is read after this resolves.
        res.on("error", () => {});
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
      });
      if (req.body === undefined) r.end();
      else if (Buffer.isBuffer(req.body)) r.end(req.body);
      else req.body().then((src) => send(r, src), (e: Error) => r.destroy(e));
    });
}

/** Writes `src` to `r` chunk by chunk, each handed to the kernel before the next is read; a failed source destroys the request. */
async function send(r: http.ClientRequest, src: AsyncIterable<Buffer>): Promise<void> {
  // A request torn down mid-body may never call back a pending write.
  const closed = new Promise<never>((_, reject) => r.once("close", () => reject(new Error("socket hang up"))));
  closed.catch(() => {});
  try {
    for await (const chunk of src) await Promise.race([new Promise<void>((resolve, reject) => r.write(chunk, (e) => (e ? reject(e) : resolve()))), closed]);
    r.end();
  } catch (e) {
    r.destroy(e as Error);
  }
}

/** Reads a whole (small) response body, refusing more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    res.body.destroy();
    throw new StrataError("INVALID_MANIFEST", `${what}: ${declared} bytes is over the ${limit}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > limit) {
      res.body.destroy();
      throw new StrataError("INVALID_MANIFEST", `${what}: more than ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Drops a body we do not need, so the connection can be reused. */
export function discard(res: HttpResponse): void {
  res.body.resume();
}
