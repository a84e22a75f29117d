// A tiny side-by-side timing harness: our command and a peer's, run alternately in the
// same process so that machine noise (other load, cache state, CPU frequency) hits both.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Side {
  label: string;
  cmd: string[];
  /** untimed, once, before this side's warm-up runs */
  setup?: () => void;
  /** untimed, before every run of this side (after the comparison's `before`) */
  before?: () => void;
}

export interface Comparison {
  name: string;
  ours: Side;
  peer: Side;
  warmup?: number;
  runs?: number;
  /** untimed, before every run of either side (warm-ups too); i counts all runs from 0 */
  before?: (i: number) => void;
  /** the ratio ours/peer we aim for (met when ratio ≤ target) */
  target?: number;
  /** also measure our command's peak RSS in one extra untimed run; a number is a target in MB */
  rss?: boolean | number;
}

export interface Result {
  name: string;
  ours: number[];
  peer: number[];
  ratio: number;
  rssMB?: number;
}

/** Runs argv once and returns its wall time in ms; throws if it fails. */
export function timeOnce(argv: string[]): number {
  const start = process.hrtime.bigint();
  // stdout is ignored; stderr is kept only to say why a run failed.
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"], maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.error) throw new Error(`${argv.join(" ")}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status ?? r.signal}: ${r.stderr.toString().trim()}`);
  return ms;
}

/** Peak RSS in MB of one run of argv, via GNU time; undefined when /usr/bin/time is missing. */
export function peakRssMB(argv: string[]): number | undefined {
  if (!existsSync("/usr/bin/time")) return undefined;
  const dir = mkdtempSync(join(tmpdir(), "strata-bench-rss-"));
  try {
    const out = join(dir, "rss");
    timeOnce(["/usr/bin/time", "-f", "%M", "-o", out, ...argv]);
    return Number(readFileSync(out, "utf8").trim().split("\n").pop()) / 1024; // %M is in KiB
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const ms = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);

/** Times ours and peer alternately after warm-ups and prints one line; never fails on time. */
export function compare(c: Comparison): Result {
  const { warmup = 2, runs = 10 } = c;
  let i = 0;
  const run = (side: Side) => {
    c.before?.(i++);
    side.before?.();
    return timeOnce(side.cmd);
  };
  c.ours.setup?.();
  c.peer.setup?.();
  for (let k = 0; k < warmup; k++) run(c.ours);
  for (let k = 0; k < warmup; k++) run(c.peer);
  const ours: number[] = [];
  const peer: number[] = [];
  // Alternate so that a slow spell on the machine is shared rather than landing on one side.
  for (let k = 0; k < runs; k++) {
    ours.push(run(c.ours));
    peer.push(run(c.peer));
  }
  let rssMB: number | undefined;
  if (c.rss) {
    c.before?.(i++);
    c.ours.before?.();
    rssMB = peakRssMB(c.ours.cmd);
  }
  const ratio = median(ours) / median(peer);
  const parts = [
    c.name.padEnd(22),
    `${c.ours.label} ${ms(median(ours))}`.padEnd(26),
    `${c.peer.label} ${ms(median(peer))}`.padEnd(26),
    `ratio ${ratio.toFixed(2)}×`,
  ];
  if (c.target !== undefined) parts.push(`(target ≤ ${c.target.toFixed(2)}×: ${ratio <= c.target ? "met" : "MISSED"})`);
  if (c.rss) {
    if (rssMB === undefined) parts.push("peak RSS: n/a (no /usr/bin/time)");
    else {
      parts.push(`peak RSS ${rssMB.toFixed(0)} MB`);
      if (typeof c.rss === "number") parts.push(`(target < ${c.rss} MB: ${rssMB < c.rss ? "met" : "MISSED"})`);
    }
  }
  console.log(parts.join("  "));
  return { name: c.name, ours, peer, ratio, rssMB };
}
