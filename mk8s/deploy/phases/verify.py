"""Verify the bundle before anything touches a node (a dry run verifies too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mk8s import ui
from mk8s.bundle import check
from mk8s.bundle.format import keys, parts, reader
from mk8s.bundle.format.manifest import Lock
from mk8s.deploy.builders import plan
from mk8s.deploy.cluster import Cluster
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.errors import BundleRejected, InputError


class VerifyBundle(Phase):
    title = "verify the bundle"
    numbered = False

    def __init__(
        self,
        bundle: Path,
        trusted: Sequence[keys.TrustedKey],
        allow_unsigned: bool,
        base: Path | None = None,
    ) -> None:
        self.bundle = bundle
        self.trusted = trusted
        self.allow_unsigned = allow_unsigned
        self.base = base  # a delta's base: the delta is verified as the whole release

    def run(self, s: Session) -> None:
        """Signature and every byte, in one pass; BundleRejected (exit 3) names the
        problem. Then: a signed bundle that cannot install RKE2 is rejected too, and
        one of another version than spec.rke2.version is an input error (exit 2)."""
        s.log(f"verifying {ui.safe(self.bundle)}")  # a path may hold a newline
        # A split bundle: the signed parts index and every part's size first.
        split = parts.check_index(self.bundle, self.trusted, allow_unsigned=self.allow_unsigned)
        v = check.verify(
            self.bundle, self.trusted, allow_unsigned=self.allow_unsigned, base=self.base
        )
        if split is not None:
            split.check_whole(v.file_sha256)
        if v.signer is None:
            ui.warn(reader.UNSIGNED_WARNING)
        check_deployable(s.cluster, v.manifest)
        s.known.verified = v

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        v = s.known.verified
        assert v is not None
        arch = v.manifest.release.arch[0]
        return [
            f"# mk8s deploy --dry-run: cluster {s.cluster.name}, bundle {v.bundle_id} "
            f"(RKE2 {v.manifest.release.tag}), verified; no node is contacted",
            f"# nodes are assumed as the last deploy left them (.mk8s journal) or fresh and"
            f" {arch}; a real run reads each node and skips what is already in place",
        ]


def check_deployable(cluster: Cluster, manifest: Lock) -> None:
    missing = plan.missing_for_deploy(manifest)
    if missing:
        raise BundleRejected(
            f"the bundle is signed and intact but cannot install RKE2: it lacks"
            f" {', '.join(missing)}",
            "create a complete bundle with `mk8s bundle create`",
        )
    want = cluster.rke2.version
    if want and want != manifest.release.tag:
        raise InputError(
            f"{cluster.path}: spec.rke2.version is {want} but the bundle holds "
            f"{manifest.release.tag}",
            "use the bundle for that version, or change spec.rke2.version",
        )
