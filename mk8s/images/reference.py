"""Image references: parse, normalise and print ``[registry/]repository[:tag][@digest]``.

Follows the grammar of the distribution reference library (the one Docker and
containerd use): the first path component is a registry when it contains a ``.`` or a
``:`` or is ``localhost``; otherwise the image is on Docker Hub, whose name is
normalised to ``docker.io`` and whose one-component repositories live under
``library/``. Repository components are lowercase. A reference with neither tag nor
digest means ``:latest``. Anything else raises :class:`ImageReferenceError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mk8s.errors import ImageReferenceError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(
    rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_NAME = 255


def registry_error(registry: str) -> str | None:
    """Why ``registry`` (``host[:port]``) is not a registry address, or None."""
    if not _REGISTRY.match(registry):
        return "is not a valid registry host[:port]"
    after_host = registry[registry.rfind("]") + 1 :]  # past an IPv6 literal's colons
    port = after_host.rpartition(":")[2] if ":" in after_host else ""
    if port and not 1 <= int(port) <= 65535:
        return f"has port {port}, not one of 1-65535"
    return None


def is_digest(value: str) -> bool:
    """True for a well-formed ``sha256:<64 lowercase hex>`` digest."""
    return bool(_DIGEST.match(value))


def check_digest(value: str, what: str = "digest") -> str:
    """Return ``value`` if it is a sha256 digest, else raise ImageReferenceError."""
    if not is_digest(value):
        raise ImageReferenceError(
            f"{what} {value[:100]!r} is not a sha256 digest",
            "write it as sha256: followed by 64 lowercase hex digits",
        )
    return value


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference. Construct with :func:`parse_reference`.

    ``tag`` and ``digest`` may both be set (``repo:1.0@sha256:...``: the digest wins
    when pulling, the tag names the image); ``tag`` None with ``digest`` None never
    occurs after parsing (the tag defaults to ``latest``).
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/nginx``."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host serving the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        """The same image pinned to ``digest`` (the tag is kept as a name)."""
        return replace(self, digest=check_digest(digest))

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository with another tag, keeping the digest."""
        if tag is not None and not _TAG.match(tag):
            raise ImageReferenceError(f"{tag!r} is not a valid tag", _TAG_FIX)
        return replace(self, tag=tag)

    def retarget(self, registry: str, prefix: str = "") -> Reference:
        """The same repository path on another registry, optionally under ``prefix``.

        ``docker.io/rancher/foo:v1`` retargeted to ``reg.lan:5000`` is
        ``reg.lan:5000/rancher/foo:v1``: the mirror-with-rewrite layout that
        ``registries.yaml`` expresses.
        """
        why = registry_error(registry)
        if why is not None:
            raise ImageReferenceError(
                f"{registry!r} {why}",
                "give the target registry as host or host:port, without a scheme",
            )
        path = f"{prefix.strip('/')}/{self.repository}" if prefix.strip("/") else self.repository
        if not _REPOSITORY.match(path):
            raise ImageReferenceError(
                f"prefix {prefix!r} makes {path!r}, not a valid repository",
                "use a lowercase prefix such as 'mirror' or 'team/images'",
            )
        return replace(self, registry=registry, repository=path)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


_TAG_FIX = "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"


def parse_reference(text: str) -> Reference:
    """Parse an image reference into a normalised :class:`Reference`.

    ``nginx`` -> ``docker.io/library/nginx:latest``; ``ghcr.io/o/r@sha256:...`` keeps no
    tag; ``host:5000/r:tag@sha256:...`` keeps both. Raises ImageReferenceError naming the
    problem for an empty string, whitespace or control characters, an uppercase
    repository, a bad tag, a digest that is not sha256 with 64 lowercase hex digits, or
    a name longer than 255 characters.
    """
    if not isinstance(text, str) or not text:
        raise ImageReferenceError("an image reference is empty", "give one like nginx:1.25")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text) or not text.isascii():
        raise ImageReferenceError(
            f"image reference {text[:100]!r} contains whitespace, control or non-ASCII characters",
            "remove them; a reference looks like registry/repository:tag@sha256:...",
        )
    rest, digest = _split_digest(text)
    rest, tag = _split_tag(rest)
    registry, repository = _split_registry(rest, text)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    rest, digest = text.split("@", 1)
    return rest, check_digest(digest, f"the digest in {text!r}")


def _split_tag(rest: str) -> tuple[str, str | None]:
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon <= slash:  # the last ':' belongs to a registry port, or there is none
        return rest, None
    tag = rest[colon + 1 :]
    if not _TAG.match(tag):
        raise ImageReferenceError(f"{tag!r} is not a valid tag in {rest!r}", _TAG_FIX)
    return rest[:colon], tag


def _split_registry(rest: str, text: str) -> tuple[str, str]:
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
        why = registry_error(registry)
        if why is not None:
            raise ImageReferenceError(
                f"{registry!r} in {text!r} {why}",
                "write the registry as a host name or address, with an optional :port",
            )
    else:
        registry, repository = DOCKER_HUB, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY.match(repository):
        hint = (
            "repository names are lowercase"
            if repository.lower() != repository
            else "use lowercase letters, digits and single separators (. _ __ -) between '/'"
        )
        raise ImageReferenceError(f"{repository!r} in {text!r} is not a valid repository", hint)
    if len(f"{registry}/{repository}") > MAX_NAME:
        raise ImageReferenceError(
            f"image name in {text[:80]!r}... is longer than {MAX_NAME} characters",
            "use a shorter repository name",
        )
    return registry, repository
