"""Hostile input never runs, crashes or leaks (issue: hardening).

Every class of the hostile-input review has a test here that needs no root: quoting,
YAML bombs, known_hosts markers, credentials in URLs, oversized downloads, bad names,
control characters, unusable inputs (FIFOs, devices, huge files), files written in
shared places, secret masking and the smaller correctness items. The injection test
on real test hosts is in tests/test_hardening_hosts.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import paramiko
import pytest

from mk8s.bundle import fetch, keys, upstream
from mk8s.bundle.manifest import Artifact, Lock, Release
from mk8s.deploy.builders import facts, plan
from mk8s.deploy.cluster import load_cluster
from mk8s.deploy.command import Command, Secret
from mk8s.deploy.state import read_token_file
from mk8s.deploy.transport import check_host_key
from mk8s.errors import ChecksumMismatch, ClusterFileError, HostKeyError, InputError
from mk8s.ui import safe
from tests.support import bundles
from tests.support.upstream import ExampleUpstream

CliRun = Callable[..., object]


# -------------------------------------------------------------------- quoting class
@pytest.mark.parametrize(
    "template",
    [
        'echo "x {v}"',
        "echo 'x {v}'",
        'echo "$(cat "$f") {v}"',
        'a="$(printf \'%s\' "{v}")"',
    ],
)
def test_a_field_inside_quotes_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="inside a quoted string"):
        Command.script(template, {"v": "x"})


@pytest.mark.parametrize(
    "template",
    ["printf %s {v}", 'printf %s "$(printf %s {v})"', 'x={v}; printf %s "$x"'],
)
def test_a_field_as_its_own_word_stays_data(template: str, tmp_path: Path) -> None:
    hostile = "$(touch canary)`touch canary`'\"; touch canary"
    cmd = Command.script(template, {"v": hostile})
    r = subprocess.run(["sh", "-c", cmd.render()], cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout == hostile
    assert not (tmp_path / "canary").exists()


def _run_sh(cmd: Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", cmd.render()], cwd=cwd, capture_output=True, text=True, timeout=60
    )


HOSTILE_DIR = "s$(touch${IFS}canary)`touch${IFS}canary`$(touch${IFS}..${IFS}canary)"


def _canaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("canary")]


def test_fact_gathering_never_runs_a_hostile_staging_dir(tmp_path: Path) -> None:
    """The original injection: a staging path with $(...) and backticks, holding a file
    (the re-run case), gathered by the real script under sh."""
    staging = tmp_path / "srv" / HOSTILE_DIR
    (staging / "files").mkdir(parents=True)
    (staging / "install.sh").write_text("#!/bin/sh\n")
    (staging / "rke2.tar.gz.part").write_bytes(b"x" * 10)
    r = _run_sh(facts.privileged(str(staging)), tmp_path)
    assert r.returncode == 0, r.stderr
    assert _canaries(tmp_path) == []
    parsed = facts.parse("uname_m=x86_64\nsudo=root\n", r.stdout)
    assert parsed.hashes.get(f"{staging}/install.sh")
    assert parsed.partial == {f"{staging}/rke2.tar.gz.part": 10}


def test_whole_gather_command_keeps_values_as_data(tmp_path: Path) -> None:
    staging = tmp_path / HOSTILE_DIR
    staging.mkdir()
    (staging / "a").write_text("a")
    r = _run_sh(facts.gather(str(staging)), tmp_path)
    assert r.returncode == 0, r.stderr
    assert _canaries(tmp_path) == []
    assert f"{staging}/a" in r.stdout


# ------------------------------------------------------------------- cluster.yaml
def _cluster(tmp_path: Path, body: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


BASE = """apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: demo}}
spec:
{rke2}  nodes:
{nodes}{options}"""


def cluster_text(
    nodes: str = "    - {address: 10.0.0.1, name: cp1, role: server}\n",
    rke2: str = "",
    options: str = "",
) -> str:
    return BASE.format(rke2=rke2, nodes=nodes, options=options)


@pytest.mark.parametrize(
    "staging",
    [
        "/var/lib/$(touch /tmp/x)",
        "/var/lib/`id`",
        "/var/lib/a b",
        "/var/lib/../etc",
        "/var/lib/x;rm",
        "relative/dir",
        '"/var/lib/mk8s\\n"',
        "/" + "a" * 300,
    ],
)
def test_hostile_staging_dir_is_refused(tmp_path: Path, staging: str) -> None:
    p = _cluster(tmp_path, cluster_text(options=f"  options: {{stagingDir: {staging!s}}}\n"))
    with pytest.raises(ClusterFileError, match="stagingDir|not valid YAML"):
        load_cluster(p, check_files=False)


def test_plain_staging_dirs_are_accepted(tmp_path: Path) -> None:
    for ok in ("/var/lib/mk8s", "/srv/mk8s-stage_2/", "/opt/a.b"):
        p = _cluster(tmp_path, cluster_text(options=f"  options: {{stagingDir: {ok}}}\n"))
        assert load_cluster(p, check_files=False).options.staging_dir == ok


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    body = cluster_text(rke2="  rke2:\n    config:\n" + "".join(f"      {ln}\n" for ln in lines))
    p = _cluster(tmp_path, body)
    start = time.monotonic()
    with pytest.raises(ClusterFileError, match="expands to more than"):
        load_cluster(p, check_files=False)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("depth", [100, 20_000])
def test_deep_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    body = cluster_text(rke2="  rke2:\n    config: {x: " + "[" * depth + "]" * depth + "}\n")
    with pytest.raises(ClusterFileError, match="nested"):
        load_cluster(_cluster(tmp_path, body), check_files=False)


def test_huge_cluster_file_is_refused(tmp_path: Path) -> None:
    p = _cluster(tmp_path, cluster_text() + "#" * (2 << 20) + "\n")
    with pytest.raises(ClusterFileError, match="larger than"):
        load_cluster(p, check_files=False)


def test_fifo_and_device_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ClusterFileError, match="a FIFO, not a regular file"):
        load_cluster(fifo)
    with pytest.raises(ClusterFileError, match="a device, not a regular file"):
        load_cluster(Path("/dev/zero"))
    with pytest.raises(ClusterFileError, match="directory"):
        load_cluster(tmp_path)


@pytest.mark.parametrize(
    "nodes,match",
    [
        (
            '    - {address: 10.0.0.1, name: "cp1\\n", role: server}\n',
            "does not match",
        ),
        (
            "    - {address: 10.0.0.1, name: cp1, role: server}\n"
            "    - {address: 10.0.0.2, name: CP1, role: agent}\n",
            "already used",
        ),
        (
            "    - {address: Node.Example, role: server}\n"
            "    - {address: node.example, name: b, role: agent}\n",
            "already used",
        ),
        (
            '    - {address: "10.0.0.1\\n", role: server}\n',
            "does not match",
        ),
        (
            '    - {address: "$(id)", role: server}\n',
            "does not match",
        ),
    ],
)
def test_names_and_addresses_are_whole_and_case_insensitive(
    tmp_path: Path, nodes: str, match: str
) -> None:
    with pytest.raises(ClusterFileError, match=match):
        load_cluster(_cluster(tmp_path, cluster_text(nodes=nodes)), check_files=False)


def test_node_name_in_config_is_managed(tmp_path: Path) -> None:
    body = cluster_text(rke2="  rke2:\n    config: {node-name: other}\n")
    with pytest.raises(ClusterFileError, match="'node-name' is managed by mk8s"):
        load_cluster(_cluster(tmp_path, body), check_files=False)


def _ctx(tmp_path: Path, rke2: str) -> tuple[plan.Context, Path]:
    c = load_cluster(_cluster(tmp_path, cluster_text(rke2=rke2)), check_files=False)
    files = bundles.default_files(tmp_path / "f")
    manifest = bundles.lock_for(files, bundles.KINDS).as_manifest()
    return plan.Context(c, manifest, "0123456789abcdef", Secret("tok-123")), tmp_path


def test_a_string_san_is_one_san(tmp_path: Path) -> None:
    ctx, _ = _ctx(tmp_path, "  rke2:\n    tlsSan: k8s.example\n    config: {tls-san: lb.example}\n")
    assert ctx.cluster.rke2.tls_san == ("k8s.example",)
    config = plan.node_config(ctx, ctx.cluster.bootstrap)
    assert config["tls-san"] == ["lb.example", "k8s.example"]


def test_secret_looking_config_values_are_masked(tmp_path: Path) -> None:
    ctx, _ = _ctx(
        tmp_path,
        "  rke2:\n"
        "    config: {etcd-s3-secret-key: s3secret, etcd-s3-access-key: s3access,"
        " db-password: dbpw, agent-token-x: 1, nested: {my-token: deep}}\n"
        "    registries:\n"
        "      configs:\n"
        "        reg.example: {auth: {username: u, password: regpw, auth: dXA=}}\n",
    )
    real, masked = plan.config_bytes(ctx, ctx.cluster.bootstrap)
    for secret in (b"s3secret", b"s3access", b"dbpw", b"deep", b"tok-123"):
        assert secret in real and secret not in masked
    assert b"***" in masked
    regs = plan.registries_bytes(ctx)
    assert regs is not None
    assert b"regpw" in regs[0] and b"regpw" not in regs[1] and b"dXA=" not in regs[1]
    step = plan.install_step(ctx, ctx.cluster.bootstrap, _fresh())
    shown = "\n".join(c.display() for c in step.commands)
    assert "regpw" not in shown
    write = [c for c in step.commands if "registries" in c.description]
    assert write and isinstance(write[0].stdin, Secret)


def _fresh() -> facts.NodeFacts:
    return facts.NodeFacts(arch="amd64", uname_m="x86_64", os="", hostname="", root=True, sudo=True)


def test_token_file_first_line_is_the_token(tmp_path: Path) -> None:
    t = tmp_path / "token"
    t.write_text("  K10abc::server:s3cr3t  \n# a comment the operator kept\nsecond\n")
    assert read_token_file(t) == "K10abc::server:s3cr3t"
    t.write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_token_file(t)
    t.write_text("has space\n")
    with pytest.raises(InputError, match="spaces"):
        read_token_file(t)
    with pytest.raises(InputError, match="device"):
        read_token_file(Path("/dev/zero"))


# ---------------------------------------------------------------------- known_hosts
@pytest.fixture(scope="module")
def host_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def _kh(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "known_hosts"
    p.write_text(text)
    return p


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_revoked_key_is_refused_under_every_policy(
    tmp_path: Path, host_key: paramiko.PKey, policy: str
) -> None:
    entry = f"{host_key.get_name()} {host_key.get_base64()}"
    kh = _kh(tmp_path, f"10.0.0.9 {entry}\n@revoked * {entry}\n")
    with pytest.raises(HostKeyError, match="REVOKED"):
        check_host_key("10.0.0.9", 22, host_key, kh, policy)
    before = kh.read_text()
    kh2 = _kh(tmp_path, f"@revoked 10.0.0.9 {entry}\n")
    with pytest.raises(HostKeyError, match="REVOKED"):
        check_host_key("10.0.0.9", 22, host_key, kh2, policy)
    assert kh2.read_text() == f"@revoked 10.0.0.9 {entry}\n" and before


def test_negated_pattern_never_matches(tmp_path: Path, host_key: paramiko.PKey) -> None:
    entry = f"{host_key.get_name()} {host_key.get_base64()}"
    kh = _kh(tmp_path, f"!10.0.0.9 {entry}\n10.0.0.*,!10.0.0.9 {entry}\n")
    with pytest.raises(HostKeyError, match="is not in"):
        check_host_key("10.0.0.9", 22, host_key, kh, "strict")
    check_host_key("10.0.0.8", 22, host_key, kh, "strict")  # the wildcard matches
    with pytest.raises(HostKeyError, match="is not in"):
        check_host_key("10.0.1.8", 22, host_key, kh, "strict")


def test_known_hosts_fifo_is_an_error_not_a_hang(tmp_path: Path, host_key: paramiko.PKey) -> None:
    fifo = tmp_path / "kh"
    os.mkfifo(fifo)
    with pytest.raises(HostKeyError, match="FIFO"):
        check_host_key("10.0.0.9", 22, host_key, fifo, "strict")


# -------------------------------------------------------------- credentials in URLs
def test_credentials_are_taken_out_of_urls() -> None:
    s = upstream.UpstreamSettings(
        api_url="https://api.example",
        release_url="https://u%40x:p%3Ass@mirror.example:8443/rel/",
        raw_url="https://mirror.example:8443/raw",
    )
    assert s.release_url == "https://mirror.example:8443/rel"
    assert "p:ss" not in repr(s) and "p%3Ass" not in repr(s)
    want = "Basic " + base64.b64encode(b"u@x:p:ss").decode()
    assert s.auth_headers("https://mirror.example:8443/raw/x") == {"Authorization": want}
    assert s.auth_headers("https://other.example/x") == {}
    assert upstream.redact_url("https://a:b@h/p") == "https://h/p"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://h:99999/",
        "http://h:0/",
        "http:///path",
        "https://h/\x00",
        "https://h/a b",
        "ftp://h/",
        "",
        "https://h:port/",
    ],
)
def test_bad_urls_are_input_errors(url: str) -> None:
    with pytest.raises(InputError):
        upstream.UpstreamSettings(api_url=url)


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


def test_a_lock_with_credentials_is_refused(tmp_path: Path) -> None:
    art = _art(url="https://u:p@mirror.example/rke2.linux-amd64.tar.gz")
    with pytest.raises(ValueError, match="credentials"):
        _lock(art)


# ------------------------------------------------------------------ locks and manifests
def _art(**kw: object) -> Artifact:
    base: dict[str, object] = dict(
        name="rke2.linux-amd64.tar.gz",
        kind="rke2",
        path="artifacts/rke2.linux-amd64.tar.gz",
        size=1,
        sha256="0" * 64,
        url="https://example.invalid/x",
        arch="amd64",
    )
    base.update(kw)
    return Artifact(**base)  # type: ignore[arg-type]


def _lock(*arts: Artifact, resolved_at: str = "2026-01-02T03:04:05Z") -> Lock:
    return Lock(
        release=Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=("amd64",)),
        resolved_at=resolved_at,
        artifacts=arts,
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"path": "artifacts/."},
        {"name": ".", "path": "artifacts/."},
        {"name": "..", "path": "artifacts/.."},
        {"path": "artifacts/../x"},
        {"path": "/artifacts/x"},
        {"path": "artifacts/files/rke2.linux-amd64.tar.gz"},
        {"kind": "nonsense"},
        {"url": "file:///etc/shadow"},
        {"url": "gopher://h/x"},
        {"url": "https://h/\x1b[2J"},
        {"sha256": "G" * 64},
        {"size": -1},
    ],
)
def test_artifact_invariants(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _lock(_art(**kw))


@pytest.mark.parametrize("when", ["2024-13-45T99:99:99Z", "2024-02-30T00:00:00Z"])
def test_dates_that_match_the_pattern_but_are_not_dates(tmp_path: Path, run_cli, when: str) -> None:  # type: ignore[no-untyped-def]
    good = _lock(_art()).to_json()
    good["resolvedAt"] = when
    p = tmp_path / "mk8s.lock"
    p.write_text(json.dumps(good))
    with pytest.raises(InputError, match="not a UTC time"):
        Lock.from_bytes(p.read_bytes())
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned", "-o", str(tmp_path / "b"))
    assert r.code == 2 and "resolvedAt" in r.err and "internal error" not in r.err


def test_lock_file_must_be_a_regular_file(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "lock"
    os.mkfifo(fifo)
    r = run_cli("bundle", "create", "--lock", str(fifo), "--unsigned")
    assert r.code == 2 and "FIFO" in r.err
    r = run_cli("bundle", "create", "--lock", "/dev/zero", "--unsigned")
    assert r.code == 2 and "device" in r.err


def test_key_file_must_be_a_regular_small_file(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, None)
    r = run_cli("bundle", "verify", str(written.path), "--key", "/dev/zero")
    assert r.code == 2 and "device" in r.err
    big = tmp_path / "big.pub"
    big.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * (1 << 20))
    r = run_cli("bundle", "verify", str(written.path), "--key", str(big))
    assert r.code == 2 and "larger than" in r.err
    fifo = tmp_path / "bundle-fifo"
    os.mkfifo(fifo)
    r = run_cli("bundle", "verify", str(fifo), "--allow-unsigned")
    assert r.code == 2 and "FIFO" in r.err


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
    p.write_bytes(_lock(art).to_bytes())
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


# -------------------------------------------------------------- oversized downloads
class _Liar(BaseHTTPRequestHandler):
    """Serves more bytes than pinned, with or without a Content-Length."""

    sent: ClassVar[list[int]] = []

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        chunked = self.path.endswith("chunked")
        self.send_response(200)
        total = 0
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(4096):  # up to 256 MiB if nobody stops reading
                    block = b"z" * 65536
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    total += len(block)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        else:
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(4096):
                    self.wfile.write(b"z" * 65536)
                    total += 65536
            except OSError:
                pass
        type(self).sent.append(total)


@pytest.fixture
def liar() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path", ["/with-length", "/chunked"])
def test_download_is_cut_off_past_its_pinned_size(tmp_path: Path, liar: str, path: str) -> None:
    settings = upstream.UpstreamSettings(api_url=liar, release_url=liar, raw_url=liar, retries=0)
    item = fetch.FetchItem("x.tar.gz", liar + path, sha256="a" * 64, size=100_000)
    start = time.monotonic()
    with pytest.raises(ChecksumMismatch, match="expected 100000 bytes"):
        fetch.fetch([item], settings, tmp_path / "cache", jobs=1)
    assert time.monotonic() - start < 20
    assert not list((tmp_path / "cache").rglob("*.part"))
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= 100_000 for p in cached)


# ------------------------------------------------------------- control characters
def test_safe_escapes_terminal_controls() -> None:
    assert safe("a\x1b[2Jb\rc\nd\u202ee\x9b") == "a\\x1b[2Jb\\rc\\nd\\u202ee\\x9b"
    assert safe("ok\nline", keep_newlines=True) == "ok\nline"


def test_inspect_escapes_an_unverified_manifest(tmp_path: Path, run_cli, ed_key) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, ed_key)
    members = bundles.read_members(written.path)
    manifest = json.loads(members[0].data)
    manifest["rke2"]["requested"] = "\x1b[2J\x1b[HVERIFIED\r"
    members[0] = bundles.Member(members[0].name, json.dumps(manifest).encode())
    bad = bundles.craft(tmp_path / "evil.tar.zst", bundles.sign_members(members, ed_key))
    r = run_cli("bundle", "inspect", str(bad))
    assert r.code == 0, r.err
    assert "\x1b" not in r.out and "\r" not in r.out and "\\x1b[2J" in r.out


def test_errors_escape_control_characters(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "x\x1b[31m.lock"
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned")
    assert r.code == 2 and "\x1b" not in r.err and "\\x1b[31m" in r.err


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


def test_failed_extract_leaves_no_directory_it_created(tmp_path: Path, run_cli, ed_key) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, ed_key)
    data = bytearray(written.path.read_bytes())
    data[-100] ^= 1
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bytes(data))
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    dest = tmp_path / "new" / "deeper" / "dir"
    r = run_cli("bundle", "extract", str(bad), "--key", str(pub), "-d", str(dest))
    assert r.code == 3, r.err
    assert not (tmp_path / "new").exists()


def test_debug_log_never_follows_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mk8s.cli import _write_debug_log

    target = tmp_path / "victim"
    target.write_text("keep\n")
    state = tmp_path / "state"
    (state / "mk8s").mkdir(parents=True)
    (state / "mk8s" / "debug.log").symlink_to(target)
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    where = _write_debug_log(RuntimeError("boom"))
    assert target.read_text() == "keep\n"
    assert where is not None and where.parent == tmp_path / "tmp"
    assert stat.S_IMODE(where.stat().st_mode) == 0o600


def test_atomic_write_never_follows_a_symlink(tmp_path: Path) -> None:
    from mk8s.files import atomic_write

    target = tmp_path / "victim"
    target.write_text("keep")
    out = tmp_path / "out"
    atomic_write(out, b"new", mode=0o600)
    assert out.read_bytes() == b"new" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert target.read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------- deploy front door
def _cluster_for_dry_run(tmp_path: Path, extra: str = "") -> Path:
    return _cluster(
        tmp_path,
        cluster_text(
            nodes="    - {address: 10.0.0.1, name: cp1, role: server}\n"
            "    - {address: 10.0.0.2, name: w1, role: agent}\n",
            rke2=extra,
        ),
        "cluster.yaml",
    )


def test_deploy_allow_unsigned_warns_loudly(tmp_path: Path, run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    written, _ = bundles.build(tmp_path, None)
    c = _cluster_for_dry_run(tmp_path)
    r = run_cli(
        "deploy", "-f", str(c), "--bundle", str(written.path), "--allow-unsigned", "--dry-run"
    )
    assert r.code == 0, r.err
    assert "THIS BUNDLE IS UNSIGNED" in r.err


def test_deploy_refuses_a_signed_but_incomplete_bundle(
    tmp_path: Path, run_cli, ed_key, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    files = bundles.make_files(tmp_path / "f", {"install.sh": 10, "empty.txt": 3})
    written, _ = bundles.build(tmp_path, ed_key, files=files)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    c = _cluster_for_dry_run(tmp_path)
    for extra in ((), ("--dry-run",)):
        r = run_cli(
            "deploy", "-f", str(c), "--bundle", str(written.path), "--key", str(pub), *extra
        )
        assert r.code == 3, r.err
        assert "lacks" in r.err and "rke2.linux-amd64.tar.gz" in r.err
        assert "internal error" not in r.err


def test_dry_run_masks_secret_config(tmp_path: Path, run_cli, ed_key, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    written, _ = bundles.build(tmp_path, ed_key)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    c = _cluster_for_dry_run(
        tmp_path,
        "  rke2:\n    config: {etcd-s3-secret-key: hunter2}\n"
        "    registries: {configs: {r.example: {auth: {password: regpass}}}}\n",
    )
    r = run_cli(
        "deploy", "-f", str(c), "--bundle", str(written.path), "--key", str(pub), "--dry-run"
    )
    assert r.code == 0, r.err
    assert "hunter2" not in r.out and "regpass" not in r.out
    assert "etcd-s3-secret-key: '***'" in r.out and "password: '***'" in r.out


def test_incomplete_signed_bundle_names_no_internal_error(tmp_path: Path) -> None:
    # the pure part: a manifest with only files lacks everything a deploy needs
    files = bundles.make_files(tmp_path / "f", {"empty.txt": 3})
    m = bundles.lock_for(files, {"empty.txt": "file"})
    assert plan.missing_for_deploy(m) == [
        "install.sh",
        "rke2.linux-amd64.tar.gz",
        "sha256sum-amd64.txt",
        "an image tarball for amd64",
    ]


@pytest.mark.parametrize("data", [b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'"x"', b"null"])
def test_lock_json_that_is_deep_or_not_an_object(tmp_path: Path, run_cli, data: bytes) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "mk8s.lock"
    p.write_bytes(data)
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned", "-o", str(tmp_path / "b"))
    assert r.code == 2, r.err
    assert "internal error" not in r.err


def test_identity_file_that_is_not_a_file(tmp_path: Path) -> None:
    fifo = tmp_path / "id_fifo"
    os.mkfifo(fifo)
    body = cluster_text(rke2="").replace("spec:\n", f"spec:\n  ssh: {{identityFile: {fifo}}}\n")
    with pytest.raises(ClusterFileError, match="not a regular file"):
        load_cluster(_cluster(tmp_path, body))


@pytest.mark.parametrize(
    "ssh",
    ['{identityFile: "a\\0b"}', '{knownHosts: "kh\\nx"}', '{identityFile: "\\x1b[2J"}'],
)
def test_paths_with_control_characters_are_refused(tmp_path: Path, ssh: str) -> None:
    body = cluster_text().replace("spec:\n", f"spec:\n  ssh: {ssh}\n")
    with pytest.raises(ClusterFileError, match="does not match"):
        load_cluster(_cluster(tmp_path, body))


def test_token_path_with_nul_is_refused(tmp_path: Path) -> None:
    body = cluster_text(rke2='  rke2:\n    token: {file: "t\\0"}\n')
    with pytest.raises(ClusterFileError, match="does not match"):
        load_cluster(_cluster(tmp_path, body))


@pytest.mark.parametrize("san", ["5", "[a.example, 7]", "{x: 1}"])
def test_odd_tls_san_values_in_config_are_strings(tmp_path: Path, san: str) -> None:
    ctx, _ = _ctx(tmp_path, f"  rke2:\n    config: {{tls-san: {san}}}\n")
    sans = plan.node_config(ctx, ctx.cluster.bootstrap)["tls-san"]
    assert all(isinstance(s, str) for s in sans)
