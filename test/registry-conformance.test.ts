// The OCI distribution-spec conformance workflows (pull, push, content discovery, content
// management) plus the bad input the spec names, as one suite run against our registry and,
// as a check of the suite itself, against Debian's docker-registry (distribution 2.8).
// Where distribution 2.8 legitimately differs (it predates spec v1.1: no referrers API, no
// OCI-Subject header, no automatic mount, ...) the expectation says so with `spec11(ours, theirs)`.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { request as httpRequest } from "node:http";
import { sha256, have } from "./helpers.ts";
import { http, startDistribution, startS3, startStrataRegistry, type RunningRegistry, type Res } from "./registry-helpers.ts";

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY = "application/vnd.oci.empty.v1+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const desc = (mediaType: string, b: Buffer) => ({ mediaType, digest: sha256(b), size: b.length });
const config = (n: number) => Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, author: `conformance ${n}` }));
function imageManifest(cfg: Buffer, layers: Buffer[], extra: Record<string, unknown> = {}, mediaType = OCI_MANIFEST, cfgType = OCI_CONFIG, layerType = OCI_LAYER): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: desc(cfgType, cfg), layers: layers.map((l) => desc(layerType, l)), ...extra }));
}

/** A request with the path sent exactly as written (no URL normalisation); returns the status. */
function rawRequest(base: string, method: string, path: string): Promise<number> {
  return rawResponse(base, method, path).then((r) => r.status);
}

function rawResponse(base: string, method: string, path: string): Promise<{ status: number; body: Buffer }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const r = httpRequest({ host: u.hostname, port: u.port, method, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    r.on("error", reject);
    r.end();
  });
}

function errorCodes(r: Res | { body: Buffer }): string[] {
  const body = JSON.parse(r.body.toString("utf8")) as { errors?: { code: string }[] };
  assert.ok(Array.isArray(body.errors), `an error body: ${r.body.toString().slice(0, 200)}`);
  return body.errors!.map((e) => e.code);
}

/** distribution 2.8 (Go's router) answers a path with dot segments by a 301 to the cleaned path. */
const REFUSED_28 = [301, 400, 404];

function expectError(r: Res | { status: number; body: Buffer }, status: number, code: string, what = ""): void {
  assert.equal(r.status, status, `${what} status (body ${r.body.toString().slice(0, 200)})`);
  assert.ok(errorCodes(r as Res).includes(code), `${what} error code ${code} in ${r.body.toString().slice(0, 200)}`);
}

// strata on its filesystem storage and on S3 (s3rver from npm), and docker-registry as the check of the suite.
const targets: ("strata" | "strata-s3" | "distribution")[] = ["strata", "strata-s3", ...(have("docker-registry") ? (["distribution"] as const) : [])];

