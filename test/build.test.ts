// strata build: Dockerfiles built by strata and by podman (buildah) from the same base and context must give the
// same root filesystem and config; the cache keys on content; SOURCE_DATE_EPOCH makes builds reproducible.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { strata, ok, tempDir, have } from "./helpers.ts";

/** A busybox base: a shell, users and groups, a file to delete and a directory to replace. */
function baseRootfs(dir: string): string {
  for (const d of ["bin", "etc", "usr/share/doc/pkg", "var/lib", "home/app"]) mkdirSync(join(dir, d), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  for (const a of spawnSync("/bin/busybox", ["--list"], { encoding: "utf8" }).stdout.split("\n").filter((a) => a && a !== "busybox")) symlinkSync("busybox", join(dir, "bin", a));
  writeFileSync(join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n");
  writeFileSync(join(dir, "etc", "group"), "root:x:0:\napp:x:1000:\n");
  writeFileSync(join(dir, "usr", "share", "doc", "pkg", "README"), "docs\n");
  writeFileSync(join(dir, "var", "lib", "state"), "state\n");
  return dir;
}

/** path → type, mode, owner, size, content hash or link target: what two builds must agree on. */
function tree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, p));
      const own = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        out[p] = `dir ${own}`;
        walk(p);
      } else if (st.isSymbolicLink()) out[p] = `link ${readlinkSync(join(root, p))}`;
      else out[p] = `file ${own} ${st.size} ${createHash("sha256").update(readFileSync(join(root, p))).digest("hex").slice(0, 16)} nlink=${st.nlink}`;
    }
  };
  walk("");
  return out;
}

interface Fixture {
  root: string;
  dir: string;
  base: string;
}

function fixture(t: { after: (fn: () => void) => void }): Fixture {
  const ref: { root?: string } = {};
  t.after(() => {
    if (!ref.root) return;
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(ref.root!));
    for (const m of mounts.reverse()) spawnSync("umount", ["-l", m]);
  });
  const dir = tempDir(t, "strata-build-");
  const root = join(dir, "root");
  ref.root = root;
  const base = `localhost/strata-build-base:${process.pid}`;
  ok(strata(root, ["import", "-c", 'CMD ["sh"]', baseRootfs(join(dir, "base")), base]));
  return { root, dir, base };
}

/** The differential context: multi-stage, COPY --from, --chown, USER, WORKDIR, ENV/ARG expansion, deletions, links, .dockerignore. */
function writeContext(dir: string, base: string): string {
  const ctx = join(dir, "ctx");
  mkdirSync(join(ctx, "src", "lib"), { recursive: true });
  mkdirSync(join(ctx, "secret"), { recursive: true });
  writeFileSync(join(ctx, "src", "main.sh"), "#!/bin/sh\necho main\n", { mode: 0o755 });
  writeFileSync(join(ctx, "src", "lib", "util.sh"), "util\n");
  writeFileSync(join(ctx, "src", "notes.tmp"), "ignored\n");
  writeFileSync(join(ctx, "secret", "key"), "do not copy\n");
  writeFileSync(join(ctx, "config.json"), '{"a":1}\n');
  symlinkSync("main.sh", join(ctx, "src", "start"));
  writeFileSync(join(ctx, "src", "tool"), "#!/bin/sh\necho tool\n");
  chmodSync(join(ctx, "src", "tool"), 0o4755); // setuid: kept by COPY
  writeFileSync(join(ctx, ".dockerignore"), "secret\n**/*.tmp\n");
  writeFileSync(
    join(ctx, "Dockerfile"),
    `ARG BASE=${base}
FROM \${BASE} AS build
ARG VERSION=1.2
ENV PREFIX=/opt/app DIR=lib
WORKDIR \${PREFIX}
COPY src/ ./src/
RUN mkdir -p out && echo "version \${VERSION}" > out/version && ln out/version out/version.hard && ln -s version out/version.sym
RUN rm -rf /usr/share/doc && rm /var/lib/state && mkdir -p /var/lib/state && echo dir > /var/lib/state/now-a-dir

FROM ${base}
LABEL org.opencontainers.image.title="demo app" stage=final
ENV PREFIX=/opt/app PATH=/opt/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /opt/app
COPY --from=build /opt/app/out/ ./bin/
COPY --chown=app:app config.json src/\${NOPE:-main.sh} ./
COPY --from=build /var/lib/state /srv/state
COPY src/tool src/start /opt/app/tools/
RUN rm -rf /usr/share/doc && chmod 0750 /opt/app/bin
USER app
EXPOSE 8080/tcp 9000
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD ["sh", "-c", "true"]
ENTRYPOINT ["/opt/app/main.sh"]
CMD ["--serve"]
`,
  );
  return ctx;
}

const CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes", "StopSignal", "Healthcheck"];

test("a Dockerfile built by strata and by podman gives the same root filesystem and config", { skip: !have("podman") && "podman is not installed" }, (t) => {
  const f = fixture(t);
  const ctx = writeContext(f.dir, f.base);
  const tag = `localhost/strata-build-diff:${process.pid}`;
  const built = ok(strata(f.root, ["build", "-q", "-t", tag, ctx]));
  assert.match(built.stdout, /^sha256:[0-9a-f]{64}\n$/);

  // The same base and context for podman.
  const archive = join(f.dir, "base.tar");
  ok(strata(f.root, ["save", "-o", archive, f.base]));
  t.after(() => spawnSync("podman", ["rmi", "-f", f.base, tag]));
  assert.equal(spawnSync("podman", ["load", "-i", archive]).status, 0);
  const pb = spawnSync("podman", ["build", "--format", "docker", "--layers", "--pull=never", "-q", "-t", tag, ctx], { encoding: "utf8" });
  assert.equal(pb.status, 0, pb.stderr);

  // Trees: strata's through a container mount, podman's through its own.
  const cid = ok(strata(f.root, ["create", tag])).stdout.trim();
  const ours = tree(ok(strata(f.root, ["mount", cid])).stdout.trim());
  const pcid = spawnSync("podman", ["create", tag], { encoding: "utf8" }).stdout.trim();
  t.after(() => spawnSync("podman", ["rm", "-f", pcid]));
  const pmount = spawnSync("podman", ["mount", pcid], { encoding: "utf8" }).stdout.trim();
  const theirs = tree(pmount);
  spawnSync("podman", ["umount", pcid]);
  ok(strata(f.root, ["umount", cid]));
  // Explained differences: the runtime's mount points. strata's containers get /proc, /sys, /dev and the
  // /etc files from their init layer; podman's image keeps the empty mount points buildah's RUN left.
  const runtime = /^(proc|sys|dev|run|etc\/hosts|etc\/hostname|etc\/resolv\.conf)(\/|$)/;
  // Explained: buildah drops a setuid bit on COPY (its open issue #574, "copy drops setuid bit"); Docker keeps it, as strata does.
  assert.match(theirs["opt/app/tools/tool"], /^file 755 /);
  theirs["opt/app/tools/tool"] = theirs["opt/app/tools/tool"].replace(/^file 755 /, "file 4755 ");
  const strip = (m: Record<string, string>) => Object.fromEntries(Object.entries(m).filter(([p]) => !runtime.test(p)));
  assert.deepEqual(strip(ours), strip(theirs));
  // What the Dockerfile asked for is really there.
  assert.match(ours["opt/app/config.json"], /^file 644 1000:1000 /, "--chown with names from the image's passwd");
  assert.equal(ours["opt/app/bin/version.sym"], "link version");
  assert.match(ours["opt/app/bin/version.hard"], /nlink=2$/, "hardlinks stay hardlinks");
  assert.equal(ours["usr/share/doc"], undefined, "RUN rm became a whiteout");
  assert.match(ours["srv/state"], /^dir /, "a directory copied from a stage where RUN replaced a file");
  assert.equal(ours["opt/app/src"], undefined);
  assert.match(ours["opt/app/tools/tool"], /^file 4755 0:0 /, "COPY keeps a setuid bit");
  assert.match(ours["opt/app/tools/start"], /^file 755 0:0 /, "a symlink named as a source is copied as the file it points to");
  assert.equal(Object.keys(ours).some((p) => p.includes("secret") || p.endsWith(".tmp")), false, ".dockerignore applied");

  const ourConfig = JSON.parse(ok(strata(f.root, ["inspect", "-f", "{{json .Config}}", tag])).stdout);
  const theirInspect = JSON.parse(spawnSync("podman", ["inspect", tag], { encoding: "utf8" }).stdout)[0];
  // podman's inspect shows the image's Healthcheck beside Config rather than in it.
  const theirConfig = { ...theirInspect.Config, Healthcheck: theirInspect.Config.Healthcheck ?? theirInspect.Healthcheck };
  // Explained: buildah labels its images with its version. (podman builds Docker-format here: its OCI format drops HEALTHCHECK.)
  if (theirConfig.Labels) delete theirConfig.Labels["io.buildah.version"];
  for (const k of CONFIG_FIELDS) assert.deepEqual(ourConfig[k] ?? null, theirConfig[k] ?? null, `config ${k}`);
  ok(strata(f.root, ["rm", cid]));
});

