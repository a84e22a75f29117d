// strata registry serve with real clients as judges: skopeo and podman push and pull through it
// (with and without auth) and the digests that go in come back out; auth, TLS, config file,
// metrics, online GC, crash mid-upload and graceful shutdown.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import { join } from "node:path";
import { have, makeDockerArchive, makeTar, sha256, tempDir } from "./helpers.ts";
import { http, startDistribution, startS3, startStrataRegistry, type RunningRegistry } from "./registry-helpers.ts";
import { hashPassword } from "../src/registry/server/auth.ts";
import { Registry } from "../src/registry/server/index.ts";
import { FilesystemStorage } from "../src/registry/server/storage.ts";
import { collectGarbage } from "../src/registry/server/gc.ts";

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

function run(cmd: string, args: string[], opts: { input?: string } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input: opts.input, maxBuffer: 64 << 20 });
  return { code: r.status ?? 128, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function ok(r: { code: number; stderr: string }, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
}

/** A docker-archive of a small two-layer image. */
async function archive(dir: string, tag = "test/img:1"): Promise<string> {
  const l1 = await makeTar([{ name: "etc/", type: "directory" }, { name: "etc/hello", content: "hello " + randomBytes(8).toString("hex") }]);
  const l2 = await makeTar([{ name: "data.bin", content: randomBytes(300 * 1024) }]);
  const p = join(dir, `img-${randomBytes(4).toString("hex")}.tar`);
  writeFileSync(p, await makeDockerArchive([{ layers: [l1, l2], tags: [tag] }]));
  return p;
}

/** skopeo copy, returning the manifest digest it wrote. */
function skopeoCopy(dir: string, src: string, dst: string, extra: string[] = []): string {
  const digestFile = join(dir, `digest-${randomBytes(4).toString("hex")}`);
  const r = run("skopeo", ["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", "--digestfile", digestFile, ...extra, src, dst]);
  ok(r, `skopeo copy ${src} ${dst}`);
  return readFileSync(digestFile, "utf8").trim();
}

/** Every blob an OCI layout holds, verified against its name. */
function verifyLayout(dir: string): string[] {
  const out: string[] = [];
  for (const hex of readdirSync(join(dir, "blobs", "sha256"))) {
    assert.equal(sha256(readFileSync(join(dir, "blobs", "sha256", hex))), `sha256:${hex}`);
    out.push(`sha256:${hex}`);
  }
  return out.sort();
}

const peers = have("skopeo");

test("skopeo pushes to and pulls from strata's registry: the digests that go in come back out", { skip: !peers && "skopeo missing" }, async (t) => {
  const dir = tempDir(t);
  const reg = await startStrataRegistry(t);
  const src = await archive(dir);
  const pushed = skopeoCopy(dir, `docker-archive:${src}`, `docker://${reg.host}/test/img:1`);
  // The registry names the same digest, and serves exactly that manifest.
  const head = await http(reg.url, "HEAD", "/v2/test/img/manifests/1", { headers: { Accept: "application/vnd.docker.distribution.manifest.v2+json" } });
  assert.equal(head.headers.get("docker-content-digest"), pushed);
  const raw = run("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/test/img:1`]);
  ok(raw, "skopeo inspect");
  assert.equal(sha256(raw.stdout), pushed);
  // Pull into a dir: layout (kept as pushed): every blob verifies, and the manifest is the pushed one.
  const out = join(dir, "out");
  assert.equal(skopeoCopy(dir, `docker://${reg.host}/test/img:1`, `dir:${out}`), pushed);
  assert.equal(sha256(readFileSync(join(out, "manifest.json"))), pushed);
  const manifest = JSON.parse(raw.stdout) as { config: { digest: string }; layers: { digest: string }[] };
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) assert.equal(sha256(readFileSync(join(out, d.slice(7)))), d);
  // Into an OCI layout (skopeo converts to an OCI manifest): every blob verifies.
  skopeoCopy(dir, `docker://${reg.host}/test/img:1`, `oci:${join(dir, "oci")}:1`);
  const blobs = verifyLayout(join(dir, "oci"));
  for (const d of manifest.layers.map((l) => l.digest)) assert.ok(blobs.includes(d), `${d} pulled`);
  // Registry to registry (ours → ours, another repository: blobs are mounted), digest preserved.
  assert.equal(skopeoCopy(dir, `docker://${reg.host}/test/img:1`, `docker://${reg.host}/other/img:copy`), pushed);
  // By digest.
  assert.equal(skopeoCopy(dir, `docker://${reg.host}/test/img@${pushed}`, `dir:${join(dir, "bydigest")}`), pushed);
  // Tags.
  const tags = run("skopeo", ["list-tags", "--tls-verify=false", `docker://${reg.host}/test/img`]);
  ok(tags, "skopeo list-tags");
  assert.deepEqual(JSON.parse(tags.stdout).Tags, ["1"]);
});

test("an image copied from docker-registry to strata and back keeps its digest", { skip: !(peers && have("docker-registry")) && "skopeo or docker-registry missing" }, async (t) => {
  const dir = tempDir(t);
  const [ours, theirs] = await Promise.all([startStrataRegistry(t), startDistribution(t)]);
  const src = await archive(dir);
  const d0 = skopeoCopy(dir, `docker-archive:${src}`, `docker://${theirs.host}/x/img:1`);
  const d1 = skopeoCopy(dir, `docker://${theirs.host}/x/img:1`, `docker://${ours.host}/x/img:1`);
  const d2 = skopeoCopy(dir, `docker://${ours.host}/x/img:1`, `docker://${theirs.host}/x/back:1`);
  assert.equal(d1, d0);
  assert.equal(d2, d0);
  // A multi-platform style index too: skopeo --all with an OCI index built from the same image.
  const layout = join(dir, "layout");
  skopeoCopy(dir, `docker://${ours.host}/x/img:1`, `oci:${layout}:1`, ["--format", "oci"]);
  const ociDigest = skopeoCopy(dir, `oci:${layout}:1`, `docker://${ours.host}/x/oci:1`);
  assert.equal(skopeoCopy(dir, `docker://${ours.host}/x/oci:1`, `docker://${theirs.host}/x/oci:1`), ociDigest);
});

test("podman pushes to and pulls from strata's registry", { skip: !have("podman") && "podman missing" }, async (t) => {
  const dir = tempDir(t);
  const reg = await startStrataRegistry(t);
  const src = await archive(dir, "localhost/podtest:1");
  const podman = (...args: string[]) => run("podman", ["--root", join(dir, "proot"), "--runroot", join(dir, "prun"), "--storage-driver", "vfs", ...args]);
  t.after(() => void podman("system", "reset", "--force"));
  ok(podman("load", "-i", src), "podman load");
  const digestFile = join(dir, "pushed");
  ok(podman("push", "--tls-verify=false", "--digestfile", digestFile, "localhost/podtest:1", `${reg.host}/pod/test:1`), "podman push");
  const pushed = readFileSync(digestFile, "utf8").trim();
  const head = await http(reg.url, "HEAD", "/v2/pod/test/manifests/1", { headers: { Accept: OCI_MANIFEST } });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("docker-content-digest"), pushed);
  ok(podman("rmi", "-a", "-f"), "podman rmi");
  ok(podman("pull", "--tls-verify=false", `${reg.host}/pod/test:1`), "podman pull");
  const ids = podman("images", "--digests", "--format", "{{.Digest}}");
  ok(ids, "podman images");
  assert.ok(ids.stdout.includes(pushed), `${pushed} in ${ids.stdout}`);
  // With auth (bearer tokens): credentials push and pull, wrong ones are refused.
  const secured = await authRegistry(t, ["--token-auth"]);
  assert.notEqual(podman("push", "--tls-verify=false", "--creds", "alice:nope", `${reg.host}/pod/test:1`, `${secured.host}/pod/test:1`).code, 0);
  const authDigest = join(dir, "pushed-auth");
  ok(podman("push", "--tls-verify=false", "--creds", "alice:wonderland", "--digestfile", authDigest, `${reg.host}/pod/test:1`, `${secured.host}/pod/test:1`), "podman push with creds");
  assert.equal(readFileSync(authDigest, "utf8").trim(), pushed);
  ok(podman("rmi", "-a", "-f"), "podman rmi");
  assert.notEqual(podman("pull", "--tls-verify=false", `${secured.host}/pod/test:1`).code, 0, "anonymous pull of a private repository");
  ok(podman("pull", "--tls-verify=false", "--creds", "alice:wonderland", `${secured.host}/pod/test:1`), "podman pull with creds");
  assert.ok(podman("images", "--digests", "--format", "{{.Digest}}").stdout.includes(pushed));
});

