"""A multi-platform image pinned by digest must be findable by that digest wherever
mk8s puts it: on a node (real containerd imports the archive) and in a registry
(a real docker-registry). mk8s keeps the image's own index, carries the bundle's
platforms of it (or every platform with --all-platforms), records which in the lock,
and refuses where a partial index cannot work: a registry, or an RKE2 that imports
without WithSkipMissing."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle import workloads
from mk8s.bundle.manifest import Artifact, ArtifactKind, Lock, Release
from mk8s.deploy.builders import plan
from mk8s.errors import InputError
from mk8s.images import Credentials, RegistryClient, RegistrySettings, push_archive
from mk8s.images.errors import ImageArchiveError
from tests.support import oci
from tests.support.containerd import Containerd
from tests.support.registry import TestRegistry, registry_for_tests
from tests.test_images_modes import FRESH, REGISTRY, _cluster

MULTI = ("linux/amd64", "linux/arm64", "linux/s390x")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestRegistry]:
    with registry_for_tests(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def multi(registry: TestRegistry) -> oci.BuiltIndex:
    built = oci.build_index(MULTI, seed="pins")
    oci.push_raw(registry.session(), registry.url, "acme/multi", "3.0", built)
    return built


@pytest.fixture
def env(registry: TestRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (tmp_path / "auth.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(registry.ca_file))


def pin(registry: TestRegistry, tmp_path: Path, tag: str, every: bool = False) -> Artifact:
    pins = workloads.ImagePins(("amd64",), tag, all_platforms=every)
    (art,) = workloads.pin_images([f"{registry.host}/acme/multi:3.0"], pins, tmp_path / "c")
    return art


def archive(tmp_path: Path, art: Artifact) -> Path:
    return tmp_path / "c" / "sha256" / art.sha256


@pytest.mark.usefixtures("env")
def test_the_pinned_index_digest_resolves_on_a_node(
    registry: TestRegistry, multi: oci.BuiltIndex, containerd: Containerd, tmp_path: Path
) -> None:
    art = pin(registry, tmp_path, "v1.28.15+rke2r1")
    assert art.url and art.url.endswith(f"acme/multi:3.0@{multi.digest}")
    assert art.platforms == ("linux/amd64",)  # the index lists more than it carries
    path = archive(tmp_path, art).rename(tmp_path / "multi.oci.tar")
    got = containerd.judge([path])
    assert got.errors == {}
    repo = f"{registry.host}/acme/multi"
    assert got.resolves(f"{repo}:3.0") == multi.digest
    assert got.resolves(f"{repo}@{multi.digest}") == multi.digest  # the lock's pin
    # An RKE2 without WithSkipMissing could not import it: bundle create refuses.
    old = containerd.judge([path], all_platforms=True)
    assert "not found" in old.errors[path.name]
    with pytest.raises(InputError, match=r"cannot import an image index.*--all-platforms"):
        pin(registry, tmp_path / "old", "v1.28.10+rke2r1")


@pytest.mark.usefixtures("env")
def test_every_platform_pushes_and_the_pin_exists_in_the_registry(
    registry: TestRegistry, multi: oci.BuiltIndex, tmp_path: Path
) -> None:
    part = pin(registry, tmp_path, "v1.28.15+rke2r1")
    settings = RegistrySettings(ca_file=registry.ca_file, use_docker_config=False)
    creds = Credentials(registry.username, registry.password)
    with RegistryClient(registry.host, settings, credentials=creds) as client:
        before = registry.request_count("POST")
        with pytest.raises(ImageArchiveError, match="--all-platforms") as e:
            push_archive(archive(tmp_path, part), client, prefix="mirror")
        assert multi.digest in e.value.problem
        assert registry.request_count("POST") == before  # nothing was sent
        whole = pin(registry, tmp_path, "v1.28.10+rke2r1", every=True)
        assert whole.platforms == ()  # the whole index: nothing to record
        report = push_archive(archive(tmp_path, whole), client, prefix="mirror")
    (pushed,) = report.images
    assert pushed.digest == multi.digest
    r = registry.session().get(
        f"{registry.url}/v2/mirror/acme/multi/manifests/{multi.digest}",
        headers={"Accept": oci.OCI_INDEX},
    )
    assert r.status_code == 200 and r.content == multi.index


@pytest.mark.usefixtures("env")
def test_create_from_the_lock_pulls_the_same_platforms(
    registry: TestRegistry, multi: oci.BuiltIndex, tmp_path: Path
) -> None:
    art = pin(registry, tmp_path, "v1.28.15+rke2r1")
    lock = Lock(
        release=Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=("amd64",)),
        resolved_at="2026-01-01T00:00:00Z",
        artifacts=(art,),
    )
    again = Lock.from_bytes(lock.to_bytes())
    (back,) = again.find(kind=ArtifactKind.IMAGE)
    assert back.platforms == ("linux/amd64",)
    files = workloads.fetch_images(again, tmp_path / "fresh")  # an empty cache: pulls
    assert oci.digest_of(files[art.path].read_bytes()) == "sha256:" + art.sha256


def _image(platforms: tuple[str, ...]) -> Artifact:
    name = "r_acme_multi_3.0_0123456789ab.oci.tar"
    return Artifact(
        name=name,
        kind=ArtifactKind.IMAGE,
        path=f"artifacts/oci/{name}",
        size=1,
        sha256="a" * 64,
        url=f"oci://r.test/acme/multi:3.0@sha256:{'b' * 64}",
        platforms=platforms,
    )


@pytest.mark.parametrize(
    "images,tag,platforms,problem",
    [
        (REGISTRY, "v1.28.15+rke2r1", ("linux/amd64",), "registry stores an image index only"),
        (REGISTRY, "v1.28.15+rke2r1", (), None),
        ("{distribution: all}", "v1.28.15+rke2r1", ("linux/amd64",), None),
        ("{distribution: all}", "v1.28.10+rke2r1", ("linux/amd64",), "cannot import"),
        ("{distribution: servers}", "v1.27.14+rke2r1", ("linux/amd64",), "cannot import"),
    ],
)
def test_preflight_refuses_a_partial_index_where_it_cannot_work(
    tmp_path: Path, images: str, tag: str, platforms: tuple[str, ...], problem: str | None
) -> None:
    from tests.test_images_modes import _manifest

    base = _manifest(tag)
    manifest = Lock(
        release=base.release,
        resolved_at=base.resolved_at,
        artifacts=(*base.artifacts, _image(platforms)),
        kind=base.kind,
        created_by=base.created_by,
    )
    c = _cluster(tmp_path, images)
    got = [p for p in plan.preflight(c, manifest, {"cp1": FRESH, "w1": FRESH}) if "index" in p]
    if problem is None:
        assert got == []
    else:
        (line,) = got
        assert problem in line and "--all-platforms" in line and "r.test/acme/multi" in line
