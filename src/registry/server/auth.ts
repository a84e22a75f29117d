// Registry auth: htpasswd (bcrypt) basic auth, and bearer tokens from the
// server's own /token endpoint carrying per-repository pull/push/delete
// scopes (JWTs signed with HMAC-SHA256). Anonymous pull is allowed for the
// configured repository prefixes.
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { promises as fs } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import bcrypt from "bcryptjs";
import { RegistryError, isRepositoryName } from "../spec.js";
import type { Action, Authorizer } from "./index.js";

export interface AccessRule {
  /** A user name, or "*" for every authenticated user. */
  user: string;
  /** Repository name prefix ("" for all); "team/" matches team/x, "team" matches team and team/x. */
  repository: string;
  actions: Action[];
}

export interface AuthOptions {
  /** user → bcrypt hash */
  users: Map<string, string>;
  /** Issue bearer tokens at /token and challenge with them (default: basic challenge). */
  token?: { service?: string; secret?: Buffer; expiresIn?: number };
  /** Repository prefixes anyone may pull ("" for all). */
  anonymousPull?: string[];
  /** Who may do what; without rules, every authenticated user may do everything. */
  access?: AccessRule[];
}

const ALL: Action[] = ["pull", "push", "delete"];

/** Parses an htpasswd file; only bcrypt ($2a$/$2b$/$2y$) entries are accepted. */
export function parseHtpasswd(text: string): Map<string, string> {
  const users = new Map<string, string>();
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (!t || t.startsWith("#")) continue;
    const i = t.indexOf(":");
    if (i <= 0) continue;
    const hash = t.slice(i + 1);
    if (!/^\$2[aby]\$\d\d\$/.test(hash)) continue;
    users.set(t.slice(0, i), hash);
  }
  return users;
}

export async function loadHtpasswd(path: string): Promise<Map<string, string>> {
  return parseHtpasswd(await fs.readFile(path, "utf8"));
}

export function hashPassword(password: string, cost = 10): string {
  return bcrypt.hashSync(password, cost);
}

function prefixMatches(prefix: string, repository: string): boolean {
  if (prefix === "" || prefix === "*") return true;
  if (prefix.endsWith("/")) return repository.startsWith(prefix);
  return repository === prefix || repository.startsWith(prefix + "/");
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString("base64url");
}

interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

export class RegistryAuth implements Authorizer {
  private readonly secret: Buffer;
  private readonly service: string;
  private readonly expiresIn: number;
  /** sha256(user:password:hash) of credentials bcrypt already accepted: bcrypt is slow by design, per request it would be the bottleneck. */
  private readonly verified = new Set<string>();

  constructor(private readonly opts: AuthOptions) {
    this.secret = opts.token?.secret ?? randomBytes(32);
    this.service = opts.token?.service ?? "strata-registry";
    this.expiresIn = opts.token?.expiresIn ?? 300;
  }

  /** The actions `user` (undefined: anonymous) may do on `repository`. */
  allowed(user: string | undefined, repository: string): Action[] {
    if (user === undefined) return (this.opts.anonymousPull ?? []).some((p) => prefixMatches(p, repository)) ? ["pull"] : [];
    if (!this.opts.access?.length) return ALL;
    const out = new Set<Action>();
    for (const r of this.opts.access) if ((r.user === "*" || r.user === user) && prefixMatches(r.repository, repository)) for (const a of r.actions) out.add(a);
    if ((this.opts.anonymousPull ?? []).some((p) => prefixMatches(p, repository))) out.add("pull");
    return [...out];
  }

  /** The user, or undefined for empty credentials (some clients send ":" when they have none). */
  mayPull(user: string | undefined, repository: string): boolean {
    return this.allowed(user, repository).includes("pull");
  }

  private async checkBasic(header: string): Promise<string | undefined> {
    let decoded: string;
    try {
      decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
    } catch {
      throw new RegistryError("UNAUTHORIZED", "malformed basic credentials");
    }
    const i = decoded.indexOf(":");
    const user = i < 0 ? decoded : decoded.slice(0, i);
    const password = i < 0 ? "" : decoded.slice(i + 1);
    if (user === "" && password === "") return undefined;
    const hash = this.opts.users.get(user);
    const key = createHash("sha256").update(`${user}\0${password}\0${hash ?? ""}`).digest("hex");
    if (hash && this.verified.has(key)) return user;
    if (!hash || !(await bcrypt.compare(password, hash))) throw new RegistryError("UNAUTHORIZED", "invalid username or password");
    if (this.verified.size > 10_000) this.verified.clear();
    this.verified.add(key);
    return user;
  }

  private sign(claims: Record<string, unknown>): string {
    const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
    const body = b64url(JSON.stringify(claims));
    const sig = createHmac("sha256", this.secret).update(`${head}.${body}`).digest();
    return `${head}.${body}.${b64url(sig)}`;
  }

