"""A release's checksum files (``sha256sum-ARCH.txt``): what they say, and the pin of
each selected file. mk8s never downloads a release file its checksum file does not
vouch for."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mk8s.errors import UpstreamError

_SUM_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]{64}) [ *](?P<name>\S(?:.*\S)?)$")


def parse_sha256sums(text: str | bytes, source: str) -> dict[str, str]:
    """Parse ``sha256sum`` output: ``<64 hex>  <name>`` (or ``<hex> *<name>``) per line.

    Returns name -> lowercase hex. Blank lines are skipped. Raises UpstreamError naming
    ``source`` and the line for a malformed line or a name listed twice with two
    different hashes: a checksum file we cannot read cannot vouch for anything.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UpstreamError(f"{source} is not text", "pick another release") from e
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        m = _SUM_LINE.match(line)
        if m is None:
            raise UpstreamError(
                f"{source} line {n} is not '<sha256>  <file>': {line[:80]!r}",
                "the checksum file is damaged; pick another release or report it upstream",
            )
        name, digest = m["name"], m["hex"].lower()
        if out.get(name, digest) != digest:
            raise UpstreamError(
                f"{source} lists {name} twice with different hashes",
                "the checksum file is inconsistent; report it upstream",
            )
        out[name] = digest
    return out


def expected_hashes(sums: Mapping[str, str], names: Iterable[str], source: str) -> dict[str, str]:
    """The pinned hash of each name, in order.

    A selected file missing from the checksum file is an upstream defect, not a user
    error and not (yet) a tampered byte, so it raises UpstreamError (exit 1) naming the
    file: mk8s never downloads a release file it cannot check.
    """
    out: dict[str, str] = {}
    for name in names:
        if name not in sums:
            raise UpstreamError(
                f"{source} has no checksum for {name}, so it cannot be verified",
                "mk8s refuses unchecked release files; pick another release or report it upstream",
            )
        out[name] = sums[name]
    return out
