// The registry client against real registries: Debian's docker-registry (anonymous, htpasswd basic
// auth, token auth with a token service written here), peers (skopeo, podman) as judges, and a faulty
// proxy for failure injection. Every registry, server and mount is gone when a test ends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../src/engine/index.ts";
import { busyboxRootfs, listTree, makeDockerArchive, makeTar, rejectsCode, sha256, tempDir, type TarFile } from "./helpers.ts";
import { faultyProxy, multiPlatformLayout, startRegistry, startTokenService, strataRun, tool, type Fault } from "./registry-client-helpers.ts";

// Logins live in a config.json of the tests' own, never the host's.
const configHome = mkdtempSync(join(tmpdir(), "strata-dockercfg-"));
process.on("exit", () => rmSync(configHome, { recursive: true, force: true }));
process.env.DOCKER_CONFIG = configHome;
writeFileSync(join(configHome, "config.json"), "{}\n"); // podman, as a peer, wants the file to exist
const ENV = { DOCKER_CONFIG: configHome };

/** Files of a small image: busybox, a few text files, and a 3 MB random file in a second layer. */
async function testArchive(dir: string, tag: string): Promise<{ archive: string; rootfs: string }> {
  const rootfs = busyboxRootfs(join(dir, "rootfs"), { "etc/hello": "hello from the first layer\n" });
  const files: TarFile[] = [
    { name: "bin", type: "directory" },
    { name: "bin/busybox", content: readFileSync("/bin/busybox"), mode: 0o755 },
    ...["sh", "ls", "cat", "echo", "id", "true"].map((a): TarFile => ({ name: `bin/${a}`, type: "symlink", linkname: "busybox" })),
    { name: "etc", type: "directory" },
    { name: "etc/hello", content: "hello from the first layer\n" },
  ];
  const big = randomBytes(3 << 20);
  mkdirSync(join(rootfs, "data"), { recursive: true });
  writeFileSync(join(rootfs, "data", "random.bin"), big);
  const layer2 = await makeTar([{ name: "data", type: "directory" }, { name: "data/random.bin", content: big }]);
  const archive = join(dir, "image.tar");
  writeFileSync(archive, await makeDockerArchive([{ layers: [await makeTar(files), layer2], tags: [tag] }]));
  return { archive, rootfs };
}

async function skopeoPush(archive: string, ref: string, creds?: string, format?: "oci"): Promise<void> {
  await tool("skopeo", ["copy", "-q", "--dest-tls-verify=false", ...(format ? ["--format", format] : []), ...(creds ? ["--dest-creds", creds] : []), `docker-archive:${archive}`, `docker://${ref}`]);
}

async function skopeoDigest(ref: string, creds?: string): Promise<string> {
  const raw = await tool("skopeo", ["inspect", "--raw", "--tls-verify=false", ...(creds ? ["--creds", creds] : []), `docker://${ref}`]);
  return sha256(raw);
}

function ok(r: { code: number; stdout: string; stderr: string }, what: string) {
  assert.equal(r.code, 0, `${what} failed: ${r.stderr}${r.stdout}`);
  return r;
}

/** The store passes `strata check` and holds exactly `n` images. */
async function storeIsSound(root: string, n: number): Promise<void> {
  const engine = new Engine({ root });
  try {
    const report = await engine.check();
    assert.deepEqual(report.problems, []);
    assert.equal(report.images, n);
  } finally {
    engine.close();
  }
}

