"""bundle lock / bundle create against the example upstream on loopback, as a user runs them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle.format import keys
from mk8s.bundle.format.manifest import Artifact, Lock, Release
from tests.support import bundles
from tests.support.upstream import ExampleUpstream

TAG = "v1.28.15+rke2r1"
RELEASE = Release(requested="v1.28.x", tag=TAG, arch=("amd64",))
BUNDLE = "mk8s-rke2-v1.28.15-rke2r1-linux-amd64.tar.zst"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ExampleUpstream]:
    with ExampleUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def big_upstream() -> Iterator[ExampleUpstream]:
    """Image tarballs of 3 MiB: big enough to be cut and resumed mid-file."""
    with ExampleUpstream(image_size=3 << 20) as up:
        yield up


@pytest.fixture
def env(upstream: ExampleUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a key pair, mk8s pointed at the example upstream."""
    upstream.faults.clear()
    upstream.clear_requests()
    for k, v in upstream.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MK8S_KEY_PASSPHRASE", "pw")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    keys.write_key_pair(keys.generate_private_key(), tmp_path / "mk8s", b"pw")
    return tmp_path


def _outputs(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith((".tar.zst", ".lock", ".part")))


def test_create_then_verify(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--key", "mk8s.key")
    assert r.code == 0, r.err
    assert f"RKE2 {TAG} linux/amd64" in r.out
    assert _outputs(env) == [BUNDLE, "mk8s.lock"]
    lock = Lock.from_bytes((env / "mk8s.lock").read_bytes())
    assert lock.kind == "mk8s.lock" and lock.release.requested == "v1.28.x"
    assert {a.name for a in lock.artifacts} == {
        "sha256sum-amd64.txt",
        "rke2.linux-amd64.tar.gz",
        "rke2-images.linux-amd64.tar.zst",
        "install.sh",
    }
    script = next(a for a in lock.artifacts if a.name == "install.sh")
    assert script.url and script.url.endswith("/v1.28.15%2Brke2r1/install.sh")
    r = run_cli("bundle", "verify", BUNDLE, "--key", "mk8s.pub")
    assert r.code == 0 and r.out.startswith(f"verified: RKE2 {TAG}")


def test_same_lock_same_key_gives_identical_bundle_and_no_downloads(
    run_cli,
    env: Path,
    upstream: ExampleUpstream,  # type: ignore[no-untyped-def]
) -> None:
    assert run_cli("bundle", "lock", "--rke2", "v1.28.15").code == 0
    # bundle lock downloads nothing large
    assert not upstream.requests_for("rke2-images")
    r1 = run_cli("bundle", "create", "--lock", "mk8s.lock", "--key", "mk8s.key", "-o", "a.tar.zst")
    assert r1.code == 0, r1.err
    upstream.clear_requests()
    r2 = run_cli("bundle", "create", "--lock", "mk8s.lock", "--key", "mk8s.key", "-o", "b.tar.zst")
    assert r2.code == 0, r2.err
    assert (env / "a.tar.zst").read_bytes() == (env / "b.tar.zst").read_bytes()
    assert "0 downloaded" in r2.out
    assert not [r for r in upstream.requests if "/releases/download/" in r.path]


def test_drift_against_a_lock_is_an_alarm(run_cli, env: Path, upstream: ExampleUpstream) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("bundle", "lock", "--rke2", "v1.28.14").code == 0
    lock_before = (env / "mk8s.lock").read_bytes()
    pinned = next(
        a for a in Lock.from_bytes(lock_before).artifacts if a.name == "rke2.linux-amd64.tar.gz"
    )
    upstream.drift("v1.28.14+rke2r1", "rke2.linux-amd64.tar.gz")
    r = run_cli(
        "bundle",
        "create",
        "--lock",
        "mk8s.lock",
        "--key",
        "mk8s.key",
        "--cache",
        str(env / "fresh-cache"),
    )
    assert r.code == 3, r.err
    # Drift re-publishes the tarball and its checksum file; downloads run in parallel,
    # so either may be the one reported (a race, on purpose). Look only at the error
    # line: stderr also has "fetched NAME" progress lines, printed when the last byte
    # arrives and before the hash is checked, so they may name either file too.
    errors = [ln for ln in r.err.splitlines() if ln.startswith("mk8s: error:")]
    assert len(errors) == 1 and r.err.strip().splitlines()[-1] == errors[0], r.err
    error = errors[0]
    pins = {a.name: a.sha256 for a in Lock.from_bytes(lock_before).artifacts}
    named = [n for n in ("rke2.linux-amd64.tar.gz", "sha256sum-amd64.txt") if f"{n} from" in error]
    assert len(named) == 1, error
    drifted = named[0]
    # The message names the pinned hash. A drifted file of another size is cut off
    # before it is read (hardening), so only a same-size drift can name the new hash;
    # a bigger one names both sizes instead.
    assert pins[drifted] in error
    offered = upstream.asset_sha256("v1.28.14+rke2r1", drifted)
    if offered in error:
        assert set(re.findall(r"\b[0-9a-f]{64}\b", error)) == {pins[drifted], offered}
    else:
        assert "bytes" in error and set(re.findall(r"\b[0-9a-f]{64}\b", error)) == {pins[drifted]}
    if drifted == "rke2.linux-amd64.tar.gz":
        assert pinned.sha256 in error
    assert _outputs(env) == ["mk8s.lock"] and (env / "mk8s.lock").read_bytes() == lock_before


@pytest.mark.parametrize(
    "fault, code, message",
    [
        ("corrupt", 3, "rke2-images.linux-amd64.tar.zst"),
        ("omit", 1, "no checksum for rke2-images.linux-amd64.tar.zst"),
        ("404", 1, "404"),
        ("not_json", 1, "not JSON|JSON"),
    ],
)
def test_upstream_faults_leave_nothing(
    run_cli,
    env: Path,
    upstream: ExampleUpstream,  # type: ignore[no-untyped-def]
    fault: str,
    code: int,
    message: str,
) -> None:
    name = "rke2-images.linux-amd64.tar.zst"
    if fault == "corrupt":
        upstream.faults.corrupt_asset(name)
    elif fault == "omit":
        upstream.faults.omit_checksum(name)
    elif fault == "404":
        upstream.faults.not_found(name)
    else:
        upstream.faults.not_json(2)
    r = run_cli("bundle", "create", "--rke2", "v1.28.13", "--key", "mk8s.key")
    assert r.code == code, r.err
    errors = [ln for ln in r.err.splitlines() if ln.startswith("mk8s: error:")]
    assert len(errors) == 1 and r.err.strip().splitlines()[-1] == errors[0]
    # The error line itself, not the "fetched NAME" progress lines around it, which
    # name files too (in an order that depends on the parallel downloads).
    assert re.search(message, errors[0]), r.err
    assert _outputs(env) == []
    parts = list((env / "xdg-cache").rglob("*.part")) if (env / "xdg-cache").exists() else []
    assert parts == []


def test_transient_failures_are_retried_and_resumed(
    run_cli,
    env: Path,  # type: ignore[no-untyped-def]
    big_upstream: ExampleUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = big_upstream
    for k, v in upstream.env.items():
        monkeypatch.setenv(k, v)
    name = "rke2-images.linux-amd64.tar.zst"
    upstream.faults.fail_times(name, 1, 500)
    upstream.faults.cut_once(name, (2 << 20) + 1234)
    r = run_cli("bundle", "create", "--rke2", "v1.28.12", "--key", "mk8s.key")
    assert r.code == 0, r.err
    ranges = [q.header("Range") for q in upstream.requests_for(name) if q.header("Range")]
    assert ranges, "the cut download was not resumed with Range"
    assert (
        run_cli(
            "bundle", "verify", "mk8s-rke2-v1.28.12-rke2r1-linux-amd64.tar.zst", "--key", "mk8s.pub"
        ).code
        == 0
    )


def test_token_is_sent_as_bearer(
    run_cli,
    env: Path,
    upstream: ExampleUpstream,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_example")
    assert run_cli("bundle", "lock", "--rke2", "v1.28.x").code == 0
    api = [q for q in upstream.requests if "/api/" in q.path]
    assert api and all(q.header("Authorization") == "Bearer ghp_example" for q in api)


def test_spec_matching_nothing_exits_2_with_nearest(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("bundle", "create", "--rke2", "v1.28.99", "--key", "mk8s.key")
    assert r.code == 2 and "nearest" in r.err and "v1.28.15+rke2r1" in r.err
    assert _outputs(env) == []


def test_cni_and_groups(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_cli(
        "bundle",
        "lock",
        "--rke2",
        "v1.28.x",
        "--cni",
        "cilium",
        "--images-group",
        "multus",
        "--arch",
        "amd64,arm64",
    )
    assert r.code == 0, r.err
    names = {a.name for a in Lock.from_bytes((env / "mk8s.lock").read_bytes()).artifacts}
    for arch in ("amd64", "arm64"):
        assert {
            f"rke2-images-core.linux-{arch}.tar.zst",
            f"rke2-images-cilium.linux-{arch}.tar.zst",
            f"rke2-images-multus.linux-{arch}.tar.zst",
        } <= names
        assert f"rke2-images.linux-{arch}.tar.zst" not in names
    r = run_cli("bundle", "lock", "--rke2", "v1.28.x", "--images-group", "nosuch")
    assert r.code == 2 and "multus" in r.err  # lists the groups it has


def test_signing_is_required_unless_unsigned(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("bundle", "create", "--rke2", "v1.28.x")
    assert r.code == 2 and "--key" in r.err
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--unsigned")
    assert r.code == 0 and "UNSIGNED" in r.err
    assert run_cli("bundle", "verify", BUNDLE, "--key", "mk8s.pub").code == 3
    assert run_cli("bundle", "verify", BUNDLE, "--allow-unsigned").code == 0


def test_own_files_are_pinned(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    extra = env / "policy.rpm"
    extra.write_bytes(b"rpm payload")
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--key", "mk8s.key", "--file", str(extra))
    assert r.code == 0, r.err
    lock = Lock.from_bytes((env / "mk8s.lock").read_bytes())
    assert any(a.path == "artifacts/files/policy.rpm" for a in lock.artifacts)
    extra.write_bytes(b"tampered payload")
    r = run_cli("bundle", "create", "--lock", "mk8s.lock", "--key", "mk8s.key", "-o", "x.tar.zst")
    assert r.code == 3 and "policy.rpm" in r.err
    assert not (env / "x.tar.zst").exists()


def test_full_disk_leaves_nothing(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = env / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], check=True)
    try:
        r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--key", "mk8s.key", "-o", str(mnt))
        assert r.code == 1 and "no space left" in r.err, r.err
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_sigint_leaves_no_bundle_or_lock(
    env: Path, big_upstream: ExampleUpstream, sig: signal.Signals
) -> None:
    upstream = big_upstream
    upstream.faults.clear()
    upstream.clear_requests()
    upstream.faults.stall_after_first_chunk("rke2-images.linux-amd64.tar.zst", 30)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mk8s",
            "bundle",
            "create",
            "--rke2",
            "v1.28.x",
            "--key",
            "mk8s.key",
        ],
        cwd=env,
        env={**os.environ, **upstream.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
        "rke2-images" in q.path for q in upstream.requests if q.server == "objects"
    ):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)  # a service manager or a CI timeout stops mk8s with SIGTERM
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert _outputs(env) == []
    assert not list((env / "xdg-cache").rglob("*.part"))


def test_inspect_json_of_created_bundle(run_cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("bundle", "create", "--rke2", "v1.28.x", "--key", "mk8s.key").code == 0
    r = run_cli("bundle", "inspect", BUNDLE, "--json")
    data = json.loads(r.out)
    assert data["manifest"]["createdBy"].startswith("mk8s ")


@pytest.mark.parametrize(
    "extra",
    [
        ("--arch", "arm64"),
        ("--cni", "cilium"),
        ("--images-group", "multus"),
        ("--allow-prerelease",),
        ("--arch", "amd64"),  # even the default, given on purpose, is refused
    ],
)
def test_lock_refuses_selection_flags(  # type: ignore[no-untyped-def]
    run_cli, env: Path, upstream: ExampleUpstream, extra: tuple[str, ...]
) -> None:
    # A valid lock written without the network: the refusal comes before the lock is
    # read and before any download, so no `bundle lock` run is needed to reach it.
    lock = bundles.lock_for(bundles.default_files(env / "files"), bundles.KINDS)
    (env / "mk8s.lock").write_bytes(lock.to_bytes())
    r = run_cli("bundle", "create", "--lock", "mk8s.lock", "--key", "mk8s.key", *extra)
    assert r.code == 2, r.err
    assert extra[0] in r.err and "cannot be combined with --lock" in r.err
    assert _outputs(env) == ["mk8s.lock"]
    assert upstream.requests == []


# -- hostile input: URLs, lock files, --file names, overwrites ---------------------------
@pytest.mark.parametrize(
    "url", ["http://[::1", "http://h:99999/", "http:///x", "https://h/\x00", "https://h:x/"]
)
def test_bad_urls_on_the_command_line_exit_2(run_cli, tmp_path: Path, url: str) -> None:  # type: ignore[no-untyped-def]
    r = run_cli(
        "bundle", "lock", "--rke2", "v1.28.x", "--github-api-url", url, "-o", str(tmp_path / "l")
    )
    assert r.code == 2, r.err
    assert "internal error" not in r.err


@pytest.mark.slow
def test_lock_and_manifest_never_hold_credentials(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    with ExampleUpstream() as up:
        for k, v in up.env.items():
            monkeypatch.setenv(k, v.replace("http://", "http://mirroruser:hunter2@"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("MK8S_KEY_PASSPHRASE", "pw")
        monkeypatch.chdir(tmp_path)
        keys.write_key_pair(keys.generate_private_key(), tmp_path / "mk8s", b"pw")
        r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--key", "mk8s.key")
        assert r.code == 0, r.err
        sent = [q.header("Authorization") for q in up.requests if q.server == "main"]
        want = "Basic " + base64.b64encode(b"mirroruser:hunter2").decode()
        assert sent and all(h == want for h in sent)
        # Then --lock: the URLs in the lock have no credentials; the env supplies them.
        up.clear_requests()
        r2 = run_cli(
            "bundle",
            "create",
            "--lock",
            "mk8s.lock",
            "--key",
            "mk8s.key",
            "-o",
            "again.tar.zst",
            "--cache",
            str(tmp_path / "cache2"),
        )
        assert r2.code == 0, r2.err
        assert all(q.header("Authorization") == want for q in up.requests if q.server == "main")
    lock = (tmp_path / "mk8s.lock").read_text()
    assert "hunter2" not in lock and "mirroruser" not in lock
    bundle = next(tmp_path.glob("mk8s-rke2-*.tar.zst"))
    r3 = run_cli("bundle", "inspect", str(bundle), "--json")
    assert "hunter2" not in r3.out and "mirroruser" not in r3.out
    assert "hunter2" not in r.out + r.err + r2.out + r2.err


def test_lock_file_must_be_a_regular_file(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "lock"
    os.mkfifo(fifo)
    r = run_cli("bundle", "create", "--lock", str(fifo), "--unsigned")
    assert r.code == 2 and "FIFO" in r.err
    r = run_cli("bundle", "create", "--lock", "/dev/zero", "--unsigned")
    assert r.code == 2 and "device" in r.err


def test_a_local_file_in_a_lock_is_no_hash_oracle(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("the operator's secret\n")
    real_sha = hashlib.sha256(secret_file.read_bytes()).hexdigest()
    art = Artifact(
        name="secret.txt",
        kind="file",
        path="artifacts/files/secret.txt",
        size=5,
        sha256="1" * 64,
        url=secret_file.as_uri(),
    )
    p = tmp_path / "mk8s.lock"
    lock = Lock(release=RELEASE, resolved_at=bundles.RESOLVED_AT, artifacts=(art,))
    p.write_bytes(lock.to_bytes())
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned", "-o", str(tmp_path / "b"))
    assert r.code == 3, r.err
    assert "differs from the lock" in r.err
    assert real_sha not in r.err + r.out


# --------------------------------------------------------------------- --file names
@pytest.mark.parametrize("name", [".hidden", "a b.txt", "x\x1b[2J", "é.rpm", "a" * 90])
def test_file_names_are_checked_before_any_network(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / name
    f.write_text("x")
    monkeypatch.setenv("MK8S_GITHUB_API_URL", "http://127.0.0.1:9")
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--unsigned", "--file", str(f))
    assert r.code == 2, r.err
    assert "--file" in r.err and "\x1b" not in r.err
    assert "cannot reach" not in r.err


def test_file_must_be_regular_and_names_unique(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.rpm").write_text("1")
    (tmp_path / "b" / "x.rpm").write_text("2")
    r = run_cli(
        "bundle",
        "create",
        "--rke2",
        "v1.28.x",
        "--unsigned",
        "--file",
        str(tmp_path / "a" / "x.rpm"),
        "--file",
        str(tmp_path / "b" / "x.rpm"),
    )
    assert r.code == 2 and "same name" in r.err
    fifo = tmp_path / "pipe.rpm"
    os.mkfifo(fifo)
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--unsigned", "--file", str(fifo))
    assert r.code == 2 and "FIFO" in r.err


# ------------------------------------------------------------ files mk8s writes
def test_create_refuses_to_overwrite_without_force(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _, lock = bundles.build(tmp_path, None)
    p = tmp_path / "mk8s.lock"
    p.write_bytes(lock.as_lock().to_bytes())
    out = tmp_path / "out.tar.zst"
    out.write_bytes(b"precious")
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned", "-o", str(out))
    assert r.code == 1 and "already exists" in r.err and "--force" in r.err
    assert out.read_bytes() == b"precious"
