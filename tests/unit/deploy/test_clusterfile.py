"""Reading cluster.yaml, pinned: the exact bounds of the alias-bomb and nesting guards
(at the limit is fine, one past is refused, counted the way the constructed document
holds values), and the exact message and fix of every refusal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mk8s.deploy import clusterfile
from mk8s.deploy.cluster import load_cluster
from mk8s.deploy.clusterfile import read_document
from mk8s.errors import ClusterFileError
from tests.support.clusters import cluster_text, write_cluster

VALID = """\
apiVersion: mk8s/v1alpha1
kind: Cluster
metadata:
  name:
    lab
spec:
  nodes:
    - address: 10.0.0.11
      role: server
"""


def refused(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ClusterFileError) as e:
        read_document(p, "c.yaml")
    assert e.value.exit_code == 2
    return str(e.value)


def composed(tmp_path: Path, text: str) -> None:
    """``text`` passes the size guards (it then fails the checks that run after them:
    a file of only the value under test is no cluster file)."""
    assert refused(tmp_path, text).startswith(
        ("c.yaml:1: apiVersion: None is not supported", "c.yaml:1: expected a mapping")
    )


# -- alias bombs: every value the constructed document would hold is counted ------------


def test_value_count_at_and_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clusterfile, "MAX_NODES", 7)
    # The root mapping, and three keys with three values: 7 values.
    composed(tmp_path, "a: 1\nb: 2\nc: 3\n")
    assert refused(tmp_path, "a: 1\nb: 2\nc: 3\nd: 4\n") == (
        "c.yaml: expands to more than 7 values (YAML aliases?); write the values out;"
        " a cluster file needs no alias expansion this large"
    )


def test_aliases_count_once_per_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clusterfile, "MAX_NODES", 8)
    # root 1, key a and [x, y] 4, key c and [1] 3: 8, the limit
    composed(tmp_path, "a: &a [x, y]\nc: [1]\n")
    # root 1, a 4, key b and *a counted as the list it stands for 4: 9 (7 if *a were 1)
    assert refused(tmp_path, "a: &a [x, y]\nb: *a\n") == (
        "c.yaml: expands to more than 8 values (YAML aliases?); write the values out;"
        " a cluster file needs no alias expansion this large"
    )


# -- nesting: the root is level 1, a mapping's keys and values and a sequence's items one
# level below it -------------------------------------------------------------------------


def test_nesting_at_and_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clusterfile, "MAX_DEPTH", 4)
    composed(tmp_path, "a: [[x]]\n")  # mapping 1, [ 2, [ 3, x 4
    assert refused(tmp_path, "\n\na: [[[x]]]\n") == (
        "c.yaml:3: nested deeper than 4 levels; a cluster file is shallow; check the indentation"
    )


def test_sequences_nest_like_mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clusterfile, "MAX_DEPTH", 3)
    composed(tmp_path, "- [x]\n")  # [ 1, [ 2, x 3
    assert refused(tmp_path, "- [[x]]\n").startswith("c.yaml:1: nested deeper than 3 levels")


def test_mapping_keys_count_as_deep_as_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clusterfile, "MAX_DEPTH", 3)
    composed(tmp_path, "a: {b: c}\n")  # keys b and value c at level 3
    # A complex key nested deeper than its (plain) value is found too.
    assert refused(tmp_path, "a:\n  ? [[x]]\n  : v\n").startswith(
        "c.yaml:2: nested deeper than 3 levels"
    )


def test_real_nesting_limit_is_64(tmp_path: Path) -> None:
    composed(tmp_path, "a: " + "[" * 62 + "x" + "]" * 62 + "\n")
    assert refused(tmp_path, "a: " + "[" * 63 + "x" + "]" * 63 + "\n") == (
        "c.yaml:1: nested deeper than 64 levels; a cluster file is shallow; check the indentation"
    )


def test_nesting_past_what_the_parser_follows(tmp_path: Path) -> None:
    assert refused(tmp_path, "a: " + "[" * 20_000 + "]" * 20_000 + "\n") == (
        "c.yaml: nested more than this parser can follow; a cluster file is shallow"
    )


# -- other refusals, exactly ---------------------------------------------------------------


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(VALID.encode() + b"# \xff\n")
    with pytest.raises(ClusterFileError) as e:
        load_cluster(p)
    assert str(e.value) == (
        f"{p}: not UTF-8 text ('utf-8' codec can't decode byte 0xff in position"
        f" {len(VALID) + 2}: invalid start byte); save it as UTF-8"
    )


def test_document_line_of_a_value_or_its_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(VALID)
    doc = read_document(p, "c.yaml")
    assert doc.line(["metadata", "name"]) == 5
    assert doc.line(["metadata", "name"], key=True) == 4
    assert doc.line(["spec", "nodes", 0, "role"]) == 9
    assert doc.line(["spec", "nodes", 3]) == 8  # the nearest parent that exists
    assert doc.data["metadata"]["name"] == "lab"


# -- what a refusal may quote: one line, no secret, sizes not values ------------------


def test_a_reader_error_is_one_line(tmp_path: Path) -> None:
    msg = refused(tmp_path, "apiVersion: mk8s/v1alpha1\x07\nmk8s: error: forged\n")
    assert msg.startswith("c.yaml: not valid YAML: unacceptable character #x0007")
    assert "\n" not in msg and msg.endswith("; fix the YAML syntax")


def test_a_schema_error_quotes_sizes_not_values(tmp_path: Path) -> None:
    sans = ", ".join(str(i) for i in range(3000))
    text = VALID.replace("spec:\n", f"spec:\n  rke2:\n    serverUrl: 'https://{'a' * 300}/x'\n")
    msg = refused(tmp_path, text)
    assert msg.startswith("c.yaml:8: spec.rke2.serverUrl: 'https://aaaa")
    assert "aaaa... (" in msg and " more characters)" in msg  # shown() cut it at 300
    text = VALID.replace(
        "metadata:\n  name:\n    lab\n", f"metadata:\n  name: lab\n  x: [{sans}]\n"
    )
    msg = refused(tmp_path, text)
    assert "h2999" not in msg and len(msg) < 400


def test_a_schema_error_masks_a_url_password_and_escapes_key_names(tmp_path: Path) -> None:
    text = VALID.replace("spec:\n", "spec:\n  rke2:\n    serverUrl: 'ftp://u:s3cret@x'\n")
    msg = refused(tmp_path, text)
    assert msg.startswith("c.yaml:8: spec.rke2.serverUrl: 'ftp://***@x' does not match ")
    assert "s3cret" not in msg
    text = VALID.replace("spec:\n", 'spec:\n  "a\\nmk8s: error: forged": 1\n')
    msg = refused(tmp_path, text)
    assert "spec.a\\nmk8s: error: forged: unknown field" in msg and "\n" not in msg


# -- hostile files: alias bombs, deep nesting, huge files, FIFOs and devices -------------
def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    body = cluster_text(rke2="  rke2:\n    config:\n" + "".join(f"      {ln}\n" for ln in lines))
    p = write_cluster(tmp_path, body)
    start = time.monotonic()
    with pytest.raises(ClusterFileError, match="expands to more than"):
        load_cluster(p, check_files=False)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("depth", [100, 20_000])
def test_deep_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    body = cluster_text(rke2="  rke2:\n    config: {x: " + "[" * depth + "]" * depth + "}\n")
    with pytest.raises(ClusterFileError, match="nested"):
        load_cluster(write_cluster(tmp_path, body), check_files=False)


def test_huge_cluster_file_is_refused(tmp_path: Path) -> None:
    p = write_cluster(tmp_path, cluster_text() + "#" * (2 << 20) + "\n")
    with pytest.raises(ClusterFileError, match="larger than"):
        load_cluster(p, check_files=False)


def test_fifo_and_device_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ClusterFileError, match="a FIFO, not a regular file"):
        load_cluster(fifo)
    with pytest.raises(ClusterFileError, match="a device, not a regular file"):
        load_cluster(Path("/dev/zero"))
    with pytest.raises(ClusterFileError, match="directory"):
        load_cluster(tmp_path)
