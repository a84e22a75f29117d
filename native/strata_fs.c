// Filesystem calls Node does not expose: extended attributes (overlay
// whiteouts and opaque directories, PAX xattrs), mknod (devices, FIFOs,
// overlay whiteouts) and mount/umount2 (overlayfs). Each is a thin, synchronous
// wrapper that throws an Error with Node's errno code (ENOENT, EPERM, ...).
// applyBatch, restoreDirs and copyBatch are the asynchronous calls, each
// running a batch on a libuv thread: a layer's small files, directories and
// symlinks, already resolved and checked by the extractor, and the final
// directory modes and times (see src/archive/extract.ts); the files a build's
// COPY writes (see src/build/builder.ts). hashRead reads a blob's next piece
// and hashes it on a libuv thread too, with the OpenSSL that Node carries
// (see fileChunks in src/content/index.ts).
#define _GNU_SOURCE  // copy_file_range
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/evp.h>
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
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
// (relative to the root's descriptor, NUL-terminated) and its data (a file's content, a symlink's
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
  int root;      // applyBatch, restoreDirs: the descriptor the paths are relative to
  int parallel;  // applyBatch: files and symlinks may go on two threads (see batch_execute)
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
static int apply_file(int root, const double *r, const char *path, const char *data, size_t len) {
  int chmod_after = r[R_CHMOD] != 0;
  int fd = openat(root, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, chmod_after ? 0600 : (mode_t)r[R_MODE] & 0777);
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
static int apply_dir(int root, const double *r, const char *path, double *out) {
  struct stat st;
  int made = mkdirat(root, path, ((mode_t)r[R_MODE] & 0777) | 0700) == 0;
  if (!made && errno != EEXIST) return -1;
  if (fstatat(root, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) return -1;
  out[2] = made;
  if (r[R_UID] >= 0 && (st.st_uid != (uid_t)r[R_UID] || st.st_gid != (gid_t)r[R_GID]) &&
      fchownat(root, path, (uid_t)r[R_UID], (gid_t)r[R_GID], AT_SYMLINK_NOFOLLOW) != 0)
    return -1;
  out[0] = (double)st.st_dev;
  out[1] = (double)st.st_ino;
  return 0;
}

// A symlink to `target` (NUL-terminated, no NUL inside): created (never
// over anything), then its own owner and times (never through it).
static int apply_symlink(int root, const double *r, const char *path, const char *target) {
  int rc = symlinkat(target, root, path);
  struct timespec ts[2] = {to_timespec(r[R_ATIME]), to_timespec(r[R_MTIME])};
  if (rc == 0 && r[R_UID] >= 0) rc = fchownat(root, path, (uid_t)r[R_UID], (gid_t)r[R_GID], AT_SYMLINK_NOFOLLOW);
  if (rc == 0) rc = utimensat(root, path, ts, AT_SYMLINK_NOFOLLOW);
  return rc;
}

// FNV-1a: the hash of the addon's two small path tables.
static uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return h;
}

static int apply_record(batch_t *b, size_t i) {
  const double *r = b->nums + i * REC;
  const char *path = b->data + (size_t)r[R_PATH], *d = b->data + (size_t)r[R_DATA];
  return r[R_KIND] == K_DIR       ? apply_dir(b->root, r, path, b->out + 3 * i)
         : r[R_KIND] == K_SYMLINK ? apply_symlink(b->root, r, path, d)
                                  : apply_file(b->root, r, path, d, (size_t)r[R_LEN]);
}

// Whether no two records of the batch have the same path (so that no
// record's outcome depends on another's but through its parent directory).
static int distinct_paths(batch_t *b) {
  enum { SLOTS = 1024 };  // twice the records a batch holds at most (BATCH_RECORDS)
  int32_t slot[SLOTS];
  if (b->n > SLOTS / 2) return 0;
  memset(slot, -1, sizeof slot);
  for (size_t i = 0; i < b->n; i++) {
    const char *p = b->data + (size_t)b->nums[i * REC + R_PATH];
    size_t h = fnv1a(p, strlen(p)) & (SLOTS - 1);
    for (; slot[h] >= 0; h = (h + 1) & (SLOTS - 1))
      if (strcmp(b->data + (size_t)b->nums[slot[h] * REC + R_PATH], p) == 0) return 0;
    slot[h] = (int32_t)i;
  }
  return 1;
}

typedef struct {
  batch_t *b;
  size_t first;  // this half's records: first, first + 2, ...
  int failed;
} half_t;

static void *apply_half(void *arg) {
  half_t *h = arg;
  for (size_t i = h->first; i < h->b->n && !h->failed; i += 2)
    if (h->b->nums[i * REC + R_KIND] != K_DIR && apply_record(h->b, i) != 0) h->failed = 1;
  return NULL;
}

// On the libuv thread: the records in order, stopping at the first failure
// (done: how many were applied). A batch of many records whose paths are
// all distinct, when `parallel` allows, goes faster: its directories first,
// in order, then its files and symlinks, which then depend on nothing but
// their directories, on this thread and a second one. A failure there
// reports done = 0: the caller applies the whole batch again, in order,
// replacing what was made (the same entries: the same result).
static void batch_execute(napi_env env, void *data) {
  batch_t *b = data;
  if (b->parallel && b->n >= 64 && distinct_paths(b)) {
    for (size_t i = 0; i < b->n; i++)
      if (b->nums[i * REC + R_KIND] == K_DIR && apply_record(b, i) != 0) {
        b->done = 0;
        return;
      }
    half_t one = {b, 1, 0}, zero = {b, 0, 0};
    pthread_t t;
    int spawned = pthread_create(&t, NULL, apply_half, &one) == 0;
    apply_half(&zero);
    if (spawned) pthread_join(t, NULL);
    else apply_half(&one);
    b->done = zero.failed || one.failed ? 0 : b->n;
    return;
  }
  for (b->done = 0; b->done < b->n; b->done++)
    if (apply_record(b, b->done) != 0) return;
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
      if (r[D_CHMOD] != 0 && fchmodat(b->root, path, (mode_t)r[D_MODE], 0) != 0) failed = "chmod";
      else if (utimensat(b->root, path, ts, AT_SYMLINK_NOFOLLOW) != 0) failed = "utimensat";
      if (failed) {
        b->err = errno, b->syscall = failed, b->done = i;
        return;
      }
      continue;
    }
    int fd = openat(b->root, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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

// applyBatch(root: number, n: number, data: Buffer, nums: Float64Array, out: Float64Array, parallel: boolean): Promise<number>
// Every offset is checked here, on the JS thread, before any work is queued;
// directory records write their device, inode and whether it was made to
// out[3i], out[3i + 1], out[3i + 2].
static napi_value js_applyBatch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], promise = NULL;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_t *b = calloc(1, sizeof *b);
  bool parallel = false;
  int32_t root = -1;
  uint32_t n = 0;
  size_t len = 0, nnums = 0, nout = 0;
  napi_typedarray_type t1, t2;
  void *data = NULL, *nums = NULL, *out = NULL;
  if (!b || argc < 6 || napi_get_value_int32(env, argv[0], &root) != napi_ok || root < 0 || napi_get_value_uint32(env, argv[1], &n) != napi_ok ||
      napi_get_value_bool(env, argv[5], &parallel) != napi_ok ||
      napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok ||
      napi_get_typedarray_info(env, argv[3], &t1, &nnums, &nums, NULL, NULL) != napi_ok || t1 != napi_float64_array || nnums < (size_t)n * REC ||
      napi_get_typedarray_info(env, argv[4], &t2, &nout, &out, NULL, NULL) != napi_ok || t2 != napi_float64_array || nout < (size_t)n * 3)
    goto bad;
  b->root = root, b->parallel = parallel, b->n = n, b->data = data, b->nums = nums, b->out = out;
  for (size_t i = 0; i < n; i++) {
    const double *r = b->nums + i * REC;
    if (!terminated(data, len, r[R_PATH]) || r[R_DATA] < 0 || r[R_LEN] < 0 || r[R_DATA] + r[R_LEN] > (double)len) goto bad;
    if (r[R_KIND] == K_SYMLINK && (!terminated(data, len, r[R_DATA]) || strlen(b->data + (size_t)r[R_DATA]) != (size_t)r[R_LEN])) goto bad;
  }
  if ((promise = batch_queue(env, argv + 1, 4, b, batch_execute))) return promise;
bad:
  if (b) batch_free(env, b);
  napi_throw_type_error(env, NULL, "applyBatch(root, n, data, nums, out, parallel)");
  return NULL;
}

