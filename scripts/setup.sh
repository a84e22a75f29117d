#!/usr/bin/env bash
# Installs what strata needs on a fresh Debian 12 machine with Node 20, then builds it.
#   scripts/setup.sh          the demo's needs (busybox-static, zstd, runc)
#   scripts/setup.sh --test   everything the test suite and benchmarks use (runc, podman, skopeo, umoci, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(busybox-static zstd runc)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(podman skopeo umoci buildah docker-registry uidmap debootstrap attr catatonit bsdutils openssl)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Podman as a peer in tests: this host's hard RLIMIT_NOFILE is 20000 and CAP_SYS_RESOURCE is absent,
# and crun 1.8 refuses the hybrid cgroup layout, so podman gets modest ulimits and runc.
if [[ "${1:-}" == "--test" && ! -f /etc/containers/containers.conf ]] || { [[ "${1:-}" == "--test" ]] && ! grep -q 'runtime = "runc"' /etc/containers/containers.conf; }; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n\n[engine]\nruntime = "runc"\n' | $SUDO tee /etc/containers/containers.conf >/dev/null
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
