"""Execute a deploy: bounded parallelism, gates, journal and audit log.

The order is SPEC section 8: verify the bundle (before any node is touched); connect
and gather facts on every node in parallel; preflight (fail fast, change nothing);
upload in parallel; install in parallel; the first server; the other servers one at
a time, each gated on its readiness; the agents in parallel, each gated on its node
being Ready; the admin kubeconfig. What each node needs comes from
:mod:`mk8s.deploy.plan`; this module only runs it and records what happened.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mk8s import ui
from mk8s.bundle import keys, reader
from mk8s.bundle.manifest import Lock
from mk8s.deploy import facts as facts_mod
from mk8s.deploy import plan
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command, FileUpload, Secret, as_user
from mk8s.deploy.state import StateDir, read_token_file
from mk8s.deploy.transport import Result, SSHTransport, Transport
from mk8s.errors import (
    BundleRejected,
    DeployError,
    InputError,
    Mk8sError,
    PreflightError,
    RemoteCommandError,
)
from mk8s.files import atomic_write

Log = Callable[[str], None]
TransferProgress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class DeploySettings:
    """Everything one ``mk8s deploy`` needs."""

    cluster: Cluster
    bundle: Path
    trusted: Sequence[keys.TrustedKey]
    allow_unsigned: bool = False
    jobs: int | None = None
    dry_run: bool = False
    ready_timeout: float = 900.0
    poll_interval: float = 0.5
    state_base: Path | None = None
    kubeconfig_out: Path | None = None

    @property
    def concurrency(self) -> int:
        return max(1, self.jobs or self.cluster.options.concurrency)


@dataclass
class NodeOutcome:
    node: Node
    state: str = "pending"  # pending, ready, failed, skipped
    version: str = ""
    seconds: float = 0.0
    error: str = ""
    uploaded_bytes: int = 0


@dataclass
class DeployReport:
    outcomes: dict[str, NodeOutcome]
    kubeconfig: Path | None = None
    bundle_id: str = ""
    seconds: float = 0.0
    plan_text: str = ""
    uploaded_bytes: int = field(default=0)

    @property
    def ok(self) -> bool:
        return all(o.state == "ready" for o in self.outcomes.values())

    def table(self) -> str:
        rows = [("NODE", "ROLE", "STATE", "VERSION", "TIME")]
        for o in self.outcomes.values():
            rows.append((o.node.name, o.node.role, o.state, o.version or "-", f"{o.seconds:.1f}s"))
        lines = [ui.table(rows)]
        lines += [ui.safe(f"{o.node.name}: {o.error}") for o in self.outcomes.values() if o.error]
        return "\n".join(lines)


class _Runner:
    """Runs commands and uploads on connected nodes, writing the audit log."""

    def __init__(
        self,
        state: StateDir,
        log: Log,
        staging_root: str = "/var/lib/mk8s",
        progress: TransferProgress | None = None,
    ) -> None:
        self.progress = progress
        self.state = state
        self.staging_root = staging_root
        self.log = log
        self.conns: dict[str, Transport] = {}
        self.uploaded = 0
        self._lock = threading.Lock()
        self._node_done: dict[str, int] = {}
        self._node_total: dict[str, int] = {}

    def run(self, node: Node, step: str, cmd: Command) -> Result:
        t = self.conns[node.name]
        shown = as_user(cmd, node.ssh.user).display()  # what the node really runs, masked
        start = time.monotonic()
        try:
            result = t.run(cmd)
        except RemoteCommandError as e:
            self.state.audit(
                node=node.name,
                step=step,
                command=shown,
                exit=None,
                error=cmd.mask(str(e)),
                seconds=round(time.monotonic() - start, 3),
            )
            raise
        self.state.audit(
            node=node.name,
            step=step,
            command=shown,
            exit=result.exit_code,
            seconds=round(time.monotonic() - start, 3),
        )
        return result

    def upload_all(self, node: Node, ups: Sequence[FileUpload], partial: dict[str, int]) -> int:
        """Send files as NAME.part (resuming partial ones), then check every sha256 on the
        node and rename the good ones in one command. A file that does not hash right
        (a resumed part gone bad) is discarded and sent whole once more; a second
        mismatch raises DeployError. Returns the bytes sent."""
        total = 0
        sent: dict[str, tuple[int, int, float]] = {}
        self._node_done[node.name] = 0
        self._node_total[node.name] = sum(u.size for u in ups)
        for up in ups:
            part = up.remote_path + ".part"
            have = partial.get(part, 0)
            offset = have if 0 < have <= up.size else 0
            start = time.monotonic()
            n = self._put(node, up, offset)
            sent[up.remote_path] = (n, offset, time.monotonic() - start)
            total += n
        bad = self._check_and_place(node, ups, sent)
        for up in bad:
            self.run(
                node,
                "upload",
                Command.argv(
                    "rm",
                    "-f",
                    up.remote_path + ".part",
                    sudo=True,
                    timeout=60,
                    description="discard a bad partial upload",
                ),
            )
            start = time.monotonic()
            n = self._put(node, up, 0)
            total += n
            if self._check_and_place(
                node, [up], {up.remote_path: (n, 0, time.monotonic() - start)}
            ):
                raise DeployError(
                    f"{node.name}: {up.remote_path} does not match its sha256 after upload",
                    "check the node's disk and the network; then deploy again",
                )
        return total

    def _put(self, node: Node, up: FileUpload, offset: int) -> int:
        src = up.source if isinstance(up.source, bytes) else Path(up.source)
        self._advance(node, offset)  # a resumed file counts what is already there

        def step(n: int) -> None:
            self._advance(node, n)

        n = self.conns[node.name].put(
            src, up.remote_path + ".part", mode=up.mode, offset=offset, progress=step
        )
        with self._lock:
            self.uploaded += n
        return n

    def _advance(self, node: Node, n: int) -> None:
        if self.progress is None:
            return
        with self._lock:
            done = self._node_done[node.name] = self._node_done.get(node.name, 0) + n
        self.progress(
            node.name,
            min(done, self._node_total.get(node.name, done)),
            self._node_total.get(node.name),
        )

    def _check_and_place(
        self, node: Node, ups: Sequence[FileUpload], sent: dict[str, tuple[int, int, float]]
    ) -> list[FileUpload]:
        """One command: for each file, check NAME.part and move it into place; return
        the files that did not hash right."""
        parts: list[str] = []
        values: dict[str, str] = {}
        for i, up in enumerate(ups):
            part = up.remote_path + ".part"
            template = (
                "if echo {line} | sha256sum -c --quiet - >/dev/null 2>&1 && "
                "mv -f {part} {dest} && " + facts_mod.RECORD_TEMPLATE + "; "
                "then echo ok {dest}; else echo bad {dest}; fi"
            )
            keys = {
                "line": f"{up.sha256}  {part}",
                "part": part,
                "dest": up.remote_path,
                **facts_mod.record_values(self.staging_root, up.remote_path, up.sha256),
            }
            for k, v in keys.items():
                template = template.replace("{" + k + "}", "{" + f"{k}{i}" + "}")
                values[f"{k}{i}"] = v
            parts.append(template)
        check = Command.script(
            "; ".join(parts),
            values,
            sudo=True,
            timeout=900,
            description=f"check the sha256 of {len(ups)} uploaded file(s) and move them in place",
        )
        out = self.run(node, "upload", check).stdout.split()
        good = {out[i + 1] for i in range(0, len(out) - 1, 2) if out[i] == "ok"}
        bad = []
        for up in ups:
            n, offset, seconds = sent[up.remote_path]
            ok = up.remote_path in good
            self.state.audit(
                node=node.name,
                step="upload",
                file=up.remote_path,
                bytes=n,
                offset=offset,
                sha256=up.sha256,
                ok=ok,
                seconds=round(seconds, 3),
            )
            if not ok:
                bad.append(up)
        return bad


# -- helpers -------------------------------------------------------------------------------
def connect_node(node: Node) -> Transport:
    """An open SSH connection to ``node``; ConnectError / HostKeyError otherwise."""
    t = SSHTransport.for_node(node)
    t.connect()
    return t


def _parallel(items: Iterable[Node], jobs: int, fn: Callable[[Node], None]) -> None:
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(jobs, len(items))) as pool:
        list(pool.map(fn, items))


def _verify(settings: DeploySettings, extract_to: Path | None) -> reader.VerifiedBundle:
    if extract_to is None:
        v = reader.verify_bundle(
            settings.bundle, settings.trusted, allow_unsigned=settings.allow_unsigned
        )
    else:
        v = reader.extract_bundle(
            settings.bundle, settings.trusted, extract_to, allow_unsigned=settings.allow_unsigned
        )
    if v.signer is None and extract_to is None:  # the first of the two passes says it
        ui.warn(reader.UNSIGNED_WARNING)
    return v


def _check_version(cluster: Cluster, manifest: Lock) -> None:
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


def _node_ready(nodes_json: str, name: str) -> tuple[bool, str]:
    """(Ready?, kubelet version) of node ``name`` in ``kubectl get nodes -o json``."""
    try:
        data = json.loads(nodes_json)
    except ValueError:
        return False, ""
    for item in data.get("items", []):
        if item.get("metadata", {}).get("name") != name:
            continue
        status = item.get("status", {})
        version = status.get("nodeInfo", {}).get("kubeletVersion", "")
        for cond in status.get("conditions", []):
            if cond.get("type") == "Ready":
                return cond.get("status") == "True", version
    return False, ""


# -- the deploy --------------------------------------------------------------------------
def deploy(
    settings: DeploySettings, log: Log = ui.note, progress: TransferProgress | None = None
) -> DeployReport:
    """Deploy (or converge) the cluster. Raises on a problem found before any change.

    Returns a report; ``report.ok`` is False when a node failed after changes began
    (the caller exits 1). BundleRejected, InputError, PreflightError and
    StateLockedError are raised before any node is changed.
    """
    cluster = settings.cluster
    state = StateDir(cluster.name, settings.state_base)
    started = time.monotonic()
    if settings.dry_run:
        return _dry_run(settings, log)
    with state.locked(), _scratch(state) as scratch:
        log(f"verifying {settings.bundle}")
        verified = _verify(settings, None)
        _check_version(cluster, verified.manifest)
        runner = _Runner(state, log, cluster.options.staging_dir, progress)
        try:
            report = _deploy_verified(settings, state, runner, verified, scratch, log)
        finally:
            for t in runner.conns.values():
                with contextlib.suppress(Exception):
                    t.close()
        report.seconds = time.monotonic() - started
        report.uploaded_bytes = runner.uploaded
        return report


def _extract_for_upload(
    settings: DeploySettings, verified: reader.VerifiedBundle, scratch: Path, log: Log
) -> dict[str, Path]:
    """Extract the bundle (verifying it again) only when some node needs a file sent."""
    log(f"extracting {settings.bundle} for upload")
    again = _verify(settings, scratch)
    if again.manifest_bytes != verified.manifest_bytes:
        raise BundleRejected(
            f"{settings.bundle} changed while mk8s was deploying it",
            "leave the bundle file alone during a deploy, then run it again",
        )
    return {a.path: scratch / a.path for a in again.manifest.artifacts}


@contextlib.contextmanager
def _scratch(state: StateDir) -> Iterator[Path]:
    state.ensure()
    path = Path(tempfile.mkdtemp(prefix="bundle-", dir=state.path))
    try:
        shutil.rmtree(path)  # extract_bundle creates it and removes it on failure
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def connect_many(nodes: Sequence[Node], runner: _Runner, jobs: int) -> dict[str, str]:
    """Connect to ``nodes`` in parallel into ``runner.conns``; return node -> error."""
    errors: dict[str, str] = {}
    lock = threading.Lock()

    def one(node: Node) -> None:
        try:
            t = connect_node(node)
        except Mk8sError as e:
            with lock:
                errors[node.name] = str(e)
            return
        with lock:
            runner.conns[node.name] = t

    _parallel(nodes, jobs, one)
    return errors


def _connect_all(cluster: Cluster, runner: _Runner, jobs: int) -> None:
    errors = connect_many(cluster.nodes, runner, jobs)
    if errors:
        lines = "; ".join(f"{n}: {e}" for n, e in errors.items())
        raise PreflightError(
            f"cannot reach {len(errors)} of {len(cluster.nodes)} nodes, nothing was changed: "
            f"{lines}"
        )


def gather_facts(
    cluster: Cluster, runner: _Runner, staging: str, jobs: int
) -> dict[str, facts_mod.NodeFacts]:
    found: dict[str, facts_mod.NodeFacts] = {}
    lock = threading.Lock()

    def one(node: Node) -> None:
        out = runner.run(node, "facts", facts_mod.gather(staging)).stdout
        f = facts_mod.parse_gathered(out)
        with lock:
            found[node.name] = f

    _parallel(cluster.nodes, jobs, one)
    return found


def _resolve_token(
    settings: DeploySettings, state: StateDir, found: dict[str, facts_mod.NodeFacts]
) -> Secret:
    cluster = settings.cluster
    if cluster.rke2.token_file is not None:
        value = read_token_file(cluster.rke2.token_file)
        token = value
    else:
        stored = state.read_token()
        existing = found[cluster.bootstrap.name].node_token
        if stored is None and existing:
            # The cluster exists but this machine has no state for it: join with the
            # cluster's own token rather than inventing one it would refuse.
            token = existing
            state.write_token(token)
        else:
            token = stored or StateDir.new_token()
            if stored is None:
                state.write_token(token)
    existing = found[cluster.bootstrap.name].node_token
    if existing and not _token_matches(existing, token):
        where = (
            f"spec.rke2.token.file ({cluster.rke2.token_file})"
            if cluster.rke2.token_file
            else f"{state.token_path}"
        )
        raise PreflightError(
            f"the token in {where} is not the token of the running cluster on "
            f"{cluster.bootstrap.name}; nothing was changed",
            "use the cluster's original token (it is in /var/lib/rancher/rke2/server/"
            "node-token on the first server)",
        )
    return Secret(token)


def _token_matches(node_token: str, token: str) -> bool:
    """RKE2's node-token is K10<ca hash>::server:<secret>; a plain token is the secret."""
    if token == node_token:
        return True
    secret = node_token.rsplit(":", 1)[-1]
    return token.rsplit(":", 1)[-1] == secret


