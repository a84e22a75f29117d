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
      const pairs = arg.includes("=") ? arg.trim().split(/\s+/).map((p) => p.split(/=(.*)/s).slice(0, 2)) : [arg.trim().split(/\s+(.*)/s).slice(0, 2)];
      const env = cfg.Env ?? [];
      for (const [k, v = ""] of pairs) {
        const i = env.findIndex((e) => e.split("=")[0] === k);
        if (i >= 0) env[i] = `${k}=${v}`;
        else env.push(`${k}=${v}`);
      }
      cfg.Env = env;
      return;
    }
    case "LABEL": {
      const labels = cfg.Labels ?? {};
      for (const p of arg.trim().split(/\s+/)) {
        const [k, v = ""] = p.split(/=(.*)/s);
        labels[k] = v.replace(/^"(.*)"$/, "$1");
      }
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