async function authRegistry(t: Parameters<typeof tempDir>[0], args: string[]): Promise<RunningRegistry> {
  const dir = tempDir(t);
  const htpasswd = join(dir, "htpasswd");
  writeFileSync(htpasswd, `alice:${hashPassword("wonderland", 4)}\nbob:${hashPassword("builder", 4)}\n# a comment\n`);
  const config = join(dir, "config.json");
  writeFileSync(
    config,
    JSON.stringify({
      auth: {
        htpasswd: "htpasswd",
        anonymousPull: ["public/"],
        access: [
          { user: "alice", repository: "", actions: ["pull", "push", "delete"] },
          { user: "bob", repository: "bob", actions: ["pull", "push"] },
          { user: "*", repository: "shared/", actions: ["pull"] },
        ],
      },
    }),
  );
  return startStrataRegistry(t, ["--config", config, ...args]);
}

for (const mode of ["basic", "token"] as const) {
  test(`auth (${mode}): skopeo with credentials pushes and pulls; bad or missing credentials and scopes are refused`, { skip: !peers && "skopeo missing" }, async (t) => {
    const dir = tempDir(t);
    const reg = await authRegistry(t, mode === "token" ? ["--token-auth"] : []);
    const src = await archive(dir);
    const pushed = skopeoCopy(dir, `docker-archive:${src}`, `docker://${reg.host}/private/img:1`, ["--dest-creds", "alice:wonderland"]);
    assert.equal(skopeoCopy(dir, `docker://${reg.host}/private/img:1`, `dir:${join(dir, "o1")}`, ["--src-creds", "alice:wonderland"]), pushed);
    // Anonymous: private is refused, with the right challenge; the public prefix can be pulled.
    const anon = await http(reg.url, "GET", "/v2/private/img/manifests/1");
    assert.equal(anon.status, 401);
    assert.equal(anon.json().errors[0].code, "UNAUTHORIZED");
    assert.match(anon.headers.get("www-authenticate") ?? "", mode === "token" ? /^Bearer realm="http:\/\/[^"]+\/token",service="[^"]+",scope="repository:private\/img:pull"/ : /^Basic realm=/);
    const noCreds = run("skopeo", ["copy", "--src-tls-verify=false", `docker://${reg.host}/private/img:1`, `oci:${join(dir, "o2")}:1`]);
    assert.notEqual(noCreds.code, 0);
    const bad = run("skopeo", ["copy", "--src-tls-verify=false", "--src-creds", "alice:wrong", `docker://${reg.host}/private/img:1`, `oci:${join(dir, "o3")}:1`]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /401|unauthorized|invalid username/i);
    assert.ok(!existsSync(join(dir, "o3", "index.json")) || !readFileSync(join(dir, "o3", "index.json"), "utf8").includes(pushed));
    // bob may push only under bob/; his push elsewhere is refused and leaves nothing.
    const denied = run("skopeo", ["copy", "--dest-tls-verify=false", "--dest-creds", "bob:builder", `docker-archive:${src}`, `docker://${reg.host}/private/bob:1`]);
    assert.notEqual(denied.code, 0);
    assert.equal((await http(reg.url, "GET", "/v2/private/bob/tags/list", { headers: { Authorization: "Basic " + Buffer.from("alice:wonderland").toString("base64") } })).status, 404);
    assert.equal(skopeoCopy(dir, `docker-archive:${src}`, `docker://${reg.host}/bob/img:1`, ["--dest-creds", "bob:builder"]), pushed);
    // Public prefix: alice pushes, anyone pulls, nobody anonymous pushes.
    skopeoCopy(dir, `docker://${reg.host}/private/img:1`, `docker://${reg.host}/public/img:1`, ["--src-creds", "alice:wonderland", "--dest-creds", "alice:wonderland"]);
    assert.equal(skopeoCopy(dir, `docker://${reg.host}/public/img:1`, `dir:${join(dir, "o4")}`), pushed);
    const anonPush = run("skopeo", ["copy", "--dest-tls-verify=false", `docker-archive:${src}`, `docker://${reg.host}/public/mine:1`]);
    assert.notEqual(anonPush.code, 0);
    // The catalog lists what the caller may pull.
    const catalogAs = async (who: string) => {
      let headers: Record<string, string> = { Authorization: "Basic " + Buffer.from(who).toString("base64") };
      if (mode === "token") {
        const tok = await http(reg.url, "GET", `/token?service=strata-registry&scope=registry:catalog:*`, { headers });
        headers = { Authorization: `Bearer ${tok.json().token}` };
      }
      const r = await http(reg.url, "GET", "/v2/_catalog", { headers });
      assert.equal(r.status, 200, r.body.toString());
      return r.json().repositories as string[];
    };
    assert.deepEqual(await catalogAs("alice:wonderland"), ["bob/img", "private/img", "public/img"]);
    assert.deepEqual(await catalogAs("bob:builder"), ["bob/img", "public/img"]);
    // Delete needs the delete action: bob has none.
    const asBob = { Authorization: "Basic " + Buffer.from("bob:builder").toString("base64") };
    const del = await http(reg.url, "DELETE", `/v2/bob/img/manifests/${pushed}`, { headers: asBob });
    assert.equal(del.status, mode === "basic" ? 403 : 403);
    assert.equal(del.json().errors[0].code, "DENIED");
  });
}