def _deploy_verified(
    settings: DeploySettings,
    state: StateDir,
    runner: _Runner,
    verified: reader.VerifiedBundle,
    scratch: Path,
    log: Log,
) -> DeployReport:
    cluster = settings.cluster
    manifest = verified.manifest
    jobs = settings.concurrency
    outcomes = {n.name: NodeOutcome(n) for n in cluster.nodes}
    report = DeployReport(outcomes, bundle_id=verified.bundle_id)
    staging = f"{cluster.options.staging_dir.rstrip('/')}/{verified.bundle_id}"

    log(f"connecting to {len(cluster.nodes)} nodes")
    _connect_all(cluster, runner, jobs)
    found = gather_facts(cluster, runner, staging, jobs)
    problems = plan.preflight(cluster, manifest, found)
    if problems:
        raise PreflightError(
            f"preflight failed on {len(problems)} check(s), nothing was changed: "
            + "; ".join(problems)
        )
    token = _resolve_token(settings, state, found)
    ctx = plan.Context(cluster, manifest, verified.bundle_id, token)
    if any(plan.upload_step(ctx, n, found[n.name]).uploads for n in cluster.nodes):
        local = _extract_for_upload(settings, verified, scratch, log)
        ctx = plan.Context(cluster, manifest, verified.bundle_id, token, local)
    journal = state.read_journal()
    clocks = {n.name: time.monotonic() for n in cluster.nodes}
    installed_now: set[str] = set()
    lock = threading.Lock()

    def fail(node: Node, e: BaseException) -> None:
        o = outcomes[node.name]
        o.state = "failed"
        o.error = str(e)
        o.seconds = time.monotonic() - clocks[node.name]
        log(f"{node.name}: FAILED: {e}")
        with lock:
            journal["nodes"][node.name] = {
                "state": "failed",
                "error": str(e),
                "bundle": verified.bundle_id,
            }
            state.write_journal(journal)

    def alive(node: Node) -> bool:
        return outcomes[node.name].state == "pending"

    def prepare(node: Node) -> None:
        f = found[node.name]
        try:
            step = plan.upload_step(ctx, node, f)
            if step.uploads:
                user = node.ssh.user
                runner.run(
                    node,
                    "upload",
                    Command.script(
                        "mkdir -p {dir}/files && chown {user} {dir} {dir}/files",
                        {"dir": staging, "user": user},
                        sudo=True,
                        timeout=60,
                        description="create the staging directory",
                    ),
                )
                total = sum(u.size for u in step.uploads)
                log(f"{node.name}: uploading {len(step.uploads)} files ({ui.human_bytes(total)})")
                outcomes[node.name].uploaded_bytes += runner.upload_all(
                    node, step.uploads, f.partial
                )
            inst = plan.install_step(ctx, node, f)
            if inst.commands:
                log(f"{node.name}: installing")
            for cmd in inst.commands:
                runner.run(node, "install", cmd)
            if f.rke2_tag != manifest.release.tag:
                with lock:
                    installed_now.add(node.name)
        except Mk8sError as e:
            fail(node, e)

    first, servers, agents = plan.order(cluster)
    poller = _NodesPoller(runner, first, settings.poll_interval)
    log("staging and installing")
    # Servers are prepared first; agents keep uploading and installing while the
    # servers join, and each node starts as soon as its own preparation is done.
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(cluster.nodes)))
    prepared = {n.name: pool.submit(prepare, n) for n in [first, *servers, *agents]}

    def launch(node: Node) -> bool:
        """Write the config and start the service once the node is prepared."""
        prepared[node.name].result()
        if not alive(node):
            return False
        try:
            step = plan.start_step(
                ctx, node, found[node.name], installed_now=node.name in installed_now
            )
            if step.commands:
                log(f"{node.name}: starting {plan.service(node)}")
            for cmd in step.commands:
                runner.run(node, "start", cmd)
        except Mk8sError as e:
            fail(node, e)
            return False
        return True

    def mark_ready(node: Node, version: str) -> None:
        o = outcomes[node.name]
        o.state, o.version = "ready", version
        o.seconds = time.monotonic() - clocks[node.name]
        log(f"{node.name}: Ready ({version})")
        with lock:
            journal["nodes"][node.name] = {
                "state": "ready",
                "version": version,
                "bundle": verified.bundle_id,
                "role": node.role,
            }
            state.write_journal(journal)

    def start_server(node: Node) -> None:
        if launch(node):
            try:
                mark_ready(node, _wait_ready(settings, runner, poller, node))
            except Mk8sError as e:
                fail(node, e)

    def start_agents() -> None:
        launched: list[Node] = []

        def one(node: Node) -> None:
            if launch(node):
                with lock:
                    launched.append(node)

        _parallel(agents, jobs, one)
        # Waiting holds no worker: one node list per poll interval answers for all.
        waited = _wait_all_ready(settings, poller, launched)
        for node in launched:
            result = waited[node.name]
            if isinstance(result, Mk8sError):
                fail(node, result)
            else:
                mark_ready(node, result)

    try:
        start_server(first)
        if outcomes[first.name].state != "ready":
            _skip_rest(outcomes, "the first server is not ready")
        else:
            for node in servers:
                start_server(node)
                if outcomes[node.name].state != "ready":
                    _skip_rest(outcomes, f"server {node.name} failed; servers join one at a time")
                    break
            start_agents()
            report.kubeconfig = _write_kubeconfig(settings, runner, ctx, first)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def _wait_all_ready(
    settings: DeploySettings, poller: _NodesPoller, nodes: Sequence[Node]
) -> dict[str, str | Mk8sError]:
    """Wait until every node in ``nodes`` is Ready: name -> version, or DeployError."""
    results: dict[str, str | Mk8sError] = {}
    deadline = time.monotonic() + settings.ready_timeout
    pending = list(nodes)
    while pending:
        try:
            listing = poller.nodes_json()
        except Mk8sError as e:
            listing = ""
            last = str(e)
        else:
            last = ""
        for node in list(pending):
            ready, version = _node_ready(listing, node.name)
            if ready:
                results[node.name] = version
                pending.remove(node)
        if not pending:
            break
        if time.monotonic() >= deadline:
            for node in pending:
                results[node.name] = DeployError(
                    f"{node.name} was not Ready within {settings.ready_timeout:.0f}s"
                    + (f" ({last[:200]})" if last else ""),
                    f"look at `journalctl -u {plan.service(node)}` on the node, then deploy again",
                )
            break
        time.sleep(settings.poll_interval)
    return results