// restoreDirs(root: number, paths: string[], nums: Float64Array, trusted: boolean): Promise<void>,
// in the order given; the paths are relative to the directory open as root.
static napi_value js_restoreDirs(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], promise = NULL;
  bool trusted = false;
  int32_t root = -1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_t *b = calloc(1, sizeof *b);
  if (b && argc == 4 && napi_get_value_int32(env, argv[0], &root) == napi_ok && root >= 0 && napi_get_value_bool(env, argv[3], &trusted) == napi_ok &&
      batch_paths(env, argv + 1, b, DREC) == 0) {
    b->trusted = trusted, b->root = root;
    if ((promise = batch_queue(env, argv + 1, 2, b, restore_execute))) return promise;
  }
  if (b) batch_free(env, b);
  napi_throw_type_error(env, NULL, "restoreDirs(root, paths, nums, trusted)");
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

// ---- scanTar ---------------------------------------------------------------

// The set of directories (relative paths) the extractor knows to be real
// directories reached through directories only: an External, grown as
// scanTar adds the directories it queues, emptied by scanForget when the
// extractor forgets what it resolved. Open addressing, FNV-1a.
typedef struct {
  char **keys;
  size_t cap, n;
} dirset_t;

// The slot of key p[0..n) in keys (cap a power of two): where it is, or the empty slot where it would go.
static size_t dirset_slot(char **keys, size_t cap, const char *p, size_t n) {
  size_t i = fnv1a(p, n) & (cap - 1);
  while (keys[i] && !(strncmp(keys[i], p, n) == 0 && keys[i][n] == 0)) i = (i + 1) & (cap - 1);
  return i;
}

