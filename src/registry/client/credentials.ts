import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { StrataError } from "../../errors/index.js";

/** A user name and a password (or token), as Docker keeps them. */
export interface Credentials {
  username: string;
  password: string;
}

/** Docker Hub's logins are keyed by this URL, not by its host name. */
export const DOCKER_HUB_KEY = "https://index.docker.io/v1/";

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [k: string]: unknown;
}

/** Where Docker's config.json lives: $DOCKER_CONFIG/config.json, else ~/.docker/config.json. */
export function dockerConfigPath(env = process.env): string {
  return join(env.DOCKER_CONFIG || join(env.HOME || homedir(), ".docker"), "config.json");
}

/** The key a registry's login is stored under. */
export function credentialKey(domain: string): string {
  return domain === "docker.io" || domain === "index.docker.io" || domain === "registry-1.docker.io" ? DOCKER_HUB_KEY : domain;
}

async function readConfig(path: string): Promise<DockerConfig> {
  let raw: string;
  try {
    raw = await fs.readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new StrataError("IO", `read ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const v = JSON.parse(raw) as unknown;
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v as DockerConfig;
  } catch (e) {
    throw new StrataError("INVALID_ARGUMENT", `${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Writes config.json atomically, readable by its owner only (it holds passwords). */
async function writeConfig(path: string, config: DockerConfig): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  await fs.writeFile(tmp, JSON.stringify(config, null, "\t") + "\n", { mode: 0o600 });
  await fs.rename(tmp, path);
}

/** Runs `docker-credential-<helper> <verb>` with `input` on stdin; resolves its stdout. */
function runHelper(helper: string, verb: "get" | "store" | "erase", input: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(`docker-credential-${helper}`, [verb], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", (e) => reject(new StrataError("NOT_FOUND", `credential helper docker-credential-${helper}: ${e.message}`, { cause: e })));
    child.on("close", (code) => resolve({ code: code ?? 1, out }));
    child.stdin.end(input);
  });
}

function helperFor(config: DockerConfig, key: string): string | undefined {
  return config.credHelpers?.[key] ?? (config.credsStore || undefined);
}

/** The entry in `auths` for `key`, also under the spellings Docker accepts (scheme, trailing path). */
function authEntry(config: DockerConfig, key: string): NonNullable<DockerConfig["auths"]>[string] | undefined {
  const auths = config.auths ?? {};
  if (auths[key]) return auths[key];
  for (const [k, v] of Object.entries(auths)) {
    const host = k.replace(/^https?:\/\//, "").replace(/\/.*$/, "");
    if (host === key || (key === DOCKER_HUB_KEY && (host === "index.docker.io" || host === "docker.io"))) return v;
  }
  return undefined;
}

/**
 * The login for a registry, as Docker finds it: a credential helper
 * (credHelpers for this registry, else credsStore), else `auths` in
 * config.json (base64 `user:password`). Undefined means anonymous.
 */
export async function lookupCredentials(domain: string, path = dockerConfigPath()): Promise<Credentials | undefined> {
  const config = await readConfig(path);
  const key = credentialKey(domain);
  const helper = helperFor(config, key);
  if (helper) {
    const r = await runHelper(helper, "get", key);
    if (r.code !== 0) {
      if (/credentials not found/i.test(r.out)) return undefined;
      throw new StrataError("UNAUTHORIZED", `credential helper docker-credential-${helper}: ${r.out.trim().split("\n")[0] || `exit ${r.code}`}`);
    }
    const v = JSON.parse(r.out) as { Username?: string; Secret?: string };
    return v.Secret ? { username: v.Username ?? "", password: v.Secret } : undefined;
  }
  const entry = authEntry(config, key);
  if (!entry) return undefined;
  if (entry.auth) {
    const plain = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = plain.indexOf(":");
    if (colon < 0) throw new StrataError("INVALID_ARGUMENT", `${path}: the auth for ${key} is not base64 of user:password`);
    return { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/** Stores a login where Docker would: the configured helper, else `auths` in config.json. */
export async function storeCredentials(domain: string, creds: Credentials, path = dockerConfigPath()): Promise<string> {
  const config = await readConfig(path);
  const key = credentialKey(domain);
  const helper = helperFor(config, key);
  if (helper) {
    const r = await runHelper(helper, "store", JSON.stringify({ ServerURL: key, Username: creds.username, Secret: creds.password }));
    if (r.code !== 0) throw new StrataError("IO", `credential helper docker-credential-${helper}: ${r.out.trim().split("\n")[0]}`);
    return `docker-credential-${helper}`;
  }
  config.auths = { ...config.auths, [key]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString("base64") } };
  await writeConfig(path, config);
  return path;
}

/** Removes a login; false when there was none. */
export async function eraseCredentials(domain: string, path = dockerConfigPath()): Promise<boolean> {
  const config = await readConfig(path);
  const key = credentialKey(domain);
  const helper = helperFor(config, key);
  let found = false;
  if (helper) found = (await runHelper(helper, "erase", key)).code === 0;
  let edited = false;
  const auths = config.auths ?? {};
  for (const k of Object.keys(auths)) {
    const host = k.replace(/^https?:\/\//, "").replace(/\/.*$/, "");
    if (k === key || host === key || (key === DOCKER_HUB_KEY && (host === "index.docker.io" || host === "docker.io"))) {
      delete auths[k];
      edited = true;
    }
  }
  if (edited) await writeConfig(path, config);
  return found || edited;
}
