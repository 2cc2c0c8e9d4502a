"""An operator's OCI image-layout archive (a plain tar) in a delta: the blobs of the image
that did not change come from the base's archive, the archive is rebuilt byte for byte
without any compression step."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mk8s.bundle import check
from mk8s.bundle.delta.create import load_base, write_delta
from mk8s.bundle.format import keys
from mk8s.bundle.format.manifest import Artifact, Lock, Release, artifact_path
from mk8s.bundle.format.writer import write_bundle
from mk8s.bundle.upstream.settings import UpstreamSettings
from tests.support import oci
from tests.support.bundles import RESOLVED_AT, TAG

NAME = "app.oci.tar"


def manifest(archive: Path, digest: str) -> Lock:
    data = archive.read_bytes()
    art = Artifact(
        name=NAME,
        kind="image",
        path=artifact_path(NAME, "image"),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=f"oci://ghcr.io/acme/app@{digest}",
    )
    release = Release(requested="v1.28.x", tag=TAG, arch=("amd64",))
    return Lock(release=release, resolved_at=RESOLVED_AT, artifacts=(art,)).as_manifest()


def test_an_oci_archive_is_rebuilt_from_the_bases_blobs(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    pub = keys.write_key_pair(key, tmp_path / "k", None).public
    sign = lambda b: keys.sign(key, b)  # noqa: E731
    v1 = oci.build_image(seed="a", layer_size=60_000)
    v2 = oci.build_image(seed="b", layer_size=60_000)
    old_arc = oci.layout_archive(tmp_path / "old.oci.tar", {"ghcr.io/acme/app:v1": v1})
    new_arc = oci.layout_archive(
        tmp_path / "new.oci.tar", {"ghcr.io/acme/app:v1": v1, "ghcr.io/acme/app:v2": v2}
    )
    path = artifact_path(NAME, "image")
    old = write_bundle(
        manifest(old_arc, v1.digest), {path: old_arc}, tmp_path / "old.tar.zst", sign
    )
    made = write_delta(
        manifest(new_arc, v2.digest),
        {path: new_arc},
        tmp_path / "delta.tar.zst",
        sign,
        load_base(old.path),
        upstream=UpstreamSettings.from_env(),
        cache_dir=tmp_path / "cache",
    )
    (source,) = made.delta.sources
    assert source.zstd is None and source.content == (
        new_arc.stat().st_size,
        manifest(new_arc, v2.digest).artifacts[0].sha256,
    )
    carried = {m.path.removeprefix("blobs/sha256/") for m in made.delta.members}
    v1_blobs = {d.split(":")[1] for d in v1.blobs}
    v2_only = {d.split(":")[1] for d, b in v2.blobs.items() if len(b) >= 512} - v1_blobs
    assert v2_only and v2_only <= carried and not carried & v1_blobs
    assert made.bundle.size < 0.7 * new_arc.stat().st_size
    trusted = keys.load_trusted_keys([pub])
    check.extract(made.bundle.path, trusted, tmp_path / "x", base=old.path)
    assert (tmp_path / "x" / path).read_bytes() == new_arc.read_bytes()