static int dirset_has(dirset_t *d, const char *p, size_t n) {
  return n == 0 || (d->cap && d->keys[dirset_slot(d->keys, d->cap, p, n)] != NULL);
}

// Adds p[0..n); 0, or -1 out of memory.
static int dirset_add(dirset_t *d, const char *p, size_t n) {
  if (2 * (d->n + 1) > d->cap) {
    size_t cap = d->cap ? 2 * d->cap : 1024;
    char **keys = calloc(cap, sizeof *keys);
    if (!keys) return -1;
    for (size_t i = 0; i < d->cap; i++)
      if (d->keys[i]) keys[dirset_slot(keys, cap, d->keys[i], strlen(d->keys[i]))] = d->keys[i];
    free(d->keys);
    d->keys = keys, d->cap = cap;
  }
  size_t i = dirset_slot(d->keys, d->cap, p, n);
  if (d->keys[i]) return 0;
  if (!(d->keys[i] = malloc(n + 1))) return -1;
  memcpy(d->keys[i], p, n);
  d->keys[i][n] = 0;
  d->n++;
  return 0;
}

static void dirset_clear(dirset_t *d) {
  for (size_t i = 0; i < d->cap; i++) free(d->keys[i]), d->keys[i] = NULL;
  d->n = 0;
}

static void dirset_finalize(napi_env env, void *data, void *hint) {
  dirset_t *d = data;
  dirset_clear(d);
  free(d->keys);
  free(d);
}