test("the cache keys on content: an unchanged rebuild reuses every step, a changed file rebuilds from the step that reads it", (t) => {
  const f = fixture(t);
  const ctx = join(f.dir, "ctx");
  mkdirSync(ctx);
  writeFileSync(join(ctx, "a.txt"), "a\n");
  writeFileSync(join(ctx, "b.txt"), "b\n");
  writeFileSync(join(ctx, "Dockerfile"), `FROM ${f.base}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy-a\nCOPY b.txt /b.txt\nRUN cat /b.txt > /copy-b\n`);
  const first = ok(strata(f.root, ["build", "-t", "cache:1", ctx]));
  assert.equal(first.stderr.match(/CACHED/g), null);
  const again = ok(strata(f.root, ["build", "-t", "cache:2", ctx]));
  assert.equal(again.stderr.match(/CACHED/g)?.length, 4, again.stderr);
  assert.equal(again.stdout, first.stdout, "a fully cached rebuild is the same image");
  // Touching a file without changing it keeps the cache (content, not mtime).
  const now = new Date();
  spawnSync("touch", ["-d", "2001-01-01", join(ctx, "a.txt")]);
  assert.equal(ok(strata(f.root, ["build", ctx])).stderr.match(/CACHED/g)?.length, 4);
  void now;
  writeFileSync(join(ctx, "b.txt"), "b changed\n");
  const changed = ok(strata(f.root, ["build", "-t", "cache:3", ctx]));
  assert.equal(changed.stderr.match(/CACHED/g)?.length, 2, "the two steps before COPY b.txt");
  assert.match(changed.stderr, /cache miss: context:b\.txt changed/, "the output says why");
  assert.equal(ok(strata(f.root, ["run", "--rm", "cache:3", "cat", "/copy-b"])).stdout, "b changed\n");
  // Layers are shared: the first two are the same blobs in both images.
  const layers = (ref: string) => JSON.parse(ok(strata(f.root, ["inspect", "-f", "{{json .RootFS.Layers}}", ref])).stdout) as string[];
  assert.deepEqual(layers("cache:3").slice(0, 3), layers("cache:1").slice(0, 3));
  assert.notEqual(layers("cache:3")[3], layers("cache:1")[3]);
  // --no-cache builds everything again.
  assert.equal(ok(strata(f.root, ["build", "--no-cache", ctx])).stderr.match(/CACHED/g), null);
  // builder prune empties the cache: the next build makes every layer again.
  assert.match(ok(strata(f.root, ["builder", "prune"])).stdout, /Deleted build cache entries: \d+/);
  assert.equal(ok(strata(f.root, ["build", ctx])).stderr.match(/CACHED/g), null);
  ok(strata(f.root, ["check"]));
});

