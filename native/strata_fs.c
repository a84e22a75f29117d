// Filesystem calls Node does not expose: extended attributes (overlay
// whiteouts and opaque directories, PAX xattrs), mknod (devices, FIFOs,
// overlay whiteouts) and mount/umount2 (overlayfs). Each is a thin, synchronous
// wrapper that throws an Error with Node's errno code (ENOENT, EPERM, ...).
// applyBatch, restoreDirs and copyBatch are the asynchronous calls, each
// running a batch on a libuv thread: a layer's small files, directories and
// symlinks, already resolved and checked by the extractor, and the final
// directory modes and times (see src/archive/extract.ts); the files a build's
// COPY writes (see src/build/builder.ts).
#define _GNU_SOURCE  // copy_file_range
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "strata_fs: bad arguments"); return NULL; } } while (0)

static napi_value errno_error(napi_env env, int err, const char *syscall, const char *path) {
  char msg[4200];
  snprintf(msg, sizeof msg, "%s: %s, %s '%s'", uv_err_name(-err), strerror(err), syscall, path ? path : "");
  napi_value code, message, error, sys;
  napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_value errnum;
  napi_create_int32(env, -err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  napi_throw(env, errno_error(env, err, syscall, path));
  return NULL;
}

// Copies a JS string argument into a heap buffer (caller frees).
static char *get_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// lsetxattr(path, name, value: Buffer)
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *path = get_string(env, argv[0]), *name = get_string(env, argv[1]);
  void *data = NULL;
  size_t len = 0;
  napi_value result = NULL;
  if (!path || !name || napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) napi_throw_type_error(env, NULL, "lsetxattr(path, name, buffer)");
  else if (lsetxattr(path, name, data, len, 0) != 0) throw_errno(env, errno, "lsetxattr", path);
  else result = undefined(env);
  free(path);
  free(name);
  return result;
}

// lgetxattr(path, name): Buffer, or null when the attribute is absent
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *path = get_string(env, argv[0]), *name = get_string(env, argv[1]);
  napi_value result = NULL;
  if (!path || !name) {
    napi_throw_type_error(env, NULL, "lgetxattr(path, name)");
    goto out;
  }
  for (;;) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) {
      if (errno == ENODATA) napi_get_null(env, &result);
      else throw_errno(env, errno, "lgetxattr", path);
      goto out;
    }
    void *buf;
    napi_value b;
    if (napi_create_buffer(env, n, &buf, &b) != napi_ok) goto out;
    ssize_t m = n ? lgetxattr(path, name, buf, n) : 0;
    if (m < 0 && errno == ERANGE) continue;  // it grew in between: ask again
    if (m < 0) {
      throw_errno(env, errno, "lgetxattr", path);
      goto out;
    }
    if (m == n) result = b;
    else napi_create_buffer_copy(env, m, buf, NULL, &result);
    goto out;
  }
out:
  free(path);
  free(name);
  return result;
}

// llistxattr(path): string[]
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *path = get_string(env, argv[0]);
  napi_value result = NULL;
  char *buf = NULL;
  if (!path) {
    napi_throw_type_error(env, NULL, "llistxattr(path)");
    return NULL;
  }
  for (;;) {
    ssize_t n = llistxattr(path, NULL, 0);
    if (n < 0) {
      throw_errno(env, errno, "llistxattr", path);
      break;
    }
    free(buf);
    buf = malloc(n + 1);
    ssize_t m = n ? llistxattr(path, buf, n) : 0;
    if (m < 0 && errno == ERANGE) continue;
    if (m < 0) {
      throw_errno(env, errno, "llistxattr", path);
      break;
    }
    napi_create_array(env, &result);
    uint32_t i = 0;
    for (ssize_t off = 0; off < m; off += strlen(buf + off) + 1) {
      napi_value s;
      napi_create_string_utf8(env, buf + off, NAPI_AUTO_LENGTH, &s);
      napi_set_element(env, result, i++, s);
    }
    break;
  }
  free(buf);
  free(path);
  return result;
}