// scanNew(): External, an empty directory set.
static napi_value js_scanNew(napi_env env, napi_callback_info info) {
  napi_value result;
  dirset_t *d = calloc(1, sizeof *d);
  if (!d || napi_create_external(env, d, dirset_finalize, NULL, &result) != napi_ok) {
    free(d);
    napi_throw_error(env, NULL, "scanNew: out of memory");
    return NULL;
  }
  return result;
}

// scanForget(set: External): empties it.
static napi_value js_scanForget(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  dirset_t *d = NULL;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(argc == 1 ? napi_get_value_external(env, argv[0], (void **)&d) : napi_invalid_arg);
  dirset_clear(d);
  return undefined(env);
}

// The set and the path (UTF-8, up to 4 KiB: longer is -1) of scanAdd(set, rel) and scanHas(set, rel).
static ssize_t set_and_path(napi_env env, napi_callback_info info, dirset_t **d, char rel[4096]) {
  size_t argc = 2, n = 0;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_external(env, argv[0], (void **)d) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], rel, 4096, &n) != napi_ok)
    return -2;
  return n < 4095 ? (ssize_t)n : -1;
}

// scanAdd(set: External, rel: string)
static napi_value js_scanAdd(napi_env env, napi_callback_info info) {
  dirset_t *d = NULL;
  char rel[4096];
  ssize_t n = set_and_path(env, info, &d, rel);
  CHECK(n == -2 ? napi_invalid_arg : napi_ok);
  // A path too long for this buffer is simply not known here (the scanner takes none that long).
  if (n >= 0 && dirset_add(d, rel, (size_t)n) != 0) {
    napi_throw_error(env, NULL, "scanAdd: out of memory");
    return NULL;
  }
  return undefined(env);
}

// scanHas(set: External, rel: string): boolean
static napi_value js_scanHas(napi_env env, napi_callback_info info) {
  napi_value result;
  dirset_t *d = NULL;
  char rel[4096];
  ssize_t n = set_and_path(env, info, &d, rel);
  CHECK(n == -2 ? napi_invalid_arg : napi_ok);
  CHECK(napi_get_boolean(env, n >= 0 && dirset_has(d, rel, (size_t)n), &result));
  return result;
}

// An octal tar number field as readTar takes it (NULs and spaces around
// the digits); -1 for anything else, base-256 included (left to readTar).
static double octal(const unsigned char *b, size_t len) {
  size_t i = 0;
  while (i < len && (b[i] == ' ' || b[i] == 0)) i++;
  double n = 0;
  for (; i < len && b[i] >= '0' && b[i] <= '7'; i++) n = n * 8 + (b[i] - '0');
  for (; i < len; i++)
    if (b[i] != ' ' && b[i] != 0) return -1;
  return n;
}

static size_t field_len(const unsigned char *b, size_t max) {
  const unsigned char *z = memchr(b, 0, max);
  return z ? (size_t)(z - b) : max;
}

// Printable ASCII only: the bytes are the name readTar would decode.
static int plain_ascii(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] < 0x20 || p[i] > 0x7e) return 0;
  return 1;
}

// A name that entryComponents() takes as it is and the extractor batches:
// no empty, `.` or `..` component, no leading or doubled `/`, no component
// starting with `.wh.` (whiteouts, and names the extractor refuses).
static int clean_name(const char *p, size_t n) {
  if (n == 0 || p[0] == '/') return 0;
  for (size_t i = 0; i <= n;) {
    size_t j = i;
    while (j < n && p[j] != '/') j++;
    size_t c = j - i;
    if (c == 0 || (c == 1 && p[i] == '.') || (c == 2 && p[i] == '.' && p[i + 1] == '.') || (c >= 4 && memcmp(p + i, ".wh.", 4) == 0)) return 0;
    i = j + 1;
  }
  return 1;
}

enum { S_USED, S_COUNT, S_MAXREC, S_BATCH_BYTES, S_SMALL, S_OWN_UID, S_OWN_GID, S_CHOWN, S_UMASK, S_LAST, S_FIELDS };

