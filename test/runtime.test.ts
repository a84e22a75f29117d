// Containers that run: strata run and the lifecycle, on the real runc, checked from inside the container,
// against the runtime's own records, and with podman (same image, same flags) as a judge where it agrees with Docker.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { strata, ok, tempDir, have, BIN } from "./helpers.ts";

const RUNC_LIST = (root: string) => spawnSync("runc", ["--root", join(root, "runtime", "runc"), "list", "-q"], { encoding: "utf8" }).stdout.trim();

/** A busybox root with users and groups, as a small distribution image has them. */
function makeRootfs(dir: string): string {
  mkdirSync(join(dir, "bin"), { recursive: true });
  mkdirSync(join(dir, "etc"), { recursive: true });
  mkdirSync(join(dir, "data"), { recursive: true });
  mkdirSync(join(dir, "home", "app"), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  const applets = spawnSync("/bin/busybox", ["--list"], { encoding: "utf8" }).stdout.split("\n").filter((a) => a && a !== "busybox");
  for (const a of applets) symlinkSync("busybox", join(dir, "bin", a));
  writeFileSync(join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
  writeFileSync(join(dir, "etc", "group"), "root:x:0:\nwheel:x:10:root\naudio:x:29:app\napp:x:1000:\nnogroup:x:65534:\n");
  writeFileSync(join(dir, "data", "seed.txt"), "from the image\n");
  writeFileSync(join(dir, "etc", "motd"), "image motd\n");
  return dir;
}

interface Fixture {
  root: string;
  dir: string;
}

/** What a process of ours left behind under `root`: mounts, runtime state, cgroups, monitors. */
function leaks(root: string, ids: string[]): string[] {
  const out: string[] = [];
  for (const l of readFileSync("/proc/self/mounts", "utf8").split("\n")) if (l.split(" ")[1]?.startsWith(root)) out.push(`mount ${l.split(" ")[1]}`);
  if (existsSync(join(root, "runtime", "runc")) && RUNC_LIST(root)) out.push(`runc containers: ${RUNC_LIST(root)}`);
  for (const ctl of readdirSync("/sys/fs/cgroup")) for (const id of ids) if (existsSync(`/sys/fs/cgroup/${ctl}/strata-${id}`)) out.push(`cgroup ${ctl}/strata-${id}`);
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (cmd.includes("__monitor") && cmd.includes(root)) out.push(`monitor process ${pid}`);
  }
  return out;
}

const seen = new Map<string, Set<string>>();
function track(root: string, id: string): string {
  const s = seen.get(root) ?? new Set();
  s.add(id.trim());
  seen.set(root, s);
  return id.trim();
}

function allIds(root: string): string[] {
  const listed = strata(root, ["ps", "-a", "-q", "--no-trunc"]).stdout.split("\n").filter(Boolean);
  for (const id of listed) track(root, id);
  return [...(seen.get(root) ?? [])];
}

/** A store with the busybox image `bb`, cleaned up (containers killed, mounts gone) even when the test fails. */
function fixture(t: { after: (fn: () => void) => void }): Fixture {
  const ref: { root?: string } = {};
  t.after(() => {
    if (!ref.root) return;
    for (const id of allIds(ref.root)) strata(ref.root, ["rm", "-f", id]);
    spawnSync("sh", ["-c", `for c in $(runc --root ${ref.root}/runtime/runc list -q 2>/dev/null); do runc --root ${ref.root}/runtime/runc delete -f $c; done`]);
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(ref.root!));
    for (const m of mounts.reverse()) spawnSync("umount", ["-l", m]);
  });
  const dir = tempDir(t, "strata-rt-");
  const root = join(dir, "root");
  ref.root = root;
  ok(strata(root, ["import", "-c", 'CMD ["sh"]', makeRootfs(join(dir, "rootfs")), "bb:1"]));
  return { root, dir };
}

function assertClean(f: Fixture): void {
  assert.deepEqual(leaks(f.root, allIds(f.root)), [], "nothing of strata's is left behind");
}

