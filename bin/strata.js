#!/usr/bin/env node
// Kept tiny: `strata --version` answers without loading anything else.
const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-v")) {
  const { readFileSync } = await import("node:fs");
  const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  process.stdout.write(`strata version ${version}\n`);
} else {
  const { main } = await import("../dist/cli/main.js");
  process.exitCode = await main(argv);
}
