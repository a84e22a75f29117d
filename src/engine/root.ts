import { homedir } from "node:os";
import { join } from "node:path";

/** /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise; --root or STRATA_ROOT override. */
export function defaultRoot(): string {
  if (process.env.STRATA_ROOT) return process.env.STRATA_ROOT;
  if (process.getuid?.() === 0) return "/var/lib/strata";
  return join(process.env.XDG_DATA_HOME || join(homedir(), ".local", "share"), "strata");
}
