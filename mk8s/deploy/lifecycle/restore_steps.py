"""A restore as values (pure): the commands each node gets, in RKE2's documented order.

[rancher/rke2-docs docs/datastore/backup_restore.md, "Multiple Servers": stop RKE2 on
every server; on the first, ``rke2 server --cluster-reset
--cluster-reset-restore-path=<snapshot>``; start it; on the others delete
``${data-dir}/server/db`` and start them to rejoin; then the agents. "Restoring To New
Hosts": the token the snapshot was taken under must be given (mk8s writes it into
config.yaml, which RKE2 reads, so it never shows on a command line), and nodes of the
snapshot that are not coming back are deleted by hand. docs/upgrades/roll-back.md: a
rollback is ``rke2-killall.sh`` on each node, the older RKE2 installed, then the
same restore.]

Servers are stopped with ``rke2-killall.sh``, not ``systemctl stop rke2-server``: the
unit has ``KillMode=process`` (rancher/rke2 bundle/lib/systemd/system/rke2-server.service),
so etcd, a static pod, outlives the stop and its ports would refuse the cluster reset.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from mk8s.deploy.builders import kubectl, units
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.facts import CONFIG_PATH
from mk8s.deploy.builders.nodeconfig import config_bytes, sha256_hex
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command, Secret, write_file
from mk8s.deploy.rke2config import NodePaths
from mk8s.deploy.steps import Step

# RKE2's node password (k3s-io/k3s pkg/agent/config/config.go, nodePasswordFile): a
# host that never ran RKE2 has none, and makes a new one the cluster does not know.
NODE_PASSWORD = "/etc/rancher/node/password"  # noqa: S105  (a path)
RESET_TIMEOUT = 900.0
SNAPSHOT_DIR = "mk8s-restore"  # under the bundle's staging directory on the first server


def probe_command(paths: NodePaths) -> Command:
    """Whether the node has an RKE2 node password and a datastore (read-only)."""
    return Command.script(
        "if [ -f {pw} ]; then echo node_password=yes; fi; "
        "if [ -d {db} ]; then echo datastore=yes; fi",
        {"pw": NODE_PASSWORD, "db": paths.db_dir},
        sudo=True,
        timeout=30,
        description="is there a node password and a datastore",
    )


def killall_command(prefixes: Sequence[str]) -> Command:
    """``rke2-killall.sh`` from whichever prefix install.sh used: every RKE2 process
    (etcd included) stops."""
    return Command.script(
        'prefixes={prefixes}; for p in $prefixes; do if [ -x "$p/bin/rke2-killall.sh" ]; then '
        'exec "$p/bin/rke2-killall.sh"; fi; done; echo "RKE2 is not installed"',
        {"prefixes": " ".join(prefixes)},
        sudo=True,
        timeout=300,
        description="stop RKE2 and every process it runs, etcd included (rke2-killall.sh)",
    )


def remote_snapshot(ctx: Context, file: str) -> str:
    return posixpath.join(ctx.staging, SNAPSHOT_DIR, file)


def reset_command(prefixes: Sequence[str], snapshot: str) -> Command:
    """``rke2 server --cluster-reset --cluster-reset-restore-path=SNAPSHOT`` (the token
    from config.yaml), from whichever prefix RKE2 is installed under."""
    return Command.script(
        'prefixes={prefixes}; for p in $prefixes; do if [ -x "$p/bin/rke2" ]; then '
        'exec "$p/bin/rke2" server --cluster-reset {flag}; fi; done; '
        'echo "rke2 is not installed" >&2; exit 1',
        {"prefixes": " ".join(prefixes), "flag": f"--cluster-reset-restore-path={snapshot}"},
        sudo=True,
        timeout=RESET_TIMEOUT,
        description="restore the snapshot into a one-member etcd (rke2 server --cluster-reset)",
    )


def config_command(ctx: Context, node: Node) -> Command:
    """config.yaml (0600) as deploy writes it: a restore reads the token from it."""
    real, masked = config_bytes(ctx, node)
    return write_file(
        CONFIG_PATH,
        Secret(real.decode()),
        mode=0o600,
        description="write config.yaml (0600)",
        shown=masked.decode(),
    )


def config_changed(ctx: Context, node: Node, hashes: dict[str, str]) -> bool:
    return hashes.get(CONFIG_PATH) != sha256_hex(config_bytes(ctx, node)[0])


def move_db_command(paths: NodePaths) -> Command:
    """Back up and delete ``server/db`` (what RKE2 prints after the reset): moved to
    ``server/db-mk8s-before-restore`` (the one of an earlier restore goes), when it is
    there; a second run finds it moved already and changes nothing."""
    old = f"{paths.db_dir}-mk8s-before-restore"
    return Command.script(
        "if [ -d {db} ]; then rm -rf {old} && mv {db} {old}; fi",
        {"db": paths.db_dir, "old": old},
        sudo=True,
        timeout=300,
        description=f"move server/db aside (to {posixpath.basename(old)}) so the server rejoins",
    )


def wipe_db_command(paths: NodePaths) -> Command:
    """Delete the ``server/db`` an interrupted rejoin left, when the server does not come
    back as the member it became (the cluster removed it)."""
    return Command.argv(
        "rm",
        "-rf",
        paths.db_dir,
        sudo=True,
        timeout=300,
        description="delete the datastore an interrupted rejoin left",
    )


def delete_node_command(name: str, paths: NodePaths) -> Command:
    """The snapshot's Node ``name`` (its node password, and for a server its etcd
    member if it had joined), deleted so the node can register again."""
    return kubectl.delete_node_command(name, paths)


def start_command(node: Node, paths: NodePaths, timeout: float, *, restart: bool) -> Command:
    """A server starts blocking (bounded); an agent (re)starts without blocking."""
    verb = "restart" if restart else "start"
    return units.start_command(
        units.unit_of(node),
        verb,
        block=node.is_server,
        timeout=timeout,
        pending=paths.restart_pending,
    )


def remove_snapshot_command(path: str) -> Command:
    return Command.argv(
        "rm",
        "-f",
        path,
        sudo=True,
        timeout=60,
        description="remove the snapshot copy from the staging directory",
    )


def staged_snapshot_dir(ctx: Context, node: Node) -> Command:
    d = posixpath.join(ctx.staging, SNAPSHOT_DIR)
    return Command.script(
        "mkdir -p {d} && chown {user} {d}",
        {"d": d, "user": node.ssh.user},
        sudo=True,
        timeout=60,
        description="create the snapshot's staging directory",
    )


def step(node: Node, name: str, actions: Sequence[Command], note: str = "") -> Step:
    return Step(node.name, name, tuple(actions), note=note)


__all__ = [
    "NODE_PASSWORD",
    "config_changed",
    "config_command",
    "delete_node_command",
    "killall_command",
    "move_db_command",
    "probe_command",
    "remote_snapshot",
    "remove_snapshot_command",
    "reset_command",
    "staged_snapshot_dir",
    "start_command",
    "wipe_db_command",
]
