// The Dockerfile parser: lines → instructions (Node), with Docker's rules for parser directives, line
// continuations, comments, JSON vs shell form, flags, heredocs and ONBUILD. Semantics learned from
// buildkit's frontend/dockerfile/parser (our own code). Arguments stay unexpanded; the builder expands them.
import { StrataError } from "../errors/index.js";
import { ShellLex, isSpace } from "./shell.js";
import { goQuote } from "./dump.js";

/** A heredoc body. `content` is raw (with its final newline); `chomp` (<<-) asks for leading tabs to be stripped (chompHeredoc). */
export interface Heredoc { name: string; content: string; expand: boolean; chomp: boolean }
export interface Node {
  /** The instruction, lowercased ("from", "run", "copy", "onbuild", ...). */
  value: string;
  /**
   * Its arguments as buildkit's parser splits them:
   * - JSON (exec) form: the array items (json = true);
   * - RUN/CMD/ENTRYPOINT/SHELL shell form, MAINTAINER/USER/WORKDIR/STOPSIGNAL: the rest of the line as one string;
   * - ENV/LABEL: name,value pairs flattened ([k1, v1, k2, v2]); values keep quotes and escapes (expand with processWord);
   * - ARG: the words as written ("NAME" or "NAME=value", quotes kept), as buildkit's node;
   * - HEALTHCHECK: ["CMD", the command string] or ["CMD", ...JSON items] (json = true) or ["NONE"];
   * - ONBUILD: [the trigger as written], parsed in `onbuild`;
   * - FROM/EXPOSE and non-JSON COPY/ADD/VOLUME: split on whitespace; unknown instructions: [].
   */
  next: string[];
  /** "--from=build", "--chown=1:1" ... as written (quotes and escapes resolved), in order. */
  flags: string[];
  json: boolean;
  heredocs: Heredoc[];
  /** The instruction as written, continuations joined (for errors and history). */
  original: string;
  startLine: number;
  endLine: number;
  onbuild?: Node;
  /** ENV/LABEL in the legacy `KEY value` form (one pair; buildkit warns about it). */
  legacy?: boolean;
}
export interface ParseResult { escape: string; directives: Record<string, string>; nodes: Node[]; warnings: string[] }

const WS = /[\t\v\f\r ]+/;
const DIRECTIVE = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$/;
const HEREDOC = /^(\d*)<<(-?)\s*([^<]*)$/;
const HEREDOC_INSTRUCTIONS = new Set(["add", "copy", "run"]);

class ParseError extends Error {}
const fail = (msg: string): never => {
  throw new ParseError(msg);
};

const trimSpace = (s: string) => s.replace(/^\p{White_Space}+|\p{White_Space}+$/gu, "");
const trimLeftSpace = (s: string) => s.replace(/^\p{White_Space}+/u, "");
const trimNewline = (s: string) => s.replace(/[\r\n]+$/, "");
const isComment = (line: string) => trimLeftSpace(line).startsWith("#");

