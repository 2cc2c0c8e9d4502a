"""Commands as values: quoting and secret masking live in the types.

A deploy step builds :class:`Command` values (and
:class:`~mk8s.deploy.fileupload.FileUpload` values for files to send); ``--dry-run``,
logs and the audit log print ``display()``, which never shows a :class:`Secret`; only
a transport calls ``render()``. Secrets travel on stdin wherever possible, because a
command line (even one with an ``env`` prefix) is visible to every user of the node in
``ps``.

    >>> c = Command.argv("systemctl", "enable", "rke2-server", sudo=True)
    >>> as_user(c, "ops").display()
    'sudo -n systemctl enable rke2-server'
    >>> Command.script("echo {t} > {p}", {"t": Secret("s3cr3t"), "p": "/a b"}).display()
    "echo *** > '/a b'"
"""

from __future__ import annotations

import posixpath
import re
import shlex
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

MASK = "***"
DEFAULT_TIMEOUT = 300.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Secret:
    """A string that prints as ``***`` everywhere (str, repr, format, f-strings).

    Not a ``str`` subclass on purpose: ``"x" + secret`` or ``secret.upper()`` would
    silently produce plain strings. ``reveal()`` is the one way to the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself; pass it only to something that must send it."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("mk8s.Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)


@dataclass(frozen=True)
class Raw:
    """Shell text inserted verbatim (operators, redirections): never from user input."""

    text: str


@dataclass(frozen=True)
class Quoted:
    """Other pieces rendered, then quoted as ONE shell word (the body of ``sh -c``)."""

    pieces: tuple[Piece, ...]


# A plain str is one shell word: quoted with shlex.quote when rendered.
Piece = str | Secret | Raw | Quoted


def _render(pieces: tuple[Piece, ...], reveal: bool) -> str:
    out: list[str] = []
    for p in pieces:
        if isinstance(p, Raw):
            out.append(p.text)
        elif isinstance(p, Secret):
            out.append(shlex.quote(p.reveal()) if reveal else MASK)
        elif isinstance(p, Quoted):
            out.append(shlex.quote(_render(p.pieces, reveal)))
        else:
            out.append(shlex.quote(p))
    return "".join(out)


def _secrets_in(pieces: tuple[Piece, ...]) -> Iterator[Secret]:
    for p in pieces:
        if isinstance(p, Secret):
            yield p
        elif isinstance(p, Quoted):
            yield from _secrets_in(p.pieces)


class _QuoteTracker:
    """Follows shell quoting through template text, so a field can be refused where the
    shell would re-read its (already quoted) value: inside '...' or "...".

    Knows single and double quotes, backslash escapes and ``$(...)``, which opens a
    fresh word context even inside double quotes. Conservative: templates are ours.
    """

    def __init__(self) -> None:
        self.stack: list[str] = []  # "'", '"' or "$("
        self._escape = False

    @property
    def inside_quotes(self) -> bool:
        return bool(self.stack) and self.stack[-1] in ("'", '"')

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            c = text[i]
            top = self.stack[-1] if self.stack else ""
            if self._escape:
                self._escape = False
            elif top == "'":
                if c == "'":
                    self.stack.pop()
            elif c == "\\":
                self._escape = True
            elif c == "$" and text[i + 1 : i + 2] == "(":
                self.stack.append("$(")
                i += 1
            elif top == '"':
                if c == '"':
                    self.stack.pop()
            elif c in ("'", '"'):
                self.stack.append(c)
            elif c == ")" and top == "$(":
                self.stack.pop()
            i += 1


@dataclass(frozen=True)
class Command:
    """One shell command for a node.

    ``sudo`` means "needs root": :func:`as_user` (applied by every transport) prefixes
    ``sudo -n`` for a non-root login. ``compound`` marks text with shell operators; it
    is wrapped in ``sh -c`` when ``env`` or ``sudo`` must apply to the whole of it.
    ``check``: a non-zero exit raises RemoteCommandError in the transport.
    ``timeout``: seconds before the transport kills the command and raises.
    """

    pieces: tuple[Piece, ...]
    description: str = ""
    sudo: bool = False
    timeout: float = DEFAULT_TIMEOUT
    env: Mapping[str, str | Secret] = field(default_factory=lambda: MappingProxyType({}))
    stdin: bytes | Secret | None = field(default=None, repr=False)
    # What a plan shows of the stdin (a file's content with its secrets masked).
    stdin_shown: str | None = field(default=None, repr=False, compare=False)
    check: bool = True
    compound: bool = False

    def __post_init__(self) -> None:
        for name in self.env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"not an environment variable name: {name!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if not self.pieces:
            raise ValueError("empty command")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    # ---------------------------------------------------------------- constructors
    @classmethod
    def argv(cls, *args: str | Secret, **options: Any) -> Command:
        """A simple command: each argument is one shell word, quoted as needed.

        Raises ValueError for no arguments or a bad option (see the class fields).
        """
        pieces: list[Piece] = []
        for i, a in enumerate(args):
            if i:
                pieces.append(Raw(" "))
            pieces.append(a if isinstance(a, Secret) else str(a))
        return cls(pieces=tuple(pieces), **options)

    @classmethod
    def script(
        cls, template: str, values: Mapping[str, str | int | Secret] | None = None, **options: Any
    ) -> Command:
        """Shell text with ``{name}`` fields; each value becomes one quoted word.

        The template's literal text is trusted shell (operators, redirections); values
        are never interpreted by the shell. ``{{``/``}}`` give literal braces. Raises
        KeyError for a field missing from ``values``, ValueError for a format spec.
        """
        values = values or {}
        pieces: list[Piece] = []
        quoting = _QuoteTracker()
        for literal, name, spec, conv in string.Formatter().parse(template):
            if literal:
                pieces.append(Raw(literal))
                quoting.feed(literal)
            if name is None:
                continue
            if spec or conv:
                raise ValueError(f"format specs are not supported: {{{name}}}")
            if quoting.inside_quotes:
                # A quoted word inside another quote level is re-read by the shell:
                # "$(x)" in a value would run. Pass it as its own word or a variable.
                raise ValueError(f"field {{{name}}} is inside a quoted string in {template!r}")
            v = values[name]
            pieces.append(v if isinstance(v, Secret) else str(v))
        options.setdefault("compound", True)
        return cls(pieces=tuple(pieces), **options)

    # -------------------------------------------------------------------- output
    def _expanded(self) -> tuple[Piece, ...]:
        """Pieces with env (and ``sh -c`` for compound text) applied."""
        if not self.env:
            return self.pieces
        out: list[Piece] = [Raw("env ")]
        for k, v in self.env.items():
            out += [Raw(f"{k}="), v, Raw(" ")]
        if self.compound:
            out += [Raw("sh -c "), Quoted(self.pieces)]
        else:
            out += list(self.pieces)
        return tuple(out)

    def render(self) -> str:
        """The real shell text, secrets included: for a transport's exec request only."""
        return _render(self._expanded(), reveal=True)

    def display(self) -> str:
        """The shell text with every secret as ``***``: for logs, dry-run, audit."""
        return _render(self._expanded(), reveal=False)

    def __str__(self) -> str:
        return self.display()

    def stdin_bytes(self) -> bytes | None:
        """What to write to the command's stdin (secret revealed), or None."""
        if isinstance(self.stdin, Secret):
            return self.stdin.reveal().encode()
        return self.stdin

    def secrets(self) -> tuple[str, ...]:
        """Every secret value the command carries (for masking its output)."""
        found = list(_secrets_in(self.pieces))
        found += [v for v in self.env.values() if isinstance(v, Secret)]
        if isinstance(self.stdin, Secret):
            found.append(self.stdin)
        return tuple(s.reveal() for s in found if s.reveal())

    def mask(self, text: str) -> str:
        """``text`` with every secret of this command replaced by ``***``."""
        for s in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(s, MASK)
        return text


