"""Mutation testing of the verification core: run mutmut, then score each module.

    python scripts/mutate.py            # mutmut run, then the report
    python scripts/mutate.py --report   # the report of the last run only
    python scripts/mutate.py --min 90   # exit 1 if a module scores below 90%

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the tree into mutants/,
mutates the modules listed there and, for each mutant, runs the non-root tests that
call the mutated function. The tests are selected by directory: the tests of package
mk8s/X live in tests/unit/X/ (test_<module>.py), so the selection names the unit test
directory of every mutated package; this script checks that it does before a run.

This script reads mutmut's results (mutants/**/*.py.meta),
subtracts the mutants recorded as equivalent in mutation/equivalent.txt and prints,
per module: killed / (all - equivalent), then every surviving mutant as a diff line.

A timeout counts as killed (a mutant that makes verify loop forever is caught by it).
"No tests" counts as survived: no test reaches that code.

Equivalent mutants are recorded by what they change, not by mutmut's number (which
shifts whenever the function is edited), one per line::

    mk8s/bundle/format/keys.py || verify_signature || continue || break || why

fields: file, function, the original line, the mutated line (both stripped), reason.
A record that matches no mutant any more is reported as stale.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
EQUIVALENT = ROOT / "mutation" / "equivalent.txt"
KILLED = {1, 3}  # pytest failed, or errored
TIMEOUT = {36, -24, 24, 152, 255}
NOT_RUN = {None, 34, 37}  # not checked, skipped, caught by the type checker


@dataclass(frozen=True)
class Mutant:
    key: str  # mutmut's name, e.g. mk8s.bundle.format.zstdframe.xǁFrameWalkerǁfeed__mutmut_4
    file: str  # mk8s/bundle/format/zstdframe.py
    function: str  # FrameWalker.feed
    old: str  # the original line(s), stripped, joined by " / "
    new: str  # the mutated line(s)
    exit_code: int | None

    @property
    def status(self) -> str:
        if self.exit_code in KILLED:
            return "killed"
        if self.exit_code in TIMEOUT:
            return "timeout"
        if self.exit_code in NOT_RUN:
            return "not run"
        if self.exit_code in (5, 33):
            return "no tests"
        if self.exit_code == 0:
            return "survived"
        return "suspicious"

    @property
    def record(self) -> tuple[str, str, str, str]:
        return (self.file, self.function, self.old, self.new)


def _function_name(mangled: str) -> str:
    # x_load_cluster -> load_cluster; xǁFrameWalkerǁfeed -> FrameWalker.feed
    if mangled.startswith("xǁ"):
        return ".".join(p for p in mangled[2:].split("ǁ") if p)
    return mangled[2:] if mangled.startswith("x_") else mangled


def _body(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            return lines[i + 1 :]
    return lines


def _changed_lines(orig: list[str], mutant: list[str]) -> tuple[str, str]:
    old: list[str] = []
    new: list[str] = []
    # Compare the bodies: the def lines differ by the mangled name.
    for line in difflib.ndiff(_body(orig), _body(mutant)):
        if line.startswith("- "):
            old.append(line[2:].strip())
        elif line.startswith("+ "):
            new.append(line[2:].strip())
    if not old and not new:  # the def line itself: a default value
        a, b = _def_line(orig), _def_line(mutant)
        return a.partition("(")[2], b.partition("(")[2]
    return " / ".join(old) or "-", " / ".join(new) or "-"


def _def_line(lines: list[str]) -> str:
    return next((x.strip() for x in lines if x.lstrip().startswith(("def ", "async def "))), "")


def load_mutants() -> list[Mutant]:
    out: list[Mutant] = []
    for meta_path in sorted(MUTANTS.rglob("*.py.meta")):
        source = meta_path.with_suffix("")
        rel = source.relative_to(MUTANTS).as_posix()
        module = rel.removesuffix(".py").replace("/", ".")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        spans_file = source.with_name(source.name + ".spans")
        spans = json.loads(spans_file.read_text(encoding="utf-8"))["spans"]
        lines = source.read_text(encoding="utf-8").splitlines()

        def body(
            name: str, lines: list[str] = lines, spans: dict[str, list[int]] = spans
        ) -> list[str]:
            a, b = spans[name]
            return lines[a - 1 : b]

        for key, code in meta["exit_code_by_key"].items():
            local = key.removeprefix(module + ".")
            mangled, _, _ = local.rpartition("__mutmut_")
            old, new = _changed_lines(body(f"{mangled}__mutmut_orig"), body(local))
            out.append(Mutant(key, rel, _function_name(mangled), old, new, code))
    return out


def load_equivalent() -> dict[tuple[str, str, str, str], str]:
    records: dict[tuple[str, str, str, str], str] = {}
    if not EQUIVALENT.exists():
        return records
    for n, line in enumerate(EQUIVALENT.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(" || ")]
        if len(fields) != 5 or not fields[4]:
            sys.exit(f"{EQUIVALENT.name}:{n}: expected 'file || function || old || new || reason'")
        records[(fields[0], fields[1], fields[2], fields[3])] = fields[4]
    return records


def report(min_score: float | None) -> int:
    mutants = load_mutants()
    if not mutants:
        print("no mutmut results under mutants/: run `make mutate` first", file=sys.stderr)
        return 2
    equivalent = load_equivalent()
    used: set[tuple[str, str, str, str]] = set()
    by_file: dict[str, list[Mutant]] = defaultdict(list)
    for m in mutants:
        by_file[m.file].append(m)

    failed = False
    survivors: list[Mutant] = []
    print(f"{'module':34} {'mutants':>7} {'equiv':>5} {'killed':>6} {'survived':>8} {'score':>7}")
    for file in sorted(by_file):
        ms = by_file[file]
        equiv = [m for m in ms if m.status != "killed" and m.record in equivalent]
        used.update(m.record for m in equiv)
        counted = [m for m in ms if m not in equiv and m.status != "not run"]
        killed = [m for m in counted if m.status in ("killed", "timeout")]
        alive = [m for m in counted if m.status not in ("killed", "timeout")]
        survivors += alive
        score = 100.0 * len(killed) / len(counted) if counted else 100.0
        low = min_score is not None and score < min_score
        failed |= low
        print(
            f"{file:34} {len(ms):7} {len(equiv):5} {len(killed):6} {len(alive):8}"
            f" {score:6.1f}%{'  < ' + str(min_score) if low else ''}"
        )
    if survivors:
        print(f"\nsurviving mutants ({len(survivors)}); `mutmut show NAME` for the diff:")
        for m in survivors:
            print(f"  [{m.status}] {m.key}")
            print(f"      {' || '.join(m.record)}")
    stale = [r for r in equivalent if r not in used]
    if stale:
        print(f"\n{EQUIVALENT.name}: {len(stale)} records match no surviving mutant (stale):")
        for r in stale:
            print("  " + " || ".join(r))
    return 1 if failed else 0


def selection_problems(config: dict[str, object]) -> list[str]:
    """What the test selection lacks: the unit test directory of each mutated package
    (tests/unit/X/ for mk8s/X/..., or a directory above it)."""
    only = [str(p) for p in config.get("only_mutate", [])]  # type: ignore[attr-defined]
    selection = config.get("pytest_add_cli_args_test_selection", [])
    chosen = [str(p).rstrip("/") for p in selection]  # type: ignore[attr-defined]
    problems = []
    for module in only:
        package = module.removeprefix("mk8s/").rpartition("/")[0]
        tests = f"tests/unit/{package}" if package else "tests/unit"
        if not any(tests == c or tests.startswith(c + "/") for c in chosen):
            problems.append(f"{module}: its tests ({tests}/) are not selected")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--report", action="store_true", help="only report the last run")
    parser.add_argument("--min", type=float, default=None, help="fail below this score (%%)")
    parser.add_argument("--max-children", default="2", help="parallel mutmut workers")
    args = parser.parse_args()
    if not args.report:
        config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
        problems = selection_problems(config)
        for line in problems:
            print(f"pyproject.toml [tool.mutmut]: {line}", file=sys.stderr)
        if problems:
            return 2
        mutmut = Path(sys.executable).with_name("mutmut")
        cmd = [str(mutmut), "run", "--max-children", args.max_children]
        # mutmut draws a progress line per mutant; keep the terminal readable.
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            print(f"mutmut run failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
    return report(args.min)


if __name__ == "__main__":
    sys.exit(main())
