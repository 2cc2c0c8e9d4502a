#!/usr/bin/env bash
# Install what mk8s, its tests and its example need, into .venv. Safe to re-run.
# On a fresh Debian machine as root it also installs the system packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for cmd in python3 ssh sshd sudo ip zstd openssl curl tar sha256sum sftp make; do
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$cmd")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(venv)
# The image tests run a real OCI registry (the CNCF distribution server); the
# stand-in's kubeconfig is tested with a real kubectl (any recent one will do).
extra_pkgs=()
command -v docker-registry >/dev/null 2>&1 || { need_apt+=(docker-registry); extra_pkgs+=(docker-registry); }
# Real containerd judges every image archive mk8s places on a node (tests/support/containerd.py).
command -v ctr >/dev/null 2>&1 && command -v containerd >/dev/null 2>&1 || {
  need_apt+=(containerd); extra_pkgs+=(containerd); }
if ! command -v kubectl >/dev/null 2>&1; then
  need_apt+=(kubectl)
  extra_pkgs+=(kubernetes-client)
fi
# The stand-in RKE2 servers run a real etcd member each (etcd-server) and take and
# restore snapshots with etcdctl (etcd-client).
for cmd in etcd etcdctl; do
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$cmd")
done
command -v etcd >/dev/null 2>&1 || extra_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || extra_pkgs+=(etcd-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root, or install python3-venv openssh-server sudo iproute2 zstd docker-registry kubernetes-client etcd-server etcd-client" >&2
    exit 1
  fi
  echo "setup: installing system packages (missing: ${need_apt[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-pip openssh-server openssh-client sudo iproute2 \
    zstd openssl curl tar coreutils make ca-certificates ${extra_pkgs[@]+"${extra_pkgs[@]}"} >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,lint]'
echo "setup: ready ($(.venv/bin/mk8s --version))"
