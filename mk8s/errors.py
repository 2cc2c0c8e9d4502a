"""Every error mk8s expects, each with a message that tells the user how to fix it.

The CLI catches :class:`Mk8sError` in exactly one place (``mk8s.cli.main``) and maps
``exit_code`` to the process exit status (README; docs/architecture.md, "Errors"):

* 1: an operational failure (network, SSH, a node failed)
* 2: usage, or an invalid input file (a key, a lockfile, cluster.yaml)
* 3: the bundle (or an etcd snapshot) was rejected (signature, checksum, format, tamper)

Always raise these ``from`` the original exception so the debug log keeps the cause.
"""

from __future__ import annotations


class Mk8sError(Exception):
    """Base of all expected errors: a problem and, where one exists, the fix.

    It prints as one line: a newline in it (a path or a name the user gave) is shown
    escaped, unless ``lines`` says the problem is mk8s's own list, one item a line.
    """

    exit_code = 1
    lines = False

    def __init__(self, problem: str, fix: str | None = None, *, lines: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.lines = lines

    def __str__(self) -> str:
        if self.fix:
            return f"{self.problem}; {self.fix}"
        return self.problem


class InputError(Mk8sError):
    """A file or value the user gave is unusable (exit 2)."""

    exit_code = 2


class KeyFileError(InputError):
    """A signing or verification key could not be read or is the wrong kind."""


class LockError(InputError):
    """A lockfile is missing, malformed or does not match its schema."""


class ClusterFileError(InputError):
    """cluster.yaml is missing, malformed or fails its schema."""


class ConfigConflict(InputError):
    """cluster.yaml asks for what the nodes or the bundle cannot give (found at preflight,
    before anything changed): fix the file, the token or the bundle."""


class VersionNotFound(InputError):
    """A version spec matches no RKE2 release."""


class BundleRejected(Mk8sError):
    """The bundle failed verification: never trust any byte of it (exit 3)."""

    exit_code = 3


class SnapshotRejected(Mk8sError):
    """An etcd snapshot does not match its index record, or has none (exit 3): it is
    never restored."""

    exit_code = 3


class UpstreamError(Mk8sError):
    """The release server (GitHub or a mirror) failed or answered nonsense."""


class ChecksumMismatch(Mk8sError):
    """A downloaded byte differs from what upstream or the lockfile pins (exit 3).

    Upstream drift is a supply-chain alarm, so it is reported like a rejected bundle.
    """

    exit_code = 3


class ImageReferenceError(InputError):
    """An image reference (``registry/repo:tag@sha256:...``) is malformed (exit 2)."""


class ImageArchiveError(InputError):
    """An OCI layout or docker archive is unreadable or inconsistent (exit 2)."""


class CredentialsFileError(InputError):
    """A Docker config / registry auth file is unreadable or malformed (exit 2)."""


class RegistryError(Mk8sError):
    """A registry failed, answered nonsense, or could not be reached (exit 1).

    No registry error's message ever carries a password, a token or an
    ``Authorization`` header; a blob or manifest whose bytes differ from its digest is
    a :class:`ChecksumMismatch` (exit 3), like any other drifted download."""


class RegistryAuthError(RegistryError):
    """A registry refused the credentials, or wanted some and none were found."""


class RegistryTLSError(RegistryError):
    """The registry's TLS certificate could not be verified with the CA we trust."""


class ImageNotFound(RegistryError):
    """The registry has no such repository, tag, digest or platform."""


class OutputError(Mk8sError):
    """Writing a result failed (disk full, permission, exists without --force)."""


class ConnectError(Mk8sError):
    """A node could not be reached or authenticated over SSH."""


class HostKeyError(ConnectError):
    """A node's SSH host key is unknown or changed."""


class RemoteCommandError(Mk8sError):
    """A command on a node exited non-zero or timed out."""


class PreflightError(Mk8sError):
    """A node is not fit for the install; nothing was changed."""


class DeployError(Mk8sError):
    """A deploy step failed on one or more nodes."""


class RemovalRefused(InputError):
    """Taking this node out would break the cluster (etcd quorum); nothing was changed."""


class StateLockedError(Mk8sError):
    """Another mk8s process holds the cluster's state directory."""


class Interrupted(Mk8sError):
    """The user pressed Ctrl-C; the message says what was done and how to go on."""

    exit_code = 130
