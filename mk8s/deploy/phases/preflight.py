"""Preflight (every node fit, or nothing changes) and the join token.

Problems of the cluster file (a CNI the bundle lacks, SELinux without ``selinux:
true``, a full token for a new cluster) are ConfigConflict (exit 2); problems of the
hosts are PreflightError (exit 1). Either way nothing was changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from mk8s.deploy.builders import membership, plan
from mk8s.deploy.builders.context import Context, supervisor_url
from mk8s.deploy.builders.requirements import input_problems
from mk8s.deploy.command import Secret
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.state import StateDir, read_token_file
from mk8s.errors import ConfigConflict, PreflightError


def cluster_membership(s: Session) -> membership.Membership:
    """Where the cluster stands (new, or which live server it is reached through),
    computed once from the facts."""
    if s.known.membership is None:
        s.known.membership = membership.membership(s.cluster, s.known.facts)
    return s.known.membership


class RestoreUnfinished(Phase):
    """A deploy while a restore is unfinished would start the servers a restore left
    stopped, from whatever datastore each holds: refused before anything is read,
    until the restore (the same ``mk8s restore`` command) has finished."""

    title = "no restore left unfinished (this machine's journal)"
    numbered = False

    def run(self, s: Session) -> None:
        found = s.journal.read().get("restore")
        if not isinstance(found, dict):
            return
        name = str(found.get("file") or "the snapshot")
        raise PreflightError(
            f"a restore of {name} is unfinished on cluster {s.cluster.name}"
            " (an earlier mk8s restore stopped part way): deploy would start servers"
            " from datastores that do not agree",
            "run the same mk8s restore command again to finish it (it goes on from where"
            " it stopped), then deploy",
        )

    def plan(self, s: Session) -> list[str]:
        self.run(s)  # a dry run refuses as the real run would
        return []


class Preflight(Phase):
    title = (
        "preflight: arch, disk, sudo, RKE2 RPMs, nm-cloud-setup, SELinux, CIS, CNI, the"
        " cluster's servers (changes nothing)"
    )

    def run(self, s: Session) -> None:
        """PreflightError listing every problem on every node (ConfigConflict, exit 2,
        when one of them is the cluster file's); nothing was changed."""
        assert s.known.verified is not None
        conflicts = input_problems(s.cluster, s.known.verified.manifest, s.known.facts)
        m = cluster_membership(s)
        problems = plan.preflight(s.cluster, s.known.verified.manifest, s.known.facts)
        problems += membership.problems(s.cluster, s.known.facts, m)
        if conflicts or problems:
            error = ConfigConflict if conflicts else PreflightError
            raise error(
                f"preflight failed on {len(conflicts) + len(problems)} check(s), nothing was"
                " changed: " + "; ".join(conflicts + problems)
            )
        if m.rejoin:
            s.log(
                f"{s.cluster.bootstrap.name}: has no datastore; it joins the running"
                f" cluster through {m.anchor}"
            )

    def plan(self, s: Session) -> list[str]:
        return ["  every node must pass before any node is changed"]


class Token(Phase):
    title = "the join token"

    def run(self, s: Session) -> None:
        s.known.ctx = _context(s, resolve_token(s), registry_password(s))

    def plan(self, s: Session) -> list[str]:
        # The token and registry password this machine already has (never shown), so
        # that the plan can tell which nodes' files really change; else a placeholder.
        placeholder = Secret("dry-run-never-shown")
        token_file = s.cluster.rke2.token_file
        stored = read_token_file(token_file) if token_file else s.state.read_token()
        password = registry_password(s) or (placeholder if s.cluster.images.registry else None)
        s.known.ctx = _context(s, Secret(stored) if stored else placeholder, password)
        if s.cluster.rke2.token_file is not None:
            return [f"  from spec.rke2.token.file ({s.cluster.rke2.token_file})"]
        return [
            f"  kept in {s.state.token_path} (0600): the stored one, the running cluster's,"
            " or a new random one"
        ]


def _context(s: Session, token: Secret, password: Secret | None) -> Context:
    assert s.known.verified is not None
    m = cluster_membership(s)
    anchor = s.cluster.node(m.anchor)
    return Context(
        s.cluster,
        s.known.verified.manifest,
        s.known.verified.bundle_id,
        token,
        registry_password=password,
        anchor=m.anchor,
        first_joins=supervisor_url(anchor.address) if m.rejoin else "",
    )


def registry_password(s: Session) -> Secret | None:
    """spec.images.registry.passwordFile's first line, or None."""
    reg = s.cluster.images.registry
    if reg is None or reg.password_file is None:
        return None
    return Secret(read_token_file(reg.password_file))


def resolve_token(s: Session) -> Secret:
    """spec.rke2.token.file, else the stored token, else the running cluster's, else a
    new one (stored 0600). PreflightError if it is not the running cluster's token;
    ConfigConflict if it is a full token and the cluster is new."""
    cluster = s.cluster
    m = cluster_membership(s)
    anchor = cluster.node(m.anchor)
    existing = s.known.facts[anchor.name].node_token
    if cluster.rke2.token_file is not None:
        token = read_token_file(cluster.rke2.token_file)
    else:
        stored = s.state.read_token()
        if stored is None and existing:
            # The cluster exists but this machine has no state for it: join with the
            # cluster's own token rather than inventing one it would refuse.
            token = existing
            s.state.write_token(token)
        else:
            token = stored or StateDir.new_token()
            if stored is None:
                s.state.write_token(token)
    where = (
        f"spec.rke2.token.file ({cluster.rke2.token_file})"
        if cluster.rke2.token_file
        else f"{s.state.token_path}"
    )
    if existing and not token_matches(existing, token):
        raise PreflightError(
            f"the token in {where} is not the token of the running cluster on "
            f"{anchor.name}; nothing was changed",
            f"use the cluster's original token (it is in {s.cluster.paths(anchor).node_token}"
            f" on {anchor.name})",
        )
    if m.new_cluster and membership.is_full_token(token):
        # rancher/rke2-docs docs/security/token.md: without custom CA certificates only
        # the short (secret) form can start the first server; the CA hash of a full
        # token names a CA that does not exist yet.
        raise ConfigConflict(
            f"the token in {where} is a full K10<CA hash>::server:<secret> token, which"
            " cannot bootstrap a new cluster (its CA hash names a CA that does not exist"
            " yet; RKE2 takes it only with custom CA certificates); nothing was changed",
            f"put only the secret part (after '::server:') in {where}"
            + (
                ""
                if cluster.rke2.token_file
                else ", or delete that file to let mk8s generate a new token"
            ),
        )
    return Secret(token)


def token_matches(node_token: str, token: str) -> bool:
    """RKE2's node-token is K10<ca hash>::server:<secret>; a plain token is the secret."""
    if token == node_token:
        return True
    secret = node_token.rsplit(":", 1)[-1]
    return token.rsplit(":", 1)[-1] == secret


__all__: Sequence[str] = [
    "Preflight",
    "RestoreUnfinished",
    "Token",
    "resolve_token",
    "token_matches",
]
