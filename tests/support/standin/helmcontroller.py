"""HelmChart objects and their Helm releases, as RKE2's deploy controller and
helm-controller keep them (runs on the test nodes inside the stand-in program: Python 3
stdlib only, embedded by ``rke2_program``).

The rules modelled, each from the upstream file read:

* k3s-io/k3s pkg/deploy/controller.go (``listFilesIn``, ``deploy``): every file in
  server/manifests is applied when the server starts (``force``), later only when its
  modification time changes; applying *creates or updates the object by name*. Nothing
  removes an object when its file goes (rancher/rke2-docs
  docs/install/packaged_components.md: "Deleting files out of this directory will not
  delete the corresponding resources from the cluster").
* k3s-io/helm-controller pkg/controllers/chart/chart.go: the Helm release of a HelmChart
  is named after the HelmChart *object* (``NAME`` = ``chart.Name`` in the job's
  environment), in ``spec.targetNamespace``: one release per object name, so two
  objects for two versions of one chart are two releases side by side. ``OnRemove``:
  deleting the object runs ``helm-delete-NAME`` (the release is uninstalled).
  ``contentConfigMap``: ``spec.chartContent`` goes into the ConfigMap
  ``chart-content-NAME``, which Kubernetes refuses over 1 MiB of data
  (k3s-io/helm-controller#267): the object exists, the release is never installed.

State (in etcd, one key per object, ``/registry/helm.cattle.io/helmcharts/NS/NAME``:
``apiobjects.Store.helm_data``/``save_helm``; every server reads the same store):
``data["helmcharts"]["NS/NAME"] = {"gen", "namespace", "name", "targetNamespace",
"chart", "version", "content", "file", "revision", "status": "installed"|"failed",
["error"], ["deleted"]}``; ``revision`` counts the Helm release's installs and upgrades.
"""

from __future__ import annotations

import time

CONFIGMAP_MAX = 1 << 20  # bytes of data a ConfigMap may hold


# upstream: k3s-io/helm-controller pkg/controllers/chart/chart.go (contentConfigMap) [CONTRACT HC4]
def content_error(namespace: str, name: str, content: str) -> str | None:
    """helm-controller's failure for a chartContent its ConfigMap cannot hold, or None."""
    if len(content) <= CONFIGMAP_MAX:
        return None
    return (
        f"error syncing '{namespace}/{name}': handler helm-controller-chart-registration:"
        f" failed to create {namespace}/chart-content-{name} /v1, Kind=ConfigMap: ConfigMap"
        f' "chart-content-{name}" is invalid: []: Too long: must have at most'
        f" {CONFIGMAP_MAX} bytes"
    )


def _charts(data: dict) -> dict:
    return data.setdefault("helmcharts", {})


# upstream: k3s-io/helm-controller pkg/controllers/chart/chart.go (job: NAME is chart.Name) [CONTRACT HC1]
def apply(data: dict, obj: dict, file: str) -> tuple[bool, str | None]:
    """The deploy controller applies one HelmChart (``obj``: the manifest record's object
    with chart, version, content, targetNamespace, status, error) from ``file``.
    Returns (whether the object changed, a log line when its release changed)."""
    key = f"{obj['namespace']}/{obj['name']}"
    charts = _charts(data)
    old = charts.get(key)
    live = old if old and not old.get("deleted") else None
    same = live is not None and live.get("content") == obj.get("content")
    if live is not None and same and live.get("status") == obj.get("status"):
        if live.get("file") == file:
            return False, None
        charts[key] = {**live, "file": file, "gen": time.time_ns()}
        return True, None
    failed = obj.get("status") == "failed"
    revision = (live or {}).get("revision", 0) + (0 if failed or same else 1)
    new = {k: obj.get(k) for k in ("namespace", "name", "targetNamespace", "chart", "version")}
    new.update(content=obj.get("content"), file=file, revision=revision, gen=time.time_ns())
    new["status"] = "failed" if failed else "installed"
    if failed:
        new["error"] = obj.get("error", "")
        charts[key] = new
        return True, f"HelmChart {key}: {new['error']}"
    charts[key] = new
    what = "upgraded" if live and live.get("status") == "installed" else "installed"
    release = f"{new['targetNamespace']}/{new['name']}"
    return (
        True,
        f"Helm release {release} {what}: chart {new['chart']} {new['version']} (rev {revision})",
    )


# upstream: k3s-io/helm-controller pkg/controllers/chart/chart.go (OnRemove: helm-delete-NAME) [CONTRACT HC3]
def delete(data: dict, namespace: str, name: str) -> dict | None:
    """``kubectl delete helmchart``: the object goes and helm-controller uninstalls its
    release (OnRemove). Returns the deleted object, None when there is none."""
    key = f"{namespace}/{name}"
    old = _charts(data).get(key)
    if not old or old.get("deleted"):
        return None
    _charts(data)[key] = {**old, "deleted": True, "status": "uninstalled", "gen": time.time_ns()}
    return old


def objects(data: dict) -> list[dict]:
    """The HelmChart objects that exist, by namespace and name."""
    return [dict(o) for _, o in sorted(_charts(data).items()) if not o.get("deleted")]


def releases(data: dict) -> list[dict]:
    """The deployed Helm releases: one per installed HelmChart object."""
    return [
        {
            "namespace": o["targetNamespace"],
            "name": o["name"],
            "chart": o["chart"],
            "version": o["version"],
            "revision": o["revision"],
            "status": "deployed",
        }
        for o in objects(data)
        if o.get("status") == "installed"
    ]


def merge(mine: dict, other: dict) -> bool:
    """Take each object the peer has newer (by ``gen``); True when something changed."""
    dirty = False
    charts = _charts(mine)
    for key, o in (other.get("helmcharts") or {}).items():
        if key not in charts or o.get("gen", 0) > charts[key].get("gen", 0):
            charts[key] = o
            dirty = True
    return dirty
