"""Images at scale (spec.images): the registry in the air gap, and peer reachability.

``registry`` mode: preflight logs in to the registry (a wrong password or CA stops the
deploy before anything changes), then the release's images are pushed from the
bundle's image tarballs, from this machine (blobs the registry has are skipped, every
digest checked; a re-run checks the pushed manifests and pushes nothing). ``servers``
mode: before the agents start, each agent must reach every server on TCP 9345
(supervisor) and 5001 (the embedded registry mirror), checked from the agent itself.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mk8s.bundle.format.manifest import ArtifactKind
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command, Secret
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.converged import not_converged
from mk8s.deploy.phases.stage import Stage
from mk8s.errors import Mk8sError, PreflightError

if TYPE_CHECKING:
    from mk8s.images import RegistryClient

PEER_PORTS = (9345, 5001)


def registry_client(cluster: Cluster, password: Secret | None) -> RegistryClient:
    """A RegistryClient for spec.images.registry."""
    # mk8s.images (and requests under it) is imported in registry mode only, here and
    # below: every other deploy, status or reset starts some 50 ms sooner without it.
    from mk8s.images import Credentials, RegistryClient, RegistryClientSettings

    reg = cluster.images.registry
    assert reg is not None
    creds = None
    if reg.username and password is not None:
        creds = Credentials(reg.username, password.reveal())
    settings = RegistryClientSettings(ca_file=reg.ca_file, use_docker_config=False)
    return RegistryClient(reg.host, settings, credentials=creds)


class RegistryPreflight(Phase):
    title = "log in to the image registry (registry mode; changes nothing)"

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and s.cluster.images.distribution == "registry"

    def run(self, s: Session) -> None:
        """PreflightError naming the registry and the problem (password, CA, network)."""
        client = registry_client(s.cluster, s.known.context.registry_password)
        try:
            client.manifest_digest("mk8s/preflight", "login")
        except Mk8sError as e:
            raise PreflightError(
                f"the image registry {client.registry} refused mk8s: {e.problem}; nothing was"
                " changed",
                e.fix or "check spec.images.registry (url, caFile, username, passwordFile)",
            ) from e
        finally:
            client.close()

    def plan(self, s: Session) -> list[str]:
        reg = s.cluster.images.registry
        return [f"  GET {reg.url if reg else '?'}/v2/ with the configured CA and credentials"]


class PushImages(Phase):
    title = "push the release's images into the registry (from this machine)"

    def __init__(self, extract: Stage) -> None:
        self.extract = extract  # it extracts the bundle (verifying it) once

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and s.cluster.images.distribution == "registry"

    def plan(self, s: Session) -> list[str]:
        reg = s.cluster.images.registry
        assert s.known.verified is not None and reg is not None
        m = s.known.verified.manifest
        names = [a.name for a in m.find(kind=ArtifactKind.IMAGES) + m.find(kind=ArtifactKind.IMAGE)]
        return [f"  push every image of {', '.join(names)} to {reg.host}/<same path>:<tag>"]

    def run(self, s: Session) -> None:
        from mk8s.images import push_archive  # registry mode only: see registry_client

        assert s.known.verified is not None
        key = s.cluster.images.registry.url if s.cluster.images.registry else ""
        pushed = s.journal.read().get("pushed", {})
        client = registry_client(s.cluster, s.known.context.registry_password)
        try:
            done = pushed.get(s.known.verified.bundle_id) if isinstance(pushed, dict) else None
            if isinstance(done, dict) and done.get("registry") == key and _present(client, done):
                s.log(f"images already in {client.registry}")
                return
            files = self.extract.extracted(s)
            refs: list[str] = []
            manifest = s.known.verified.manifest
            for art in manifest.find(kind=ArtifactKind.IMAGES) + manifest.find(
                kind=ArtifactKind.IMAGE
            ):
                s.log(f"pushing the images of {art.name} to {client.registry}")
                report = push_archive(Path(files[art.path]), client)
                refs += [str(img.target) for img in report.images]
                s.state.audit(
                    node="-",
                    step="push",
                    file=art.name,
                    images=[str(i.target) for i in report.images],
                    blobs_uploaded=report.blobs_uploaded,
                    blobs_skipped=report.blobs_skipped,
                )
        finally:
            client.close()
        _record_pushed(s, key, refs)


def _present(client: RegistryClient, done: dict[str, object]) -> bool:
    """Every image a previous run pushed is still there, by digest."""
    from mk8s.images import parse_reference  # registry mode only: see registry_client

    refs = done.get("images")
    if not isinstance(refs, list) or not refs:
        return False
    for text in refs:
        ref = parse_reference(str(text))
        if ref.digest is None or client.manifest_digest(ref.repository, ref.digest) is None:
            return False
    return True


def _record_pushed(s: Session, registry: str, refs: list[str]) -> None:
    assert s.known.verified is not None
    pushed = s.journal.read().setdefault("pushed", {})
    if isinstance(pushed, dict):
        pushed[s.known.verified.bundle_id] = {"registry": registry, "images": refs}
        s.journal.write()


def port_check(servers: Sequence[Node]) -> Command:
    """From one node: can it open TCP 9345 and 5001 on every server? Prints the ones it
    cannot reach (values travel as arguments, never as shell text)."""
    targets = [f"{n.address}:{port}" for n in servers for port in PEER_PORTS]
    script = (
        'for t in "$@"; do h="${t%:*}"; p="${t##*:}"; '
        'timeout 5 bash -c \': </dev/tcp/$0/$1\' "$h" "$p" 2>/dev/null '
        '|| echo "unreachable $t"; done; true'
    )
    return Command.argv(
        "sh",
        "-c",
        script,
        "mk8s-ports",
        *targets,
        timeout=120,
        description="check TCP 9345 and 5001 to the servers",
    )


class PeerPorts(Phase):
    title = "agents reach every server on TCP 9345 and 5001 (embedded registry mirror)"

    def nodes(self, s: Session) -> Sequence[Node]:
        # The agents that join or change: a converged agent is probed by nothing.
        return not_converged(s, s.cluster.agents)

    def should_run(self, s: Session) -> bool:
        return (
            not s.known.stop_reason
            and s.cluster.images.distribution == "servers"
            and bool(self.nodes(s))
        )

    def run(self, s: Session) -> None:
        cmd = port_check(s.cluster.servers)
        failures: list[str] = []
        lock = threading.Lock()

        def one(node: Node) -> None:
            s.wait_prepared(node)
            if not s.known.alive(node):
                return
            out = s.remote.run(node, "ports", cmd).stdout.split()
            bad = [out[i + 1] for i in range(0, len(out) - 1, 2) if out[i] == "unreachable"]
            if bad:
                with lock:
                    failures.append(f"{node.name} cannot reach {', '.join(bad)}")

        s.parallel(self.nodes(s), one)
        if failures:
            err = PreflightError(
                "the embedded registry mirror needs TCP 9345 and 5001 between all nodes: "
                + "; ".join(sorted(failures)),
                "open those ports between the nodes (firewall), then run the same deploy again",
            )
            for node in self.nodes(s):
                if s.known.alive(node):
                    s.fail(node, err)
            s.known.stop("agents cannot reach the servers' registry mirror")

    def plan(self, s: Session) -> list[str]:
        cmd = port_check(s.cluster.servers)
        lines = []
        for n in self.nodes(s):
            lines += [f"[{n.name} {n.address} {n.role}]", f"  $ {cmd.display()}"]
        return lines
