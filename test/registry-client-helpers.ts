// Real registries for the registry-client tests: Debian's docker-registry (distribution 2.8) on a
// free loopback port, with htpasswd or token auth, a small token service, and a faulty proxy.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSign, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import { BIN, type Run } from "./helpers.ts";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Registry {
  host: string;
  url: string;
  stop(): Promise<void>;
}

export interface RegistryAuth {
  /** the address to listen on (default 127.0.0.1) */
  listen?: string;
  htpasswd?: Record<string, string>;
  token?: { realm: string; service: string; issuer: string; certFile: string };
}

/** Starts docker-registry on a free loopback port; stopped (and its storage removed with `dir`) after the test. */
export async function startRegistry(t: { after: (fn: () => void | Promise<void>) => void }, dir: string, auth: RegistryAuth = {}): Promise<Registry> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    mkdirSync(join(dir, "storage"), { recursive: true });
    let authYaml = "";
    if (auth.htpasswd) {
      const lines = Object.entries(auth.htpasswd).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5)}`);
      writeFileSync(join(dir, "htpasswd"), lines.join("\n") + "\n");
      authYaml = `auth:\n  htpasswd:\n    realm: test-realm\n    path: ${join(dir, "htpasswd")}\n`;
    } else if (auth.token) {
      const a = auth.token;
      authYaml = `auth:\n  token:\n    realm: ${a.realm}\n    service: ${a.service}\n    issuer: ${a.issuer}\n    rootcertbundle: ${a.certFile}\n`;
    }
    const addr = auth.listen ?? "127.0.0.1";
    const config = `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "storage")}\n  delete:\n    enabled: true\nhttp:\n  addr: ${addr}:${port}\n${authYaml}`;
    writeFileSync(join(dir, "config.yml"), config);
    const child = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    const exited = new Promise<void>((r) => child.on("exit", () => r()));
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
    };
    t.after(stop);
    const url = `http://${addr}:${port}`;
    if (await waitHttp(`${url}/v2/`, child)) return { host: `${addr}:${port}`, url, stop };
    await stop();
    if (attempt >= 2) throw new Error(`docker-registry did not start: ${stderr}`);
  }
}

