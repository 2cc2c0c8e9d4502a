"""The errors of the images package, each with a message that says how to fix it.

They extend :mod:`mk8s.errors` (the CLI maps them to exit codes in one place); a blob or
manifest whose bytes differ from its digest raises the existing
:class:`mk8s.errors.ChecksumMismatch` (exit 3), like any other drifted download.
No message ever carries a password, a token or an ``Authorization`` header.
"""

from __future__ import annotations

from mk8s.errors import InputError, Mk8sError


class ImageReferenceError(InputError):
    """An image reference (``registry/repo:tag@sha256:...``) is malformed (exit 2)."""


class ImageArchiveError(InputError):
    """An OCI layout or docker archive is unreadable or inconsistent (exit 2)."""


class RegistryError(Mk8sError):
    """A registry failed, answered nonsense, or could not be reached (exit 1)."""


class RegistryAuthError(RegistryError):
    """A registry refused the credentials, or wanted some and none were found."""


class RegistryTLSError(RegistryError):
    """The registry's TLS certificate could not be verified with the CA we trust."""


class ImageNotFound(RegistryError):
    """The registry has no such repository, tag, digest or platform."""


class CredentialsFileError(InputError):
    """A Docker config / registry auth file is unreadable or malformed (exit 2)."""
