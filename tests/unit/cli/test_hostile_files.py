"""The second hostile-input corpus, local half: what reaches mk8s from local files and
from signed bundle content (cluster files and the files they name, locks, charts,
manifests, auth files, parts indexes, the ``--file`` payloads sbom and diff read).

Every case runs the real CLI in a subprocess limited to 2 GiB of address space and
30 seconds, with HOME, TMPDIR and the debug log's directory inside the test's own
directory, and must keep every rule:

* the documented exit class (2 bad input, 3 a rejected bundle, 0 where it is fine);
* no traceback and no "internal error";
* done within 30 s and 2 GiB;
* nothing written outside the output path;
* no secret (a password file's content, a private key) in stdout, stderr, the debug
  log or any file written;
* an error is exactly one line, and a short one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mk8s.bundle.format import keys
from mk8s.bundle.format.writer import WriteSettings, write_bundle
from tests.support import bundles, hostile
from tests.support.paths import ROOT
from tests.support.registry import TestCA
from tests.support.upstream import ExampleUpstream

DEADLINE = 30.0
MEMORY = 2 << 30
MAX_ERROR = 1000  # characters of the one error line
PASSWORD = "hunter2-Pa55word-never-shown"
UNREACHABLE = "http://127.0.0.1:9"


@dataclass
class Run:
    code: int | None  # None: still running at the deadline (killed)
    out: str
    err: str
    seconds: float
    cpu: float  # user + system seconds of the process (steadier than wall time on a busy box)
    log: str  # the debug log, if one was written
    written: dict[str, bytes] = field(default_factory=dict)  # files the run left in out/


@dataclass
class World:
    root: Path
    bundle: Path
    pub: Path
    private: Path  # the signing key, not encrypted
    ca_pem: bytes
    key_pem: bytes
    upstream: ExampleUpstream
    key: keys.PrivateKey

    def file(self, name: str, data: bytes) -> Path:
        p = self.root / "inputs" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        return p


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, ed_key: keys.PrivateKey) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile-files")
    written, _ = bundles.build(root / "b", ed_key)
    pair = keys.write_key_pair(ed_key, root / "k", None)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with ExampleUpstream() as up:  # its own directory: it writes as it serves
        yield World(
            root,
            written.path,
            pair.public,
            pair.private,
            TestCA.create().pem(),
            key_pem,
            up,
            ed_key,
        )


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents for s in skip) or p.is_dir():
            continue
        st = p.lstat()
        out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def mk8s(world: World, where: Path, *args: str, upstream: bool = False) -> Run:
    """``python -m mk8s ARGS`` in ``where`` (its ``out/`` is the only output path)."""
    for d in ("home", "tmp", "state", "out"):
        (where / d).mkdir(exist_ok=True)
    urls = world.upstream.env if upstream else dict.fromkeys(world.upstream.env, UNREACHABLE)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "HOME": str(where / "home"),
        "TMPDIR": str(where / "tmp"),
        "XDG_STATE_HOME": str(where / "state"),
        "XDG_CACHE_HOME": str(where / "home" / ".cache"),
        "LC_ALL": "C.UTF-8",
        **urls,
    }
    skip = (where / "out", where / "state")
    before = {**_tree(where, skip), **_tree(world.root, ())}
    started = time.monotonic()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mk8s", *args],
        cwd=where,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limits,
    )
    try:
        out, err = proc.communicate(timeout=DEADLINE)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        code = None
    seconds = time.monotonic() - started
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    after = {**_tree(where, skip), **_tree(world.root, ())}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written outside the output path: {changed}"
    log = where / "state" / "mk8s" / "debug.log"
    written = {str(p): _plain(p.read_bytes()) for p in (where / "out").rglob("*") if p.is_file()}
    return Run(
        code,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        seconds,
        cpu,
        log.read_text(errors="replace") if log.exists() else "",
        written,
    )


def _plain(data: bytes) -> bytes:
    """A written file as text to search: a zstd bundle decompressed (first 64 MiB)."""
    if data[:4] == b"\x28\xb5\x2f\xfd":
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
        return reader.read(64 << 20)
    return data


def check(run: Run, code: int, *, secrets: tuple[str, ...] = ()) -> None:
    """The rules every case keeps."""
    assert run.code is not None, f"still running after {DEADLINE:.0f}s: {run.err[-500:]}"
    shown = run.out + run.err
    assert run.code == code, f"exit {run.code}, expected {code}: {run.err[-2000:]}"
    assert "Traceback" not in shown and "internal error" not in shown, run.err[-2000:]
    assert "Traceback" not in run.log, run.log[-2000:]
    for s in secrets:
        assert s not in shown, f"secret shown: {shown[-2000:]}"
        assert s not in run.log, "secret in the debug log"
        for name, data in run.written.items():
            assert s.encode() not in data, f"secret in {name}"
    if code != 0:
        assert run.err.startswith("mk8s: error: ") and run.err.count("\n") == 1, run.err[:3000]
        assert len(run.err) <= MAX_ERROR, f"{len(run.err)} characters: {run.err[:300]}..."


def cluster(world: World, where: Path, *, images: str = "", rke2: str = "") -> Path:
    p = where / "cluster.yaml"
    p.write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec:\n"
        + (f"  rke2: {rke2}\n" if rke2 else "")
        + (f"  images: {images}\n" if images else "")
        + "  nodes:\n    - {address: 10.0.0.1, name: cp1, role: server}\n"
        "    - {address: 10.0.0.2, name: w1, role: agent}\n"
    )
    return p


def registry(url: str, ca: Path | None, password_file: Path) -> str:
    ca_part = f", caFile: '{ca}'" if ca else ""
    return (
        f"{{distribution: registry, registry: {{url: '{url}'{ca_part}, username: robot,"
        f" passwordFile: '{password_file}'}}}}"
    )


def dry_run(world: World, where: Path, cluster_file: Path, *extra: str) -> Run:
    return mk8s(
        world,
        where,
        *extra,
        "deploy",
        "-f",
        str(cluster_file),
        "--bundle",
        str(world.bundle),
        "--key",
        str(world.pub),
        "--dry-run",
    )


def _pem_body(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block: what must never be printed."""
    return [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]


