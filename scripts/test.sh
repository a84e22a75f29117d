#!/usr/bin/env bash
# The whole suite through node:test (tsx for TypeScript). Node 20 does not glob .ts, so the files are listed here.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
exec node --import tsx --test --test-concurrency=1 --test-reporter=tap \
  test/unit.test.ts \
  test/content.test.ts \
  test/tar.test.ts \
  test/layer.test.ts \
  test/snapshot.test.ts \
  test/schema.test.ts \
  test/images.test.ts \
  test/archive.test.ts \
  test/union.test.ts \
  test/containers.test.ts \
  test/cp.test.ts \
  test/interop.test.ts \
  test/registry-conformance.test.ts \
  test/registry-server.test.ts \
  test/crash.test.ts \
  test/runtime.test.ts \
  test/build-parser.test.ts \
  test/build.test.ts \
  test/registry.test.ts \
  test/image-index.test.ts \
  test/registry-roundtrip.test.ts \
  test/launcher.test.ts
