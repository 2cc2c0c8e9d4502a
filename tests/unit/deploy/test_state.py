"""mk8s/deploy/state.py: the token file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mk8s.deploy.state import read_token_file
from mk8s.errors import InputError


def test_token_file_first_line_is_the_token(tmp_path: Path) -> None:
    t = tmp_path / "token"
    t.write_text("  K10abc::server:s3cr3t  \n# a comment the operator kept\nsecond\n")
    assert read_token_file(t) == "K10abc::server:s3cr3t"
    t.write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_token_file(t)
    t.write_text("has space\n")
    with pytest.raises(InputError, match="spaces"):
        read_token_file(t)
    with pytest.raises(InputError, match="device"):
        read_token_file(Path("/dev/zero"))