// mknod(path, mode, major, minor): mode carries the file type (S_IFCHR, S_IFBLK, S_IFIFO)
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *path = get_string(env, argv[0]);
  uint32_t mode = 0, major = 0, minor = 0;
  napi_value result = NULL;
  if (!path || napi_get_value_uint32(env, argv[1], &mode) != napi_ok || napi_get_value_uint32(env, argv[2], &major) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &minor) != napi_ok)
    napi_throw_type_error(env, NULL, "mknod(path, mode, major, minor)");
  else if (mknod(path, mode, makedev(major, minor)) != 0) throw_errno(env, errno, "mknod", path);
  else result = undefined(env);
  free(path);
  return result;
}

// mount(source, target, fstype, flags, data)
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *source = get_string(env, argv[0]), *target = get_string(env, argv[1]), *fstype = get_string(env, argv[2]), *data = get_string(env, argv[4]);
  uint32_t flags = 0;
  napi_value result = NULL;
  if (!source || !target || !fstype || !data || napi_get_value_uint32(env, argv[3], &flags) != napi_ok)
    napi_throw_type_error(env, NULL, "mount(source, target, fstype, flags, data)");
  else if (mount(source, target, fstype, flags, data) != 0) throw_errno(env, errno, "mount", target);
  else result = undefined(env);
  free(source);
  free(target);
  free(fstype);
  free(data);
  return result;
}

// umount2(target, flags)
static napi_value js_umount2(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *target = get_string(env, argv[0]);
  uint32_t flags = 0;
  napi_value result = NULL;
  if (!target || napi_get_value_uint32(env, argv[1], &flags) != napi_ok) napi_throw_type_error(env, NULL, "umount2(target, flags)");
  else if (umount2(target, flags) != 0) throw_errno(env, errno, "umount2", target);
  else result = undefined(env);
  free(target);
  return result;
}


// ---- applyBatch, restoreDirs ----------------------------------------------

// applyBatch: one record per entry, REC numbers each in `nums`; its path
// (absolute, NUL-terminated) and its data (a file's content, a symlink's
// NUL-terminated target) are at offsets in one shared data buffer.
enum { R_KIND, R_MODE, R_UID, R_GID, R_ATIME, R_MTIME, R_PATH, R_DATA, R_LEN, R_CHMOD, REC };
enum { K_FILE = 0, K_DIR = 1, K_SYMLINK = 2 };
// restoreDirs: one record per directory, DREC numbers each.
enum { D_MODE, D_ATIME, D_MTIME, D_DEV, D_INO, D_CHMOD, DREC };

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep;  // the arguments: the buffers stay alive while the thread writes them
  size_t n;
  char **paths;  // restoreDirs, copyBatch: copies of the paths given
  char *data;    // applyBatch: the shared data buffer (paths and contents)
  double *nums, *out;
  size_t done;
  // restoreDirs: nothing was removed or replaced since the directories were
  // recorded, so each path is still the directory recorded, through
  // directories only (see restore_execute)
  int trusted;
  // restoreDirs: the failure to reject with (errno, call), none when err is 0
  int err;
  const char *syscall;
} batch_t;

static struct timespec to_timespec(double t) {
  struct timespec ts;
  double s = floor(t);
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((t - s) * 1e9);
  if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
  return ts;
}

// A regular file: created (never through a symlink, never over anything),
// written, then owner (unless uid is -1: already right), mode (after chown,
// which clears setuid/setgid; unless R_CHMOD is 0: the mode given to open,
// less the umask, is already right) and times. Returns 0, or -1 on the
// first failing call.
static int apply_file(const double *r, const char *path, const char *data, size_t len) {
  int chmod_after = r[R_CHMOD] != 0;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, chmod_after ? 0600 : (mode_t)r[R_MODE] & 0777);
  if (fd < 0) return -1;
  int rc = 0;
  while (rc == 0 && len > 0) {
    ssize_t w = write(fd, data, len);
    if (w < 0) {
      if (errno != EINTR) rc = -1;
      continue;
    }
    data += w, len -= (size_t)w;  // a short write: go on with the rest
  }
  struct timespec ts[2] = {to_timespec(r[R_ATIME]), to_timespec(r[R_MTIME])};
  if (rc == 0 && r[R_UID] >= 0) rc = fchown(fd, (uid_t)r[R_UID], (gid_t)r[R_GID]);
  if (rc == 0 && chmod_after) rc = fchmod(fd, (mode_t)r[R_MODE]);
  if (rc == 0) rc = futimens(fd, ts);
  if (close(fd) != 0) rc = -1;
  return rc;
}

