"""Steps as values: what one phase does on one node, in order, before anything runs.

A :class:`Step` is an ordered tuple of actions: a :class:`~mk8s.deploy.command.Command`
to run, a :class:`~mk8s.deploy.fileupload.FileUpload` to send, a :class:`PlaceUploads`
(check the uploaded parts on the node and move them into place) or a
:class:`WaitReady` (poll until the node is Ready). ``--dry-run`` prints these values;
the session executes exactly them. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from mk8s.deploy.command import Command, as_user
from mk8s.deploy.fileupload import FileUpload


@dataclass(frozen=True)
class PlaceUploads:
    """Check every uploaded ``NAME.part`` against its sha256 on the node, then rename it.

    ``command`` prints ``ok PATH`` or ``bad PATH`` per file. The bad part of
    ``uploads[i]`` is removed with ``discard[i]``, sent once more from the start and
    checked with ``recheck[i]``.
    """

    command: Command
    uploads: tuple[FileUpload, ...]
    discard: tuple[Command, ...]
    recheck: tuple[Command, ...]


@dataclass(frozen=True)
class WaitReady:
    """Poll until the node is Ready (a server: its own ``/readyz`` answers ``ok`` too).

    ``readyz`` (servers only) runs on the node itself; ``nodes`` lists the cluster's
    nodes on a server; ``timeout`` bounds the wait. ``explain`` (the unit's journal) is
    read on the node when it does not come up, to name the likely cause. ``active``
    (agents) prints the unit's state on the node: a node listed Ready counts only once
    its own unit is active too, since a Node object an earlier install left behind
    stays Ready for a while after its kubelet is gone.
    """

    node: str
    readyz: Command | None
    nodes: Command
    timeout: float
    version: str | None = None  # also at this kubelet version (after an upgrade)
    explain: Command | None = None
    active: Command | None = None

    @property
    def probes(self) -> tuple[Command, ...]:
        """The commands a poll sends."""
        first = (self.readyz, self.nodes) if self.readyz is not None else (self.nodes,)
        return first + ((self.active,) if self.active is not None else ())


Action = Command | FileUpload | PlaceUploads | WaitReady


@dataclass(frozen=True)
class Step:
    """One named unit of work on one node: its actions, in the order they run."""

    node: str
    name: str
    actions: tuple[Action, ...] = ()
    note: str = ""

    @property
    def commands(self) -> tuple[Command, ...]:
        """The plain commands of the step (not the upload check or the wait probes)."""
        return tuple(a for a in self.actions if isinstance(a, Command))

    @property
    def uploads(self) -> tuple[FileUpload, ...]:
        return tuple(a for a in self.actions if isinstance(a, FileUpload))

    @property
    def empty(self) -> bool:
        return not self.actions

    def remote_commands(self) -> tuple[Command, ...]:
        """Every command the step can send, including checks, discards and probes."""
        out: list[Command] = []
        for a in self.actions:
            if isinstance(a, Command):
                out.append(a)
            elif isinstance(a, PlaceUploads):
                out += [a.command, *a.discard, *a.recheck]
            elif isinstance(a, WaitReady):
                out += [*a.probes, *([a.explain] if a.explain else [])]
        return tuple(out)

    def describe(self, user: str) -> list[str]:
        """The step as the plan prints it: what the node runs, secrets masked; its note
        (why it runs, or why nothing needs to) as a ``#`` line first."""
        lines: list[str] = [f"# {self.note}"] if self.note and self.actions else []
        for a in self.actions:
            if isinstance(a, Command):
                lines.append(f"$ {as_user(a, user).display()}")
                if a.stdin_shown is not None:
                    lines += [f"  | {ln}" for ln in a.stdin_shown.splitlines()]
            elif isinstance(a, FileUpload):
                lines.append(a.display())
            elif isinstance(a, PlaceUploads):
                lines.append(f"$ {as_user(a.command, user).display()}")
                for rm, check in zip(a.discard, a.recheck, strict=True):
                    lines.append(f"  on a bad part: $ {as_user(rm, user).display()}")
                    lines.append(f"    then send it again and: $ {as_user(check, user).display()}")
            else:
                at = f" at {a.version}" if a.version else ""
                lines.append(
                    f"wait until {a.node} is Ready{at} (at most {a.timeout:.0f}s), polling:"
                )
                lines += [f"  $ {as_user(p, user).display()}" for p in a.probes]
                if a.explain is not None:
                    lines.append(
                        f"  if it does not come up: $ {as_user(a.explain, user).display()}"
                    )
        if not lines and self.note:
            lines.append(f"# {self.note}")
        return lines


__all__ = ["Action", "PlaceUploads", "Step", "WaitReady"]
