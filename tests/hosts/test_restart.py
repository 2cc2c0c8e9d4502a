"""Restarts end to end on test hosts (2 servers + 2 agents, the RKE2 stand-in): a
start-only change restarts the servers one at a time, then the agents one batch at a
time, and takes effect; new image archives restart a release that imports them only at
start; an interrupted upgrade (new binary on disk, old one running) is finished; an
upgrade removes only what mk8s placed; the HelmCharts RKE2 rewrites at start are not
placed again; a converged re-run restarts nothing. Then a registry's new password:
without a restart the nodes pull with the old one, after mk8s's restart with the new;
and a release with the image watcher takes new archives without any restart."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mk8s.bundle import create
from mk8s.bundle.format import keys
from mk8s.bundle.lock import LockSettings, lock_release
from mk8s.bundle.upstream import settings as upstream
from tests.support import standin
from tests.support.charts import make_chart
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.registry import registry_for_tests
from tests.support.standin import images as release
from tests.support.standin_nodes import put_file
from tests.support.upstream import ExampleUpstream
from tests.support.world import World, audit, deploy, mk8s, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "w1", "w2"]
ROLES = {"cp1": "server", "cp2": "server", "w1": "agent", "w2": "agent"}
OLD, NEW = "v1.28.15+rke2r1", "v1.29.10+rke2r1"
IMAGES = "/var/lib/rancher/rke2/agent/images"
MULTUS = "rke2-images-multus.linux-amd64.tar.zst"
LOADED = "/var/lib/rancher/rke2/agent/etc/containerd/mk8s-standin-registries.json"
KUBECTL = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
MIRROR = "    registries: {mirrors: {registry.internal: {endpoint: ['https://registry.internal']}}}"


def bundle_for(world: World, d: Path, spec: str, name: str, **lock: object) -> Path:
    up = world.up
    settings = upstream.UpstreamSettings(
        api_url=up.api_url, release_url=up.release_url, raw_url=up.raw_url, backoff=0.05
    )
    pin = lock_release(
        LockSettings(spec=spec, upstream=settings, cache_dir=d / "cache", **lock)  # type: ignore[arg-type]
    )
    created = create.create_bundle(
        pin,
        create.CreateSettings(
            upstream=settings,
            signature=lambda b: keys.sign(world.key, b),
            out=d / name,
            lock_out=d / f"{name}.lock",
            cache_dir=d / "cache",
        ),
    )
    return created.bundle.path


@pytest.fixture(scope="module")
def bundles(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("restart-bundles")
    chart = (make_chart(d / "hello-0.1.0.tgz"),)
    return {
        "A": bundle_for(world, d, "v1.28.x", "a.tar.zst", charts=chart),
        "B": bundle_for(world, d, "v1.28.x", "b.tar.zst", charts=chart, image_groups=("multus",)),
        "C": bundle_for(world, d, "v1.29.x", "c.tar.zst", charts=chart),
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("restart")
    with hostset_for_tests(4, d / "hosts", names=NAMES) as hs:
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES])
        yield hs, d


def commands(d: Path, since: int) -> list[tuple[str, str]]:
    return [(str(x["node"]), str(x["command"])) for x in audit(d)[since:] if "command" in x]


def restarts(d: Path, since: int) -> list[str]:
    return [n for n, c in commands(d, since) if "systemctl restart" in c]


def changes(d: Path, since: int) -> list[str]:
    words = ("systemctl restart", "systemctl start", "INSTALL_RKE2_", "helm.cattle.io", "drain")
    return [c for _, c in commands(d, since) if any(w in c for w in words)]


def versions(hs: HostSet) -> dict[str, str]:
    r = hs.by_name("cp1").run(f"{KUBECTL} get nodes -o json", check=True)
    return {
        i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"]
        for i in json.loads(r.stdout)["items"]
    }


def imported(h: Host) -> dict[str, dict[str, object]]:
    return json.loads(h.run("rke2 mk8s-images", check=True).stdout)["files"]  # type: ignore[no-any-return]


def test_first_deploy_then_a_rerun_leaves_the_helmcharts_rke2_rewrote(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    r = deploy(d, bundles["A"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    for n in ("cp1", "cp2"):
        (chart,) = hs.by_name(n).path("/var/lib/rancher/rke2/server/manifests").glob("mk8s-chart-*")
        doc = yaml.safe_load(chart.read_text())
        # RKE2 passed its cluster settings to the HelmChart mk8s placed (its bytes changed)
        assert doc["spec"]["set"]["global.clusterCIDR"] == "10.42.0.0/16", n
        assert doc["metadata"]["name"] == "hello"  # one release per chart name
    # The operator's own archive, beside mk8s's.
    put_file(hs.by_name("w1"), f"{IMAGES}/acme-tools.tar", standin.image_tarball("acme-tools.tar"))
    before = len(audit(d))
    again = deploy(d, bundles["A"], world.pub)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "uploaded 0 B" in again.stdout
    assert changes(d, before) == []


def test_a_registries_change_restarts_servers_one_at_a_time_then_agents_in_batches(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES], extra_rke2=MIRROR)
    dry = deploy(d, bundles["A"], world.pub, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("# RKE2 reads these only at start: registries.yaml changed") == 4
    assert "restart running agents in batches of 1, each Ready before the next:" in dry.stdout
    assert dry.stdout.index("    [w1]") < dry.stdout.index("    [w2]")
    for n in NAMES:  # still what each node loaded when it started
        assert "registry.internal" not in hs.by_name(n).path(LOADED).read_text()
    before = len(audit(d))
    r = deploy(d, bundles["A"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert restarts(d, before) == NAMES
    sent = commands(d, before)
    order = [i for i, (_, c) in enumerate(sent) if "systemctl restart" in c]
    polls = [i for i, (_, c) in enumerate(sent) if " get nodes -o json" in c]
    # each server and each agent batch is Ready before the next one restarts
    for a, b in itertools.pairwise(order):
        assert any(a < p < b for p in polls), (a, b, sent[a:b])
    for n in NAMES:
        assert "registry.internal" in hs.by_name(n).path(LOADED).read_text(), n
    before = len(audit(d))
    again = deploy(d, bundles["A"], world.pub)
    assert again.returncode == 0 and changes(d, before) == []
    dry = deploy(d, bundles["A"], world.pub, "--dry-run")
    assert "systemctl restart" not in dry.stdout and "systemctl start" not in dry.stdout


def test_new_image_archives_restart_a_release_that_imports_them_only_at_start(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    dry = deploy(d, bundles["B"], world.pub, "--dry-run")
    assert dry.stdout.count("image archives changed that the running RKE2 imports only at") == 4
    before = len(audit(d))
    r = deploy(d, bundles["B"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert restarts(d, before) == NAMES
    for n in NAMES:
        got = imported(hs.by_name(n))
        assert got[MULTUS]["images"] and not got[MULTUS].get("error"), (n, got[MULTUS])
    assert "acme-tools.tar" in imported(hs.by_name("w1"))


def test_an_interrupted_upgrade_is_finished_and_only_what_mk8s_placed_is_removed(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    w2 = hs.by_name("w2")
    # install.sh of the new release ran on w2, the restart never came.
    tarball = world.up.asset_bytes(NEW, "rke2.linux-amd64.tar.gz")
    put_file(w2, "/tmp/rke2-new.tar.gz", tarball)
    w2.run(
        "for p in /usr/local /opt/rke2; do if [ -x $p/bin/rke2 ]; then"
        " tar xzf /tmp/rke2-new.tar.gz -C $p; break; fi; done",
        check=True,
    )
    assert w2.run("rke2 --version", check=True).stdout.startswith(f"rke2 version {NEW}")
    assert versions(hs)["w2"] == OLD  # the old one still runs
    st = mk8s("status", "-f", "cluster.yaml", cwd=d)
    assert f"w2: {NEW} is installed but {OLD} still runs" in st.stdout, st.stdout
    before = len(audit(d))
    r = deploy(d, bundles["C"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions(hs) == dict.fromkeys(NAMES, NEW)
    sent = commands(d, before)
    mine = [c for n, c in sent if n == "w2"]
    assert any("systemctl restart --no-block rke2-agent" in c for c in mine), mine
    assert not [c for c in mine if "INSTALL_RKE2_ARTIFACT_PATH" in c], mine  # on disk already
    for n in NAMES:
        left = sorted(p.name for p in hs.by_name(n).path(IMAGES).iterdir())
        want = ["rke2-images.linux-amd64.tar.zst"]
        assert left == (["acme-tools.tar", *want] if n == "w1" else want), (n, left)
        records = hs.by_name(n).path("/var/lib/rancher/rke2/mk8s/images")
        assert sorted(p.name for p in records.iterdir()) == want


def test_a_rerun_after_all_that_changes_nothing(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    _hs, d = cluster
    before = len(audit(d))
    r = deploy(d, bundles["C"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert changes(d, before) == [] and "uploaded 0 B" in r.stdout
    dry = deploy(d, bundles["C"], world.pub, "--dry-run")
    assert "systemctl restart" not in dry.stdout


def test_a_new_registry_password_takes_effect_only_through_the_restart(
    tmp_path: Path,
    world: World,
) -> None:
    with (
        hostset_for_tests(2, tmp_path / "hosts", names=["cp1", "w1"]) as hs,
        registry_for_tests(tmp_path / "reg", address=hs.gateway) as reg,
    ):
        c = write_cluster(tmp_path / "cluster.yaml", hs, [("cp1", "server"), ("w1", "agent")])
        doc = yaml.safe_load(c.read_text())
        doc["spec"]["images"] = {
            "distribution": "registry",
            "registry": {
                "url": reg.url,
                "caFile": str(reg.ca_file),
                "username": reg.username,
                "passwordFile": str(tmp_path / "pw"),
            },
        }
        c.write_text(yaml.safe_dump(doc, sort_keys=False))
        (tmp_path / "pw").write_text(reg.password + "\n")
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        ref = release.images_in(OLD, "rke2-images.linux-amd64.tar.zst")[0]

        def pull(n: str) -> str:
            p = hs.by_name(n).run(f"rke2 mk8s-pull {ref}")
            return p.stdout + p.stderr

        assert all("pulled" in pull(n) for n in ("cp1", "w1"))
        # The registry's password changes; so does the password file.
        reg.stop()
        reg.password = "pw-rotated-" + str(time.time_ns())
        reg.start()
        (tmp_path / "pw").write_text(reg.password + "\n")
        assert all("401" in pull(n) for n in ("cp1", "w1"))  # the nodes loaded the old one
        before = len(audit(tmp_path))
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert restarts(tmp_path, before) == ["cp1", "w1"]
        assert all("pulled" in pull(n) for n in ("cp1", "w1"))
        assert reg.password not in (tmp_path / ".mk8s" / "demo" / "audit.jsonl").read_text()
        before = len(audit(tmp_path))
        again = deploy(tmp_path, world.bundle, world.pub)
        assert again.returncode == 0 and restarts(tmp_path, before) == []


def test_a_release_with_the_image_watcher_takes_new_archives_without_a_restart(
    tmp_path: Path,
    world: World,
) -> None:
    tag = "v1.29.13+rke2r1"  # the first v1.29 that imports archives while running
    with (
        ExampleUpstream(image_size=64 << 10, extra_tags=(tag,)) as up,
        hostset_for_tests(2, tmp_path / "hosts", names=["cp1", "w1"]) as hs,
    ):
        w = World(tmp_path, world.bundle, world.pub, world.key, up)
        plain = bundle_for(w, tmp_path, "v1.29.13", "p.tar.zst")
        more = bundle_for(w, tmp_path, "v1.29.13", "m.tar.zst", image_groups=("multus",))
        write_cluster(tmp_path / "cluster.yaml", hs, [("cp1", "server"), ("w1", "agent")])
        r = deploy(tmp_path, plain, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        before = len(audit(tmp_path))
        r = deploy(tmp_path, more, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert restarts(tmp_path, before) == []
        for n in ("cp1", "w1"):
            deadline = time.monotonic() + 15
            while MULTUS not in imported(hs.by_name(n)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert imported(hs.by_name(n))[MULTUS]["images"], n
