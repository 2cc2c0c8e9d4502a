"""How ``bundle inspect`` describes a delta: its base, and what it carries."""

from __future__ import annotations

from mk8s import ui
from mk8s.bundle.delta.model import BLOB_DIR, DELTA_DIR
from mk8s.bundle.format.manifest import Lock


def inspect_lines(m: Lock) -> list[str]:
    """Lines for a delta's manifest (unverified text: the caller escapes them)."""
    d = m.delta
    assert d is not None
    total = m.total_size
    share = f"{100 * d.carried_bytes / total:.1f}%" if total else "-"
    blobs = [p for p in d.members if p.path.startswith(BLOB_DIR)]
    pieces = [p for p in d.members if p.path.startswith(DELTA_DIR)]
    whole = len(d.members) - len(blobs) - len(pieces)
    lines = [
        f"DELTA:       needs its base, {d.base.describe()}",
        f"  base manifest sha256 {d.base.manifest_sha256}",
        f"  carries {ui.human_bytes(d.carried_bytes)} of the release's"
        f" {ui.human_bytes(total)} ({share}): {whole} artifacts whole,"
        f" {len(blobs)} blobs ({ui.human_bytes(sum(b.size for b in blobs))}),"
        f" {len(pieces)} recipe pieces",
    ]
    for s in d.sources:
        if s.base is not None:
            lines.append(f"  {s.path}: from the base's {s.base}")
        elif s.placed is not None:
            lines.append(
                f"  {s.path}: rebuilt from {s.recipe} as an uncompressed zstd frame"
                f" ({ui.human_bytes(s.placed[0])}; no zstd here reproduces upstream's bytes)"
            )
        elif s.zstd is not None:
            z = s.zstd
            lines.append(
                f"  {s.path}: rebuilt from {s.recipe} and zstd -{z.level}"
                f"{f' --long={z.window_log}' if z.long_distance else ''}"
                f"{' -T0' if z.multithreaded else ''} (zstd {z.library})"
            )
        else:
            lines.append(f"  {s.path}: rebuilt from {s.recipe}")
    return lines


__all__ = ["inspect_lines"]
