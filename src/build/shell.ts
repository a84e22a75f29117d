import { StrataError } from "../errors/index.js";

export class ShellLex {
  readonly escapeToken: string;
  constructor(escapeToken = "\\") { this.escapeToken = escapeToken; }
  processWord(word: string, env: string[]): string { throw new StrataError("UNSUPPORTED", `not implemented ${word} ${env.length}`); }
  processWords(word: string, env: string[]): string[] { throw new StrataError("UNSUPPORTED", `not implemented ${word} ${env.length}`); }
}
