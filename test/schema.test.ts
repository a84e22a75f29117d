// What strata writes validates against the OCI image-spec JSON schemas, read in place from ../shared/corpus.
import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join, basename } from "node:path";
import { createHash } from "node:crypto";
import AjvModule, { type ValidateFunction } from "ajv-draft-04";
import tarStream from "tar-stream";
import { BIN, CORPUS, busyboxRootfs, ok, strata, tempDir } from "./helpers.js";

const SCHEMA_DIR = join(CORPUS, "image-spec-schema");

// A CommonJS module: under NodeNext its default import is module.exports, whose `default` is the class.
const Ajv = AjvModule.default;

const MT = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
};

interface Validators {
  layout: ValidateFunction;
  index: ValidateFunction;
  manifest: ValidateFunction;
  config: ValidateFunction;
}

/**
 * The schemas are draft-04 and refer to each other by file name, relative to
 * ids such as https://opencontainers.org/schema/image/manifest. Each file is
 * added under its file name (and, through its `id`, under that); any other URI
 * a `$ref` resolves to is answered with the file of the same name.
 */
async function loadValidators(): Promise<Validators> {
  const files = new Map<string, { id?: string }>();
  for (const f of readdirSync(SCHEMA_DIR).filter((f) => f.endsWith(".json")))
    files.set(f, JSON.parse(readFileSync(join(SCHEMA_DIR, f), "utf8")) as { id?: string });
  for (const f of ["image-layout-schema.json", "image-index-schema.json", "image-manifest-schema.json", "config-schema.json", "content-descriptor.json", "defs-descriptor.json", "defs.json"])
    assert.ok(files.has(f), `${f} missing from ${SCHEMA_DIR}`);
  const ajv = new Ajv({
    strict: false,
    allErrors: true,
    logger: false,
    loadSchema: async (uri: string) => {
      const schema = files.get(basename(new URL(uri).pathname));
      if (!schema) throw new Error(`schema ${uri} is not in ${SCHEMA_DIR}`);
      // one with an id is already registered under it; one without is added again under this URI
      return schema.id ? { $ref: schema.id } : structuredClone(schema);
    },
  });
  // The formats these schemas use, without ajv-formats.
  ajv.addFormat("date-time", /^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)$/);
  ajv.addFormat("uri", (s: string) => {
    try {
      new URL(s);
      return true;
    } catch {
      return false;
    }
  });
  for (const [f, schema] of files) ajv.addSchema(schema, f);
  const compile = (f: string) => ajv.compileAsync({ $ref: f });
  return {
    layout: await compile("image-layout-schema.json"),
    index: await compile("image-index-schema.json"),
    manifest: await compile("image-manifest-schema.json"),
    config: await compile("config-schema.json"),
  };
}

let v: Validators;
before(async () => {
  v = await loadValidators();
});

function assertValid(validate: ValidateFunction, doc: unknown, what: string): void {
  const valid = validate(doc);
  assert.ok(valid, `${what} does not validate: ${JSON.stringify(validate.errors, null, 1)}\n${JSON.stringify(doc)}`);
}

function assertInvalid(validate: ValidateFunction, doc: unknown, what: string, path?: string): void {
  assert.equal(validate(doc), false, `${what} validated but should not have`);
  if (path) assert.ok(validate.errors!.some((e) => e.instancePath === path), `${what}: no error at ${path}: ${JSON.stringify(validate.errors)}`);
}

const sha256 = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const hexOf = (d: string) => d.slice("sha256:".length);

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/**
 * Validates an OCI layout held as `get(path)` (a store root or an extracted
 * archive): oci-layout, index.json, every manifest and config, and that every
 * descriptor matches the blob it names. Returns the number of manifests seen.
 */
