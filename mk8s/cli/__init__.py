"""The ``mk8s`` command: thin click commands over the core API.

Errors are mapped to exit codes in exactly one place, :func:`main`: an expected
:class:`~mk8s.errors.Mk8sError` prints one line (``mk8s: error: ...``) and exits with
its code; an unexpected exception writes its traceback to the debug log and asks for
a bug report.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from mk8s import __version__
from mk8s.errors import Mk8sError
from mk8s.ui import safe


def debug_log_path() -> Path:
    """Where tracebacks go: ``$XDG_STATE_HOME/mk8s/debug.log`` (or under ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mk8s" / "debug.log"


def _write_debug_log(exc: BaseException) -> Path | None:
    text = "".join(traceback.format_exception(exc))
    from mk8s.files import open_append_private  # only when a traceback is written

    # The fallback lives in a shared place (/tmp): a per-user name, opened without
    # following symlinks and only if it is this user's own regular file.
    fallback = Path(tempfile.gettempdir()) / f"mk8s-debug-{os.getuid()}.log"
    for path in (debug_log_path(), fallback):
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open_append_private(path) as f:
                f.write(f"--- mk8s {__version__}: {' '.join(sys.argv)}\n{text}\n".encode())
            return path
        except OSError:
            continue
    return None


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (or listed by --help), so
    `mk8s bundle inspect` does not pay for paramiko, requests and jsonschema.
    An import error is not swallowed: a broken module still fails loudly."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module, _, attr = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    lazy={
        "key": "mk8s.cli.key:key",
        "bundle": "mk8s.cli.bundle:bundle",
        "deploy": "mk8s.cli.deploy:deploy_cmd",
        "status": "mk8s.cli.deploy:status_cmd",
        "kubeconfig": "mk8s.cli.deploy:kubeconfig_cmd",
        "reset": "mk8s.cli.deploy:reset_cmd",
        "certs": "mk8s.cli.certs:certs",
        "backup": "mk8s.cli.lifecycle:backup_cmd",
        "restore": "mk8s.cli.lifecycle:restore_cmd",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="mk8s", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More detail; -vv for debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Carry RKE2 into an air gap as one signed bundle, and stand up an HA cluster there.

    \b
    Connected side:    mk8s key generate; mk8s bundle create --rke2 v1.28.x --key mk8s.key
    Disconnected side: mk8s bundle verify BUNDLE --key mk8s.pub
                       mk8s deploy -f cluster.yaml --bundle BUNDLE --key mk8s.pub

    Exit codes: 0 success, 1 operational failure, 2 usage or invalid input file,
    3 the bundle was rejected.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    import logging  # only here: importing it costs more than `bundle inspect` itself

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


#: An error is at most this many lines of this many characters: a message that
#: quotes outside data (a lock of 10,000 artifacts) cannot flood the terminal.
ERROR_LINES = 40
ERROR_LINE_CHARS = 2000


def bounded_message(message: str) -> str:
    """``message`` made :func:`safe` (newlines kept: mk8s's own multi-line lists) and
    capped to :data:`ERROR_LINES` lines of :data:`ERROR_LINE_CHARS` characters."""
    lines = safe(message, keep_newlines=True).split("\n")
    out = [
        ln if len(ln) <= ERROR_LINE_CHARS else f"{ln[:ERROR_LINE_CHARS]}... (line cut)"
        for ln in lines[:ERROR_LINES]
    ]
    if len(lines) > ERROR_LINES:
        out.append(f"... ({len(lines) - ERROR_LINES} more lines)")
    return "\n".join(out)


def _fail(message: str, code: int) -> NoReturn:
    # Messages quote names, versions and paths from files an attacker may have made.
    click.echo(f"mk8s: error: {bounded_message(message)}", err=True)
    sys.exit(code)


def _terminated(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: nothing half-written


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the CLI and exit with the code docs/architecture.md ("Errors") documents.
    SIGTERM (a service manager, a CI timeout, ``kill``) is taken as Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> NoReturn:
    verbose = any(a in ("-v", "-vv", "--verbose") for a in (argv or sys.argv[1:]))
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None, prog_name="mk8s", standalone_mode=False
        )
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        _fail("interrupted; nothing was left half-written", 130)
    except Mk8sError as e:
        if verbose:
            cause = e.__cause__
            while cause is not None:
                click.echo(safe(f"  caused by: {type(cause).__name__}: {cause}"), err=True)
                cause = cause.__cause__
        _write_debug_log(e) if verbose else None
        _fail(str(e) if e.lines else safe(str(e)), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was left half-written", 130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:
        path = _write_debug_log(e)
        where = f"; the traceback is in {path}" if path else ""
        _fail(f"internal error: {type(e).__name__}: {e}{where}; please report this bug", 1)
    sys.exit(rv if isinstance(rv, int) else 0)