test("run --rm prints what Docker prints for the same image and flags, and leaves nothing", (t) => {
  const f = fixture(t);
  const script = "echo $HOME; id; pwd; cat /etc/hostname; echo HOSTNAME=$HOSTNAME";
  const r = ok(strata(f.root, ["run", "--rm", "bb:1", "sh", "-c", script]));
  const [home, id, pwd, hostname, hostEnv] = r.stdout.trim().split("\n");
  assert.equal(home, "/root");
  // root is a member of wheel in /etc/group, and of nothing else: runc's (and Docker's) supplementary groups
  assert.equal(id, "uid=0(root) gid=0(root) groups=10(wheel)");
  assert.equal(pwd, "/");
  assert.match(hostname, /^[0-9a-f]{12}$/, "the hostname is the short container ID");
  assert.equal(hostEnv, `HOSTNAME=${hostname}`);

  const u = ok(strata(f.root, ["run", "--rm", "-u", "app", "-w", "/work/dir", "--hostname", "box", "bb:1", "sh", "-c", script]));
  // A non-root user's primary group is among its supplementary groups (moby's and podman's fix for CVE-2023-25173).
  assert.deepEqual(u.stdout.trim().split("\n"), ["/home/app", "uid=1000(app) gid=1000(app) groups=29(audio),1000(app)", "/work/dir", "box", "HOSTNAME=box"]);
  const n = ok(strata(f.root, ["run", "--rm", "-u", "4242:29", "bb:1", "sh", "-c", "echo $HOME; id"]));
  assert.deepEqual(n.stdout.trim().split("\n"), ["/", "uid=4242 gid=29(audio) groups=29(audio)"], "a uid without a passwd entry: HOME=/, its primary group as the only supplementary one");
  assert.equal(strata(f.root, ["ps", "-a", "-q"]).stdout, "", "--rm removed the containers");
  assertClean(f);
});

test("podman, as a judge, runs the same image the same way where it agrees with Docker", { skip: !have("podman") && "podman is not installed" }, (t) => {
  const f = fixture(t);
  const tag = `localhost/strata-rt-judge:${process.pid}`;
  ok(strata(f.root, ["tag", "bb:1", tag]));
  const archive = join(f.dir, "bb.tar");
  ok(strata(f.root, ["save", "-o", archive, tag]));
  assert.equal(spawnSync("podman", ["load", "-i", archive], { encoding: "utf8" }).status, 0);
  t.after(() => spawnSync("podman", ["rmi", "-f", tag]));
  // podman adds TERM, container=podman and its own hostname; HOME, id, pwd and the image's env agree with Docker's.
  for (const user of [[], ["-u", "app"], ["-u", "app:wheel"], ["-u", "nobody"]]) {
    const script = "echo $HOME; id; pwd; env | grep -v -e ^HOSTNAME= -e ^TERM= -e ^container= | sort";
    const theirs = spawnSync("podman", ["run", "--rm", ...user, tag, "sh", "-c", script], { encoding: "utf8" });
    const ours = strata(f.root, ["run", "--rm", ...user, tag, "sh", "-c", script]);
    assert.equal(theirs.status, 0, theirs.stderr);
    assert.equal(ours.stdout, theirs.stdout, `same output as podman for ${user.join(" ") || "the default user"}`);
  }
  assertClean(f);
});

