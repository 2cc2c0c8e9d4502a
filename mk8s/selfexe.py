"""Find the single-file mk8s executable, so ``bundle create --include-self`` can carry it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mk8s.errors import InputError

ENV = "MK8S_SELF_EXE"


def executable_for_bundle() -> Path:
    """The single-file executable to put in the bundle.

    When mk8s itself runs as the single-file build, that file; else ``MK8S_SELF_EXE``.
    Raises InputError when neither exists (mk8s runs from a Python install).
    """
    if getattr(sys, "frozen", False):
        return Path(sys.executable)
    env = os.environ.get(ENV)
    if env:
        p = Path(env)
        if p.is_file():
            return p
        raise InputError(f"{ENV}={env} is not a file", "build it with `make exe`")
    raise InputError(
        "--include-self needs the single-file mk8s executable",
        f"run the single-file build (`make exe`, then dist/mk8s-linux-amd64), or set {ENV}",
    )
