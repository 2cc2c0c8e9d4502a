"""The deploy plan from given facts: pure, no SSH. Asserts the exact commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from mk8s.deploy.builders import facts, plan
from tests.support import bundles
from tests.support.clusters import FRESH, MANIFEST, TAG, prod_cluster, prod_context


def test_facts_parse() -> None:
    basic = "uname_m=x86_64\nos=Debian GNU/Linux 12\nhostname=cp1\nuid=1000\nsudo=yes\n"
    priv = (
        "disk_free_kb=1024\nrpm=no\nnm_cloud_setup=disabled\n"
        "rke2_version=rke2 version v1.28.15+rke2r1 (abc)\nserver_active=active\n"
        "agent_active=inactive\nnode_token=K10abc::server:tok\n"
        f"sha256 {'a' * 64} /etc/rancher/rke2/config.yaml\n"
        "part 123 /var/lib/mk8s/b1d/rke2.linux-amd64.tar.gz.part\n"
    )
    f = facts.parse(basic, priv)
    assert (f.arch, f.sudo, f.root, f.disk_free) == ("amd64", True, False, 1 << 20)
    assert f.rke2_tag == TAG and f.server_active and not f.agent_active
    assert f.node_token == "K10abc::server:tok"
    assert f.hashes == {"/etc/rancher/rke2/config.yaml": "a" * 64}
    assert f.partial == {"/var/lib/mk8s/b1d/rke2.linux-amd64.tar.gz.part": 123}
    assert "K10abc" not in repr(f)


def test_preflight_problems(tmp_path: Path) -> None:
    c = prod_cluster(tmp_path)
    found = {
        "cp1": FRESH,
        "cp2": facts.NodeFacts(
            arch="arm64",
            uname_m="aarch64",
            os="",
            hostname="",
            root=True,
            sudo=True,
            disk_free=1 << 20,
            rpm_installed=True,
        ),
        "w1": facts.NodeFacts(
            arch="amd64", uname_m="x86_64", os="", hostname="", root=False, sudo=False
        ),
    }
    problems = plan.preflight(c, MANIFEST, found)
    text = "\n".join(problems)
    assert "cp2: is arm64 but the bundle holds only amd64" in text
    assert "cp2: RKE2 RPMs are installed" in text
    assert "w1: user root cannot run sudo" in text
    assert not any(p.startswith("cp1") for p in problems)


def test_preflight_disk_and_nm_cloud_setup(tmp_path: Path) -> None:
    c = prod_cluster(tmp_path)
    small = facts.NodeFacts(
        arch="amd64",
        uname_m="x86_64",
        os="",
        hostname="",
        root=True,
        sudo=True,
        disk_free=1 << 20,
        nm_cloud_setup_enabled=True,
    )
    problems = plan.preflight(c, MANIFEST, {"cp1": small, "cp2": FRESH, "w1": FRESH})
    assert any("cp1: /var/lib/mk8s has 1 MiB free" in p for p in problems)
    assert any("nm-cloud-setup is enabled" in p for p in problems)


def test_upload_skips_files_present_with_right_hash(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    step = plan.upload_step(c, c.cluster.nodes[0], FRESH)
    assert [u.remote_path for u in step.uploads] == [
        "/var/lib/mk8s/b1d/install.sh",
        "/var/lib/mk8s/b1d/rke2-images.linux-amd64.tar.zst",
        "/var/lib/mk8s/b1d/rke2.linux-amd64.tar.gz",
        "/var/lib/mk8s/b1d/sha256sum-amd64.txt",
    ]
    have = {plan.remote_path(c, a): a.sha256 for a in MANIFEST.artifacts}
    have["/var/lib/mk8s/b1d/install.sh"] = "0" * 64  # wrong hash: sent again
    f = facts.NodeFacts(**{**FRESH.__dict__, "hashes": have})
    assert [u.remote_path for u in plan.upload_step(c, c.cluster.nodes[0], f).uploads] == [
        "/var/lib/mk8s/b1d/install.sh"
    ]


def test_install_step_commands(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    step = plan.install_step(c, c.cluster.nodes[0], FRESH)
    shown = [cmd.display() for cmd in step.commands]
    assert shown[0].startswith(
        "mkdir -p /var/lib/mk8s/b1d/install-amd64 && ln -f "
        "/var/lib/mk8s/b1d/rke2.linux-amd64.tar.gz /var/lib/mk8s/b1d/install-amd64/ && "
        "ln -f /var/lib/mk8s/b1d/sha256sum-amd64.txt /var/lib/mk8s/b1d/install-amd64/ && "
        "INSTALL_RKE2_ARTIFACT_PATH=/var/lib/mk8s/b1d/install-amd64 INSTALL_RKE2_METHOD=tar "
        "sh /var/lib/mk8s/b1d/install.sh && { sums=/var/lib/mk8s/.sums; "
    )
    assert shown[0].endswith('> "$sums/rke2-version"; break; fi; done; true; }')
    img = "/var/lib/rancher/rke2/agent/images/rke2-images.linux-amd64.tar.zst"
    assert shown[1].startswith(
        "mkdir -p /var/lib/rancher/rke2/agent/images /var/lib/rancher/rke2/mk8s/images && "
        f"(ln -f /var/lib/mk8s/b1d/rke2-images.linux-amd64.tar.zst {img} 2>/dev/null"
    )
    assert "sha256sum -c --quiet - && mkdir -p /var/lib/mk8s/.sums" in shown[1]
    # mk8s records what it placed (an upgrade removes only that)
    assert shown[1].endswith(
        f"&& echo {MANIFEST.artifacts[1].sha256} > "
        "/var/lib/rancher/rke2/mk8s/images/rke2-images.linux-amd64.tar.zst"
    )
    assert len(shown) == 2
    # installed at the right tag with images in place: nothing to do
    img = "/var/lib/rancher/rke2/agent/images/rke2-images.linux-amd64.tar.zst"
    sha = MANIFEST.artifacts[1].sha256
    done = facts.NodeFacts(
        **{
            **FRESH.__dict__,
            "rke2_version": f"rke2 version {TAG} (x)",
            "hashes": {img: sha},
            "placed_images": {"rke2-images.linux-amd64.tar.zst": sha},
        }
    )
    assert MANIFEST.artifacts[1].name == "rke2-images.linux-amd64.tar.zst"
    assert plan.install_step(c, c.cluster.nodes[0], done).commands == ()
    # in place with the right bytes but no record (an older mk8s placed it): adopted
    older = facts.NodeFacts(**{**done.__dict__, "placed_images": {}})
    (adopt,) = plan.install_step(c, c.cluster.nodes[0], older).commands
    assert adopt.display().endswith(
        "/var/lib/rancher/rke2/mk8s/images "
        f"/var/lib/rancher/rke2/mk8s/images/rke2-images.linux-amd64.tar.zst {sha}"
    )


def test_node_config_layers_and_managed_keys(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path, "    serverUrl: https://vip.internal:9345"))
    first, second, agent = c.cluster.nodes
    cfg1 = plan.node_config(c, first)
    assert "server" not in cfg1
    assert cfg1["tls-san"] == ["k8s.internal", "vip.internal"]
    assert cfg1["etcd-snapshot-retention"] == 3 and cfg1["node-name"] == "cp1"
    assert plan.node_config(c, second)["server"] == "https://vip.internal:9345"
    cfg3 = plan.node_config(c, agent)
    assert cfg3["server"] == "https://vip.internal:9345"
    assert cfg3["node-label"] == ["gpu=true"] and "tls-san" not in cfg3
    real, masked = plan.config_bytes(c, agent)
    assert yaml.safe_load(real)["token"] == "s3cret-token"
    assert b"s3cret" not in masked and yaml.safe_load(masked)["token"] == "***"


def test_default_server_url_is_first_server(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    assert c.server_url == "https://10.0.0.11:9345"
    assert plan.api_host(c.cluster) == "10.0.0.11"


def test_start_step_writes_config_then_starts_and_masks_token(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    step = plan.start_step(c, c.cluster.nodes[2], FRESH, installed_now=True)
    shown = [cmd.display() for cmd in step.commands]
    assert shown == [
        "mkdir -p /etc/rancher/rke2 && umask 077 && cat > /etc/rancher/rke2/config.yaml."
        "mk8s-tmp && chmod 0600 /etc/rancher/rke2/config.yaml.mk8s-tmp && mv -f "
        "/etc/rancher/rke2/config.yaml.mk8s-tmp /etc/rancher/rke2/config.yaml",
        "systemctl enable rke2-agent && systemctl start --no-block rke2-agent"
        " && rm -f /var/lib/rancher/rke2/mk8s/restart-pending",
    ]
    assert all("s3cret" not in s for s in shown)
    assert "s3cret-token" in step.commands[0].stdin_bytes().decode()  # type: ignore[union-attr]


def test_converged_node_is_left_alone(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    node = c.cluster.nodes[0]
    real, _ = plan.config_bytes(c, node)
    f = facts.NodeFacts(
        **{
            **FRESH.__dict__,
            "server_active": True,
            "hashes": {
                facts.CONFIG_PATH: hashlib.sha256(real).hexdigest(),
                f"{facts.IMAGES_DIR}/{MANIFEST.artifacts[1].name}": MANIFEST.artifacts[1].sha256,
            },
        }
    )
    assert plan.start_step(c, node, f, installed_now=False).commands == ()
    # a changed config restarts, an inactive service starts
    changed = facts.NodeFacts(**{**f.__dict__, "hashes": {**f.hashes, facts.CONFIG_PATH: "0"}})
    shown = [x.display() for x in plan.start_step(c, node, changed, installed_now=False).commands]
    assert shown[-1] == (
        "systemctl enable rke2-server && systemctl restart rke2-server"
        " && rm -f /var/lib/rancher/rke2/mk8s/restart-pending"
    )
    # the restart is remembered on the node before config.yaml changes
    assert shown[0] == (
        'sh -c \'f="$1"; shift; mkdir -p "$(dirname "$f")" && printf "%s\\n" "$@" >> "$f"\''
        " mk8s-pending /var/lib/rancher/rke2/mk8s/restart-pending config.yaml"
    )


def test_rewrite_kubeconfig() -> None:
    text = "clusters:\n- cluster:\n    certificate-authority-data: X\n    server: https://127.0.0.1:6443\n"
    out = plan.rewrite_kubeconfig(text, "10.0.0.11")
    assert "    server: https://10.0.0.11:6443\n" in out and "127.0.0.1" not in out
    assert "server: https://[fd00::1]:6443" in plan.rewrite_kubeconfig(text, "fd00::1")


@pytest.mark.parametrize("user", ["root", "ops"])
def test_order(tmp_path: Path, user: str) -> None:
    c = prod_cluster(tmp_path)
    first, servers, agents = plan.order(c)
    assert first.name == "cp1" and [s.name for s in servers] == ["cp2"]
    assert [a.name for a in agents] == ["w1"]


def test_gathered_facts_split_and_fall_back_without_root() -> None:
    basic = "uname_m=aarch64\nos=x\nhostname=h\nuid=0\nsudo=root\n"
    out = basic + facts.PRIVILEGED_MARK + "\nrke2_version=rke2 version " + TAG + " (x)\n"
    f = facts.parse_gathered(out)
    assert f.arch == "arm64" and f.rke2_tag == TAG
    nosudo = basic.replace("sudo=root", "sudo=no") + facts.PRIVILEGED_MARK + "\n"
    g = facts.parse_gathered(nosudo)
    assert not g.can_root and g.disk_free is None
    shown = facts.gather("/var/lib/mk8s/abc").display()
    assert "sudo -n sh -c" in shown and "sums=/var/lib/mk8s/.sums;" in shown


def test_record_template_names_the_sum_file() -> None:
    values = facts.record_values("/var/lib/mk8s", "/var/lib/mk8s/b1d/x.tar", "ab" * 32)
    text = facts.RECORD_TEMPLATE.format(**values)
    assert text == (
        "mkdir -p /var/lib/mk8s/.sums && echo "
        + "ab" * 32
        + " \"$(stat -c '%s %.9Z %i' /var/lib/mk8s/b1d/x.tar)\" > "
        "/var/lib/mk8s/.sums/var%lib%mk8s%b1d%x.tar"
    )


# -- what a deploy needs of a bundle -----------------------------------------------------
def test_incomplete_signed_bundle_names_no_internal_error(tmp_path: Path) -> None:
    # the pure part: a manifest with only files lacks everything a deploy needs
    files = bundles.make_files(tmp_path / "f", {"empty.txt": 3})
    m = bundles.lock_for(files, {"empty.txt": "file"})
    assert plan.missing_for_deploy(m) == [
        "install.sh",
        "rke2.linux-amd64.tar.gz",
        "sha256sum-amd64.txt",
        "an image tarball for amd64",
    ]