/** Parses a Dockerfile. Throws StrataError("INVALID_ARGUMENT", "Dockerfile:LINE: message") for syntax errors. */
export function parse(text: string): ParseResult {
  if (text.startsWith("\ufeff")) text = text.slice(1);
  const lines = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  const directives: Record<string, string> = {};
  const nodes: Node[] = [];
  const warnings: string[] = [];
  let escape = "\\";
  let continuation = continuationRegex(escape);
  let directivesDone = false;
  let i = 0; // lines consumed = the 1-based number of the last line read
  let startLine = 0;

  // Parser directives are comments of the form `# key=value` before anything else, each at most once.
  const directive = (line: string): void => {
    if (directivesDone) return;
    const m = line.startsWith("#") ? DIRECTIVE.exec(trimLeftSpace(line.slice(1))) : null;
    const key = m?.[1].toLowerCase();
    if (!m || (key !== "escape" && key !== "syntax" && key !== "check")) {
      directivesDone = true;
      return;
    }
    if (key in directives) fail(`only one ${key} parser directive can be used`);
    directives[key] = m[2];
    if (key === "escape") {
      if (m[2] !== "`" && m[2] !== "\\") fail(`invalid escape token '${m[2]}' does not match \` or \\`);
      escape = m[2];
      continuation = continuationRegex(escape);
    }
  };
  const processLine = (raw: string, stripLeft: boolean): string => {
    let line = trimNewline(raw);
    if (stripLeft) line = trimLeftSpace(line);
    directive(line);
    return isComment(line) ? "" : line;
  };
  // Removes a trailing escape (and blanks after it); [line, true] when the instruction ends on this line.
  const trimContinuation = (line: string): [string, boolean] => (continuation.test(line) ? [line.replace(continuation, "$1"), false] : [line, true]);

  try {
    while (i < lines.length) {
      startLine = i + 1;
      let [line, end] = trimContinuation(processLine(lines[i++], true));
      if (end && line.length === 0) continue;
      let emptyContinuation = false;
      while (!end && i < lines.length) {
        const raw = lines[i++];
        const processed = processLine(raw, false);
        if (isComment(raw)) continue; // comments inside a continuation are dropped
        if (trimLeftSpace(processed).length === 0) {
          emptyContinuation = true;
          continue;
        }
        let part: string;
        [part, end] = trimContinuation(processed);
        line += part;
      }
      if (emptyContinuation) warnings.push(`Empty continuation line found in: ${line}`);
      const node = nodeFromLine(line, escape);
      const target = node.onbuild ?? node;
      if (HEREDOC_INSTRUCTIONS.has(target.value) && !target.json && line.includes("<<")) {
        for (const doc of heredocsFromLine(line)) {
          let content = "";
          let terminated = false;
          while (i < lines.length) {
            const raw = lines[i++];
            let candidate = trimNewline(raw);
            if (doc.chomp) candidate = candidate.replace(/^\t+/, "");
            if (candidate === doc.name) {
              terminated = true;
              break;
            }
            content += raw;
          }
          if (!terminated) fail("unterminated heredoc");
          target.heredocs.push({ ...doc, content });
        }
        node.heredocs = target.heredocs;
      }
      for (const n of [node, node.onbuild]) {
        if (n) [n.startLine, n.endLine] = [startLine, i];
      }
      nodes.push(node);
    }
    if (nodes.length === 0) {
      startLine = i;
      fail("file with no instructions");
    }
  } catch (e) {
    if (e instanceof ParseError || (e instanceof StrataError && e.code === "INVALID_ARGUMENT")) {
      throw new StrataError("INVALID_ARGUMENT", `Dockerfile:${Math.max(startLine, 1)}: ${e.message}`, { cause: e });
    }
    throw e;
  }
  return { escape, directives, nodes, warnings };
}

/** The escape token at the end of a line, not itself escaped, continues the instruction. */
function continuationRegex(escape: string): RegExp {
  const e = escape === "\\" ? "\\\\" : escape;
  return new RegExp(`([^${e}])${e}[ \\t]*$|^${e}[ \\t]*$`, "u");
}

/** Removes leading tabs from each line of a `<<-` heredoc body. */
export function chompHeredoc(content: string): string {
  return content.replace(/^\t+/gm, "");
}

/** One logical line (continuations joined) → its node. */
function nodeFromLine(line: string, escape: string): Node {
  const trimmed = trimSpace(line);
  const m = WS.exec(trimmed);
  const cmd = m ? trimmed.slice(0, m.index) : trimmed;
  let rest = "";
  let flags: string[] = [];
  if (m) [rest, flags] = extractFlags(trimmed.slice(m.index + m[0].length), escape);
  rest = trimSpace(rest);
  const node: Node = { value: cmd.toLowerCase(), next: [], flags, json: false, heredocs: [], original: line, startLine: 0, endLine: 0 };
  switch (node.value) {
    case "add":
    case "copy":
    case "volume":
      if (!maybeJSON(node, rest)) node.next = splitWhitespace(rest);
      break;
    case "cmd":
    case "entrypoint":
    case "run":
    case "shell":
      if (rest !== "" && !maybeJSON(node, rest)) node.next = [rest];
      break;
    case "expose":
    case "from":
      node.next = splitWhitespace(rest);
      break;
    case "maintainer":
    case "stopsignal":
    case "user":
    case "workdir":
      if (rest !== "") node.next = [rest];
      break;
    case "env":
    case "label":
      parseNameVal(node, rest, escape);
      break;
    case "arg":
      node.next = parseWords(rest, escape);
      break;
    case "healthcheck":
      parseHealthcheck(node, rest);
      break;
    case "onbuild":
      if (rest !== "") {
        node.next = [rest];
        node.onbuild = nodeFromLine(rest, escape);
      }
      break;
  }
  return node;
}

