"""The stand-in imports workload images and applies manifests the way RKE2 does
(docs/bundles.md, workloads), on real test hosts, nodes driven directly (install.sh,
config.yaml, systemctl):

* images: every tarball in ``agent/images`` is imported at start, an OCI image layout
  (``*.oci.tar``, what mk8s places) or a docker archive (RKE2's ``rke2-images*``), with
  every blob checked against its digest. A mismatch or a missing blob is an import
  error (``level=error msg="Failed to import FILE: image NAME: ... digest mismatch:
  expected sha256:X got sha256:Y"``): the file's images are not imported, the node
  still starts. ``rke2 mk8s-images`` prints what the node imported (JSON).
* manifests: a server records each file in ``server/manifests``: a HelmChart whose
  ``chartContent`` is a chart is installed, other objects are applied; a file that
  does not parse, or an object without kind, is refused (``Failed to process
  manifest FILE: ...``) and recorded as failed. ``kubectl get --raw /mk8s/manifests``
  and ``kubectl get helmcharts -A -o json`` show the result.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import oci, standin
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin import images
from tests.support.standin_nodes import (
    ARCH,
    IMAGES_DIR,
    KUBECTL,
    RESET,
    TAG,
    configure,
    copy_files,
    install,
    ssh,
    start,
    wait_ready,
)

pytestmark = pytest.mark.hosts


MANIFESTS_DIR = "/var/lib/rancher/rke2/server/manifests"
RELEASE_FILE = f"rke2-images.linux-{ARCH}.tar.zst"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release with its real image tarball (a zstd docker archive padded with
    skippable frames, as the example upstream serves it), known to its rke2 program."""
    d = tmp_path_factory.mktemp("full")
    data = images.image_archive(ARCH, TAG, RELEASE_FILE, size=256 * 1024)
    files = {
        RELEASE_FILE: data,
        f"rke2.linux-{ARCH}.tar.gz": standin.rke2_tarball(
            ARCH, TAG, {RELEASE_FILE: hashlib.sha256(data).hexdigest()}
        ),
    }
    for name, b in files.items():
        (d / name).write_bytes(b)
    sums = "".join(standin.sha256sum_line(n, b) for n, b in files.items())
    (d / f"sha256sum-{ARCH}.txt").write_text(sums)
    (d / "install.sh").write_bytes(standin.install_script(TAG))
    return d


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(2, tmp_path_factory.mktemp("wl-hosts"), names=["cp1", "w1"]) as hs:
        yield hs


@pytest.fixture
def nodes(hs: HostSet) -> Iterator[list[Host]]:
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    yield hs.hosts


def imported(h: Host) -> dict:
    return json.loads(ssh(h, "rke2 mk8s-images").stdout)


def names(h: Host) -> dict[str, str]:
    return {i["name"]: i["digest"] for i in imported(h)["images"]}


def journal(h: Host, unit: str) -> str:
    return ssh(h, f"journalctl -u {unit} --no-pager").stdout


def server(h: Host, full: Path, extra: list[Path] = (), **cfg: object) -> str:  # type: ignore[assignment]
    install(h, full)
    if extra:
        copy_files(h, list(extra), IMAGES_DIR)
    configure(h, "server", **cfg)
    start(h, "server")
    return ssh(h, "cat /var/lib/rancher/rke2/server/node-token").stdout.strip()


RELEASE_NAMES = set(images.images_in(TAG, RELEASE_FILE))


