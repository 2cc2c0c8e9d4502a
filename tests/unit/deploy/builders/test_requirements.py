"""mk8s/deploy/builders/requirements.py: what RKE2 requires of the inputs and the hosts before
mk8s touches a node: the bundle's CNI images, SELinux and its RPM, profile: cis."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mk8s.deploy.builders.requirements import host_problems, input_problems
from tests.support.clusters import (
    CIS_SYSCTLS,
    contract_cluster,
    debian_node,
    release_manifest,
)


def test_a_cni_the_bundle_has_no_images_for_is_refused(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path, rke2="    serverConfig: {cni: calico}\n")
    found = {n.name: debian_node() for n in c.nodes}
    problems = input_problems(c, release_manifest(cni="cilium"), found)
    assert len(problems) == 2 and "cp1: cni: calico" in problems[0]
    assert "--cni calico" in problems[0]
    ok = contract_cluster(tmp_path, rke2="    config: {cni: [multus, canal]}\n")
    assert input_problems(ok, release_manifest(groups=("multus",)), found) == []


# -- SELinux and profile: cis ---------------------------------------------------------
def test_selinux_needs_the_rpm_and_selinux_true(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path)
    enforcing = {n.name: debian_node(selinux_enforcing=True) for n in c.nodes}
    text = " ".join(host_problems(c, enforcing))
    assert "cp1: SELinux is enforcing but the rke2-selinux RPM is not installed" in text
    assert "w1: SELinux" in text
    assert "add selinux: true" in " ".join(input_problems(c, release_manifest(), enforcing))
    prepared = {n: replace(f, rke2_selinux=True) for n, f in enforcing.items()}
    assert host_problems(c, prepared) == []
    on = contract_cluster(tmp_path, rke2="    config: {selinux: true}\n")
    assert input_problems(on, release_manifest(), prepared) == []
    # Not enforcing: nothing is required.
    assert host_problems(c, {n.name: debian_node() for n in c.nodes}) == []


def test_profile_cis_needs_the_etcd_user_and_the_kernel_parameters(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path, rke2="    config: {profile: cis}\n")
    bare = {n.name: debian_node(sysctls={**CIS_SYSCTLS, "kernel.panic": "0"}) for n in c.nodes}
    text = "\n".join(host_problems(c, bare))
    assert "cp1: profile: cis needs an etcd user and group" in text
    assert "w1: profile: cis needs an etcd user" not in text  # agents run no etcd
    assert "kernel.panic=0 (needs 10)" in text and "w1: profile: cis needs the CIS kernel" in text
    assert "/etc/sysctl.d/60-rke2-cis.conf" in text
    ready = {n.name: debian_node(etcd_user=True) for n in c.nodes}
    assert host_problems(c, ready) == []
