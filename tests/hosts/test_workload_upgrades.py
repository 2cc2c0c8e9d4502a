"""Workloads across bundles, end to end on test hosts with the RKE2 stand-in:

* a chart's next version replaces its one Helm release, and a chart the next bundle
  drops is uninstalled on purpose (kubectl delete helmchart), as the dry run says;
* registry mode pushes a multi-platform image so that the digest the lock pins exists
  in the air-gap registry (a bundle carrying only some platforms is refused first).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mk8s.bundle.format import keys
from tests.support import oci
from tests.support.charts import chart_tgz
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.registry import registry_for_tests
from tests.support.standin_nodes import KUBECTL
from tests.support.world import World, deploy, mk8s, write_cluster

pytestmark = pytest.mark.hosts


def create(world: World, d: Path, name: str, *args: str, env: dict[str, str] | None = None) -> Path:
    """``mk8s bundle create --rke2 v1.28.x ARGS`` against the example upstream."""
    if not (d / "k.key").exists():
        keys.write_key_pair(world.key, d / "k", b"pw")
    r = subprocess.run(
        [sys.executable, "-m", "mk8s", "bundle", "create", "--rke2", "v1.28.x", "--key",
         str(d / "k.key"), "--cache", str(d / "cache"), "-o", str(d / name), *args],
        cwd=d,
        env={**os.environ, **world.up.env, **(env or {}), "MK8S_KEY_PASSPHRASE": "pw"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return d / name


def releases(hs: HostSet) -> dict[str, tuple[str, str, int]]:
    r = hs.by_name("cp1").run(f"{KUBECTL} get --raw /mk8s/helm-releases")
    assert r.returncode == 0, r.stderr
    return {
        x["name"]: (x["chart"], x["version"], x["revision"]) for x in json.loads(r.stdout)["items"]
    }


def test_a_chart_upgrade_replaces_its_release_and_a_dropped_chart_is_uninstalled(
    tmp_path: Path, world: World
) -> None:
    d = tmp_path
    web14 = chart_tgz(d / "web-1.4.0.tgz", "web", "1.4.0")
    api = chart_tgz(d / "api-1.0.0.tgz", "api", "1.0.0")
    web15 = chart_tgz(d / "web-1.5.0.tgz", "web", "1.5.0")
    first = create(world, d, "a.tar.zst", "--chart", str(web14), "--chart", str(api))
    second = create(world, d, "b.tar.zst", "--chart", str(web15))
    with hostset_for_tests(1, d / "hosts", names=["cp1"]) as hs:
        write_cluster(d / "cluster.yaml", hs, [("cp1", "server")])
        r = deploy(d, first, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert releases(hs) == {"web": ("web", "1.4.0", 1), "api": ("api", "1.0.0", 1)}
        plan = deploy(d, second, world.pub, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "# cp1: uninstall chart api: the bundle no longer carries it" in plan.stdout
        assert "delete helmchart" in plan.stdout and "kube-system api 300s" in plan.stdout
        assert "uninstall chart web" not in plan.stdout
        r = deploy(d, second, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "cp1: uninstalling chart api (the bundle no longer carries it)" in r.stderr
        # One release of web, upgraded in place; api uninstalled, its file gone. RKE2
        # applies a new file in server/manifests on its own time (deploy does not wait
        # for helm-controller), so the release list is polled, bounded.
        want = {"web": ("web", "1.5.0", 2)}
        deadline = time.monotonic() + 60
        while releases(hs) != want and time.monotonic() < deadline:
            time.sleep(0.5)
        assert releases(hs) == want
        placed = sorted(
            p.name
            for p in hs.by_name("cp1").path("/var/lib/rancher/rke2/server/manifests").glob("mk8s-*")
        )
        assert len(placed) == 1 and placed[0].startswith("mk8s-chart-web-"), placed
        again = deploy(d, second, world.pub)
        assert again.returncode == 0 and "uninstalling" not in again.stderr
        assert releases(hs) == {"web": ("web", "1.5.0", 2)}


def test_registry_mode_pushes_the_pinned_digest_of_a_multi_platform_image(
    tmp_path: Path, world: World
) -> None:
    d = tmp_path
    index = oci.build_index(("linux/amd64", "linux/arm64"), seed="reg-e2e")
    with registry_for_tests(d / "public") as public:
        oci.push_raw(public.session(), public.url, "acme/multi", "3.0", index)
        auth = base64.b64encode(f"{public.username}:{public.password}".encode()).decode()
        (d / "auth.json").write_text(json.dumps({"auths": {public.host: {"auth": auth}}}))
        env = {
            "REGISTRY_AUTH_FILE": str(d / "auth.json"),
            "REQUESTS_CA_BUNDLE": str(public.ca_file),
        }
        ref = f"{public.host}/acme/multi:3.0"
        some = create(world, d, "some.tar.zst", "--image", ref, env=env)
        every = create(world, d, "every.tar.zst", "--image", ref, "--all-platforms", env=env)
    with (
        hostset_for_tests(1, d / "hosts", names=["cp1"]) as hs,
        registry_for_tests(d / "airgap", address=hs.gateway) as reg,
    ):
        c = write_cluster(d / "cluster.yaml", hs, [("cp1", "server")])
        (d / "pw").write_text(reg.password + "\n")
        doc = yaml.safe_load(c.read_text())
        doc["spec"]["images"] = {
            "distribution": "registry",
            "registry": {
                "url": f"https://{reg.host}",
                "caFile": str(reg.ca_file),
                "username": reg.username,
                "passwordFile": str(d / "pw"),
            },
        }
        c.write_text(yaml.safe_dump(doc, sort_keys=False))
        r = deploy(d, some, world.pub)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "--all-platforms" in r.stderr and "acme/multi" in r.stderr
        assert not hs.by_name("cp1").path("/var/lib/mk8s").exists()  # nothing changed
        r = deploy(d, every, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        got = reg.session().get(
            f"{reg.url}/v2/acme/multi/manifests/{index.digest}",
            headers={"Accept": oci.OCI_INDEX},
        )
        assert got.status_code == 200 and got.content == index.index  # the lock's pin
        st = mk8s("status", "-f", "cluster.yaml", cwd=d)
        assert st.returncode == 0, st.stdout + st.stderr