// A directory: made (with its permission bits and at least 0700, so that
// what goes in it can be made; the caller sets the exact mode at the end,
// when it differs), or merged with the directory already there (anything
// else in the way is a failure, for the caller to replace); owner (when it
// differs); device, inode and whether it was made (1) or merged (0) into
// out. Its times are the caller's too.
static int apply_dir(const double *r, const char *path, double *out) {
  struct stat st;
  int made = mkdir(path, ((mode_t)r[R_MODE] & 0777) | 0700) == 0;
  if (!made && errno != EEXIST) return -1;
  if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return -1;
  out[2] = made;
  if (r[R_UID] >= 0 && (st.st_uid != (uid_t)r[R_UID] || st.st_gid != (gid_t)r[R_GID]) && lchown(path, (uid_t)r[R_UID], (gid_t)r[R_GID]) != 0) return -1;
  out[0] = (double)st.st_dev;
  out[1] = (double)st.st_ino;
  return 0;
}

// A symlink to `target` (NUL-terminated, no NUL inside): created (never
// over anything), then its own owner and times (never through it).
static int apply_symlink(const double *r, const char *path, const char *target) {
  int rc = symlink(target, path);
  struct timespec ts[2] = {to_timespec(r[R_ATIME]), to_timespec(r[R_MTIME])};
  if (rc == 0 && r[R_UID] >= 0) rc = lchown(path, (uid_t)r[R_UID], (gid_t)r[R_GID]);
  if (rc == 0) rc = utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
  return rc;
}

// On the libuv thread: the records in order, stopping at the first failure.
static void batch_execute(napi_env env, void *data) {
  batch_t *b = data;
  for (b->done = 0; b->done < b->n; b->done++) {
    const double *r = b->nums + b->done * REC;
    const char *path = b->data + (size_t)r[R_PATH], *d = b->data + (size_t)r[R_DATA];
    int rc = r[R_KIND] == K_DIR ? apply_dir(r, path, b->out + 3 * b->done) : r[R_KIND] == K_SYMLINK ? apply_symlink(r, path, d) : apply_file(r, path, d, (size_t)r[R_LEN]);
    if (rc != 0) return;
  }
}

// On the libuv thread: each directory's mode (when it differs) and times,
// through a no-follow handle; one that is gone, or is not the directory
// recorded (device and inode), is skipped. Stops at the first failure.
// Trusted (nothing was removed or replaced since the directories were
// recorded: no path can lead anywhere else), by path: the mode when D_CHMOD
// says it is not what mkdir gave, then the times.
static void restore_execute(napi_env env, void *data) {
  batch_t *b = data;
  for (size_t i = 0; i < b->n; i++) {
    const double *r = b->nums + i * DREC;
    const char *path = b->paths[i];
    if (b->trusted) {
      struct timespec ts[2] = {to_timespec(r[D_ATIME]), to_timespec(r[D_MTIME])};
      const char *failed = NULL;
      if (r[D_CHMOD] != 0 && fchmodat(AT_FDCWD, path, (mode_t)r[D_MODE], 0) != 0) failed = "chmod";
      else if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) failed = "utimensat";
      if (failed) {
        b->err = errno, b->syscall = failed, b->done = i;
        return;
      }
      continue;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
      b->err = errno, b->syscall = "open", b->done = i;
      return;
    }
    struct stat st;
    struct timespec ts[2] = {to_timespec(r[D_ATIME]), to_timespec(r[D_MTIME])};
    const char *failed = NULL;
    if (fstat(fd, &st) != 0) failed = "fstat";
    else if ((double)st.st_dev != r[D_DEV] || (double)st.st_ino != r[D_INO]) ;
    else if ((st.st_mode & 07777) != (mode_t)r[D_MODE] && fchmod(fd, (mode_t)r[D_MODE]) != 0) failed = "fchmod";
    else if (futimens(fd, ts) != 0) failed = "futimens";
    if (failed) b->err = errno, b->syscall = failed, b->done = i;
    close(fd);
    if (failed) return;
  }
}