test("auth (token): /token grants only the scopes the user holds; tokens are checked per repository and action", async (t) => {
  const reg = await authRegistry(t, ["--token-auth"]);
  const basic = (u: string) => ({ Authorization: "Basic " + Buffer.from(u).toString("base64") });
  const token = async (scope: string, user?: string) => {
    const r = await http(reg.url, "GET", `/token?service=strata-registry&scope=${encodeURIComponent(scope)}`, { headers: user ? basic(user) : {} });
    assert.equal(r.status, 200, r.body.toString());
    return r.json().token as string;
  };
  const bearer = (tok: string) => ({ Authorization: `Bearer ${tok}` });
  const bobPush = await token("repository:bob/x:pull,push,delete", "bob:builder");
  const claims = JSON.parse(Buffer.from(bobPush.split(".")[1], "base64url").toString());
  assert.deepEqual(claims.access, [{ type: "repository", name: "bob/x", actions: ["pull", "push"] }]);
  const up = await http(reg.url, "POST", "/v2/bob/x/blobs/uploads/", { headers: bearer(bobPush) });
  assert.equal(up.status, 202);
  // The same token says nothing about another repository.
  const other = await http(reg.url, "POST", "/v2/alice/x/blobs/uploads/", { headers: bearer(bobPush) });
  assert.equal(other.status, 401);
  assert.match(other.headers.get("www-authenticate") ?? "", /error="insufficient_scope"/);
  // Wrong password: no token at all.
  const badTok = await http(reg.url, "GET", `/token?service=strata-registry&scope=repository:bob/x:pull`, { headers: basic("bob:nope") });
  assert.equal(badTok.status, 401);
  // A forged token (signature changed) and an anonymous token for a private repository.
  const forged = bobPush.slice(0, -4) + (bobPush.endsWith("AAAA") ? "BBBB" : "AAAA");
  assert.equal((await http(reg.url, "GET", "/v2/bob/x/tags/list", { headers: bearer(forged) })).status, 401);
  const anonTok = await token("repository:private/img:pull");
  assert.equal(JSON.parse(Buffer.from(anonTok.split(".")[1], "base64url").toString()).access[0].actions.length, 0);
  assert.equal((await http(reg.url, "GET", "/v2/private/img/tags/list", { headers: bearer(anonTok) })).status, 401);
  const pubTok = await token("repository:public/img:pull,push");
  assert.deepEqual(JSON.parse(Buffer.from(pubTok.split(".")[1], "base64url").toString()).access[0].actions, ["pull"]);
});

