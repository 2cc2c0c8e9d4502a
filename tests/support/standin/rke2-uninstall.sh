#!/bin/sh
# mk8s stand-in for rke2-uninstall.sh: stop everything, remove what install.sh and the
# service created.  The node stays registered in its cluster, as upstream: its Node
# object and node password outlive it, and a reinstall under the same name is refused
# ("Node password rejected") until the node is deleted from the cluster.
# install.sh rewrites /usr/local here when it installs elsewhere.
# upstream: rancher/rke2 bundle/bin/rke2-uninstall.sh (removes files; does not deregister the node) [CONTRACT UI1 UI2]
set -e
# upstream: rancher/rke2 bundle/bin/rke2-uninstall.sh (root only: "must be run as root", exit 1) [CONTRACT UI3]
if [ "$(id -u)" -ne 0 ]; then
    echo "[$(date +'%Y-%m-%d %H:%M:%S')] ERROR: $(basename "$0"): must be run as root" >&2
    exit 1
fi
PREFIX=/usr/local
RKE2_DATA_DIR=${RKE2_DATA_DIR:-/var/lib/rancher/rke2}

if [ -x "${PREFIX}/bin/rke2-killall.sh" ]; then
    "${PREFIX}/bin/rke2-killall.sh"
fi
for unit in rke2-server rke2-agent; do
    systemctl disable "${unit}" >/dev/null 2>&1 || true
    systemctl reset-failed "${unit}" >/dev/null 2>&1 || true
done
rm -f /etc/systemd/system/rke2-server.service /etc/systemd/system/rke2-agent.service
rm -f /etc/systemd/system/rke2-server.env /etc/systemd/system/rke2-agent.env
rm -f "${PREFIX}"/lib/systemd/system/rke2-*.service "${PREFIX}"/lib/systemd/system/rke2-*.env
systemctl daemon-reload >/dev/null 2>&1 || true
rm -rf /etc/rancher/rke2 /etc/rancher/node "${RKE2_DATA_DIR}" /var/lib/kubelet /run/k3s
rm -rf /var/log/mk8s-standin/rke2-server.log /var/log/mk8s-standin/rke2-agent.log
rm -rf "${PREFIX}/share/rke2"
rm -f "${PREFIX}/bin/rke2" "${PREFIX}/bin/rke2-killall.sh"
rm -f "${PREFIX}/bin/rke2-uninstall.sh"
echo "rke2 uninstalled"