def as_user(cmd: Command, user: str) -> Command:
    """The command as ``user`` runs it: ``sudo -n`` in front when it needs root.

    Returns ``cmd`` itself for root or a command without ``sudo``; the result has
    ``sudo=False``, so applying it twice changes nothing. ``-n`` makes sudo fail at
    once instead of prompting when it needs a password.
    """
    if not cmd.sudo or user == "root":
        return cmd
    if cmd.env:
        body = cmd._expanded()
    elif cmd.compound:
        body = (Raw("sh -c "), Quoted(cmd.pieces))
    else:
        body = cmd.pieces
    return replace(
        cmd,
        pieces=(Raw("sudo -n "), *body),
        env=MappingProxyType({}),
        sudo=False,
        compound=False,
    )


def write_file(
    path: str,
    content: bytes | str | Secret,
    *,
    mode: int = 0o644,
    sudo: bool = True,
    description: str = "",
    timeout: float = 60.0,
    shown: str | None = None,
) -> Command:
    """A command that atomically replaces ``path`` with ``content`` at ``mode``.

    ``shown`` is what a plan prints as the content (secrets masked); by default a
    secret's content is not shown at all and a plain one is.

    The content goes on stdin (never on the command line); the file is created under
    ``umask 077`` as ``PATH.mk8s-tmp``, chmod-ed, then renamed over ``path``, so no
    reader ever sees it partly written or with looser permissions. The parent
    directory is created (0755) if missing. Raises ValueError for a relative path.
    """
    if not posixpath.isabs(path):
        raise ValueError(f"remote path must be absolute: {path!r}")
    tmp = f"{path}.mk8s-tmp"
    stdin: bytes | Secret = content.encode() if isinstance(content, str) else content
    return Command.script(
        "mkdir -p {dir} && umask 077 && cat > {tmp} && chmod {mode} {tmp} && mv -f {tmp} {path}",
        {"dir": posixpath.dirname(path) or "/", "tmp": tmp, "mode": f"{mode:04o}", "path": path},
        stdin=stdin,
        stdin_shown=shown if shown is not None or isinstance(content, Secret) else _text(stdin),
        sudo=sudo,
        timeout=timeout,
        description=description or f"write {path} ({mode:04o})",
    )


def _text(data: bytes | Secret) -> str | None:
    if isinstance(data, Secret):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