static void batch_free(napi_env env, batch_t *b) {
  if (b->keep) napi_delete_reference(env, b->keep);
  if (b->work) napi_delete_async_work(env, b->work);
  if (b->paths) for (size_t i = 0; i < b->n; i++) free(b->paths[i]);
  free(b->paths);
  free(b);
}

// Back on the JS thread. applyBatch resolves with the number of records
// applied: the caller applies the rest itself, which meets (and reports) the
// failure again. restoreDirs resolves, or rejects with its failure.
static void batch_complete(napi_env env, napi_status status, void *data) {
  batch_t *b = data;
  napi_value v;
  if (b->err) {
    napi_reject_deferred(env, b->deferred, errno_error(env, b->err, b->syscall, b->paths[b->done]));
  } else {
    napi_create_uint32(env, (uint32_t)b->done, &v);
    napi_resolve_deferred(env, b->deferred, v);
  }
  batch_free(env, b);
}

// Copies the paths (argv[0]) and checks nums (argv[1]) holds `rec` numbers per path.
static int batch_paths(napi_env env, napi_value *argv, batch_t *b, size_t rec) {
  uint32_t n = 0;
  size_t nnums = 0;
  napi_typedarray_type t;
  void *nums = NULL;
  if (napi_get_array_length(env, argv[0], &n) != napi_ok || napi_get_typedarray_info(env, argv[1], &t, &nnums, &nums, NULL, NULL) != napi_ok ||
      t != napi_float64_array || nnums < (size_t)n * rec)
    return -1;
  b->nums = nums;
  b->paths = calloc(n ? n : 1, sizeof *b->paths);
  if (!b->paths) return -1;
  b->n = n;
  for (uint32_t i = 0; i < n; i++) {
    napi_value p;
    if (napi_get_element(env, argv[0], i, &p) != napi_ok || !(b->paths[i] = get_string(env, p))) return -1;
  }
  return 0;
}

// Keeps the argc arguments alive and queues the work; returns its promise.
static napi_value batch_queue(napi_env env, napi_value *argv, size_t argc, batch_t *b, napi_async_execute_callback execute) {
  napi_value args, name, promise;
  if (napi_create_array_with_length(env, argc, &args) != napi_ok) return NULL;
  for (uint32_t i = 0; i < argc; i++) napi_set_element(env, args, i, argv[i]);
  napi_create_string_utf8(env, "strata:applyBatch", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, args, 1, &b->keep) != napi_ok || napi_create_promise(env, &b->deferred, &promise) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, batch_complete, b, &b->work) != napi_ok || napi_queue_async_work(env, b->work) != napi_ok)
    return NULL;
  return promise;
}

// True when data[off..] holds a NUL before `len`.
static int terminated(const char *data, size_t len, double off) {
  return off >= 0 && off < (double)len && memchr(data + (size_t)off, 0, len - (size_t)off) != NULL;
}

// applyBatch(n: number, data: Buffer, nums: Float64Array, out: Float64Array): Promise<number>
// Every offset is checked here, on the JS thread, before any work is queued;
// directory records write their device, inode and whether it was made to
// out[3i], out[3i + 1], out[3i + 2].
static napi_value js_applyBatch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], promise = NULL;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_t *b = calloc(1, sizeof *b);
  uint32_t n = 0;
  size_t len = 0, nnums = 0, nout = 0;
  napi_typedarray_type t1, t2;
  void *data = NULL, *nums = NULL, *out = NULL;
  if (!b || argc < 4 || napi_get_value_uint32(env, argv[0], &n) != napi_ok || napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &t1, &nnums, &nums, NULL, NULL) != napi_ok || t1 != napi_float64_array || nnums < (size_t)n * REC ||
      napi_get_typedarray_info(env, argv[3], &t2, &nout, &out, NULL, NULL) != napi_ok || t2 != napi_float64_array || nout < (size_t)n * 3)
    goto bad;
  b->n = n, b->data = data, b->nums = nums, b->out = out;
  for (size_t i = 0; i < n; i++) {
    const double *r = b->nums + i * REC;
    if (!terminated(data, len, r[R_PATH]) || r[R_DATA] < 0 || r[R_LEN] < 0 || r[R_DATA] + r[R_LEN] > (double)len) goto bad;
    if (r[R_KIND] == K_SYMLINK && (!terminated(data, len, r[R_DATA]) || strlen(b->data + (size_t)r[R_DATA]) != (size_t)r[R_LEN])) goto bad;
  }
  if ((promise = batch_queue(env, argv, 4, b, batch_execute))) return promise;
