import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { strata, ok, tempDir, busyboxRootfs, sha256 } from "./helpers.ts";

/** Podman with its own storage under `dir`, so tests never touch the host's images. */
function podmanIn(dir: string, t: { after: (fn: () => void) => void }) {
  const args = ["--root", join(dir, "podman-root"), "--runroot", join(dir, "podman-run"), "--storage-driver", "vfs"];
  t.after(() => {
    // Runs after tempDir's removal (hooks run in order) and podman recreates its directories: remove them again.
    spawnSync("podman", [...args, "system", "reset", "-f"], { stdio: "ignore" });
    rmSync(dir, { recursive: true, force: true });
  });
  return (...cmd: string[]) => {
    const r = spawnSync("podman", [...args, ...cmd], { maxBuffer: 64 << 20 });
    const out = { code: r.status ?? 128, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
    if (out.code !== 0) throw new Error(`podman ${cmd.join(" ")} exited ${out.code}: ${out.stderr}`);
    return out;
  };
}

function tool(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout.toString();
}

test("strata save → podman load → podman run prints what the image holds (both formats)", (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const podman = podmanIn(dir, t);
  ok(strata(root, ["import", "-c", 'CMD ["cat", "/greeting"]', busyboxRootfs(join(dir, "rootfs"), { greeting: "hello from strata\n" }), "localhost/interop/hello:1"]));
  for (const format of ["docker-archive", "oci-archive"]) {
    const file = join(dir, `${format}.tar`);
    ok(strata(root, ["save", "--format", format, "-o", file, "localhost/interop/hello:1"]));
    podman("load", "-i", file);
    assert.equal(podman("run", "--rm", "localhost/interop/hello:1").stdout, "hello from strata\n", format);
    assert.equal(podman("run", "--rm", "localhost/interop/hello:1", "sh", "-c", "echo $((6*7))").stdout, "42\n", format);
    const [inspect] = JSON.parse(ok(strata(root, ["inspect", "localhost/interop/hello:1"])).stdout);
    assert.equal(podman("image", "inspect", "--format", "{{.Id}}", "localhost/interop/hello:1").stdout.trim(), inspect.Id.slice(7), `${format}: podman sees the same image ID`);
    podman("rmi", "-f", "localhost/interop/hello:1");
  }
});

test("podman save (docker-archive and oci-archive) → strata load: the digests podman's tools report", (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const podman = podmanIn(dir, t);
  const rootfsTar = join(dir, "rootfs.tar");
  tool("tar", "-C", busyboxRootfs(join(dir, "rootfs"), { "etc/os-release": "ID=strata-test\n" }), "-cf", rootfsTar, ".");
  const id = podman("import", "--change", "CMD [\"sh\"]", rootfsTar, "localhost/from/podman:1").stdout.trim();
  for (const format of ["docker-archive", "oci-archive"]) {
    const file = join(dir, `p-${format}.tar`);
    podman("save", "--format", format, "-o", file, "localhost/from/podman:1");
    // skopeo (podman's own image library) reports the manifest digest the archive stands for.
    const reported = JSON.parse(tool("skopeo", "inspect", `${format}:${file}`)).Digest;
    const fresh = join(dir, `root-${format}`);
    assert.equal(ok(strata(fresh, ["load", "-i", file])).stdout, "Loaded image: localhost/from/podman:1\n");
    const [inspect] = JSON.parse(ok(strata(fresh, ["inspect", "localhost/from/podman:1"])).stdout);
    assert.equal(inspect.Id, id.startsWith("sha256:") ? id : `sha256:${id}`, `${format}: config digest = podman's image ID`);
    assert.equal(inspect.Descriptor.digest, reported, `${format}: manifest digest = what skopeo reports`);
    const raw = tool("skopeo", "inspect", "--raw", `${format}:${file}`);
    assert.equal(sha256(readFileSync(join(fresh, "blobs", "sha256", reported.slice(7)))), sha256(raw), `${format}: manifest bytes identical`);
    ok(strata(fresh, ["check"]));
  }
});

test("the store is an OCI layout: skopeo and umoci read images straight out of it", (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  ok(strata(root, ["import", busyboxRootfs(join(dir, "rootfs"), { "srv/data.txt": "layout works\n" }), "layout/test:v1"]));
  const [inspect] = JSON.parse(ok(strata(root, ["inspect", "layout/test:v1"])).stdout);
  const ref = `${root}:docker.io/layout/test:v1`;
  const sk = JSON.parse(tool("skopeo", "inspect", `oci:${ref}`));
  assert.equal(sk.Digest, inspect.Descriptor.digest);
  const copy = join(dir, "copy");
  tool("skopeo", "copy", "--quiet", `oci:${ref}`, `dir:${copy}`);
  assert.ok(existsSync(join(copy, inspect.Layers[0].digest.slice(7))));
  const bundle = join(dir, "bundle");
  tool("umoci", "raw", "unpack", "--rootless", "--image", ref, bundle);
  assert.equal(readFileSync(join(bundle, "srv", "data.txt"), "utf8"), "layout works\n");
  assert.match(tool("umoci", "ls", "--layout", root), /docker\.io\/layout\/test:v1/);
});