# ---- images ---------------------------------------------------------------------------
def test_oci_layout_and_docker_archive_are_imported(
    nodes: list[Host], full: Path, tmp_path: Path
) -> None:
    cp1, _ = nodes
    one, idx = oci.build_image(seed="one"), oci.build_index(seed="two")
    layout = oci.layout_archive(
        tmp_path / "mk8s-image-app-0123456789ab.oci.tar",
        {"registry.example/team/app:1.0": one, "registry.example/team/multi:2": idx},
    )
    a = oci.saved_image(["registry.example/tools/a:1", "busybox:1.36"], "a")
    b = oci.saved_image(["rancher/extra:2"], "b", shared=a.layers[0])
    docker = oci.docker_archive(tmp_path / "extra-images.tar.zst", [a, b])
    plain = oci.docker_archive(
        tmp_path / "plain.tar", [oci.saved_image(["x.test/p:1"], "p")], zstd=False
    )
    server(cp1, full, [layout, docker, plain])
    got = names(cp1)
    assert got["registry.example/team/app:1.0"] == one.digest
    assert got["registry.example/team/multi:2"] == idx.digest
    assert got["registry.example/tools/a:1"] == a.config_digest
    assert got["docker.io/library/busybox:1.36"] == a.config_digest
    assert got["docker.io/rancher/extra:2"] == b.config_digest
    assert "x.test/p:1" in got
    assert set(got) >= RELEASE_NAMES  # the release's own (padded zstd) archive
    state = json.loads(cp1.path("/var/lib/rancher/rke2/agent/mk8s-standin-images.json").read_text())
    assert state["images"] == imported(cp1)["images"]
    assert {i["file"] for i in state["images"]} == {
        layout.name,
        docker.name,
        plain.name,
        RELEASE_FILE,
    }
    assert not any(f.get("error") for f in state["files"].values())
    log = journal(cp1, "rke2-server")
    assert f"Imported images from {IMAGES_DIR}/{layout.name}" in log
    assert "level=error" not in log


def _assert_import_error(h: Host, unit: str, file: str, image: str, want: str, got: str) -> None:
    line = next(
        (
            ln
            for ln in journal(h, unit).splitlines()
            if f"Failed to import {IMAGES_DIR}/{file}" in ln
        ),
        "",
    )
    assert "level=error" in line, journal(h, unit)
    assert f"image {image}" in line and f"expected {want} got {got}" in line, line
    assert "digest mismatch" in line, line
    rec = imported(h)["files"][file]
    assert rec["images"] == [] and "digest mismatch" in rec["error"]


def test_tampered_oci_blob_is_an_import_error_and_the_node_starts(
    nodes: list[Host], full: Path, tmp_path: Path
) -> None:
    cp1, _ = nodes
    good, bad = oci.build_image(seed="good"), oci.build_image(seed="bad")
    ok = oci.layout_archive(tmp_path / "good.oci.tar", {"registry.example/good:1": good})
    layer = oci.digest_of(bad.layers[1])
    tampered = bytearray(bad.layers[1])
    tampered[-1] ^= 1
    broken = oci.layout_archive(
        tmp_path / "bad.oci.tar",
        {"registry.example/bad:1": bad},
        replace={layer: bytes(tampered)},
    )
    server(cp1, full, [ok, broken])
    _assert_import_error(
        cp1,
        "rke2-server",
        broken.name,
        "registry.example/bad:1",
        layer,
        oci.digest_of(bytes(tampered)),
    )
    got = names(cp1)
    assert "registry.example/bad:1" not in got
    assert got["registry.example/good:1"] == good.digest
    assert wait_ready(cp1, {"cp1"}) == {"cp1": True}
    assert ssh(cp1, f"{KUBECTL} get --raw /readyz").stdout.strip() == "ok"


def test_missing_oci_blob_is_an_import_error(nodes: list[Host], full: Path, tmp_path: Path) -> None:
    cp1, _ = nodes
    idx = oci.build_index(seed="m")
    arm = idx.images["linux/arm64"]
    gone = oci.digest_of(arm.config)
    broken = oci.layout_archive(
        tmp_path / "missing.oci.tar", {"registry.example/m:1": idx}, omit=[gone]
    )
    server(cp1, full, [broken])
    log = journal(cp1, "rke2-server")
    assert (
        f"Failed to import {IMAGES_DIR}/{broken.name}: image registry.example/m:1: config {gone}: "
        f"missing blob blobs/sha256/{gone[7:]}"
    ) in log
    assert "registry.example/m:1" not in names(cp1)
    assert wait_ready(cp1, {"cp1"}) == {"cp1": True}