bad:
  if (b) batch_free(env, b);
  napi_throw_type_error(env, NULL, "applyBatch(n, data, nums, out)");
  return NULL;
}

// restoreDirs(paths: string[], nums: Float64Array, trusted: boolean): Promise<void>, in the order given
static napi_value js_restoreDirs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], promise = NULL;
  bool trusted = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_t *b = calloc(1, sizeof *b);
  if (b && argc == 3 && napi_get_value_bool(env, argv[2], &trusted) == napi_ok && batch_paths(env, argv, b, DREC) == 0) {
    b->trusted = trusted;
    if ((promise = batch_queue(env, argv, 2, b, restore_execute))) return promise;
  }
  if (b) batch_free(env, b);
  napi_throw_type_error(env, NULL, "restoreDirs(paths, nums, trusted)");
  return NULL;
}

// ---- copyBatch -----------------------------------------------------------

// One record per file, CREC numbers each; its paths are paths[2i] (source)
// and paths[2i + 1] (destination), absolute.
enum { C_MODE, C_UID, C_GID, C_ATIME, C_MTIME, CREC };

// The bytes of in into out: copy_file_range (in the kernel), read/write
// where the filesystems cannot. Returns 0 or -1.
static int copy_data(int in, int out) {
  for (int fallback = 0;;) {
    ssize_t n;
    if (!fallback) {
      n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
        fallback = 1;
        continue;
      }
    } else {
      char buf[65536];
      n = read(in, buf, sizeof buf);
      for (ssize_t off = 0; n > 0 && off < n;) {
        ssize_t w = write(out, buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        off += w;
      }
    }
    if (n == 0) return 0;
    if (n < 0 && errno != EINTR) return -1;
  }
}

// A regular file copied from src (never through a symlink) to a new dst
// (never through a symlink, never over anything), then owner, mode (after
// chown, which clears setuid/setgid) and times.
static int copy_file(const double *r, const char *src, const char *dst) {
  int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0) return -1;
  int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0) {
    close(in);
    return -1;
  }
  struct timespec ts[2] = {to_timespec(r[C_ATIME]), to_timespec(r[C_MTIME])};
  int rc = copy_data(in, out);
  if (rc == 0) rc = fchown(out, (uid_t)r[C_UID], (gid_t)r[C_GID]);
  if (rc == 0) rc = fchmod(out, (mode_t)r[C_MODE]);
  if (rc == 0) rc = futimens(out, ts);
  if (close(out) != 0) rc = -1;
  close(in);
  return rc;
}

// On the libuv thread: the files in order, stopping at the first failure.
static void copy_execute(napi_env env, void *data) {
  batch_t *b = data;
  for (b->done = 0; b->done < b->n / 2; b->done++)
    if (copy_file(b->nums + b->done * CREC, b->paths[2 * b->done], b->paths[2 * b->done + 1]) != 0) return;
}

// copyBatch(paths: string[], nums: Float64Array): Promise<number>, the
// number of files copied: the caller copies the rest itself, which meets
// (and reports) the failure again.
static napi_value js_copyBatch(napi_env env, napi_callback_info info) {
  size_t argc = 2, nnums = 0;
  napi_value argv[2], promise = NULL;
  napi_typedarray_type t;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_t *b = calloc(1, sizeof *b);
  if (b && batch_paths(env, argv, b, 0) == 0 && b->n % 2 == 0 && napi_get_typedarray_info(env, argv[1], &t, &nnums, NULL, NULL, NULL) == napi_ok &&
      nnums >= b->n / 2 * CREC && (promise = batch_queue(env, argv, 2, b, copy_execute)))
    return promise;
  if (b) batch_free(env, b);
  napi_throw_type_error(env, NULL, "copyBatch(paths, nums)");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
    {"mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL},
    {"umount2", NULL, js_umount2, NULL, NULL, NULL, napi_enumerable, NULL},
    {"applyBatch", NULL, js_applyBatch, NULL, NULL, NULL, napi_enumerable, NULL},
    {"restoreDirs", NULL, js_restoreDirs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"copyBatch", NULL, js_copyBatch, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
