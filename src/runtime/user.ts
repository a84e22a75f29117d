import { readFileSync } from "node:fs";
import { RootScope } from "../archive/safejoin.js";
import { StrataError } from "../errors/index.js";

/** The identity a container process runs as, resolved inside its root filesystem. */
export interface ExecUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  /** from /etc/passwd, "/" when the user has no entry */
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const ID = /^\d+$/;

function lines(text: string | undefined): string[][] {
  if (!text) return [];
  return text
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"))
    .map((l) => l.split(":"));
}

export function parsePasswd(text: string | undefined): PasswdEntry[] {
  return lines(text)
    .filter((f) => f.length >= 4 && ID.test(f[2]) && ID.test(f[3]))
    .map((f) => ({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5] || "/" }));
}

export function parseGroup(text: string | undefined): GroupEntry[] {
  return lines(text)
    .filter((f) => f.length >= 3 && ID.test(f[2]))
    .map((f) => ({ name: f[0], gid: Number(f[2]), members: (f[3] ?? "").split(",").filter(Boolean) }));
}

/**
 * Docker's `--user` rules (runc's GetExecUser): `name|uid[:group|gid]`, empty
 * meaning root. A name must exist in /etc/passwd; a uid need not (then gid 0,
 * home "/"). Without an explicit group, the user's supplementary groups are
 * the /etc/group entries that list its name.
 */
export function resolveUser(spec: string, passwd: string | undefined, group: string | undefined): ExecUser {
  const [userPart, groupPart] = spec.includes(":") ? [spec.slice(0, spec.indexOf(":")), spec.slice(spec.indexOf(":") + 1)] : [spec, undefined];
  const users = parsePasswd(passwd);
  const groups = parseGroup(group);
  const want = userPart === "" ? "0" : userPart;
  const entry = ID.test(want) ? users.find((u) => u.uid === Number(want)) : users.find((u) => u.name === want);
  if (!entry && !ID.test(want))
    throw new StrataError("INVALID_ARGUMENT", `unable to find user ${want}: no matching entries in passwd file`);
  const uid = entry?.uid ?? Number(want);
  let gid = entry?.gid ?? 0;
  let additionalGids: number[] = [];
  if (groupPart !== undefined && groupPart !== "") {
    if (ID.test(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((x) => x.name === groupPart);
      if (!g) throw new StrataError("INVALID_ARGUMENT", `unable to find group ${groupPart}: no matching entries in group file`);
      gid = g.gid;
    }
  } else if (entry) {
    additionalGids = [...new Set(groups.filter((g) => g.members.includes(entry.name)).map((g) => g.gid))];
  }
  // A non-root user's primary group is also a supplementary one (moby's and podman's fix for CVE-2023-25173).
  if (uid !== 0 && !additionalGids.includes(gid)) additionalGids.unshift(gid);
  if (uid > 0xfffffffe || gid > 0xfffffffe) throw new StrataError("INVALID_ARGUMENT", `invalid user "${spec}": id out of range`);
  return { uid, gid, additionalGids, home: entry?.home ?? "/" };
}

/** Reads a file of the container's root filesystem (symlinks resolved inside it); undefined when absent. */
export function readRootFile(rootfs: string, path: string): string | undefined {
  const rel = new RootScope(rootfs).resolve(path);
  if (rel === undefined) return undefined;
  try {
    return readFileSync(rel === "" ? rootfs : `${rootfs}/${rel}`, "utf8");
  } catch {
    return undefined;
  }
}

/** `resolveUser` against the container's own /etc/passwd and /etc/group. */
export function resolveUserIn(rootfs: string, spec: string): ExecUser {
  return resolveUser(spec, readRootFile(rootfs, "/etc/passwd"), readRootFile(rootfs, "/etc/group"));
}
