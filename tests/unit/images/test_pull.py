"""Pulling images into OCI layout archives from a real registry (docker-registry on
127.0.0.1, TLS from a test CA, htpasswd basic auth)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.errors import ChecksumMismatch, ImageNotFound, RegistryAuthError, RegistryTLSError
from mk8s.images.auth import Credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.inspect import list_images
from mk8s.images.pull import pull_image
from tests.support.oci import BuiltImage, BuiltIndex, build_image, build_index, digest_of, push_raw
from tests.support.registry import TestCA, TestRegistry, registry_for_tests


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestRegistry]:
    with registry_for_tests(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def multi(registry: TestRegistry) -> BuiltIndex:
    built = build_index(seed="multi")
    push_raw(registry.session(), registry.url, "team/multi", "1.0", built)
    return built


@pytest.fixture(scope="module")
def single(registry: TestRegistry) -> BuiltImage:
    built = build_image(seed="single")
    push_raw(registry.session(), registry.url, "team/single", "v2", built)
    return built


@pytest.fixture
def client(registry: TestRegistry) -> Iterator[RegistryClient]:
    settings = RegistryClientSettings(
        ca_file=registry.ca_file, use_docker_config=False, backoff=0.05
    )
    creds = Credentials(registry.username, registry.password)
    with RegistryClient(registry.host, settings, credentials=creds) as c:
        yield c


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        out = {}
        for m in tf.getmembers():
            assert m.uid == 0 and m.gid == 0 and m.mtime == 0 and m.uname == "" and m.gname == ""
            f = tf.extractfile(m)
            out[m.name] = f.read() if f else b""
        return out


def check_layout(path: Path) -> dict[str, bytes]:
    """Every blob in the archive hashes to its name; returns the members."""
    got = members(path)
    assert json.loads(got["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in got.items():
        if name.startswith("blobs/sha256/"):
            assert digest_of(data) == "sha256:" + name.rsplit("/", 1)[1]
    names = list(got)
    assert names == sorted(names)
    return got


def test_pull_by_tag_pins_the_digest(
    registry: TestRegistry, single: BuiltImage, client: RegistryClient, tmp_path: Path
) -> None:
    out = pull_image(
        f"{registry.host}/team/single:v2",
        tmp_path / "single.tar",
        cache_dir=tmp_path / "cache",
        client=client,
    )
    assert out.reference.digest == single.digest == out.source_digest == out.digest
    assert str(out.reference) == f"{registry.host}/team/single:v2@{single.digest}"
    got = check_layout(out.archive)
    assert got[f"blobs/sha256/{single.digest[7:]}"] == single.manifest  # exact bytes kept
    for d, blob in single.blobs.items():
        assert got[f"blobs/sha256/{d[7:]}"] == blob
    index = json.loads(got["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == single.digest
    assert entry["annotations"]["io.containerd.image.name"] == f"{registry.host}/team/single:v2"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v2"
    (info,) = list_images(out.archive)
    assert (info.name, info.tag, info.digest) == (
        f"{registry.host}/team/single",
        "v2",
        single.digest,
    )


def test_pull_by_digest_multi_platform_keeps_one(
    registry: TestRegistry, multi: BuiltIndex, client: RegistryClient, tmp_path: Path
) -> None:
    """One platform's manifest and blobs are carried, under the image's own index (its
    exact bytes: the digest a node imports is the digest pinned)."""
    ref = f"{registry.host}/team/multi@{multi.digest}"
    out = pull_image(
        ref,
        tmp_path / "m.tar",
        cache_dir=tmp_path / "cache",
        client=client,
        platforms=["linux/arm64"],
    )
    assert out.source_digest == multi.digest and out.platforms == ("linux/arm64",)
    assert out.digest == multi.digest and out.partial
    got = check_layout(out.archive)
    arm, amd = multi.images["linux/arm64"], multi.images["linux/amd64"]
    assert got[f"blobs/sha256/{multi.digest[7:]}"] == multi.index  # still lists amd64
    for d in [arm.digest, *arm.blobs]:
        assert f"blobs/sha256/{d[7:]}" in got
    for d in [amd.digest, *amd.blobs]:
        assert f"blobs/sha256/{d[7:]}" not in got
    top = json.loads(got["index.json"])["manifests"][0]
    assert top["annotations"]["io.mk8s.image.source-digest"] == multi.digest
    (info,) = list_images(out.archive)
    assert info.platforms == ("linux/arm64",)  # what it carries


def test_all_platforms_keep_the_index_bytes(
    registry: TestRegistry, multi: BuiltIndex, client: RegistryClient, tmp_path: Path
) -> None:
    out = pull_image(
        f"{registry.host}/team/multi:1.0",
        tmp_path / "all.tar",
        cache_dir=tmp_path / "c",
        client=client,
        platforms=None,
    )
    assert out.digest == out.source_digest == multi.digest and not out.partial
    assert set(out.platforms) == {"linux/amd64", "linux/arm64"}
    got = check_layout(out.archive)
    assert got[f"blobs/sha256/{multi.digest[7:]}"] == multi.index


def test_missing_platform_names_what_exists(
    registry: TestRegistry, multi: BuiltIndex, client: RegistryClient, tmp_path: Path
) -> None:
    with pytest.raises(ImageNotFound) as e:
        pull_image(
            f"{registry.host}/team/multi:1.0",
            tmp_path / "x.tar",
            cache_dir=tmp_path / "c",
            client=client,
            platforms=["linux/s390x"],
        )
    assert "linux/s390x" in str(e.value) and "linux/amd64, linux/arm64" in str(e.value)
    assert not (tmp_path / "x.tar").exists()


def test_two_pulls_give_identical_bytes_and_the_cache_serves_the_second(
    registry: TestRegistry, multi: BuiltIndex, client: RegistryClient, tmp_path: Path
) -> None:
    ref = f"{registry.host}/team/multi:1.0"
    a = pull_image(ref, tmp_path / "a.tar", cache_dir=tmp_path / "cache", client=client)
    before = client.stats.requests["GET"]
    b = pull_image(ref, tmp_path / "b.tar", cache_dir=tmp_path / "cache", client=client)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert a.archive_sha256 == b.archive_sha256
    assert client.stats.requests["GET"] - before == 2  # the index and one manifest, no blob
    c = pull_image(ref, tmp_path / "c.tar", cache_dir=tmp_path / "fresh", client=client)
    assert c.archive_sha256 == a.archive_sha256  # a fresh cache gives the same bytes


def test_unknown_tag(registry: TestRegistry, client: RegistryClient, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        pull_image(
            f"{registry.host}/team/single:nope",
            tmp_path / "x.tar",
            cache_dir=tmp_path,
            client=client,
        )


def test_tampered_blob_is_caught(
    registry: TestRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    built = build_image(seed="tamper")
    push_raw(registry.session(), registry.url, "team/tamper", "t1", built)
    layer = built.layers[1]
    path = registry.blob_path(digest_of(layer))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different
    path.write_bytes(bytes(data))
    ref = f"{registry.host}/team/tamper:t1"
    with pytest.raises(ChecksumMismatch) as e:
        pull_image(ref, tmp_path / "t.tar", cache_dir=tmp_path / "cache", client=client)
    msg = str(e.value)
    assert ref in msg and digest_of(layer) in msg and digest_of(bytes(data)) in msg
    assert e.value.exit_code == 3
    assert not (tmp_path / "t.tar").exists()
    assert not list((tmp_path / "cache/sha256").glob(digest_of(layer)[7:]))
    assert not list((tmp_path / "cache/tmp").iterdir())


def test_tampered_manifest_is_caught(
    registry: TestRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    built = build_image(seed="tamper-manifest")
    push_raw(registry.session(), registry.url, "team/tm", "t1", built)
    path = registry.blob_path(built.digest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    with pytest.raises(ChecksumMismatch) as e:
        pull_image(
            f"{registry.host}/team/tm@{built.digest}",
            tmp_path / "t.tar",
            cache_dir=tmp_path,
            client=client,
        )
    assert built.digest in str(e.value)


def test_wrong_password_is_clear_and_secret_free(
    registry: TestRegistry, single: BuiltImage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-pa55-" + registry.password
    settings = RegistryClientSettings(
        ca_file=registry.ca_file, use_docker_config=False, backoff=0.01
    )
    with pytest.raises(RegistryAuthError) as e:
        pull_image(
            f"{registry.host}/team/single:v2",
            tmp_path / "x.tar",
            cache_dir=tmp_path,
            settings=settings,
            credentials=Credentials(registry.username, wrong),
        )
    msg = str(e.value)
    assert registry.host in msg and "refused" in msg and registry.username in msg
    for secret in (wrong, registry.password):
        assert secret not in msg and secret not in caplog.text
        assert secret not in repr(e.value.__cause__)


def test_no_credentials_is_clear(
    registry: TestRegistry, single: BuiltImage, tmp_path: Path
) -> None:
    env = {"HOME": str(tmp_path)}  # an empty Docker config
    settings = RegistryClientSettings(ca_file=registry.ca_file, env=env)
    with pytest.raises(RegistryAuthError) as e:
        pull_image(
            f"{registry.host}/team/single:v2",
            tmp_path / "x.tar",
            cache_dir=tmp_path,
            settings=settings,
        )
    assert "requires credentials" in str(e.value)


def test_credentials_from_docker_config_work(
    registry: TestRegistry, single: BuiltImage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    caplog.set_level(logging.DEBUG)
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (tmp_path / "dc").mkdir()
    (tmp_path / "dc/config.json").write_text(
        json.dumps({"auths": {f"https://{registry.host}": {"auth": auth}}})
    )
    settings = RegistryClientSettings(
        ca_file=registry.ca_file, env={"DOCKER_CONFIG": str(tmp_path / "dc")}
    )
    out = pull_image(
        f"{registry.host}/team/single:v2",
        tmp_path / "x.tar",
        cache_dir=tmp_path / "c",
        settings=settings,
    )
    assert out.digest == single.digest
    assert registry.password not in caplog.text and auth not in caplog.text


def test_wrong_ca_is_clear(registry: TestRegistry, single: BuiltImage, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(TestCA.create("another CA").pem())
    settings = RegistryClientSettings(ca_file=other, use_docker_config=False, backoff=0.01)
    with pytest.raises(RegistryTLSError) as e:
        pull_image(
            f"{registry.host}/team/single:v2",
            tmp_path / "x.tar",
            cache_dir=tmp_path,
            settings=settings,
            credentials=Credentials(registry.username, registry.password),
        )
    msg = str(e.value)
    assert "certificate verify failed" in msg and registry.host in msg and "CA" in msg
    assert registry.password not in msg


def test_layout_archive_is_readable_by_tar(
    tmp_path: Path, registry: TestRegistry, single: BuiltImage, client: RegistryClient
) -> None:
    out = pull_image(
        f"{registry.host}/team/single:v2",
        tmp_path / "s.tar",
        cache_dir=tmp_path / "c",
        client=client,
    )
    with tarfile.open(fileobj=io.BytesIO(out.archive.read_bytes())) as tf:
        names = tf.getnames()
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]


def test_a_registry_on_another_address(tmp_path: Path) -> None:
    """The fixture listens where it is told (the test hosts' bridge address, later)."""
    with registry_for_tests(tmp_path / "reg", address="127.0.0.2") as reg:
        assert reg.host.startswith("127.0.0.2:")
        built = build_image(seed="elsewhere")
        push_raw(reg.session(), reg.url, "x/y", "1", built)
        settings = RegistryClientSettings(ca_file=reg.ca_file, use_docker_config=False)
        out = pull_image(
            f"{reg.host}/x/y:1",
            tmp_path / "y.tar",
            cache_dir=tmp_path / "c",
            settings=settings,
            credentials=Credentials(reg.username, reg.password),
        )
    assert out.digest == built.digest


def test_single_platform_image_of_the_wrong_arch_is_refused(
    registry: TestRegistry, single: BuiltImage, client: RegistryClient, tmp_path: Path
) -> None:
    ref = f"{registry.host}/team/single:v2"
    ok = pull_image(ref, tmp_path / "ok.tar", cache_dir=tmp_path / "c", client=client)
    assert ok.platforms == ("linux/amd64",)
    with pytest.raises(ImageNotFound, match="is a linux/amd64 image, not linux/arm64"):
        pull_image(
            ref,
            tmp_path / "x.tar",
            cache_dir=tmp_path / "c",
            client=client,
            platforms=["linux/arm64"],
        )
    assert not (tmp_path / "x.tar").exists()
