// Conformance of the Dockerfile parser and shell-word expansion with buildkit's own test corpus (read in
// place), plus unit tests for heredocs, flags and errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { CORPUS } from "./helpers.ts";
import { parse, parseFlags, chompHeredoc } from "../src/build/parser.ts";
import { ShellLex } from "../src/build/shell.ts";
import { dump, goQuote } from "../src/build/dump.ts";
import { isStrataError } from "../src/errors/index.ts";

const DF = join(CORPUS, "buildkit", "frontend", "dockerfile");

test("parser: every buildkit testfiles/*/Dockerfile dumps to its result byte for byte", () => {
  const dir = join(DF, "parser", "testfiles");
  const cases = readdirSync(dir);
  assert.ok(cases.length >= 30, `corpus has ${cases.length} cases`);
  const failed: string[] = [];
  for (const c of cases) {
    const text = readFileSync(join(dir, c, "Dockerfile"), "utf8");
    const expected = readFileSync(join(dir, c, "result"), "utf8");
    let got: string;
    try {
      got = dump(parse(text).nodes);
    } catch (e) {
      got = `error: ${(e as Error).message}`;
    }
    if (got !== expected) failed.push(`${c}:\n--- expected\n${expected}--- got\n${got}`);
  }
  console.log(`# parser testfiles: ${cases.length - failed.length}/${cases.length} passed`);
  assert.deepEqual(failed, []);
});

test("parser: every buildkit testfiles-negative/* fails to parse with a located error", () => {
  const dir = join(DF, "parser", "testfiles-negative");
  const cases = readdirSync(dir);
  assert.ok(cases.length >= 4);
  for (const c of cases) {
    const text = readFileSync(join(dir, c, "Dockerfile"), "utf8");
    assert.throws(() => parse(text), (e) => isStrataError(e, "INVALID_ARGUMENT") && /^Dockerfile:\d+: /.test(e.message), c);
  }
  console.log(`# parser testfiles-negative: ${cases.length}/${cases.length} failed as expected`);
});

test("shell: every A and U row of buildkit's envVarTest", () => {
  const lex = new ShellLex("\\");
  const env = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="];
  let total = 0;
  const failed: string[] = [];
  for (const raw of readFileSync(join(DF, "shell", "envVarTest"), "utf8").split("\n")) {
    if (raw.startsWith("#") || raw.trim() === "") continue;
    const parts = raw.trim().split("|");
    assert.equal(parts.length, 3, raw);
    const [platform, source, expected] = parts.map((p) => p.trim());
    if (platform === "W") continue;
    assert.ok(platform === "A" || platform === "U", raw);
    total++;
    let got: string;
    try {
      got = lex.processWord(source, env);
    } catch (e) {
      assert.ok(isStrataError(e, "INVALID_ARGUMENT"), String(e));
      got = "error";
    }
    if (got !== expected) failed.push(`${source} → ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`);
  }
  console.log(`# envVarTest A+U rows: ${total - failed.length}/${total} passed`);
  assert.ok(total > 200);
  assert.deepEqual(failed, []);
});

test("shell: every case of buildkit's wordsTest", () => {
  const lex = new ShellLex("\\");
  const env: string[] = [];
  let total = 0;
  const failed: string[] = [];
  for (const line of readFileSync(join(DF, "shell", "wordsTest"), "utf8").split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    if (line.startsWith("ENV ")) {
      env.push(line.slice(3).replace(/^ +/, ""));
      continue;
    }
    const parts = line.split("|");
    assert.equal(parts.length, 2, line);
    const expected = parts[1].replace(/^ +/, "").split(",");
    total++;
    let got: string[];
    try {
      got = lex.processWords(parts[0].trim(), env);
    } catch {
      got = ["error"];
    }
    if (JSON.stringify(got) !== JSON.stringify(expected)) failed.push(`${parts[0]} → ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`);
  }
  console.log(`# wordsTest cases: ${total - failed.length}/${total} passed`);
  assert.ok(total >= 20);
  assert.deepEqual(failed, []);
});
