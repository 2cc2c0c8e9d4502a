"""Stage the bundle's artifacts on every node and install RKE2 there (in the background).

The bundle is extracted (and verified a second time) only when some node needs a
file sent; each node then uploads, checks and installs on its own, servers first, so
a node's later phases start as soon as its own preparation is done.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mk8s.bundle import check
from mk8s.bundle.format import keys
from mk8s.deploy.builders import plan
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.converged import not_converged
from mk8s.deploy.phases.upgrade import upgrading
from mk8s.deploy.steps import Step
from mk8s.errors import BundleRejected


def prepare_order(s: Session) -> list[Node]:
    first, servers, agents = plan.order(s.cluster)
    return not_converged(s, [first, *servers, *agents])


class Stage(Phase):
    title = "stage the artifacts (every node in parallel, servers first)"
    background = True

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
        self.base = base  # a delta's base: the release is rebuilt from both
        self.scratch: Path | None = None

    def nodes(self, s: Session) -> Sequence[Node]:
        return prepare_order(s)

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [plan.upload_step(s.known.context, node, s.known.facts[node.name])]

    def begin(self, s: Session) -> None:
        if any(self.steps(s, n)[0].uploads for n in self.nodes(s)):
            self.extracted(s)

    def extracted(self, s: Session) -> dict[str, Path]:
        """The bundle's files on this machine: extracted (verified again) once."""
        if self.scratch is None:
            s.known.ctx = replace(s.known.context, local_artifacts=self._extract(s))
        return dict(s.known.context.local_artifacts)

    def _extract(self, s: Session) -> dict[str, Path]:
        assert s.known.verified is not None
        s.state.ensure()
        self.scratch = Path(tempfile.mkdtemp(prefix="bundle-", dir=s.state.path))
        self.scratch.rmdir()  # extract_bundle creates it, and removes it on failure
        s.log(f"extracting {self.bundle} for upload")
        again = check.extract(
            self.bundle,
            self.trusted,
            self.scratch,
            allow_unsigned=self.allow_unsigned,
            base=self.base,
        )
        if again.manifest_bytes != s.known.verified.manifest_bytes:
            raise BundleRejected(
                f"{self.bundle} changed while mk8s was deploying it",
                "leave the bundle file alone during a deploy, then run it again",
            )
        return {a.path: self.scratch / a.path for a in again.manifest.artifacts}

    def cleanup(self, s: Session) -> None:
        # The pool still uploads from the scratch copy: wait for it, then remove it.
        s.close_background()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


class Install(Phase):
    title = "install RKE2 and place the image tarballs (each node once staged)"
    background = True

    def nodes(self, s: Session) -> Sequence[Node]:
        return prepare_order(s)

    def steps(self, s: Session, node: Node) -> list[Step]:
        # A node being upgraded gets the new images now (before any node restarts, so
        # the new system charts find them everywhere) and install.sh in its own turn.
        step = plan.install_step(
            s.known.context, node, s.known.facts[node.name], run_install=not upgrading(s, node)
        )
        return [step]

    def run_node(self, s: Session, node: Node) -> None:
        steps = self.steps(s, node)
        if steps[0].commands:
            s.log(f"{node.name}: installing")
        super().run_node(s, node)
