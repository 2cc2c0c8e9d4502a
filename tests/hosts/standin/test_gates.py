"""The stand-in holds RKE2's release gates (tests/support/standin/gates.py), on real test
hosts driven by hand, each release built for the test:

* an image index whose other platforms are absent imports from v1.28.11 on
  (WithSkipMissing); v1.28.10 fails the whole file: "content digest ...: not found";
* a tarball placed in agent/images while RKE2 runs is imported from v1.31.5 on; v1.28.15
  imports it only at its next start;
* agents of v1.31.13 cannot pull from the embedded registry mirror (rancher/rke2#9197).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import oci
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    IMAGES,
    IMAGES_DIR,
    MIRROR_DOCKER_IO,
    RESET,
    configure,
    copy_files,
    first_server,
    install,
    install_bare,
    ssh,
    start,
    why_start_failed,
    write_artifacts,
    write_registries,
)

pytestmark = pytest.mark.hosts

PARTIAL_OLD, PARTIAL_NEW = "v1.28.10+rke2r1", "v1.28.11+rke2r1"
WATCH_OLD, WATCH_NEW = "v1.28.15+rke2r1", "v1.31.5+rke2r1"
BROKEN = "v1.31.13+rke2r1"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("releases")
    tags = {PARTIAL_OLD, PARTIAL_NEW, WATCH_OLD, WATCH_NEW, BROKEN}
    out = {t: write_artifacts(d / t, t, [IMAGES]) for t in tags}
    out["bare"] = write_artifacts(d / "bare", BROKEN, [])
    return out


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(2, tmp_path_factory.mktemp("gate-hosts"), names=["cp1", "w1"]) as hs:
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


def partial_archive(d: Path) -> tuple[Path, oci.BuiltIndex]:
    """The image's own index, only linux/amd64's manifest and blobs (as mk8s carries)."""
    idx = oci.build_index(("linux/amd64", "linux/arm64"), seed="gate")
    arm = idx.images["linux/arm64"]
    path = oci.layout_archive(
        d / "mk8s-part.oci.tar",
        {"registry.example/team/part:1": idx},
        omit=[arm.digest, *arm.blobs],
    )
    return path, idx


@pytest.mark.parametrize("tag,ok", [(PARTIAL_NEW, True), (PARTIAL_OLD, False)])
def test_a_partial_index_imports_from_skip_missing_releases(
    nodes: list[Host], releases: dict[str, Path], tmp_path: Path, tag: str, ok: bool
) -> None:
    cp1 = nodes[0]
    path, idx = partial_archive(tmp_path)
    install(cp1, releases[tag])
    copy_files(cp1, [path], IMAGES_DIR)
    configure(cp1, "server")
    start(cp1, "server")
    got = imported(cp1)
    rec = got["files"][path.name]
    if ok:
        assert "error" not in rec
        names = {i["name"]: i["digest"] for i in got["images"]}
        assert names["registry.example/team/part:1"] == idx.digest
    else:
        missing = idx.images["linux/arm64"].digest
        assert f"content digest {missing}: not found" in rec["error"]


@pytest.mark.parametrize("tag,live", [(WATCH_NEW, True), (WATCH_OLD, False)])
def test_images_placed_while_running_are_imported_from_january_2025(
    nodes: list[Host], releases: dict[str, Path], tmp_path: Path, tag: str, live: bool
) -> None:
    cp1 = nodes[0]
    install(cp1, releases[tag])
    configure(cp1, "server")
    start(cp1, "server")
    img = oci.build_image(seed="late")
    late = oci.layout_archive(tmp_path / "mk8s-late.oci.tar", {"registry.example/team/late:1": img})
    copy_files(cp1, [late], IMAGES_DIR)
    deadline = time.monotonic() + 6
    while late.name not in imported(cp1)["files"] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (late.name in imported(cp1)["files"]) is live
    if not live:  # imported at the next start only
        ssh(cp1, "systemctl restart rke2-server")
        assert late.name in imported(cp1)["files"]


def test_agents_of_a_broken_release_cannot_use_the_embedded_mirror(
    nodes: list[Host], releases: dict[str, Path]
) -> None:
    cp1, w1 = nodes
    write_registries(cp1, MIRROR_DOCKER_IO)
    token = first_server(cp1, releases[BROKEN], embedded_registry=True)
    install_bare(w1, releases["bare"])
    write_registries(w1, MIRROR_DOCKER_IO)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token=token)
    why = why_start_failed(w1, "agent")
    assert "rancher/rke2#9197" in why and "embedded registry mirror" in why
