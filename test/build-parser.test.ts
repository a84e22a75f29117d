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

const docs = (text: string) => parse(text).nodes.map((n) => n.heredocs.map(({ name, content, expand, chomp }) => [name, content, expand, chomp]));

test("heredocs: bodies, several per line, <<- chomping, quoted delimiters, exec form and other instructions", () => {
  const text = [
    "FROM alpine",
    "RUN <<EOF",
    "\techo $HOME",
    "EOF",
    "COPY <<ONE <<TWO /dest/",
    "first",
    "ONE",
    "second",
    "TWO",
    "RUN <<-'END' python3",
    "\tprint('$x')",
    "\tEND",
    'RUN <<eo"f" && <<\\EOT',
    "a",
    "eof",
    "b",
    "EOT",
    'RUN ["<<EOF"]',
    "USER <<NOPE",
    "NOPE",
    "",
  ].join("\n");
  const r = parse(text);
  assert.deepEqual(docs(text), [
    [],
    [["EOF", "\techo $HOME\n", true, false]],
    [["ONE", "first\n", true, false], ["TWO", "second\n", true, false]],
    [["END", "\tprint('$x')\n", false, true]],
    [["eof", "a\n", false, false], ["EOT", "b\n", true, false]],
    [],
    [],
    [],
  ]);
  assert.deepEqual(r.nodes.map((n) => n.value), ["from", "run", "copy", "run", "run", "run", "user", "nope"]);
  assert.deepEqual(r.nodes[2].next, ["<<ONE", "<<TWO", "/dest/"]);
  assert.deepEqual([r.nodes[2].startLine, r.nodes[2].endLine], [5, 9]);
  assert.deepEqual([r.nodes[5].json, r.nodes[5].next], [true, ["<<EOF"]]);
  assert.equal(chompHeredoc(r.nodes[3].heredocs[0].content), "print('$x')\n");
});

test("heredocs: ONBUILD carries the wrapped instruction's heredoc; an unterminated heredoc names its line", () => {
  const r = parse("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n");
  assert.equal(r.nodes[1].onbuild?.value, "run");
  assert.deepEqual(r.nodes[1].onbuild?.heredocs.map((h) => h.content), ["echo hi\n"]);
  assert.equal(dump(r.nodes), '(from "a")\n(onbuild (run "<<EOF"))\n');
  assert.throws(() => parse("FROM a\nRUN true\nRUN <<EOF\necho\n"), { code: "INVALID_ARGUMENT", message: "Dockerfile:3: unterminated heredoc" });
});

test("parser: directives, backtick escape, continuations with comments and blank lines, original text", () => {
  const text = "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM  windows `\n  # a comment\n\n  AS base\nRUN dir c:\\ `\n  && echo done\n# escape=\\\nCOPY [\"a b\", \"c\"]\n";
  const r = parse(text);
  assert.equal(r.escape, "`");
  assert.deepEqual(r.directives, { syntax: "docker/dockerfile:1", escape: "`" });
  assert.deepEqual(r.nodes[0].next, ["windows", "AS", "base"]);
  assert.deepEqual([r.nodes[0].startLine, r.nodes[0].endLine], [4, 7]);
  assert.equal(r.nodes[1].original, "RUN dir c:\\   && echo done");
  assert.deepEqual(r.nodes[1].next, ["dir c:\\   && echo done"]);
  assert.deepEqual([r.nodes[2].json, r.nodes[2].next], [true, ["a b", "c"]]);
  assert.equal(r.warnings.length, 1); // the empty line inside the FROM continuation
  // a directive after the first instruction or comment is just a comment
  assert.equal(parse("# hello\n# escape=`\nFROM a\n").escape, "\\");
  assert.throws(() => parse("# escape=x\nFROM a\n"), /Dockerfile:1: invalid escape token/);
  assert.throws(() => parse("# syntax=a\n# syntax=b\nFROM a\n"), /Dockerfile:2: only one syntax parser directive/);
});

test("parser: ENV/LABEL/ARG/HEALTHCHECK shapes and invalid JSON falling back to shell form", () => {
  const r = parse(
    'FROM a\nENV A=1 B="two words" C=x\\ y\nENV OLD some value\nLABEL "k"=v\nARG X Y=2 Z="a b"\nHEALTHCHECK --interval=5s CMD ["curl", "-f"]\nHEALTHCHECK NONE\nCMD [ "unterminated\nENTRYPOINT [\'single\']\nEXPOSE 80/tcp  443\n',
  );
  const n = r.nodes;
  assert.deepEqual(n[1].next, ["A", "1", "B", '"two words"', "C", "x\\ y"]);
  assert.deepEqual([n[2].next, n[2].legacy], [["OLD", "some value"], true]);
  assert.deepEqual(n[3].next, ['"k"', "v"]);
  assert.deepEqual(n[4].next, ["X", "Y=2", 'Z="a b"']);
  assert.deepEqual([n[5].flags, n[5].next, n[5].json], [["--interval=5s"], ["CMD", "curl", "-f"], true]);
  assert.deepEqual(n[6].next, ["NONE"]);
  assert.deepEqual([n[7].json, n[7].next], [false, ['[ "unterminated']]);
  assert.deepEqual([n[8].json, n[8].next], [false, ["['single']"]]);
  assert.deepEqual(n[9].next, ["80/tcp", "443"]);
  // processWord removes the quotes the parser keeps
  assert.equal(new ShellLex().processWord(n[1].next[3], []), "two words");
});

