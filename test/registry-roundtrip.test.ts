// strata's own client against strata's own registry, anonymous and with both kinds of auth:
// the digest that goes in comes back out, and the pulled image runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { strata, ok, tempDir, busyboxRootfs } from "./helpers.ts";
import { http, startStrataRegistry } from "./registry-helpers.ts";
import { hashPassword } from "../src/registry/server/auth.ts";

/** An image in a fresh store, tagged for the registry at host. */
function source(t: Parameters<typeof tempDir>[0], host: string, ref: string): { root: string; env: Record<string, string> } {
  const dir = tempDir(t, "strata-roundtrip-");
  const root = join(dir, "root");
  const env = { DOCKER_CONFIG: join(dir, "docker") };
  mkdirSync(env.DOCKER_CONFIG);
  ok(strata(root, ["import", "-c", 'CMD ["sh"]', busyboxRootfs(join(dir, "rootfs"), { "hello.txt": "round trip\n" }), `${host}/${ref}`]));
  return { root, env };
}

async function registryDigest(url: string, repo: string, tag: string, auth?: string): Promise<string> {
  const r = await http(url, "HEAD", `/v2/${repo}/manifests/${tag}`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json", ...(auth ? { authorization: auth } : {}) } });
  assert.equal(r.status, 200);
  return r.headers.get("docker-content-digest")!;
}

const descriptor = (root: string, ref: string, env?: Record<string, string>) => JSON.parse(ok(strata(root, ["inspect", "-f", "{{json .Descriptor}}", ref], { env })).stdout).digest as string;

/** The manifest digest `push` reports (Docker's `TAG: digest: D size: N` line): an imported layer is stored plain and pushed gzip-compressed, under a new manifest. */
function pushedDigest(out: string): string {
  const m = /: digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(out);
  assert.ok(m, out);
  return m[1];
}

test("strata push → strata registry → strata pull: the same digest, and the image runs", async (t) => {
  const reg = await startStrataRegistry(t);
  const ref = `${reg.host}/demo/app:1`;
  const src = source(t, reg.host, "demo/app:1");
  const pushed = pushedDigest(ok(strata(src.root, ["push", ref], { env: src.env })).stdout);
  assert.equal(await registryDigest(reg.url, "demo/app", "1"), pushed, "the registry serves the manifest strata pushed, byte for byte");
  const dst = tempDir(t, "strata-roundtrip-pull-");
  ok(strata(dst, ["pull", ref], { env: src.env }));
  assert.equal(descriptor(dst, ref), pushed, "the pulled image has the pushed digest");
  assert.equal(ok(strata(dst, ["run", "--rm", ref, "cat", "/hello.txt"])).stdout, "round trip\n");
  ok(strata(dst, ["check"]));
});

for (const mode of ["basic", "token"] as const) {
  test(`strata's client against strata's registry with ${mode} auth: refused without a login, digests kept with one`, async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "htpasswd"), `alice:${hashPassword("wonderland", 4)}\n`);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ auth: { htpasswd: "htpasswd", access: [{ user: "alice", repository: "", actions: ["pull", "push", "delete"] }] } }));
    const reg = await startStrataRegistry(t, ["--config", join(dir, "config.json"), ...(mode === "token" ? ["--token-auth"] : [])]);
    const ref = `${reg.host}/private/app:1`;
    const src = source(t, reg.host, "private/app:1");
    const refused = strata(src.root, ["push", ref], { env: src.env });
    assert.notEqual(refused.code, 0, "no login, no push");
    assert.equal(refused.stderr.trim().split("\n").filter((l) => l.startsWith("Error")).length, 1, refused.stderr);
    const wrong = strata(src.root, ["login", "-u", "alice", "--password-stdin", reg.host], { env: src.env, input: "nope\n" });
    assert.notEqual(wrong.code, 0, "a wrong password is refused");
    ok(strata(src.root, ["login", "-u", "alice", "--password-stdin", reg.host], { env: src.env, input: "wonderland\n" }));
    const pushed = pushedDigest(ok(strata(src.root, ["push", ref], { env: src.env })).stdout);
    const dst = tempDir(t, "strata-roundtrip-pull-");
    ok(strata(dst, ["pull", ref], { env: src.env }));
    assert.equal(descriptor(dst, ref), pushed);
    ok(strata(src.root, ["logout", reg.host], { env: src.env }));
    const after = tempDir(t, "strata-roundtrip-anon-");
    assert.notEqual(strata(after, ["pull", ref], { env: src.env }).code, 0, "after logout, the private image cannot be pulled");
    ok(strata(after, ["check"]));
  });
}