# ---------------------------------------------------------------- 1. secrets shown


@pytest.mark.parametrize("ca", ["password-file", "private-key", "certificate-and-key"])
def test_a_ca_file_that_is_no_certificate_is_refused_unseen(
    world: World, tmp_path: Path, ca: str
) -> None:
    pw = world.file("pw", f"{PASSWORD}\n".encode())
    content = {
        "password-file": f"{PASSWORD}\n".encode(),
        "private-key": world.key_pem,
        "certificate-and-key": world.ca_pem + world.key_pem,
    }[ca]
    ca_file = world.file(f"ca-{ca}.pem", content)
    secrets = (PASSWORD,) if ca == "password-file" else tuple(_pem_body(world.key_pem))
    c = cluster(world, tmp_path, images=registry("https://reg.lan:5000", ca_file, pw))
    for verbose in ((), ("-v",)):
        run = dry_run(world, tmp_path, c, *verbose)
        if verbose:
            assert run.code == 2 and "Traceback" not in run.err
            for s in secrets:
                assert s not in run.out + run.err + run.log
        else:
            check(run, 2, secrets=secrets)
            assert "caFile" in run.err and "certificate" in run.err


def test_the_plan_names_the_ca_by_hash_and_never_shows_it(world: World, tmp_path: Path) -> None:
    ca_file = world.file("ca.pem", world.ca_pem)
    pw = world.file("pw", f"{PASSWORD}\n".encode())
    c = cluster(world, tmp_path, images=registry("https://reg.lan:5000", ca_file, pw))
    run = dry_run(world, tmp_path, c)
    check(run, 0, secrets=(PASSWORD,))
    assert not any(line in run.out for line in _pem_body(world.ca_pem))
    sha = hashlib.sha256(world.ca_pem).hexdigest()
    assert f"sha256 {sha}" in run.out
    assert "chmod 0644 /etc/rancher/rke2/mk8s-registry-ca.pem" in run.out


def _lock_json(world: World, **change: object) -> dict[str, object]:
    files = bundles.default_files(world.root / "lockfiles")
    doc = bundles.lock_for(files, bundles.KINDS).to_json()
    doc.update(change)
    return doc


