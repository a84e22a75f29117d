#!/usr/bin/env bash
# The main job, end to end with no network: a base image from Debian's busybox-static,
# imported, listed, its layers shown, saved, removed and loaded back.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
strata() { "$REPO/bin/strata" "$@"; }
export STRATA_ROOT="${STRATA_ROOT:-$(mktemp -d /tmp/strata-demo-root.XXXXXX)}"
work=$(mktemp -d /tmp/strata-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "data root: $STRATA_ROOT"

step "make a root filesystem from /bin/busybox (busybox-static)"
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,etc,root,tmp}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
version=$(/bin/busybox | sed -nE '1s/^BusyBox v([0-9.]+).*/\1/p')   # sed reads it all: no SIGPIPE under pipefail
echo "busybox $version, $(ls "$rootfs/bin" | wc -l) files in /bin"

step "strata import -c 'CMD [\"sh\"]' rootfs demo/busybox:$version"
strata import -c 'CMD ["sh"]' -m "busybox-static $version" "$rootfs" "demo/busybox:$version"

step "strata tag demo/busybox:$version demo/busybox:latest"
strata tag "demo/busybox:$version" demo/busybox:latest

step "strata images"
strata images

step "strata history demo/busybox"
strata history demo/busybox

step "strata inspect --format '{{json .Layers}}' demo/busybox   # digest (compressed), diffID, chainID"
strata inspect --format '{{json .Layers}}' demo/busybox

step "strata save -o busybox.tar demo/busybox:$version demo/busybox:latest   # docker-archive"
strata save -o "$work/busybox.tar" "demo/busybox:$version" demo/busybox:latest
tar -tvf "$work/busybox.tar"

step "strata save --format oci-archive -o busybox-oci.tar demo/busybox"
strata save --format oci-archive -o "$work/busybox-oci.tar" demo/busybox
tar -tvf "$work/busybox-oci.tar"

step "strata rmi demo/busybox:$version demo/busybox:latest"
strata rmi "demo/busybox:$version" demo/busybox:latest

step "strata images   # empty again"
strata images

step "strata load -i busybox.tar"
strata load -i "$work/busybox.tar"

step "strata images --digests"
strata images --digests

step "strata fs ls -l demo/busybox /etc   # the merged view, read from the layer blobs, nothing unpacked"
strata fs ls -l demo/busybox /etc

step "strata create --name demo demo/busybox   # a writable copy-on-write layer over the image"
strata create --name demo demo/busybox

step "strata mount demo; then write, change and delete through the merged root"
merged=$(strata mount demo)
echo "$merged"
echo "hello from a container" > "$merged/etc/motd"
echo "demo:x:1000:1000::/home/demo:/bin/sh" >> "$merged/etc/passwd"
rm "$merged/bin/vi"
strata umount demo

step "strata diff demo"
strata diff demo

step "strata commit -m 'add motd, user, drop vi' demo demo/busybox:changed"
strata commit -m "add motd, user, drop vi" demo demo/busybox:changed

step "strata layers demo/busybox:changed   # the base layer is shared, stored once"
strata layers demo/busybox:changed

step "strata fs cat demo/busybox:changed /etc/motd"
strata fs cat demo/busybox:changed /etc/motd

step "strata rm demo   # only the container's layer goes; both images stay"
strata rm demo
strata images

step "strata run --rm demo/busybox:changed sh -c 'cat /etc/motd; echo HOME=\$HOME; id; hostname'   # a running instance, through runc"
strata run --rm demo/busybox:changed sh -c 'cat /etc/motd; echo HOME=$HOME; id; hostname'

step "strata run --rm demo/busybox sh -c 'exit 3'; echo \$?   # the process's exit code comes back"
strata run --rm demo/busybox sh -c 'exit 3' || echo "exit code $?"

step "strata run -d --name ticker -v demo-data:/data demo/busybox sh -c '...'   # detached, with a named volume"
strata run -d --name ticker -v demo-data:/data demo/busybox sh -c 'i=0; while true; do i=$((i+1)); echo "tick $i" | tee -a /data/ticks; sleep 0.5; done'
sleep 1.2
strata ps

step "strata exec ticker cat /data/ticks; strata top ticker"
strata exec ticker cat /data/ticks
strata top ticker

step "strata logs --tail 2 -t ticker; strata stop -t 1 ticker"
strata logs --tail 2 -t ticker
strata stop -t 1 ticker
strata ps -a

step "strata diff ticker; strata rm ticker   # the volume keeps its data"
strata diff ticker
strata rm ticker
strata volume ls
strata run --rm -v demo-data:/data demo/busybox wc -l /data/ticks
strata volume rm demo-data

step "strata build -t demo/hello examples/hello   # a Dockerfile: one layer per filesystem step"
strata build -t demo/hello examples/hello

step "strata build -t demo/hello examples/hello   # again: every step comes from the cache"
strata build -t demo/hello examples/hello 2>&1 | grep -E "CACHED|writing image"

step "strata run --rm demo/hello; strata run --rm demo/hello strata"
strata run --rm demo/hello
strata run --rm demo/hello strata

step "strata history demo/hello"
strata history demo/hello

step "strata system df -v"
strata system df -v

step "strata check"
strata check

step "the data root is an OCI image layout (skopeo/umoci read oci:$STRATA_ROOT:<name>)"
ls "$STRATA_ROOT"
cat "$STRATA_ROOT/index.json"; echo
