"""mk8s/ui.py: what reaches a terminal has its control characters escaped."""

from __future__ import annotations

from pathlib import Path

from mk8s.ui import safe


# ------------------------------------------------------------- control characters
def test_safe_escapes_terminal_controls() -> None:
    assert safe("a\x1b[2Jb\rc\nd\u202ee\x9b") == "a\\x1b[2Jb\\rc\\nd\\u202ee\\x9b"
    assert safe("ok\nline", keep_newlines=True) == "ok\nline"


def test_errors_escape_control_characters(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "x\x1b[31m.lock"
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned")
    assert r.code == 2 and "\x1b" not in r.err and "\\x1b[31m" in r.err