function validateLayout(get: (path: string) => Buffer | undefined, what: string): { manifests: number; refNames: string[] } {
  const layoutRaw = get("oci-layout");
  assert.ok(layoutRaw, `${what}: no oci-layout`);
  assertValid(v.layout, JSON.parse(layoutRaw.toString()), `${what} oci-layout`);
  const indexRaw = get("index.json");
  assert.ok(indexRaw, `${what}: no index.json`);
  const index = JSON.parse(indexRaw.toString()) as { manifests: (Descriptor & { annotations?: Record<string, string> })[] };
  assertValid(v.index, index, `${what} index.json`);

  const blob = (d: Descriptor, role: string): Buffer => {
    const raw = get(`blobs/sha256/${hexOf(d.digest)}`);
    assert.ok(raw, `${what}: ${role} blob ${d.digest} is missing`);
    assert.equal(raw.length, d.size, `${what}: ${role} ${d.digest} size`);
    assert.equal(sha256(raw), d.digest, `${what}: ${role} ${d.digest} content`);
    return raw;
  };

  let manifests = 0;
  const refNames: string[] = [];
  for (const entry of index.manifests) {
    const name = entry.annotations?.["org.opencontainers.image.ref.name"];
    if (name) refNames.push(name);
    assert.equal(entry.mediaType, MT.manifest, `${what}: index entry ${entry.digest} media type`);
    const manifest = JSON.parse(blob(entry, "manifest").toString()) as { mediaType?: string; config: Descriptor; layers: Descriptor[] };
    assertValid(v.manifest, manifest, `${what} manifest ${entry.digest}`);
    manifests++;
    assert.equal(manifest.mediaType, MT.manifest);
    assert.equal(manifest.config.mediaType, MT.config);
    const config = JSON.parse(blob(manifest.config, "config").toString()) as { rootfs: { diff_ids: string[] } };
    assertValid(v.config, config, `${what} config ${manifest.config.digest}`);
    assert.equal(config.rootfs.diff_ids.length, manifest.layers.length, `${what}: one diff_id per layer`);
    for (const l of manifest.layers) blob(l, "layer");
  }
  return { manifests, refNames };
}

async function untar(buf: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const ex = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  ex.on("entry", (h, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: unknown) => void chunks.push(c as Buffer));
    stream.on("end", () => {
      assert.equal(out.has(h.name), false, `duplicate archive entry ${h.name}`);
      if (h.type === "file") out.set(h.name, Buffer.concat(chunks));
      next();
    });
  });
  ex.end(buf);
  await done;
  return out;
}

function storeReader(root: string): (path: string) => Buffer | undefined {
  return (p) => {
    try {
      return readFileSync(join(root, p));
    } catch {
      return undefined;
    }
  };
}

/** A store with two imported images: a plain one and one with a full run config. */
function buildStore(t: { after: (fn: () => void) => void }): { root: string; work: string } {
  const work = tempDir(t, "strata-schema-");
  const root = join(work, "root");
  const rootfs = busyboxRootfs(join(work, "rootfs"), { "etc/motd": "hello from strata\n" });
  ok(strata(root, ["import", rootfs, "name:tag"]), "strata import");
  ok(
    strata(root, [
      "import",
      "-c", 'CMD ["sh", "-c", "echo hi"]',
      "-c", 'ENTRYPOINT ["/bin/busybox"]',
      "-c", "ENV A=1 B=two",
      "-c", "LABEL org.example.k=v",
      "-c", "EXPOSE 80 53/udp",
      "-c", "WORKDIR /srv",
      "-c", "USER 1000:1000",
      "-c", "VOLUME /data",
      "-c", "STOPSIGNAL SIGTERM",
      "-m", "with a config",
      rootfs,
      "registry.example.com:5000/team/app:v1.2",
    ]),
    "strata import -c",
  );
  return { root, work };
}