const splitWhitespace = (rest: string): string[] => (rest === "" ? [] : rest.split(WS));

/** The exec form: a JSON array of strings. Text that is not a JSON array falls back to the shell form (false). */
function maybeJSON(node: Node, rest: string): boolean {
  rest = trimLeftSpace(rest);
  if (!rest.startsWith("[")) return false;
  let value: unknown;
  try {
    value = JSON.parse(rest);
  } catch {
    return false;
  }
  if (!Array.isArray(value)) return false;
  if (!value.every((v) => typeof v === "string")) fail("when using JSON array syntax, arrays must be comprised of strings only");
  node.next = value as string[];
  node.json = true;
  return true;
}

/** HEALTHCHECK: a type word (CMD/NONE) then, like CMD, a JSON array or a shell command. */
function parseHealthcheck(node: Node, rest: string): void {
  let sep = 0;
  while (sep < rest.length && !isSpace(rest[sep])) sep++;
  if (sep === 0) return;
  let next = sep;
  while (next < rest.length && isSpace(rest[next])) next++;
  const cmd = rest.slice(next);
  if (cmd !== "" && !maybeJSON(node, cmd)) node.next = [cmd];
  node.next.unshift(rest.slice(0, sep));
}

/** ENV/LABEL: `k=v k2="v 2"` pairs, or the legacy `k the rest of the line`. */
function parseNameVal(node: Node, rest: string, escape: string): void {
  const words = parseWords(rest, escape);
  if (words.length === 0) return;
  if (!words[0].includes("=")) {
    const m = WS.exec(rest);
    if (!m) return fail(`${node.value.toUpperCase()} must have two arguments`);
    node.next = [rest.slice(0, m.index), rest.slice(m.index + m[0].length)];
    node.legacy = true;
    return;
  }
  for (const w of words) {
    const eq = w.indexOf("=");
    if (eq < 0) fail(`Syntax error - can't find = in ${goQuote(w)}. Must be of the form: name=value`);
    node.next.push(w.slice(0, eq), w.slice(eq + 1));
  }
}

/** Splits on unquoted whitespace, keeping quotes and escapes (expansion removes them later). */
function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let blankOK = false; // a quoted empty string is still a word
  let quote = "";
  const chars = Array.from(rest);
  for (let i = 0; i < chars.length; i++) {
    let ch = chars[i];
    if (!inWord) {
      if (isSpace(ch)) continue;
      inWord = true;
    }
    if (quote === "") {
      if (isSpace(ch)) {
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        inWord = blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
      } else if (ch === escape) {
        if (i + 1 === chars.length) continue; // a trailing escape is dropped
        word += ch;
        ch = chars[++i];
      }
      word += ch;
    } else {
      if (ch === quote) quote = "";
      else if (ch === escape && quote !== "'") {
        if (i + 1 === chars.length) {
          quote = "";
          continue;
        }
        word += ch;
        ch = chars[++i];
      }
      word += ch;
    }
  }
  if (inWord && (blankOK || word.length > 0)) words.push(word);
  return words;
}

