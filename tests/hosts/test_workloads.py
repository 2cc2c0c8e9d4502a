"""Workloads end to end: images by tag, by digest and multi-platform pulled from a real
registry (TLS + basic auth, standing in for a public one), a chart and a manifest,
in one signed bundle; verify; deploy; a re-run changes nothing; a tampered blob in the
registry is caught at create time naming the image and both digests."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mk8s.bundle.format import keys
from mk8s.images import parse_reference
from tests.support import oci
from tests.support.audit import audit_commands
from tests.support.charts import make_chart
from tests.support.containerd import Containerd, Imported
from tests.support.hosts import Host, hostset_for_tests
from tests.support.registry import TestRegistry, registry_for_tests
from tests.support.standin import images as release
from tests.support.world import World, audit, deploy, mk8s, write_cluster

pytestmark = pytest.mark.hosts


@dataclass
class Images:
    reg: TestRegistry
    by_tag: str
    by_digest: str
    multi: str
    multi_index: oci.BuiltIndex
    env: dict[str, str]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    d = tmp_path_factory.mktemp("wreg")
    with registry_for_tests(d / "reg") as reg:
        s = reg.session()
        oci.push_raw(s, reg.url, "acme/web", "1.0", oci.build_image(seed="web"))
        api = oci.build_image(seed="api")
        api_digest = oci.push_raw(s, reg.url, "acme/api", "2.0", api)
        index = oci.build_index(("linux/amd64", "linux/arm64"), seed="multi")
        oci.push_raw(s, reg.url, "acme/multi", "3.0", index)
        auth = {
            "auths": {
                reg.host: {
                    "auth": base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
                }
            }
        }
        (d / "auth.json").write_text(json.dumps(auth))
        env = {"REGISTRY_AUTH_FILE": str(d / "auth.json"), "REQUESTS_CA_BUNDLE": str(reg.ca_file)}
        yield Images(
            reg,
            f"{reg.host}/acme/web:1.0",
            f"{reg.host}/acme/api@{api_digest}",
            f"{reg.host}/acme/multi:3.0",
            index,
            env,
        )


def _create(world: World, d: Path, images: Images, *extra: str, name: str = "w.tar.zst"):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {**os.environ, **world.up.env, **images.env, "MK8S_KEY_PASSPHRASE": "pw"}
    if "--registry-auth-file" in extra:  # the flag alone must carry the credentials
        env.pop("REGISTRY_AUTH_FILE")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mk8s",
            "bundle",
            "create",
            "--rke2",
            "v1.28.x",
            "--key",
            str(d / "k.key"),
            "--cache",
            str(d / "cache"),
            "-o",
            str(d / name),
            *extra,
        ],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bundle(world: World, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wbundle")
    keys.write_key_pair(world.key, d / "k", b"pw")
    chart = make_chart(d / "hello-0.1.0.tgz")
    manifest = d / "extra.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: default}\ndata: {a: b}\n"
    )
    r = _create(
        world,
        d,
        images,
        "--image",
        images.by_tag,
        "--image",
        images.by_digest,
        "--image",
        images.multi,
        "--chart",
        str(chart),
        "--manifest",
        str(manifest),
    )
    assert r.returncode == 0, r.stderr
    return d / "w.tar.zst"


def test_the_bundle_carries_and_pins_the_workloads(
    bundle: Path, images: Images, world: World
) -> None:
    d = bundle.parent
    lock = json.loads((d / "mk8s.lock").read_text())
    oci_arts = [a for a in lock["artifacts"] if a["kind"] == "image"]
    assert len(oci_arts) == 3
    urls = sorted(a["url"] for a in oci_arts)
    assert all("@sha256:" in u and u.startswith("oci://") for u in urls)
    assert any("acme/web:1.0@sha256:" in u for u in urls)  # the tag, resolved and pinned
    assert {a["kind"] for a in lock["artifacts"]} >= {"chart", "manifest", "image"}
    r = mk8s("bundle", "verify", str(bundle), "--key", str(world.pub), cwd=d)
    assert r.returncode == 0, r.stderr
    r = mk8s("bundle", "inspect", str(bundle), cwd=d)
    assert "workloads:   5" in r.stdout and "acme/multi:3.0@sha256:" in r.stdout
    # The multi-platform image keeps the bundle's platform only (amd64).
    from mk8s.bundle.format import extract
    from mk8s.images import list_images

    out = d / "x"
    extract.extract_bundle(
        bundle, [keys.TrustedKey(world.pub, keys.load_public_key(world.pub))], out
    )
    multi = next(out.glob("artifacts/oci/*multi*"))
    (info,) = list_images(multi)
    assert info.platforms == ("linux/amd64",) or list(info.platforms) == ["linux/amd64"]


def judge_node(containerd: Containerd, h: Host) -> Imported:
    """Import every image tarball the node holds into real containerd."""
    return containerd.judge(sorted(h.path("/var/lib/rancher/rke2/agent/images").iterdir()))


def pod_references(lock: dict) -> dict[str, str]:
    """What a pod may name for each image the lock pins: REPO@DIGEST and REPO:TAG."""
    out = {}
    for a in lock["artifacts"]:
        if a["kind"] == "image":
            ref = parse_reference(a["url"].removeprefix("oci://"))
            out[f"{ref.name}@{ref.digest}"] = ref.digest
            if ref.tag:
                out[f"{ref.name}:{ref.tag}"] = ref.digest
    return out


def test_deploy_places_the_workloads_and_a_rerun_changes_nothing(
    bundle: Path,
    world: World,
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    with hostset_for_tests(2, tmp_path / "hosts", names=["cp1", "w1"]) as hs:
        write_cluster(tmp_path / "cluster.yaml", hs, [("cp1", "server"), ("w1", "agent")])
        r = deploy(tmp_path, bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        for n in ("cp1", "w1"):
            placed = sorted(
                p.name for p in hs.by_name(n).path("/var/lib/rancher/rke2/agent/images").iterdir()
            )
            assert len([p for p in placed if p.endswith(".oci.tar")]) == 3, placed
        mans = sorted(
            p.name
            for p in hs.by_name("cp1").path("/var/lib/rancher/rke2/server/manifests").glob("mk8s-*")
        )
        assert len(mans) == 2 and mans[0].startswith("mk8s-chart-hello-")  # the release
        chart = yaml.safe_load(
            hs.by_name("cp1").path("/var/lib/rancher/rke2/server/manifests/" + mans[0]).read_text()
        )
        content = base64.b64decode(chart["spec"]["chartContent"])
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as t:
            assert "hello/Chart.yaml" in t.getnames()
        assert not hs.by_name("w1").path(
            "/var/lib/rancher/rke2/server/manifests"
        ).exists() or not list(
            hs.by_name("w1").path("/var/lib/rancher/rke2/server/manifests").glob("mk8s-*")
        )
        # Real containerd judges what each node got: every reference a pod could use
        # resolves, the lock's REPO@sha256 pins (the multi-platform one too) and tags.
        lock = json.loads((bundle.parent / "mk8s.lock").read_text())
        for n in ("cp1", "w1"):
            judged = judge_node(containerd, hs.by_name(n))
            assert judged.errors == {}, judged.errors
            for ref, digest in pod_references(lock).items():
                assert judged.resolves(ref) == digest, (n, ref, sorted(judged.refs))
            tag = lock["rke2"]["tag"]
            for ref in release.images_in(tag, "rke2-images.linux-amd64.tar.zst"):
                assert judged.resolves(ref), (n, ref)  # the release's docker archive
            got = json.loads(hs.by_name(n).run("rke2 mk8s-images").stdout)
            assert not [f for f, v in got["files"].items() if v.get("error")], got["files"]
        # The server applied the manifest and installed the chart.
        raw = hs.by_name("cp1").run(
            "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
            " get --raw /mk8s/manifests"
        )
        applied = json.loads(raw.stdout)["servers"]["cp1"]["files"]
        statuses = {f: v["status"] for f, v in applied.items() if f.startswith("mk8s-")}
        assert sorted(statuses.values()) == ["applied", "applied"], applied
        kinds = sorted(
            o["kind"] for f, v in applied.items() for o in v["objects"] if f.startswith("mk8s-")
        )
        assert kinds == ["ConfigMap", "HelmChart"]
        st = mk8s("status", "-f", "cluster.yaml", cwd=tmp_path)
        assert "cp1 applies: mk8s-chart-hello" in st.stdout and "carried:" in st.stdout
        before = len(audit(tmp_path))
        again = deploy(tmp_path, bundle, world.pub)
        assert again.returncode == 0 and "uploaded 0 B" in again.stdout
        placing = [
            x
            for x in audit(tmp_path)[before:]
            if x.get("step") != "facts"
            and (
                "helm.cattle.io" in str(x.get("command", ""))
                or ".oci.tar" in str(x.get("command", ""))
            )
        ]
        assert placing == []


def test_a_tampered_blob_is_caught_at_create(images: Images, world: World, tmp_path: Path) -> None:
    keys.write_key_pair(world.key, tmp_path / "k", b"pw")
    img = oci.build_image(seed="evil")
    s = images.reg.session()
    oci.push_raw(s, images.reg.url, "acme/evil", "1.0", img)
    layer = img.layers[0]
    blob = images.reg.blob_path(oci.digest_of(layer))
    data = bytearray(blob.read_bytes())
    data[-5] ^= 1
    blob.write_bytes(bytes(data))
    auth = images.env["REGISTRY_AUTH_FILE"]
    r = _create(
        world,
        tmp_path,
        images,
        "--image",
        f"{images.reg.host}/acme/evil:1.0",
        "--registry-auth-file",
        auth,
    )
    assert r.returncode == 3, r.stderr
    assert "acme/evil" in r.stderr and oci.digest_of(layer) in r.stderr
    assert oci.digest_of(bytes(data)) in r.stderr
    assert not (tmp_path / "w.tar.zst").exists()


def test_the_auditor_recipe_checks_every_workload_byte(
    bundle: Path, world: World, tmp_path: Path
) -> None:
    """The stock-tools recipe of docs/format.md still verifies every member of a bundle that
    carries images, a chart and a manifest."""
    import subprocess

    script = audit_commands("ed25519")
    env = {"PATH": "/usr/bin:/bin", "BUNDLE": str(bundle), "PUB": str(world.pub)}
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads(mk8s("bundle", "inspect", str(bundle), "--json", cwd=tmp_path).stdout)
    assert r.stdout.count(": OK") == len(manifest["manifest"]["artifacts"]) == 9
    assert "artifacts/oci/" in r.stdout and "artifacts/charts/" in r.stdout


def test_a_locked_image_that_drifts_is_an_alarm(
    images: Images, world: World, tmp_path: Path
) -> None:
    """`bundle lock --image` pins the digest; `create --lock` pulls exactly that and
    refuses other bytes (exit 3), like any upstream drift."""
    import os
    import subprocess
    import sys

    keys.write_key_pair(world.key, tmp_path / "k", b"pw")
    img = oci.build_image(seed="drift")
    s = images.reg.session()
    oci.push_raw(s, images.reg.url, "acme/drift", "1.0", img)
    env = {**os.environ, **world.up.env, **images.env, "MK8S_KEY_PASSPHRASE": "pw"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mk8s", "bundle", *args, "--cache", str(tmp_path / "c")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    r = run("lock", "--rke2", "v1.28.x", "--image", f"{images.reg.host}/acme/drift:1.0")
    assert r.returncode == 0, r.stderr
    lock = json.loads((tmp_path / "mk8s.lock").read_text())
    (pinned,) = [a for a in lock["artifacts"] if a["kind"] == "image"]
    assert pinned["url"].endswith("@" + img.digest)
    shutil.rmtree(tmp_path / "c")  # nothing cached: create pulls again, by digest
    layer = images.reg.blob_path(oci.digest_of(img.layers[1]))
    data = bytearray(layer.read_bytes())
    data[10] ^= 1
    layer.write_bytes(bytes(data))
    r = run("create", "--lock", "mk8s.lock", "--key", "k.key", "-o", "b.tar.zst")
    assert r.returncode == 3, r.stderr
    assert "acme/drift" in r.stderr and oci.digest_of(img.layers[1]) in r.stderr
    assert not (tmp_path / "b.tar.zst").exists()