@pytest.mark.parametrize(
    "where", ["registry-url", "server-url", "lock-url", "manifest-resolvedAt", "parts-name"]
)
def test_errors_never_echo_the_userinfo_of_a_url(world: World, tmp_path: Path, where: str) -> None:
    url = f"https://robot:{PASSWORD}@reg.lan:5000"
    pw = world.file("pw", b"pw\n")
    if where in ("registry-url", "server-url"):
        images = registry(url, None, pw) if where == "registry-url" else ""
        rke2 = f"{{serverUrl: '{url}'}}" if where == "server-url" else ""
        check(dry_run(world, tmp_path, cluster(world, tmp_path, images=images, rke2=rke2)), 2)
        run = dry_run(world, tmp_path, cluster(world, tmp_path, images=images, rke2=rke2), "-v")
        assert PASSWORD not in run.out + run.err + run.log
        return
    if where == "lock-url":
        doc = _lock_json(world)
        doc["artifacts"][0]["url"] = f"{url}/{'a' * 3000}"  # type: ignore[index]
        lock = world.file("userinfo.lock", json.dumps(doc).encode())
        run = mk8s(
            world, tmp_path, "bundle", "create", "--lock", str(lock), "--key", str(world.private)
        )
        check(run, 2, secrets=(PASSWORD,))
        return
    if where == "manifest-resolvedAt":
        members = bundles.read_members(world.bundle)
        doc = json.loads(members[0].data)
        doc["resolvedAt"] = url
        edited = [bundles.Member(members[0].name, json.dumps(doc).encode()), *members[1:]]
        bad = bundles.craft(tmp_path / "b.tar.zst", bundles.sign_members(edited, world.key))
        check(mk8s(world, tmp_path, "bundle", "inspect", str(bad)), 3, secrets=(PASSWORD,))
        return
    index = _parts_index(tmp_path, 2)
    doc = json.loads(index.read_bytes())
    doc["bundle"]["name"] = url
    index.write_text(json.dumps(doc))
    run = mk8s(world, tmp_path, "bundle", "verify", str(index), "--key", str(world.pub))
    check(run, 3, secrets=(PASSWORD,))


@pytest.mark.parametrize("where", ["registry-url", "server-url"])
def test_a_port_out_of_range_is_an_input_error(world: World, tmp_path: Path, where: str) -> None:
    pw = world.file("pw", b"pw\n")
    if where == "registry-url":
        c = cluster(world, tmp_path, images=registry("https://reg.lan:99999", None, pw))
    else:
        c = cluster(world, tmp_path, rke2="{serverUrl: 'https://k8s.lan:99999'}")
    run = dry_run(world, tmp_path, c)
    check(run, 2)
    assert "99999" in run.err and "port" in run.err


# -------------------------------------------- 2, 3. local files that hang or explode


def _named_inputs(world: World, where: Path, p: Path, index: Path) -> dict[str, list[str]]:
    """Every command line that reads a user-named file, with ``p`` (or, for a parts
    index, ``index``) in its place."""
    lock = where / "good.lock"
    lock.write_text(json.dumps(_lock_json(world)))
    b, pub = str(world.bundle), str(world.pub)
    lockcmd = ["bundle", "lock", "--rke2", "v1.28.x", "-o", "out/mk8s.lock"]
    return {
        "--registry-auth-file": [
            *lockcmd,
            "--image",
            "127.0.0.1:9/x:1",
            "--registry-auth-file",
            str(p),
        ],
        "--images-file": [*lockcmd, "--images-file", str(p)],
        "--chart": [*lockcmd, "--chart", str(p)],
        "--manifest": [*lockcmd, "--manifest", str(p)],
        "--file": [*lockcmd, "--file", str(p)],
        "--lock": ["bundle", "create", "--lock", str(p), "--key", str(world.private), "-o", "out/"],
        "--key (private)": ["bundle", "create", "--lock", str(lock), "--key", str(p), "-o", "out/"],
        "--key (public)": ["bundle", "verify", b, "--key", str(p)],
        "-f": ["deploy", "-f", str(p), "--bundle", b, "--key", pub, "--dry-run"],
        "BUNDLE": ["bundle", "verify", str(p), "--key", pub],
        "PARTS": ["bundle", "verify", str(index), "--key", pub],
        "diff OLD": ["bundle", "diff", str(p), b, "--key", pub],
    }


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_every_named_input_file_is_refused_unless_regular(
    world: World, tmp_path: Path, kind: str
) -> None:
    """A FIFO blocks a reader forever and /dev/zero never ends: every flag that names a
    file refuses both at once (exit 2)."""
    p, index = tmp_path / "input", tmp_path / "b.tar.zst.parts"
    for path in (p, index):
        if kind == "fifo":
            hostile.fifo(path)
        else:
            path.symlink_to("/dev/zero")
    for flag, args in _named_inputs(world, tmp_path, p, index).items():
        run = mk8s(world, tmp_path, *args)
        check(run, 2)
        assert run.cpu < 5, (flag, run.cpu)  # refused at once, not read


