import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { StrataError } from "../errors/index.js";
import type { Engine } from "../engine/index.js";

export interface Volume {
  Name: string;
  Driver: "local";
  Mountpoint: string;
  CreatedAt: string;
  Labels: Record<string, string>;
  Scope: "local";
  Options: Record<string, string>;
}

/** One `-v` argument, parsed and checked (Docker's rules for HOST:CTR[:MODE]). */
export interface BindSpec {
  /** absolute host path for a bind mount, else the volume's name */
  source: string;
  destination: string;
  readonly: boolean;
  kind: "bind" | "volume";
  anonymous: boolean;
}

const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
export const ANONYMOUS_LABEL = "strata.anonymous";

export function parseBind(spec: string): BindSpec {
  const parts = spec.split(":");
  if (parts.length > 3 || parts.some((p) => p === "")) throw new StrataError("INVALID_ARGUMENT", `invalid volume specification: '${spec}'`);
  if (parts.length === 1) {
    if (!parts[0].startsWith("/")) throw new StrataError("INVALID_ARGUMENT", `invalid volume specification: '${spec}': the container path must be absolute`);
    return { source: randomBytes(32).toString("hex"), destination: parts[0], readonly: false, kind: "volume", anonymous: true };
  }
  const [source, destination, mode = "rw"] = parts;
  if (!destination.startsWith("/")) throw new StrataError("INVALID_ARGUMENT", `invalid volume specification: '${spec}': the container path must be absolute`);
  const modes = mode.split(",");
  for (const m of modes) if (!["ro", "rw", "z", "Z"].includes(m)) throw new StrataError("INVALID_ARGUMENT", `invalid mode: ${m}`);
  const readonly = modes.includes("ro");
  if (source.startsWith("/")) {
    if (!existsSync(source)) throw new StrataError("INVALID_ARGUMENT", `invalid mount config for type "bind": bind source path does not exist: ${source}`);
    return { source, destination, readonly, kind: "bind", anonymous: false };
  }
  if (!VOLUME_NAME.test(source))
    throw new StrataError("INVALID_ARGUMENT", `"${source}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`);
  return { source, destination, readonly, kind: "volume", anonymous: false };
}

/** Named volumes: directories under <root>/volumes/<name>/_data, listed in meta.db. */
export class Volumes {
  constructor(private readonly engine: Engine) {}

  private row(name: string): { name: string; created: number; labels: string } | undefined {
    return this.engine.meta.db.prepare("SELECT * FROM volumes WHERE name = ?").get(name) as { name: string; created: number; labels: string } | undefined;
  }

  mountpoint(name: string): string {
    return join(this.engine.root, "volumes", name, "_data");
  }

  private toVolume(r: { name: string; created: number; labels: string }): Volume {
    return { Name: r.name, Driver: "local", Mountpoint: this.mountpoint(r.name), CreatedAt: new Date(r.created).toISOString(), Labels: JSON.parse(r.labels), Scope: "local", Options: {} };
  }

  /** Creates a volume, or returns the existing one of that name (as `docker volume create` does). */
  create(name?: string, labels: Record<string, string> = {}): Volume {
    const n = name ?? randomBytes(32).toString("hex");
    if (!VOLUME_NAME.test(n)) throw new StrataError("INVALID_ARGUMENT", `"${n}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed`);
    mkdirSync(this.mountpoint(n), { recursive: true, mode: 0o755 });
    this.engine.meta.write(() => this.engine.meta.db.prepare("INSERT OR IGNORE INTO volumes (name, created, labels) VALUES (?, ?, ?)").run(n, Date.now(), JSON.stringify(labels)));
    return this.toVolume(this.row(n)!);
  }

  inspect(name: string): Volume {
    const r = this.row(name);
    if (!r) throw new StrataError("NOT_FOUND", `no such volume: ${name}`);
    return this.toVolume(r);
  }

  list(): Volume[] {
    return (this.engine.meta.db.prepare("SELECT * FROM volumes ORDER BY name").all() as { name: string; created: number; labels: string }[]).map((r) => this.toVolume(r));
  }

  /** Containers whose mounts name the volume. */
  usedBy(name: string): string[] {
    return this.engine.containers
      .list()
      .filter((c) => c.hostConfig.Binds.some((b) => b.split(":")[0] === name))
      .map((c) => c.id);
  }

  remove(name: string, force = false): void {
    this.inspect(name);
    const users = this.usedBy(name);
    if (users.length && !force) throw new StrataError("CONFLICT", `remove ${name}: volume is in use - [${users.join(", ")}]`);
    this.engine.meta.write(() => this.engine.meta.db.prepare("DELETE FROM volumes WHERE name = ?").run(name));
    rmSync(join(this.engine.root, "volumes", name), { recursive: true, force: true });
  }

  /** True when the volume has never held anything: Docker then seeds it from the image. */
  isEmpty(name: string): boolean {
    const dir = this.mountpoint(name);
    return !statSync(dir, { throwIfNoEntry: false }) || readdirSync(dir).length === 0;
  }
}
