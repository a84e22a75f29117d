import { createRequire } from "node:module";

/** Our small N-API addon (native/strata_fs.c): calls Node does not expose. Throws Errors with errno codes. */
export interface NativeFs {
  lsetxattr(path: string, name: string, value: Buffer): void;
  /** null when the attribute is absent */
  lgetxattr(path: string, name: string): Buffer | null;
  llistxattr(path: string): string[];
  /** mode includes the file type: S_IFCHR, S_IFBLK or S_IFIFO */
  mknod(path: string, mode: number, major: number, minor: number): void;
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  umount2(target: string, flags: number): void;
  /**
   * Applies `n` records in order on a libuv thread, stopping at the first
   * failure (see native/strata_fs.c); resolves with the number applied.
   * `nums` holds BATCH_FIELDS numbers per record: its path (absolute,
   * NUL-terminated) is at offset `path` of `data`, a file's content is the
   * `len` bytes at offset `data`, a symlink's target the same (followed by a
   * NUL); a file is created with its mode (less the umask) unless `chmod`
   * is 1, then the mode is set after the owner. A directory record writes
   * its device, its inode and whether it was made (1, else merged: 0) to
   * `out[3i]`, `out[3i + 1]`, `out[3i + 2]`. `data`, `nums` and `out` must
   * stay untouched until it settles.
   */
  applyBatch(n: number, data: Buffer, nums: Float64Array, out: Float64Array): Promise<number>;
  /**
   * Sets directory modes and times in the order given, on a libuv thread,
   * through no-follow handles; a directory gone or not the one recorded is
   * skipped. `nums` holds RESTORE_FIELDS numbers per path. `trusted`: nothing
   * was removed or replaced since the directories were recorded, so every
   * path still leads, through directories only, to the one recorded: set by
   * path, the mode only where `chmod` is 1. Rejects with the first failure.
   */
  restoreDirs(paths: string[], nums: Float64Array, trusted: boolean): Promise<void>;
  /**
   * Copies regular files `paths[2i]` to new files `paths[2i + 1]` (O_EXCL,
   * no symlink followed at either end) in order on a libuv thread, stopping
   * at the first failure; resolves with the number copied. `nums` holds
   * mode, uid, gid, atime and mtime (seconds) per file.
   */
  copyBatch(paths: string[], nums: Float64Array): Promise<number>;
}

/** The numbers of one applyBatch record, in this order (uid -1: no chown). */
export const BATCH_FIELDS = ["kind", "mode", "uid", "gid", "atime", "mtime", "path", "data", "len", "chmod"] as const;
export const BATCH_FILE = 0;
export const BATCH_DIR = 1;
export const BATCH_SYMLINK = 2;
/** The numbers of one restoreDirs record, in this order. */
export const RESTORE_FIELDS = ["mode", "atime", "mtime", "dev", "ino", "chmod"] as const;

export const MNT_DETACH = 2;

let addon: NativeFs | undefined;

/** Loaded on first use; src/native, dist/native and dist/bundle all sit two levels below the project root. */
export function nativeFs(): NativeFs {
  addon ??= createRequire(import.meta.url)(new URL("../../build/Release/strata_fs.node", import.meta.url).pathname) as NativeFs;
  return addon;
}