class _NodesPoller:
    """One ``kubectl get nodes`` on the first server per poll interval, shared by every
    node waiting to be Ready (twelve agents do not each run their own kubectl)."""

    def __init__(self, runner: _Runner, first: Node, interval: float) -> None:
        self.runner = runner
        self.first = first
        self.interval = interval
        self._lock = threading.Lock()
        self._at = -1e9
        self._json = ""

    def nodes_json(self, asker: Node | None = None) -> str:
        with self._lock:
            if time.monotonic() - self._at >= self.interval:
                r = self.runner.run(asker or self.first, "wait-ready", plan.nodes_command())
                self._json, self._at = r.stdout, time.monotonic()
            return self._json

    def invalidate(self) -> None:
        with self._lock:
            self._at = -1e9


def _skip_rest(outcomes: dict[str, NodeOutcome], why: str) -> None:
    for o in outcomes.values():
        if o.state == "pending":
            o.state, o.error = "skipped", why


def _wait_ready(settings: DeploySettings, runner: _Runner, poller: _NodesPoller, node: Node) -> str:
    """Block until ``node`` is Ready (servers: also their own /readyz); DeployError after
    ``settings.ready_timeout``."""
    deadline = time.monotonic() + settings.ready_timeout
    last = ""
    while True:
        api_ok = True
        if node.is_server:
            r = runner.run(node, "wait-ready", plan.readyz_command())
            api_ok = r.exit_code == 0 and r.stdout.strip() == "ok"
            last = r.stderr.strip() or r.stdout.strip()
        if api_ok:
            # Before any server answers, the first server is the one to ask; a server
            # that is itself up answers for the whole cluster.
            ready, version = _node_ready(
                poller.nodes_json(node if node.is_server else None), node.name
            )
            if ready:
                return version
            last = f"node {node.name} is not Ready yet"
        if time.monotonic() >= deadline:
            raise DeployError(
                f"{node.name} was not Ready within {settings.ready_timeout:.0f}s ({last[:200]})",
                f"look at `journalctl -u {plan.service(node)}` on the node, then deploy again",
            )
        time.sleep(settings.poll_interval)


