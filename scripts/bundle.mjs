// Bundles the CLI into one CommonJS file, because start-up is what a CLI user
// feels: one file instead of dozens of ES modules, builtins loaded by
// require() (an ESM import of a builtin touches all of its lazy exports), and
// a V8 code cache next to it (bin/strata.cjs) so the bundle is not recompiled
// on every run. Commands still initialise lazily: esbuild turns each dynamic
// import() of our own modules into a deferred initialiser.
import { readFileSync, renameSync, rmSync, writeFileSync, mkdtempSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";

// Built beside the old bundle and renamed over it, so a CLI running meanwhile never finds it missing.
const target = "dist/bundle/strata.cjs";
const outfile = `${target}.tmp-${process.pid}`;
await build({
  entryPoints: ["src/cli/main.ts"],
  outfile,
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  // better-sqlite3's JavaScript is bundled too; its native addon is loaded by path (metastore's nativeBinding).
  define: { "import.meta.url": "__strataModuleUrl" },
  banner: { js: 'const __strataModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  // Fewer bytes to read and hash at every start; identifiers are kept, so stack traces (--debug) still read.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: "warning",
});
// Lazy builtins: import("node:x") → require, so the bundle runs as a plain script (and can use a code cache).
const code = readFileSync(outfile, "utf8").replace(/\bimport\("(node:[a-z_/]+)"\)/g, 'Promise.resolve(require("$1"))');
if (/\bimport\(/.test(code)) throw new Error("bundle still has a dynamic import()");
// bin/strata.cjs reads the bundle as latin1, which is faster than decoding UTF-8: it must stay ASCII.
const nonAscii = /[^\x00-\x7f]/.exec(code);
if (nonAscii) throw new Error(`bundle has a non-ASCII character at ${nonAscii.index}: escape it in the source`);
writeFileSync(outfile, code);
rmSync(`${target}.cache`, { force: true });
renameSync(outfile, target);

// Warm the code cache with a real run of the commonest commands.
const root = mkdtempSync(join(tmpdir(), "strata-cache-"));
for (const args of [["images"], ["inspect", "none"], ["ps", "-a"], ["run", "--rm", "none"]]) spawnSync(process.execPath, ["bin/strata.cjs", "--root", root, ...args], { env: { ...process.env, STRATA_WRITE_CODE_CACHE: "1" }, stdio: "ignore" });
rmSync(root, { recursive: true, force: true });
