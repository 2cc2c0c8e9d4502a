#!/usr/bin/env bash
# The whole mk8s flow on a built-in example, on one machine (run as root):
#   example upstream on loopback -> key -> signed bundle -> verify ->
#   5 test hosts (real sshd in network namespaces, RKE2 stand-in) ->
#   deploy 3 servers + 2 agents -> kubectl get nodes.
# Everything lives in ./demo/ and is torn down at the end (KEEP=1 keeps the hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
root=$PWD
demo=$root/demo
mk8s=$root/.venv/bin/mk8s
py=$root/.venv/bin/python

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: the test hosts need root (network namespaces); run as root" >&2
  exit 1
fi

"$py" scripts/testhosts down --dir "$demo/hosts" >/dev/null 2>&1 || true
rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"

cleanup() {
  [ -n "${upstream_pid:-}" ] && kill "$upstream_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then
    "$py" "$root/scripts/testhosts" down --dir "$demo/hosts" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== example upstream (GitHub stand-in) on 127.0.0.1:$port"
(cd "$root" && exec "$py" -m tests.support.upstream --port "$port" --dir "$demo/upstream") \
  > upstream.env 2> upstream.log &
upstream_pid=$!
for _ in $(seq 100); do grep -q MK8S_RAW_URL upstream.env 2>/dev/null && break; sleep 0.1; done
set -a; . ./upstream.env; set +a

export MK8S_KEY_PASSPHRASE=demo-passphrase
echo "== mk8s key generate"
"$mk8s" key generate
echo "== mk8s bundle create --rke2 v1.28.x --key mk8s.key"
"$mk8s" bundle create --rke2 v1.28.x --key mk8s.key --cache "$demo/cache"
bundle=$(ls mk8s-rke2-*.tar.zst)
echo "== mk8s bundle verify $bundle --key mk8s.pub"
"$mk8s" bundle verify "$bundle" --key mk8s.pub

echo "== test hosts: 3 servers + 2 agents"
"$py" "$root/scripts/testhosts" up 5 --dir "$demo/hosts" --names cp1,cp2,cp3,w1,w2 > hosts.json
"$py" - <<'PY'
import json
h = json.load(open("hosts.json"))
roles = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent", "w2": "agent"}
nodes = "\n".join(f"    - {{address: {n['address']}, name: {n['name']}, role: {roles[n['name']]}}}"
                  for n in h["hosts"])
open("cluster.yaml", "w").write(f"""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: demo}}
spec:
  rke2:
    tlsSan: [k8s.demo.internal]
  ssh:
    user: root
    identityFile: {h['identity_file']}
    knownHosts: {h['known_hosts']}
  nodes:
{nodes}
""")
PY
cat cluster.yaml
echo "== mk8s deploy -f cluster.yaml --bundle $bundle --key mk8s.pub"
"$mk8s" deploy -f cluster.yaml --bundle "$bundle" --key mk8s.pub
echo "== kubectl --kubeconfig demo.kubeconfig get nodes (on this machine, over TLS)"
kubectl --kubeconfig demo.kubeconfig get nodes -o wide
echo "== a re-run converges: nothing uploaded, nothing restarted"
"$mk8s" deploy -f cluster.yaml --bundle "$bundle" --key mk8s.pub | tail -n 1
echo "demo: done (files in $demo)"