test("SOURCE_DATE_EPOCH: the same Dockerfile and context on two data roots give the same image digest", (t) => {
  const f = fixture(t);
  const ctx = join(f.dir, "ctx");
  mkdirSync(ctx);
  writeFileSync(join(ctx, "f.txt"), "content\n");
  writeFileSync(join(ctx, "Dockerfile"), `FROM ${f.base}\nCOPY f.txt /srv/f.txt\nRUN echo built > /srv/out && touch /srv/late\nENV X=1\n`);
  // A second data root with the same base, imported the same way.
  const other = join(f.dir, "root2");
  const env = { SOURCE_DATE_EPOCH: "1700000000" };
  for (const root of [f.root, other]) ok(strata(root, ["import", "-c", 'CMD ["sh"]', join(f.dir, "base"), "repro-base:1"], { env }));
  writeFileSync(join(ctx, "Dockerfile"), `FROM repro-base:1\nCOPY f.txt /srv/f.txt\nRUN echo built > /srv/out && touch /srv/late\nENV X=1\n`);
  const a = ok(strata(f.root, ["build", "-q", "-t", "repro:1", ctx], { env })).stdout.trim();
  const b = ok(strata(other, ["build", "-q", "-t", "repro:1", ctx], { env })).stdout.trim();
  assert.equal(a, b, "same config digest");
  const manifest = (root: string) => JSON.parse(ok(strata(root, ["inspect", "-f", "{{json .Descriptor}}", "repro:1"])).stdout).digest;
  assert.equal(manifest(f.root), manifest(other), "same manifest digest");
  assert.equal(JSON.parse(ok(strata(f.root, ["inspect", "-f", "{{json .Created}}", "repro:1"])).stdout), "2023-11-14T22:13:20Z");
});

test("bad Dockerfiles: one error naming the line, no image tagged, completed steps stay cached", (t) => {
  const f = fixture(t);
  const ctx = join(f.dir, "ctx");
  mkdirSync(ctx);
  writeFileSync(join(ctx, "ok.txt"), "ok\n");
  const cases: [string, RegExp][] = [
    [`FROM ${f.base}\nFOO bar\n`, /Dockerfile:2: .*unknown instruction: FOO/i],
    [`FROM ${f.base}\nCOPY missing.txt /x\n`, /Dockerfile:2: COPY missing\.txt \/x: .*"missing\.txt": not found in build context/],
    [`FROM ${f.base} AS a\nCOPY --from=b /x /x\nFROM ${f.base} AS b\nCOPY --from=a /y /y\n`, /Dockerfile:2: .*(cycle|not defined before)/],
    [`FROM ${f.base}\nCOPY --from=nosuchstage /x /x\n`, /Dockerfile:2: .*nosuchstage/i],
    [`FROM ${f.base}\nRUN echo about to fail && exit 7\n`, /Dockerfile:2: RUN echo about to fail && exit 7: process "\/bin\/sh -c echo about to fail && exit 7" did not complete successfully: exit code: 7/],
    [`FROM ${f.base}\nENV\n`, /Dockerfile:2/],
    [`FROM ${f.base}\nCOPY ["unterminated\n`, /Dockerfile:2|not found/],
  ];
  for (const [i, [text, msg]] of cases.entries()) {
    writeFileSync(join(ctx, `Dockerfile.${i}`), text);
    const r = strata(f.root, ["build", "-t", `bad:${i}`, "-f", join(ctx, `Dockerfile.${i}`), ctx]);
    assert.notEqual(r.code, 0, text);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("Error:"));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], msg, text);
  }
  const failing = strata(f.root, ["build", "-f", join(ctx, "Dockerfile.4"), ctx]);
  assert.match(failing.stderr, /about to fail/, "the failing RUN's output is shown");
  assert.match(failing.stderr, />>> +2 \| RUN echo about to fail/, "the line is shown");
  assert.equal(ok(strata(f.root, ["images", "-q", "bad"])).stdout, "", "no partial image is tagged");
  // Completed steps stay cached: a fixed Dockerfile reuses the COPY done before the failure.
  writeFileSync(join(ctx, "Dockerfile.fail"), `FROM ${f.base}\nCOPY ok.txt /ok.txt\nRUN exit 1\n`);
  assert.notEqual(strata(f.root, ["build", "-f", join(ctx, "Dockerfile.fail"), ctx]).code, 0);
  writeFileSync(join(ctx, "Dockerfile.fixed"), `FROM ${f.base}\nCOPY ok.txt /ok.txt\nRUN true\n`);
  assert.match(ok(strata(f.root, ["build", "-f", join(ctx, "Dockerfile.fixed"), ctx])).stderr, /#\d+ CACHED/);
  const u = strata(f.root, ["build", "--target", "nope", "-f", join(ctx, "Dockerfile.fixed"), ctx]);
  assert.match(u.stderr, /target stage "nope" could not be found/);
});

