"""The stand-in keeps HelmCharts as RKE2's deploy controller and helm-controller do, on a
real test host driven by hand (tests/support/standin/helmcontroller.py):

* one Helm release per HelmChart *object name*: a chart's next version under another
  object name is a second release beside the first;
* removing a file from server/manifests deletes nothing; deleting the HelmChart
  (kubectl) uninstalls its release; a server that starts applies every file again;
* a chartContent over 1 MiB (the ConfigMap helm-controller stores it in) never installs.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.charts import chart_tgz
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    IMAGES,
    KUBECTL,
    RESET,
    TAG,
    configure,
    install,
    ssh,
    start,
    write_artifacts,
)

pytestmark = pytest.mark.hosts

MANIFESTS = "/var/lib/rancher/rke2/server/manifests"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("full"), TAG, [IMAGES])


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(1, tmp_path_factory.mktemp("helm-hosts"), names=["cp1"]) as hs:
        yield hs


@pytest.fixture
def cp1(hs: HostSet, full: Path) -> Host:
    h = hs.hosts[0]
    if not h.running:
        h.start()
    h.run(RESET, check=True)
    install(h, full)
    configure(h, "server")
    start(h, "server")
    return h


def helmchart(tmp: Path, obj: str, chart: str, version: str, payload: int = 0) -> str:
    tgz = chart_tgz(tmp / f"{chart}-{version}.tgz", chart, version, payload).read_bytes()
    return (
        "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n"
        f"  name: {obj}\n  namespace: kube-system\nspec:\n  targetNamespace: default\n"
        f"  chartContent: {base64.b64encode(tgz).decode()}\n"
    )


def put(h: Host, name: str, text: str) -> None:
    p = h.ssh(
        f"mkdir -p {MANIFESTS} && cat > {MANIFESTS}/{name}.tmp && mv {MANIFESTS}/{name}.tmp {MANIFESTS}/{name}",
        input=text,
    )
    assert p.returncode == 0, p.stderr


def releases(h: Host) -> dict[str, tuple[str, str, int]]:
    out = json.loads(ssh(h, f"{KUBECTL} get --raw /mk8s/helm-releases").stdout)
    return {r["name"]: (r["chart"], r["version"], r["revision"]) for r in out["items"]}


def charts(h: Host) -> dict[str, dict[str, Any]]:
    out = json.loads(ssh(h, f"{KUBECTL} get helmcharts -A -o json").stdout)
    return {i["metadata"]["name"]: i["status"] for i in out["items"]}


def until(what: Callable[[], Any], want: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_one_release_per_helmchart_name_and_a_removed_file_removes_nothing(
    cp1: Host, tmp_path: Path
) -> None:
    put(cp1, "web-a.yaml", helmchart(tmp_path, "web-1-4-0", "web", "1.4.0"))
    assert until(lambda: releases(cp1), {"web-1-4-0": ("web", "1.4.0", 1)}) == {
        "web-1-4-0": ("web", "1.4.0", 1)
    }
    # The next version under another object name, the old file removed: two releases.
    put(cp1, "web-b.yaml", helmchart(tmp_path, "web-1-5-0", "web", "1.5.0"))
    ssh(cp1, f"rm {MANIFESTS}/web-a.yaml")
    both = {"web-1-4-0": ("web", "1.4.0", 1), "web-1-5-0": ("web", "1.5.0", 1)}
    assert until(lambda: releases(cp1), both) == both
    time.sleep(1.5)  # a few polls later, still both: nothing deleted the old one
    assert releases(cp1) == both
    # Deleting the HelmChart uninstalls its release.
    r = ssh(cp1, f"{KUBECTL} delete helmchart -n kube-system web-1-4-0 --timeout=300s")
    assert 'helmchart.helm.cattle.io "web-1-4-0" deleted' in r.stdout
    assert releases(cp1) == {"web-1-5-0": ("web", "1.5.0", 1)}
    again = ssh(cp1, f"{KUBECTL} delete helmchart -n kube-system web-1-4-0", ok=False)
    assert again.returncode == 1 and "NotFound" in again.stderr
    quiet = f"{KUBECTL} delete helmchart -n kube-system web-1-4-0 --ignore-not-found"
    assert ssh(cp1, quiet).returncode == 0
    # The same object name with the next version: the one release is upgraded.
    put(cp1, "web-b.yaml", helmchart(tmp_path, "web-1-5-0", "web", "1.6.0"))
    up = {"web-1-5-0": ("web", "1.6.0", 2)}
    assert until(lambda: releases(cp1), up) == up


def test_a_starting_server_applies_every_file_again(cp1: Host, tmp_path: Path) -> None:
    put(cp1, "again.yaml", helmchart(tmp_path, "again", "again", "1.0.0"))
    assert until(lambda: "again" in releases(cp1), True)
    ssh(cp1, f"{KUBECTL} delete helmchart -n kube-system again")
    assert "again" not in releases(cp1)
    time.sleep(1.5)  # the unchanged file is not applied again while the server runs
    assert "again" not in releases(cp1)
    ssh(cp1, "systemctl restart rke2-server")
    assert until(lambda: "again" in releases(cp1), True)  # the file was still there


def test_chart_content_over_the_configmap_limit_never_installs(cp1: Host, tmp_path: Path) -> None:
    put(cp1, "big.yaml", helmchart(tmp_path, "big", "big", "1.0.0", payload=800 << 10))
    status = until(lambda: charts(cp1).get("big", {}).get("state"), "failed")
    assert status == "failed"
    err = charts(cp1)["big"]["error"]
    assert 'ConfigMap "chart-content-big" is invalid' in err and "1048576 bytes" in err
    assert "big" not in releases(cp1)
    log = ssh(cp1, "journalctl -u rke2-server --no-pager").stdout
    assert "level=error" in log and "chart-content-big" in log