test("parser: syntax errors name the line", () => {
  const bad: [string, RegExp][] = [
    ["FROM a\n\nENV ONLYNAME\n", /^Dockerfile:3: ENV must have two arguments$/],
    ["FROM a\nLABEL a=b c\n", /^Dockerfile:2: Syntax error - can't find = in "c"/],
    ["FROM a\nRUN true\nCMD [\"a\", 1]\n", /^Dockerfile:3: when using JSON array syntax/],
    ["\n# only a comment\n", /^Dockerfile:2: file with no instructions$/],
    ["", /file with no instructions/],
  ];
  for (const [text, re] of bad) assert.throws(() => parse(text), (e) => isStrataError(e, "INVALID_ARGUMENT") && re.test(e.message), text);
});

test("flags: values as written, -- ends them, parseFlags types and errors", () => {
  const r = parse('FROM a\nCOPY --from=build --chown="1:1" --link --mount=a --mount=b -- --notaflag /dst\nRUN --bogus=1 true\nCOPY --link=maybe a b\nCOPY --from a b\n');
  const copy = r.nodes[1];
  assert.deepEqual(copy.flags, ["--from=build", "--chown=1:1", "--link", "--mount=a", "--mount=b"]);
  assert.deepEqual(copy.next, ["--notaflag", "/dst"]);
  const spec = { from: "string", chown: "string", chmod: "string", link: "bool", mount: "strings" } as const;
  assert.deepEqual(parseFlags(copy, spec), { from: "build", chown: "1:1", link: true, mount: ["a", "b"] });
  assert.throws(() => parseFlags(r.nodes[2], spec), { code: "INVALID_ARGUMENT", message: "Dockerfile:3: unknown flag: --bogus" });
  assert.throws(() => parseFlags(r.nodes[3], spec), { message: "Dockerfile:4: expecting boolean value for flag --link, not: maybe" });
  assert.throws(() => parseFlags(r.nodes[4], spec), { message: "Dockerfile:5: missing a value on flag: --from" });
  const dup = parse("FROM a\nCOPY --from=a --from=b x y\n").nodes[1];
  assert.throws(() => parseFlags(dup, spec), { message: "Dockerfile:2: duplicate flag specified: --from" });
});

test("shell: modifiers, patterns, errors and word splitting", () => {
  const lex = new ShellLex();
  const env = ["P=/usr/local/bin/node", "E=", "S=a  b", "F=file.tar.gz"];
  const cases: [string, string][] = [
    ["${P#*/}", "usr/local/bin/node"],
    ["${P##*/}", "node"],
    ["${F%.*}", "file.tar"],
    ["${F%%.*}", "file"],
    ["${P/local/opt}", "/usr/opt/bin/node"],
    ["${F//./_}", "file_tar_gz"],
    ["${E:-def}|${E-def}|${U-def}", "def||def"],
    ["${E:+set}|${E+set}|${P:+set}", "|set|set"],
    ["'$P'\"$E\"\\$P", "$P$P"],
    ["${E?msg}", ""],
  ];
  for (const [word, want] of cases) assert.equal(lex.processWord(word, env), want, word);
  assert.throws(() => lex.processWord("${E:?must be set}", env), { code: "INVALID_ARGUMENT", message: /E: must be set/ });
  assert.throws(() => lex.processWord("${U?}", env), /U: is not allowed to be unset/);
  assert.throws(() => lex.processWord("${P", env), /missing '}'/);
  assert.deepEqual(lex.processWords('$S "$S" x\\ y', env), ["a", "b", "a  b", "x y"]);
  // the backtick escape token
  assert.equal(new ShellLex("`").processWord("a`$P\\b", env), "a$P\\b");
});

test("dump: Go strconv.Quote compatible strings", () => {
  assert.equal(goQuote('a"b\\c\n\t\x00\x7f é 한 \u00a0 \u200b 😀'), '"a\\"b\\\\c\\n\\t\\x00\\x7f é 한 \\u00a0 \\u200b 😀"');
});

test("parser: line numbers of buildkit's testfile-line and empty-continuation warnings", () => {
  const r = parse(readFileSync(join(DF, "parser", "testfile-line", "Dockerfile"), "utf8"));
  assert.deepEqual(r.nodes.map((n) => [n.startLine, n.endLine]), [[5, 5], [11, 12], [17, 31]]);
  const w = parse("FROM a\nRUN one \\\n\n  two\nRUN three \\\n# comment\n  four\n").warnings;
  assert.deepEqual(w, ["Empty continuation line found in: RUN one   two"]);
});