test("multi-stage: --target builds only what the target needs; ONBUILD triggers run in the child; ADD extracts a local tar", (t) => {
  const f = fixture(t);
  const ctx = join(f.dir, "ctx");
  mkdirSync(join(ctx, "payload"), { recursive: true });
  writeFileSync(join(ctx, "payload", "inside.txt"), "from the tar\n");
  spawnSync("tar", ["-C", join(ctx, "payload"), "-czf", join(ctx, "payload.tar.gz"), "."]);
  writeFileSync(
    join(ctx, "Dockerfile"),
    `FROM ${f.base} AS never\nRUN echo this stage must not run && exit 1\n\nFROM ${f.base} AS parent\nONBUILD RUN echo triggered > /onbuild\n\nFROM parent AS child\nADD payload.tar.gz /extracted/\nCOPY <<EOF /heredoc.txt\nhello \${HOSTNAME:-heredoc}\nEOF\n`,
  );
  const r = ok(strata(f.root, ["build", "--target", "parent", "-t", "parent:1", ctx]));
  assert.doesNotMatch(r.stderr, /must not run/);
  const cfg = JSON.parse(ok(strata(f.root, ["inspect", "-f", "{{json .Config}}", "parent:1"])).stdout);
  assert.deepEqual(cfg.OnBuild, ["RUN echo triggered > /onbuild"]);
  writeFileSync(join(ctx, "Dockerfile.child"), `FROM parent:1\nADD payload.tar.gz /extracted/\n`);
  ok(strata(f.root, ["build", "-t", "child:1", "-f", join(ctx, "Dockerfile.child"), ctx]));
  assert.equal(ok(strata(f.root, ["run", "--rm", "child:1", "cat", "/onbuild", "/extracted/inside.txt"])).stdout, "triggered\nfrom the tar\n");
  const full = ok(strata(f.root, ["build", "--target", "child", "-t", "heredoc:1", ctx]));
  void full;
  assert.equal(ok(strata(f.root, ["run", "--rm", "heredoc:1", "cat", "/heredoc.txt"])).stdout, "hello heredoc\n");
  void linkSync;
});

test("COPY into the lower layers' tree: through a symlink, into a directory it keeps the attributes of, over a file", (t) => {
  const f = fixture(t);
  const ctx = join(f.dir, "ctx");
  mkdirSync(join(ctx, "more"), { recursive: true });
  writeFileSync(join(ctx, "f.txt"), "through the link\n");
  writeFileSync(join(ctx, "motd"), "new motd\n");
  writeFileSync(join(ctx, "more", "added"), "merged\n");
  writeFileSync(
    join(ctx, "Dockerfile"),
    `FROM ${f.base}\nRUN mkdir -m 0700 /srv /srv/private && chown 1000:1000 /srv/private && ln -s /srv/private /link && echo old > /etc/motd\nCOPY f.txt /link/\nCOPY motd /etc/motd\nCOPY more/ /var/lib/\nWORKDIR /srv\n`,
  );
  ok(strata(f.root, ["build", "-t", "lower:1", ctx]));
  const out = ok(strata(f.root, ["run", "--rm", "lower:1", "sh", "-c", "stat -c '%a %u:%g' /srv /srv/private; readlink /link; cat /srv/private/f.txt /etc/motd; ls /var/lib"])).stdout;
  assert.equal(out, "700 0:0\n700 1000:1000\n/srv/private\nthrough the link\nnew motd\nadded\nstate\n");
  // WORKDIR on a directory that exists makes no layer.
  assert.equal((JSON.parse(ok(strata(f.root, ["inspect", "-f", "{{json .RootFS.Layers}}", "lower:1"])).stdout) as string[]).length, 5, "the base, RUN and three COPY layers");
  ok(strata(f.root, ["check"]));
});
