"""One benchmark row: both sides' samples, the ratio and its budget."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.measure import human_bytes, median


@dataclass
class Row:
    name: str
    what: str
    unit: str  # "s" (lower is better) or "MB/s" (higher is better)
    budget: str
    check: Callable[[float], bool]  # on the ratio
    rss_budget: int | None = None  # bytes, on ours' peak RSS
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    ours_rss: list[int] = field(default_factory=list)
    base_rss: list[int] = field(default_factory=list)
    extra_checks: dict[str, bool] = field(default_factory=dict)  # e.g. zero bytes uploaded
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # "not run: <reason>"

    @property
    def ours_median(self) -> float:
        return median(self.ours)

    @property
    def base_median(self) -> float:
        return median(self.base)

    @property
    def ratio(self) -> float:
        o, b = self.ours_median, self.base_median
        if not self.ours or not self.base or b == 0:
            return float("nan")
        return o / b

    @property
    def peak_rss(self) -> int | None:
        return max(self.ours_rss) if self.ours_rss else None

    @property
    def ok(self) -> bool | None:
        if self.skipped or math.isnan(self.ratio):
            return None
        good = self.check(self.ratio)
        if self.rss_budget is not None and self.peak_rss is not None:
            good = good and self.peak_rss <= self.rss_budget
        return good and all(self.extra_checks.values())

    def as_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        return {
            "name": self.name,
            "what": self.what,
            "unit": self.unit,
            "ours": num(self.ours_median),
            "baseline": num(self.base_median),
            "ratio": num(self.ratio),
            "budget": self.budget,
            "pass": self.ok,
            "peak_rss": self.peak_rss,
            "baseline_peak_rss": max(self.base_rss) if self.base_rss else None,
            "rss_budget": self.rss_budget,
            "ours_samples": [round(x, 6) for x in self.ours],
            "baseline_samples": [round(x, 6) for x in self.base],
            "checks": self.extra_checks,
            "notes": self.notes,
            "skipped": self.skipped,
        }


def _fmt(x: float, unit: str) -> str:
    if math.isnan(x):
        return "-"
    if unit == "MB/s":
        return f"{x:.0f} MB/s"
    if unit == "B":
        return human_bytes(int(x))
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def table(rows: list[Row]) -> str:
    head = ["what", "ours", "baseline", "ratio", "budget", "pass/fail", "peak RSS"]
    lines = []
    for r in rows:
        if r.skipped:
            lines.append([r.name, "-", "-", "-", r.budget, r.skipped, "-"])
            continue
        ok = r.ok
        verdict = "PASS" if ok else ("FAIL" if ok is False else "-")
        failed = [k for k, v in r.extra_checks.items() if not v]
        if failed:
            verdict += f" ({', '.join(failed)})"
        rss = "-" if r.peak_rss is None else human_bytes(r.peak_rss)
        if r.base_rss:
            rss += f" (base {human_bytes(max(r.base_rss))})"
        ratio = "-" if math.isnan(r.ratio) else f"{r.ratio:.3f}"
        lines.append(
            [
                r.name,
                _fmt(r.ours_median, r.unit),
                _fmt(r.base_median, r.unit),
                ratio,
                r.budget,
                verdict,
                rss,
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for ln in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(ln, widths, strict=True)))
    return "\n".join(out)
