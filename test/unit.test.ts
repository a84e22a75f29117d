// Pure unit tests: reference, digest, oci validators, cli formatting, --change, archive primitives.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gzipSync } from "node:zlib";
import { spawnSync } from "node:child_process";
import { linkSync, mkdirSync, symlinkSync, utimesSync, writeFileSync, lutimesSync } from "node:fs";
import { join } from "node:path";
import tarStream from "tar-stream";

import { StrataError } from "../src/errors/index.js";
import { parseReference, formatReference, familiarString, familiarName, type Reference } from "../src/reference/index.js";
import { sha256, chainIds, parseDigest, isDigest, type Digest } from "../src/digest/index.js";
import { VerifyStream, DigestStream } from "../src/digest/stream.js";
import { parseManifest, parseIndex, parseConfig, MediaType, MAX_MANIFEST_BYTES } from "../src/oci/index.js";
import { humanSize, humanDuration, table, renderTemplate } from "../src/cli/format.js";
import { applyChange } from "../src/engine/changes.js";
import { detectCompression, isTarHeader, packDirectory } from "../src/archive/index.js";
import { makeTar, tempDir, rejectsCode } from "./helpers.ts";

const HEX_A = "a".repeat(64);
const HEX_B = "b".repeat(64);
const HEX_C = "c".repeat(64);

