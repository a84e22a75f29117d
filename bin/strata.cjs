#!/usr/bin/env -S node --
"use strict";
// Kept tiny and CommonJS: `strata --version` answers without loading anything
// else; every other command runs the one bundled file, compiled with the V8
// code cache written at build time (scripts/bundle.mjs) when V8 accepts it.
const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-v")) {
  process.stdout.write(`strata version ${require("../package.json").version}\n`);
} else {
  const { readFileSync, writeFileSync, renameSync } = require("node:fs");
  const { join, dirname } = require("node:path");
  const { Script } = require("node:vm");
  const Module = require("node:module");
  const file = join(__dirname, "..", "dist", "bundle", "strata.cjs");
  let cachedData;
  try {
    cachedData = readFileSync(`${file}.cache`);
  } catch {
    // no cache: compile normally
  }
  // ASCII (scripts/bundle.mjs checks): read as latin1, cheaper than decoding UTF-8.
  const script = new Script(Module.wrap(readFileSync(file, "latin1")), { filename: file, cachedData });
  const mod = { exports: {} };
  script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(file), mod, file, dirname(file));
  mod.exports.main(argv).then((code) => {
    if (process.env.STRATA_WRITE_CODE_CACHE) {
      const tmp = `${file}.cache.${process.pid}`;
      writeFileSync(tmp, script.createCachedData());
      renameSync(tmp, `${file}.cache`);
    }
    // The command is done (stdout and stderr are synchronous on Linux): exit
    // without tearing the heap down, which costs a CLI tens of milliseconds.
    process.exit(code);
  });
}