test("exit codes come back exactly: 0, 3, 126 not executable, 127 not found, 125 for strata's own errors", (t) => {
  const f = fixture(t);
  assert.equal(strata(f.root, ["run", "--rm", "bb:1", "true"]).code, 0);
  assert.equal(strata(f.root, ["run", "--rm", "bb:1", "sh", "-c", "exit 3"]).code, 3);
  const notExec = strata(f.root, ["run", "--rm", "bb:1", "/etc/passwd"]);
  assert.equal(notExec.code, 126);
  assert.match(notExec.stderr, /exec: "\/etc\/passwd": permission denied/);
  const notFound = strata(f.root, ["run", "--rm", "bb:1", "nosuchcmd"]);
  assert.equal(notFound.code, 127);
  assert.match(notFound.stderr, /exec: "nosuchcmd": executable file not found in \$PATH/);
  const missingPath = strata(f.root, ["run", "--rm", "bb:1", "/no/such"]);
  assert.equal(missingPath.code, 127);
  assert.equal(strata(f.root, ["run", "--rm", "--init", "bb:1", "sh", "-c", "kill -9 $$"]).code, 137, "killed by a signal: 128 + its number");
  // The exit code of a kept container is recorded.
  const kept = strata(f.root, ["run", "--name", "three", "bb:1", "sh", "-c", "exit 3"]);
  assert.equal(kept.code, 3);
  assert.equal(ok(strata(f.root, ["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "three"])).stdout, "exited 3\n");
  assert.match(ok(strata(f.root, ["ps", "-a"])).stdout, /Exited \(3\) (Less than a second|\d+ seconds?) ago/);
  ok(strata(f.root, ["rm", "three"]));
  assertClean(f);
});

test("bad input: one clear line and Docker's exit code, nothing created", (t) => {
  const f = fixture(t);
  const cases: [string[], number, RegExp][] = [
    [["run", "--rm", "nosuchimage:1"], 125, /No such image|not found/i],
    [["run", "--rm", "-u", "ghost", "bb:1", "id"], 125, /unable to find user ghost: no matching entries in passwd file/],
    [["run", "--rm", "-u", "app:ghosts", "bb:1", "id"], 125, /unable to find group ghosts/],
    [["run", "--rm", "-v", "/no/such/dir:/mnt", "bb:1", "true"], 125, /bind source path does not exist: \/no\/such\/dir/],
    [["run", "--rm", "-v", "bad name:/mnt", "bb:1", "true"], 125, /invalid characters for a local volume name/],
    [["run", "--rm", "--env-file", join(f.dir, "missing.env"), "bb:1", "true"], 125, /no such file or directory/],
    [["run", "--rm", "--network", "bridge", "bb:1", "true"], 125, /network bridge not found/],
    [["run", "--rm", "--memory", "1k", "bb:1", "true"], 125, /Minimum memory limit/],
    [["run", "--rm", "-w", "relative", "bb:1", "true"], 125, /absolute path/],
  ];
  writeFileSync(join(f.dir, "bad.env"), "GOOD=1\nBAD KEY=2\n");
  cases.push([["run", "--rm", "--env-file", join(f.dir, "bad.env"), "bb:1", "true"], 125, /line 2: variable 'BAD KEY' contains whitespaces/]);
  // An image without a command, run without one.
  ok(strata(f.root, ["import", join(f.dir, "rootfs"), "nocmd:1"]));
  cases.push([["run", "--rm", "nocmd:1"], 125, /no command specified/]);
  for (const [args, code, msg] of cases) {
    const r = strata(f.root, args);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, msg, args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line for ${args.join(" ")}: ${r.stderr}`);
  }
  assert.equal(strata(f.root, ["ps", "-a", "-q"]).stdout, "", "no container is left from a failed run --rm");
  assertClean(f);
});

test("env, env-file, entrypoint, workdir and the spec Docker would write", (t) => {
  const f = fixture(t);
  writeFileSync(join(f.dir, "vars.env"), "# comment\nFROM_FILE=yes\n\nSPACED=a b\nFROM_HOST\n");
  const r = ok(
    strata(f.root, ["run", "--rm", "-e", "A=1", "-e", "FROM_HOST", "--env-file", join(f.dir, "vars.env"), "--entrypoint", "/bin/sh", "bb:1", "-c", "echo $A/$FROM_FILE/$SPACED/$FROM_HOST/$PATH"], { env: { FROM_HOST: "host-value" } }),
  );
  assert.equal(r.stdout, "1/yes/a b/host-value//usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
  // Docker's default capabilities (CapEff a80425fb), masked and read-only paths, a bounded open-files limit.
  const s = ok(strata(f.root, ["run", "--rm", "bb:1", "sh", "-c", "grep CapEff /proc/self/status; wc -c < /proc/timer_list; touch /proc/sys/kernel/x 2>&1 | head -c 0; echo rc=$?; ulimit -n; cat /etc/hosts | head -1; test -s /etc/resolv.conf && echo resolv"]));
  const lines = s.stdout.trim().split("\n");
  assert.equal(lines[0].replace(/\s+/g, " "), "CapEff: 00000000a80425fb");
  assert.ok(readFileSync("/proc/timer_list").length > 0, "the host's /proc/timer_list has content");
  assert.equal(lines[1].trim(), "0", "/proc/timer_list is masked");
  const nofile = Number(lines[3]);
  const hostHard = Number(/^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))![1]);
  assert.ok(nofile > 0 && nofile <= hostHard, `open files ${nofile} within the host's hard limit ${hostHard}`);
  assert.ok(lines.includes("resolv"), "/etc/resolv.conf is provided");
  const ro = strata(f.root, ["run", "--rm", "bb:1", "sh", "-c", "echo 1 > /proc/sys/kernel/domainname"]);
  assert.notEqual(ro.code, 0, "/proc/sys is read-only");
  const app = ok(strata(f.root, ["run", "--rm", "-u", "app", "bb:1", "grep", "CapEff", "/proc/self/status"]));
  assert.equal(app.stdout.replace(/\s+/g, " ").trim(), "CapEff: 0000000000000000", "a non-root user has no effective capabilities");
  const nnp = ok(strata(f.root, ["run", "--rm", "--security-opt", "no-new-privileges", "bb:1", "grep", "NoNewPrivs", "/proc/self/status"]));
  assert.match(nnp.stdout, /NoNewPrivs:\s+1/);
  assertClean(f);
});

test("detached: logs survive the CLI, stop kills what ignores SIGTERM, exec/top/wait/restart work", async (t) => {
  const f = fixture(t);
  const id = track(f.root, ok(strata(f.root, ["run", "-d", "--name", "web", "bb:1", "sh", "-c", "trap '' TERM; trap 'exit 42' USR1; echo started; echo oops >&2; while true; do sleep 0.1; done"])).stdout);
  assert.match(id, /^[0-9a-f]{64}$/);
  // The CLI has exited; the container runs on under its monitor.
  for (let i = 0; i < 50 && !strata(f.root, ["logs", "web"]).stdout.includes("started"); i++) await sleep(100);
  const logs = ok(strata(f.root, ["logs", "web"]));
  assert.equal(logs.stdout, "started\n", "stdout only on stdout");
  assert.equal(logs.stderr, "oops\n", "stderr kept apart");
  assert.match(ok(strata(f.root, ["logs", "-t", "web"])).stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z started\n$/);
  assert.match(ok(strata(f.root, ["ps"])).stdout, /Up (Less than a second|\d+ seconds?) .*web/);
  assert.equal(ok(strata(f.root, ["ps", "-q"])).stdout, `${id.slice(0, 12)}\n`);
  const json = JSON.parse(ok(strata(f.root, ["ps", "--format", "json"])).stdout);
  assert.equal(json.State, "running");

  const ex = ok(strata(f.root, ["exec", "-e", "X=42", "-w", "/home/app", "-u", "app", "web", "sh", "-c", "echo $X; pwd; id -u"]));
  assert.equal(ex.stdout, "42\n/home/app\n1000\n");
  const badCwd = strata(f.root, ["exec", "-w", "/nowhere", "web", "true"]);
  assert.equal(badCwd.code, 126);
  assert.match(badCwd.stderr, /^Error: .*chdir to cwd \("\/nowhere"\).*no such file or directory\n$/);
  assert.equal(strata(f.root, ["exec", "web", "sh", "-c", "exit 7"]).code, 7);
  assert.equal(strata(f.root, ["exec", "web", "nosuch"]).code, 127);
  const top = ok(strata(f.root, ["top", "web"])).stdout;
  assert.match(top.split("\n")[0], /^UID\s+PID\s+PPID\s+C\s+STIME\s+TTY\s+TIME\s+CMD/);
  assert.match(top, /sh -c trap/);

  // SIGTERM is ignored: stop kills after the timeout, so the exit code is SIGKILL's.
  ok(strata(f.root, ["stop", "-t", "1", "web"]));
  assert.equal(ok(strata(f.root, ["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "web"])).stdout, "exited 137\n");
  assert.equal(ok(strata(f.root, ["logs", "web"])).stdout, "started\n", "logs outlive the process");
  assert.equal(strata(f.root, ["exec", "web", "true"]).code, 1, "exec into a stopped container fails");

  ok(strata(f.root, ["restart", "-t", "1", "web"]));
  assert.equal(ok(strata(f.root, ["inspect", "-f", "{{.State.Status}}", "web"])).stdout, "running\n");
  const waiter = spawn(process.execPath, ["--", BIN, "--root", f.root, "wait", "web"]);
  let waited = "";
  waiter.stdout.on("data", (d) => (waited += d));
  ok(strata(f.root, ["kill", "-s", "USR1", "web"]));
  await new Promise((r) => waiter.on("close", r));
  assert.equal(waited, "42\n", "wait prints the exit code (the USR1 trap exits 42)");
  const rmRunning = ok(strata(f.root, ["run", "-d", "--name", "busy", "bb:1", "sleep", "100"]));
  track(f.root, rmRunning.stdout);
  const refused = strata(f.root, ["rm", "busy"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /container is running: stop the container before removing or force remove/);
  ok(strata(f.root, ["rm", "-f", "busy", "web"]));
  assertClean(f);
});

test("ps reports the truth after the supervisor is gone: exited with its code, or lost", async (t) => {
  const f = fixture(t);
  // The process exits while no strata command runs: ps afterwards reads the monitor's record.
  const a = track(f.root, ok(strata(f.root, ["run", "-d", "bb:1", "sh", "-c", "sleep 0.3; exit 5"])).stdout);
  await sleep(1500);
  assert.match(ok(strata(f.root, ["ps", "-a"])).stdout, /Exited \(5\)/);
  // The monitor itself is killed: the container still runs (ps says so), then it is killed and ps reports it exited.
  const b = track(f.root, ok(strata(f.root, ["run", "-d", "bb:1", "sleep", "100"])).stdout);
  const monitor = readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .find((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(`__monitor\0${b}`);
      } catch {
        return false;
      }
    });
  assert.ok(monitor, "the monitor process exists");
  process.kill(Number(monitor), "SIGKILL");
  await sleep(200);
  assert.match(ok(strata(f.root, ["ps"])).stdout, new RegExp(`${b.slice(0, 12)}.*Up`), "still running without its monitor");
  spawnSync("runc", ["--root", join(f.root, "runtime", "runc"), "kill", b, "KILL"]);
  await sleep(500);
  assert.match(ok(strata(f.root, ["ps", "-a"])).stdout, new RegExp(`${b.slice(0, 12)}.*Exited \\(255\\)`));
  ok(strata(f.root, ["rm", a, b]));
  assertClean(f);
});

test("writes land in the container's writable layer, never in the image; two containers are isolated", (t) => {
  const f = fixture(t);
  ok(strata(f.root, ["run", "--name", "one", "bb:1", "sh", "-c", "echo one > /etc/motd; mkdir /made; rm /data/seed.txt"]));
  ok(strata(f.root, ["run", "--name", "two", "bb:1", "sh", "-c", "cat /etc/motd; test -e /data/seed.txt && echo seed-still-here"]));
  assert.equal(ok(strata(f.root, ["logs", "two"])).stdout, "image motd\nseed-still-here\n", "the second container sees the image, not the first's writes");
  assert.deepEqual(ok(strata(f.root, ["diff", "one"])).stdout.trim().split("\n").sort(), ["A /made", "C /data", "C /etc", "C /etc/motd", "D /data/seed.txt"].sort(), "diff shows exactly the writes (no runtime mount points)");
  assert.equal(ok(strata(f.root, ["diff", "two"])).stdout, "", "reading changes nothing");
  assert.equal(ok(strata(f.root, ["fs", "cat", "bb:1", "/etc/motd"])).stdout, "image motd\n", "the image is untouched");
  ok(strata(f.root, ["rm", "one", "two"]));
  assertClean(f);
});

test("volumes: bind mounts (ro too), named volumes seeded from the image, tmpfs, read-only root", (t) => {
  const f = fixture(t);
  const host = join(f.dir, "host");
  mkdirSync(host);
  writeFileSync(join(host, "in.txt"), "from host\n");
  const b = ok(strata(f.root, ["run", "--rm", "-v", `${host}:/mnt`, "bb:1", "sh", "-c", "cat /mnt/in.txt; echo back > /mnt/out.txt"]));
  assert.equal(b.stdout, "from host\n");
  assert.equal(readFileSync(join(host, "out.txt"), "utf8"), "back\n");
  const ro = strata(f.root, ["run", "--rm", "-v", `${host}:/mnt:ro`, "bb:1", "sh", "-c", "echo x > /mnt/no.txt"]);
  assert.notEqual(ro.code, 0);
  assert.ok(!existsSync(join(host, "no.txt")));
  // A named volume at /data starts with the image's /data, and keeps what containers write.
  ok(strata(f.root, ["run", "--rm", "-v", "store:/data", "bb:1", "sh", "-c", "cat /data/seed.txt; echo kept > /data/new.txt"]));
  const again = ok(strata(f.root, ["run", "--rm", "-v", "store:/data:ro", "bb:1", "sh", "-c", "cat /data/seed.txt /data/new.txt"]));
  assert.equal(again.stdout, "from the image\nkept\n");
  assert.equal(ok(strata(f.root, ["volume", "ls", "-q"])).stdout, "store\n");
  const info = JSON.parse(ok(strata(f.root, ["volume", "inspect", "store"])).stdout)[0];
  assert.equal(info.Name, "store");
  assert.equal(readFileSync(join(info.Mountpoint, "new.txt"), "utf8"), "kept\n");
  ok(strata(f.root, ["create", "--name", "holder", "-v", "store:/data", "bb:1"]));
  assert.match(strata(f.root, ["volume", "rm", "store"]).stderr, /volume is in use/);
  ok(strata(f.root, ["rm", "holder"]));
  ok(strata(f.root, ["volume", "rm", "store"]));
  assert.equal(ok(strata(f.root, ["volume", "ls", "-q"])).stdout, "");
  // --read-only root with a writable tmpfs.
  const rr = strata(f.root, ["run", "--rm", "--read-only", "--tmpfs", "/scratch", "bb:1", "sh", "-c", "echo ok > /scratch/f && cat /scratch/f; touch /rootfile"]);
  assert.equal(rr.stdout, "ok\n");
  assert.notEqual(rr.code, 0, "the root is read-only");
  assertClean(f);
});

test("limits go through the runtime's cgroups and are visible inside; network none and --init", (t) => {
  const f = fixture(t);
  const r = ok(
    strata(f.root, [
      "run", "--rm", "--memory", "64m", "--pids-limit", "42", "--cpus", "0.5", "bb:1", "sh", "-c",
      "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us",
    ]),
  );
  assert.deepEqual(r.stdout.trim().split("\n"), [String(64 * 1024 * 1024), "42", "50000", "100000"]);
  const net = ok(strata(f.root, ["run", "--rm", "--network", "none", "bb:1", "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"]));
  assert.equal(net.stdout, "lo\n", "only loopback");
  const init = ok(strata(f.root, ["run", "--rm", "--init", "bb:1", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]));
  assert.match(init.stdout, /^\/dev\/init -- sh -c/, "PID 1 is the init");
  assertClean(f);
});

test("-it under a real terminal: prompt, window size, Ctrl-C reaches the process, Ctrl-D ends the shell", { skip: !have("script") && "script(1) is not installed" }, async (t) => {
  const f = fixture(t);
  const session = (steps: [number, string][], cols = 97, rows = 31): Promise<{ out: string; code: number | null }> =>
    new Promise((resolve) => {
      const cmd = `stty cols ${cols} rows ${rows}; exec ${BIN} --root ${f.root} run -it --rm bb:1 sh`;
      const child = spawn("script", ["-qfec", cmd, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      void (async () => {
        for (const [wait, input] of steps) {
          for (let i = 0; i < wait / 50 && !out.includes(" # "); i++) await sleep(50);
          await sleep(300);
          child.stdin.write(input);
        }
      })();
      child.on("close", (code) => resolve({ out: out.replace(/\r/g, ""), code }));
    });
  const a = await session([[5000, "stty size; echo hi-$((40+2))\n"], [500, "sleep 30\n"], [500, "\x03"], [500, "echo after-sleep $?\n"], [500, "\x04"]]);
  assert.match(a.out, /\/ # /, "the shell prompt appears");
  assert.match(a.out, /31 97\n/, "the window size follows the terminal");
  assert.match(a.out, /hi-42\n/);
  assert.match(a.out, /after-sleep 130\n/, "Ctrl-C interrupted sleep (128+SIGINT)");
  assert.equal(a.code, 0, "Ctrl-D ended the shell, exit 0");
  const b = await session([[5000, "exit 4\n"]]);
  assert.equal(b.code, 4, "the shell's exit code comes back through the terminal");
  assertClean(f);
});

test("info shows the runtime chosen by probing and why; --runtime forces one", (t) => {
  const f = fixture(t);
  const info = JSON.parse(ok(strata(f.root, ["info", "--format", "json"])).stdout);
  assert.equal(info.DefaultRuntime, "runc");
  assert.match(info.RuntimeReason, /runc ran a probe container/);
  const forced = strata(f.root, ["run", "--rm", "--runtime", "nosuchruntime", "bb:1", "true"]);
  assert.equal(forced.code, 125);
  assert.match(forced.stderr, /unknown runtime "nosuchruntime"/);
  assert.equal(ok(strata(f.root, ["run", "--rm", "--runtime", "runc", "bb:1", "echo", "ok"])).stdout, "ok\n");
  assertClean(f);
});
