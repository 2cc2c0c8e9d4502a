"""mk8s/bundle/workloads.py: what a bundle may carry besides RKE2: chart and manifest
validation, artifact names, charts as Helm releases (one version per chart, nothing over
helm-controller's 1 MiB ConfigMap), and images pinned by digest with their platforms
(a real registry; the node side judged by real containerd when run as root)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle import workload_sources as workloads
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock, Release
from mk8s.errors import ImageArchiveError, InputError, LockError
from mk8s.images import Credentials, RegistryClient, push_archive
from mk8s.images import RegistryClientSettings as RegistrySettings
from tests.support import oci
from tests.support.charts import chart_art, chart_tgz, make_chart, workloads_context
from tests.support.containerd import Containerd
from tests.support.registry import TestRegistry, registry_for_tests


def test_chart_validation(tmp_path: Path) -> None:
    assert workloads.check_chart(make_chart(tmp_path / "hello-0.1.0.tgz")) == ("hello", "0.1.0")
    with pytest.raises(InputError, match="no NAME/Chart.yaml"):
        workloads.check_chart(make_chart(tmp_path / "a.tgz", None))
    with pytest.raises(InputError, match="lacks apiVersion, name or version"):
        workloads.check_chart(make_chart(tmp_path / "b.tgz", "name: x\n"))
    (tmp_path / "c.tgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="not a chart archive"):
        workloads.check_chart(tmp_path / "c.tgz")


@pytest.mark.parametrize(
    "text,match",
    [
        ("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Namespace\n", None),
        ("apiVersion: v1\n", "lacks apiVersion or kind"),
        ("- a\n- b\n", "lacks apiVersion or kind"),
        ("key: [unclosed\n", "not valid YAML"),
        ("", "holds no document"),
        ("---\n---\n", "holds no document"),
        ("apiVersion: null\nkind: ConfigMap\n", "document 1 lacks apiVersion or kind"),
        ("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: 5\n", "document 2 lacks"),
        ("apiVersion: v1\nkind: ''\n", "lacks apiVersion or kind"),
        ("apiVersion: v1\nkind: [x]\n", "lacks apiVersion or kind"),
        ("a: " + "[" * 65 + "]" * 65 + "\n", "nested deeper than 64 levels"),
    ],
)
def test_manifest_validation(tmp_path: Path, text: str, match: str | None) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    if match is None:
        assert workloads.check_manifest(p) == 2
    else:
        with pytest.raises(InputError, match=match):
            workloads.check_manifest(p)


def test_image_names_are_safe_and_unique() -> None:
    d1 = "sha256:" + "a" * 64
    d2 = "sha256:" + "b" * 64
    n1 = workloads.image_name("ghcr.io", "org/app", "1.2.3", d1)
    n2 = workloads.image_name("ghcr.io", "org/app", "1.2.3", d2)
    assert n1 != n2 and n1.endswith("_aaaaaaaaaaaa.oci.tar")
    long = workloads.image_name("r.example:5000", "a/" * 60 + "x", "t" * 40, d1)
    assert len(long) <= 80 and set(long) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-"
    )


# -- charts as Helm releases: what a bundle may carry ------------------------------------
def test_two_versions_of_one_chart_cannot_share_a_bundle(tmp_path: Path) -> None:
    paths = [
        chart_tgz(tmp_path / "web-1.4.0.tgz", "web", "1.4.0"),
        chart_tgz(tmp_path / "Web-2.0.0.tgz", "Web", "2.0.0"),
    ]
    with pytest.raises(InputError, match="both install as Helm release 'web'"):
        workloads.pin_charts(paths, chart_art)


def test_a_chart_over_the_configmap_limit_is_refused(tmp_path: Path) -> None:
    workloads.too_big("x", workloads.MAX_CHART_BYTES, "chart x")  # 768 KiB: base64 is 1 MiB
    with pytest.raises(InputError, match=r"1048576 bytes, so a chart over 786432 bytes"):
        workloads.too_big("x", workloads.MAX_CHART_BYTES + 1, "chart x")
    big = chart_tgz(tmp_path / "big-1.0.0.tgz", "big", "1.0.0", payload=800 << 10)
    with pytest.raises(InputError, match="never installs") as e:
        workloads.check_chart(big)
    assert e.value.fix and "smaller" in e.value.fix
    # A lock may pin one too (an older mk8s, an edited lock): create refuses it as well.
    art = Artifact(
        name="big.tgz",
        kind=ArtifactKind.CHART,
        path="artifacts/charts/big.tgz",
        size=big.stat().st_size,
        sha256="0" * 64,
    )
    with pytest.raises(InputError, match="chart big.tgz is"):
        workloads.check_releases([art])


def test_bundle_create_refuses_a_chart_too_big_to_install(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = chart_tgz(tmp_path / "big-1.0.0.tgz", "big", "1.0.0", payload=800 << 10)
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--unsigned", "--chart", str(big))
    assert r.code == 2, r.err
    (line,) = r.err.strip().splitlines()
    assert "1048576" in line and "768 KiB" in line and "helm-controller" in line
    assert "Traceback" not in r.err and not list(tmp_path.glob("*.tar.zst"))


def test_the_manifest_carries_chart_and_platforms(tmp_path: Path) -> None:
    web = chart_art(chart_tgz(tmp_path / "web-1.5.0.tgz", "web", "1.5.0"))
    ctx = workloads_context(tmp_path, (web,))
    back = Lock.from_bytes(ctx.manifest.to_bytes())
    (chart,) = back.find(kind=ArtifactKind.CHART)
    assert chart.chart == ("web", "1.5.0")
    doc = json.loads(ctx.manifest.to_bytes())
    (entry,) = [a for a in doc["artifacts"] if a["kind"] == "chart"]
    assert entry["chart"] == {"name": "web", "version": "1.5.0"}
    bad = [
        ({"kind": "file", "chart": {"name": "web", "version": "1"}}, "chart"),
        ({"chart": {"name": "a b", "version": "1"}}, "chart"),
        ({"platforms": ["linux/amd64"]}, "platforms"),
    ]
    for change, word in bad:
        broken = json.loads(json.dumps(doc))
        (target,) = [a for a in broken["artifacts"] if a["kind"] == "chart"]
        target.update(change)
        if target["kind"] == "file":
            target["path"] = "artifacts/files/" + target["name"]
        with pytest.raises(LockError, match=word):
            Lock.from_bytes(json.dumps(broken).encode())
        with pytest.raises(LockError, match=word):
            Lock.from_bytes(json.dumps(broken).encode(), validate=False)


# -- images pinned by digest, multi-platform (a real registry; real containerd as root) --
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
