#!/usr/bin/python3
"""journalctl stand-in for mk8s test hosts: `journalctl -u UNIT [-n N] [--no-pager] ...`
prints the tail of the unit's log kept by the systemctl stand-in."""

from __future__ import annotations

import os
import sys

LOGS = "/var/log/mk8s-standin"


# upstream: systemd/systemd man/journalctl.xml (-u UNIT, -n N); stricter: -u required [CONTRACT JC1]
def main(argv: list[str]) -> int:
    units: list[str] = []
    lines = 0
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-u", "--unit") and i + 1 < len(argv):
            units.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--unit="):
            units.append(a.split("=", 1)[1])
        elif a.startswith("-u") and len(a) > 2:
            units.append(a[2:])
        elif a in ("-n", "--lines") and i + 1 < len(argv):
            lines = int(argv[i + 1])
            i += 2
            continue
        elif a.startswith("--lines="):
            lines = int(a.split("=", 1)[1])
        elif a.startswith("-n") and a[2:].isdigit():
            lines = int(a[2:])
        i += 1
    if not units:
        print("stand-in journalctl: only -u UNIT is supported", file=sys.stderr)
        return 1
    for unit in units:
        name = unit[: -len(".service")] if unit.endswith(".service") else unit
        path = os.path.join(LOGS, name + ".log")
        if not os.path.exists(path):
            print("-- No entries --")
            continue
        with open(path, errors="replace") as f:
            text = f.readlines()
        sys.stdout.write("".join(text[-lines:] if lines else text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
