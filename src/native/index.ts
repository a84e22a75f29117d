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
   * `nums` holds BATCH_FIELDS numbers per record: its path (relative to
   * the directory open as `root`, NUL-terminated) is at offset `path` of
   * `data`, a file's content is the `len` bytes at offset `data`, a
   * symlink's target the same (followed by a NUL); a file is created with its mode (less the umask) unless `chmod`
   * is 1, then the mode is set after the owner. A directory record writes
   * its device, its inode and whether it was made (1, else merged: 0) to
   * `out[3i]`, `out[3i + 1]`, `out[3i + 2]`. `data`, `nums` and `out` must
   * stay untouched until it settles. With `parallel`, a batch whose paths
   * are all distinct may make its directories first, then its files and
   * symlinks on two threads; a failure then resolves with 0, and the
   * caller applies the whole batch again in order, replacing what was made.
   */
  applyBatch(root: number, n: number, data: Buffer, nums: Float64Array, out: Float64Array, parallel: boolean): Promise<number>;
  /**
   * Sets directory modes and times in the order given (paths relative to
   * the directory open as `root`, "." for itself), on a libuv thread,
   * through no-follow handles; a directory gone or not the one recorded is
   * skipped. `nums` holds RESTORE_FIELDS numbers per path. `trusted`: nothing
   * was removed or replaced since the directories were recorded, so every
   * path still leads, through directories only, to the one recorded: set by
   * path, the mode only where `chmod` is 1. Rejects with the first failure.
   */
  restoreDirs(root: number, paths: string[], nums: Float64Array, trusted: boolean): Promise<void>;
  /**
   * Copies regular files `paths[2i]` to new files `paths[2i + 1]` (O_EXCL,
   * no symlink followed at either end) in order on a libuv thread, stopping
   * at the first failure; resolves with the number copied. `nums` holds
   * mode, uid, gid, atime and mtime (seconds) per file.
   */
  copyBatch(paths: string[], nums: Float64Array): Promise<number>;
  /** An empty set of directories for scanTar. */
  scanNew(): ScanSet;
  scanHas(set: ScanSet, rel: string): boolean;
  scanAdd(set: ScanSet, rel: string): void;
  /** Empties the set. */
  scanForget(set: ScanSet): void;
  /**
   * The extractor's fast path (native/strata_fs.c says exactly which
   * entries it takes): from `off` in `chunk`, writes the whole entries that
   * would go into a batch as they are into the batch (`arena`, `nums`) and
   * their directories into `set`, stopping at the first other one, a full
   * batch or the chunk's end; returns the offset it stopped at. `state`
   * holds SCAN_FIELDS: used, count and last are updated.
   */
  scanTar(set: ScanSet, chunk: Buffer, off: number, arena: Buffer, nums: Float64Array, state: Float64Array): number;
  /** A running digest of `algorithm` ("sha256", "sha512", ...) to feed with hashRead; throws a TypeError for an unknown one. */
  hashNew(algorithm: string): NativeHash;
  /**
   * Reads into `buf` from file position `pos` of `fd` until it is full or
   * the file ends, and feeds what it read to `hash`, on a libuv thread;
   * resolves with the number of bytes read. One at a time per hash, and
   * `buf` stays untouched until it settles.
   */
  hashRead(fd: number, buf: Buffer, pos: number, hash: NativeHash): Promise<number>;
  /** Finishes `hash`: its lowercase hex digest. */
  hashDigest(hash: NativeHash): string;
}

/** scanTar's directory set (an opaque handle). */
export type ScanSet = { readonly __scanSet: unique symbol };

/** scanTar's state, in this order: the batch's bytes used and records (in, out), its limits, the process's ids (-2: none), chown (1/0), the umask, and the last path's offset (out, -1: none). */
export const SCAN_FIELDS = ["used", "count", "maxRecords", "batchBytes", "smallFile", "ownUid", "ownGid", "chown", "umask", "last"] as const;

/** A digest being computed by the addon (an opaque handle). */
export type NativeHash = { readonly __nativeHash: unique symbol };

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
