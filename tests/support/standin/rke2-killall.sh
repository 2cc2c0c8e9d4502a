#!/bin/sh
# mk8s stand-in for rke2-killall.sh: stop the rke2 services and any rke2 process left.
# upstream: rancher/rke2 bundle/bin/rke2-killall.sh (stop units, kill rke2 processes; root only) [CONTRACT KL1 UI3]
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must be run as root" >&2
    exit 1
fi
for unit in rke2-server rke2-agent; do
    systemctl stop "${unit}" >/dev/null 2>&1 || true
done
for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "${pid}" = "$$" ] && continue
    if tr '\0' ' ' <"${d}/cmdline" 2>/dev/null | grep -Eq '/bin/rke2 (server|agent)'; then
        kill -9 "${pid}" 2>/dev/null || true
    fi
done
exit 0
