"""The stand-in's systemd units as each RKE2 release ships them (version gates VG1, VG2
of CONTRACT.md), rendered from the ``rke2-server.service`` / ``rke2-agent.service``
templates beside this file.

Read from rancher/rke2 ``bundle/lib/systemd/system/rke2-*.service`` at the release tags
(the releases are rows of gates.py):

* VG1: up to v1.32.12, v1.33.8, v1.34.4, v1.35.1 each unit ``Conflicts=`` the other
  (starting one stops the other); from v1.32.13, v1.33.9, v1.34.5, v1.35.2 and in every
  release of 1.36 on, ``ExecCondition=`` refuses to start one while the other is active
  ("Error: rke2-agent is running!"; systemd then skips the unit: it stays inactive and
  ``systemctl start`` succeeds) and there is no ``Conflicts=``.
* VG2: every release of 1.31 and older, and 1.32 before v1.32.11, 1.33 before v1.33.7,
  1.34 before v1.34.3, has ``ExecStartPre`` refusing to start while
  ``nm-cloud-setup.service`` is enabled; none of 1.35 on has it.

The upstream ``ExecStartPre=-/sbin/modprobe ...`` lines are left out (the test hosts
share the machine's kernel), and the nm-cloud-setup check calls ``systemctl`` from PATH
(the stand-in) where upstream names ``/usr/bin/systemctl``.
"""

from __future__ import annotations

from tests.support.standin import gates

OTHER = {"server": "agent", "agent": "server"}


# upstream: rancher/rke2 bundle/lib/systemd/system/rke2-*.service at each tag (ExecCondition=) [CONTRACT UN3]
def has_exec_condition(tag: str) -> bool:
    return gates.has("units-exec-condition", tag)


# upstream: rancher/rke2 bundle/lib/systemd/system/rke2-*.service at each tag (nm-cloud-setup ExecStartPre) [CONTRACT UN4]
def has_nm_cloud_setup_check(tag: str) -> bool:
    return not gates.has("nm-cloud-setup-allowed", tag)


def render(template: bytes, role: str, tag: str) -> bytes:
    """The unit of ``role`` (server, agent) as release ``tag`` ships it."""
    other = OTHER[role]
    values = {
        "@@CONFLICTS@@": "" if has_exec_condition(tag) else f"Conflicts=rke2-{other}.service",
        "@@EXEC_CONDITION@@": (
            "ExecCondition=/bin/sh -c 'if systemctl is-active --quiet "
            f'rke2-{other}.service; then echo "Error: rke2-{other} is running!"; exit 1; fi\''
            if has_exec_condition(tag)
            else ""
        ),
        "@@NM_CLOUD_SETUP@@": (
            "ExecStartPre=/bin/sh -xc '! systemctl is-enabled --quiet nm-cloud-setup.service'"
            if has_nm_cloud_setup_check(tag)
            else ""
        ),
    }
    out = []
    for line in template.decode().splitlines(keepends=True):
        key = line.strip()
        if key in values:
            if values[key]:
                out.append(values[key] + "\n")
            continue
        out.append(line)
    return "".join(out).encode()


__all__ = ["has_exec_condition", "has_nm_cloud_setup_check", "render"]
