// Shell-word expansion as Docker applies it to Dockerfile arguments: quotes, escapes, $VAR and the
// ${VAR...} modifiers. Semantics learned from buildkit's frontend/dockerfile/shell (our own code).
import { StrataError } from "../errors/index.js";
import { goQuote } from "./dump.js";

const EOF = "";
/** Go's unicode.IsSpace. */
export const isSpace = (ch: string): boolean => {
  const c = ch.charCodeAt(0);
  return c < 0x80 ? c === 0x20 || (c >= 0x09 && c <= 0x0d) : /^\p{White_Space}$/u.test(ch);
};
const isLetter = (ch: string) => (ch < "\x80" ? (ch >= "a" && ch <= "z") || (ch >= "A" && ch <= "Z") : /^\p{L}$/u.test(ch));
const isDigit = (ch: string) => (ch < "\x80" ? ch >= "0" && ch <= "9" : /^\p{Nd}$/u.test(ch));
const SPECIAL_PARAMS = "@*#?-$!0";

/** Collects the split words beside the joined result (word splitting happens after expansion). */
class Words {
  buf = "";
  words: string[] = [];
  inWord = false;
  addChar(ch: string): void {
    if (isSpace(ch)) {
      if (this.inWord && this.buf.length !== 0) {
        this.words.push(this.buf);
        this.buf = "";
        this.inWord = false;
      }
    } else this.addRaw(ch);
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRaw(s: string): void {
    this.buf += s;
    this.inWord = true;
  }
  done(): string[] {
    if (this.buf.length > 0) this.words.push(this.buf);
    this.buf = "";
    return this.words;
  }
}

class LexError extends Error {}

export class ShellLex {
  readonly escapeToken: string;
  /** Keep quote characters in the output (used to detect quoted heredoc delimiters). */
  rawQuotes = false;
  /** Keep escape characters in the output. */
  rawEscapes = false;
  /** Leave references to unset variables as written. */
  skipUnsetEnv = false;

  private chars: string[] = [];
  private pos = 0;
  private env = new Map<string, string>();

  constructor(escapeToken = "\\") {
    this.escapeToken = escapeToken;
  }

  /** Expands `word` with `env` ("K=V" entries, the last one of a name wins); quotes and escapes are removed. */
  processWord(word: string, env: string[]): string {
    return this.process(word, env).result;
  }

  /** Expands, then splits into words on unquoted whitespace (as for COPY/ADD/EXPOSE arguments). */
  processWords(word: string, env: string[]): string[] {
    return this.process(word, env).words;
  }

  private process(word: string, env: string[]): { result: string; words: string[] } {
    this.env = new Map();
    for (const e of env) {
      const i = e.indexOf("=");
      if (i < 0) this.env.set(e, "");
      else this.env.set(e.slice(0, i), e.slice(i + 1));
    }
    this.chars = Array.from(word);
    this.pos = 0;
    const saved = this.rawEscapes;
    try {
      return this.processStopOn(EOF, this.rawEscapes);
    } catch (e) {
      if (e instanceof LexError) throw new StrataError("INVALID_ARGUMENT", `failed to process ${goQuote(word)}: ${e.message}`);
      throw e;
    } finally {
      this.rawEscapes = saved;
    }
  }

  private peek(): string {
    return this.pos < this.chars.length ? this.chars[this.pos] : EOF;
  }
  private next(): string {
    return this.pos < this.chars.length ? this.chars[this.pos++] : EOF;
  }

