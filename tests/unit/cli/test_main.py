"""mk8s/cli/__init__.py: the one place errors are caught, and the debug log it writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest


def test_debug_log_never_follows_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mk8s.cli import _write_debug_log

    target = tmp_path / "victim"
    target.write_text("keep\n")
    state = tmp_path / "state"
    (state / "mk8s").mkdir(parents=True)
    (state / "mk8s" / "debug.log").symlink_to(target)
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    where = _write_debug_log(RuntimeError("boom"))
    assert target.read_text() == "keep\n"
    assert where is not None and where.parent == tmp_path / "tmp"
    assert stat.S_IMODE(where.stat().st_mode) == 0o600


def test_an_error_is_one_line_unless_it_is_mk8s_s_own_list(
    tmp_path: Path,
    run_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newline the user gave (here in a path) is shown escaped, never a second line;
    the cluster file's list of schema errors keeps one error a line."""
    monkeypatch.chdir(tmp_path)
    r = run_cli("status", "-f", "c\nmk8s: error: forged.yaml")
    assert r.code == 2
    assert r.err.count("\n") == 1, r.err
    assert r.err.startswith("mk8s: error: c\\nmk8s: error: forged"), r.err
    (tmp_path / "c.yaml").write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: Bad_Name}\n"
        "spec: {nodes: [{address: 10.0.0.1, name: cp1, role: wizard}], junk: 1}\n"
    )
    r = run_cli("status", "-f", "c.yaml")
    assert r.code == 2 and "errors against the schema\n" in r.err, r.err
    assert len(r.err.splitlines()) >= 3
