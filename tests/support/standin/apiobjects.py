"""The stand-in's Kubernetes API objects, kept in etcd the way kube-apiserver keeps them.

Shipped in the stand-in's release tarball as ``share/rke2/mk8s_standin/apiobjects.py``; it
runs on the test nodes.  Keys are kube-apiserver's (JSON values, where the real one
stores protobuf): ``/registry/minions/NODE`` (the stand-in's node record, from which the
API builds the Node), ``/registry/leases/kube-node-lease/NODE`` (heartbeats),
``/registry/namespaces/NAME``, ``/registry/RESOURCE/NAMESPACE/NAME`` for ConfigMaps,
Secrets and ServiceAccounts; ``/registry/mk8s-standin/manifests/SERVER`` holds what each
server's deploy controller applied (the HelmCharts the API lists come from it); the
cluster's bootstrap data (CAs, token secret, critical settings) is under
``/bootstrap/<first 12 hex of sha256(token secret)>`` (k3s-io/k3s pkg/cluster/storage.go;
k3s encrypts it with the token, the stand-in stores it in the clear).  Every server's API
reads the same etcd: an object written through one server is read through any other,
and without etcd quorum reads and writes fail (etcd's own).

The generic API: create (POST), get and list (GET, label and field selectors, Table for
kubectl), replace (PUT, with resourceVersion conflicts), patch (JSON merge patch; a
strategic merge patch is applied as a merge patch) and delete, in existing namespaces;
``resourceVersion`` is etcd's mod revision.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from .apiformat import PatchError, json_patch, merge_patch, table

if TYPE_CHECKING:
    from .etcd import Client

NODES = "/registry/minions/"
LEASES = "/registry/leases/kube-node-lease/"
MANIFESTS = "/registry/mk8s-standin/manifests/"
HELMCHARTS = "/registry/helm.cattle.io/helmcharts/"
BOOTSTRAP = "/bootstrap/"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_VERBS = ["create", "delete", "get", "list", "patch", "update"]
# resource -> (Kind, namespaced, short names)
RESOURCES = {
    "namespaces": ("Namespace", False, ["ns"]),
    "configmaps": ("ConfigMap", True, ["cm"]),
    "secrets": ("Secret", True, []),
    "serviceaccounts": ("ServiceAccount", True, ["sa"]),
}
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ApiError(Exception):
    def __init__(
        self, code: int, message: str, details: dict | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.reason = reason  # '' : the usual one for the code


def bootstrap_key(secret: str) -> str:
    return BOOTSTRAP + hashlib.sha256(secret.encode()).hexdigest()[:12]


def api_resources() -> list[dict]:
    """The /api/v1 discovery entries of the generic resources."""
    return [
        {"name": r, "singularName": kind.lower(), "namespaced": ns, "kind": kind,
         "verbs": _VERBS, "shortNames": short}
        for r, (kind, ns, short) in RESOURCES.items()
    ]  # fmt: skip


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """The node registry in etcd (what the stand-in's State kept in a file before)."""

    def __init__(self, client: Client, cluster: dict) -> None:
        self.client = client
        self.cluster = cluster
        self.lock = threading.RLock()

    def _json(self, prefix: str) -> dict[str, tuple[dict, int]]:
        out = {}
        for kv in self.client.range(prefix, prefix=True):
            out[kv["key"][len(prefix) :]] = (json.loads(kv["value"]), kv["mod_revision"])
        return out

    def live(self) -> dict[str, dict]:
        """name -> node record, with ``heartbeat`` (its lease's renew time) and ``rv``."""
        leases = {n: v.get("renewTime", 0) for n, (v, _) in self._json(LEASES).items()}
        return {
            n: dict(e, heartbeat=leases.get(n, 0), rv=rev)
            for n, (e, rev) in sorted(self._json(NODES).items())
        }

    def record(self, name: str) -> dict | None:
        """The node's record alone (no lease)."""
        kv = self.client.get(NODES + name)
        return dict(json.loads(kv["value"]), rv=kv["mod_revision"]) if kv else None

    def node(self, name: str) -> dict | None:
        kv = self.client.get(NODES + name)
        if kv is None:
            return None
        lease = self.client.get(LEASES + name)
        hb = json.loads(lease["value"]).get("renewTime", 0) if lease else 0
        return dict(json.loads(kv["value"]), heartbeat=hb, rv=kv["mod_revision"])

    def members(self) -> dict[str, dict]:
        return {n: e for n, e in self.live().items() if e["role"] == "server"}

    def put(self, name: str, entry: dict) -> None:
        rec = {k: v for k, v in entry.items() if k not in ("heartbeat", "rv")}
        self.client.put(NODES + name, json.dumps(rec, sort_keys=True).encode())

    def delete(self, name: str) -> bool:
        self.client.delete(LEASES + name)
        return bool(self.client.delete(NODES + name))

    def heartbeat(self, name: str) -> None:
        lease = {"holderIdentity": name, "renewTime": time.time()}
        self.client.put(LEASES + name, json.dumps(lease).encode())

    def manifests(self) -> dict[str, dict]:
        return {n: v for n, (v, _) in self._json(MANIFESTS).items()}

    def helm_data(self) -> dict:
        """helmcontroller.py's state: ``{"helmcharts": {"NS/NAME": object}}``, from etcd."""
        return {"helmcharts": {k: v for k, (v, _) in self._json(HELMCHARTS).items()}}

    def save_helm(self, data: dict) -> None:
        """Write back the HelmCharts helmcontroller.py changed in ``data``."""
        before = self.helm_data()["helmcharts"]
        for key, obj in data.get("helmcharts", {}).items():
            if before.get(key) != obj:
                self.client.put(HELMCHARTS + key, json.dumps(obj, sort_keys=True).encode())

    def put_manifests(self, server: str, record: dict) -> None:
        self.client.put(MANIFESTS + server, json.dumps(record, sort_keys=True).encode())


def new_namespace(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }  # fmt: skip


class Objects:
    """Create, get, list, replace, patch and delete generic objects in etcd."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def key(self, resource: str, ns: str, name: str) -> str:
        return f"/registry/{resource}/{ns}/{name}" if ns else f"/registry/{resource}/{name}"

    def _load(self, resource: str, ns: str, name: str) -> tuple[dict, int]:
        kv = self.client.get(self.key(resource, ns, name))
        if kv is None:
            raise ApiError(404, f'{resource} "{name}" not found', {"name": name, "kind": resource})
        obj = json.loads(kv["value"])
        obj["metadata"]["resourceVersion"] = str(kv["mod_revision"])
        return obj, kv["mod_revision"]

    def _check_ns(self, ns: str) -> None:
        if ns and self.client.get(self.key("namespaces", "", ns)) is None:
            raise ApiError(404, f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})

    def handle(
        self, method: str, resource: str, ns: str, name: str, query: dict, body: object,
        ctype: str, select: Callable[[list[dict], dict], list[dict]],
    ) -> tuple[int, dict]:  # fmt: skip
        kind, namespaced, _ = RESOURCES[resource]
        if namespaced != bool(ns) and (name or method != "GET"):
            where = "a namespace" if namespaced else "no namespace"
            raise ApiError(404, f"{resource} are served with {where} in the path")
        dry = bool(query.get("dryRun"))
        if method == "GET" and not name:
            return 200, self.list(resource, ns, query, select)
        if method == "GET":
            return 200, self._load(resource, ns, name)[0]
        if method == "POST" and not name:
            return 201, self.create(resource, kind, ns, body, dry)
        if method == "PUT" and name:
            return 200, self.replace(resource, kind, ns, name, body, dry)
        if method == "PATCH" and name:
            return 200, self.patch(resource, kind, ns, name, body, ctype, dry)
        if method == "DELETE" and name:
            return 200, self.delete(resource, ns, name, dry)
        raise ApiError(405, f"the stand-in does not support {method} on {resource}")

    def list(self, resource: str, ns: str, query: dict, select: Callable) -> dict:
        prefix = self.key(resource, ns, "") if ns else f"/registry/{resource}/"
        items = []
        for kv in self.client.range(prefix, prefix=True):
            obj = json.loads(kv["value"])
            obj["metadata"]["resourceVersion"] = str(kv["mod_revision"])
            items.append(obj)
        kind = RESOURCES[resource][0]
        return {
            "apiVersion": "v1",
            "kind": kind + "List",
            "metadata": {"resourceVersion": str(max([0, *[int(i["metadata"]["resourceVersion"])
                                                         for i in items]]))},
            "items": select(items, query),
        }  # fmt: skip

    def _validate(self, resource: str, kind: str, ns: str, obj: object) -> dict:
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        if obj.get("kind", kind) != kind or obj.get("apiVersion", "v1") != "v1":
            raise ApiError(
                400,
                f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                f"expected API version (v1) or kind ({obj.get('kind')} is not {kind})",
            )
        md = obj.get("metadata")
        if not isinstance(md, dict):
            raise ApiError(422, f"{kind} is invalid: metadata: Required value")
        if md.get("namespace", ns) != ns:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        name = str(md.get("name", ""))
        if not name or len(name) > 253 or not _NAME.fullmatch(name):
            raise ApiError(
                422,
                f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                "lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        out = dict(obj, apiVersion="v1", kind=kind)
        if resource == "secrets":
            data = dict(out.get("data") or {})
            for k, v in (out.pop("stringData", None) or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            for k, v in data.items():
                try:
                    base64.b64decode(str(v), validate=True)
                except binascii.Error:
                    raise ApiError(
                        422, f'Secret "{name}" is invalid: data[{k}]: not base64'
                    ) from None
            out["data"] = data
            out.setdefault("type", "Opaque")
        if resource == "configmaps":
            for k, v in (out.get("data") or {}).items():
                if not isinstance(v, str):
                    raise ApiError(400, f"ConfigMap data[{k}] must be a string")
        return out

    def create(self, resource: str, kind: str, ns: str, body: object, dry: bool) -> dict:
        md_in = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(md_in, dict) and not md_in.get("name") and md_in.get("generateName"):
            name = md_in["generateName"] + uuid.uuid4().hex[:5]
            body = dict(body, metadata=dict(md_in, name=name))  # type: ignore[call-overload]
        obj = self._validate(resource, kind, ns, body)
        self._check_ns(ns)
        md = dict(obj["metadata"])
        md.pop("resourceVersion", None)
        md |= {"uid": str(uuid.uuid4()), "creationTimestamp": _now()}
        if ns:
            md["namespace"] = ns
        obj["metadata"] = md
        if resource == "namespaces":
            md["labels"] = dict(
                md.get("labels") or {}, **{"kubernetes.io/metadata.name": md["name"]}
            )
            obj |= {"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        key = self.key(resource, ns, md["name"])
        if dry:
            if self.client.get(key) is not None:
                raise self._exists(resource, md["name"])
            return obj
        if not self.client.txn_put(key, json.dumps(obj).encode(), 0):
            raise self._exists(resource, md["name"])
        return self._load(resource, ns, md["name"])[0]

    def _exists(self, resource: str, name: str) -> ApiError:
        return ApiError(
            409,
            f'{resource} "{name}" already exists',
            {"name": name, "kind": resource},
            "AlreadyExists",
        )

    def _store(self, resource: str, ns: str, name: str, obj: dict, rev: int, dry: bool) -> dict:
        obj["metadata"].pop("resourceVersion", None)
        if dry:
            return obj
        if not self.client.txn_put(self.key(resource, ns, name), json.dumps(obj).encode(), rev):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": name, "kind": resource},
            )
        return self._load(resource, ns, name)[0]

    def replace(
        self, resource: str, kind: str, ns: str, name: str, body: object, dry: bool
    ) -> dict:
        old, rev = self._load(resource, ns, name)
        obj = self._validate(resource, kind, ns, body)
        if obj["metadata"].get("name") != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        want = str(obj["metadata"].get("resourceVersion") or "")
        if want and want != str(rev):
            rev = int(want) if want.isdigit() else -1
        keep = {k: old["metadata"][k] for k in ("uid", "creationTimestamp") if k in old["metadata"]}
        obj["metadata"] = dict(obj["metadata"], **keep, **({"namespace": ns} if ns else {}))
        return self._store(resource, ns, name, obj, rev, dry)

    def patch(
        self, resource: str, kind: str, ns: str, name: str, body: object, ctype: str, dry: bool
    ) -> dict:
        old, rev = self._load(resource, ns, name)
        ct = ctype.split(";")[0].strip().lower()
        if ct == "application/json-patch+json":
            try:
                new = json_patch(old, body)
            except PatchError as e:
                raise ApiError(e.code, e.message) from None
        elif ct in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = merge_patch(old, body)
        else:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json, "
                "application/strategic-merge-patch+json",
            )
        obj = self._validate(resource, kind, ns, new)
        return self._store(resource, ns, name, obj, rev, dry)

    def delete(self, resource: str, ns: str, name: str, dry: bool) -> dict:
        if resource == "namespaces" and name in SYSTEM_NAMESPACES[:3]:
            raise ApiError(
                403, f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        obj, _ = self._load(resource, ns, name)
        if not dry:
            if resource == "namespaces":
                for r, (_, namespaced, _) in RESOURCES.items():
                    if namespaced:
                        self.client.delete(self.key(r, name, ""), prefix=True)
            self.client.delete(self.key(resource, ns, name))
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": resource, "uid": obj["metadata"].get("uid", "")},
        }  # fmt: skip


__all__ = ["RESOURCES", "ApiError", "Objects", "Store", "api_resources", "table"]