test("TLS: the registry serves HTTPS with the given certificate", { skip: !(peers && have("openssl")) && "skopeo or openssl missing" }, async (t) => {
  const dir = tempDir(t);
  ok(run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")]), "openssl");
  const reg = await startStrataRegistry(t, ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")]);
  assert.match(reg.url, /^https:/);
  const certDir = join(dir, "certs");
  ok(run("mkdir", ["-p", certDir]), "mkdir");
  writeFileSync(join(certDir, "ca.crt"), readFileSync(join(dir, "cert.pem")));
  const src = await archive(dir);
  // Verified TLS: skopeo trusts the certificate through --dest-cert-dir.
  const d = run("skopeo", ["copy", "--quiet", "--dest-cert-dir", certDir, `docker-archive:${src}`, `docker://${reg.host}/tls/img:1`]);
  ok(d, "skopeo copy over TLS");
  const raw = run("skopeo", ["inspect", "--raw", "--cert-dir", certDir, `docker://${reg.host}/tls/img:1`]);
  ok(raw, "skopeo inspect over TLS");
});

test("metrics and access logs: Prometheus text at /metrics, one JSON line per request", async (t) => {
  const reg = await startStrataRegistry(t);
  const b = randomBytes(100);
  assert.equal((await http(reg.url, "POST", `/v2/m/x/blobs/uploads/?digest=${sha256(b)}`, { body: b })).status, 201);
  assert.equal((await http(reg.url, "GET", `/v2/m/x/blobs/${sha256(b)}`)).status, 200);
  assert.equal((await http(reg.url, "GET", `/v2/m/x/manifests/nope`)).status, 404);
  const m = await http(reg.url, "GET", "/metrics");
  assert.equal(m.status, 200);
  assert.match(m.headers.get("content-type") ?? "", /^text\/plain/);
  const text = m.body.toString();
  assert.match(text, /^# TYPE strata_registry_http_requests_total counter$/m);
  assert.match(text, /^strata_registry_http_requests_total\{method="GET",route="blob",status="200"\} 1$/m);
  assert.match(text, /^strata_registry_http_requests_total\{method="GET",route="manifest",status="404"\} 1$/m);
  assert.match(text, /^strata_registry_blob_bytes_sent_total 100$/m);
  assert.match(text, /^strata_registry_http_request_duration_seconds_bucket\{route="blob",le="\+Inf"\} 1$/m);
  const lines = reg.logs().split("\n").filter((l) => l.startsWith("{"));
  const entries = lines.map((l) => JSON.parse(l) as { method?: string; path?: string; status?: number; ms?: number });
  const get = entries.find((e) => e.method === "GET" && e.path === `/v2/m/x/blobs/${sha256(b)}`);
  assert.ok(get, `access log line for the blob GET in:\n${lines.join("\n")}`);
  assert.equal(get.status, 200);
  assert.equal(typeof get.ms, "number");
});

test("a crash mid-upload leaves no visible blob; a restarted registry takes the push", async (t) => {
  const root = tempDir(t);
  const storage = join(root, "registry");
  const reg = await startStrataRegistry(t, [], { root, storage });
  const blob = randomBytes(4 << 20);
  const d = sha256(blob);
  // A monolithic POST whose body stops halfway; the registry is killed meanwhile.
  const u = new URL(`${reg.url}/v2/crash/x/blobs/uploads/?digest=${d}`);
  const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: "POST", headers: { "Content-Length": blob.length } });
  req.on("error", () => undefined);
  req.write(blob.subarray(0, blob.length / 2));
  await new Promise((r) => setTimeout(r, 300));
  reg.proc.kill("SIGKILL");
  await new Promise((r) => reg.proc.once("exit", r));
  req.destroy();
  assert.ok(!existsSync(join(storage, "blobs", "sha256", d.slice(7))), "the partial blob is not visible");
  const again = await startStrataRegistry(t, [], { root, storage });
  assert.equal((await http(again.url, "HEAD", `/v2/crash/x/blobs/${d}`)).status, 404);
  assert.equal((await http(again.url, "POST", `/v2/crash/x/blobs/uploads/?digest=${d}`, { body: blob })).status, 201);
  assert.ok((await http(again.url, "GET", `/v2/crash/x/blobs/${d}`)).body.equals(blob));
});

test("graceful shutdown: an upload in flight at SIGTERM finishes, then the registry exits", async (t) => {
  const reg = await startStrataRegistry(t);
  const blob = randomBytes(2 << 20);
  const d = sha256(blob);
  const u = new URL(`${reg.url}/v2/shutdown/x/blobs/uploads/?digest=${d}`);
  const status = new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: "POST", headers: { "Content-Length": blob.length } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.write(blob.subarray(0, 1 << 20));
    setTimeout(() => {
      reg.proc.kill("SIGTERM");
      setTimeout(() => req.end(blob.subarray(1 << 20)), 300);
    }, 200);
  });
  assert.equal(await status, 201);
  const code = await new Promise<number | null>((r) => (reg.proc.exitCode !== null ? r(reg.proc.exitCode) : reg.proc.once("exit", (c) => r(c))));
  assert.equal(code, 0);
  assert.equal(sha256(readFileSync(join(reg.storage, "blobs", "sha256", d.slice(7)))), d);
});