test("unit: WWW-Authenticate challenges, copy locations, Docker config.json logins", async (t) => {
  const { parseChallenge } = await import("../src/registry/client/registry.ts");
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'), {
    scheme: "bearer",
    params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/busybox:pull" },
  });
  assert.deepEqual(parseChallenge('Basic realm="a \\"quoted\\" realm"'), { scheme: "basic", params: { realm: 'a "quoted" realm' } });
  assert.equal(parseChallenge("Negotiate abc"), undefined);
  assert.equal(parseChallenge(undefined), undefined);

  // Plain HTTP: loopback always, other hosts only when named insecure.
  const { RegistryClient } = await import("../src/registry/client/registry.ts");
  for (const h of ["localhost:5000", "127.0.0.1:5000", "127.8.9.10", "[::1]:5000"]) assert.equal(new RegistryClient(h).insecureAllowed, true, h);
  assert.equal(new RegistryClient("registry.example:5000").insecureAllowed, false);
  assert.equal(new RegistryClient("registry.example:5000", { insecure: ["registry.example:5000"] }).insecureAllowed, true);
  assert.equal(new RegistryClient("docker.io").host, "registry-1.docker.io");

  const { parseLocation } = await import("../src/engine/copy.ts");
  assert.deepEqual(parseLocation("busybox"), { kind: "registry", ref: { domain: "docker.io", path: "library/busybox", tag: "latest", digest: undefined } });
  assert.equal((parseLocation("docker://localhost:5000/a/b:1") as { ref: { domain: string } }).ref.domain, "localhost:5000");
  assert.deepEqual(parseLocation("oci:/tmp/x:v1"), { kind: "oci", dir: "/tmp/x", tag: "v1" });
  assert.deepEqual(parseLocation("oci:/tmp/x"), { kind: "oci", dir: "/tmp/x", tag: undefined });
  assert.deepEqual(parseLocation("docker-archive:/tmp/a.tar:app/x:2"), { kind: "docker-archive", file: "/tmp/a.tar", tag: "app/x:2" });
  assert.deepEqual(parseLocation("strata:app:1"), { kind: "store", ref: "app:1" });
  assert.throws(() => parseLocation("docker:busybox"), /docker:\/\/NAME/);

  const { lookupCredentials, credentialKey } = await import("../src/registry/client/credentials.ts");
  const dir = tempDir(t);
  const cfg = join(dir, "config.json");
  writeFileSync(cfg, JSON.stringify({
    auths: {
      "https://index.docker.io/v1/": { auth: Buffer.from("hubuser:hubpass").toString("base64") },
      "registry.example:5000": { auth: Buffer.from("u:p:with:colons").toString("base64") },
      "https://other.example/v2/": { username: "o", password: "q" },
    },
  }));
  assert.equal(credentialKey("docker.io"), "https://index.docker.io/v1/");
  assert.deepEqual(await lookupCredentials("docker.io", cfg), { username: "hubuser", password: "hubpass" });
  assert.deepEqual(await lookupCredentials("registry.example:5000", cfg), { username: "u", password: "p:with:colons" });
  assert.deepEqual(await lookupCredentials("other.example", cfg), { username: "o", password: "q" });
  assert.equal(await lookupCredentials("nowhere.example", cfg), undefined);
  assert.equal(await lookupCredentials("x", join(dir, "missing.json")), undefined);
  writeFileSync(cfg, "{not json");
  await rejectsCode(lookupCredentials("x", cfg), "INVALID_ARGUMENT");
});

test("anonymous: skopeo push → strata pull unpacks the same tree, keeps the digest and runs; strata push → skopeo and podman agree", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const { archive, rootfs } = await testArchive(dir, "demo/app:1");
  await skopeoPush(archive, `${reg.host}/demo/app:1`);
  const expected = await skopeoDigest(`${reg.host}/demo/app:1`);

  const root = join(dir, "root");
  const pull = ok(await strataRun(root, ["pull", `${reg.host}/demo/app:1`]), "pull");
  assert.match(pull.stdout, /Pull complete/);
  assert.match(pull.stdout, new RegExp(`Digest: ${expected}`));
  assert.match(pull.stdout, /Status: Downloaded newer image/);
  const inspect = JSON.parse(ok(await strataRun(root, ["inspect", `${reg.host}/demo/app:1`]), "inspect").stdout)[0];
  assert.equal(inspect.Descriptor.digest, expected);

  // The unpacked layers, mounted as a container's root, are the tree that went in.
  ok(await strataRun(root, ["create", "--name", "c1", `${reg.host}/demo/app:1`]), "create");
  const mnt = ok(await strataRun(root, ["mount", "c1"]), "mount").stdout.trim();
  try {
    // A container also has its init layer: the mount points a runtime needs (empty /etc/hosts and the like).
    const INIT = new Set(["etc/hostname", "etc/hosts", "etc/resolv.conf"]);
    assert.deepEqual(listTree(mnt).filter((p) => !INIT.has(p)), listTree(rootfs));
    assert.ok(readFileSync(join(mnt, "data/random.bin")).equals(readFileSync(join(rootfs, "data/random.bin"))));
  } finally {
    ok(await strataRun(root, ["umount", "c1"]), "umount");
  }
  ok(await strataRun(root, ["rm", "c1"]), "rm");
  // And it runs.
  const run = ok(await strataRun(root, ["run", "--rm", "--network", "none", `${reg.host}/demo/app:1`, "/bin/cat", "/etc/hello"]), "run");
  assert.equal(run.stdout, "hello from the first layer\n");

  // A second pull downloads nothing.
  const again = ok(await strataRun(root, ["pull", `${reg.host}/demo/app:1`]), "pull again");
  assert.match(again.stdout, /Image is up to date/);
  // -q prints the reference only.
  assert.equal(ok(await strataRun(root, ["pull", "-q", `${reg.host}/demo/app:1`]), "pull -q").stdout, `${reg.host}/demo/app:1\n`);

  // strata push under another name: skopeo sees the same manifest digest, podman pulls and runs it.
  const push = ok(await strataRun(root, ["push", `${reg.host}/demo/app:1`, `${reg.host}/other/app:2`]), "push");
  assert.match(push.stdout, /Mounted from demo\/app/);
  assert.match(push.stdout, new RegExp(`2: digest: ${expected} size: \\d+`));
  assert.equal(await skopeoDigest(`${reg.host}/other/app:2`), expected);
  const twice = ok(await strataRun(root, ["push", `${reg.host}/demo/app:1`, `${reg.host}/other/app:2`]), "push again");
  assert.equal(twice.stdout.match(/Layer already exists/g)?.length, 2);

  const pod = join(dir, "podman");
  const podman = ["--root", join(pod, "root"), "--runroot", join(pod, "run"), "--storage-driver", "vfs"];
  t.after(() => tool("podman", [...podman, "rmi", "-a", "-f"]).catch(() => {}));
  await tool("podman", [...podman, "pull", "-q", "--tls-verify=false", `${reg.host}/other/app:2`]);
  const podDigest = (await tool("podman", [...podman, "image", "inspect", "--format", "{{.Digest}}", `${reg.host}/other/app:2`])).trim();
  assert.equal(podDigest, expected);
  const out = await tool("podman", [...podman, "run", "--rm", "--net=none", `${reg.host}/other/app:2`, "/bin/cat", "/etc/hello"]);
  assert.equal(out, "hello from the first layer\n");
  await storeIsSound(root, 1);
});

