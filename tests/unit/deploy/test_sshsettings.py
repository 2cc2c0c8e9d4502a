"""mk8s/deploy/sshsettings.py: spec.ssh, updated key by key with a node's ssh block."""

from __future__ import annotations

from pathlib import Path

from mk8s.deploy.cluster import Bastion, SSHSettings, load_cluster
from tests.support.clusters import LAB_HEAD, indent_spec, write_lab


def test_bastion_defaults_to_the_ssh_user_and_port_22(tmp_path: Path) -> None:
    spec = indent_spec("ssh:\n  user: ops\n  port: 2222\n  bastion: {address: jump.lan}\n")
    c = load_cluster(write_lab(tmp_path, spec))
    assert c.ssh.bastion == Bastion(address="jump.lan", user="ops", port=22)
    assert (c.ssh.user, c.ssh.port) == ("ops", 2222)
    assert c.nodes[1].ssh.bastion == Bastion(address="jump.lan", user="ops", port=22)


def test_node_ssh_overrides_the_cluster_block(tmp_path: Path) -> None:
    p = tmp_path / "cluster.yaml"
    p.write_text(
        LAB_HEAD
        + indent_spec(
            """\
            ssh: {user: ops, knownHosts: kh, hostKeyPolicy: accept-new}
            nodes:
              - address: 10.0.0.11
                role: server
                ssh: {user: admin, port: 2200, bastion: {address: j, user: u, port: 23}}
            """
        )
    )
    c = load_cluster(p)
    assert c.nodes[0].ssh == SSHSettings(
        user="admin",
        port=2200,
        known_hosts=tmp_path / "kh",
        host_key_policy="accept-new",
        bastion=Bastion(address="j", user="u", port=23),
    )
