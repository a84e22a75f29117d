import type { Node } from "./parser.js";
export function dump(nodes: Node[]): string { return nodes.map((n) => n.value).join("\n"); }