test("a loaded docker-archive's plain tar layers are pushed gzip-compressed (as docker and podman push them), and pull back to the same diffIDs", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const { archive } = await testArchive(dir, "plain/app:1");
  const root = join(dir, "root");
  ok(await strataRun(root, ["load", "-i", archive]), "load");
  const local = JSON.parse(ok(await strataRun(root, ["inspect", "plain/app:1"]), "inspect").stdout)[0];
  const push = ok(await strataRun(root, ["push", "-q", "plain/app:1", `${reg.host}/plain/app:1`]), "push");

  const raw = await tool("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/plain/app:1`]);
  assert.equal(push.stdout, `${reg.host}/plain/app:1@${sha256(raw)}\n`);
  assert.notEqual(sha256(raw), local.Descriptor.digest, "a new manifest names the compressed blobs");
  const manifest = JSON.parse(raw) as { config: { digest: string }; layers: { mediaType: string; digest: string; size: number }[] };
  assert.equal(manifest.config.digest, local.Id);
  assert.equal(manifest.layers.length, 2);
  for (const l of manifest.layers) {
    assert.equal(l.mediaType, "application/vnd.docker.image.rootfs.diff.tar.gzip");
    const blob = Buffer.from(await (await fetch(`${reg.url}/v2/plain/app/blobs/${l.digest}`)).arrayBuffer());
    assert.equal(blob.length, l.size);
    assert.deepEqual([...blob.subarray(0, 2)], [0x1f, 0x8b], `${l.digest} is gzip`);
    assert.ok(!local.RootFS.Layers.includes(l.digest), "not the plain tar's digest");
  }
  // The local image is unchanged; a pull (which checks each layer's diffID against the config) gets the same layers.
  assert.equal(JSON.parse(ok(await strataRun(root, ["inspect", "plain/app:1"]), "inspect").stdout)[0].Descriptor.digest, local.Descriptor.digest);
  const other = join(dir, "other");
  ok(await strataRun(other, ["pull", `${reg.host}/plain/app:1`]), "pull");
  assert.deepEqual(JSON.parse(ok(await strataRun(other, ["inspect", `${reg.host}/plain/app:1`]), "inspect").stdout)[0].RootFS.Layers, local.RootFS.Layers);
  await storeIsSound(root, 1);
  await storeIsSound(other, 1);
});

