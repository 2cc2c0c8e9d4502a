"""RKE2's certificates on a node, as values (pure: commands, parsing, the rotation plan).

Where they live (rancher/rke2-docs docs/security/certificates.md; k3s-io/k3s
pkg/util/services/services.go ``FilesForServices``, pkg/agent/config/config.go ``get``):

* a server: ``DATA_DIR/server/tls/*.crt`` (the control plane's and the CAs),
  ``server/tls/etcd/*.crt`` (etcd's) and its agent's ``DATA_DIR/agent/*.crt``;
* an agent: ``DATA_DIR/agent/*.crt`` only (the kubelet's serving and client
  certificates, kube-proxy's and rke2-controller's client certificates, the CAs).

A certificate file holds the leaf first, then its CA ("Each certificate file ... contains
at least two certificates"), so the first certificate of a file is the one it is about.
Leaf certificates live 365 days and are renewed at a start when expired or within 120
days of expiry; the CAs live 10 years and are never renewed (certificates.md).

mk8s reads the files' bytes (public certificates only, never a key) with ``cat`` over
SSH and parses them here with ``cryptography``: nothing on the node beyond a shell.
The directories travel as arguments of ``sh -c``, never spliced into its text.
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import NodePaths

#: ``mk8s certs`` fails (exit 1) when a certificate expires within this many days.
WARN_DAYS = 30
# Each file is framed by this line, then its path; the path is one the node's shell
# globbed in a directory mk8s named, so it holds no newline.
FRAME = "### mk8s-cert "
# At most this many files are read per node (a server has about 30).
MAX_FILES = 200

_READ = (
    'n=0; for d in "$@"; do for f in "$d"/*.crt; do [ -f "$f" ] || continue; '
    f'n=$((n + 1)); [ "$n" -le {MAX_FILES} ] || exit 0; '
    f'printf \'{FRAME}%s\\n\' "$f"; head -c 65536 "$f"; echo; done; done'
)


def cert_dirs(paths: NodePaths, *, server: bool) -> list[str]:
    """The directories whose ``*.crt`` files are the node's certificates."""
    agent = posixpath.join(paths.data_dir, "agent")
    if not server:
        return [agent]
    tls = posixpath.join(paths.data_dir, "server", "tls")
    return [tls, posixpath.join(tls, "etcd"), agent]


def read_command(paths: NodePaths, *, server: bool) -> Command:
    """Print every certificate file of the node, each after a :data:`FRAME` line."""
    return Command.argv(
        "sh",
        "-c",
        _READ,
        "mk8s-certs",
        *cert_dirs(paths, server=server),
        sudo=True,
        timeout=60,
        description="read the node's RKE2 certificates (public certificates only)",
    )


@dataclass(frozen=True)
class Cert:
    """One certificate file: its first certificate."""

    path: str
    subject: str
    not_after: datetime.datetime  # UTC
    is_ca: bool
    serial: int

    @property
    def name(self) -> str:
        """The path under the data-dir's server/ or agent/ (``tls/etcd/client.crt``)."""
        for marker in ("/server/", "/agent/"):
            if marker in self.path:
                tail = self.path.split(marker, 1)[1]
                return ("agent/" if marker == "/agent/" else "") + tail
        return posixpath.basename(self.path)