def _write_kubeconfig(
    settings: DeploySettings, runner: _Runner, ctx: plan.Context, first: Node
) -> Path:
    text = runner.run(first, "kubeconfig", plan.kubeconfig_command()).stdout
    body = plan.rewrite_kubeconfig(text, ctx.api_host)
    out = settings.kubeconfig_out or Path.cwd() / f"{settings.cluster.name}.kubeconfig"
    atomic_write(out, body.encode(), mode=0o600)
    return out


# -- dry run -------------------------------------------------------------------------------
def _dry_run(settings: DeploySettings, log: Log) -> DeployReport:
    """Verify the bundle and print the full plan for fresh nodes; touch no node."""
    cluster = settings.cluster
    verified = _verify(settings, None)
    manifest = verified.manifest
    _check_version(cluster, manifest)
    token = Secret("dry-run-token-never-shown")
    ctx = plan.Context(cluster, manifest, verified.bundle_id, token)
    arch = manifest.release.arch[0]
    fresh = facts_mod.NodeFacts(arch=arch, uname_m=arch, os="", hostname="", root=True, sudo=True)
    lines = [
        f"# mk8s deploy --dry-run: cluster {cluster.name}, bundle {verified.bundle_id} "
        f"(RKE2 {manifest.release.tag}), verified; no node is contacted",
        f"# nodes are assumed fresh and {arch}; a real run skips what is already in place",
    ]
    first, servers, agents = plan.order(cluster)
    phases: list[tuple[str, list[Node], Callable[[Node], list[plan.Step]]]] = [
        (
            f"1. stage and install (all nodes in parallel, {settings.concurrency} at a time)",
            list(cluster.nodes),
            lambda n: [plan.upload_step(ctx, n, fresh), plan.install_step(ctx, n, fresh)],
        ),
        (
            "2. bootstrap the first server",
            [first],
            lambda n: [plan.start_step(ctx, n, fresh, installed_now=True)],
        ),
        (
            "3. join the other servers one at a time",
            list(servers),
            lambda n: [plan.start_step(ctx, n, fresh, installed_now=True)],
        ),
        (
            "4. join the agents in parallel",
            list(agents),
            lambda n: [plan.start_step(ctx, n, fresh, installed_now=True)],
        ),
    ]
    for title, nodes, steps in phases:
        lines.append(f"\n## {title}")
        for node in nodes:
            lines.append(f"[{node.name} {node.address} {node.role}]")
            for step in steps(node):
                for up in step.uploads:
                    lines.append(f"  {up.display()}")
                for cmd in step.commands:
                    lines.append(f"  $ {as_user(cmd, node.ssh.user).display()}")
                    shown: bytes | None = None
                    if cmd.description.startswith("write config.yaml"):
                        shown = plan.config_bytes(ctx, node)[1]
                    elif cmd.description.startswith("write registries.yaml"):
                        shown = (plan.registries_bytes(ctx) or (b"", b""))[1]
                    if shown is not None:
                        lines += [f"    | {ln}" for ln in shown.decode().splitlines()]
            wait = settings.ready_timeout
            lines.append(f"  wait until {node.name} is Ready (at most {wait:.0f}s)")
    lines.append(
        f"\n## 5. write {cluster.name}.kubeconfig (0600) pointing at "
        f"https://{ctx.api_host}:{plan.API_PORT}"
    )
    text = "\n".join(lines)
    return DeployReport(
        {n.name: NodeOutcome(n, state="planned") for n in cluster.nodes},
        bundle_id=verified.bundle_id,
        plan_text=text,
    )


__all__ = ["DeployReport", "DeploySettings", "deploy"]