test("an image made here keeps its layer as a plain tar (its digest is its diffID); push sends it gzip-compressed under an OCI gzip type", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const { rootfs } = await testArchive(dir, "unused:1");
  const root = join(dir, "root");
  ok(await strataRun(root, ["import", rootfs, "made/app:1"]), "import");
  const engine = new Engine({ root });
  let local: { layers: { mediaType: string; digest: string }[] };
  let diffIds: string[];
  try {
    const img = engine.image("made/app:1");
    local = JSON.parse((await img.rawManifest()).toString());
    diffIds = (await img.config()).rootfs.diff_ids;
  } finally {
    engine.close();
  }
  assert.equal(local.layers.length, 1);
  assert.equal(local.layers[0].mediaType, "application/vnd.oci.image.layer.v1.tar");
  assert.equal(local.layers[0].digest, diffIds[0], "a plain layer is its own diffID");
  ok(await strataRun(root, ["push", "-q", "made/app:1", `${reg.host}/made/app:1`]), "push");
  const manifest = JSON.parse(await tool("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/made/app:1`])) as { layers: { mediaType: string; digest: string }[] };
  assert.equal(manifest.layers[0].mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
  const blob = Buffer.from(await (await fetch(`${reg.url}/v2/made/app/blobs/${manifest.layers[0].digest}`)).arrayBuffer());
  assert.deepEqual([...blob.subarray(0, 2)], [0x1f, 0x8b], "gzip on the wire");
  const other = join(dir, "other");
  ok(await strataRun(other, ["pull", `${reg.host}/made/app:1`]), "pull");
  assert.deepEqual(JSON.parse(ok(await strataRun(other, ["inspect", `${reg.host}/made/app:1`]), "inspect").stdout)[0].RootFS.Layers, diffIds);
  await storeIsSound(root, 1);
});

test("pull by digest, errors for a missing tag and an unknown repository, strata check after each", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const { archive } = await testArchive(dir, "a/b:1");
  await skopeoPush(archive, `${reg.host}/a/b:1`);
  const digest = await skopeoDigest(`${reg.host}/a/b:1`);
  const root = join(dir, "root");
  const byDigest = ok(await strataRun(root, ["pull", `${reg.host}/a/b@${digest}`]), "pull by digest");
  assert.match(byDigest.stdout, new RegExp(`Digest: ${digest}`));
  const missing = await strataRun(root, ["pull", `${reg.host}/a/b:nope`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^Error: manifest .*a\/b:nope: not found/);
  assert.equal(missing.stderr.split("\n").filter(Boolean).length, 1);
  const badRef = await strataRun(root, ["pull", "bad//ref"]);
  assert.notEqual(badRef.code, 0);
  assert.match(badRef.stderr, /invalid reference format/);
  await storeIsSound(root, 1);

  // The vfs driver unpacks after the download (it copies parents), from the blobs just stored.
  const vfs = join(dir, "vfs");
  ok(await strataRun(vfs, ["--storage-driver", "vfs", "pull", "-q", `${reg.host}/a/b:1`]), "pull on vfs");
  ok(await strataRun(vfs, ["create", "--name", "v1", `${reg.host}/a/b:1`]), "create on vfs");
  const mnt = ok(await strataRun(vfs, ["mount", "v1"]), "mount on vfs").stdout.trim();
  try {
    assert.equal(readFileSync(join(mnt, "etc/hello"), "utf8"), "hello from the first layer\n");
    assert.equal(readFileSync(join(mnt, "data/random.bin")).length, 3 << 20);
  } finally {
    ok(await strataRun(vfs, ["umount", "v1"]), "umount on vfs");
  }
  ok(await strataRun(vfs, ["rm", "v1"]), "rm on vfs");
  await storeIsSound(vfs, 1);
});

test("plain HTTP to a registry that is not on loopback only with --insecure-registry", async (t) => {
  const { networkInterfaces } = await import("node:os");
  const addr = Object.values(networkInterfaces()).flat().find((i) => i && i.family === "IPv4" && !i.internal)?.address;
  assert.ok(addr, "this test needs a non-loopback IPv4 address on the machine");
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"), { listen: addr });
  const { archive } = await testArchive(dir, "n/o:1");
  await skopeoPush(archive, `${reg.host}/n/o:1`);
  const root = join(dir, "root");
  const refused = await strataRun(root, ["pull", `${reg.host}/n/o:1`]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^Error: manifest .*n\/o:1: .*(SSL|TLS|EPROTO|wrong version)/i);
  ok(await strataRun(root, ["pull", "--insecure-registry", reg.host, `${reg.host}/n/o:1`]), "pull with --insecure-registry");
  ok(await strataRun(root, ["push", `${reg.host}/n/o:1`, `${reg.host}/n/p:1`], { env: { STRATA_INSECURE_REGISTRIES: `other.example,${reg.host}` } }), "push with STRATA_INSECURE_REGISTRIES");
  await storeIsSound(root, 1);
});

test("htpasswd basic auth: refused without a login, login stores base64 auth in DOCKER_CONFIG, push/pull work, logout removes it", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"), { htpasswd: { alice: "s3cret" } });
  const { archive } = await testArchive(dir, "x/y:1");
  await skopeoPush(archive, `${reg.host}/x/y:1`, "alice:s3cret");
  const root = join(dir, "root");

  const anon = await strataRun(root, ["pull", `${reg.host}/x/y:1`], { env: ENV });
  assert.equal(anon.code, 1);
  assert.match(anon.stderr, /^Error: .*authentication required/);

  const wrong = await strataRun(root, ["login", "-u", "alice", "--password-stdin", reg.host], { env: ENV, input: "wrong\n" });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /login refused|authentication required/);
  assert.ok(!readFileSync(join(configHome, "config.json"), "utf8").includes(reg.host), "a refused login is not stored");

  ok(await strataRun(root, ["login", "-u", "alice", "--password-stdin", reg.host], { env: ENV, input: "s3cret\n" }), "login");
  const cfg = JSON.parse(readFileSync(join(configHome, "config.json"), "utf8"));
  assert.equal(Buffer.from(cfg.auths[reg.host].auth, "base64").toString(), "alice:s3cret");

  ok(await strataRun(root, ["pull", `${reg.host}/x/y:1`], { env: ENV }), "pull with login");
  ok(await strataRun(root, ["push", `${reg.host}/x/y:1`, `${reg.host}/x/z:1`], { env: ENV }), "push with login");
  assert.equal(await skopeoDigest(`${reg.host}/x/z:1`, "alice:s3cret"), await skopeoDigest(`${reg.host}/x/y:1`, "alice:s3cret"));

  const out = ok(await strataRun(root, ["logout", reg.host], { env: ENV }), "logout");
  assert.match(out.stdout, /Removing login credentials/);
  assert.equal(JSON.parse(readFileSync(join(configHome, "config.json"), "utf8")).auths[reg.host], undefined);
  await storeIsSound(root, 1);
});

