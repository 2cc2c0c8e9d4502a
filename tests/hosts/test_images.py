"""Images at scale end to end on test hosts: servers-only distribution through RKE2's
embedded registry mirror, a switch from all to servers on a running cluster, and a
registry inside the air gap (Debian's docker-registry on the hosts' bridge, TLS and
basic auth), with a wrong password or CA caught at preflight."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.registry import TestCA, registry_for_tests
from tests.support.standin import images as release
from tests.support.world import World, audit, deploy, kubectl_nodes, mk8s, write_cluster

pytestmark = pytest.mark.hosts

TAG = "v1.28.15+rke2r1"


def _with_images(path: Path, block: str) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["images"] = yaml.safe_load(block)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _staged_images(hs: HostSet, name: str) -> list[str]:
    root = hs.by_name(name).path("/var/lib/mk8s")
    return sorted(p.name for p in root.rglob("*") if "images" in p.name and p.is_file())


def test_servers_mode_agents_pull_from_peers(tmp_path: Path, world: World) -> None:
    names = ["cp1", "cp2", "cp3", "w1", "w2", "w3"]
    roles = {n: ("server" if n.startswith("cp") else "agent") for n in names}
    with hostset_for_tests(6, tmp_path / "hosts", names=names) as hs:
        c = write_cluster(tmp_path / "cluster.yaml", hs, [(n, roles[n]) for n in names])
        _with_images(c, "{distribution: servers}")
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert kubectl_nodes(hs, "cp1") == dict.fromkeys(names, True)
        for n in names:
            cfg = yaml.safe_load(hs.by_name(n).path("/etc/rancher/rke2/config.yaml").read_text())
            assert cfg.get("embedded-registry") is (True if roles[n] == "server" else None)
            regs = yaml.safe_load(
                hs.by_name(n).path("/etc/rancher/rke2/registries.yaml").read_text()
            )
            assert "docker.io" in regs["mirrors"]
            staged = _staged_images(hs, n)
            if roles[n] == "agent":
                assert staged == [] and not list(
                    hs.by_name(n).path("/var/lib/rancher/rke2/agent/images").glob("*")
                )
            else:
                assert "rke2-images.linux-amd64.tar.zst" in staged
        st = mk8s("status", "-f", "cluster.yaml", cwd=tmp_path)
        assert st.returncode == 0 and "peers" in st.stdout and "tarballs" in st.stdout
        # The agents checked TCP 9345 and 5001 to every server themselves.
        assert any(x.get("step") == "ports" for x in audit(tmp_path))


def test_switch_from_all_to_servers_converges(tmp_path: Path, world: World) -> None:
    with hostset_for_tests(2, tmp_path / "hosts", names=["cp1", "w1"]) as hs:
        c = write_cluster(tmp_path / "cluster.yaml", hs, [("cp1", "server"), ("w1", "agent")])
        assert deploy(tmp_path, world.bundle, world.pub).returncode == 0
        _with_images(c, "{distribution: servers}")
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "uploaded 0 B" in r.stdout
        cfg = yaml.safe_load(hs.by_name("cp1").path("/etc/rancher/rke2/config.yaml").read_text())
        assert cfg["embedded-registry"] is True
        assert hs.by_name("w1").path("/etc/rancher/rke2/registries.yaml").exists()
        assert kubectl_nodes(hs, "cp1") == {"cp1": True, "w1": True}
        again = deploy(tmp_path, world.bundle, world.pub)
        assert again.returncode == 0 and "uploaded 0 B" in again.stdout


def test_registry_mode_pushes_and_nodes_pull(tmp_path: Path, world: World) -> None:
    with (
        hostset_for_tests(2, tmp_path / "hosts", names=["cp1", "w1"]) as hs,
        registry_for_tests(tmp_path / "reg", address=hs.gateway) as reg,
    ):
        c = write_cluster(tmp_path / "cluster.yaml", hs, [("cp1", "server"), ("w1", "agent")])
        (tmp_path / "pw").write_text(reg.password + "\n")
        (tmp_path / "wrong").write_text("not-the-password\n")
        good = (
            f"{{distribution: registry, registry: {{url: 'https://{reg.host}', caFile: "
            f"{reg.ca_file}, username: {reg.username}, passwordFile: {tmp_path / 'pw'}}}}}"
        )
        _with_images(c, good.replace(str(tmp_path / "pw"), str(tmp_path / "wrong")))
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 1, r.stderr
        assert reg.host in r.stderr and "nothing was changed" in r.stderr
        assert reg.password not in r.stdout + r.stderr
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_bytes(TestCA.create("another CA").pem())
        _with_images(c, good.replace(str(reg.ca_file), str(other_ca)))
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 1, r.stderr
        assert reg.host in r.stderr and "nothing was changed" in r.stderr
        assert not hs.by_name("cp1").path("/var/lib/mk8s").exists()
        _with_images(c, good)
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert kubectl_nodes(hs, "cp1") == {"cp1": True, "w1": True}
        for n in ("cp1", "w1"):
            assert not list(hs.by_name(n).path("/var/lib/rancher/rke2/agent/images").glob("*"))
            cfg = yaml.safe_load(hs.by_name(n).path("/etc/rancher/rke2/config.yaml").read_text())
            # a server option: agents ignore it (rancher/rke2 pkg/cli/cmds/agent.go)
            assert cfg.get("system-default-registry") == (reg.host if n == "cp1" else None), n
        session = reg.session()
        for ref in release.images_in(TAG, "rke2-images.linux-amd64.tar.zst"):
            repo, tag = ref.removeprefix("docker.io/").rsplit(":", 1)
            got = session.head(
                f"{reg.url}/v2/{repo}/manifests/{tag}",
                headers={
                    "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
                },
            )
            assert got.status_code == 200, (ref, got.status_code)
            assert got.headers.get("Docker-Content-Digest", "").startswith("sha256:")
        assert reg.password not in (tmp_path / ".mk8s" / "demo" / "audit.jsonl").read_text()
        again = deploy(tmp_path, world.bundle, world.pub)
        assert again.returncode == 0 and "images already in" in again.stderr
