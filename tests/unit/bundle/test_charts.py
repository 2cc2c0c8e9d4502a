"""The local input bounds, pinned at their edges: at a bound is fine, one past it is
refused, with the message that names it (the corpus in test_hostile_files.py runs the
CLI over the hostile cases; these run the readers themselves)."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import yaml
import zstandard

from mk8s.bundle import charts, inventory, parts
from mk8s.bundle.manifest import Artifact
from mk8s.errors import InputError
from mk8s.files import BoundedReader, read_regular
from mk8s.images.archive import scan_archive
from mk8s.images.auth import find_credentials, read_auth_file
from mk8s.images.errors import CredentialsFileError, ImageArchiveError
from mk8s.untrusted import UNRESOLVED, resolve_tag, yaml_nodes
from tests.support import hostile


def _tgz(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


META = b"apiVersion: v2\nname: web\nversion: 1.4.0\nappVersion: '2.0'\n"


def test_a_chart_is_read_to_its_chart_yaml() -> None:
    meta = charts.read_chart(_tgz({"web/values.yaml": b"a: 1\n", "web/Chart.yaml": META}))
    assert meta == charts.ChartMeta("v2", "web", "1.4.0", "2.0")
    # a subchart's Chart.yaml is not the chart's
    with pytest.raises(charts.ChartProblem, match="has no NAME/Chart.yaml"):
        charts.read_chart(_tgz({"web/charts/db/Chart.yaml": META}), whole=True)


def test_the_unpacked_budget_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tgz({"web/Chart.yaml": META, "web/big.bin": b"x" * 4096})
    unpacked = len(gzip.decompress(archive.getvalue()))  # every byte counts, padding too
    monkeypatch.setattr(charts, "MAX_UNPACKED", unpacked)
    archive.seek(0)
    assert charts.read_chart(archive, whole=True).name == "web"
    monkeypatch.setattr(charts, "MAX_UNPACKED", unpacked - 1)
    archive.seek(0)
    with pytest.raises(charts.ChartProblem, match=f"unpacks to more than {unpacked - 1} bytes"):
        charts.read_chart(archive, whole=True)


def test_a_member_claiming_more_than_the_budget_is_refused_unread(tmp_path: Path) -> None:
    bomb = hostile.zero_member_chart(tmp_path / "b.tgz", 64 * hostile.GIB)
    with open(bomb, "rb") as f:
        with pytest.raises(charts.ChartProblem) as e:
            charts.read_chart(f)
        assert f.tell() < 1 << 20  # stopped at the member's header
    assert str(e.value) == f"member bomb/zeros.bin alone unpacks to more than {64 << 20} bytes"


def test_chart_yaml_size_and_member_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "MAX_CHART_YAML", len(META))
    assert charts.read_chart(_tgz({"web/Chart.yaml": META})).name == "web"
    monkeypatch.setattr(charts, "MAX_CHART_YAML", len(META) - 1)
    with pytest.raises(charts.ChartProblem, match=r"web/Chart.yaml is over \d+ bytes"):
        charts.read_chart(_tgz({"web/Chart.yaml": META}))
    monkeypatch.setattr(charts, "MAX_CHART_YAML", len(META))
    monkeypatch.setattr(charts, "MAX_MEMBERS", 2)
    ok = {"web/a": b"", "web/Chart.yaml": META}
    assert charts.read_chart(_tgz(ok), whole=True).name == "web"
    with pytest.raises(charts.ChartProblem, match="has more than 2 members"):
        charts.read_chart(_tgz({**ok, "web/b": b""}), whole=True)


def test_whole_reads_past_chart_yaml_and_checks_gzip() -> None:
    good = _tgz({"web/Chart.yaml": META}).getvalue()
    damaged = io.BytesIO(good[:-8] + b"\0" * 8)  # gzip's CRC and length
    assert charts.read_chart(io.BytesIO(damaged.getvalue())).name == "web"
    with pytest.raises(charts.ChartProblem, match="not a gzip-compressed tar: BadGzipFile"):
        charts.read_chart(damaged, whole=True)


@pytest.mark.parametrize(
    ("meta", "strict", "lenient"),
    [
        (b"name: web\nversion: 1\n", "lacks apiVersion", "1"),
        (b"apiVersion: v2\nname: web\nversion: 1.0\n", "lacks apiVersion", "1.0"),
        (b"apiVersion: v2\nversion: '1'\n", "lacks apiVersion", None),
        (b"- a\n", "not a mapping", None),
        (hostile.nested_yaml(2000), "nested deeper than 64 levels", None),
    ],
)
def test_create_needs_what_helm_lint_needs(meta: bytes, strict: str, lenient: str | None) -> None:
    with pytest.raises(charts.ChartProblem, match=strict):
        charts.read_chart(_tgz({"web/Chart.yaml": meta}), whole=True)
    if lenient is None:
        with pytest.raises(charts.ChartProblem):
            charts.read_chart(_tgz({"web/Chart.yaml": meta}))
    else:
        assert charts.read_chart(_tgz({"web/Chart.yaml": meta})).version == lenient


def _file(name: str, kind: str = "file") -> Artifact:
    return Artifact(name=name, kind=kind, path=f"artifacts/{name}", size=1, sha256="0" * 64)


def test_contents_of_an_unreadable_chart_are_a_note(tmp_path: Path) -> None:
    p = tmp_path / "c.tgz"
    p.write_bytes(_tgz({"c/Chart.yaml": hostile.nested_yaml(2000)}).getvalue())
    found = inventory.read_contents(_file("c.tgz", "chart"), p)
    assert found == inventory.Contents(
        (), (), "not a readable chart: Chart.yaml is nested deeper than 64 levels (line 1)"
    )
    assert inventory.read_contents(_file("c.tgz"), p) is None  # a file: just a file


def test_image_archives_unpack_to_a_budget(tmp_path: Path) -> None:
    p = tmp_path / "a.tar.zst"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(4):
            info = tarfile.TarInfo(f"blob{i}")
            info.size = 100_000
            tf.addfile(info, io.BytesIO(b"\0" * 100_000))
    data = tar.getvalue()
    p.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert len(scan_archive(p, max_unpacked=len(data)).members) == 4
    with pytest.raises(ImageArchiveError, match=f"unpacks to more than {len(data) - 1} bytes"):
        scan_archive(p, max_unpacked=len(data) - 1)
    with pytest.raises(ImageArchiveError, match="member blob0 claims 100000 bytes, more than"):
        scan_archive(p, max_unpacked=99_999)
    assert inventory.image_budget(p) == 256 << 20
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(32 << 20)
    assert inventory.image_budget(big) == 16 * (32 << 20)


def test_bounded_reader_counts_every_byte() -> None:
    r = BoundedReader(io.BytesIO(b"abcdef"), 6, lambda: InputError("over"))
    assert r.read(4) == b"abcd" and r.left == 2
    assert r.read() == b"ef" and r.left == 0
    r = BoundedReader(io.BytesIO(b"abcdef"), 5, lambda: InputError("over"))
    with pytest.raises(InputError, match="over"):
        r.read()


def test_read_regular_too_large_may_be_another_error(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"12345")
    assert read_regular(p, what="x", max_size=5) == b"12345"
    with pytest.raises(parts.PartRejected) as e:
        read_regular(p, what="x", max_size=4, too_large=parts.PartRejected)
    assert e.value.exit_code == 3
    assert str(e.value) == f"x {p} is larger than 4 bytes; this cannot be a x; check the path"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="is a FIFO") as e2:
        read_regular(tmp_path / "fifo", what="x", max_size=4, too_large=parts.PartRejected)
    assert e2.value.exit_code == 2


def test_an_oversized_parts_index_is_a_rejected_bundle(tmp_path: Path) -> None:
    index = tmp_path / "b.tar.zst.parts"
    index.write_bytes(b" " * (parts.MAX_INDEX + 1))
    with pytest.raises(parts.PartRejected, match="larger than 1048576 bytes"):
        parts.load_index(index)
    index.write_bytes(hostile.nested_json(100_000))
    with pytest.raises(parts.PartRejected, match="nested deeper than 64 levels"):
        parts.load_index(index)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"auths": {}}' + b" " * (1 << 20), "is larger than 1048576 bytes"),
        (hostile.nested_json(100_000), "is nested deeper than 64 levels"),
        (b'{"auths": {"r": {"auth": "hunter2', "is not valid JSON"),
        (b'{"auths": "x"}', None),
    ],
)
def test_auth_files_are_bounded(tmp_path: Path, content: bytes, problem: str | None) -> None:
    p = tmp_path / "config.json"
    p.write_bytes(content)
    if problem is None:
        assert read_auth_file(p) == {}
        return
    with pytest.raises(CredentialsFileError) as e:
        read_auth_file(p)
    assert problem in str(e.value) and "hunter2" not in str(e.value)
    assert e.value.exit_code == 2


def test_auth_files_are_regular_files_when_found(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "fifo"), "HOME": str(tmp_path)}
    with pytest.raises(CredentialsFileError, match="is a FIFO"):
        find_credentials("reg.lan", env)
    # a default place without a file gives no credentials, not an error
    assert find_credentials("reg.lan", {"HOME": str(tmp_path)}) is None
    good = tmp_path / "auth.json"
    good.write_text(json.dumps({"auths": {"reg.lan": {"username": "u", "password": "p"}}}))
    creds = find_credentials("reg.lan", {"REGISTRY_AUTH_FILE": str(good)})
    assert creds is not None and creds.username == "u"


def test_yaml_nodes_leaves_tags_to_resolve_on_demand() -> None:
    def err(problem: str) -> InputError:
        return InputError(problem)

    text = "a: 1\nb: null\nc: '1'\nd: !!str 2\ne: [x]\n"
    (node,) = yaml_nodes(text, what="m", error=err, max_bytes=100, tags=False)
    values = {k.value: v for k, v in node.value}
    assert values["a"].tag == UNRESOLVED
    assert [resolve_tag(values[k]) for k in "abcde"] == [
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:seq",
    ]
    (resolved,) = yaml_nodes(text, what="m", error=err, max_bytes=100)
    want = yaml.compose(text, Loader=yaml.SafeLoader)
    assert [v.tag for _, v in resolved.value] == [v.tag for _, v in want.value]


def test_indexes_nest_at_most_eight_deep(tmp_path: Path) -> None:
    from mk8s.images.inspect import read_archive

    kind, images = read_archive(hostile.index_chain_layout(tmp_path / "8.tar", 8))
    assert kind == "oci" and len(images[0].manifests) == 7
    with pytest.raises(ImageArchiveError, match="nests indexes deeper than 8 levels"):
        read_archive(hostile.index_chain_layout(tmp_path / "9.tar", 9))
    # the same index listed 40,000 times is walked once
    _, images = read_archive(hostile.index_chain_layout(tmp_path / "w.tar", 2, width=40_000))
    assert len(images[0].manifests) == 1
    # distinct manifests are counted: 999 below the top index pass, one more does not
    layout = hostile.index_chain_layout(tmp_path / "d.tar", 2, width=999, distinct=True)
    _, images = read_archive(layout)
    assert len(images[0].manifests) == 999
    with pytest.raises(ImageArchiveError, match="reaches more than 1000 manifests"):
        layout = hostile.index_chain_layout(tmp_path / "d2.tar", 2, width=1000, distinct=True)
        read_archive(layout)
