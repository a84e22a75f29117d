import type { Command } from "../main.js";
import { arity, UsageError } from "../main.js";
import { REGISTRY_FLAGS, registryOptions } from "../registry-flags.js";

const cmd: Command = {
  usage: `Usage:  strata login [OPTIONS] [SERVER]

Log in to a registry (default: Docker Hub). The login is checked against
the registry, then stored where Docker keeps it: the configured credential
helper (credsStore/credHelpers in config.json), else config.json's "auths"
($DOCKER_CONFIG/config.json, or ~/.docker/config.json).

Options:
  -u, --username string          Username
  -p, --password string          Password (visible to other users: prefer --password-stdin)
      --password-stdin           Take the password from stdin
      --insecure-registry host   Allow plain HTTP to this registry`,
  options: { username: { type: "string", short: "u" }, password: { type: "string", short: "p" }, "password-stdin": { type: "boolean" }, ...REGISTRY_FLAGS },
  async run({ values, positionals }, ctx) {
    arity("login", positionals, 0, 1);
    const server = normaliseServer(positionals[0]);
    const username = values.username as string | undefined;
    let password = values.password as string | undefined;
    if (values["password-stdin"]) {
      if (password !== undefined) throw new UsageError("--password and --password-stdin are mutually exclusive");
      if (!username) throw new UsageError("must provide --username with --password-stdin");
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      password = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
    }
    if (!username || !password) throw new UsageError("strata login needs --username and a password (--password-stdin or --password); it does not prompt");
    const { RegistryClient } = await import("../../registry/client/registry.js");
    const { storeCredentials } = await import("../../registry/client/credentials.js");
    const creds = { username, password };
    await new RegistryClient(server, { ...registryOptions(values), credentials: creds }).ping();
    await storeCredentials(server, creds);
    ctx.out.write("Login Succeeded\n");
    return 0;
  },
};

/** `https://host/v1/`, `host`, nothing → the registry domain (docker.io by default). */
export function normaliseServer(s: string | undefined): string {
  if (!s) return "docker.io";
  const host = s.replace(/^https?:\/\//, "").replace(/\/.*$/, "");
  return host === "index.docker.io" || host === "registry-1.docker.io" ? "docker.io" : host;
}

export default cmd;
