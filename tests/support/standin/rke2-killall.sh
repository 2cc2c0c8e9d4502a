#!/bin/sh
# mk8s stand-in for rke2-killall.sh: stop the rke2 services and any rke2 process left,
# etcd included (RKE2's kills its static pods' processes; the stand-in's etcd is a child
# of rke2 server whose data dir is under /var/lib/rancher/rke2/server/db/etcd).
# upstream: rancher/rke2 bundle/bin/rke2-killall.sh (stop units, kill rke2 processes; root only) [CONTRACT KL1 UI3]
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must be run as root" >&2
    exit 1
fi
# kill -9 the processes matching $1 (a grep -E pattern over the command line)
killtree() {
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "${pid}" = "$$" ] && continue
        if tr '\0' ' ' <"${d}/cmdline" 2>/dev/null | grep -Eq "$1"; then
            kill -9 "${pid}" 2>/dev/null || true
        fi
    done
}
# etcd first, as upstream's killall kills the pods (etcd is not stopped with the unit there)
killtree 'etcd .*--data-dir=[^ ]*/server/db/etcd'
for unit in rke2-server rke2-agent; do
    systemctl stop "${unit}" >/dev/null 2>&1 || true
done
killtree '/bin/rke2 (server|agent)'
exit 0
