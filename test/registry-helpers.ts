// Registries for tests: ours (the real CLI, `strata registry serve`) and Debian's docker-registry,
// each on a free loopback port with its own temp storage, stopped when the test ends.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, tempDir } from "./helpers.ts";

type T = { after: (fn: () => void | Promise<void>) => void };

export interface RunningRegistry {
  kind: "strata" | "distribution";
  /** http://127.0.0.1:PORT */
  url: string;
  /** HOST:PORT, for image references */
  host: string;
  storage: string;
  proc: ChildProcess;
  logs: () => string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function stopper(proc: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once("exit", () => resolve());
      proc.kill("SIGTERM");
      setTimeout(() => proc.kill("SIGKILL"), 10_000).unref();
    });
}

/** `strata registry serve` on a free port; extra args go to serve (auth, config ...). */
export async function startStrataRegistry(t: T, args: string[] = [], opts: { storage?: string; root?: string } = {}): Promise<RunningRegistry> {
  const root = opts.root ?? tempDir(t, "strata-registry-");
  const storage = opts.storage ?? join(root, "registry");
  const proc = spawn(process.execPath, [BIN, "--root", root, "registry", "serve", "--listen", "127.0.0.1:0", "--storage-path", storage, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d) => {
      out += d;
      const m = /"url":"(http[^"]+)"/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.once("exit", (code) => reject(new Error(`strata registry serve exited ${code}: ${err}`)));
  });
  const stop = stopper(proc);
  t.after(stop);
  return { kind: "strata", url, host: new URL(url).host, storage, proc, logs: () => out + err, stop };
}

/** Debian's docker-registry (distribution 2.8) with deletes enabled. */
export async function startDistribution(t: T, extraConfig = ""): Promise<RunningRegistry> {
  const dir = tempDir(t, "strata-distribution-");
  const port = await freePort();
  const config = join(dir, "config.yml");
  writeFileSync(
    config,
    `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${extraConfig}`,
  );
  const proc = spawn("docker-registry", ["serve", config], { stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  proc.stdout!.on("data", (d) => (logs += d));
  proc.stderr!.on("data", (d) => (logs += d));
  const url = `http://127.0.0.1:${port}`;
  const stop = stopper(proc);
  t.after(stop);
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`${url}/v2/`);
      if (r.status === 200) break;
    } catch {
      /* not up yet */
    }
    if (proc.exitCode !== null || i > 200) throw new Error(`docker-registry did not start: ${logs}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { kind: "distribution", url, host: `127.0.0.1:${port}`, storage: join(dir, "data"), proc, logs: () => logs, stop };
}

export interface Res {
  status: number;
  headers: Headers;
  body: Buffer;
  json(): any;
}

/** One HTTP request; bodies are buffers, or an async iterable sent chunked (no Content-Length). */
export async function http(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: Buffer | string | AsyncIterable<Buffer> } = {},
): Promise<Res> {
  const url = /^https?:/.test(path) ? path : base + path;
  const init: RequestInit & { duplex?: string } = { method, headers: opts.headers, redirect: "manual" };
  if (opts.body !== undefined) {
    if (typeof opts.body === "string" || Buffer.isBuffer(opts.body)) init.body = opts.body;
    else {
      init.body = ReadableStream.from(opts.body as AsyncIterable<Buffer>) as unknown as BodyInit;
      init.duplex = "half";
    }
  }
  const r = await fetch(url, init);
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, body, json: () => JSON.parse(body.toString("utf8")) };
}

/** An S3 server from npm (s3rver, test/s3-server.ts) on a free port with one bucket; `config` writes a registry config for it. */
export async function startS3(t: T): Promise<{ endpoint: string; config: (prefix?: string) => string }> {
  const dir = tempDir(t, "strata-s3-");
  const proc = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "s3-server.ts"), join(dir, "data")], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.on("data", (d) => {
      out += d;
      const m = /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once("exit", (code) => reject(new Error(`s3rver exited ${code}: ${err}`)));
  });
  t.after(stopper(proc));
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    config: (prefix = "") => {
      const p = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
      writeFileSync(p, JSON.stringify({ storage: { s3: { bucket: "registry", endpoint, region: "us-east-1", accessKeyId: "S3RVER", secretAccessKey: "S3RVER", prefix } } }));
      return p;
    },
  };
}
