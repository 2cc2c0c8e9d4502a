"""Our side of the upload row, run as its own process: ``SSHTransport.put`` of one file.

Prints one JSON line: seconds (connect + authenticate + put + close, as the OpenSSH
``sftp`` process does them; interpreter start and imports are not counted), bytes
and the negotiated cipher.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mk8s.deploy.cluster import SSHSettings
from mk8s.deploy.transport import SSHTransport


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--user", default="root")
    ap.add_argument("--identity", required=True, type=Path)
    ap.add_argument("--known-hosts", required=True, type=Path)
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--dst", required=True)
    a = ap.parse_args(argv)
    settings = SSHSettings(
        user=a.user,
        identity_file=a.identity,
        known_hosts=a.known_hosts,
        host_key_policy="strict",
    )
    start = time.perf_counter()
    t = SSHTransport("bench", a.address, settings)
    t.connect()
    cipher = t.cipher
    sent = t.put(a.src, a.dst)
    t.close()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "bytes": sent, "cipher": cipher}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