def parse(out: str) -> tuple[list[Cert], list[str]]:
    """(certificates, problems) from :func:`read_command`'s output. A file that holds
    no readable certificate is a problem, not an error."""
    found: list[Cert] = []
    problems: list[str] = []
    for chunk in out.split(FRAME)[1:]:
        path, _, body = chunk.partition("\n")
        start = body.find("-----BEGIN CERTIFICATE-----")
        end = body.find("-----END CERTIFICATE-----", start)
        if start < 0 or end < 0:
            problems.append(f"{path}: no certificate in the file")
            continue
        pem = body[start : end + len("-----END CERTIFICATE-----")].encode()
        try:
            c = x509.load_pem_x509_certificate(pem)
        except ValueError as e:
            problems.append(f"{path}: not a readable certificate ({e})")
            continue
        try:
            ca = bool(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        except x509.ExtensionNotFound:
            ca = False
        found.append(
            Cert(path, c.subject.rfc4514_string(), c.not_valid_after_utc, ca, c.serial_number)
        )
    return found, problems


@dataclass(frozen=True)
class NodeCerts:
    """What one node's certificates say; ``error`` when they could not be read."""

    node: Node
    certs: tuple[Cert, ...] = ()
    error: str = ""
    problems: tuple[str, ...] = field(default=())

    @property
    def leaves(self) -> list[Cert]:
        return [c for c in self.certs if not c.is_ca]

    @property
    def earliest(self) -> Cert | None:
        """The leaf certificate that expires first (what a rotation renews)."""
        return min(self.leaves, key=lambda c: c.not_after, default=None)

    @property
    def earliest_ca(self) -> Cert | None:
        cas = [c for c in self.certs if c.is_ca]
        return min(cas, key=lambda c: c.not_after, default=None)

    def expired(self, now: datetime.datetime) -> bool:
        first = self.earliest
        return first is not None and first.not_after <= now


def days_left(cert: Cert, now: datetime.datetime) -> float:
    return (cert.not_after - now).total_seconds() / 86400


def verdict(nc: NodeCerts, now: datetime.datetime, warn_days: int = WARN_DAYS) -> str:
    """ "" when the node's certificates are fine, else why not (one phrase)."""
    if nc.error:
        return f"not read: {nc.error}"
    first = nc.earliest
    if first is None:
        return "no RKE2 certificates found (is RKE2 deployed here? mk8s deploy)"
    left = days_left(first, now)
    if left <= 0:
        return f"{first.name} EXPIRED on {first.not_after:%Y-%m-%d %H:%M} UTC"
    if left < warn_days:
        return f"{first.name} expires in {left:.0f} days (under {warn_days})"
    ca = nc.earliest_ca
    if ca is not None and days_left(ca, now) < warn_days:
        return (
            f"the CA {ca.name} expires in {max(days_left(ca, now), 0):.0f} days: `certs rotate`"
            " does not renew CAs; see `rke2 certificate rotate-ca` (RKE2 docs"
            " security/certificates.md)"
        )
    return ""


def shown_expiry(nc: NodeCerts, now: datetime.datetime) -> str:
    """The node's earliest leaf expiry as a table cell."""
    first = nc.earliest
    if first is None:
        return "-"
    left = days_left(first, now)
    when = f"{first.not_after:%Y-%m-%d}"
    return f"{when} EXPIRED" if left <= 0 else f"{when} ({left:.0f}d)"


def as_json(nc: NodeCerts, now: datetime.datetime) -> dict[str, object]:
    first, ca = nc.earliest, nc.earliest_ca
    return {
        "node": nc.node.name,
        "role": nc.node.role,
        "earliest": None if first is None else first.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "certificate": None if first is None else first.name,
        "daysLeft": None if first is None else round(days_left(first, now), 1),
        "caEarliest": None if ca is None else ca.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "problem": verdict(nc, now) or None,
    }


# -- rotation ------------------------------------------------------------------------------
def rke2_path(prefix: str | None) -> str:
    return posixpath.join(prefix or "/usr/local", "bin", "rke2")


def rotate_command(prefix: str | None) -> Command:
    """``rke2 certificate rotate`` (k3s-io/k3s pkg/cli/cert/cert.go ``rotate``): back up
    the node's certificates and delete the leaves; the next start makes new ones. RKE2
    reads data-dir from config.yaml."""
    return Command.argv(
        rke2_path(prefix),
        "certificate",
        "rotate",
        sudo=True,
        timeout=120,
        description="rke2 certificate rotate (new leaf certificates at the next start)",
    )


def stop_command(unit: str) -> Command:
    return Command.argv(
        "systemctl", "stop", unit, sudo=True, timeout=300, description=f"stop {unit}"
    )


@dataclass(frozen=True)
class RotationPlan:
    """How the servers go: ``rolling`` (one at a time: stop, rotate, start, Ready) while
    the cluster serves; ``together`` when it does not (every server down, or a server's
    certificates expired: a lone restarted member finds no etcd quorum, its peers' expired
    certificates refuse it), then every server is stopped and rotated, and all start at
    once. The agents restart in batches either way."""

    mode: str
    servers: tuple[str, ...]
    agent_batches: tuple[tuple[str, ...], ...]
    why: str = ""


def plan_rotation(
    servers: Sequence[Node],
    agents: Sequence[Node],
    *,
    serving: bool,
    expired: Sequence[str],
    batch: int,
) -> RotationPlan:
    """``serving``: a server's API answered with the node list; ``expired``: the servers
    whose certificates expired."""
    names = tuple(n.name for n in servers)
    batches = tuple(
        tuple(n.name for n in agents[i : i + batch]) for i in range(0, len(agents), max(1, batch))
    )
    if not serving:
        why = "no server answers (the cluster is down): the servers start together"
        return RotationPlan("together", names, batches, why)
    if expired:
        why = (
            f"certificates expired on {', '.join(expired)}: a restarted server could not"
            " reach its peers, so every server is stopped, rotated and started together"
        )
        return RotationPlan("together", names, batches, why)
    return RotationPlan("rolling", names, batches, "the servers one at a time")


__all__ = [
    "WARN_DAYS",
    "Cert",
    "NodeCerts",
    "RotationPlan",
    "as_json",
    "cert_dirs",
    "days_left",
    "parse",
    "plan_rotation",
    "read_command",
    "rotate_command",
    "shown_expiry",
    "stop_command",
    "verdict",
]
