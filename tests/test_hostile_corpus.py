"""A generated hostile-input corpus: every field of a valid cluster file and lock is
replaced, one at a time, by hostile values. Each variant must either load or end in
the input-file error (exit 2), never in anything a user would see as "internal error";
whatever loads must also survive planning and printing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mk8s.bundle.manifest import Lock
from mk8s.deploy.builders import facts, plan
from mk8s.deploy.cluster import load_cluster
from mk8s.deploy.command import Secret
from mk8s.errors import ClusterFileError, LockError
from tests.support import bundles

HOSTILE: list[Any] = [
    "",
    " ",
    "\x00",
    "a\nb",
    "cp1\n",
    "\x1b[2J",
    "$(touch /tmp/x)",
    "`id`",
    "'\"",
    "../../etc/passwd",
    "é" * 10,
    "A" * 5000,
    -1,
    0,
    2**70,
    1.5,
    True,
    None,
    [],
    {},
    ["x"] * 3,
    {"a": {"b": {"c": [1, {"d": None}]}}},
]

CLUSTER: dict[str, Any] = {
    "apiVersion": "mk8s/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "demo"},
    "spec": {
        "rke2": {
            "version": "v1.28.15+rke2r1",
            "tlsSan": ["k8s.example"],
            "serverUrl": "https://k8s.example:9345",
            "config": {"cni": "canal", "node-label": ["a=b"]},
            "serverConfig": {"etcd-expose-metrics": True},
            "agentConfig": {},
            "registries": {"mirrors": {"docker.io": {"endpoint": ["https://r.example"]}}},
        },
        "ssh": {"user": "root", "port": 22, "hostKeyPolicy": "strict"},
        "nodes": [
            {"address": "10.0.0.1", "name": "cp1", "role": "server"},
            {"address": "10.0.0.2", "role": "agent", "ssh": {"user": "ops", "port": 2222}},
        ],
        "options": {"concurrency": 5, "stagingDir": "/var/lib/mk8s"},
    },
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    if not path:
        return value
    target = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return out


def _variants(doc: Any) -> Iterator[tuple[str, Any]]:
    for path in _paths(doc):
        for i, value in enumerate(HOSTILE):
            yield f"{'.'.join(map(str, path)) or 'root'}={i}", _replaced(doc, path, value)


def _fresh() -> facts.NodeFacts:
    return facts.NodeFacts(arch="amd64", uname_m="x86_64", os="", hostname="", root=True, sudo=True)


@pytest.mark.slow
def test_every_hostile_cluster_variant_loads_or_is_an_input_error(tmp_path: Path) -> None:
    files = bundles.default_files(tmp_path / "f")
    manifest = bundles.lock_for(files, bundles.KINDS).as_manifest()
    p = tmp_path / "cluster.yaml"
    loaded = refused = 0
    for label, variant in _variants(CLUSTER):
        try:
            text = yaml.safe_dump(variant, allow_unicode=True)
        except yaml.YAMLError:
            continue
        p.write_text(text)
        try:
            cluster = load_cluster(p, check_files=False)
        except ClusterFileError as e:
            refused += 1
            assert str(e), label
            continue
        loaded += 1
        ctx = plan.Context(cluster, manifest, "0123456789abcdef", Secret("t"))
        for node in cluster.nodes:
            plan.config_bytes(ctx, node)
            plan.install_step(ctx, node, _fresh())
            plan.upload_step(ctx, node, _fresh())
            plan.start_step(ctx, node, _fresh(), installed_now=True)
        plan.registries_bytes(ctx)
        plan.api_host(cluster)
        plan.server_url(cluster)
    assert loaded > 50 and refused > 200, (loaded, refused)


def test_every_hostile_lock_variant_loads_or_is_a_lock_error(tmp_path: Path) -> None:
    files = bundles.default_files(tmp_path / "f")
    good = bundles.lock_for(files, bundles.KINDS).to_json()
    loaded = refused = 0
    for label, variant in _variants(good):
        data = json.dumps(variant).encode()
        for validate in (True, False):
            try:
                lock = Lock.from_bytes(data, validate=validate)
            except LockError as e:
                refused += 1
                assert str(e), label
                continue
            loaded += 1
            lock.to_bytes()
            lock.bundle_name()
            _ = lock.mtime, lock.total_size
    assert loaded > 20 and refused > 500, (loaded, refused)


@pytest.mark.slow
def test_every_hostile_signed_manifest_is_verified_or_rejected(
    tmp_path: Path, run_cli, ed_key
) -> None:  # type: ignore[no-untyped-def]
    """Signed by the trusted key, so only the manifest's own checks stand between a
    hostile manifest and the operator: verify, inspect and deploy --dry-run exit 0, 2
    or 3, never with an internal error, and print no raw control character."""
    from mk8s.bundle import keys

    written, _ = bundles.build(tmp_path, ed_key)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    members = bundles.read_members(written.path)
    good = json.loads(members[0].data)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(CLUSTER))
    values = [HOSTILE[i] for i in (0, 2, 5, 6, 11, 12, 15, 17, 18, 21)]
    seen = set()
    for path in _paths(good):
        for value in values:
            variant = _replaced(good, path, value)
            data = json.dumps(variant).encode()
            edited = [bundles.Member(members[0].name, data), *members[1:]]
            bad = bundles.craft(tmp_path / "v.tar.zst", bundles.sign_members(edited, ed_key))
            for args in (
                ("bundle", "verify", str(bad), "--key", str(pub)),
                ("bundle", "inspect", str(bad)),
                (
                    "deploy",
                    "-f",
                    str(cluster),
                    "--bundle",
                    str(bad),
                    "--key",
                    str(pub),
                    "--dry-run",
                ),
            ):
                r = run_cli(*args)
                seen.add(r.code)
                label = f"{'.'.join(map(str, path))}={value!r}: {args[:2]}"
                assert r.code in (0, 2, 3), f"{label}: {r.err}"
                assert "internal error" not in r.err, label
                assert "\x1b" not in r.out + r.err, label
    assert {0, 3} <= seen
