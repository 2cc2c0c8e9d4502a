"""The second hostile-input corpus: what comes over the network.

Every case of :mod:`tests.support.hostile_registry` and
:mod:`tests.support.hostile_upstream` runs the real CLI (``mk8s bundle
lock --image`` against the hostile registry, ``bundle lock`` / ``bundle create``
against the hostile release server) in a subprocess held to 2 GiB of address space,
64 MiB per written file (more would be filling the disk) and 30 s, and must keep every rule:

* the documented exit class (1 a misbehaving server, 3 bytes that are not what their
  digest or pin says, 0 where the answer was odd but sound);
* no traceback and no "internal error";
* nothing written outside the output path, the cache and the state directory;
* no credential in stdout, stderr, the debug log, the lock or the cache;
* nothing spoofable on the terminal: one ``mk8s: error:`` line, no raw escape.

The cases run in parallel (a module fixture) so the corpus takes seconds; each case is
still its own test. Deadlines are shortened for the suite through the documented
``MK8S_NET_DEADLINE`` / ``MK8S_NET_MIN_RATE`` variables.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hostile_registry import REGISTRY_CASES, HostileRegistry
from tests.support.hostile_upstream import UPSTREAM_CASES, HostileUpstream
from tests.support.paths import ROOT

LIMIT_SECONDS = 30
MEMORY = 2 << 30
FILE_SIZE = 64 << 20
TEST_NET_ENV = {"MK8S_NET_DEADLINE": "2", "MK8S_NET_MIN_RATE": str(1 << 20)}


@dataclass
class Run:
    case: str
    code: int
    out: str
    err: str
    seconds: float
    root: Path
    debug_log: str


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))


def _run(case: str, root: Path, args: list[str], env: dict[str, str]) -> Run:
    for d in ("work", "home", "out", "cache", "state"):
        (root / d).mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    full = {
        **base,
        "HOME": str(root / "home"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "NO_PROXY": "*",
        "PYTHONPATH": str(ROOT),
        **TEST_NET_ENV,
        **env,
    }
    cmd = [sys.executable, "-m", "mk8s", "-v", "bundle", *args, "--cache", str(root / "cache")]
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            cmd,
            cwd=root / "work",
            env=full,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=LIMIT_SECONDS + 10,
            preexec_fn=_limits,
        )
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = -999, str(e.stdout or ""), f"timed out: {e.stderr!r}"
    seconds = time.monotonic() - t0
    log = root / "state" / "mk8s" / "debug.log"
    return Run(case, code, out, err, seconds, root, log.read_text() if log.exists() else "")


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HostileRegistry, HostileUpstream]]:
    with HostileRegistry(tmp_path_factory.mktemp("hostile")) as reg, HostileUpstream() as up:
        yield reg, up


@pytest.fixture(scope="module")
def runs(
    servers: tuple[HostileRegistry, HostileUpstream], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    reg, up = servers
    base = tmp_path_factory.mktemp("runs")
    jobs: list[tuple[str, Path, list[str], dict[str, str]]] = []
    for case in REGISTRY_CASES:
        root = base / case
        args = ["lock", "--rke2", "v1.28.15", "-o", str(root / "out" / "mk8s.lock")]
        args += ["--image", reg.ref(case), "--registry-auth-file", str(reg.auth_file)]
        env = {**up.env("ok"), "REQUESTS_CA_BUNDLE": str(reg.ca_file)}
        jobs.append((case, root, args, env))
    for case, (_, command, _) in UPSTREAM_CASES.items():
        root = base / case
        if command == "lock":
            args = ["lock", "--rke2", "v1.28.15", "-o", str(root / "out" / "mk8s.lock")]
        else:
            args = [
                "create",
                "--rke2",
                "v1.28.15",
                "--unsigned",
                "-o",
                str(root / "out" / "b.tar.zst"),
            ]
        jobs.append((case, root, args, up.env(case)))
    with ThreadPoolExecutor(max_workers=6) as pool:
        done = pool.map(lambda j: _run(*j), jobs)
        return {r.case: r for r in done}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _check_rules(run: Run, want: int, secrets: list[str]) -> None:
    label = f"{run.case}: exit {run.code} after {run.seconds:.1f}s; stderr: {run.err[-2000:]}"
    assert run.code == want, label
    assert run.seconds < LIMIT_SECONDS, label
    assert "Traceback" not in run.err + run.out, label
    assert "internal error" not in run.err, label
    assert "File too large" not in run.err, f"{run.case}: would have filled the disk; {label}"
    stray = {f for f in _files(run.root) if f.split("/")[0] not in ("out", "cache", "state")}
    assert not stray, f"{run.case}: wrote outside the output path: {sorted(stray)}"
    written = [p for p in run.root.rglob("*") if p.is_file() and p.stat().st_size < 64 << 20]
    for secret in secrets:
        assert secret not in run.out + run.err, f"{run.case}: a secret on the terminal"
        assert secret not in run.debug_log, f"{run.case}: a secret in the debug log"
        for p in written:
            assert secret.encode() not in p.read_bytes(), f"{run.case}: a secret in {p}"
    assert "\x1b" not in run.err + run.out and "\r" not in run.err, label
    if want:
        errors = [ln for ln in run.err.splitlines() if ln.startswith("mk8s: error:")]
        assert len(errors) == 1, label
        for line in run.err.splitlines():  # the server's text stays inside mk8s's line
            if "VERIFIED" in line or "hunter2" in line:
                assert line.startswith("mk8s: error:"), f"{run.case}: forged line {line!r}"


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_hostile_registry_case(
    case: str, runs: dict[str, Run], servers: tuple[HostileRegistry, HostileUpstream]
) -> None:
    reg, _ = servers
    _check_rules(runs[case], REGISTRY_CASES[case][1], reg.secrets)


@pytest.mark.parametrize("case", sorted(UPSTREAM_CASES))
def test_hostile_release_server_case(case: str, runs: dict[str, Run]) -> None:
    _check_rules(runs[case], UPSTREAM_CASES[case][2], [])


def test_fanout_fetches_each_distinct_manifest_once(
    runs: dict[str, Run], servers: tuple[HostileRegistry, HostileUpstream]
) -> None:
    reg, _ = servers
    assert runs["fanout"].code == 0, runs["fanout"].err
    gets = {p: n for p, n in reg.server.hits.items() if p.startswith("/v2/fanout/manifests/")}
    assert gets and max(gets.values()) == 1, gets


def test_chain_fetches_only_up_to_the_depth_cap(
    runs: dict[str, Run], servers: tuple[HostileRegistry, HostileUpstream]
) -> None:
    reg, _ = servers
    assert runs["chain"].code == 1
    assert "nested deeper than" in runs["chain"].err
    gets = sum(n for p, n in reg.server.hits.items() if p.startswith("/v2/chain/manifests/"))
    assert gets <= 10, gets


# -- a registry address the user gave -------------------------------------------------------
@pytest.mark.parametrize("how", ["--image", "--images-file"])
def test_registry_port_out_of_range_is_invalid_input_before_any_download(
    how: str, servers: tuple[HostileRegistry, HostileUpstream], tmp_path: Path
) -> None:
    _, up = servers
    case = f"port-{how.strip('-')}"
    ref = "127.0.0.1:99999/team/app:v1"
    args = ["lock", "--rke2", "v1.28.15", "-o", str(tmp_path / "out" / "mk8s.lock")]
    if how == "--image":
        args += ["--image", ref]
    else:
        (tmp_path / "images.txt").write_text(f"# ours\n{ref}\n")
        args += ["--images-file", str(tmp_path / "images.txt")]
    run = _run(case, tmp_path, args, up.env(case))
    assert run.code == 2, run.err
    assert "port 99999" in run.err and "1-65535" in run.err, run.err
    assert "internal error" not in run.err and "Traceback" not in run.err
    assert not [p for p in up.server.hits if p.startswith(f"/{case}/")], "fetched first"
    assert not (tmp_path / "out" / "mk8s.lock").exists()


CLUSTER = """\
apiVersion: mk8s/v1alpha1
kind: Cluster
metadata:
  name: lab
spec:
  images:
    distribution: registry
    registry:
      url: {url}
  nodes:
    - address: 10.0.0.11
      role: server
"""


def _cluster_error(tmp_path: Path, url: str) -> str:
    from mk8s.deploy.cluster import load_cluster
    from mk8s.errors import ClusterFileError

    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.format(url=url))
    with pytest.raises(ClusterFileError) as e:
        load_cluster(path)
    assert e.value.exit_code == 2
    return str(e.value)


def test_spec_images_registry_port_out_of_range_is_refused(tmp_path: Path) -> None:
    message = _cluster_error(tmp_path, "https://reg.lan:99999")
    assert "spec.images.registry.url" in message and "port 99999" in message, message


def test_a_schema_error_never_echoes_a_urls_credentials(tmp_path: Path) -> None:
    message = _cluster_error(tmp_path, "https://robot:s3cr3t-Pa55@reg.lan:5000")
    assert "spec.images.registry.url" in message, message
    assert "s3cr3t-Pa55" not in message and "robot:" not in message, message