  private verify(token: string): { sub?: string; access: TokenAccess[] } {
    const parts = token.split(".");
    if (parts.length !== 3) throw new RegistryError("UNAUTHORIZED", "malformed bearer token");
    const want = createHmac("sha256", this.secret).update(`${parts[0]}.${parts[1]}`).digest();
    const got = Buffer.from(parts[2], "base64url");
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new RegistryError("UNAUTHORIZED", "invalid bearer token");
    let claims: { sub?: string; exp?: number; aud?: string; access?: TokenAccess[] };
    try {
      claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
    } catch {
      throw new RegistryError("UNAUTHORIZED", "malformed bearer token");
    }
    if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) throw new RegistryError("UNAUTHORIZED", "bearer token expired");
    if (claims.aud !== this.service) throw new RegistryError("UNAUTHORIZED", "bearer token for another service");
    return { sub: claims.sub, access: Array.isArray(claims.access) ? claims.access : [] };
  }

  private challenge(req: IncomingMessage, repository: string | undefined, actions: Action[], error?: string): Record<string, string> {
    if (!this.opts.token) return { "WWW-Authenticate": `Basic realm="${this.service}"` };
    const proto = (req.socket as { encrypted?: boolean }).encrypted ? "https" : "http";
    const realm = `${proto}://${req.headers.host ?? "localhost"}/token`;
    let v = `Bearer realm="${realm}",service="${this.service}"`;
    if (repository === "") v += `,scope="registry:catalog:*"`;
    else if (repository !== undefined && actions.length) v += `,scope="repository:${repository}:${actions.join(",")}"`;
    if (error) v += `,error="${error}"`;
    return { "WWW-Authenticate": v };
  }

  async authorize(req: IncomingMessage, repository: string | undefined, actions: Action[]): Promise<string | undefined> {
    const header = req.headers.authorization;
    let user: string | undefined;
    let granted: Action[] | undefined;
    let presented = false;
    try {
      if (header?.toLowerCase().startsWith("basic ")) {
        user = await this.checkBasic(header);
        presented = user !== undefined;
      }
      else if (header?.toLowerCase().startsWith("bearer ")) {
        const t = this.verify(header.slice(7).trim());
        user = t.sub || undefined;
        granted = [];
        for (const a of t.access) {
          if (repository === "" && a.type === "registry" && a.name === "catalog") granted.push("pull");
          if (repository !== undefined && a.type === "repository" && a.name === repository) for (const x of a.actions) if (ALL.includes(x as Action)) granted.push(x as Action);
        }
      }
    } catch (e) {
      if (e instanceof RegistryError) throw new RegistryError(e.code, e.message, { headers: this.challenge(req, repository, actions, "invalid_token") });
      throw e;
    }
    // The base endpoint asks for credentials, so that clients learn the scheme and send theirs;
    // a client without any goes on anonymously (an anonymous token, or no header).
    if (repository === undefined) {
      if (presented || granted !== undefined) return user;
      throw new RegistryError("UNAUTHORIZED", "authentication required", { headers: this.challenge(req, repository, actions) });
    }
    const may = granted ?? (repository === "" ? (user !== undefined || this.allowed(undefined, "").length ? ["pull" as Action] : []) : this.allowed(user, repository));
    if (actions.every((a) => may.includes(a))) return user;
    if (user === undefined && granted === undefined)
      throw new RegistryError("UNAUTHORIZED", "authentication required", { headers: this.challenge(req, repository, actions) });
    if (granted !== undefined)
      throw new RegistryError("UNAUTHORIZED", `token does not grant ${actions.join(",")} on ${repository || "the catalog"}`, {
        headers: this.challenge(req, repository, actions, "insufficient_scope"),
      });
    throw new RegistryError("DENIED", `${user} may not ${actions.join(",")} ${repository || "the catalog"}`);
  }

  /** GET /token?service=…&scope=repository:name:pull,push — Docker's token protocol. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams): Promise<boolean> {
    if (path !== "/token" || !this.opts.token) return false;
    const header = req.headers.authorization;
    let user: string | undefined;
    if (header?.toLowerCase().startsWith("basic ")) user = await this.checkBasic(header);
    const access: TokenAccess[] = [];
    for (const scope of query.getAll("scope").flatMap((s) => s.split(" "))) {
      const parts = scope.split(":");
      if (parts.length < 3) continue;
      const type = parts[0];
      const actions = parts[parts.length - 1].split(",");
      const name = parts.slice(1, -1).join(":");
      if (type === "registry" && name === "catalog") {
        if (user !== undefined || this.allowed(undefined, "").length) access.push({ type, name, actions: ["*"] });
        continue;
      }
      if (type !== "repository" || !isRepositoryName(name)) continue;
      const may = this.allowed(user, name);
      const give = actions.filter((a) => may.includes(a as Action));
      if (actions.includes("*")) give.push(...may);
      access.push({ type, name, actions: [...new Set(give)] });
    }
    const now = Math.floor(Date.now() / 1000);
    const token = this.sign({ iss: this.service, sub: user ?? "", aud: this.service, iat: now, nbf: now - 5, exp: now + this.expiresIn, jti: randomBytes(8).toString("hex"), access });
    const body = Buffer.from(JSON.stringify({ token, access_token: token, expires_in: this.expiresIn, issued_at: new Date(now * 1000).toISOString() }));
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
    res.end(body);
    return true;
  }
}