test("strata registry: bad flags and config are one clear error line", async (t) => {
  const dir = tempDir(t);
  const cli = (...args: string[]) => run(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.cjs"), "--root", dir, "registry", ...args]);
  const cases: [string[], RegExp][] = [
    [[], /needs a subcommand: serve or gc/],
    [["serve", "--listen", "nope"], /invalid listen address "nope"/],
    [["serve", "--tls-cert", "x.pem"], /--tls-cert and --tls-key go together/],
    [["serve", "--config", join(dir, "missing.json")], /registry config .*missing\.json/],
    [["serve", "--log-level", "loud"], /invalid --log-level "loud"/],
    [["gc", "--grace", "soon"], /invalid --grace "soon"/],
  ];
  writeFileSync(join(dir, "bad.json"), "{ nope");
  cases.push([["serve", "--config", join(dir, "bad.json")], /not valid JSON/]);
  for (const [args, re] of cases) {
    const r = cli(...args);
    assert.notEqual(r.code, 0, args.join(" "));
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${r.stderr}`);
    assert.match(lines[0], re);
  }
});

// ---- garbage collection -------------------------------------------------------

async function inProcess(t: Parameters<typeof tempDir>[0], wrap?: (s: FilesystemStorage) => FilesystemStorage) {
  const dir = tempDir(t);
  let storage = new FilesystemStorage(join(dir, "registry"));
  await storage.init();
  if (wrap) storage = wrap(storage);
  const registry = new Registry({ storage });
  const server = createServer({ keepAlive: true }, registry.handle);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  t.after(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { registry, url, storage, dir };
}

async function pushImage(url: string, name: string, ref: string, layers: Buffer[], cfgText = "{}") {
  const cfg = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, author: cfgText }));
  for (const b of [cfg, ...layers]) assert.equal((await http(url, "POST", `/v2/${name}/blobs/uploads/?digest=${sha256(b)}`, { body: b })).status, 201);
  const m = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(cfg), size: cfg.length }, layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(l), size: l.length })) }),
  );
  const r = await http(url, "PUT", `/v2/${name}/manifests/${ref}`, { body: m, headers: { "Content-Type": OCI_MANIFEST } });
  assert.equal(r.status, 201, r.body.toString());
  return { manifest: sha256(m), config: sha256(cfg) };
}

test("online GC removes untagged manifests and unreferenced blobs and keeps everything tagged", async (t) => {
  const reg = await startStrataRegistry(t);
  const shared = randomBytes(1000);
  const onlyB = randomBytes(1000);
  const orphan = randomBytes(1000);
  const a = await pushImage(reg.url, "gc/a", "keep", [shared], "a");
  const b = await pushImage(reg.url, "gc/b", "drop", [shared, onlyB], "b");
  assert.equal((await http(reg.url, "POST", `/v2/gc/b/blobs/uploads/?digest=${sha256(orphan)}`, { body: orphan })).status, 201);
  assert.equal((await http(reg.url, "DELETE", "/v2/gc/b/manifests/drop")).status, 202);
  const dry = run(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.cjs"), "registry", "gc", "--url", reg.url, "--grace", "0", "--dry-run"]);
  ok(dry, "gc --dry-run");
  assert.match(dry.stdout, new RegExp(`Would delete manifest: gc/b@${b.manifest}`));
  assert.equal((await http(reg.url, "GET", `/v2/gc/b/manifests/${b.manifest}`)).status, 200, "dry run removed nothing");
  // Offline (straight on the storage directory), the same verdict.
  const offline = run(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.cjs"), "registry", "gc", "--storage-path", reg.storage, "--grace", "0", "--dry-run"]);
  ok(offline, "offline gc --dry-run");
  assert.deepEqual(offline.stdout.split("\n").sort(), dry.stdout.split("\n").sort());
  const r = run(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.cjs"), "registry", "gc", "--url", reg.url, "--grace", "0"]);
  ok(r, "gc");
  for (const d of [b.manifest, sha256(onlyB), sha256(orphan), b.config]) assert.match(r.stdout, new RegExp(d), `${d} collected`);
  assert.doesNotMatch(r.stdout, new RegExp(sha256(shared)));
  assert.equal((await http(reg.url, "GET", `/v2/gc/b/manifests/${b.manifest}`)).status, 404);
  assert.equal((await http(reg.url, "GET", `/v2/gc/b/blobs/${sha256(onlyB)}`)).status, 404);
  assert.ok(!existsSync(join(reg.storage, "blobs", "sha256", sha256(orphan).slice(7))));
  // Everything tagged is whole.
  const m = await http(reg.url, "GET", "/v2/gc/a/manifests/keep");
  assert.equal(sha256(m.body), a.manifest);
  assert.ok((await http(reg.url, "GET", `/v2/gc/a/blobs/${sha256(shared)}`)).body.equals(shared));
  assert.equal((await http(reg.url, "GET", `/v2/gc/a/blobs/${a.config}`)).status, 200);
  // Within the grace period nothing young is touched.
  await pushImage(reg.url, "gc/c", "tmp", [randomBytes(100)], "c");
  assert.equal((await http(reg.url, "DELETE", "/v2/gc/c/manifests/tmp")).status, 202);
  const young = run(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.cjs"), "registry", "gc", "--url", reg.url]);
  ok(young, "gc with grace");
  assert.doesNotMatch(young.stdout, /Deleted/);
});

test("online GC: a blob and manifest pushed while GC runs survive it", async (t) => {
  // Failure injection: the sweep's walk pauses, and a push happens in that window.
  let pause: (() => Promise<void>) | undefined;
  const { registry, url } = await inProcess(t, (s) => {
    const walk = s.walkBlobs.bind(s);
    s.walkBlobs = async (fn) => {
      await pause?.();
      return walk(fn);
    };
    return s;
  });
  const old = randomBytes(500);
  // The blob was uploaded before GC and is unreferenced when the mark phase runs.
  assert.equal((await http(url, "POST", `/v2/race/x/blobs/uploads/?digest=${sha256(old)}`, { body: old })).status, 201);
  let pushed: { manifest: string; config: string } | undefined;
  const fresh = randomBytes(700);
  pause = async () => {
    pause = undefined;
    // During GC: a new blob, and a manifest that references the old unreferenced one.
    pushed = await pushImage(url, "race/x", "new", [old, fresh], "during-gc");
  };
  const report = await collectGarbage(registry, { graceMs: 0 });
  assert.ok(pushed);
  assert.deepEqual(report.blobs.map((b) => b.digest).filter((d) => [sha256(old), sha256(fresh), pushed!.config, pushed!.manifest].includes(d)), []);
  for (const d of [sha256(old), sha256(fresh)]) assert.equal((await http(url, "GET", `/v2/race/x/blobs/${d}`)).status, 200, d);
  assert.equal((await http(url, "GET", `/v2/race/x/manifests/new`)).status, 200);
  // And a later collection still keeps them (they are tagged now).
  const again = await collectGarbage(registry, { graceMs: 0 });
  assert.deepEqual(again.blobs, []);
});

test("two registries on one storage directory serve each other's pushes", { skip: !peers && "skopeo missing" }, async (t) => {
  const dir = tempDir(t);
  const root = tempDir(t);
  const storage = join(root, "shared");
  const [r1, r2] = await Promise.all([startStrataRegistry(t, [], { storage }), startStrataRegistry(t, [], { storage })]);
  const src = await archive(dir);
  const d = skopeoCopy(dir, `docker-archive:${src}`, `docker://${r1.host}/two/img:1`);
  assert.equal(skopeoCopy(dir, `docker://${r2.host}/two/img:1`, `dir:${join(dir, "o")}`), d);
});

test("S3 storage: two registry processes sharing one bucket serve each other's pushes", { skip: !peers && "skopeo missing" }, async (t) => {
  const dir = tempDir(t);
  const s3 = await startS3(t);
  const config = s3.config("shared");
  const [r1, r2] = await Promise.all([startStrataRegistry(t, ["--config", config]), startStrataRegistry(t, ["--config", config])]);
  const src = await archive(dir);
  const d = skopeoCopy(dir, `docker-archive:${src}`, `docker://${r1.host}/s3/img:1`);
  assert.equal(skopeoCopy(dir, `docker://${r2.host}/s3/img:1`, `dir:${join(dir, "o")}`), d);
  assert.equal(sha256(readFileSync(join(dir, "o", "manifest.json"))), d);
  // A push through the second lands a second tag the first serves.
  assert.equal(skopeoCopy(dir, `docker://${r1.host}/s3/img:1`, `docker://${r2.host}/s3/copy:2`), d);
  const head = await http(r1.url, "HEAD", "/v2/s3/copy/manifests/2", { headers: { Accept: "application/vnd.docker.distribution.manifest.v2+json" } });
  assert.equal(head.headers.get("docker-content-digest"), d);
  // Online GC through one process sees the other's content as tagged.
  const gc = run(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.cjs"), "registry", "gc", "--url", r2.url, "--grace", "0"]);
  ok(gc, "gc");
  assert.doesNotMatch(gc.stdout, /Deleted/);
  assert.equal(skopeoCopy(dir, `docker://${r1.host}/s3/img:1`, `dir:${join(dir, "o2")}`), d);
});
