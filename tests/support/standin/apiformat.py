"""JSON patches and kubectl's Table output for the stand-in's API objects (apiobjects.py).

Shipped in the stand-in's release tarball as ``share/rke2/mk8s_standin/apiformat.py``; it
runs on the test nodes (Python 3 stdlib).
"""

from __future__ import annotations

import datetime
import json
import time


class PatchError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(obj: dict, ops: object) -> dict:
    """RFC 6902 add / replace / remove on object paths (what kubectl sends)."""
    if not isinstance(ops, list):
        raise PatchError(400, "json patch must be a list of operations")
    out = json.loads(json.dumps(obj))
    for op in ops:
        if not isinstance(op, dict) or not str(op.get("path", "")).startswith("/"):
            raise PatchError(422, f"invalid json patch operation {op!r}")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if op.get("op") == "add" else node.get(p, {})
        if op.get("op") in ("add", "replace"):
            node[parts[-1]] = op.get("value")
        elif op.get("op") == "remove":
            node.pop(parts[-1], None)
        else:
            raise PatchError(422, f"unsupported json patch operation {op.get('op')!r}")
    return out


# ---- kubectl's Table output (server-side printing) --------------------------------------
def _age(ts: str) -> str:
    try:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "<unknown>"
    s = max(0, int(time.time() - t.timestamp()))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _cells(resource: str, obj: dict) -> list[tuple[str, object]]:
    md = obj["metadata"]
    head: list[tuple[str, object]] = [("Name", md["name"])]
    if resource == "configmaps":
        head.append(("Data", len(obj.get("data") or {}) + len(obj.get("binaryData") or {})))
    elif resource == "secrets":
        head += [("Type", obj.get("type", "Opaque")), ("Data", len(obj.get("data") or {}))]
    elif resource == "namespaces":
        head.append(("Status", obj.get("status", {}).get("phase", "Active")))
    elif resource == "serviceaccounts":
        head.append(("Secrets", len(obj.get("secrets") or [])))
    return [*head, ("Age", _age(md.get("creationTimestamp", "")))]


def table(resource: str, items: list[dict], include: str = "Metadata") -> dict:
    sample = _cells(resource, {"metadata": {"name": ""}})
    cols = [{"name": n, "type": "integer" if isinstance(v, int) else "string",
             "format": "name" if n == "Name" else "", "description": n, "priority": 0}
            for n, v in sample]  # fmt: skip
    rows = []
    for obj in items:
        row: dict = {"cells": [v for _, v in _cells(resource, obj)]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}  # fmt: skip
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": cols, "rows": rows}  # fmt: skip
