import { readFileSync } from "node:fs";
import type { ExecUser } from "./user.js";

/** The parts of an OCI runtime spec (config.json, runtime-spec 1.0) strata writes. */
export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface OciProcess {
  terminal: boolean;
  user: { uid: number; gid: number; additionalGids?: number[] };
  args: string[];
  env: string[];
  cwd: string;
  capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
  rlimits?: { type: string; hard: number; soft: number }[];
  noNewPrivileges: boolean;
  consoleSize?: { height: number; width: number };
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: Record<string, unknown>;
}

/** Docker's default capability set. */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/** Docker's masked paths: hidden from the container behind /dev/null or an empty read-only tmpfs. */
export const MASKED_PATHS = [
  "/proc/asound",
  "/proc/acpi",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

/** Docker's read-only paths. */
export const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The kernel filesystems every container gets, as Docker mounts them. */
function systemMounts(): OciMount[] {
  return [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["ro", "nosuid", "noexec", "nodev"] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
  ];
}

/** Replaces or appends `K=V` entries, later ones winning, order kept (Docker's env merge). */
export function mergeEnv(...lists: string[][]): string[] {
  const out: string[] = [];
  const at = new Map<string, number>();
  for (const list of lists)
    for (const kv of list) {
      const k = kv.includes("=") ? kv.slice(0, kv.indexOf("=")) : kv;
      const i = at.get(k);
      if (i === undefined) {
        at.set(k, out.length);
        out.push(kv);
      } else out[i] = kv;
    }
  return out;
}

/** The host's hard limits, which a spec must never exceed (raising them needs CAP_SYS_RESOURCE). */
export function hostHardLimits(): { nofile: number; nproc: number } {
  const limits = readFileSync("/proc/self/limits", "utf8");
  const hard = (label: string) => {
    const m = new RegExp(`^${label}\\s+\\S+\\s+(\\S+)`, "m").exec(limits);
    return !m || m[1] === "unlimited" ? 1048576 : Number(m[1]);
  };
  return { nofile: hard("Max open files"), nproc: hard("Max processes") };
}

export interface SpecInput {
  rootfs: string;
  readonlyRootfs: boolean;
  args: string[];
  env: string[];
  cwd: string;
  user: ExecUser;
  hostname: string;
  terminal: boolean;
  network: "host" | "none";
  /** extra mounts (volumes, tmpfs, /etc/hosts …), after the system ones */
  mounts: OciMount[];
  memory?: number;
  nanoCpus?: number;
  pidsLimit?: number;
  noNewPrivileges: boolean;
  cgroupsPath: string;
}

/** The process part, shared by `run` and `exec`. */
export function processSpec(p: { args: string[]; env: string[]; cwd: string; user: ExecUser; terminal: boolean; noNewPrivileges: boolean }): OciProcess {
  const { nofile } = hostHardLimits();
  const caps = [...DEFAULT_CAPABILITIES];
  return {
    terminal: p.terminal,
    user: { uid: p.user.uid, gid: p.user.gid, ...(p.user.additionalGids.length ? { additionalGids: p.user.additionalGids } : {}) },
    args: p.args,
    env: p.env,
    cwd: p.cwd,
    // Docker gives a non-root user no effective capabilities; the bounding set stays.
    capabilities: { bounding: caps, effective: p.user.uid === 0 ? caps : [], permitted: p.user.uid === 0 ? caps : [] },
    // As high as the host allows, never above its hard limit.
    rlimits: [{ type: "RLIMIT_NOFILE", hard: nofile, soft: nofile }],
    noNewPrivileges: p.noNewPrivileges,
  };
}

/** An OCI runtime spec from the resolved container configuration, with Docker's defaults. */
export function buildSpec(i: SpecInput): OciSpec {
  const namespaces = [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }];
  if (i.network === "none") namespaces.push({ type: "network" });
  const resources: Record<string, unknown> = { devices: [{ allow: false, access: "rwm" }] };
  if (i.memory) resources.memory = { limit: i.memory };
  if (i.nanoCpus) resources.cpu = { quota: Math.round((i.nanoCpus * 100000) / 1e9), period: 100000 };
  if (i.pidsLimit) resources.pids = { limit: i.pidsLimit };
  return {
    ociVersion: "1.0.2",
    process: processSpec(i),
    root: { path: i.rootfs, readonly: i.readonlyRootfs },
    hostname: i.hostname,
    mounts: [...systemMounts(), ...i.mounts],
    linux: {
      namespaces,
      cgroupsPath: i.cgroupsPath,
      resources,
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}