@pytest.mark.parametrize("content", ["missing", "oversized", "nested", "not-json", "nested-auths"])
def test_a_bad_registry_auth_file_is_an_input_error(
    world: World, tmp_path: Path, content: str
) -> None:
    p = tmp_path / "auth.json"
    if content == "oversized":
        p.write_bytes(b'{"auths": {}}' + b" " * (8 << 20))
    elif content == "nested":
        p.write_bytes(hostile.nested_json(200_000))
    elif content == "not-json":
        p.write_text(f'{{"auths": {{"127.0.0.1:9": {{"auth": "{PASSWORD}"')
    elif content == "nested-auths":
        p.write_bytes(b'{"auths": {"127.0.0.1:9": ' + hostile.nested_json(5000) + b"}}")
    args = ["bundle", "lock", "--rke2", "v1.28.x", "--image", "127.0.0.1:9/x:1", "--cache", "out/c"]
    run = mk8s(world, tmp_path, *args, "--registry-auth-file", str(p), upstream=True)
    check(run, 2, secrets=(PASSWORD,))
    assert "auth" in run.err


CHART_BOMBS: dict[str, Callable[[Path], Path]] = {
    "nested-chart-yaml": lambda p: hostile.chart(p, hostile.nested_yaml(100_000)),
    "16-GiB-member-before-chart-yaml": lambda p: hostile.zero_member_chart(p, 16 * hostile.GIB),
    "2-GiB-in-small-members": lambda p: hostile.many_members_chart(p, 2048, hostile.MIB),
    "512-MiB-chart-yaml": lambda p: hostile.huge_chart_yaml(p, 512 * hostile.MIB),
}


@pytest.mark.parametrize("bomb", list(CHART_BOMBS))
def test_a_hostile_chart_is_refused_at_create_in_bounded_time_and_memory(
    world: World, tmp_path: Path, bomb: str
) -> None:
    chart = CHART_BOMBS[bomb](tmp_path / "bomb-0.1.0.tgz")
    run = mk8s(world, tmp_path, "bundle", "lock", "--rke2", "v1.28.x", "--chart", str(chart))
    check(run, 2)
    assert "--chart" in run.err


def test_a_manifest_alias_bomb_is_refused(world: World, tmp_path: Path) -> None:
    m = world.file("bomb.yaml", hostile.alias_bomb_yaml())
    run = mk8s(world, tmp_path, "bundle", "lock", "--rke2", "v1.28.x", "--manifest", str(m))
    check(run, 2)
    assert "--manifest" in run.err


