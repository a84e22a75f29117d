import type { Command } from "../main.js";
import { arity } from "../main.js";
import { normaliseServer } from "./login.js";

const cmd: Command = {
  usage: `Usage:  strata logout [SERVER]

Log out from a registry (default: Docker Hub): removes its login from
config.json or the configured credential helper`,
  options: {},
  async run({ positionals }, ctx) {
    arity("logout", positionals, 0, 1);
    const server = normaliseServer(positionals[0]);
    const { eraseCredentials, credentialKey } = await import("../../registry/client/credentials.js");
    const found = await eraseCredentials(server);
    ctx.out.write(found ? `Removing login credentials for ${credentialKey(server)}\n` : `Not logged in to ${credentialKey(server)}\n`);
    return 0;
  },
};
export default cmd;