test("a credential helper (credsStore → docker-credential-*) supplies the login", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"), { htpasswd: { bob: "pa55" } });
  const { archive } = await testArchive(dir, "h/i:1");
  await skopeoPush(archive, `${reg.host}/h/i:1`, "bob:pa55");
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const log = join(dir, "helper.log");
  writeFileSync(join(bin, "docker-credential-strata-test"), `#!/bin/sh\nread server\necho "$1 $server" >> ${log}\n[ "$1" = get ] && [ "$server" = "${reg.host}" ] && echo '{"ServerURL":"${reg.host}","Username":"bob","Secret":"pa55"}' && exit 0\necho "credentials not found in native keychain"; exit 1\n`);
  chmodSync(join(bin, "docker-credential-strata-test"), 0o755);
  const cfgDir = join(dir, "docker");
  mkdirSync(cfgDir);
  writeFileSync(join(cfgDir, "config.json"), JSON.stringify({ credsStore: "strata-test" }));
  const env = { DOCKER_CONFIG: cfgDir, PATH: `${bin}:${process.env.PATH}` };
  ok(await strataRun(join(dir, "root"), ["pull", `${reg.host}/h/i:1`], { env }), "pull through the helper");
  assert.match(readFileSync(log, "utf8"), new RegExp(`^get ${reg.host}$`, "m"));
});

test("bearer tokens: challenge, scoped token from the token service, cached per scope; anonymous gets pull on public/ only", async (t) => {
  const dir = tempDir(t);
  const tokens = await startTokenService(t, dir, { carol: "t0ken" });
  const reg = await startRegistry(t, join(dir, "reg"), { token: tokens });
  const { archive } = await testArchive(dir, "public/app:1");
  await skopeoPush(archive, `${reg.host}/public/app:1`, "carol:t0ken");
  const root = join(dir, "root");

  tokens.requests.length = 0;
  ok(await strataRun(root, ["pull", `${reg.host}/public/app:1`], { env: ENV }), "anonymous pull of a public repository");
  // One token for the whole pull (manifest, config, both layers): cached per scope.
  assert.deepEqual(tokens.requests.map((r) => r.scope.join(" ")), ["repository:public/app:pull"]);
  assert.equal(tokens.requests[0].user, undefined);

  const denied = await strataRun(root, ["push", `${reg.host}/public/app:1`, `${reg.host}/private/app:1`], { env: ENV });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /^Error: .*(authentication required|access denied)/);

  ok(await strataRun(root, ["login", "-u", "carol", "--password-stdin", reg.host], { env: ENV, input: "t0ken" }), "login");
  tokens.requests.length = 0;
  const push = ok(await strataRun(root, ["push", `${reg.host}/public/app:1`, `${reg.host}/private/app:1`], { env: ENV }), "push with a token");
  assert.match(push.stdout, /Mounted from public\/app/);
  assert.ok(tokens.requests.every((r) => r.user === "carol"));
  assert.ok(tokens.requests.some((r) => r.scope.includes("repository:private/app:pull,push")));
  assert.ok(tokens.requests.some((r) => r.scope.includes("repository:public/app:pull")), "the mount asks for pull on the source repository");
  assert.equal(await skopeoDigest(`${reg.host}/private/app:1`, "carol:t0ken"), await skopeoDigest(`${reg.host}/public/app:1`, "carol:t0ken"));
  ok(await strataRun(root, ["logout", reg.host], { env: ENV }), "logout");
});

