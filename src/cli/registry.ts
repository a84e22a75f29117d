import type { Command } from "./main.js";
import { UsageError } from "./main.js";

const usage = `Usage:  strata registry serve [OPTIONS]
        strata registry gc [OPTIONS]

Run a private OCI distribution-spec registry, or collect its garbage

Serve options:
      --config FILE          JSON config file (flags override it)
      --listen ADDR          Listen address HOST:PORT (default 127.0.0.1:5000)
      --storage-path DIR     Storage directory (default <root>/registry)
      --tls-cert FILE        TLS certificate (PEM), with --tls-key
      --tls-key FILE         TLS private key (PEM)
      --htpasswd FILE        Require basic auth from this htpasswd file (bcrypt entries)
      --token-auth           Issue bearer tokens at /token and challenge clients with them
      --anonymous-pull PREFIX  Let anyone pull repositories under PREFIX ("" for all); repeatable
      --log-level LEVEL      debug, info, warn, error or off (default info)

Gc options:
      --url URL              Ask the registry running at URL to collect (online, from the same host)
      --grace SECONDS        Keep content written in the last SECONDS (default 600)
      --dry-run              Report what would be removed`;

function fail(msg: string): never {
  throw new UsageError(msg);
}

const cmd: Command = {
  usage,
  options: {
    config: { type: "string" },
    listen: { type: "string" },
    "storage-path": { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    htpasswd: { type: "string" },
    "token-auth": { type: "boolean" },
    "anonymous-pull": { type: "string", multiple: true },
    "log-level": { type: "string" },
    url: { type: "string" },
    grace: { type: "string" },
    "dry-run": { type: "boolean" },
  },
  async run({ values, positionals }, ctx) {
    const sub = positionals[0];
    if (sub !== "serve" && sub !== "gc") fail(`"strata registry" needs a subcommand: serve or gc (see 'strata registry --help')`);
    if (positionals.length > 1) fail(`"strata registry ${sub}" accepts no arguments (see 'strata registry --help')`);
    const { loadConfig, startRegistry, storageFor } = await import("../registry/server/serve.js");
    const { defaultRoot } = await import("../engine/root.js");
    const cfg = values.config ? await loadConfig(values.config as string) : {};
    if (values["storage-path"]) cfg.storage = { ...cfg.storage, path: values["storage-path"] as string };
    const dataRoot = ctx.root ?? defaultRoot();
    const grace = values.grace as string | undefined;
    if (grace !== undefined && !/^\d+$/.test(grace)) fail(`invalid --grace "${grace}": a number of seconds`);

    if (sub === "gc") {
      let report: { manifests: { repository: string; digest: string }[]; blobs: { digest: string; size: number }[]; uploads: number };
      if (values.url) {
        const u = new URL("/-/gc", values.url as string);
        if (values["dry-run"]) u.searchParams.set("dryRun", "true");
        if (grace !== undefined) u.searchParams.set("graceSeconds", grace);
        const r = await fetch(u, { method: "POST" });
        if (!r.ok) throw new Error(`registry gc at ${values.url}: HTTP ${r.status}: ${(await r.text()).slice(0, 200)}`);
        report = (await r.json()) as typeof report;
      } else {
        const { Registry } = await import("../registry/server/index.js");
        const { collectGarbage } = await import("../registry/server/gc.js");
        const registry = new Registry({ storage: await storageFor(cfg, dataRoot) });
        report = await collectGarbage(registry, { dryRun: values["dry-run"] as boolean | undefined, graceMs: grace !== undefined ? Number(grace) * 1000 : undefined });
      }
      const verb = values["dry-run"] ? "Would delete" : "Deleted";
      for (const m of report.manifests) ctx.out.write(`${verb} manifest: ${m.repository}@${m.digest}\n`);
      for (const b of report.blobs) ctx.out.write(`${verb} blob: ${b.digest}\n`);
      const { humanSize } = await import("./format.js");
      ctx.out.write(`Total reclaimed space: ${humanSize(report.blobs.reduce((a, b) => a + b.size, 0))}\n`);
      return 0;
    }

    if (values.listen) cfg.listen = values.listen as string;
    if (values["tls-cert"] || values["tls-key"]) {
      if (!values["tls-cert"] || !values["tls-key"]) fail("--tls-cert and --tls-key go together");
      cfg.tls = { cert: values["tls-cert"] as string, key: values["tls-key"] as string };
    }
    if (values.htpasswd || values["token-auth"] || values["anonymous-pull"]) {
      cfg.auth = { ...cfg.auth };
      if (values.htpasswd) cfg.auth.htpasswd = values.htpasswd as string;
      if (values["token-auth"]) cfg.auth.token = cfg.auth.token || true;
      if (values["anonymous-pull"]) cfg.auth.anonymousPull = values["anonymous-pull"] as string[];
    }
    if (values["log-level"]) {
      const l = values["log-level"] as string;
      if (!["debug", "info", "warn", "error", "off"].includes(l)) fail(`invalid --log-level "${l}": debug, info, warn, error or off`);
      cfg.log = { ...cfg.log, level: l as "info" };
    }
    const running = await startRegistry(cfg, dataRoot, (line) => process.stdout.write(line));
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        void running.close().then(resolve);
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    return 0;
  },
};
export default cmd;