/** Asserts that `fn` throws a StrataError with `code` (and a message matching `msg`, when given). */
function throwsCode(fn: () => unknown, code: string, msg?: RegExp): StrataError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected a ${code} error, nothing was thrown`);
  assert.ok(caught instanceof StrataError, `expected a StrataError, got ${String(caught)}`);
  assert.equal(caught.code, code, `wrong code for: ${caught.message}`);
  if (msg) assert.match(caught.message, msg);
  return caught;
}


// ---------------------------------------------------------------------------
describe("reference", () => {
  const cases: [string, Reference][] = [
    ["busybox", { domain: "docker.io", path: "library/busybox", tag: "latest", digest: undefined }],
    ["busybox:1.36", { domain: "docker.io", path: "library/busybox", tag: "1.36", digest: undefined }],
    ["user/repo", { domain: "docker.io", path: "user/repo", tag: "latest", digest: undefined }],
    ["docker.io/busybox", { domain: "docker.io", path: "library/busybox", tag: "latest", digest: undefined }],
    ["index.docker.io/library/x", { domain: "docker.io", path: "library/x", tag: "latest", digest: undefined }],
    ["index.docker.io/x", { domain: "docker.io", path: "library/x", tag: "latest", digest: undefined }],
    [`localhost:5000/a/b@sha256:${HEX_A}`, { domain: "localhost:5000", path: "a/b", tag: undefined, digest: `sha256:${HEX_A}` }],
    ["localhost/a", { domain: "localhost", path: "a", tag: "latest", digest: undefined }],
    ["registry.example.com:443/x/y:v1.2", { domain: "registry.example.com:443", path: "x/y", tag: "v1.2", digest: undefined }],
    [`busybox:1.36@sha256:${HEX_B}`, { domain: "docker.io", path: "library/busybox", tag: "1.36", digest: `sha256:${HEX_B}` }],
    // an uppercase first component before a slash is a registry host (Docker's splitDockerDomain)
    ["UPPER/x", { domain: "UPPER", path: "x", tag: "latest", digest: undefined }],
    ["[::1]:5000/a/b:t", { domain: "[::1]:5000", path: "a/b", tag: "t", digest: undefined }],
    ["a_b/c__d/e-f.g---h:Tag_1.x-Y", { domain: "docker.io", path: "a_b/c__d/e-f.g---h", tag: "Tag_1.x-Y", digest: undefined }],
  ];
  for (const [input, want] of cases) {
    test(`normalises ${input}`, () => {
      assert.deepEqual({ ...parseReference(input) }, want);
    });
  }

  test("formatReference writes the full normalised form", () => {
    assert.equal(formatReference(parseReference("busybox")), "docker.io/library/busybox:latest");
    assert.equal(formatReference(parseReference("user/repo:v1")), "docker.io/user/repo:v1");
    assert.equal(formatReference(parseReference(`localhost:5000/a/b@sha256:${HEX_A}`)), `localhost:5000/a/b@sha256:${HEX_A}`);
  });

  test("defaultTag: false leaves the tag unset", () => {
    assert.equal(parseReference("busybox", { defaultTag: false }).tag, undefined);
    assert.equal(parseReference("busybox:x", { defaultTag: false }).tag, "x");
  });

  test("familiarString and familiarName use Docker's short form and round trip", () => {
    assert.equal(familiarString(parseReference("docker.io/library/busybox:latest")), "busybox:latest");
    assert.equal(familiarName(parseReference("docker.io/library/busybox")), "busybox");
    assert.equal(familiarString(parseReference("docker.io/user/repo:v1")), "user/repo:v1");
    assert.equal(familiarName(parseReference("docker.io/library/a/b")), "library/a/b");
    assert.equal(familiarString(parseReference("registry.example.com:443/x/y:v1.2")), "registry.example.com:443/x/y:v1.2");
    for (const input of [
      "busybox",
      "busybox:1.36",
      "user/repo",
      "library/a/b",
      `localhost:5000/a/b@sha256:${HEX_A}`,
      "registry.example.com:443/x/y:v1.2",
      `busybox:1.36@sha256:${HEX_B}`,
      "UPPER/x:t",
    ]) {
      const r = parseReference(input);
      assert.deepEqual(parseReference(familiarString(r)), r, `round trip of ${input} via ${familiarString(r)}`);
      assert.deepEqual(parseReference(formatReference(r)), r, `round trip of ${input} via ${formatReference(r)}`);
    }
  });

  test("a name of exactly 255 characters is accepted", () => {
    const path = "x".repeat(255 - "docker.io/library/".length);
    const r = parseReference(path);
    assert.equal(`${r.domain}/${r.path}`.length, 255);
  });

  const invalid: [string, RegExp][] = [
    ["", /empty/],
    ["Busybox", /lowercase/],
    ["busybox/Sub", /lowercase/],
    ["UPPER/X", /lowercase/],
    ["docker.io/Library/busybox", /lowercase/],
    ["a:b:c", /a:b:c/],
    [":tag", /missing repository/],
    ["@sha256:" + HEX_A, /missing repository/],
    ["repo@sha256:short", /invalid digest/],
    ["repo@sha256:" + HEX_A.toUpperCase(), /invalid digest/],
    ["repo@md5:" + "a".repeat(32), /invalid digest/],
    ["repo@", /invalid digest/],
    ["repo:ta$g", /invalid tag/],
    ["repo:-tag", /invalid tag/],
    ["repo:.tag", /invalid tag/],
    ["repo:" + "t".repeat(129), /invalid tag/],
    ["x".repeat(256), /longer than 255/],
    ["registry.example.com/" + "x".repeat(240), /longer than 255/],
    ["a/../b", /\.\./],
    ["a/./b", /invalid repository name component/],
    ["a//b", /invalid repository name component/],
    ["busybox/", /invalid repository name component/],
    ["localhost:5000/", /invalid repository name component/],
    ["-busybox", /invalid repository name component/],
    ["bad_host.com/x", /invalid registry host/],
    ["-host.com/x", /invalid registry host/],
    ["localhost:abc/x", /invalid registry host/],
    ["a b", /invalid repository name component/],
  ];
  for (const [input, msg] of invalid) {
    test(`rejects ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + "…" : input)}`, () => {
      const e = throwsCode(() => parseReference(input), "INVALID_REFERENCE", msg);
      assert.match(e.message, /^invalid reference format/);
      assert.ok(e.message.includes(JSON.stringify(input)), `message names the input: ${e.message}`);
    });
  }
});

// ---------------------------------------------------------------------------
describe("digest", () => {
  const hash = (s: string | Buffer) => `sha256:${createHash("sha256").update(s).digest("hex")}` as Digest;

  test("sha256 of known inputs", () => {
    assert.equal(sha256(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert.equal(sha256("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert.equal(sha256(Buffer.from("abc")), sha256("abc"));
  });

  test("chainIds follow the OCI definition", () => {
    const d0 = `sha256:${HEX_A}` as Digest;
    const d1 = `sha256:${HEX_B}` as Digest;
    const d2 = `sha256:${HEX_C}` as Digest;
    const c1 = hash(`${d0} ${d1}`);
    const c2 = hash(`${c1} ${d2}`);
    assert.deepEqual(chainIds([]), []);
    assert.deepEqual(chainIds([d0]), [d0]);
    assert.deepEqual(chainIds([d0, d1, d2]), [d0, c1, c2]);
    // a real pair: the empty tar's diffID twice
    const e = hash(Buffer.alloc(1024));
    assert.deepEqual(chainIds([e, e]), [e, hash(`${e} ${e}`)]);
    assert.notEqual(chainIds([d1, d0])[1], c1, "order matters");
  });

  test("parseDigest accepts sha256 and sha512, rejects everything else", () => {
    assert.equal(parseDigest(`sha256:${HEX_A}`), `sha256:${HEX_A}`);
    assert.equal(parseDigest(`sha512:${"f".repeat(128)}`), `sha512:${"f".repeat(128)}`);
    for (const bad of [
      "",
      "sha256:",
      "sha256:abc",
      `sha256:${HEX_A}0`,
      `sha256:${HEX_A.toUpperCase()}`,
      `SHA256:${HEX_A}`,
      `sha512:${HEX_A}`,
      `md5:${"a".repeat(32)}`,
      ` sha256:${HEX_A}`,
      `sha256:${HEX_A}\n`,
      `sha256:${"g".repeat(64)}`,
      HEX_A,
    ]) {
      assert.equal(isDigest(bad), false, JSON.stringify(bad));
      throwsCode(() => parseDigest(bad), "INVALID_DIGEST");
    }
  });

  async function runVerify(chunks: Buffer[], expected: { digest: Digest; size?: number }): Promise<Buffer> {
    const got: Buffer[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        got.push(c);
        cb();
      },
    });
    try {
      await pipeline(Readable.from(chunks), new VerifyStream(expected), sink);
    } finally {
      runVerify.received = Buffer.concat(got);
    }
    return Buffer.concat(got);
  }
  runVerify.received = Buffer.alloc(0);

  const content = Buffer.from("hello, layer content\n".repeat(100));
  const chunks = [content.subarray(0, 700), content.subarray(700, 1500), content.subarray(1500)];

  test("VerifyStream passes the right content through unchanged", async () => {
    assert.deepEqual(await runVerify(chunks, { digest: hash(content), size: content.length }), content);
    assert.deepEqual(await runVerify(chunks, { digest: hash(content) }), content);
    assert.deepEqual(await runVerify([], { digest: hash(""), size: 0 }), Buffer.alloc(0));
  });

  test("VerifyStream: wrong content of the right size is DIGEST_MISMATCH", async () => {
    const wrong = Buffer.from(content);
    wrong[1000] ^= 1;
    const e = await rejectsCode(runVerify([wrong], { digest: hash(content), size: content.length }), "DIGEST_MISMATCH");
    assert.match(e.message, new RegExp(hash(content)));
    await rejectsCode(runVerify([wrong], { digest: hash(content) }), "DIGEST_MISMATCH");
  });

  test("VerifyStream: too many bytes is SIZE_MISMATCH, and no more than size bytes get through", async () => {
    const more = Buffer.concat([content, Buffer.from("x")]);
    await rejectsCode(runVerify([content.subarray(0, 1000), more.subarray(1000)], { digest: hash(content), size: content.length }), "SIZE_MISMATCH");
    assert.ok(runVerify.received.length <= content.length, `${runVerify.received.length} bytes passed`);
    // also when the extra bytes come in a chunk of their own
    await rejectsCode(runVerify([content, Buffer.from("x")], { digest: hash(content), size: content.length }), "SIZE_MISMATCH");
    assert.ok(runVerify.received.length <= content.length);
  });

  test("VerifyStream: too few bytes is SIZE_MISMATCH", async () => {
    await rejectsCode(runVerify([content.subarray(0, 10)], { digest: hash(content), size: content.length }), "SIZE_MISMATCH");
    await rejectsCode(runVerify([], { digest: hash(content), size: content.length }), "SIZE_MISMATCH");
  });

  test("DigestStream hashes and counts", async () => {
    const d = new DigestStream();
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    await pipeline(Readable.from(chunks), d, sink);
    assert.equal(d.digest(), hash(content));
    assert.equal(d.bytes, content.length);
  });
});

// ---------------------------------------------------------------------------
describe("oci validators", () => {
  const desc = (mediaType: string, hex = HEX_A, size = 10) => ({ mediaType, digest: `sha256:${hex}`, size });
  const ociManifest = () => ({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: desc(MediaType.OciConfig, HEX_A, 321),
    layers: [desc(MediaType.OciLayerGzip, HEX_B, 1000), desc(MediaType.OciLayerZstd, HEX_C, 2000)],
    annotations: { "org.example": "x" },
  });
  const dockerManifest = () => ({
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: desc(MediaType.DockerConfig, HEX_A, 321),
    layers: [desc(MediaType.DockerLayerGzip, HEX_B, 1000)],
  });
  const ociIndex = () => ({
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [{ ...desc(MediaType.OciManifest, HEX_A, 400), platform: { architecture: "amd64", os: "linux" } }],
  });
  const config = () => ({
    created: "2024-01-01T00:00:00Z",
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/bin"], Cmd: ["sh"] },
    rootfs: { type: "layers", diff_ids: [`sha256:${HEX_A}`, `sha256:${HEX_B}`] },
    history: [{ created_by: "x" }],
  });
  const j = (v: unknown) => Buffer.from(JSON.stringify(v));

  test("parseManifest accepts OCI and Docker schema2 manifests", () => {
    const m = parseManifest(j(ociManifest()));
    assert.equal(m.layers.length, 2);
    assert.equal(m.config.digest, `sha256:${HEX_A}`);
    assert.equal(parseManifest(j(dockerManifest())).mediaType, MediaType.DockerManifest);
    // the media type may come from the descriptor that pointed at it
    const { mediaType: _omit, ...bare } = ociManifest();
    assert.equal(parseManifest(j(bare), "manifest", MediaType.OciManifest).layers.length, 2);
    assert.equal(parseManifest(j({ ...ociManifest(), layers: [] })).layers.length, 0);
  });

  const badManifests: [string, Buffer, string?][] = [
    ["not JSON", Buffer.from("{not json"), undefined],
    ["a JSON array", j([ociManifest()]), undefined],
    ["null", j(null), undefined],
    ["schemaVersion 1", j({ ...ociManifest(), schemaVersion: 1 }), undefined],
    ["schemaVersion as a string", j({ ...ociManifest(), schemaVersion: "2" }), undefined],
    ["missing schemaVersion", j((({ schemaVersion: _s, ...r }) => r)(ociManifest())), undefined],
    ["missing layers", j((({ layers: _l, ...r }) => r)(ociManifest())), undefined],
    ["layers not an array", j({ ...ociManifest(), layers: {} }), undefined],
    ["missing config", j((({ config: _c, ...r }) => r)(ociManifest())), undefined],
    ["config digest invalid", j({ ...ociManifest(), config: { ...desc(MediaType.OciConfig), digest: "sha256:xyz" } }), undefined],
    ["layer digest missing", j({ ...ociManifest(), layers: [{ mediaType: MediaType.OciLayerGzip, size: 1 }] }), undefined],
    ["layer size negative", j({ ...ociManifest(), layers: [desc(MediaType.OciLayerGzip, HEX_B, -1)] }), undefined],
    ["layer size a string", j({ ...ociManifest(), layers: [{ ...desc(MediaType.OciLayerGzip), size: "10" }] }), undefined],
    ["layer size fractional", j({ ...ociManifest(), layers: [desc(MediaType.OciLayerGzip, HEX_B, 1.5)] }), undefined],
    ["layer without mediaType", j({ ...ociManifest(), layers: [{ digest: `sha256:${HEX_B}`, size: 1 }] }), undefined],
    ["layer not an object", j({ ...ociManifest(), layers: ["sha256:" + HEX_B] }), undefined],
    ["annotations not an object", j({ ...ociManifest(), layers: [{ ...desc(MediaType.OciLayerGzip), annotations: ["x"] }] }), undefined],
    ["an OCI index media type", j({ ...ociManifest(), mediaType: MediaType.OciIndex }), undefined],
    ["a Docker manifest list media type", j({ ...ociManifest(), mediaType: MediaType.DockerManifestList }), undefined],
    ["no mediaType but an index descriptor", j((({ mediaType: _m, ...r }) => r)(ociManifest())), MediaType.OciIndex],
    ["a mediaType that differs from its descriptor", j(ociManifest()), MediaType.DockerManifest],
  ];
  for (const [what, raw, hint] of badManifests) {
    test(`parseManifest rejects ${what}`, () => {
      throwsCode(() => parseManifest(raw, "manifest", hint), "INVALID_MANIFEST", /^manifest/);
    });
  }

  test("manifests over 4 MiB are refused; exactly 4 MiB is accepted", () => {
    const base = j(ociManifest());
    const pad = (n: number) => Buffer.concat([base, Buffer.alloc(n - base.length, " ")]);
    assert.equal(MAX_MANIFEST_BYTES, 4 * 1024 * 1024);
    assert.equal(parseManifest(pad(MAX_MANIFEST_BYTES)).layers.length, 2);
    throwsCode(() => parseManifest(pad(MAX_MANIFEST_BYTES + 1)), "INVALID_MANIFEST", /larger than/);
    const big = j({ ...ociManifest(), annotations: { x: "y".repeat(MAX_MANIFEST_BYTES) } });
    throwsCode(() => parseManifest(big), "INVALID_MANIFEST", /larger than/);
    throwsCode(() => parseIndex(j({ ...ociIndex(), annotations: { x: "y".repeat(MAX_MANIFEST_BYTES) } })), "INVALID_MANIFEST", /larger than/);
  });

  test("parseIndex accepts OCI indexes and Docker manifest lists", () => {
    assert.equal(parseIndex(j(ociIndex())).manifests.length, 1);
    assert.equal(parseIndex(j({ ...ociIndex(), mediaType: MediaType.DockerManifestList })).manifests.length, 1);
    const { mediaType: _m, ...bare } = ociIndex();
    assert.equal(parseIndex(j(bare)).manifests.length, 1);
    assert.equal(parseIndex(j({ ...ociIndex(), manifests: [] })).manifests.length, 0);
  });

  const badIndexes: [string, Buffer][] = [
    ["not JSON", Buffer.from("[")],
    ["schemaVersion 1", j({ ...ociIndex(), schemaVersion: 1 })],
    ["a manifest media type", j({ ...ociIndex(), mediaType: MediaType.OciManifest })],
    ["missing manifests", j({ schemaVersion: 2, mediaType: MediaType.OciIndex })],
    ["an entry with a bad digest", j({ ...ociIndex(), manifests: [{ ...desc(MediaType.OciManifest), digest: "sha256:" + "a".repeat(63) }] })],
    ["an entry with a bad size", j({ ...ociIndex(), manifests: [{ ...desc(MediaType.OciManifest), size: null }] })],
  ];
  for (const [what, raw] of badIndexes) {
    test(`parseIndex rejects ${what}`, () => {
      throwsCode(() => parseIndex(raw), "INVALID_MANIFEST", /^index/);
    });
  }

  test("parseConfig accepts a valid config (with or without layers)", () => {
    const c = parseConfig(j(config()));
    assert.deepEqual(c.rootfs.diff_ids, [`sha256:${HEX_A}`, `sha256:${HEX_B}`]);
    assert.equal(parseConfig(j({ ...config(), rootfs: { type: "layers", diff_ids: [] } })).rootfs.diff_ids.length, 0);
    assert.equal(parseConfig(j({ ...config(), config: null })).os, "linux");
  });

  const badConfigs: [string, Buffer][] = [
    ["not JSON", Buffer.from("architecture: amd64")],
    ["a JSON string", j("config")],
    ["no rootfs", j((({ rootfs: _r, ...r }) => r)(config()))],
    ["rootfs without diff_ids", j({ ...config(), rootfs: { type: "layers" } })],
    ["rootfs.diff_ids not an array", j({ ...config(), rootfs: { type: "layers", diff_ids: `sha256:${HEX_A}` } })],
    ["rootfs of another type", j({ ...config(), rootfs: { type: "other", diff_ids: [] } })],
    ["an invalid diff_id", j({ ...config(), rootfs: { type: "layers", diff_ids: ["sha256:nothex"] } })],
    ["no architecture", j((({ architecture: _a, ...r }) => r)(config()))],
    ["no os", j((({ os: _o, ...r }) => r)(config()))],
    ["config as an array", j({ ...config(), config: [] })],
    ["history not an array", j({ ...config(), history: {} })],
    ["over 4 MiB", j({ ...config(), author: "a".repeat(MAX_MANIFEST_BYTES) })],
  ];
  for (const [what, raw] of badConfigs) {
    test(`parseConfig rejects ${what}`, () => {
      throwsCode(() => parseConfig(raw), "INVALID_CONFIG", /^config/);
    });
  }
});

// ---------------------------------------------------------------------------
describe("cli/format", () => {
  test("humanSize matches docker's sizes (decimal, 3 significant digits)", () => {
    const cases: [number, string][] = [
      [0, "0B"],
      [1, "1B"],
      [999, "999B"],
      [1000, "1kB"],
      [1500, "1.5kB"],
      [123456, "123kB"],
      [1987072, "1.99MB"],
      [1997895, "2MB"],
      [4194304, "4.19MB"],
      [77800000, "77.8MB"],
      [1e9, "1GB"],
      [1.5e12, "1.5TB"],
    ];
    for (const [n, s] of cases) assert.equal(humanSize(n), s, `humanSize(${n})`);
  });

  test("humanDuration thresholds (go-units HumanDuration)", () => {
    const s = 1000;
    const m = 60 * s;
    const h = 60 * m;
    const d = 24 * h;
    const cases: [number, string][] = [
      [0, "Less than a second"],
      [999, "Less than a second"],
      [1 * s, "1 second"],
      [1999, "1 second"],
      [2 * s, "2 seconds"],
      [5 * s, "5 seconds"],
      [59 * s, "59 seconds"],
      [60 * s, "About a minute"],
      [119 * s, "About a minute"],
      [2 * m, "2 minutes"],
      [5 * m, "5 minutes"],
      [59 * m, "59 minutes"],
      [60 * m, "About an hour"],
      [89 * m, "About an hour"],
      [90 * m, "2 hours"],
      [5 * h, "5 hours"],
      [47 * h, "47 hours"],
      [48 * h, "2 days"],
      [3 * d, "3 days"],
      [13 * d, "13 days"],
      [14 * d, "2 weeks"],
      [3 * 7 * d, "3 weeks"],
      [59 * d, "8 weeks"],
      [60 * d, "2 months"],
      [90 * d, "3 months"],
      [729 * d, "24 months"],
      [730 * d, "2 years"],
      [3 * 365 * d, "3 years"],
    ];
    for (const [ms, want] of cases) assert.equal(humanDuration(ms), want, `humanDuration(${ms})`);
  });

  test("table aligns columns with at least three spaces and trims line ends", () => {
    const out = table(
      ["REPOSITORY", "TAG", "IMAGE ID", "SIZE"],
      [
        ["busybox", "1.36.1-musl", "0123456789ab", "2MB"],
        ["registry.example.com/a/long-name", "v1", "ba9876543210", ""],
      ],
    );
    assert.equal(
      out,
      "REPOSITORY                         TAG           IMAGE ID       SIZE\n" +
        "busybox                            1.36.1-musl   0123456789ab   2MB\n" +
        "registry.example.com/a/long-name   v1            ba9876543210\n",
    );
    const lines = out.trimEnd().split("\n");
    for (const col of ["TAG", "IMAGE ID"]) {
      const at = lines[0].indexOf(col);
      for (const l of lines.slice(1)) assert.notEqual(l[at], " ", `column ${col} starts at ${at} in ${JSON.stringify(l)}`);
      for (const l of lines) assert.equal(l.slice(at - 3, at), "   ");
    }
  });

  test("table pads narrow columns to docker's minimum cell width of 10 (tabwriter minwidth 10, padding 3)", () => {
    // docker images: "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE"
    const out = table(["REPOSITORY", "TAG", "SIZE"], [["busybox", "latest", "2MB"]]);
    assert.equal(out, "REPOSITORY   TAG       SIZE\n" + "busybox      latest    2MB\n");
    assert.equal(table(["A", "B"], []), "A         B\n");
  });

  const rows = [
    { ID: "0123456789ab", Repository: "busybox", Tag: "latest", Size: "2MB" },
    { ID: "ba9876543210", Repository: "registry.example.com/x", Tag: "v1.2", Size: "1kB" },
  ];

  test("renderTemplate: fields", () => {
    assert.equal(renderTemplate("{{.ID}}", rows), "0123456789ab\nba9876543210\n");
    assert.equal(renderTemplate("{{ .Repository }}:{{.Tag}}", rows), "busybox:latest\nregistry.example.com/x:v1.2\n");
    assert.equal(renderTemplate("{{.Missing}}", rows.slice(0, 1)), "<no value>\n");
    assert.equal(renderTemplate("{{.ID}}", []), "");
  });

  test("renderTemplate: json", () => {
    const out = renderTemplate("{{json .}}", rows);
    assert.deepEqual(
      out.trimEnd().split("\n").map((l) => JSON.parse(l)),
      rows,
    );
    assert.equal(renderTemplate("{{json .Tag}}", rows.slice(0, 1)), '"latest"\n');
  });

  test("renderTemplate: table adds a header row", () => {
    // as typed on a shell: a literal backslash-t
    const out = renderTemplate("table {{.Repository}}\\t{{.Tag}}", rows);
    const lines = out.trimEnd().split("\n");
    assert.equal(lines.length, 3);
    assert.deepEqual(lines[0].split(/\s+/), ["REPOSITORY", "TAG"]);
    assert.deepEqual(lines[1].split(/\s+/), ["busybox", "latest"]);
    assert.deepEqual(lines[2].split(/\s+/), ["registry.example.com/x", "v1.2"]);
    assert.deepEqual(renderTemplate("{{.ID}}\\t{{.Tag}}", rows.slice(0, 1)), "0123456789ab\tlatest\n", "no table: tabs stay tabs");
  });

  test("renderTemplate: table columns are aligned like docker's tabwriter (minwidth 10, padding 3, no tabs)", () => {
    // docker/cli formatter: tabwriter.NewWriter(out, 10, 1, 3, ' ', 0); the last cell is not padded
    const out = renderTemplate("table {{.Repository}}\\t{{.Tag}}\\t{{.Size}}", rows);
    assert.equal(
      out,
      "REPOSITORY               TAG       SIZE\n" +
        "busybox                  latest    2MB\n" +
        "registry.example.com/x   v1.2      1kB\n",
    );
  });
});

// ---------------------------------------------------------------------------
describe("engine/changes applyChange", () => {
  type Cfg = Parameters<typeof applyChange>[0];

  test("CMD exec form and shell form", () => {
    const c: Cfg = {};
    applyChange(c, 'CMD ["echo", "hello world"]');
    assert.deepEqual(c.Cmd, ["echo", "hello world"]);
    applyChange(c, "CMD echo hello world");
    assert.deepEqual(c.Cmd, ["/bin/sh", "-c", "echo hello world"]);
    applyChange(c, "cmd [not json");
    assert.deepEqual(c.Cmd, ["/bin/sh", "-c", "[not json"]);
  });

  test("ENTRYPOINT exec form and shell form", () => {
    const c: Cfg = {};
    applyChange(c, 'ENTRYPOINT ["/bin/busybox", "sh"]');
    assert.deepEqual(c.Entrypoint, ["/bin/busybox", "sh"]);
    applyChange(c, "ENTRYPOINT exec top -b");
    assert.deepEqual(c.Entrypoint, ["/bin/sh", "-c", "exec top -b"]);
  });

  test("ENV key=value pairs, the space form, and replacement of an existing key", () => {
    const c: Cfg = { Env: ["PATH=/bin", "KEEP=1"] };
    applyChange(c, "ENV A=1 B=two");
    assert.deepEqual(c.Env, ["PATH=/bin", "KEEP=1", "A=1", "B=two"]);
    applyChange(c, "ENV C hello  world");
    assert.deepEqual(c.Env, ["PATH=/bin", "KEEP=1", "A=1", "B=two", "C=hello  world"]);
    applyChange(c, "ENV PATH=/usr/bin:/bin");
    assert.deepEqual(c.Env, ["PATH=/usr/bin:/bin", "KEEP=1", "A=1", "B=two", "C=hello  world"]);
    applyChange(c, "ENV D=a=b");
    assert.equal(c.Env!.at(-1), "D=a=b");
  });

  test("ENV and LABEL values in quotes keep their spaces and lose the quotes (as docker import -c)", () => {
    const c: Cfg = {};
    applyChange(c, 'ENV A="hello world" B=2');
    assert.deepEqual(c.Env, ["A=hello world", "B=2"]);
    applyChange(c, 'ENV Q="x"');
    assert.deepEqual(c.Env, ["A=hello world", "B=2", "Q=x"]);
    applyChange(c, 'LABEL description="a b c" version=1 "quoted.key"="v"');
    assert.deepEqual(c.Labels, { description: "a b c", version: "1", "quoted.key": "v" });
  });

  test("LABEL, EXPOSE, WORKDIR, USER, STOPSIGNAL, VOLUME", () => {
    const c: Cfg = {};
    applyChange(c, 'LABEL a=b e="f"');
    assert.equal(c.Labels!.a, "b");
    assert.equal(c.Labels!.e, "f");
    applyChange(c, "LABEL a=changed");
    assert.equal(c.Labels!.a, "changed");
    applyChange(c, "EXPOSE 80 53/udp 443/tcp");
    assert.deepEqual(c.ExposedPorts, { "80/tcp": {}, "53/udp": {}, "443/tcp": {} });
    applyChange(c, "WORKDIR /app ");
    assert.equal(c.WorkingDir, "/app");
    applyChange(c, "USER 1000:1000");
    assert.equal(c.User, "1000:1000");
    applyChange(c, "STOPSIGNAL SIGKILL");
    assert.equal(c.StopSignal, "SIGKILL");
    applyChange(c, 'VOLUME ["/data", "/logs"]');
    applyChange(c, "VOLUME /cache");
    assert.deepEqual(c.Volumes, { "/data": {}, "/logs": {}, "/cache": {} });
  });

  test("an unsupported instruction, or one without arguments, is INVALID_ARGUMENT", () => {
    const c: Cfg = {};
    throwsCode(() => applyChange(c, "RUN echo hi"), "INVALID_ARGUMENT", /RUN is not supported/);
    throwsCode(() => applyChange(c, "FROM busybox"), "INVALID_ARGUMENT", /not supported/);
    throwsCode(() => applyChange(c, "CMD"), "INVALID_ARGUMENT");
    throwsCode(() => applyChange(c, ""), "INVALID_ARGUMENT");
    assert.deepEqual(c, {}, "a refused change leaves the config alone");
  });
});

// ---------------------------------------------------------------------------
interface Entry {
  name: string;
  type: string;
  linkname?: string | null;
  mtime: number;
  mode: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  body: Buffer;
}

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function entries(tar: Buffer): Promise<Entry[]> {
  const out: Entry[] = [];
  const ex = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  ex.on("entry", (h, stream, next) => {
    const body: Buffer[] = [];
    stream.on("data", (c: unknown) => void body.push(c as Buffer));
    stream.on("end", () => {
      out.push({
        name: h.name,
        type: h.type ?? "file",
        linkname: h.linkname,
        mtime: h.mtime ? h.mtime.getTime() / 1000 : NaN,
        mode: h.mode ?? 0,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        uname: h.uname,
        gname: h.gname,
        body: Buffer.concat(body),
      });
      next();
    });
    stream.resume();
  });
  ex.end(tar);
  await done;
  return out;
}

describe("archive", () => {
  test("detectCompression reads magic bytes", () => {
    assert.equal(detectCompression(gzipSync(Buffer.from("hello"))), "gzip");
    assert.equal(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58])), "zstd");
    const zstd = spawnSync("zstd", ["-c", "-q"], { input: Buffer.from("hello") });
    assert.equal(zstd.status, 0, `zstd (a listed system package): ${zstd.error ?? zstd.stderr}`);
    assert.equal(detectCompression(zstd.stdout), "zstd");
    assert.equal(detectCompression(Buffer.from("plain text")), "none");
    assert.equal(detectCompression(Buffer.alloc(0)), "none");
    assert.equal(detectCompression(Buffer.from([0x1f])), "none");
    assert.equal(detectCompression(Buffer.from([0x28, 0xb5, 0x2f])), "none");
  });

  test("isTarHeader recognises a real header and refuses garbage", async () => {
    const tar = await makeTar([{ name: "hello.txt", content: "hi" }]);
    assert.equal(isTarHeader(tar.subarray(0, 512)), true);
    assert.equal(isTarHeader(tar.subarray(0, 511)), false, "short block");
    assert.equal(isTarHeader(Buffer.alloc(512)), false, "zero block");
    const flipped = Buffer.from(tar.subarray(0, 512));
    flipped[0] ^= 0x20;
    assert.equal(isTarHeader(flipped), false, "checksum no longer matches");
    const garbage = Buffer.alloc(512);
    for (let i = 0; i < 512; i++) garbage[i] = (i * 131 + 7) & 0xff;
    assert.equal(isTarHeader(garbage), false);
    assert.equal(isTarHeader(Buffer.from("not a tar".padEnd(512, "x"))), false);
    assert.equal(isTarHeader(gzipSync(tar).subarray(0, 512)), false);
  });

  /** A small tree with a file, a directory, a symlink, a hardlink pair and a FIFO. */
  function makeTree(dir: string, mtime: number): void {
    mkdirSync(join(dir, "etc"), { recursive: true });
    mkdirSync(join(dir, "bin"));
    writeFileSync(join(dir, "bin", "tool"), "#!/bin/sh\necho tool\n", { mode: 0o755 });
    writeFileSync(join(dir, "etc", "hosts"), "127.0.0.1 localhost\n");
    writeFileSync(join(dir, "a.txt"), "a\n");
    writeFileSync(join(dir, "hard1"), "shared inode\n");
    linkSync(join(dir, "hard1"), join(dir, "hard2"));
    symlinkSync("bin/tool", join(dir, "link"));
    symlinkSync("/nonexistent/target", join(dir, "etc", "dangling"));
    const fifo = spawnSync("mkfifo", [join(dir, "pipe")]);
    assert.equal(fifo.status, 0, `mkfifo: ${fifo.stderr}`);
    for (const p of ["bin/tool", "etc/hosts", "a.txt", "hard1", "pipe", "bin", "etc", ""]) utimesSync(join(dir, p), mtime, mtime);
    lutimesSync(join(dir, "link"), mtime, mtime);
    lutimesSync(join(dir, "etc", "dangling"), mtime, mtime);
    utimesSync(join(dir, "etc"), mtime, mtime);
  }

  function withEpoch(t: { after: (fn: () => void) => void }, value: string | undefined): void {
    const saved = process.env.SOURCE_DATE_EPOCH;
    t.after(() => {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    });
    if (value === undefined) delete process.env.SOURCE_DATE_EPOCH;
    else process.env.SOURCE_DATE_EPOCH = value;
  }

  test("packDirectory: sorted entries with symlinks, a hardlink pair and a FIFO", async (t) => {
    withEpoch(t, undefined);
    const dir = tempDir(t);
    makeTree(dir, 1_600_000_000);
    const tar = await collect(packDirectory(dir));
    assert.equal(tar.length % 512, 0);
    const es = await entries(tar);
    assert.deepEqual(
      es.map((e) => [e.name, e.type]),
      [
        ["a.txt", "file"],
        ["bin/", "directory"],
        ["bin/tool", "file"],
        ["etc/", "directory"],
        ["etc/dangling", "symlink"],
        ["etc/hosts", "file"],
        ["hard1", "file"],
        ["hard2", "link"],
        ["link", "symlink"],
        ["pipe", "fifo"],
      ],
    );
    const by = new Map(es.map((e) => [e.name, e]));
    assert.equal(by.get("hard1")!.body.toString(), "shared inode\n");
    assert.equal(by.get("hard2")!.linkname, "hard1");
    assert.equal(by.get("hard2")!.body.length, 0);
    assert.equal(by.get("link")!.linkname, "bin/tool");
    assert.equal(by.get("etc/dangling")!.linkname, "/nonexistent/target");
    assert.equal(by.get("bin/tool")!.body.toString(), "#!/bin/sh\necho tool\n");
    assert.equal(by.get("bin/tool")!.mode & 0o777, 0o755);
    for (const e of es) {
      assert.ok(!e.name.startsWith("/") && !e.name.startsWith("./"), `relative name ${e.name}`);
      assert.equal(e.uname ?? "", "", `no user name in ${e.name}`);
      assert.equal(e.gname ?? "", "", `no group name in ${e.name}`);
      assert.equal(e.uid, process.getuid!());
      assert.equal(e.mtime, 1_600_000_000, `mtime of ${e.name}`);
    }
  });

  test("packDirectory is deterministic: the same tree twice gives the same bytes", async (t) => {
    withEpoch(t, undefined);
    const dir = tempDir(t);
    makeTree(dir, 1_500_000_000);
    const a = await collect(packDirectory(dir));
    const b = await collect(packDirectory(dir));
    assert.ok(a.length > 0);
    assert.ok(a.equals(b), "two packs of one tree differ");
  });

  test("packDirectory clamps mtimes to SOURCE_DATE_EPOCH, so trees made at different times pack alike", async (t) => {
    withEpoch(t, "1000000");
    const one = tempDir(t);
    const two = tempDir(t);
    makeTree(one, 1_600_000_000);
    makeTree(two, 1_700_000_000);
    const a = await collect(packDirectory(one));
    const b = await collect(packDirectory(two));
    for (const e of await entries(a)) assert.equal(e.mtime, 1_000_000, `mtime of ${e.name}`);
    assert.ok(a.equals(b), "the same tree with other mtimes packs differently under SOURCE_DATE_EPOCH");
    // an older mtime is kept: the epoch is a ceiling, not a constant
    utimesSync(join(one, "a.txt"), 500, 500);
    const c = await entries(await collect(packDirectory(one)));
    assert.equal(c.find((e) => e.name === "a.txt")!.mtime, 500);
    assert.equal(c.find((e) => e.name === "etc/hosts")!.mtime, 1_000_000);
  });

  test("packDirectory refuses a bad SOURCE_DATE_EPOCH", (t) => {
    withEpoch(t, "yesterday");
    const dir = tempDir(t);
    throwsCode(() => packDirectory(dir), "INVALID_ARGUMENT", /SOURCE_DATE_EPOCH/);
  });
});
