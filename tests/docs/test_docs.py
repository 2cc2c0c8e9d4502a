"""The README and docs/ hold together: every relative link and anchor resolves, the
README stays a user's guide (under 350 lines) and keeps its two first commands (the
demo, and the test suite that `.ci/run` runs)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from tests.support.paths import ROOT

README = ROOT / "README.md"
MAX_README_LINES = 350
FIRST_COMMANDS = ("bash scripts/demo.sh", "bash scripts/test.sh")

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title"): the text may hold `code` and one level of [brackets].
_INLINE = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a link or heading in code is not one)."""
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lower case, every
    character but letters, digits, spaces, ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a document defines: its headings (duplicates get -1, -2, ...) and
    explicit ``<a name=...>`` / ``<a id=...>``."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(text):
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(_HTML_ID.findall(line))
    return found


def links(text: str) -> list[str]:
    out: list[str] = []
    for line in prose_lines(text):
        out += _INLINE.findall(line)
        m = _REFERENCE.match(line)
        if m:
            out.append(m.group(1))
    return out


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of ``doc``: a missing file or directory,
    a path outside the repository, or an anchor its target does not define."""
    problems: list[str] = []
    for target in links(doc.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{target}: leaves the repository")
            continue
        if not dest.exists():
            problems.append(f"{target}: {dest.relative_to(root.resolve())} does not exist")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading or anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_docs_exist_and_the_readme_links_each() -> None:
    names = {p.name for p in documents()[1:]}
    assert {"format.md", "architecture.md", "testing.md"} <= names
    readme_targets = {t.partition("#")[0] for t in links(README.read_text(encoding="utf-8"))}
    assert {f"docs/{n}" for n in names} <= readme_targets


def test_the_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_opens_with_the_demo_and_the_test_commands() -> None:
    head = README.read_text(encoding="utf-8").splitlines()[:10]
    commands = [ln.strip() for ln in head if ln.startswith("    ") and ln.strip()]
    assert tuple(commands[:2]) == FIRST_COMMANDS
    # .ci/run is the second command: CI runs what the README tells people to run.
    assert FIRST_COMMANDS[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_checker_finds_a_broken_link_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A `code` heading: yes\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "# Title\n\n## Same\n\n## Same\n\n"
        "[ok](docs/other.md#a-code-heading-yes) [ok](#same-1) [ok](https://x.invalid/y)\n"
        "[missing](docs/gone.md) [bad anchor](docs/other.md#nope) [bad](#same-2)\n"
        "[out](../elsewhere.md)\n"
        "```\n[in code](not-checked.md)\n```\n"
    )
    assert broken_links(doc, tmp_path) == [
        "docs/gone.md: docs/gone.md does not exist",
        "docs/other.md#nope: no heading or anchor #nope in other.md",
        "#same-2: no heading or anchor #same-2 in README.md",
        "../elsewhere.md: leaves the repository",
    ]


def test_slugs_follow_github() -> None:
    assert slug("Images at scale: `spec.images.distribution`") == (
        "images-at-scale-specimagesdistribution"
    )
    assert slug("Split bundles: parts, index, join") == "split-bundles-parts-index-join"
    assert slug("What RKE2 requires of hosts") == "what-rke2-requires-of-hosts"
    assert slug("mk8s as one file for the air gap") == "mk8s-as-one-file-for-the-air-gap"
