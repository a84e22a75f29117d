// The `strata` command (bin/strata): Node 20 parses NODE_EXTRA_CA_CERTS while it
// starts, so the launcher hands it only to the commands that may speak TLS.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, busyboxRootfs, ok, strata, tempDir, type Run } from "./helpers.ts";
import { startStrataRegistry } from "./registry-helpers.ts";

const LAUNCHER = join(REPO, "bin", "strata");

function launch(cmd: string, args: string[], env: Record<string, string | undefined>): Run {
  const merged: Record<string, string | undefined> = { ...process.env, ...env };
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const r = spawnSync(cmd, args, { env: merged as NodeJS.ProcessEnv });
  return { code: r.status ?? 128, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** A private CA, and a certificate for 127.0.0.1 that it signed. */
function privateCa(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string) => join(dir, n);
  const openssl = (...a: string[]) => execFileSync("openssl", a, { stdio: "pipe" });
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-subj", "/CN=strata test CA", "-days", "2");
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("srv.key"), "-out", f("srv.csr"), "-subj", "/CN=127.0.0.1");
  writeFileSync(f("san.cnf"), "subjectAltName=IP:127.0.0.1\n");
  openssl("x509", "-req", "-in", f("srv.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("srv.pem"), "-days", "2", "-extfile", f("san.cnf"));
  return { ca: f("ca.pem"), cert: f("srv.pem"), key: f("srv.key") };
}

test("the strata launcher gives NODE_EXTRA_CA_CERTS to the TLS commands only", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", "-c", 'CMD ["sh"]', busyboxRootfs(join(dir, "rootfs")), "t/img:1"]));

  // Node warns at start-up when it cannot load the file: the warning shows who got the variable.
  const missing = { NODE_EXTRA_CA_CERTS: join(dir, "no-such-bundle.pem") };
  const images = ok(launch(LAUNCHER, ["--root", root, "-D", "images", "-q"], missing));
  assert.equal(images.stderr, "", "images starts without the bundle");
  assert.equal(images.stdout.trim().length, 12);
  const pull = launch(LAUNCHER, ["--root", root, "pull", "127.0.0.1:1/none:1"], missing);
  assert.match(pull.stderr, /Ignoring extra certs from/, "pull gets the bundle");
  // Through a symlink (as npm links it), with the command after a valued global option.
  const link = join(dir, "strata");
  symlinkSync(LAUNCHER, link);
  const run = ok(launch(link, ["--root", root, "run", "--rm", "t/img:1", "echo", "ran"], missing));
  assert.equal(run.stdout, "ran\n");
  assert.equal(run.stderr, "");

  // A registry whose certificate a private CA signed: strata trusts it through NODE_EXTRA_CA_CERTS, as Node does.
  const tls = privateCa(dir);
  const reg = await startStrataRegistry(t, ["--tls-cert", tls.cert, "--tls-key", tls.key]);
  assert.match(reg.url, /^https:/);
  const ref = `${reg.host}/t/img:1`;
  ok(launch(LAUNCHER, ["--root", root, "push", "-q", "t/img:1", ref], { NODE_EXTRA_CA_CERTS: tls.ca }), "push with the CA");
  const other = join(dir, "other");
  const untrusted = launch(LAUNCHER, ["--root", other, "pull", "-q", ref], { NODE_EXTRA_CA_CERTS: undefined });
  assert.notEqual(untrusted.code, 0, "without the CA the certificate is not trusted");
  assert.equal(untrusted.stderr.trim().split("\n").length, 1);
  ok(launch(LAUNCHER, ["--root", other, "pull", "-q", ref], { NODE_EXTRA_CA_CERTS: tls.ca }), "pull with the CA");
  assert.equal(ok(strata(other, ["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout, `${reg.host}/t/img:1\n`);
});
