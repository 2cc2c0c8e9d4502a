"""The auditor's recipe, taken verbatim from docs/format.md: what the docs promise stock
tools (tar, zstd, sha256sum, openssl) can check of a bundle without mk8s."""

from __future__ import annotations

import re

from tests.support.paths import ROOT

FORMAT_DOC = ROOT / "docs" / "format.md"


def audit_commands(algorithm: str) -> str:
    """The auditor's recipe, taken verbatim from docs/format.md."""
    text = FORMAT_DOC.read_text()
    m = re.search(r"<!-- audit:begin -->\n```sh\n(.*?)```\n<!-- audit:end -->", text, re.S)
    assert m, "docs/format.md lost its audit recipe"
    script = m.group(1)
    other = "ecdsa" if algorithm == "ed25519" else "ed25519"
    # keep the lines for this key type, drop the other's
    lines = [ln for ln in script.splitlines() if f"# {other}" not in ln]
    return "\n".join(lines)
