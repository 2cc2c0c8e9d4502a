"""The phases of a restore that change nothing: the snapshot against its record, the
bundle (verified as deploy does) of the snapshot's RKE2 version, the snapshot's token,
then every node reachable, read and fit. Any refusal here leaves every node as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mk8s.deploy.builders import plan
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.requirements import input_problems
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Secret, as_user
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.lifecycle import index, restore_steps
from mk8s.deploy.phases.preflight import registry_password
from mk8s.deploy.phases.verify import VerifyBundle
from mk8s.deploy.state import read_token_file
from mk8s.errors import ConfigConflict, InputError, PreflightError


@dataclass(frozen=True)
class Probe:
    """What a restore must know of a node beyond its facts."""

    node_password: bool
    datastore: bool


@dataclass
class RestoreRun:
    """What the restore's phases share: the checked snapshot, the token, each node's
    probe, and the restore's progress as the journal keeps it (so that the same
    command, run again after an interruption, goes on where it stopped)."""

    snapshot: Path
    checked: index.CheckedSnapshot | None = None
    token: str = ""
    probes: dict[str, Probe] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    reset_now: bool = False  # this run did the cluster reset
    resumed: bool = False  # an earlier run left this restore unfinished

    @property
    def record(self) -> index.SnapshotRecord:
        assert self.checked is not None
        return self.checked.record

    @property
    def reset_done(self) -> bool:
        return bool(self.progress.get("reset"))

    @property
    def resumed_after_reset(self) -> bool:
        """An earlier run did the cluster reset: the restored cluster runs already."""
        return self.reset_done and not self.reset_now

    def members(self, first: Node) -> set[str]:
        """The servers an earlier run may have made members of the restored cluster:
        the first, those rejoined and those whose rejoin began (after the reset only)."""
        if not self.reset_done:
            return set()
        return {first.name} | self.listed("rejoined") | self.listed("attempted")

    def listed(self, key: str) -> set[str]:
        found = self.progress.get(key, [])
        return {str(n) for n in found} if isinstance(found, list) else set()


class CheckSnapshot(Phase):
    title = "check the snapshot against its record"
    numbered = False

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        """SnapshotRejected (exit 3) when its bytes are not the recorded ones."""
        self.r.checked = index.check_snapshot(self.r.snapshot, s.state.path / "snapshots")
        rec = self.r.record
        s.log(
            f"snapshot {rec.file}: sha256 {rec.sha256[:16]} matches its record (taken"
            f" {rec.taken_at} on {rec.node}, RKE2 {rec.rke2_version})"
        )

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        rec = self.r.record
        return [
            f"# mk8s restore --dry-run: cluster {s.cluster.name}, snapshot {rec.file}"
            f" (sha256 {rec.sha256[:16]}, matches its record: taken {rec.taken_at} on"
            f" {rec.node}, RKE2 {rec.rke2_version}, {rec.kind})"
        ]


class VerifyRestoreBundle(VerifyBundle):
    """The bundle, verified as deploy verifies it."""

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        assert s.known.verified is not None
        return [
            f"# bundle {s.known.verified.bundle_id} (RKE2 {s.known.verified.manifest.release.tag}),"
            " verified; no node is contacted; nodes are assumed as the last run left them"
            " (.mk8s journal) or fresh"
        ]


def cluster_token(s: Session) -> tuple[str, str]:
    """(the token a restore uses, where it comes from): spec.rke2.token.file, else
    ``.mk8s/<name>/token``; InputError when there is neither (a restore never makes
    up a token: the snapshot opens only with its own)."""
    token_file = s.cluster.rke2.token_file
    if token_file is not None:
        return read_token_file(token_file), f"spec.rke2.token.file ({token_file})"
    stored = s.state.read_token()
    if stored is None:
        raise InputError(
            f"no token for cluster {s.cluster.name}: neither spec.rke2.token.file nor"
            f" {s.state.token_path}; a snapshot is restored only with the token it was"
            " taken under",
            "set spec.rke2.token.file to the cluster's token (a server's"
            " /var/lib/rancher/rke2/server/token) or put it in " + str(s.state.token_path),
        )
    return stored, str(s.state.token_path)


def check_bundle_version(rec: index.SnapshotRecord, tag: str) -> None:
    """InputError (exit 2) unless the bundle's RKE2 is the one the snapshot was taken
    on: mk8s installs that version for the restore (rke2-docs backup_restore.md allows
    a newer minor too, but then a restore would also be an unplanned upgrade)."""
    if tag != rec.rke2_version:
        known = f" (bundle {rec.bundle_id})" if rec.bundle_id else ""
        raise InputError(
            f"the bundle holds RKE2 {tag} but snapshot {rec.file} was taken on"
            f" {rec.rke2_version}; a snapshot is restored only with the RKE2 it was"
            " taken on, nothing was changed",
            f"give the bundle of {rec.rke2_version}{known}",
        )


def check_token(rec: index.SnapshotRecord, token: str, where: str) -> None:
    """InputError (exit 2) unless ``token`` is the one the snapshot was taken under."""
    if index.token_id(token) != rec.token_id:
        raise InputError(
            f"the token in {where} is not the one snapshot {rec.file} was taken"
            " under (RKE2 encrypts the snapshot's CAs with it), nothing was changed",
            "use the cluster's token from when the snapshot was taken",
        )


class MatchInputs(Phase):
    title = "the bundle and the token must be the snapshot's"
    numbered = False

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        """InputError (exit 2) for a bundle of another RKE2 version or another token."""
        assert s.known.verified is not None
        check_bundle_version(self.r.record, s.known.verified.manifest.release.tag)
        token, where = cluster_token(s)
        check_token(self.r.record, token, where)
        self.r.token = token

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        return [
            "# the bundle is the snapshot's RKE2 version and the token is the one it was"
            " taken under"
        ]


class ProbeRestore(Phase):
    title = "read each node's node password and datastore (read-only)"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def run(self, s: Session) -> None:
        def one(node: Node) -> None:
            out = s.remote.run(
                node, "probe", restore_steps.probe_command(s.cluster.paths(node))
            ).stdout
            lines = out.split()
            self.r.probes[node.name] = Probe("node_password=yes" in lines, "datastore=yes" in lines)

        s.parallel(self.nodes(s), one)

    def plan(self, s: Session) -> list[str]:
        lines = []
        for n in self.nodes(s):
            known = s.known.facts[n.name].rke2_tag is not None  # the journal knows it (GatherFacts)
            self.r.probes[n.name] = Probe(known, known and n.is_server)
            cmd = restore_steps.probe_command(s.cluster.paths(n))
            lines += [
                f"[{n.name} {n.address} {n.role}]",
                f"  $ {as_user(cmd, n.ssh.user).display()}",
            ]
        return lines


class RestorePreflight(Phase):
    title = "preflight: arch, disk, sudo, RKE2 RPMs, nm-cloud-setup, SELinux, CIS (changes nothing)"

    def run(self, s: Session) -> None:
        assert s.known.verified is not None
        conflicts = input_problems(s.cluster, s.known.verified.manifest, s.known.facts)
        problems = plan.preflight(s.cluster, s.known.verified.manifest, s.known.facts)
        if conflicts or problems:
            error = ConfigConflict if conflicts else PreflightError
            raise error(
                f"preflight failed on {len(conflicts) + len(problems)} check(s), nothing was"
                " changed: " + "; ".join(conflicts + problems)
            )

    def plan(self, s: Session) -> list[str]:
        return ["  every node must pass before any node is changed"]


class RestoreContext(Phase):
    title = "the restore's token and progress"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        assert s.known.verified is not None
        first = s.cluster.bootstrap
        s.known.ctx = Context(
            s.cluster,
            s.known.verified.manifest,
            s.known.verified.bundle_id,
            Secret(self.r.token),
            registry_password=registry_password(s),
            anchor=first.name,
            first_joins="",  # the first server starts from the restored datastore
        )
        found = s.journal.read().get("restore")
        if isinstance(found, dict) and found.get("sha256") == self.r.record.sha256:
            self.r.progress, self.r.resumed = found, True
            s.log(
                "resuming the restore an earlier run left unfinished"
                + (" (the cluster reset is done)" if self.r.reset_done else "")
            )
        else:
            self.r.progress = {
                "sha256": self.r.record.sha256,
                "file": self.r.record.file,
                "reset": False,
                "attempted": [],
                "rejoined": [],
            }

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        token = "spec.rke2.token.file" if s.cluster.rke2.token_file else str(s.state.token_path)
        resumed = ["  an earlier run left this restore unfinished: it goes on"]
        return [
            f"  the token from {token} (its id matches the snapshot's record)",
            *(resumed if self.r.resumed else []),
        ]


def save_progress(s: Session, run: RestoreRun) -> None:
    """Keep the restore's progress in the journal (written when no worker writes it)."""
    s.journal.put("restore", run.progress)


def mark(s: Session, run: RestoreRun, key: str, node: Node) -> None:
    run.progress[key] = sorted(run.listed(key) | {node.name})
    save_progress(s, run)


def stale_node(run: RestoreRun, node: Node) -> bool:
    """Whether the snapshot's Node of this name must go before the node registers: the
    host has no node password (a new host: the cluster would refuse its new one)."""
    probe = run.probes.get(node.name)
    return probe is not None and not probe.node_password


def stale_why(node: Node) -> str:
    return (
        f"{node.name} has no node password (a new host): the snapshot's node of that"
        " name goes first"
    )


__all__ = [
    "CheckSnapshot",
    "MatchInputs",
    "Probe",
    "ProbeRestore",
    "RestoreContext",
    "RestorePreflight",
    "RestoreRun",
    "VerifyRestoreBundle",
    "check_bundle_version",
    "check_token",
    "cluster_token",
    "mark",
    "save_progress",
    "stale_node",
    "stale_why",
]
