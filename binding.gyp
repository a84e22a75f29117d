{
  "targets": [
    {
      "target_name": "strata_fs",
      "sources": ["native/strata_fs.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