/** Leading `--flag[=value]` words (quotes and escapes resolved); `--` ends them. Returns the rest of the line and the flags. */
function extractFlags(line: string, escape: string): [string, string[]] {
  const flags: string[] = [];
  let pos = 0;
  for (;;) {
    while (pos < line.length && isSpace(line[pos])) pos++;
    if (pos >= line.length) return ["", flags];
    if (!line.startsWith("--", pos)) return [line.slice(pos), flags];
    let word = "";
    let quote = "";
    let blankOK = false;
    for (; pos < line.length; pos++) {
      let ch = line[pos];
      if (quote === "" && isSpace(ch)) break;
      if (quote === "" && (ch === "'" || ch === '"')) {
        quote = ch;
        blankOK = true;
        continue;
      }
      if (quote !== "" && ch === quote) {
        quote = "";
        continue;
      }
      if (ch === escape) {
        if (pos + 1 === line.length) {
          quote = "";
          continue;
        }
        ch = line[++pos];
      }
      word += ch;
    }
    if (word === "--") return [line.slice(pos), flags];
    if (blankOK || word.length > 0) flags.push(word);
  }
}

/** Heredoc openers (`<<EOF`, `<<-"EOF"`, `3<<EOF`) on an instruction line, in order. */
function heredocsFromLine(line: string): Omit<Heredoc, "content">[] {
  const lex = new ShellLex("\\");
  lex.rawQuotes = lex.rawEscapes = lex.skipUnsetEnv = true;
  let words: string[];
  try {
    words = lex.processWords(line, []);
  } catch {
    return [];
  }
  const docs: Omit<Heredoc, "content">[] = [];
  for (const w of words) {
    const m = HEREDOC.exec(w);
    if (!m || m[3] === "") continue;
    const plain = new ShellLex("\\");
    plain.skipUnsetEnv = true;
    const names = plain.processWords(m[3], []);
    if (names.length !== 1) continue;
    plain.rawQuotes = true;
    const raw = plain.processWords(m[3], []);
    if (raw.length !== 1) fail(`internal lexing of heredoc produced inconsistent results: ${m[3]}`);
    const quotes = (s: string) => s.replace(/[^'"]/g, "").length;
    // A delimiter quoted in any part disables expansion of the body.
    docs.push({ name: names[0], expand: quotes(names[0]) === quotes(raw[0]), chomp: m[2] === "-" });
  }
  return docs;
}

/**
 * Reads an instruction's flags: parseFlags(node, {from: "string", link: "bool", mount: "strings"}).
 * A bool is true/false, a string its value, "strings" every value in order; absent flags are undefined.
 * Unknown, repeated (except "strings") or malformed flags throw StrataError("INVALID_ARGUMENT", "Dockerfile:LINE: ...").
 */
export function parseFlags(node: Node, spec: Record<string, "string" | "bool" | "strings">): Record<string, string | boolean | string[] | undefined> {
  const out: Record<string, string | boolean | string[] | undefined> = {};
  const bad = (msg: string): never => {
    throw new StrataError("INVALID_ARGUMENT", `Dockerfile:${node.startLine}: ${msg}`);
  };
  for (const a of node.flags) {
    if (!a.startsWith("--")) bad(`arg should start with -- : ${a}`);
    const eq = a.indexOf("=");
    const flagName = eq < 0 ? a : a.slice(0, eq);
    const value = eq < 0 ? undefined : a.slice(eq + 1);
    const name = flagName.slice(2);
    const type = Object.hasOwn(spec, name) ? spec[name] : bad(`unknown flag: ${flagName}`);
    if (type !== "strings" && out[name] !== undefined) bad(`duplicate flag specified: ${flagName}`);
    if (type === "bool") {
      if (value === "") bad(`missing a value on flag: ${flagName}`);
      const v = (value ?? "true").toLowerCase();
      if (v !== "true" && v !== "false") bad(`expecting boolean value for flag ${flagName}, not: ${value}`);
      out[name] = v === "true";
    } else if (value === undefined) {
      bad(`missing a value on flag: ${flagName}`);
    } else if (type === "string") {
      out[name] = value;
    } else {
      out[name] = [...((out[name] as string[] | undefined) ?? []), value];
    }
  }
  return out;
}
