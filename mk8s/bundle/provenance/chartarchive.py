"""Helm chart archives read within bounds: ``NAME/Chart.yaml`` of a ``.tgz``.

A chart is a gzip-compressed tar whose top directory holds ``Chart.yaml`` (Helm's
``pkg/chart/loader/archive.go`` in helm/helm). A few KiB of gzip can expand to
gigabytes, so an archive is never decompressed as a whole in memory: it is read as a
stream, every decompressed byte counts against :data:`MAX_UNPACKED`, a member whose
header alone claims more is refused before its data is read, and
``Chart.yaml`` must be at most :data:`MAX_CHART_YAML` bytes, parsed with the bounded
YAML loader. Checking a chart for a bundle (:func:`read_chart` with ``whole``) reads
the archive to its end, so gzip's own checksum is verified too; describing one already
in a bundle stops at ``Chart.yaml``.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn, cast

from mk8s.errors import Mk8sError
from mk8s.files import MIB, BoundedReader
from mk8s.untrusted import load_yaml, shown

#: Decompressed bytes one chart archive may unpack to (the whole archive, every member).
MAX_UNPACKED = 64 * MIB
#: Bytes of ``Chart.yaml`` (Helm's own are a few hundred).
MAX_CHART_YAML = 1 * MIB
#: Members of one chart archive.
MAX_MEMBERS = 10_000


class ChartProblem(Mk8sError):
    """Why an archive is not a chart mk8s can carry (callers say whose and map it)."""


@dataclass(frozen=True)
class ChartMeta:
    """What ``Chart.yaml`` says (outside text: show it through ``shown``/``safe``)."""

    api_version: str | None
    name: str
    version: str
    app_version: str | None


def _fail(problem: str) -> NoReturn:
    raise ChartProblem(problem)


def _is_chart_yaml(info: tarfile.TarInfo) -> bool:
    parts = info.name.strip("/").split("/")
    return len(parts) == 2 and parts[1] == "Chart.yaml" and info.isfile()


def _chart_yaml(f: BinaryIO, *, whole: bool) -> bytes:
    """The bytes of ``NAME/Chart.yaml``; ChartProblem for anything else."""
    too_big = f"unpacks to more than {MAX_UNPACKED} bytes"
    budget = BoundedReader(
        cast(BinaryIO, gzip.GzipFile(fileobj=f, mode="rb")),
        MAX_UNPACKED,
        lambda: ChartProblem(too_big),
    )
    found: bytes | None = None
    try:
        with tarfile.open(fileobj=budget, mode="r|") as tar:
            for n, info in enumerate(tar):
                if n >= MAX_MEMBERS:
                    _fail(f"has more than {MAX_MEMBERS} members")
                if info.size > MAX_UNPACKED:  # refused from its header, before its data
                    _fail(f"member {shown(info.name, limit=80)} alone {too_big}")
                if found is None and _is_chart_yaml(info):
                    if info.size > MAX_CHART_YAML:
                        _fail(f"{shown(info.name, limit=80)} is over {MAX_CHART_YAML} bytes")
                    member = tar.extractfile(info)
                    found = member.read() if member is not None else b""
                    if not whole:
                        break
            while whole and budget.read(MIB):  # the rest, and gzip's CRC and length
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        _fail(f"is not a chart archive (not a gzip-compressed tar: {type(e).__name__})")
    if found is None:
        _fail("has no NAME/Chart.yaml")
    return found


def read_chart(f: BinaryIO, *, whole: bool = False) -> ChartMeta:
    """``Chart.yaml`` of the chart archive ``f``; ChartProblem naming what is wrong
    otherwise. ``whole`` reads the archive to its end and requires what ``helm lint``
    requires (apiVersion, name and version, all strings), as a bundle's chart must;
    without it reading stops at ``Chart.yaml``, and a name and a version are enough to
    describe the chart (an SBOM lists what is there)."""
    data = _chart_yaml(f, whole=whole)
    doc: Any = load_yaml(data, what="Chart.yaml", error=ChartProblem, max_bytes=MAX_CHART_YAML)
    if not isinstance(doc, dict):
        _fail("Chart.yaml is not a mapping")
    api, name, version = doc.get("apiVersion"), doc.get("name"), doc.get("version")
    if whole and not all(isinstance(v, str) and v for v in (api, name, version)):
        _fail("Chart.yaml lacks apiVersion, name or version (strings)")
    if not isinstance(name, str) or not isinstance(version, str | int | float):
        _fail("Chart.yaml lacks a name or a version")
    app = doc.get("appVersion")
    return ChartMeta(
        api_version=api if isinstance(api, str) else None,
        name=name,
        version=str(version),
        app_version=None if app is None else str(app),
    )


__all__ = [
    "MAX_CHART_YAML",
    "MAX_MEMBERS",
    "MAX_UNPACKED",
    "ChartMeta",
    "ChartProblem",
    "read_chart",
]
