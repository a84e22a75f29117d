import { createHash } from "node:crypto";
import { StrataError } from "../errors/index.js";

/** An OCI digest, `sha256:<64 hex>`. Only sha256 is written; sha512 is read. */
export type Digest = `${string}:${string}`;

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export function isDigest(s: string): s is Digest {
  return DIGEST_RE.test(s);
}

export function parseDigest(s: string): Digest {
  if (!isDigest(s)) throw new StrataError("INVALID_DIGEST", `invalid digest "${s}"`);
  return s;
}

export function digestAlgorithm(d: Digest): string {
  return d.slice(0, d.indexOf(":"));
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(":") + 1);
}

export function sha256(data: Buffer | string): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)). */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : sha256(`${out[out.length - 1]} ${d}`));
  return out;
}