  private processStopOn(stop: string, rawEscapes: boolean): { result: string; words: string[] } {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let result = "";
      const words = new Words();
      while (this.peek() !== EOF) {
        let ch = this.peek();
        if (stop !== EOF && ch === stop) {
          this.next();
          return { result, words: words.done() };
        }
        if (ch === "$" || ch === "<" || ch === "'" || ch === '"') {
          const tmp = ch === "$" ? this.processDollar() : ch === "<" ? this.processPossibleHeredoc() : ch === "'" ? this.processSingleQuote() : this.processDoubleQuote();
          result += tmp;
          if (ch === "$") words.addString(tmp);
          else words.addRaw(tmp);
          continue;
        }
        ch = this.next();
        if (ch === this.escapeToken) {
          if (this.rawEscapes) {
            words.addRaw(ch);
            result += ch;
          }
          ch = this.next();
          if (ch === EOF) break; // a trailing escape is dropped
          words.addRaw(ch);
        } else {
          words.addChar(ch);
        }
        result += ch;
      }
      if (stop !== EOF) throw new LexError(`unexpected end of statement while looking for matching ${stop}`);
      return { result, words: words.done() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private processSingleQuote(): string {
    // Everything up to the next ' is literal; ' cannot be escaped inside.
    let result = "";
    const open = this.next();
    if (this.rawQuotes) result += open;
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new LexError("unexpected end of statement while looking for matching single-quote");
      if (ch === "'") return this.rawQuotes ? result + ch : result;
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    // Literal except $ expansions; the escape token escapes only " $ and itself.
    let result = "";
    const open = this.next();
    if (this.rawQuotes) result += open;
    for (;;) {
      const p = this.peek();
      if (p === EOF) throw new LexError("unexpected end of statement while looking for matching double-quote");
      if (p === '"') {
        this.next();
        return this.rawQuotes ? result + p : result;
      }
      if (p === "$") {
        result += this.processDollar();
        continue;
      }
      let ch = this.next();
      if (ch === this.escapeToken) {
        if (this.rawEscapes) result += ch;
        const q = this.peek();
        if (q === EOF) continue;
        if (q === '"' || q === "$" || q === this.escapeToken) ch = this.next();
      }
      result += ch;
    }
  }

  private processPossibleHeredoc(): string {
    this.next();
    if (this.peek() !== "<") return "<";
    this.next();
    let space = "";
    while (this.peek() === " " || this.peek() === "\t" || this.peek() === "\r") space += this.next();
    return "<<" + space;
  }

  private processName(): string {
    let name = "";
    for (let ch = this.peek(); ch !== EOF; ch = this.peek()) {
      if (name === "" && isDigit(ch)) {
        while (this.peek() !== EOF && isDigit(this.peek())) name += this.next();
        return name;
      }
      if (name === "" && SPECIAL_PARAMS.includes(ch)) return this.next();
      if (!isLetter(ch) && !isDigit(ch) && ch !== "_") break;
      name += this.next();
    }
    return name;
  }

  private getEnv(name: string): string | undefined {
    return this.env.get(name);
  }

  private processDollar(): string {
    this.next(); // $
    if (this.peek() !== "{") {
      const name = this.processName();
      if (name === "") return "$";
      const value = this.getEnv(name);
      if (value === undefined && this.skipUnsetEnv) return "$" + name;
      return value ?? "";
    }
    this.next(); // {
    const first = this.peek();
    if (first === EOF) throw new LexError("syntax error: missing '}'");
    if (first === "{" || first === "}" || first === ":") throw new LexError("syntax error: bad substitution");
    const name = this.processName();
    let ch = this.next();
    if (ch === EOF) throw new LexError("syntax error: missing '}'");
    let mod = ch;
    if (ch === "}") {
      const value = this.getEnv(name);
      if (value === undefined && this.skipUnsetEnv) return "${" + name + "}";
      return value ?? "";
    }
    if (ch === "/") return this.processReplace(name);
    let nullIsUnset = false;
    if (ch === ":") {
      nullIsUnset = true;
      ch = this.next();
      if (ch === EOF) throw new LexError("syntax error: missing '}'");
      mod += ch;
    } else if (!"+-?#%".includes(ch)) {
      throw new LexError(`unsupported modifier (${mod}) in substitution`);
    }
    const trim = ch === "#" || ch === "%";
    if (nullIsUnset && trim) throw new LexError(`unsupported modifier (${mod}) in substitution`);
    let word = this.stopOnOrMissing("}", trim, "syntax error: missing '}'");
    const value = this.getEnv(name);
    if (value === undefined && this.skipUnsetEnv) return "${" + name + mod + word + "}";
    const empty = value === undefined || (nullIsUnset && value === "");
    switch (ch) {
      case "-":
        return empty ? word : value!;
      case "+":
        return empty ? "" : word;
      case "?":
        if (value === undefined) throw new LexError(`${name}: ${word || "is not allowed to be unset"}`);
        if (empty) throw new LexError(`${name}: ${word || "is not allowed to be empty"}`);
        return value;
      case "#":
      case "%": {
        // #/% remove the shortest matching prefix/suffix, ##/%% the longest
        const greedy = word.startsWith(ch);
        if (greedy) word = word.slice(1);
        return ch === "%" ? trimSuffix(word, value ?? "", greedy) : trimPrefix(word, value ?? "", greedy);
      }
      default:
        throw new LexError(`unsupported modifier (${mod}) in substitution`);
    }
  }

  private processReplace(name: string): string {
    const all = this.peek() === "/";
    if (all) this.next();
    const pattern = this.stopOnOrMissing("/", true, "syntax error: missing '/' in ${}");
    const replacement = this.stopOnOrMissing("}", true, "syntax error: missing '}'");
    const value = this.getEnv(name);
    if (value === undefined && this.skipUnsetEnv) return "${" + name + "/" + pattern + "/" + replacement + "}";
    const re = patternToRegex(pattern, true, false, all);
    if (all) return (value ?? "").replace(re, () => replacement);
    const m = re.exec(value ?? "");
    if (!m) return value ?? "";
    return value!.slice(0, m.index) + replacement + value!.slice(m.index + m[0].length);
  }

  private stopOnOrMissing(stop: string, rawEscapes: boolean, missing: string): string {
    try {
      return this.processStopOn(stop, rawEscapes).result;
    } catch (e) {
      if (e instanceof LexError && this.peek() === EOF) throw new LexError(missing);
      throw e;
    }
  }
}

/** A shell wildcard pattern (`*`, `?`, `\` escapes; no brackets) as a regular expression. */
function patternToRegex(pattern: string, greedy: boolean, anchored: boolean, global = false): RegExp {
  const toks = Array.from(pattern);
  let out = anchored ? "^" : "";
  for (let i = 0; i < toks.length; i++) {
    let tok = toks[i];
    if (tok === "*") {
      out += greedy ? ".*" : ".*?";
      continue;
    }
    if (tok === "?") {
      out += ".";
      continue;
    }
    if (tok === "\\") {
      // \} and \/ are escapes of the ${} syntax, not of the pattern
      if (toks[i + 1] === "}" || toks[i + 1] === "/") continue;
      tok = toks[++i] ?? "";
      if (tok !== "*" && tok !== "?" && tok !== "\\") throw new LexError(`invalid pattern (${pattern}) in substitution: invalid escape '\\${tok}'`);
      out += "\\";
    } else if ("[]{}.+()|^$".includes(tok)) {
      out += "\\";
    }
    out += tok;
  }
  return new RegExp(out, global ? "gu" : "u");
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const m = patternToRegex(pattern, greedy, true).exec(value);
  return m ? value.slice(m[0].length) : value;
}

/** Shortest/longest suffix: reverse pattern and value, then trim a prefix. */
function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  const reverse = (s: string) => Array.from(s).reverse().join("");
  return reverse(trimPrefix(reversePattern(pattern), reverse(value), greedy));
}

/** Reverses a pattern keeping each escape before the character it escapes. */
function reversePattern(pattern: string): string {
  const toks = Array.from(pattern);
  const out: string[] = [];
  for (let i = 0; i < toks.length; ) {
    if (toks[i] === "\\" && i !== toks.length - 1) {
      out.unshift("\\" + toks[i + 1]);
      i += 2;
    } else out.unshift(toks[i++]);
  }
  return out.join("");
}