for (const target of targets) {
  describe(`distribution-spec conformance: ${target}`, () => {
    let reg: RunningRegistry;
    const ours = target !== "distribution";
    /** The expectation under spec v1.1 (ours) and distribution 2.8's legitimate behaviour. */
    const spec11 = <V>(v11: V, v28: V): V => (ours ? v11 : v28);
    const repo = "conformance/test";
    const crossRepo = "conformance/cross";
    const req = (method: string, path: string, opts?: Parameters<typeof http>[3]) => http(reg.url, method, path, opts);
    /** Monolithic push; a registry may answer 202 (no single-POST upload) and take the blob by PUT. */
    const putBlob = async (name: string, b: Buffer) => {
      let r = await req("POST", `/v2/${name}/blobs/uploads/?digest=${sha256(b)}`, { body: b, headers: { "Content-Type": "application/octet-stream" } });
      if (r.status === 202) {
        const u = new URL(r.headers.get("location")!, reg.url);
        u.searchParams.set("digest", sha256(b));
        r = await http(u.href, "PUT", "", { body: b, headers: { "Content-Type": "application/octet-stream" } });
      }
      assert.equal(r.status, 201, `blob push: ${r.body.toString()}`);
    };
    const putManifest = (name: string, ref: string, m: Buffer, type = OCI_MANIFEST) => req("PUT", `/v2/${name}/manifests/${ref}`, { body: m, headers: { "Content-Type": type } });

    const cfg0 = config(0);
    const cfg1 = config(1);
    const layer = randomBytes(64 * 1024 + 17);
    const m0 = imageManifest(cfg0, [layer]);
    const m1 = imageManifest(cfg1, [layer]);
    const tag = "tagtest0";

    const cleanups: (() => void | Promise<void>)[] = [];
    before(async () => {
      const t = { after: (fn: () => void | Promise<void>) => void cleanups.unshift(fn) };
      if (target === "strata-s3") reg = await startStrataRegistry(t, ["--config", (await startS3(t)).config("conformance")]);
      else reg = ours ? await startStrataRegistry(t) : await startDistribution(t);
    });
    after(async () => {
      for (const fn of cleanups) await fn();
    });

    describe("pull", () => {
      test("setup: populate blobs and manifests", async () => {
        await putBlob(repo, cfg0);
        await putBlob(repo, cfg1);
        await putBlob(repo, layer);
        assert.equal((await putManifest(repo, sha256(m0), m0)).status, 201);
        assert.equal((await putManifest(repo, tag, m1)).status, 201);
      });
      test("GET /v2/ answers 200 with the API version header", async () => {
        const r = await req("GET", "/v2/");
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("docker-distribution-api-version"), "registry/2.0");
      });
      test("HEAD of a nonexistent blob is 404", async () => {
        assert.equal((await req("HEAD", `/v2/${repo}/blobs/${sha256("nope")}`)).status, 404);
      });
      test("HEAD of an existing blob is 200 with its size and digest", async () => {
        const r = await req("HEAD", `/v2/${repo}/blobs/${sha256(layer)}`);
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("content-length"), String(layer.length));
        assert.equal(r.headers.get("docker-content-digest"), sha256(layer));
        assert.equal(r.body.length, 0);
      });
      test("GET of a nonexistent blob is 404 BLOB_UNKNOWN", async () => {
        expectError(await req("GET", `/v2/${repo}/blobs/${sha256("nope")}`), 404, "BLOB_UNKNOWN");
      });
      test("GET of an existing blob returns its bytes", async () => {
        const r = await req("GET", `/v2/${repo}/blobs/${sha256(layer)}`);
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(layer));
        assert.equal(r.headers.get("docker-content-digest"), sha256(layer));
      });
      test("GET of a blob with Range returns 206 and that slice", async () => {
        const r = await req("GET", `/v2/${repo}/blobs/${sha256(layer)}`, { headers: { Range: "bytes=100-1099" } });
        assert.equal(r.status, 206);
        assert.ok(r.body.equals(layer.subarray(100, 1100)));
        assert.equal(r.headers.get("content-range"), `bytes 100-1099/${layer.length}`);
      });
      test("GET of a blob with a suffix Range returns the tail", async () => {
        const r = await req("GET", `/v2/${repo}/blobs/${sha256(layer)}`, { headers: { Range: "bytes=-10" } });
        assert.equal(r.status, 206);
        assert.ok(r.body.equals(layer.subarray(layer.length - 10)));
      });
      test("GET of a blob with an unsatisfiable Range is 416 (distribution 2.8 drops the connection)", async () => {
        const path = `/v2/${repo}/blobs/${sha256(layer)}`;
        const range = { Range: `bytes=${layer.length + 10}-${layer.length + 20}` };
        if (ours) assert.equal((await req("GET", path, { headers: range })).status, 416);
        else await assert.rejects(req("GET", path, { headers: range }));
      });
      test("GET of a blob with an inverted Range (500-0) is 416 (distribution 2.8 drops the connection)", async () => {
        const path = `/v2/${repo}/blobs/${sha256(layer)}`;
        if (ours) assert.equal((await req("GET", path, { headers: { Range: "bytes=500-0" } })).status, 416);
        else await assert.rejects(req("GET", path, { headers: { Range: "bytes=500-0" } }));
      });
      test("GET of a blob with a Range past its end returns what there is", async () => {
        const r = await req("GET", `/v2/${repo}/blobs/${sha256(layer)}`, { headers: { Range: `bytes=${layer.length - 100}-${layer.length + 5000}` } });
        assert.equal(r.status, 206);
        assert.ok(r.body.equals(layer.subarray(layer.length - 100)));
      });
      test("GET of a manifest by a malformed digest is refused (400 DIGEST_INVALID; distribution 2.8: 500)", async () => {
        const r = await req("GET", `/v2/${repo}/manifests/sha256:baddigeststring`, { headers: { Accept: OCI_MANIFEST } });
        if (ours) expectError(r, 400, "DIGEST_INVALID");
        else assert.equal(r.status, 500);
      });
      test("HEAD of a nonexistent manifest is 404", async () => {
        assert.equal((await req("HEAD", `/v2/${repo}/manifests/${sha256("nope")}`)).status, 404);
      });
      test("HEAD of manifest[0] by digest is 200", async () => {
        const r = await req("HEAD", `/v2/${repo}/manifests/${sha256(m0)}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("docker-content-digest"), sha256(m0));
        assert.equal(r.headers.get("content-length"), String(m0.length));
      });
      test("HEAD of manifest[1] by digest is 200", async () => {
        const r = await req("HEAD", `/v2/${repo}/manifests/${sha256(m1)}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("docker-content-digest"), sha256(m1));
      });
      test("HEAD of a manifest by tag is 200 with its digest", async () => {
        const r = await req("HEAD", `/v2/${repo}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("docker-content-digest"), sha256(m1));
      });
      test("GET of a nonexistent manifest is 404 MANIFEST_UNKNOWN", async () => {
        expectError(await req("GET", `/v2/${repo}/manifests/${sha256("nope")}`, { headers: { Accept: OCI_MANIFEST } }), 404, "MANIFEST_UNKNOWN");
      });
      test("GET of a nonexistent tag is 404 MANIFEST_UNKNOWN", async () => {
        expectError(await req("GET", `/v2/${repo}/manifests/nosuchtag`, { headers: { Accept: OCI_MANIFEST } }), 404, "MANIFEST_UNKNOWN");
      });
      test("GET of manifest[0] by digest returns its exact bytes and media type", async () => {
        const r = await req("GET", `/v2/${repo}/manifests/${sha256(m0)}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(m0));
        assert.equal(r.headers.get("content-type"), OCI_MANIFEST);
      });
      test("GET of manifest[1] by digest returns its exact bytes", async () => {
        const r = await req("GET", `/v2/${repo}/manifests/${sha256(m1)}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(m1));
      });
      test("GET of a manifest by tag returns the tagged manifest", async () => {
        const r = await req("GET", `/v2/${repo}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(m1));
        assert.equal(r.headers.get("docker-content-digest"), sha256(m1));
      });
      test("a 400 response carries an OCI error body", async () => {
        const r = await putManifest(repo, "bad", Buffer.from("{not json"));
        assert.equal(r.status, 400);
        const body = r.json() as { errors: { code: string; message: string }[] };
        assert.ok(body.errors.length > 0);
        for (const e of body.errors) {
          assert.equal(typeof e.code, "string");
          assert.equal(typeof e.message, "string");
        }
        assert.ok(errorCodes(r).includes("MANIFEST_INVALID"));
      });
      test("a blob is not readable from a repository it was not pushed to", async () => {
        expectError(await req("GET", `/v2/conformance/other/blobs/${sha256(layer)}`), 404, "BLOB_UNKNOWN");
      });
    });

    describe("push", () => {
      const streamed = randomBytes(300 * 1024);
      const mono = randomBytes(1000);
      const chunk1 = randomBytes(70_000);
      const chunk2 = randomBytes(50_000);
      const chunked = Buffer.concat([chunk1, chunk2]);
      let location = "";
      test("POST starts an upload session: 202 with a Location", async () => {
        const r = await req("POST", `/v2/${repo}/blobs/uploads/`);
        assert.equal(r.status, 202);
        location = r.headers.get("location")!;
        assert.ok(location, "Location header");
      });
      test("PATCH with the blob streamed (no Content-Range) is 202", async () => {
        async function* body() {
          for (let i = 0; i < streamed.length; i += 65536) yield streamed.subarray(i, i + 65536);
        }
        const r = await http(new URL(location, reg.url).href, "PATCH", "", { body: body(), headers: { "Content-Type": "application/octet-stream" } });
        assert.equal(r.status, 202);
        location = r.headers.get("location")!;
        assert.equal(r.headers.get("range"), `0-${streamed.length - 1}`);
      });
      test("PUT to the session with the digest is 201 and the blob is readable", async () => {
        const u = new URL(location, reg.url);
        u.searchParams.set("digest", sha256(streamed));
        const r = await http(u.href, "PUT", "");
        assert.equal(r.status, 201);
        assert.equal(r.headers.get("docker-content-digest"), sha256(streamed));
        const g = await req("GET", `/v2/${repo}/blobs/${sha256(streamed)}`);
        assert.ok(g.body.equals(streamed));
      });
      test("GET of a blob not yet pushed is 404", async () => {
        assert.equal((await req("GET", `/v2/${repo}/blobs/${sha256(mono)}`)).status, 404);
      });
      test("POST with digest and blob (monolithic) is 201 (distribution 2.8: 202, the blob goes by PUT)", async () => {
        const r = await req("POST", `/v2/${repo}/blobs/uploads/?digest=${sha256(mono)}`, { body: mono, headers: { "Content-Type": "application/octet-stream" } });
        assert.equal(r.status, spec11(201, 202));
        assert.ok(r.headers.get("location"));
        if (!ours) await putBlob(repo, mono);
      });
      test("GET of the monolithic blob is 200 with its bytes", async () => {
        const r = await req("GET", `/v2/${repo}/blobs/${sha256(mono)}`);
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(mono));
      });
      test("POST then PUT with the whole blob is 201", async () => {
        const b = randomBytes(4096);
        const s = await req("POST", `/v2/${repo}/blobs/uploads/`);
        assert.equal(s.status, 202);
        const u = new URL(s.headers.get("location")!, reg.url);
        u.searchParams.set("digest", sha256(b));
        const r = await http(u.href, "PUT", "", { body: b, headers: { "Content-Type": "application/octet-stream" } });
        assert.equal(r.status, 201);
        assert.ok((await req("GET", `/v2/${repo}/blobs/${sha256(b)}`)).body.equals(b));
      });
      test("an empty blob can be pushed and pulled", async () => {
        const b = Buffer.alloc(0);
        await putBlob(repo, b);
        const r = await req("GET", `/v2/${repo}/blobs/${sha256(b)}`);
        assert.equal(r.status, 200);
        assert.equal(r.body.length, 0);
      });
      let chunkLoc = "";
      test("chunked: an out-of-order first chunk is 416", async () => {
        const s = await req("POST", `/v2/${repo}/blobs/uploads/`);
        assert.equal(s.status, 202);
        chunkLoc = s.headers.get("location")!;
        const r = await http(new URL(chunkLoc, reg.url).href, "PATCH", "", {
          body: chunk2,
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `${chunk1.length}-${chunked.length - 1}` },
        });
        // distribution 2.8 takes the chunk and breaks the session; the rest of the workflow gets a fresh one.
        assert.equal(r.status, spec11(416, 202));
        if (!ours) chunkLoc = (await req("POST", `/v2/${repo}/blobs/uploads/`)).headers.get("location")!;
      });
      test("chunked: the first chunk is 202 with Range 0-(n-1)", async () => {
        const r = await http(new URL(chunkLoc, reg.url).href, "PATCH", "", {
          body: chunk1,
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${chunk1.length - 1}` },
        });
        assert.equal(r.status, 202);
        assert.equal(r.headers.get("range"), `0-${chunk1.length - 1}`);
        chunkLoc = r.headers.get("location")!;
      });
      test("chunked: retrying the previous chunk is 416", async () => {
        const r = await http(new URL(chunkLoc, reg.url).href, "PATCH", "", {
          body: chunk1,
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${chunk1.length - 1}` },
        });
        // distribution 2.8 does not check Content-Range: it appends and breaks the session; redo chunk 1 in a fresh one.
        assert.equal(r.status, spec11(416, 202));
        if (!ours) {
          const s2 = await req("POST", `/v2/${repo}/blobs/uploads/`);
          const p = await http(new URL(s2.headers.get("location")!, reg.url).href, "PATCH", "", {
            body: chunk1,
            headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${chunk1.length - 1}` },
          });
          chunkLoc = p.headers.get("location")!;
        }
      });
      test("chunked: GET of the session is 204 with Range and Location", async () => {
        const r = await http(new URL(chunkLoc, reg.url).href, "GET", "");
        assert.equal(r.status, 204);
        assert.equal(r.headers.get("range"), `0-${chunk1.length - 1}`);
        assert.ok(r.headers.get("location"));
      });
      test("chunked: the second chunk is 202", async () => {
        const r = await http(new URL(chunkLoc, reg.url).href, "PATCH", "", {
          body: chunk2,
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `${chunk1.length}-${chunked.length - 1}` },
        });
        assert.equal(r.status, 202);
        assert.equal(r.headers.get("range"), `0-${chunked.length - 1}`);
        chunkLoc = r.headers.get("location")!;
      });
      test("chunked: PUT with the digest is 201 and the blob is whole", async () => {
        const u = new URL(chunkLoc, reg.url);
        u.searchParams.set("digest", sha256(chunked));
        const r = await http(u.href, "PUT", "");
        assert.equal(r.status, 201);
        assert.ok((await req("GET", `/v2/${repo}/blobs/${sha256(chunked)}`)).body.equals(chunked));
      });
      test("chunked: several PATCH chunks and the last chunk in the PUT", async () => {
        const b = randomBytes(150_000);
        let loc = (await req("POST", `/v2/${repo}/blobs/uploads/`)).headers.get("location")!;
        for (const [s0, e0] of [[0, 49_999], [50_000, 99_999]]) {
          const r = await http(new URL(loc, reg.url).href, "PATCH", "", { body: b.subarray(s0, e0 + 1), headers: { "Content-Type": "application/octet-stream", "Content-Range": `${s0}-${e0}` } });
          assert.equal(r.status, 202);
          loc = r.headers.get("location")!;
        }
        const u = new URL(loc, reg.url);
        u.searchParams.set("digest", sha256(b));
        const r = await http(u.href, "PUT", "", { body: b.subarray(100_000), headers: { "Content-Type": "application/octet-stream", "Content-Range": `100000-${b.length - 1}` } });
        assert.equal(r.status, 201);
        assert.ok((await req("GET", `/v2/${repo}/blobs/${sha256(b)}`)).body.equals(b));
      });
      test("a sha512 blob is pushed and pulled by its sha512 digest (distribution 2.8 answers with the sha256 digest)", async () => {
        const b = randomBytes(2048);
        const d = "sha512:" + createHash("sha512").update(b).digest("hex");
        const s = await req("POST", `/v2/${repo}/blobs/uploads/`);
        const u = new URL(s.headers.get("location")!, reg.url);
        u.searchParams.set("digest", d);
        const r = await http(u.href, "PUT", "", { body: b, headers: { "Content-Type": "application/octet-stream" } });
        assert.equal(r.status, 201, r.body.toString());
        const g = await req("GET", `/v2/${repo}/blobs/${d}`);
        assert.equal(g.status, 200);
        assert.ok(g.body.equals(b));
        if (ours) assert.equal(g.headers.get("docker-content-digest"), d);
        else assert.equal(g.headers.get("docker-content-digest"), sha256(b));
      });
      test("DELETE of an upload session is 204; the session is gone", async () => {
        const s = await req("POST", `/v2/${repo}/blobs/uploads/`);
        const p = await http(new URL(s.headers.get("location")!, reg.url).href, "PATCH", "", { body: randomBytes(10), headers: { "Content-Type": "application/octet-stream" } });
        const loc = new URL(p.headers.get("location")!, reg.url).href;
        const d = await http(loc, "DELETE", "");
        assert.equal(d.status, 204);
        expectError(await http(loc, "GET", ""), 404, "BLOB_UPLOAD_UNKNOWN");
      });
      test("concurrent pushes of the same blob all succeed and the blob is intact", async () => {
        const b = randomBytes(512 * 1024);
        const rs = await Promise.all(
          Array.from({ length: 6 }, async (_, i) => {
            if (i % 2) return req("POST", `/v2/${repo}/blobs/uploads/?digest=${sha256(b)}`, { body: b, headers: { "Content-Type": "application/octet-stream" } });
            const s = await req("POST", `/v2/${repo}/blobs/uploads/`);
            const u = new URL(s.headers.get("location")!, reg.url);
            u.searchParams.set("digest", sha256(b));
            return http(u.href, "PUT", "", { body: b, headers: { "Content-Type": "application/octet-stream" } });
          }),
        );
        for (const r of rs) assert.equal(r.status, ours ? 201 : rs.indexOf(r) % 2 ? 202 : 201);
        assert.ok((await req("GET", `/v2/${repo}/blobs/${sha256(b)}`)).body.equals(b));
      });

      test("mount without from, of a blob the registry lacks, yields a session (202)", async () => {
        const r = await req("POST", `/v2/${crossRepo}/blobs/uploads/?mount=${sha256("absent")}`);
        assert.equal(r.status, 202);
        assert.ok(r.headers.get("location"));
      });
      test("mount from another repository is 201", async () => {
        const r = await req("POST", `/v2/${crossRepo}/blobs/uploads/?mount=${sha256(mono)}&from=${repo}`);
        assert.equal(r.status, 201);
        assert.equal(r.headers.get("docker-content-digest"), sha256(mono));
        assert.ok(r.headers.get("location"));
      });
      test("the mounted blob is readable in the target repository", async () => {
        const r = await req("GET", `/v2/${crossRepo}/blobs/${sha256(mono)}`);
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(mono));
      });
      test("mount of a nonexistent blob yields a session (202)", async () => {
        const r = await req("POST", `/v2/${crossRepo}/blobs/uploads/?mount=${sha256("absent")}&from=${repo}`);
        assert.equal(r.status, 202);
        assert.ok(r.headers.get("location"));
      });
      test("mount from a repository that lacks the blob yields a session (202)", async () => {
        const r = await req("POST", `/v2/${crossRepo}/blobs/uploads/?mount=${sha256(mono)}&from=conformance/empty`);
        assert.equal(r.status, 202);
      });
      test("automatic mount (no from) of a blob the registry has: 201 (distribution 2.8: 202, no automatic discovery)", async () => {
        const r = await req("POST", `/v2/conformance/auto/blobs/uploads/?mount=${sha256(chunked)}`);
        assert.equal(r.status, spec11(201, 202));
        if (ours) assert.ok((await req("GET", `/v2/conformance/auto/blobs/${sha256(chunked)}`)).body.equals(chunked));
      });

      const pushCfg = config(2);
      const pushLayer = randomBytes(2000);
      const pushManifest = imageManifest(pushCfg, [pushLayer]);
      test("GET of a manifest not yet pushed is 404", async () => {
        assert.equal((await req("GET", `/v2/${repo}/manifests/${sha256(pushManifest)}`)).status, 404);
      });
      test("PUT of a manifest by tag is 201 with Location and Docker-Content-Digest", async () => {
        await putBlob(repo, pushCfg);
        await putBlob(repo, pushLayer);
        const r = await putManifest(repo, "pushed", pushManifest);
        assert.equal(r.status, 201);
        assert.equal(r.headers.get("docker-content-digest"), sha256(pushManifest));
        assert.ok(r.headers.get("location"));
      });
      test("PUT of a manifest with no layers is accepted", async () => {
        const m = imageManifest(pushCfg, []);
        const r = await putManifest(repo, sha256(m), m);
        assert.equal(r.status, 201);
      });
      test("GET of the pushed manifest by digest is 200 with its bytes", async () => {
        const r = await req("GET", `/v2/${repo}/manifests/${sha256(pushManifest)}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(pushManifest));
      });
      test("PUT of the same manifest again is idempotent (201, same digest)", async () => {
        const r = await putManifest(repo, "pushed", pushManifest);
        assert.equal(r.status, 201);
        assert.equal(r.headers.get("docker-content-digest"), sha256(pushManifest));
      });
      test("a Docker schema2 manifest round-trips with its media type", async () => {
        const m = imageManifest(pushCfg, [pushLayer], {}, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER);
        assert.equal((await putManifest(repo, "docker", m, DOCKER_MANIFEST)).status, 201);
        const r = await req("GET", `/v2/${repo}/manifests/docker`, { headers: { Accept: DOCKER_MANIFEST } });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("content-type"), DOCKER_MANIFEST);
        assert.ok(r.body.equals(m));
      });
      test("an OCI index of pushed manifests round-trips", async () => {
        const idx = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_INDEX,
            manifests: [
              { ...desc(OCI_MANIFEST, m0), platform: { architecture: "amd64", os: "linux" } },
              { ...desc(OCI_MANIFEST, pushManifest), platform: { architecture: "arm64", os: "linux" } },
            ],
          }),
        );
        assert.equal((await putManifest(repo, "multi", idx, OCI_INDEX)).status, 201);
        const r = await req("GET", `/v2/${repo}/manifests/multi`, { headers: { Accept: OCI_INDEX } });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("content-type"), OCI_INDEX);
        assert.ok(r.body.equals(idx));
      });
      test("retagging moves the tag to the new manifest", async () => {
        assert.equal((await putManifest(repo, "moving", m0)).status, 201);
        assert.equal((await putManifest(repo, "moving", m1)).status, 201);
        const r = await req("HEAD", `/v2/${repo}/manifests/moving`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(r.headers.get("docker-content-digest"), sha256(m1));
      });
    });

    describe("content discovery", () => {
      const tags = ["test0", "test1", "test2", "test3", "alpha", "zulu"];
      const subject = imageManifest(cfg0, [layer], { annotations: { purpose: "subject" } });
      const empty = Buffer.from("{}");
      const art = (type: string, n: number) =>
        Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_MANIFEST,
            artifactType: type,
            config: desc(OCI_EMPTY, empty),
            layers: [desc(OCI_EMPTY, empty)],
            subject: desc(OCI_MANIFEST, subject),
            annotations: { "org.example.n": String(n) },
          }),
        );
      const sig = art("application/vnd.example.signature", 1);
      const sbom = art("application/vnd.example.sbom", 2);
      test("setup: push tags", async () => {
        await putBlob("conformance/disc", cfg0);
        await putBlob("conformance/disc", layer);
        for (const t of tags) assert.equal((await putManifest("conformance/disc", t, m0)).status, 201);
      });
      test("the tags list is sorted and complete", async () => {
        const r = await req("GET", `/v2/conformance/disc/tags/list`);
        assert.equal(r.status, 200);
        const body = r.json() as { name: string; tags: string[] };
        assert.equal(body.name, "conformance/disc");
        // spec 1.1: lexical order; distribution 2.8 lists in storage order.
        assert.deepEqual(ours ? body.tags : [...body.tags].sort(), [...tags].sort());
      });
      test("n limits the tags list and Link points at the next page (distribution 2.8 ignores n for tags)", async () => {
        const r = await req("GET", `/v2/conformance/disc/tags/list?n=2`);
        assert.equal(r.status, 200);
        if (!ours) return assert.equal(r.json().tags.length, tags.length);
        assert.deepEqual(r.json().tags, [...tags].sort().slice(0, 2));
        assert.match(r.headers.get("link") ?? "", /rel="next"/);
      });
      test("last starts the tags list after that tag", async () => {
        const sorted = [...tags].sort();
        const r = await req("GET", `/v2/conformance/disc/tags/list?n=3&last=${sorted[1]}`);
        assert.equal(r.status, 200);
        if (!ours) return assert.equal(r.json().tags.length, tags.length);
        assert.deepEqual(r.json().tags, sorted.slice(2, 5));
      });
      test("following Link pages through every tag once", async () => {
        const seen: string[] = [];
        let next: string | undefined = `/v2/conformance/disc/tags/list?n=4`;
        while (next) {
          const r = await req("GET", next);
          seen.push(...(r.json().tags ?? []));
          const m = /<([^>]+)>;\s*rel="next"/.exec(r.headers.get("link") ?? "");
          next = m ? m[1] : undefined;
        }
        assert.deepEqual(ours ? seen : [...seen].sort(), [...tags].sort());
      });
      test("the tags list of an unknown repository is 404 NAME_UNKNOWN", async () => {
        expectError(await req("GET", `/v2/conformance/nosuchrepo/tags/list`), 404, "NAME_UNKNOWN");
      });
      test("_catalog lists the repositories, paginated by n", async () => {
        const r = await req("GET", `/v2/_catalog`);
        assert.equal(r.status, 200);
        const all = r.json().repositories as string[];
        for (const n of [repo, crossRepo, "conformance/disc"]) assert.ok(all.includes(n), `${n} in ${all}`);
        assert.deepEqual(all, [...all].sort());
        const p = await req("GET", `/v2/_catalog?n=1`);
        assert.equal(p.json().repositories.length, 1);
        assert.match(p.headers.get("link") ?? "", /rel="next"/);
      });
      test("referrers of a manifest with none: 200 and an empty index (distribution 2.8: 404, no referrers API)", async () => {
        const r = await req("GET", `/v2/conformance/disc/referrers/${sha256(subject)}`);
        assert.equal(r.status, spec11(200, 404));
        if (ours) {
          assert.equal(r.headers.get("content-type"), OCI_INDEX);
          assert.deepEqual(r.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
        }
      });
      test("PUT of an artifact with a subject the registry lacks is accepted (OCI-Subject in spec 1.1)", async () => {
        await putBlob("conformance/disc", empty);
        const r = await putManifest("conformance/disc", sha256(sig), sig);
        assert.equal(r.status, 201);
        assert.equal(r.headers.get("oci-subject"), spec11(sha256(subject), null));
      });
      test("referrers list an artifact whose subject is missing", async () => {
        const r = await req("GET", `/v2/conformance/disc/referrers/${sha256(subject)}`);
        assert.equal(r.status, spec11(200, 404));
        if (ours) assert.deepEqual(r.json().manifests.map((m: { digest: string }) => m.digest), [sha256(sig)]);
      });
      test("referrers list every artifact with artifactType and annotations", async () => {
        assert.equal((await putManifest("conformance/disc", sha256(subject), subject)).status, 201);
        assert.equal((await putManifest("conformance/disc", sha256(sbom), sbom)).status, 201);
        const r = await req("GET", `/v2/conformance/disc/referrers/${sha256(subject)}`);
        assert.equal(r.status, spec11(200, 404));
        if (!ours) return;
        const ms = r.json().manifests as { digest: string; artifactType: string; size: number; mediaType: string; annotations: Record<string, string> }[];
        assert.equal(ms.length, 2);
        const bySig = ms.find((m) => m.digest === sha256(sig))!;
        assert.equal(bySig.artifactType, "application/vnd.example.signature");
        assert.equal(bySig.size, sig.length);
        assert.equal(bySig.mediaType, OCI_MANIFEST);
        assert.equal(bySig.annotations["org.example.n"], "1");
      });
      test("referrers filtered by artifactType list only that type, with OCI-Filters-Applied", async () => {
        const r = await req("GET", `/v2/conformance/disc/referrers/${sha256(subject)}?artifactType=${encodeURIComponent("application/vnd.example.sbom")}`);
        assert.equal(r.status, spec11(200, 404));
        if (!ours) return;
        assert.equal(r.headers.get("oci-filters-applied"), "artifactType");
        assert.deepEqual(r.json().manifests.map((m: { digest: string }) => m.digest), [sha256(sbom)]);
      });
      test("an image manifest without artifactType is listed by its config media type", async () => {
        const m = imageManifest(cfg1, [], { subject: desc(OCI_MANIFEST, subject) });
        await putBlob("conformance/disc", cfg1);
        assert.equal((await putManifest("conformance/disc", sha256(m), m)).status, 201);
        const r = await req("GET", `/v2/conformance/disc/referrers/${sha256(subject)}?artifactType=${encodeURIComponent(OCI_CONFIG)}`);
        assert.equal(r.status, spec11(200, 404));
        if (ours) assert.deepEqual(r.json().manifests.map((x: { digest: string }) => x.digest), [sha256(m)]);
      });
      test("deleting a referrer removes it from the list", async () => {
        assert.equal((await req("DELETE", `/v2/conformance/disc/manifests/${sha256(sbom)}`)).status, 202);
        const r = await req("GET", `/v2/conformance/disc/referrers/${sha256(subject)}?artifactType=${encodeURIComponent("application/vnd.example.sbom")}`);
        assert.equal(r.status, spec11(200, 404));
        if (ours) assert.deepEqual(r.json().manifests, []);
      });
      test("referrers with an invalid digest is 400 DIGEST_INVALID (distribution 2.8: 404)", async () => {
        const r = await req("GET", `/v2/conformance/disc/referrers/sha256:xyz`);
        if (ours) expectError(r, 400, "DIGEST_INVALID");
        else assert.equal(r.status, 404);
      });
    });

    describe("content management", () => {
      const name = "conformance/mgmt";
      const cfg = config(7);
      const lyr = randomBytes(3000);
      const m = imageManifest(cfg, [lyr]);
      test("setup: push a tagged image", async () => {
        await putBlob(name, cfg);
        await putBlob(name, lyr);
        assert.equal((await putManifest(name, "keep", m)).status, 201);
        assert.equal((await putManifest(name, "drop", m)).status, 201);
      });
      test("DELETE of a tag is 202 and only that tag goes (distribution 2.8: 400 DIGEST_INVALID, tags are not deletable)", async () => {
        const r = await req("DELETE", `/v2/${name}/manifests/drop`);
        if (ours) {
          assert.equal(r.status, 202);
          assert.deepEqual((await req("GET", `/v2/${name}/tags/list`)).json().tags, ["keep"]);
          assert.equal((await req("GET", `/v2/${name}/manifests/keep`)).status, 200);
        } else expectError(r, 400, "DIGEST_INVALID");
      });
      test("DELETE of a manifest by digest is 202", async () => {
        assert.equal((await req("DELETE", `/v2/${name}/manifests/${sha256(m)}`)).status, 202);
      });
      test("GET of the deleted manifest is 404", async () => {
        expectError(await req("GET", `/v2/${name}/manifests/${sha256(m)}`, { headers: { Accept: OCI_MANIFEST } }), 404, "MANIFEST_UNKNOWN");
      });
      test("the tags list no longer has the deleted manifest's tags", async () => {
        const r = await req("GET", `/v2/${name}/tags/list`);
        assert.equal(r.status, 200);
        assert.deepEqual(r.json().tags ?? [], []);
      });
      test("DELETE of a manifest again is 404 MANIFEST_UNKNOWN", async () => {
        expectError(await req("DELETE", `/v2/${name}/manifests/${sha256(m)}`), 404, "MANIFEST_UNKNOWN");
      });
      test("DELETE of a blob is 202", async () => {
        assert.equal((await req("DELETE", `/v2/${name}/blobs/${sha256(lyr)}`)).status, 202);
      });
      test("GET of the deleted blob is 404", async () => {
        expectError(await req("GET", `/v2/${name}/blobs/${sha256(lyr)}`), 404, "BLOB_UNKNOWN");
      });
      test("DELETE of an unknown blob is 404 BLOB_UNKNOWN", async () => {
        expectError(await req("DELETE", `/v2/${name}/blobs/${sha256("never")}`), 404, "BLOB_UNKNOWN");
      });
      test("the blob stays readable from other repositories that have it", async () => {
        await putBlob("conformance/mgmt2", lyr);
        assert.equal((await req("GET", `/v2/conformance/mgmt2/blobs/${sha256(lyr)}`)).status, 200);
      });
    });

    describe("bad input", () => {
      const name = "conformance/bad";
      const cfg = config(9);
      const lyr = randomBytes(1500);
      const badDigests: string[] = [];
      test("setup", async () => {
        await putBlob(name, cfg);
        await putBlob(name, lyr);
      });
      test("an uppercase repository name is refused (NAME_INVALID; distribution 2.8: 404 NAME_UNKNOWN, no route)", async () => {
        const r = await req("GET", `/v2/Conformance/Bad/tags/list`);
        if (ours) expectError(r, 400, "NAME_INVALID");
        else assert.equal(r.status, 404);
        const p = await req("POST", `/v2/Conformance/Bad/blobs/uploads/`);
        assert.equal(p.status, ours ? 400 : 404);
      });
      test("a name with .. is refused", async () => {
        // fetch() would resolve the dots itself: send the path as is.
        const r = await rawResponse(reg.url, "POST", `/v2/conformance/../bad/blobs/uploads/`);
        const enc = await rawResponse(reg.url, "POST", `/v2/conformance/%2e%2e/%2e%2e/bad/blobs/uploads/`);
        if (ours) {
          expectError(r, 400, "NAME_INVALID");
          expectError(enc, 400, "NAME_INVALID");
        } else for (const x of [r, enc]) assert.ok(REFUSED_28.includes(x.status), `status ${x.status}`);
      });
      test("a name over 255 characters is refused", async () => {
        const long = Array.from({ length: 30 }, () => "abcdefghij").join("/");
        const r = await req("POST", `/v2/${long}/blobs/uploads/`);
        // distribution 2.8 answers 500 here.
        if (ours) expectError(r, 400, "NAME_INVALID");
        else assert.equal(r.status, 500);
      });
      test("an invalid digest in a blob URL is refused (DIGEST_INVALID; distribution 2.8: 404 or a redirect)", async () => {
        for (const d of ["sha256:abc", "sha256:../../../etc/passwd", "sha256:..%2f..%2fetc", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + "A".repeat(64)]) {
          const r = await rawResponse(reg.url, "GET", `/v2/${name}/blobs/${d}`);
          // A digest with a slash is not a blob path at all: no route (404).
          if (ours) d.includes("/") ? assert.equal(r.status, 404, d) : expectError(r, 400, "DIGEST_INVALID", d);
          else assert.ok(REFUSED_28.includes(r.status), `${d}: status ${r.status}`);
        }
      });
      test("a digest mismatch on PUT is 400 DIGEST_INVALID and the blob is not visible", async () => {
        const b = randomBytes(5000);
        const claimed = sha256(randomBytes(10));
        badDigests.push(claimed, sha256(b));
        const s = await req("POST", `/v2/${name}/blobs/uploads/`);
        const u = new URL(s.headers.get("location")!, reg.url);
        u.searchParams.set("digest", claimed);
        expectError(await http(u.href, "PUT", "", { body: b, headers: { "Content-Type": "application/octet-stream" } }), 400, "DIGEST_INVALID");
        assert.equal((await req("HEAD", `/v2/${name}/blobs/${claimed}`)).status, 404);
        assert.equal((await req("HEAD", `/v2/${name}/blobs/${sha256(b)}`)).status, 404);
      });
      test("a digest mismatch on a monolithic POST is 400 DIGEST_INVALID, nothing visible (distribution 2.8: 202, it ignores the body)", async () => {
        const b = randomBytes(5000);
        const claimed = sha256(randomBytes(11));
        badDigests.push(claimed, sha256(b));
        const r = await req("POST", `/v2/${name}/blobs/uploads/?digest=${claimed}`, { body: b, headers: { "Content-Type": "application/octet-stream" } });
        if (ours) expectError(r, 400, "DIGEST_INVALID");
        else assert.equal(r.status, 202);
        assert.equal((await req("HEAD", `/v2/${name}/blobs/${claimed}`)).status, 404);
      });
      test("PUT to finish an upload without a digest is 400 DIGEST_INVALID", async () => {
        const s = await req("POST", `/v2/${name}/blobs/uploads/`);
        const r = await http(new URL(s.headers.get("location")!, reg.url).href, "PUT", "", { body: randomBytes(10), headers: { "Content-Type": "application/octet-stream" } });
        expectError(r, 400, "DIGEST_INVALID");
      });
      test("a manifest referencing missing blobs is 400 MANIFEST_BLOB_UNKNOWN and not stored", async () => {
        const missing = randomBytes(100);
        const m = imageManifest(cfg, [lyr, missing]);
        badDigests.push(sha256(m), sha256(missing));
        expectError(await putManifest(name, "missing", m), 400, "MANIFEST_BLOB_UNKNOWN");
        assert.equal((await req("GET", `/v2/${name}/manifests/missing`)).status, 404);
        assert.equal((await req("GET", `/v2/${name}/manifests/${sha256(m)}`)).status, 404);
      });
      test("a manifest whose config is missing is 400 MANIFEST_BLOB_UNKNOWN", async () => {
        const m = imageManifest(config(99), [lyr]);
        badDigests.push(sha256(m));
        expectError(await putManifest(name, "nocfg", m), 400, "MANIFEST_BLOB_UNKNOWN");
      });
      test("an index referencing a missing manifest is 400 MANIFEST_BLOB_UNKNOWN", async () => {
        const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [desc(OCI_MANIFEST, Buffer.from("no such manifest"))] }));
        badDigests.push(sha256(idx));
        expectError(await putManifest(name, "badidx", idx, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN");
      });
      test("a manifest over 4 MiB is refused (413 SIZE_INVALID; distribution 2.8: 400)", async () => {
        const m = imageManifest(cfg, [lyr], { annotations: { pad: "x".repeat(4 * 1024 * 1024 + 10) } });
        badDigests.push(sha256(m));
        const r = await putManifest(name, "huge", m);
        if (ours) {
          expectError(r, 413, "SIZE_INVALID");
        } else assert.equal(r.status, 400);
        assert.equal((await req("GET", `/v2/${name}/manifests/huge`)).status, 404);
      });
      test("a manifest PUT by a malformed digest is 400 DIGEST_INVALID (distribution 2.8: 500, after writing under tags/)", async () => {
        const m = imageManifest(cfg, [lyr], { annotations: { n: "baddigest" } });
        const r = await putManifest(name, "sha256:baddigeststring", m);
        if (ours) {
          badDigests.push(sha256(m));
          expectError(r, 400, "DIGEST_INVALID");
        } else expectError(r, 500, "UNKNOWN");
      });
      test("a manifest PUT by a digest it does not have is 400 DIGEST_INVALID", async () => {
        const m = imageManifest(cfg, [lyr], { annotations: { n: "mismatch" } });
        badDigests.push(sha256(m));
        expectError(await putManifest(name, sha256("something else"), m), 400, "DIGEST_INVALID");
        assert.equal((await req("GET", `/v2/${name}/manifests/${sha256(m)}`)).status, 404);
      });
      test("a manifest that is not JSON is 400 MANIFEST_INVALID", async () => {
        expectError(await putManifest(name, "notjson", Buffer.from("\x00\x01 nope")), 400, "MANIFEST_INVALID");
      });
      test("a manifest without config is 400 MANIFEST_INVALID", async () => {
        const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }));
        // distribution 2.8: 400 with DIGEST_INVALID and MANIFEST_BLOB_UNKNOWN for the empty config descriptor.
        const r = await putManifest(name, "nocfgfield", m);
        if (ours) expectError(r, 400, "MANIFEST_INVALID");
        else expectError(r, 400, "MANIFEST_BLOB_UNKNOWN");
      });
      test("a manifest with schemaVersion 1 is 400 MANIFEST_INVALID (distribution 2.8: 500 UNKNOWN)", async () => {
        const m = Buffer.from(JSON.stringify({ schemaVersion: 1, mediaType: OCI_MANIFEST, config: desc(OCI_CONFIG, cfg), layers: [] }));
        const r = await putManifest(name, "v1", m);
        if (ours) expectError(r, 400, "MANIFEST_INVALID");
        else expectError(r, 500, "UNKNOWN");
      });
      test("an invalid tag is refused", async () => {
        const m = imageManifest(cfg, [lyr]);
        const r = await putManifest(name, "-bad-tag", m);
        assert.ok(r.status === 400 || r.status === 404, `status ${r.status}`);
        if (ours) expectError(r, 400, "MANIFEST_INVALID");
        const long = await putManifest(name, "t".repeat(129), m);
        assert.ok(long.status === 400 || long.status === 404, `status ${long.status}`);
      });
      test("an unknown upload session is 404 BLOB_UPLOAD_UNKNOWN (distribution 2.8: BLOB_UPLOAD_INVALID for an id it did not sign)", async () => {
        const code = spec11("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID");
        expectError(await req("GET", `/v2/${name}/blobs/uploads/1b4e28ba-2fa1-11d2-883f-0016d3cca427`), 404, code);
        expectError(await req("PATCH", `/v2/${name}/blobs/uploads/1b4e28ba-2fa1-11d2-883f-0016d3cca427`, { body: "x" }), 404, code);
      });
      test("an upload session id with path traversal is refused", async () => {
        for (const id of ["..%2f..%2fblobs", "%2e%2e", "x%00y", "../../../../tmp"]) {
          const r = await rawRequest(reg.url, "GET", `/v2/${name}/blobs/uploads/${id}`);
          assert.ok(ours ? r === 404 : REFUSED_28.includes(r), `${id}: ${r}`);
        }
      });
      test("an upload session is bound to its repository (distribution 2.8: BLOB_UPLOAD_INVALID)", async () => {
        const s = await req("POST", `/v2/${name}/blobs/uploads/`);
        const loc = s.headers.get("location")!;
        const other = loc.replace(`/v2/${name}/`, "/v2/conformance/elsewhere/");
        const r = await http(new URL(other, reg.url).href, "GET", "");
        expectError(r, 404, spec11("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"));
      });
      test("a chunk whose Content-Range disagrees with its length is refused and not appended (distribution 2.8: accepted)", async () => {
        const s = await req("POST", `/v2/${name}/blobs/uploads/`);
        const loc = new URL(s.headers.get("location")!, reg.url).href;
        const r = await http(loc, "PATCH", "", { body: randomBytes(100), headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-49" } });
        if (ours) {
          assert.equal(r.status, 416);
          const st = await http(loc, "GET", "");
          assert.equal(st.headers.get("range"), "0-0");
        } else assert.ok(r.status === 202 || r.status === 416 || r.status === 400, `status ${r.status}`);
      });
      test("a manifest by a tag with a path traversal is refused", async () => {
        const r = await rawRequest(reg.url, "GET", `/v2/${name}/manifests/..%2f..%2fblobs`);
        assert.ok(ours ? r === 400 : REFUSED_28.includes(r), `status ${r}`);
      });
      test("nothing was written by the refused requests", async () => {
        for (const d of badDigests) assert.equal((await req("HEAD", `/v2/${name}/blobs/${d}`)).status, 404, d);
        if (target !== "strata") return;
        // Our filesystem storage: no refused content among the blobs, no stray files beside the repositories.
        const blobs = new Set(readdirSync(join(reg.storage, "blobs", "sha256")).map((h) => `sha256:${h}`));
        for (const d of badDigests) assert.ok(!blobs.has(d), `${d} was stored`);
        assert.deepEqual(readdirSync(join(reg.storage, "tmp")), []);
        assert.ok(!existsSync(join(reg.storage, "repositories", "Conformance")));
        assert.ok(!existsSync(join(reg.storage, "repositories", "bad")));
        const tagsDir = join(reg.storage, "repositories", name, "_manifests", "tags");
        assert.deepEqual(existsSync(tagsDir) ? readdirSync(tagsDir) : [], []);
      });
    });
  });
}
