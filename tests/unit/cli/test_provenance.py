"""SBOM and diff against bundles created from the example upstream (real docker-archive
image tarballs), as a user runs them: schema-valid CycloneDX 1.5 and SPDX 2.3 (the
official JSON schemas, shipped by the lib4sbom package of the test extra), deterministic
output, the embedded SBOM, and the diff of two real locks and of two real bundles."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from mk8s.bundle.format import keys
from mk8s.images import list_images
from tests.support import oci
from tests.support.upstream import ExampleUpstream

OLD_TAG = "v1.28.14+rke2r1"
TAG = "v1.28.15+rke2r1"
BUNDLE = "mk8s-rke2-v1.28.15-rke2r1-linux-amd64.tar.zst"
IMAGES = "rke2-images.linux-amd64.tar.zst"


def _schemas() -> Path:
    spec = importlib.util.find_spec("lib4sbom")  # locates the package, runs none of it
    assert spec and spec.submodule_search_locations, "install the test extra (lib4sbom)"
    return Path(next(iter(spec.submodule_search_locations))) / "schemas"


def _validator(fmt: str) -> jsonschema.protocols.Validator:
    if fmt == "spdx":
        schema = json.loads((_schemas() / "spdx" / "2.3-schema.json").read_text())
        return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    cdx = _schemas() / "cyclonedx"
    registry: Registry = Registry()
    for name in ("spdx.schema.json", "jsf-0.82.schema.json"):
        doc = json.loads((cdx / name).read_text())
        registry = registry.with_resource(
            f"http://cyclonedx.org/schema/{name}", Resource.from_contents(doc)
        )
    schema = json.loads((cdx / "bom-1.5.schema.json").read_text())
    return jsonschema.Draft7Validator(
        schema, registry=registry, format_checker=jsonschema.FormatChecker()
    )


def _assert_valid(fmt: str, doc: dict) -> None:
    errors = sorted(_validator(fmt).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ExampleUpstream]:
    with ExampleUpstream() as up:
        yield up


@pytest.fixture
def env(upstream: ExampleUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    upstream.faults.clear()
    for k, v in upstream.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MK8S_KEY_PASSPHRASE", "pw")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    keys.write_key_pair(keys.generate_private_key(), tmp_path / "mk8s", b"pw")
    return tmp_path


def _chart(path: Path) -> Path:
    files = {
        "mychart/Chart.yaml": b"apiVersion: v2\nname: mychart\nversion: 1.2.3\nappVersion: '4.5'\n",
        "mychart/templates/cm.yaml": b"kind: ConfigMap\n",
    }
    path.write_bytes(oci.gzip_of(oci.tar_of(files)))
    return path


def _oci_archive(path: Path) -> tuple[Path, str]:
    """An OCI image-layout archive of one image named ghcr.io/acme/app:1.0."""
    img = oci.build_image(seed="acme")
    entry = {
        "mediaType": oci.OCI_MANIFEST,
        "digest": img.digest,
        "size": len(img.manifest),
        "annotations": {"org.opencontainers.image.ref.name": "ghcr.io/acme/app:1.0"},
    }
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode(),
        f"blobs/sha256/{img.digest.split(':')[1]}": img.manifest,
    }
    for digest, blob in img.blobs.items():
        files[f"blobs/sha256/{digest.split(':')[1]}"] = blob
    path.write_bytes(oci.tar_of(files))
    return path, img.digest


def _create(run_cli, env: Path, spec: str, out: str, *extra: str) -> Path:  # type: ignore[no-untyped-def]
    (env / out).mkdir()
    r = run_cli("bundle", "create", "--rke2", spec, "--key", "mk8s.key", "-o", out, *extra)
    assert r.code == 0, r.err
    return env / out


def test_sbom_both_formats_schema_valid_and_complete(
    run_cli, env: Path, upstream: ExampleUpstream
) -> None:  # type: ignore[no-untyped-def]
    chart = _chart(env / "mychart-1.2.3.tgz")
    app, app_digest = _oci_archive(env / "app.oci.tar")
    out = _create(run_cli, env, "v1.28.15", "b", "--file", str(chart), "--file", str(app))
    bundle = out / BUNDLE
    lock = json.loads((out / "mk8s.lock").read_text())
    expected = {i.digest: i for i in list_images(upstream.blob(TAG, IMAGES).path)}
    assert len(expected) == 3
    for fmt in ("cyclonedx", "spdx"):
        r = run_cli("bundle", "sbom", str(bundle), "--key", "mk8s.pub", "--format", fmt)
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        _assert_valid(fmt, doc)
        text = r.out
        for art in lock["artifacts"]:  # every artifact with its sha256
            assert art["sha256"] in text, art["name"]
        for digest, info in expected.items():  # every image: name, tag, digest
            assert digest.split(":")[1] in text and info.name in text and str(info.tag) in text
        assert app_digest.split(":")[1] in text and "ghcr.io/acme/app" in text
        assert "mychart" in text and "1.2.3" in text
        assert "pkg:github/rancher/rke2@v1.28.15%2Brke2r1" in text
    r = run_cli("bundle", "sbom", str(bundle), "--key", "mk8s.pub")
    cdx = json.loads(r.out)
    assert cdx["specVersion"] == "1.5" and cdx["metadata"]["timestamp"] == lock["resolvedAt"]
    images = next(c for c in cdx["components"] if c["name"] == IMAGES)
    assert sorted(c["hashes"][0]["content"] for c in images["components"]) == sorted(
        d.split(":")[1] for d in expected
    )
    versions = {c["version"] for c in images["components"]}
    assert versions - {"3.6"} == {"v1.28.15-rke2r1"}  # pause is pinned at 3.6


def test_sbom_is_deterministic_and_embedded_one_matches(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    out = _create(run_cli, env, "v1.28.15", "b", "--sbom", "--split", "40K")
    index = out / (BUNDLE + ".parts")
    assert index.exists() and not (out / BUNDLE).exists()
    r = run_cli("bundle", "verify", str(index), "--key", "mk8s.pub")
    assert r.code == 0, r.err
    first = run_cli("bundle", "sbom", str(index), "--key", "mk8s.pub", "-o", "one.json")
    again = run_cli("bundle", "sbom", str(out / (BUNDLE + ".000")), "--key", "mk8s.pub")
    assert first.code == again.code == 0
    assert (env / "one.json").read_text() == again.out
    r = run_cli("bundle", "extract", str(index), "--key", "mk8s.pub", "-d", "x")
    assert r.code == 0, r.err
    embedded = env / "x" / "artifacts" / "mk8s-sbom.cdx.json"
    assert embedded.read_text() == again.out
    manifest = json.loads((env / "x" / "mk8s-bundle.json").read_text())
    assert any(a["kind"] == "sbom" for a in manifest["artifacts"])
    lock = json.loads((out / "mk8s.lock").read_text())
    assert all(a["kind"] != "sbom" for a in lock["artifacts"])  # the lock stays as pinned
    # the same lock and key give the same split bundle, SBOM included
    again_dir = _create_from_lock(run_cli, env, out / "mk8s.lock", "c", "--sbom", "--split", "40K")
    for p in sorted(out.glob(BUNDLE + ".*")):
        assert (again_dir / p.name).read_bytes() == p.read_bytes(), p.name


def _create_from_lock(run_cli, env: Path, lock: Path, out: str, *extra: str) -> Path:  # type: ignore[no-untyped-def]
    (env / out).mkdir()
    r = run_cli("bundle", "create", "--lock", str(lock), "--key", "mk8s.key", "-o", out, *extra)
    assert r.code == 0, r.err
    return env / out


def test_spdx_embedded(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    out = _create(run_cli, env, "v1.28.15", "b", "--sbom", "spdx")
    r = run_cli("bundle", "extract", str(out / BUNDLE), "--key", "mk8s.pub", "-d", "x")
    assert r.code == 0, r.err
    doc = json.loads((env / "x" / "artifacts" / "mk8s-sbom.spdx.json").read_text())
    _assert_valid("spdx", doc)
    assert doc["spdxVersion"] == "SPDX-2.3"


def test_sbom_needs_a_key_and_rejects_a_tampered_bundle(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    out = _create(run_cli, env, "v1.28.15", "b")
    r = run_cli("bundle", "sbom", str(out / BUNDLE))
    assert r.code == 2 and "--key" in r.err
    data = bytearray((out / BUNDLE).read_bytes())
    data[len(data) // 2] ^= 1
    (env / "bad.tar.zst").write_bytes(bytes(data))
    r = run_cli("bundle", "sbom", "bad.tar.zst", "--key", "mk8s.pub")
    assert r.code == 3 and r.out == ""


def test_diff_of_two_real_locks(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("bundle", "lock", "--rke2", "v1.28.14", "-o", "old.lock").code == 0
    assert run_cli("bundle", "lock", "--rke2", "v1.28.15", "-o", "new.lock").code == 0
    r = run_cli("bundle", "diff", "old.lock", "new.lock")
    assert r.code == 0, r.err
    assert f"rke2 tag: {OLD_TAG} -> {TAG}" in r.out
    assert "artifacts: 0 added, 0 removed, 4 changed" in r.out
    assert "images: not compared" in r.out
    r = run_cli("bundle", "diff", "old.lock", "new.lock", "--json")
    data = json.loads(r.out)
    assert data["identical"] is False and data["images"] is None
    assert data["rke2"] == [
        {"key": "tag", "status": "changed", "old": {"value": OLD_TAG}, "new": {"value": TAG}}
    ]
    paths = {c["key"] for c in data["artifacts"]}
    assert "artifacts/rke2-images.linux-amd64.tar.zst" in paths
    r = run_cli("bundle", "diff", "new.lock", "new.lock")
    assert r.code == 2
    (env / "same.lock").write_bytes((env / "new.lock").read_bytes())
    r = run_cli("bundle", "diff", "new.lock", "same.lock", "--json")
    assert json.loads(r.out)["identical"] is True


def test_diff_of_two_bundles_sees_images_by_digest(
    run_cli, env: Path, upstream: ExampleUpstream
) -> None:  # type: ignore[no-untyped-def]
    old = _create(run_cli, env, "v1.28.14", "old")
    new = _create(run_cli, env, "v1.28.15", "new", "--split", "64K")
    old_b = old / "mk8s-rke2-v1.28.14-rke2r1-linux-amd64.tar.zst"
    r = run_cli(
        "bundle", "diff", str(old_b), str(new / (BUNDLE + ".000")), "--key", "mk8s.pub", "--json"
    )
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert {c["status"] for c in data["images"]} == {"added", "removed"}
    added = [c for c in data["images"] if c["status"] == "added"]
    assert added and all("v1.28.15-rke2r1" in c["key"] for c in added)
    # upstream re-publishes the image tarball at the same tag: the same name:tag now
    # has another digest, which the reviewer must see as a change
    try:
        upstream.drift(TAG, IMAGES)
        again = _create(run_cli, env, "v1.28.15", "drifted")
    finally:
        upstream._generation.pop((TAG, IMAGES), None)
    r = run_cli(
        "bundle", "diff", str(new / (BUNDLE + ".parts")), str(again / BUNDLE), "--key", "mk8s.pub"
    )
    assert r.code == 0, r.err
    n = len(list_images(upstream.blob(TAG, IMAGES).path))
    assert f"images: 0 added, 0 removed, {n} changed" in r.out, r.out
    assert "~ artifacts/rke2-images.linux-amd64.tar.zst" in r.out
    r = run_cli("bundle", "diff", str(old_b), str(again / BUNDLE))
    assert r.code == 2 and "--key" in r.err


def test_diff_and_sbom_escape_control_characters(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    chart = env / "evil.tgz"
    files = {"c/Chart.yaml": b'name: "x\\e[31mred"\nversion: "1\\e]0;t\\a"\n'}
    chart.write_bytes(oci.gzip_of(oci.tar_of(files)))
    a = _create(run_cli, env, "v1.28.15", "a")
    b = _create(run_cli, env, "v1.28.15", "b", "--file", str(chart))
    r = run_cli("bundle", "diff", str(a / BUNDLE), str(b / BUNDLE), "--key", "mk8s.pub")
    assert r.code == 0, r.err
    assert "\x1b" not in r.out and "\\x1b" in r.out
    r = run_cli("bundle", "sbom", str(b / BUNDLE), "--key", "mk8s.pub")
    assert "\x1b" not in r.out and "\\u001b" in r.out
    with tarfile.open(fileobj=io.BytesIO(chart.read_bytes()), mode="r:gz") as tf:
        assert tf.getnames() == ["c/Chart.yaml"]