def test_tampered_docker_layer_is_an_import_error_on_an_agent(
    nodes: list[Host], full: Path, tmp_path: Path
) -> None:
    cp1, w1 = nodes
    token = server(cp1, full)
    img = oci.saved_image(["registry.example/tools/d:1"], "d")
    diff_id = oci.digest_of(img.layers[1])
    tampered = img.layers[1].replace(b"d\n", b"e\n", 1)
    broken = oci.docker_archive(
        tmp_path / "tools.tar.zst",
        [oci.SavedImage(img.repo_tags, img.config, [img.layers[0], tampered])],
    )
    install(w1, full)
    copy_files(w1, [broken], IMAGES_DIR)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token=token)
    start(w1, "agent")
    assert wait_ready(cp1, {"cp1", "w1"}) == {"cp1": True, "w1": True}
    _assert_import_error(
        w1,
        "rke2-agent",
        broken.name,
        "registry.example/tools/d:1",
        diff_id,
        oci.digest_of(tampered),
    )
    got = names(w1)
    assert "registry.example/tools/d:1" not in got
    assert set(got) >= RELEASE_NAMES


def test_docker_config_not_matching_its_name_is_an_import_error(
    nodes: list[Host], full: Path, tmp_path: Path
) -> None:
    cp1, _ = nodes
    img = oci.saved_image(["registry.example/c:1"], "c")
    path = oci.docker_archive(tmp_path / "c.tar", [img], zstd=False)
    # rewrite the config member (same name, one byte changed)
    src = io.BytesIO(path.read_bytes())
    out = io.BytesIO()
    name = img.config_digest[7:] + ".json"
    changed = img.config.replace(b'"os"', b'"OS"')
    with tarfile.open(fileobj=src) as tin, tarfile.open(fileobj=out, mode="w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == name:
                data, m.size = changed, len(changed)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    path.write_bytes(out.getvalue())
    server(cp1, full, [path])
    _assert_import_error(
        cp1,
        "rke2-server",
        path.name,
        "registry.example/c:1",
        img.config_digest,
        oci.digest_of(changed),
    )
    assert wait_ready(cp1, {"cp1"}) == {"cp1": True}


# ---- manifests ------------------------------------------------------------------------
def chart_tgz(name: str = "hello", version: str = "0.1.0") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, data in {
            f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode(),
            f"{name}/values.yaml": b"replicas: 1\n",
            f"{name}/templates/cm.yaml": b"apiVersion: v1\nkind: ConfigMap\n",
        }.items():
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def helmchart(name: str, content: bytes) -> str:
    """A HelmChart as mk8s writes it (mk8s/deploy/builders/addons.py)."""
    return (
        f"apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: {name}\n"
        f"  namespace: kube-system\nspec:\n  targetNamespace: default\n"
        f"  chartContent: {base64.b64encode(content).decode()}\n"
    )


def place(h: Host, name: str, text: str) -> None:
    p = h.ssh(f"mkdir -p {MANIFESTS_DIR} && cat > {MANIFESTS_DIR}/{name}", input=text)
    assert p.returncode == 0, p.stderr


def record(h: Host, name: str, timeout: float = 10) -> dict:
    """The server's record of manifest file ``name`` (waits for the next poll)."""
    deadline = time.monotonic() + timeout
    while True:
        out = json.loads(ssh(h, f"{KUBECTL} get --raw /mk8s/manifests").stdout)
        rec = out["servers"].get(h.name, {}).get("files", {}).get(name)
        if rec is not None or time.monotonic() > deadline:
            assert rec is not None, out
            return rec


def test_helmchart_with_chart_content_is_installed(nodes: list[Host], full: Path) -> None:
    cp1, _ = nodes
    place(cp1, "mk8s-chart-hello-0123456789ab.yaml", helmchart("hello", chart_tgz()))
    server(cp1, full)  # present at start
    rec = record(cp1, "mk8s-chart-hello-0123456789ab.yaml")
    assert rec["status"] == "applied"
    (obj,) = rec["objects"]
    assert obj["status"] == "installed" and (obj["chart"], obj["version"]) == ("hello", "0.1.0")
    charts = json.loads(ssh(cp1, f"{KUBECTL} get helmcharts -A -o json").stdout)
    (item,) = charts["items"]
    assert item["metadata"] == {"name": "hello", "namespace": "kube-system"}
    assert item["status"]["chart"] == "hello" and item["status"]["state"] == "installed"
    # placed later: picked up by the poll
    place(
        cp1, "mk8s-chart-other-0123456789ab.yaml", helmchart("other", chart_tgz("other", "2.0.1"))
    )
    assert record(cp1, "mk8s-chart-other-0123456789ab.yaml")["objects"][0]["version"] == "2.0.1"
    table = ssh(cp1, f"{KUBECTL} get helmcharts -n kube-system").stdout
    assert "other" in table and "2.0.1" in table
    assert "Applied manifest" in journal(cp1, "rke2-server")


def test_configmap_manifest_is_applied(nodes: list[Host], full: Path) -> None:
    cp1, _ = nodes
    server(cp1, full)
    place(
        cp1,
        "mk8s-manifest-app-0123456789ab.yaml",
        "# the app's settings\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  namespace: apps\n"
        'data:\n  mode: "air-gapped"\n  level: debug\n',
    )
    rec = record(cp1, "mk8s-manifest-app-0123456789ab.yaml")
    assert rec["status"] == "applied", rec
    kinds = [(o["kind"], o["name"], o["status"]) for o in rec["objects"]]
    assert kinds == [("Namespace", "apps", "applied"), ("ConfigMap", "app-config", "applied")]
    assert rec["objects"][1]["namespace"] == "apps"


def _assert_refused(h: Host, name: str, why: str) -> None:
    rec = record(h, name)
    assert rec["status"] == "failed" and rec["objects"] == [], rec
    assert why in rec["error"], rec
    log = journal(h, "rke2-server")
    assert f'level=error msg="Failed to process manifest {MANIFESTS_DIR}/{name}: ' in log, log
    charts = json.loads(ssh(h, f"{KUBECTL} get helmcharts -A -o json").stdout)["items"]
    assert charts == []


def test_manifest_that_does_not_parse_is_refused(nodes: list[Host], full: Path) -> None:
    cp1, _ = nodes
    server(cp1, full)
    place(
        cp1,
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n    namespace: bad-indent\n",
    )
    _assert_refused(cp1, "broken.yaml", "unexpected indentation")


def test_manifest_document_without_kind_is_refused(nodes: list[Host], full: Path) -> None:
    cp1, _ = nodes
    server(cp1, full)
    # the second document has no kind: nothing of the file is applied
    place(
        cp1,
        "nokind.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n---\n"
        "apiVersion: v1\nmetadata:\n  name: kindless\n",
    )
    _assert_refused(cp1, "nokind.yaml", "document 2: Object 'Kind' is missing")


def test_helmchart_whose_content_is_not_a_chart_is_refused(nodes: list[Host], full: Path) -> None:
    cp1, _ = nodes
    server(cp1, full)
    place(cp1, "mk8s-chart-bad-0123456789ab.yaml", helmchart("bad", b"not a gzip tar"))
    _assert_refused(cp1, "mk8s-chart-bad-0123456789ab.yaml", "is not a chart archive")
    nochart = io.BytesIO()
    with tarfile.open(fileobj=nochart, mode="w:gz") as tf:
        ti = tarfile.TarInfo("hello/values.yaml")
        tf.addfile(ti, io.BytesIO(b""))
    place(cp1, "mk8s-chart-nochart-0123456789ab.yaml", helmchart("nochart", nochart.getvalue()))
    _assert_refused(cp1, "mk8s-chart-nochart-0123456789ab.yaml", "no NAME/Chart.yaml")