def test_a_manifest_near_its_size_cap_is_checked_fast(world: World, tmp_path: Path) -> None:
    """220,000 small documents in 16 MiB (PyYAML's pure-Python parser took over 30 s). The
    manifest is valid, so the run goes on to the next check, a --file with a name no
    bundle can carry: that it is reached proves the manifest passed."""
    doc = b"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  key: value\n"
    m = world.file("big.yaml", doc * ((16 << 20) // len(doc) - 1))
    odd = world.file("odd name.txt", b"x")
    args = ["bundle", "lock", "--rke2", "v1.28.x", "--manifest", str(m), "--file", str(odd)]
    run = mk8s(world, tmp_path, *args)
    check(run, 2)
    assert "odd name.txt" in run.err and "--manifest" not in run.err
    assert run.cpu < 10, f"{run.cpu:.1f} s of CPU"


# ------------------------------------------ 3, 5. signed content read by sbom and diff


def _bundle_with(world: World, where: Path, extra: dict[str, tuple[Path, str]]) -> Path:
    files = bundles.default_files(where / "files")
    files.update({name: path for name, (path, _) in extra.items()})
    kinds = {**bundles.KINDS, **{name: kind for name, (_, kind) in extra.items()}}
    lock = bundles.lock_for(files, kinds).as_manifest()
    by_path = {a.path: files[a.name] for a in lock.artifacts}
    out = where / "hostile.tar.zst"
    write_bundle(
        lock, by_path, out, lambda b: keys.sign(world.key, b), settings=WriteSettings(threads=2)
    )
    return out


def _docker_archive(path: Path, manifest_json: bytes) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest_json)
        tf.addfile(info, io.BytesIO(manifest_json))
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


SIGNED: dict[str, Callable[[Path], tuple[str, Path, str]]] = {
    "file-chart-with-64-GiB-member": lambda d: (
        "bomb-0.1.0.tgz",
        hostile.zero_member_chart(d / "bomb.tgz", 64 * hostile.GIB),
        "file",
    ),
    "chart-with-nested-chart-yaml": lambda d: (
        "nested-0.1.0.tgz",
        hostile.chart(d / "nested.tgz", hostile.nested_yaml(100_000)),
        "chart",
    ),
    "image-archive-with-1500-nested-indexes": lambda d: (
        "rke2-images-chain.linux-amd64.tar",
        hostile.index_chain_layout(d / "chain.tar", 1500),
        "images",
    ),
    "image-archive-with-nested-manifest-json": lambda d: (
        "rke2-images-evil.linux-amd64.tar.zst",
        _docker_archive(d / "evil.tar.zst", hostile.nested_json(100_000)),
        "images",
    ),
}


@pytest.mark.parametrize("content", list(SIGNED))
def test_sbom_and_diff_read_hostile_signed_content_within_bounds(
    world: World, tmp_path: Path, content: str
) -> None:
    """Signed by the trusted key, so the bundle verifies: sbom and diff still list the
    artifact (with a note when its contents cannot be read) and stay within bounds."""
    (tmp_path / "in").mkdir()
    name, path, kind = SIGNED[content](tmp_path / "in")
    b = _bundle_with(world, tmp_path / "in", {name: (path, kind)})
    pub = str(world.pub)
    run = mk8s(world, tmp_path, "bundle", "sbom", str(b), "--key", pub, "-o", "out/sbom.json")
    check(run, 0)
    sbom = json.loads(run.written[str(tmp_path / "out" / "sbom.json")])
    assert name in json.dumps(sbom)
    assert not any(c.get("name") == "bomb" for c in sbom["components"])
    run = mk8s(world, tmp_path, "bundle", "diff", str(world.bundle), str(b), "--key", pub)
    check(run, 0)
    assert name in run.out


# --------------------------------------------------------------- 6, 7. output and exit


def _parts_index(where: Path, count: int, *, pad: int = 0) -> Path:
    name = "b.tar.zst"
    parts = [{"name": f"{name}.{i:03d}", "size": 1, "sha256": "0" * 64} for i in range(count)]
    doc = {
        "schemaVersion": 1,
        "kind": "mk8s.parts",
        "bundle": {"name": name, "size": count, "sha256": "0" * 64},
        "partSize": 1,
        "parts": parts,
    }
    index = where / f"{name}.parts"
    index.write_bytes(json.dumps(doc, indent=2).encode() + b" " * pad)
    (where / f"{name}.parts.sig").write_bytes(keys.unsigned().to_bytes())
    return index


def test_a_lock_of_too_many_artifacts_gives_a_short_error(world: World, tmp_path: Path) -> None:
    doc = _lock_json(world)
    one = doc["artifacts"][0]  # type: ignore[index]
    doc["artifacts"] = [
        {**one, "name": f"f{i:05d}.bin", "path": f"artifacts/files/f{i:05d}.bin", "kind": "file"}
        for i in range(10_001)
    ]
    lock = world.file("big.lock", json.dumps(doc).encode())
    run = mk8s(
        world, tmp_path, "bundle", "create", "--lock", str(lock), "--key", str(world.private)
    )
    check(run, 2)
    assert "10001" in run.err and "10000" in run.err


@pytest.mark.parametrize("command", ["verify", "join", "inspect"])
def test_an_index_of_too_many_parts_gives_a_short_error(
    world: World, tmp_path: Path, command: str
) -> None:
    index = _parts_index(tmp_path, 1001)
    args = {
        "verify": ["bundle", "verify", str(index), "--key", str(world.pub)],
        "join": ["bundle", "join", str(index), "-o", "out"],
        "inspect": ["bundle", "inspect", str(index)],
    }[command]
    run = mk8s(world, tmp_path, *args)
    check(run, 3)
    assert "1001" in run.err and "1000" in run.err


def test_a_damaged_oversized_parts_index_is_a_rejected_bundle(world: World, tmp_path: Path) -> None:
    index = _parts_index(tmp_path, 2, pad=2 << 20)
    run = mk8s(world, tmp_path, "bundle", "verify", str(index), "--key", str(world.pub))
    check(run, 3)


def test_a_yaml_reader_error_cannot_forge_a_second_line(world: World, tmp_path: Path) -> None:
    c = tmp_path / "cluster.yaml"
    c.write_bytes(b"apiVersion: mk8s/v1alpha1\x07\nmk8s: error: forged\n")
    run = dry_run(world, tmp_path, c)
    check(run, 2)
