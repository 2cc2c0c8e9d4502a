"""What changed between two bundles or locks: for the reviewer who approves a transfer.

Compares the RKE2 release (tag, architectures, CNI, image groups), the artifacts (by
path in the bundle: added, removed, or changed size/sha256) and, when both sides are
bundles whose contents were read, the container images (by name, tag and platform:
added, removed, or the same name and tag now at another digest) and Helm charts.
A lock carries no image contents, so with a lock on either side images are "not
compared", and the output says so rather than claiming nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mk8s.bundle.provenance.inventory import Image, Inventory


@dataclass(frozen=True)
class Change:
    """One item: ``old`` / ``new`` hold its JSON form on each side (None: absent)."""

    key: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    @property
    def status(self) -> str:
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "changed"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Diff:
    old: Inventory
    new: Inventory
    release: tuple[Change, ...]
    artifacts: tuple[Change, ...]
    images: tuple[Change, ...] | None  # None: not compared (a lock on one side)
    charts: tuple[Change, ...] | None

    @property
    def empty(self) -> bool:
        return not (self.release or self.artifacts or self.images or self.charts)

    def to_json(self) -> dict[str, Any]:
        def side(inv: Inventory) -> dict[str, Any]:
            return {
                "kind": inv.lock.kind,
                "rke2": inv.lock.release.tag,
                "resolvedAt": inv.lock.resolved_at,
                "artifacts": len(inv.artifacts),
                "contentsRead": inv.contents is not None,
            }

        def changes(items: tuple[Change, ...] | None) -> list[dict[str, Any]] | None:
            return None if items is None else [c.to_json() for c in items]

        return {
            "old": side(self.old),
            "new": side(self.new),
            "identical": self.empty,
            "rke2": changes(self.release),
            "artifacts": changes(self.artifacts),
            "images": changes(self.images),
            "charts": changes(self.charts),
        }


def _compare(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> tuple[Change, ...]:
    keys = sorted(set(old) | set(new))
    return tuple(Change(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))


def _release(inv: Inventory) -> dict[str, dict[str, Any]]:
    r = inv.lock.release
    fields = {
        "tag": r.tag,
        "arch": ",".join(r.arch),
        "cni": r.cni,
        "imageGroups": ",".join(r.image_groups),
    }
    return {k: {"value": v} for k, v in fields.items()}


def _artifacts(inv: Inventory) -> dict[str, dict[str, Any]]:
    return {
        a.path: {"name": a.name, "kind": a.kind, "size": a.size, "sha256": a.sha256}
        for a in inv.artifacts
    }


def _image_key(img: Image) -> str:
    name = img.name or f"<unnamed {img.digest}>"
    tag = f":{img.tag}" if img.tag else ""
    return f"{name}{tag} [{','.join(img.platforms) or '?'}]"


def _images(inv: Inventory) -> dict[str, dict[str, Any]]:
    # Which archive carries an image is not a change of the image itself; one name and
    # tag at two digests (a re-tag) shows both.
    digests: dict[str, set[str]] = {}
    for art in inv.artifacts:
        for img in inv.contents_of(art).images:
            digests.setdefault(_image_key(img), set()).add(img.digest)
    return {k: {"digest": ",".join(sorted(v))} for k, v in digests.items()}


def _charts(inv: Inventory) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for art in inv.artifacts:
        for ch in inv.contents_of(art).charts:
            out[ch.name] = {"version": ch.version, "appVersion": ch.app_version}
    return out


def diff(old: Inventory, new: Inventory) -> Diff:
    """Compare two inventories (see the module docstring)."""
    both = old.contents is not None and new.contents is not None
    return Diff(
        old,
        new,
        _compare(_release(old), _release(new)),
        _compare(_artifacts(old), _artifacts(new)),
        _compare(_images(old), _images(new)) if both else None,
        _compare(_charts(old), _charts(new)) if both else None,
    )


_MARK = {"added": "+", "removed": "-", "changed": "~"}


def _short(h: str) -> str:
    return h.removeprefix("sha256:")[:16]


def _counts(items: Iterable[Change]) -> str:
    items = list(items)
    n = {s: sum(1 for c in items if c.status == s) for s in ("added", "removed", "changed")}
    return f"{n['added']} added, {n['removed']} removed, {n['changed']} changed"


def render_text(d: Diff) -> list[str]:
    """The diff as lines for a person (not yet escaped for the terminal)."""
    o, n = d.old.lock, d.new.lock
    lines = [
        f"old: {o.kind} RKE2 {o.release.tag}, resolved {o.resolved_at}",
        f"new: {n.kind} RKE2 {n.release.tag}, resolved {n.resolved_at}",
    ]
    if d.empty:
        return [*lines, "no differences"]
    for c in d.release:
        before = c.old["value"] if c.old else "-"
        after = c.new["value"] if c.new else "-"
        lines.append(f"rke2 {c.key}: {before or '(none)'} -> {after or '(none)'}")
    lines.append(f"artifacts: {_counts(d.artifacts)}")
    for c in d.artifacts:
        lines.append(f"  {_MARK[c.status]} {c.key}  {_artifact_detail(c)}")
    for what, items in (("images", d.images), ("charts", d.charts)):
        if items is None:
            lines.append(f"{what}: not compared (a lock lists no {what}; compare two bundles)")
            continue
        lines.append(f"{what}: {_counts(items)}")
        for c in items:
            lines.append(f"  {_MARK[c.status]} {c.key}  {_detail(c)}")
    return lines


def _artifact_detail(c: Change) -> str:
    if c.old is None or c.new is None:
        side = c.new or c.old or {}
        return f"{side['size']} bytes sha256:{_short(side['sha256'])}"
    return (
        f"{c.old['size']} -> {c.new['size']} bytes, "
        f"sha256:{_short(c.old['sha256'])} -> sha256:{_short(c.new['sha256'])}"
    )


def _detail(c: Change) -> str:
    def show(side: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in side.items() if v is not None)

    if c.old is None or c.new is None:
        return show(c.new or c.old or {})
    return f"{show(c.old)} -> {show(c.new)}"