// scanTar(set, chunk: Buffer, off, arena: Buffer, nums: Float64Array, state: Float64Array): number
//
// The extractor's fast path, on the JS thread: from `off`, each whole entry
// (header, data and padding inside the chunk) that the extractor would put
// into a native batch as it is -- a ustar or v7 header with a good checksum;
// a regular file of at most S_SMALL bytes, a directory or a symlink; octal
// fields; a clean printable-ASCII name whose parent directory is in `set`;
// ids in range -- is written as an applyBatch record (its path, data and
// numbers) at the end of the arena, and a directory joins `set`. It stops
// before the first entry it would not take, when the batch is full
// (S_MAXREC records or S_BATCH_BYTES bytes) or when the chunk ends, and
// returns the offset it got to: readTar goes on from there. state holds the
// arena's bytes used and records (updated), the limits, the process's ids,
// chown, the umask, and S_LAST: the last path's offset (-1 when none).
static napi_value js_scanTar(napi_env env, napi_callback_info info) {
  size_t argc = 6, clen = 0, alen = 0, nnums = 0, nstate = 0;
  napi_value argv[6], result;
  dirset_t *d = NULL;
  unsigned char *chunk = NULL;
  char *arena = NULL;
  double *nums = NULL, *st = NULL, off = 0;
  napi_typedarray_type t1, t2;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 6 || napi_get_value_external(env, argv[0], (void **)&d) != napi_ok || napi_get_buffer_info(env, argv[1], (void **)&chunk, &clen) != napi_ok ||
      napi_get_value_double(env, argv[2], &off) != napi_ok || !(off >= 0 && off <= (double)clen) ||
      napi_get_buffer_info(env, argv[3], (void **)&arena, &alen) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &t1, &nnums, (void **)&nums, NULL, NULL) != napi_ok || t1 != napi_float64_array ||
      napi_get_typedarray_info(env, argv[5], &t2, &nstate, (void **)&st, NULL, NULL) != napi_ok || t2 != napi_float64_array || nstate < S_FIELDS ||
      !(st[S_MAXREC] >= 0 && st[S_MAXREC] * REC <= (double)nnums) || !(st[S_USED] >= 0 && st[S_USED] <= (double)alen) ||
      !(st[S_COUNT] >= 0 && st[S_COUNT] <= st[S_MAXREC])) {
    napi_throw_type_error(env, NULL, "scanTar(set, chunk, off, arena, nums, state)");
    return NULL;
  }
  size_t at = (size_t)off, used = (size_t)st[S_USED], count = (size_t)st[S_COUNT];
  const size_t maxrec = (size_t)st[S_MAXREC];
  const double small = st[S_SMALL], batch_bytes = st[S_BATCH_BYTES], umask_ = st[S_UMASK];
  const int chown_ = st[S_CHOWN] != 0;
  char name[256 + 1];
  while (count < maxrec && (double)used < batch_bytes && clen - at >= 512) {
    const unsigned char *h = chunk + at;
    // The checksum, as readTar computes it (unsigned; the signed sum is readTar's to accept).
    double stored = octal(h + 148, 8);
    unsigned sum = 8 * ' ';
    for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? 0 : h[i];
    if (stored < 0 || stored != (double)sum) break;
    unsigned char flag = h[156];
    int ustar = memcmp(h + 257, "ustar\0" "00", 8) == 0;
    size_t nlen = field_len(h, 100), plen = ustar ? field_len(h + 345, 155) : 0, len = 0;
    if (plen) {
      memcpy(name, h + 345, plen);
      name[plen] = '/';
      len = plen + 1;
    }
    memcpy(name + len, h, nlen);
    len += nlen;
    int kind;
    if (flag == '5' || (flag == 0 && len > 0 && name[len - 1] == '/')) kind = K_DIR;
    else if (flag == '0' || flag == 0 || flag == '7') kind = K_FILE;
    else if (flag == '2') kind = K_SYMLINK;
    else break;
    // A directory's trailing slash goes, as entryComponents drops it; a leading "./" too.
    if (kind == K_DIR && len > 1 && name[len - 1] == '/') len--;
    size_t skip = 0;
    while (len - skip > 2 && name[skip] == '.' && name[skip + 1] == '/') skip += 2;
    const char *path = name + skip;
    len -= skip;
    if (!plain_ascii((const unsigned char *)path, len) || !clean_name(path, len)) break;
    const char *slash = memrchr(path, '/', len);
    if (!dirset_has(d, path, slash ? (size_t)(slash - path) : 0)) break;
    double mode = octal(h + 100, 8), uid = octal(h + 108, 8), gid = octal(h + 116, 8), size = octal(h + 124, 12), mtime = octal(h + 136, 12);
    if (mode < 0 || uid < 0 || gid < 0 || size < 0 || mtime < 0 || uid > 0xfffffffe || gid > 0xfffffffe) break;
    size_t data = kind == K_FILE ? (size_t)size : 0, padded = (data + 511) & ~(size_t)511;
    if (kind == K_FILE && (size > small || clen - at - 512 < padded)) break;
    size_t tlen = kind == K_SYMLINK ? field_len(h + 157, 100) : 0;
    if (kind == K_SYMLINK && (tlen == 0 || !plain_ascii(h + 157, tlen))) break;
    if (used + len + 1 + data + tlen + 1 > alen) break;
    // The record, as the extractor's enqueue() writes it.
    double *r = nums + count * REC;
    int m = (int)fmod(mode, 4096.0);
    double u = chown_ ? uid : -1, g = chown_ ? gid : -1;
    if (kind != K_DIR && u == st[S_OWN_UID] && g == st[S_OWN_GID]) u = g = -1;
    r[R_KIND] = kind, r[R_MODE] = m, r[R_UID] = u, r[R_GID] = g, r[R_ATIME] = mtime, r[R_MTIME] = mtime;
    r[R_CHMOD] = ((int)fmod(mode, 4096.0) & 07000) || ((long long)mode & (long long)umask_) ? 1 : 0;
    r[R_PATH] = (double)used;
    memcpy(arena + used, path, len);
    arena[used + len] = 0;
    st[S_LAST] = (double)used;
    used += len + 1;
    r[R_DATA] = (double)used;
    if (kind == K_FILE) {
      memcpy(arena + used, h + 512, data);
      used += data;
      r[R_LEN] = (double)data;
    } else if (kind == K_SYMLINK) {
      memcpy(arena + used, h + 157, tlen);
      arena[used + tlen] = 0;
      used += tlen + 1;
      r[R_LEN] = (double)tlen;
    } else {
      r[R_LEN] = 0;
      if (dirset_add(d, path, len) != 0) break;
    }
    count++;
    at += 512 + padded;
  }
  st[S_USED] = (double)used, st[S_COUNT] = (double)count;
  CHECK(napi_create_double(env, (double)at, &result));
  return result;
}

