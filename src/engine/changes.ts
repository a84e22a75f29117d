import { StrataError } from "../errors/index.js";
import type { ImageConfig } from "../oci/index.js";

type RunConfig = NonNullable<ImageConfig["config"]>;

function execOrShell(arg: string): string[] {
  const t = arg.trim();
  if (t.startsWith("[")) {
    try {
      const v = JSON.parse(t);
      if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v;
    } catch {
      // not JSON: shell form, as Docker does
    }
  }
  return ["/bin/sh", "-c", t];
}

/** Splits on unquoted whitespace, removing quotes and backslash escapes (Dockerfile word rules, without expansion). */
export function splitWords(s: string): string[] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new StrataError("INVALID_ARGUMENT", `unterminated quote in "${s}"`);
  if (inWord) words.push(cur);
  return words;
}

/** KEY=VALUE pairs, or the legacy `KEY VALUE` form (one pair, the rest of the line as value). */
function pairs(arg: string): [string, string][] {
  const t = arg.trim();
  const first = splitWords(t)[0] ?? "";
  if (!first.includes("=")) {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(t);
    if (!m) throw new StrataError("INVALID_ARGUMENT", `"${arg}" needs KEY=VALUE or KEY VALUE`);
    return [[m[1], m[2].trim()]];
  }
  return splitWords(t).map((w) => {
    const i = w.indexOf("=");
    if (i <= 0) throw new StrataError("INVALID_ARGUMENT", `"${w}" is not KEY=VALUE`);
    return [w.slice(0, i), w.slice(i + 1)];
  });
}

/** Applies `--change` instructions (the Dockerfile subset `docker import -c` accepts) to a config. */
export function applyChange(cfg: RunConfig, change: string): void {
  const m = /^\s*(\w+)\s+([\s\S]*)$/.exec(change);
  if (!m) throw new StrataError("INVALID_ARGUMENT", `invalid change "${change}": expected INSTRUCTION ARGS`);
  const [, instr, arg] = m;
  switch (instr.toUpperCase()) {
    case "CMD":
      cfg.Cmd = execOrShell(arg);
      return;
    case "ENTRYPOINT":
      cfg.Entrypoint = execOrShell(arg);
      return;
    case "WORKDIR":
      cfg.WorkingDir = arg.trim();
      return;
    case "USER":
      cfg.User = arg.trim();
      return;
    case "STOPSIGNAL":
      cfg.StopSignal = arg.trim();
      return;
    case "ENV": {
      const env = cfg.Env ?? [];
      for (const [k, v] of pairs(arg)) {
        const i = env.findIndex((e) => e.split("=")[0] === k);
        if (i >= 0) env[i] = `${k}=${v}`;
        else env.push(`${k}=${v}`);
      }
      cfg.Env = env;
      return;
    }
    case "LABEL": {
      const labels = cfg.Labels ?? {};
      for (const [k, v] of pairs(arg)) labels[k] = v;
      cfg.Labels = labels;
      return;
    }
    case "EXPOSE": {
      const ports = cfg.ExposedPorts ?? {};
      for (const p of arg.trim().split(/\s+/)) ports[p.includes("/") ? p : `${p}/tcp`] = {};
      cfg.ExposedPorts = ports;
      return;
    }
    case "VOLUME": {
      const vols = cfg.Volumes ?? {};
      for (const p of execOrShell(arg)[0] === "/bin/sh" ? arg.trim().split(/\s+/) : execOrShell(arg)) vols[p] = {};
      cfg.Volumes = vols;
      return;
    }
    default:
      throw new StrataError("INVALID_ARGUMENT", `invalid change "${change}": ${instr} is not supported (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)`);
  }
}