async function waitHttp(url: string, child: ChildProcess): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) return false;
    const ok = await new Promise<boolean>((resolve) => {
      const r = http.get(url, (res) => {
        res.resume();
        resolve(true);
      });
      r.on("error", () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** A listening HTTP server on a free loopback port, closed after the test. */
export async function serve(t: { after: (fn: () => void | Promise<void>) => void }, handler: http.RequestListener): Promise<{ server: http.Server; url: string; host: string }> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  t.after(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { server, url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}` };
}

/**
 * A token service as the distribution spec describes it: GET realm?service&scope
 * with Basic auth; it grants `users[name]` actions on every repository
 * (anonymous: pull only on repositories under public/) and signs an RS256 JWT with a
 * certificate the registry trusts (x5c header). Counts requests per scope.
 */
export async function startTokenService(t: { after: (fn: () => void | Promise<void>) => void }, dir: string, users: Record<string, string>, opts: { uselessFirst?: number } = {}) {
  const key = join(dir, "token.key");
  const cert = join(dir, "token.crt");
  const r = spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=strata-test-token"], { stdio: "pipe" });
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  const pem = readFileSync(cert, "utf8");
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  const issuer = "strata-test-issuer";
  const service = "strata-test-registry";
  const requests: { scope: string[]; user?: string }[] = [];
  // Tokens still to hand out that grant nothing (the registry answers 401 to them).
  const state = { useless: opts.uselessFirst ?? 0 };
  const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");
  const srv = await serve(t, (req, res) => {
    const u = new URL(req.url!, "http://x");
    const scopes = u.searchParams.getAll("scope");
    let user: string | undefined;
    const auth = req.headers.authorization;
    if (auth?.startsWith("Basic ")) {
      const [name, ...rest] = Buffer.from(auth.slice(6), "base64").toString().split(":");
      if (users[name] !== rest.join(":")) {
        res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] }));
        return;
      }
      user = name;
    }
    requests.push({ scope: scopes, user });
    const access = scopes.map((s) => {
      const [type, name, actions] = s.split(":");
      const wanted = actions.split(",");
      const granted = state.useless > 0 ? [] : user ? wanted : name.startsWith("public/") ? wanted.filter((a) => a === "pull") : [];
      return { type, name, actions: granted };
    });
    if (state.useless > 0) state.useless--;
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = 300;
    const header = { alg: "RS256", typ: "JWT", x5c: [der.toString("base64")] };
    const claims = { iss: issuer, sub: user ?? "", aud: service, exp: now + expiresIn, nbf: now - 10, iat: now, jti: randomBytes(8).toString("hex"), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign("RSA-SHA256").update(input).sign(readFileSync(key));
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `${input}.${b64url(sig)}`, expires_in: expiresIn }));
  });
  return {
    realm: `${srv.url}/token`, service, issuer, certFile: cert, requests,
    get useless() { return state.useless; },
    set useless(n: number) { state.useless = n; },
  };
}

export type Fault = (req: http.IncomingMessage, res: http.ServerResponse, forward: (mutate?: ForwardMutation) => void) => void;

export interface ForwardMutation {
  /** replace the response body */
  body?: (b: Buffer) => Buffer;
  /** send this many body bytes, then reset the connection */
  resetAfter?: number;
  /** declare this Content-Length instead of the real one */
  contentLength?: (real: number) => number;
}

/**
 * A proxy in front of a registry that hands each request to `fault`, which
 * answers itself or calls forward() (optionally mutating the response).
 * Records every request line and Range header.
 */
export async function faultyProxy(t: { after: (fn: () => void | Promise<void>) => void }, upstream: string, fault: { current: Fault | undefined }) {
  const seen: { method: string; url: string; range?: string }[] = [];
  const srv = await serve(t, (req, res) => {
    seen.push({ method: req.method!, url: req.url!, range: req.headers.range });
    const forward = (mutate: ForwardMutation = {}) => {
      const up = http.request(`${upstream}${req.url}`, { method: req.method, headers: { ...req.headers, host: new URL(upstream).host } }, (ur) => {
        const chunks: Buffer[] = [];
        ur.on("data", (c) => chunks.push(c));
        ur.on("end", () => {
          let body: Buffer = Buffer.concat(chunks);
          if (mutate.body) body = mutate.body(body);
          const headers = { ...ur.headers };
          // Locations point at the upstream: point them back at us.
          if (typeof headers.location === "string") headers.location = headers.location.replace(upstream, "");
          if (req.method !== "HEAD") headers["content-length"] = String(mutate.contentLength ? mutate.contentLength(body.length) : body.length);
          delete headers["transfer-encoding"];
          res.writeHead(ur.statusCode!, headers);
          if (mutate.resetAfter !== undefined) {
            res.write(body.subarray(0, mutate.resetAfter), () => setTimeout(() => res.socket?.destroy(), 20));
            return;
          }
          if (mutate.contentLength && mutate.contentLength(body.length) > body.length) {
            res.write(body, () => setTimeout(() => res.socket?.destroy(), 20));
            return;
          }
          res.end(req.method === "HEAD" ? undefined : body.subarray(0, mutate.contentLength ? mutate.contentLength(body.length) : body.length));
        });
      });
      up.on("error", () => res.socket?.destroy());
      req.pipe(up);
    };
    if (fault.current) fault.current(req, res, forward);
    else forward();
  });
  return { ...srv, seen };
}

/** The CLI, asynchronously (in-process servers must keep running), with env and stdin. */
export function strataRun(root: string, args: string[], opts: { env?: Record<string, string>; input?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "--root", root, ...args], { env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.end(opts.input ?? "");
    child.on("close", (code) => resolve({ code: code ?? 128, stdout, stderr }));
  });
}

/** Runs a peer tool asynchronously; rejects on a non-zero exit. */
export function tool(cmd: string, args: string[], opts: { env?: Record<string, string> } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${stderr}`))));
  });
}

/**
 * An OCI layout at `dir` holding one two-platform image (linux/amd64 and linux/arm64, one layer each
 * with a file /arch naming the platform), its index named `name`.
 */
export async function multiPlatformLayout(dir: string, name: string): Promise<{ index: { digest: string; size: number }; manifests: { digest: string; size: number }[] }> {
  const { gzipSync } = await import("node:zlib");
  const { makeTar, sha256 } = await import("./helpers.ts");
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  const blob = (b: Buffer) => {
    const d = sha256(b);
    writeFileSync(join(dir, "blobs", "sha256", d.slice(7)), b);
    return { digest: d, size: b.length };
  };
  const manifests = [];
  for (const arch of ["amd64", "arm64"]) {
    const tar = await makeTar([{ name: "arch", content: `${arch}\n` }]);
    const layer = blob(gzipSync(tar));
    const config = blob(Buffer.from(JSON.stringify({ architecture: arch, os: "linux", rootfs: { type: "layers", diff_ids: [sha256(tar)] } })));
    const manifest = blob(Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
    })));
    manifests.push({ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest, platform: { architecture: arch, os: "linux" } });
  }
  const index = blob(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests })));
  writeFileSync(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", ...index, annotations: { "org.opencontainers.image.ref.name": name } }] }));
  return { index, manifests };
}
