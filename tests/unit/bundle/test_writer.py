"""mk8s/bundle/format/writer.py: the bundle's layout and owner, determinism across threads and
runs, and a writer that leaves nothing behind when its input changes or the disk fills."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from mk8s.bundle.format import keys
from mk8s.bundle.format.manifest import Lock
from mk8s.bundle.format.writer import WriteSettings, write_bundle
from mk8s.errors import ChecksumMismatch, OutputError
from tests.support import bundles


def test_layout_order_and_owner(good: Path) -> None:
    data = zstandard.ZstdDecompressor().stream_reader(good.open("rb")).read()
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        infos = tf.getmembers()
    names = [i.name for i in infos]
    assert names[:2] == ["mk8s-bundle.json", "mk8s-bundle.json.sig"]
    assert names[2:] == sorted(names[2:])
    manifest = json.loads(tf.extractfile if False else data[512 : 512 + infos[0].size])
    assert [a["path"] for a in manifest["artifacts"]] == names[2:]
    assert {(i.uid, i.gid, i.uname, i.gname, i.mode, i.mtime) for i in infos} == {
        (0, 0, "", "", 0o644, Lock.from_bytes(data[512 : 512 + infos[0].size]).mtime)
    }


@pytest.mark.parametrize("algorithm", keys.ALGORITHMS)
def test_deterministic_across_threads_and_runs(tmp_path: Path, algorithm: str) -> None:
    key = keys.generate_private_key(algorithm)
    # Big enough that multi-threaded zstd really splits the input into several jobs.
    files = bundles.make_files(tmp_path / "f", {"a.bin": 9_000_000, "b.txt": 0})
    text = tmp_path / "f" / "c.txt"
    text.write_bytes(b"compressible line\n" * 600_000)
    files["c.txt"] = text
    outs = []
    for i, threads in enumerate((1, 2, 4)):
        w, _ = bundles.build(
            tmp_path, key, files=files, out=tmp_path / f"{i}.tar.zst", threads=threads
        )
        outs.append(w.path.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_writer_refuses_changed_input_and_leaves_nothing(
    tmp_path: Path, signer: keys.PrivateKey
) -> None:
    files = bundles.default_files(tmp_path / "f")
    lock = bundles.lock_for(files, bundles.KINDS).as_manifest()
    files["install.sh"].write_bytes(b"changed after locking")
    by_path = {a.path: files[a.name] for a in lock.artifacts}
    out = tmp_path / "out.tar.zst"
    with pytest.raises(ChecksumMismatch, match="install.sh"):
        write_bundle(lock, by_path, out, lambda b: keys.sign(signer, b))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_writer_full_disk_leaves_nothing(tmp_path: Path, signer: keys.PrivateKey) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        files = bundles.default_files(tmp_path / "f")
        lock = bundles.lock_for(files, bundles.KINDS).as_manifest()
        by_path = {a.path: files[a.name] for a in lock.artifacts}
        with pytest.raises(OutputError, match="no space left"):
            write_bundle(
                lock,
                by_path,
                mnt / "b.tar.zst",
                lambda b: keys.sign(signer, b),
                settings=WriteSettings(threads=1),
            )
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
