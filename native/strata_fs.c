// Filesystem calls Node does not expose: extended attributes (overlay
// whiteouts and opaque directories, PAX xattrs), mknod (devices, FIFOs,
// overlay whiteouts) and mount/umount2 (overlayfs). Each is a thin, synchronous
// wrapper that throws an Error with Node's errno code (ENOENT, EPERM, ...).
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "strata_fs: bad arguments"); return NULL; } } while (0)

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
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
  napi_throw(env, error);
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
    {"mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL},
    {"umount2", NULL, js_umount2, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
