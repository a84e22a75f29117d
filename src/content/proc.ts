import { readFileSync } from "node:fs";

/**
 * Start time of a live process (clock ticks since boot), so a recycled pid is
 * not mistaken for its owner; undefined for a zombie, which is dead already.
 */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

let self: string | undefined;

/** A token naming this process: `<pid>.<starttime>`. */
export function ownerToken(): string {
  self ??= `${process.pid}.${startTime(process.pid) ?? "0"}`;
  return self;
}

export function ownerAlive(token: string): boolean {
  const [pid, start] = token.trim().split(".");
  const n = Number(pid);
  if (!Number.isInteger(n) || n <= 0) return false;
  if (n === process.pid) return token.trim() === ownerToken();
  const now = startTime(n);
  return now !== undefined && now === start;
}
