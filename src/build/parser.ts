import { StrataError } from "../errors/index.js";

export interface Heredoc { name: string; content: string; expand: boolean; chomp: boolean }
export interface Node {
  value: string;
  next: string[];
  flags: string[];
  json: boolean;
  heredocs: Heredoc[];
  original: string;
  startLine: number;
  endLine: number;
  onbuild?: Node;
}
export interface ParseResult { escape: string; directives: Record<string, string>; nodes: Node[]; warnings: string[] }

/** Throws StrataError("INVALID_ARGUMENT", "Dockerfile:LINE: message") for syntax errors */
export function parse(text: string): ParseResult {
  throw new StrataError("UNSUPPORTED", `parse not implemented (${text.length})`);
}

export function parseFlags(node: Node, spec: Record<string, "string" | "bool" | "strings">): Record<string, string | boolean | string[] | undefined> {
  throw new StrataError("UNSUPPORTED", `parseFlags not implemented ${node.value} ${Object.keys(spec)}`);
}
