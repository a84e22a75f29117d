// The parse tree as buildkit's Node.Dump prints it: one s-expression per instruction, strings quoted
// like Go's strconv.Quote. Used by the conformance tests and for debugging the parser.
import type { Node } from "./parser.js";

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
const SHORT: Record<string, string> = { "\x07": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\" };
// Instructions whose arguments buildkit keeps; others parse to one empty argument.
const KNOWN = new Set(["add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir"]);

/** Go's strconv.Quote. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const short = SHORT[ch];
    if (short) out += short;
    else if (PRINTABLE.test(ch)) out += ch;
    else {
      let cp = ch.codePointAt(0)!;
      if (cp < 0x20 || cp === 0x7f) out += "\\x" + cp.toString(16).padStart(2, "0");
      else {
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd; // a lone surrogate is not a valid rune
        out += cp < 0x10000 ? "\\u" + cp.toString(16).padStart(4, "0") : "\\U" + cp.toString(16).padStart(8, "0");
      }
    }
  }
  return out + '"';
}

/** One instruction: `value ["flags"...] "arg"...` (without the surrounding parentheses). */
export function dumpNode(n: Node): string {
  let s = n.value;
  if (n.flags.length > 0) s += " [" + n.flags.map(goQuote).join(" ") + "]";
  if (n.onbuild) return (s + " (" + dumpNode(n.onbuild) + ")").trim();
  let args = n.next;
  if (n.legacy) args = [...args, ""];
  else if (n.value === "env" || n.value === "label") args = args.flatMap((a, i) => (i % 2 === 1 ? [a, "="] : [a]));
  else if (!KNOWN.has(n.value)) args = [""];
  for (const a of args) s += " " + goQuote(a);
  return s.trim();
}

/** The whole file as buildkit's Dump prints it, with a final newline. */
export function dump(nodes: Node[]): string {
  return nodes.map((n) => "(" + dumpNode(n) + ")\n").join("");
}