test("a token the registry refuses (401) is renewed once, then the request goes through", async (t) => {
  const dir = tempDir(t);
  const tokens = await startTokenService(t, dir, { dave: "pw" });
  const reg = await startRegistry(t, join(dir, "reg"), { token: tokens });
  const { archive } = await testArchive(dir, "r/s:1");
  await skopeoPush(archive, `${reg.host}/r/s:1`, "dave:pw");
  tokens.requests.length = 0;
  tokens.useless = 1; // the next token grants nothing: the registry answers 401 to it
  const { RegistryClient, Repository } = await import("../src/registry/client/registry.ts");
  const repo = new Repository(new RegistryClient(reg.host, { credentials: { username: "dave", password: "pw" } }), "r/s");
  const got = await repo.manifest("1");
  assert.equal(tokens.requests.length, 2, `one refused token, one renewed: ${JSON.stringify(tokens.requests)}`);
  assert.equal(got.digest, await skopeoDigest(`${reg.host}/r/s:1`, "dave:pw"));
});

// ---- faults, through a proxy in front of a real registry ------------------------------------------

async function faultSetup(t: Parameters<typeof tempDir>[0]) {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const { archive } = await testArchive(dir, "f/img:1");
  await skopeoPush(archive, `${reg.host}/f/img:1`);
  const digest = await skopeoDigest(`${reg.host}/f/img:1`);
  const manifest = JSON.parse(await tool("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/f/img:1`]));
  const bigLayer: string = manifest.layers.reduce((a: { size: number; digest: string }, b: { size: number; digest: string }) => (b.size > a.size ? b : a)).digest;
  const fault: { current: Fault | undefined } = { current: undefined };
  const proxy = await faultyProxy(t, reg.url, fault);
  const root = join(dir, "root");
  const engine = new Engine({ root });
  t.after(() => engine.close());
  const pull = (ref = `${proxy.host}/f/img:1`) => engine.pull(ref, { retries: 3, retryDelayMs: 20 });
  return { dir, reg, proxy, fault, engine, root, pull, digest, bigLayer };
}

/** Fails the first `n` matching requests with `fn`, forwarding the rest. */
function firstN(n: number, match: (url: string, method: string) => boolean, fn: Fault): Fault {
  let left = n;
  return (req, res, forward) => {
    if (left > 0 && match(req.url!, req.method!)) {
      left--;
      fn(req, res, forward);
    } else forward();
  };
}

async function assertNoImage(engine: Engine): Promise<void> {
  const report = await engine.check();
  assert.deepEqual(report.problems, []);
  assert.equal(engine.images().length, 0);
}

test("faults that are retried: 500, 429 with Retry-After, a connection reset mid-layer (resumed with Range), a truncated body", async (t) => {
  const s = await faultSetup(t);
  const isBlob = (u: string, m: string) => m === "GET" && u.includes(`/blobs/${s.bigLayer}`);
  s.fault.current = firstN(2, isBlob, (_q, res) => res.writeHead(500).end("boom"));
  assert.equal((await s.pull()).image.manifest.digest, s.digest);
  await s.engine.rmi([`${s.proxy.host}/f/img:1`]);

  s.fault.current = firstN(1, (u) => u.includes("/manifests/"), (_q, res) => res.writeHead(429, { "retry-after": "0" }).end());
  assert.equal((await s.pull()).image.manifest.digest, s.digest);
  await s.engine.rmi([`${s.proxy.host}/f/img:1`]);

  s.proxy.seen.length = 0;
  s.fault.current = firstN(1, isBlob, (_q, _r, forward) => forward({ resetAfter: 1 << 20 }));
  assert.equal((await s.pull()).image.manifest.digest, s.digest);
  const ranges = s.proxy.seen.filter((r) => r.url.includes(s.bigLayer) && r.range);
  assert.ok(ranges.length >= 1, "the interrupted layer was resumed with a Range request");
  assert.match(ranges[0].range!, /^bytes=[1-9]\d*-$/);
  await s.engine.rmi([`${s.proxy.host}/f/img:1`]);

  s.fault.current = firstN(1, isBlob, (_q, _r, forward) => forward({ contentLength: (n) => n + 1000 }));
  assert.equal((await s.pull()).image.manifest.digest, s.digest);
  const report = await s.engine.check();
  assert.deepEqual(report.problems, []);
  // The pulled layers are unpacked and the image is whole.
  assert.equal(s.engine.images().length, 1);
});

test("faults that fail clearly and leave no image: digest mismatch in a blob or a manifest, short Content-Length, 401/403/404, persistent 500, registry gone", async (t) => {
  const s = await faultSetup(t);
  const isBlob = (u: string, m: string) => m === "GET" && u.includes(`/blobs/${s.bigLayer}`);
  const flip = (b: Buffer) => {
    const c = Buffer.from(b);
    c[c.length >> 1] ^= 0xff;
    return c;
  };

  s.fault.current = (req, _res, forward) => forward(isBlob(req.url!, req.method!) ? { body: flip } : {});
  await rejectsCode(s.pull(), "DIGEST_MISMATCH");
  await assertNoImage(s.engine);

  s.fault.current = (req, _res, forward) => forward(req.url!.includes("/manifests/") && req.method === "GET" ? { body: (b) => Buffer.from(b.toString().replace("schemaVersion\":2", "schemaVersion\": 2")) } : {});
  await rejectsCode(s.pull(`${s.proxy.host}/f/img@${s.digest}`), "DIGEST_MISMATCH");
  await assertNoImage(s.engine);

  s.fault.current = (req, _res, forward) => forward(isBlob(req.url!, req.method!) ? { contentLength: (n) => n - 100 } : {});
  await rejectsCode(s.pull(), "SIZE_MISMATCH");
  await assertNoImage(s.engine);

  for (const [status, code] of [[401, "UNAUTHORIZED"], [403, "DENIED"], [404, "NOT_FOUND"], [500, "NETWORK"]] as const) {
    s.fault.current = (req, res, forward) => (isBlob(req.url!, req.method!) ? res.writeHead(status).end() : forward());
    await rejectsCode(s.pull(), code);
    await assertNoImage(s.engine);
  }

  // The registry disappears halfway through the big layer: a clear network error, then a later pull
  // (registry back) resumes the partial blob.
  s.proxy.seen.length = 0;
  s.fault.current = (req, res, forward) => {
    if (isBlob(req.url!, req.method!)) {
      s.fault.current = (_q, r2) => r2.socket?.destroy();
      forward({ resetAfter: 1 << 20 });
    } else forward();
  };
  const gone = await rejectsCode(s.pull(), "NETWORK");
  assert.match(gone.message, /blob|layer|socket|ECONNRESET|closed/i);
  await assertNoImage(s.engine);

  s.fault.current = undefined;
  assert.equal((await s.pull()).image.manifest.digest, s.digest);
  assert.ok(s.proxy.seen.some((r) => r.url.includes(s.bigLayer) && r.range), "the partial layer was resumed");
  assert.deepEqual((await s.engine.check()).problems, []);

  // The CLI says it in one line and exits 1.
  s.fault.current = (req, res, forward) => (req.url!.includes("/manifests/") ? res.writeHead(403).end() : forward());
  const r = await strataRun(s.root, ["pull", "--retry", "1", "--retry-delay", "10ms", `${s.proxy.host}/f/img:2`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: manifest .*access denied\n$/);
});

test("push faults: a reset in the middle of a chunked upload resumes; a 500 on the manifest is retried; a denied push says so", async (t) => {
  const s = await faultSetup(t);
  await s.engine.pull(`${s.reg.host}/f/img:1`);
  s.fault.current = firstN(1, (u, m) => m === "PATCH", (req, res) => {
    req.resume();
    res.socket?.destroy();
  });
  const r = await s.engine.push(`${s.reg.host}/f/img:1`, `${s.proxy.host}/g/img:1`, { retries: 3, retryDelayMs: 20, monolithicMax: 1 << 20, chunkSize: 1 << 20 });
  assert.equal(r.digest, s.digest);
  assert.ok(s.proxy.seen.filter((q) => q.method === "PATCH").length >= 3, "the big layer went in chunks");
  assert.equal(await skopeoDigest(`${s.reg.host}/g/img:1`), s.digest);

  s.fault.current = firstN(2, (u, m) => m === "PUT" && u.includes("/manifests/"), (req, res) => {
    req.resume();
    res.writeHead(500).end();
  });
  assert.equal((await s.engine.push(`${s.reg.host}/f/img:1`, `${s.proxy.host}/h/img:1`, { retries: 3, retryDelayMs: 20 })).digest, s.digest);

  s.fault.current = (req, res, forward) => {
    if (req.method === "POST") {
      req.resume();
      res.writeHead(403, { "content-type": "application/json" }).end(JSON.stringify({ errors: [{ code: "DENIED", message: "requested access to the resource is denied" }] }));
    } else forward();
  };
  await rejectsCode(s.engine.push(`${s.reg.host}/f/img:1`, `${s.proxy.host}/k/img:1`, { retries: 1, retryDelayMs: 10 }), "DENIED", /denied/);

  // A layer gone bad in the store fails the push before the registry has all of it, in one PUT or in chunks.
  s.fault.current = undefined;
  const path = s.engine.content.blobPath(s.bigLayer as `sha256:${string}`);
  const good = readFileSync(path);
  writeFileSync(path, Buffer.concat([good.subarray(0, 100), Buffer.from([good[100] ^ 1]), good.subarray(101)]));
  for (const [repo, opts] of [["m/img", {}], ["c/img", { monolithicMax: 1 << 20, chunkSize: 1 << 20 }]] as const) {
    await rejectsCode(s.engine.push(`${s.reg.host}/f/img:1`, `${s.proxy.host}/${repo}:1`, { retries: 1, retryDelayMs: 10, ...opts }), "DIGEST_MISMATCH");
    assert.equal((await fetch(`${s.reg.url}/v2/${repo}/blobs/${s.bigLayer}`, { method: "HEAD" })).status, 404, repo);
    assert.equal((await fetch(`${s.reg.url}/v2/${repo}/manifests/1`, { method: "HEAD" })).status, 404, repo);
  }
  writeFileSync(path, good);
});

test("strata copy between a registry, an OCI layout, archives and the store keeps the digest; skopeo reads what it writes", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const { archive } = await testArchive(dir, "c/img:1");
  // OCI media types: skopeo 1.9 reads only those from an OCI layout (strata copies manifests as they are).
  await skopeoPush(archive, `${reg.host}/c/img:1`, undefined, "oci");
  const digest = await skopeoDigest(`${reg.host}/c/img:1`);
  const root = join(dir, "root");
  const layout = join(dir, "layout");

  ok(await strataRun(root, ["copy", `docker://${reg.host}/c/img:1`, `oci:${layout}:v1`]), "registry → oci");
  const viaSkopeo = JSON.parse(await tool("skopeo", ["inspect", `oci:${layout}:v1`]));
  assert.equal(viaSkopeo.Digest, digest);

  ok(await strataRun(root, ["copy", `oci:${layout}:v1`, `${reg.host}/c/copy:1`]), "oci → registry");
  assert.equal(await skopeoDigest(`${reg.host}/c/copy:1`), digest);

  ok(await strataRun(root, ["copy", `${reg.host}/c/img:1`, "strata:c/img:local"]), "registry → store");
  const inspect = JSON.parse(ok(await strataRun(root, ["inspect", "c/img:local"]), "inspect").stdout)[0];
  assert.equal(inspect.Descriptor.digest, digest);

  const ociArchive = join(dir, "img.oci.tar");
  ok(await strataRun(root, ["copy", "strata:c/img:local", `oci-archive:${ociArchive}:v2`]), "store → oci-archive");
  assert.equal(JSON.parse(await tool("skopeo", ["inspect", `oci-archive:${ociArchive}:v2`])).Digest, digest);

  ok(await strataRun(root, ["copy", `docker-archive:${archive}`, `${reg.host}/c/fromarchive:1`]), "docker-archive → registry");
  const fromArchive = JSON.parse(await tool("skopeo", ["inspect", "--tls-verify=false", `docker://${reg.host}/c/fromarchive:1`]));
  assert.equal(fromArchive.Layers.length, 2);

  const dockerArchive = join(dir, "out.docker.tar");
  ok(await strataRun(root, ["copy", `${reg.host}/c/img:1`, `docker-archive:${dockerArchive}:c/img:saved`]), "registry → docker-archive");
  const loaded = JSON.parse(await tool("skopeo", ["inspect", `docker-archive:${dockerArchive}:c/img:saved`]));
  assert.equal(loaded.Layers.length, 2);

  const bad = await strataRun(root, ["copy", `oci:${layout}:nope`, `oci:${join(dir, "x")}`]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^Error: oci:.*nope: no such image in the layout/);
  await storeIsSound(root, 1);
});

test("--platform picks an image from a multi-platform index (default: the host's)", async (t) => {
  const dir = tempDir(t);
  const reg = await startRegistry(t, join(dir, "reg"));
  const layout = join(dir, "multi");
  const { index } = await multiPlatformLayout(layout, "multi");
  await tool("skopeo", ["copy", "-q", "--all", "--dest-tls-verify=false", `oci:${layout}:multi`, `docker://${reg.host}/m/multi:1`]);

  const root = join(dir, "root");
  const arm = ok(await strataRun(root, ["pull", "--platform", "linux/arm64", `${reg.host}/m/multi:1`]), "pull arm64");
  assert.match(arm.stdout, new RegExp(`Digest: ${index.digest}`), "the digest shown is the index's, as Docker shows it");
  assert.equal(JSON.parse(ok(await strataRun(root, ["inspect", `${reg.host}/m/multi:1`]), "inspect").stdout)[0].Architecture, "arm64");
  assert.equal(ok(await strataRun(root, ["fs", "cat", `${reg.host}/m/multi:1`, "/arch"]), "fs cat").stdout, "arm64\n");
  ok(await strataRun(root, ["pull", `${reg.host}/m/multi:1`]), "pull for the host");
  const { hostPlatform } = await import("../src/oci/index.ts");
  assert.equal(JSON.parse(ok(await strataRun(root, ["inspect", `${reg.host}/m/multi:1`]), "inspect").stdout)[0].Architecture, hostPlatform().architecture);
  const none = await strataRun(root, ["pull", "--platform", "linux/s390x", `${reg.host}/m/multi:1`]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no image for platform linux\/s390x \(the index has linux\/amd64, linux\/arm64\)/);
  await storeIsSound(root, 2);
});