// ---- hashRead ------------------------------------------------------------

// A running digest (an External): used by one hashRead at a time.
typedef struct {
  EVP_MD_CTX *ctx;
} hash_t;

static void hash_finalize(napi_env env, void *data, void *hint) {
  EVP_MD_CTX_free(((hash_t *)data)->ctx);
  free(data);
}

// hashNew(algorithm: string): External, a digest ("sha256", "sha512") to feed with hashRead.
static napi_value js_hashNew(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *alg = argc == 1 ? get_string(env, argv[0]) : NULL;
  const EVP_MD *md = alg ? EVP_get_digestbyname(alg) : NULL;
  free(alg);
  hash_t *h = md ? calloc(1, sizeof *h) : NULL;
  if (h && (!(h->ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(h->ctx, md, NULL) != 1)) {
    hash_finalize(env, h, NULL);
    h = NULL;
  }
  if (!h || napi_create_external(env, h, hash_finalize, NULL, &result) != napi_ok) {
    if (h) hash_finalize(env, h, NULL);
    napi_throw_type_error(env, NULL, "hashNew(algorithm): unknown digest algorithm");
    return NULL;
  }
  return result;
}

// hashDigest(hash: External): string, the lowercase hex digest; the digest is finished.
static napi_value js_hashDigest(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  hash_t *h = NULL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(argc == 1 ? napi_get_value_external(env, argv[0], (void **)&h) : napi_invalid_arg);
  if (EVP_DigestFinal_ex(h->ctx, md, &n) != 1) {
    napi_throw_error(env, NULL, "hashDigest: digest failed");
    return NULL;
  }
  for (unsigned int i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  CHECK(napi_create_string_latin1(env, hex, 2 * n, &result));
  return result;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep;  // the buffer and the digest, alive while the thread uses them
  hash_t *hash;
  int fd;
  char *buf;
  size_t len, got;
  double pos;
  int err;
} hashread_t;

// On the libuv thread: pread until the buffer is full or the file ends, then the digest of what was read.
static void hashread_execute(napi_env env, void *data) {
  hashread_t *r = data;
  while (r->got < r->len) {
    ssize_t n = pread(r->fd, r->buf + r->got, r->len - r->got, (off_t)r->pos + (off_t)r->got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r->err = errno;
      return;
    }
    if (n == 0) break;
    r->got += (size_t)n;
  }
  if (r->got > 0 && EVP_DigestUpdate(r->hash->ctx, r->buf, r->got) != 1) r->err = EIO;
}

static void hashread_complete(napi_env env, napi_status status, void *data) {
  hashread_t *r = data;
  napi_value v;
  if (r->err) {
    napi_reject_deferred(env, r->deferred, errno_error(env, r->err, "read", NULL));
  } else {
    napi_create_double(env, (double)r->got, &v);
    napi_resolve_deferred(env, r->deferred, v);
  }
  napi_delete_reference(env, r->keep);
  napi_delete_async_work(env, r->work);
  free(r);
}

// hashRead(fd: number, buf: Buffer, pos: number, hash: External): Promise<number>, the bytes read
// into buf from pos (fewer than buf.length only at the end of the file), which the digest is fed.
static napi_value js_hashRead(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], args, name, promise;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  hashread_t *r = calloc(1, sizeof *r);
  int32_t fd = -1;
  void *buf = NULL;
  if (!r || argc != 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || napi_get_buffer_info(env, argv[1], &buf, &r->len) != napi_ok ||
      napi_get_value_double(env, argv[2], &r->pos) != napi_ok || !(r->pos >= 0) || napi_get_value_external(env, argv[3], (void **)&r->hash) != napi_ok) {
    free(r);
    napi_throw_type_error(env, NULL, "hashRead(fd, buf, pos, hash)");
    return NULL;
  }
  r->fd = fd, r->buf = buf;
  CHECK(napi_create_array_with_length(env, 2, &args));
  napi_set_element(env, args, 0, argv[1]);
  napi_set_element(env, args, 1, argv[3]);
  CHECK(napi_create_reference(env, args, 1, &r->keep));
  CHECK(napi_create_string_utf8(env, "strata:hashRead", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_promise(env, &r->deferred, &promise));
  CHECK(napi_create_async_work(env, NULL, name, hashread_execute, hashread_complete, r, &r->work));
  CHECK(napi_queue_async_work(env, r->work));
  return promise;
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
    {"scanNew", NULL, js_scanNew, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scanForget", NULL, js_scanForget, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scanAdd", NULL, js_scanAdd, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scanHas", NULL, js_scanHas, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scanTar", NULL, js_scanTar, NULL, NULL, NULL, napi_enumerable, NULL},
    {"hashNew", NULL, js_hashNew, NULL, NULL, NULL, napi_enumerable, NULL},
    {"hashRead", NULL, js_hashRead, NULL, NULL, NULL, napi_enumerable, NULL},
    {"hashDigest", NULL, js_hashDigest, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
