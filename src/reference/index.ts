import { StrataError } from "../errors/index.js";
import { isDigest, type Digest } from "../digest/index.js";

/** A normalised image reference: `domain/path[:tag][@digest]`. */
export interface Reference {
  domain: string;
  path: string;
  tag?: string;
  digest?: Digest;
}

export const DEFAULT_DOMAIN = "docker.io";
export const DEFAULT_TAG = "latest";
const NAME_TOTAL_MAX = 255;

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;

function invalid(input: string, why: string): never {
  throw new StrataError("INVALID_REFERENCE", `invalid reference format "${input}": ${why}`);
}

function validDomain(d: string): boolean {
  let host = d;
  const ipv6 = /^\[[a-fA-F0-9:]+\](?::(\d+))?$/.exec(d);
  if (ipv6) return true;
  const colon = d.lastIndexOf(":");
  if (colon >= 0) {
    if (!/^\d+$/.test(d.slice(colon + 1))) return false;
    host = d.slice(0, colon);
  }
  return host.split(".").every((c) => DOMAIN_COMPONENT.test(c));
}

/**
 * Parses a reference the way Docker does: `busybox` → docker.io/library/busybox:latest
 * (the tag is defaulted only when `defaultTag` is set and no digest is given).
 */
export function parseReference(input: string, opts: { defaultTag?: boolean } = { defaultTag: true }): Reference {
  if (input === "") invalid(input, "empty reference");
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) invalid(input, `invalid digest "${d}"`);
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const lastColon = rest.lastIndexOf(":");
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) invalid(input, `invalid tag "${tag}"`);
  }
  if (rest === "") invalid(input, "missing repository name");
  let domain = DEFAULT_DOMAIN;
  let path = rest;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase()) {
      if (!validDomain(first)) invalid(input, `invalid registry host "${first}"`);
      domain = first;
      path = rest.slice(slash + 1);
    }
  }
  if (domain === "index.docker.io") domain = DEFAULT_DOMAIN;
  if (path !== path.toLowerCase()) invalid(input, "repository name must be lowercase");
  for (const c of path.split("/")) if (!PATH_COMPONENT.test(c)) invalid(input, `invalid repository name component "${c}"`);
  if (domain === DEFAULT_DOMAIN && !path.includes("/")) path = `library/${path}`;
  if (domain.length + 1 + path.length > NAME_TOTAL_MAX) invalid(input, `repository name longer than ${NAME_TOTAL_MAX} characters`);
  if (tag === undefined && digest === undefined && opts.defaultTag !== false) tag = DEFAULT_TAG;
  return { domain, path, tag, digest };
}

export function repositoryName(r: Reference): string {
  return `${r.domain}/${r.path}`;
}

export function formatReference(r: Reference): string {
  return repositoryName(r) + (r.tag ? `:${r.tag}` : "") + (r.digest ? `@${r.digest}` : "");
}

/** Docker's short form: docker.io/library/busybox → busybox, docker.io/a/b → a/b. */
export function familiarName(r: Reference): string {
  if (r.domain !== DEFAULT_DOMAIN) return repositoryName(r);
  return r.path.startsWith("library/") && r.path.split("/").length === 2 ? r.path.slice(8) : r.path;
}

export function familiarString(r: Reference): string {
  return familiarName(r) + (r.tag ? `:${r.tag}` : "") + (r.digest ? `@${r.digest}` : "");
}

/** Parses a stored, already normalised `name:tag`. */
export function splitTagged(name: string): { repository: string; tag: string } {
  const slash = name.lastIndexOf("/");
  const colon = name.lastIndexOf(":");
  if (colon <= slash) return { repository: name, tag: DEFAULT_TAG };
  return { repository: name.slice(0, colon), tag: name.slice(colon + 1) };
}