describe("OCI image-spec schemas", () => {
  test("the schemas load from the corpus and reject what they should (negative controls)", () => {
    const good = {
      schemaVersion: 2,
      mediaType: MT.manifest,
      config: { mediaType: MT.config, digest: "sha256:" + "a".repeat(64), size: 2 },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: "sha256:" + "b".repeat(64), size: 3 }],
    };
    assertValid(v.manifest, good, "hand-made manifest");
    assertInvalid(v.manifest, { ...good, config: { ...good.config, size: "2" } }, "manifest with size as a string", "/config/size");
    assertInvalid(v.manifest, { ...good, schemaVersion: 1 }, "manifest with schemaVersion 1", "/schemaVersion");
    assertInvalid(v.manifest, { ...good, layers: [{ ...good.layers[0], digest: "sha256" }] }, "manifest with a bad layer digest", "/layers/0/digest");
    assertInvalid(v.manifest, { ...good, layers: [{ ...good.layers[0], mediaType: "gzip" }] }, "manifest with a bad media type", "/layers/0/mediaType");
    assertInvalid(v.manifest, { ...good, annotations: { k: 1 } }, "manifest with a non-string annotation", "/annotations/k");
    assertInvalid(v.manifest, (({ config: _c, ...r }) => r)(good), "manifest without config");
    assertInvalid(v.index, { schemaVersion: 2, mediaType: MT.index }, "index without manifests");
    assertInvalid(v.index, { schemaVersion: 2, manifests: [{ ...good.config, size: 1.5 }] }, "index entry with a fractional size", "/manifests/0/size");
    assertInvalid(v.config, { architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, created: "yesterday" }, "config with a bad date", "/created");
    assertInvalid(v.config, { architecture: "amd64", os: "linux", rootfs: { type: "layers" } }, "config without diff_ids");
    assertInvalid(v.layout, { imageLayoutVersion: "2.0.0" }, "layout of another version");
  });

  test("the store root is a valid OCI image layout: oci-layout, index.json, manifests, configs", (t) => {
    const { root } = buildStore(t);
    const { manifests, refNames } = validateLayout(storeReader(root), "store");
    assert.equal(manifests, 2);
    assert.deepEqual(refNames.sort(), ["docker.io/library/name:tag", "registry.example.com:5000/team/app:v1.2"]);

    // the config carrying every --change validates too, and holds what was asked
    const index = JSON.parse(readFileSync(join(root, "index.json"), "utf8")) as { manifests: (Descriptor & { annotations: Record<string, string> })[] };
    const entry = index.manifests.find((m) => m.annotations["org.opencontainers.image.ref.name"].endsWith("app:v1.2"))!;
    const manifest = JSON.parse(readFileSync(join(root, "blobs", "sha256", hexOf(entry.digest)), "utf8")) as { config: Descriptor };
    const config = JSON.parse(readFileSync(join(root, "blobs", "sha256", hexOf(manifest.config.digest)), "utf8"));
    assert.deepEqual(config.config.Cmd, ["sh", "-c", "echo hi"]);
    assert.deepEqual(config.config.ExposedPorts, { "80/tcp": {}, "53/udp": {} });
    assert.deepEqual(config.config.Volumes, { "/data": {} });
    assertValid(v.config, config, "config with run settings");
    // a deliberately broken copy of a real config fails, so the check above has teeth
    assertInvalid(v.config, { ...config, config: { ...config.config, Env: "A=1" } }, "config with Env as a string", "/config/Env");

    // every blob in the store is one the layout references (nothing stray, nothing partial)
    const referenced = new Set<string>();
    for (const m of index.manifests) {
      referenced.add(hexOf(m.digest));
      const man = JSON.parse(readFileSync(join(root, "blobs", "sha256", hexOf(m.digest)), "utf8")) as { config: Descriptor; layers: Descriptor[] };
      referenced.add(hexOf(man.config.digest));
      for (const l of man.layers) referenced.add(hexOf(l.digest));
    }
    assert.deepEqual(readdirSync(join(root, "blobs", "sha256")).sort(), [...referenced].sort());
    for (const hex of referenced) assert.ok(statSync(join(root, "blobs", "sha256", hex)).isFile());
  });

  test("a real manifest with its size as a string fails validation", (t) => {
    const { root } = buildStore(t);
    const index = JSON.parse(readFileSync(join(root, "index.json"), "utf8")) as { manifests: Descriptor[] };
    const manifest = JSON.parse(readFileSync(join(root, "blobs", "sha256", hexOf(index.manifests[0].digest)), "utf8"));
    assertValid(v.manifest, manifest, "stored manifest");
    const broken = { ...manifest, layers: [{ ...manifest.layers[0], size: String(manifest.layers[0].size) }] };
    assertInvalid(v.manifest, broken, "manifest with a layer size as a string", "/layers/0/size");
    assertInvalid(v.index, { ...index, manifests: [{ ...index.manifests[0], digest: "not-a-digest" }] }, "index with a bad digest", "/manifests/0/digest");
  });

  test("strata save --format oci-archive writes a valid OCI image layout", async (t) => {
    const { root, work } = buildStore(t);
    const out = join(work, "images.oci.tar");
    ok(strata(root, ["save", "--format", "oci-archive", "-o", out, "name:tag", "registry.example.com:5000/team/app:v1.2"]), "strata save");
    const files = await untar(readFileSync(out));
    const { manifests, refNames } = validateLayout((p) => files.get(p), "oci-archive");
    assert.equal(manifests, 2);
    assert.deepEqual(refNames.sort(), ["docker.io/library/name:tag", "registry.example.com:5000/team/app:v1.2"]);
    // both images share their one layer (same rootfs): it is written once
    const blobs = [...files.keys()].filter((n) => n.startsWith("blobs/sha256/"));
    assert.equal(new Set(blobs).size, blobs.length);
  });

  test("strata save --format oci-archive to stdout is a valid layout too", async (t) => {
    const { root } = buildStore(t);
    const r = spawnSync(process.execPath, [BIN, "--root", root, "save", "--format", "oci-archive", "name:tag"], { maxBuffer: 256 * 1024 * 1024 });
    assert.equal(r.status, 0, r.stderr.toString());
    const files = await untar(r.stdout);
    const { manifests, refNames } = validateLayout((p) => files.get(p), "oci-archive on stdout");
    assert.equal(manifests, 1);
    assert.deepEqual(refNames, ["docker.io/library/name:tag"]);
  });
});
