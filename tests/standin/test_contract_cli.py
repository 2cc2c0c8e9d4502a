"""The stand-in RKE2 refuses the wrong moves real RKE2 refuses, tools side: kubectl,
manifests and HelmCharts, image import, registries.yaml, the rke2 command, install.sh
and journalctl (tests/support/standin/CONTRACT.md), at unit level on the stand-in's
own files."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import standin
from tests.support.paths import ROOT
from tests.support.standin_program import (
    OTHER_ARCH,
    TAG,
    fatal,
    load,
    program,
    sandboxed,
)


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return program(tmp_path_factory.mktemp("standin"))


@pytest.fixture
def rke2(module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return sandboxed(module, tmp_path, monkeypatch)


# ---- kubectl (CONTRACT KC1, KC2, KC3) ---------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (
            ["get", "nodes", "--ignore-not-found=maybe"],
            'invalid argument "maybe" for "--ignore-not-found"',
        ),
        (["get", "nodes", "-o"], "flag needs an argument: -o"),
        (
            ["drain", "w1", "--grace-period=soon"],
            'invalid argument "soon" for "--grace-period" flag',
        ),
        (["drain", "w1", "--timeout=5x"], 'time: invalid duration "5x"'),
        (["drain", "w1", "--timeout=300"], 'time: missing unit in duration "300"'),
        (["cordon", "w1", "--force"], "unknown flag: --force"),
        (["get", "nodes", "--watch"], "unknown flag: --watch"),
    ],
)
def test_kubectl_flags_are_checked_like_kubectl(
    rke2: ModuleType, argv: list[str], why: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        rke2.parse_kubectl_args(argv)


def test_kubectl_without_a_kubeconfig_is_refused(
    rke2: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rke2.kubectl(["--kubeconfig", str(tmp_path / "none"), "get", "nodes"]) == 1
    assert "The connection to the server localhost:8080 was refused" in capsys.readouterr().err


def test_get_helmcharts_by_name_across_all_namespaces_is_refused(
    rke2: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    def req(*_: object) -> tuple[int, bytes]:
        raise AssertionError("nothing may be asked of the server")

    assert rke2.get_helmcharts(req, lambda *_: 1, ["hello"], {"-A": "true"}, "") == 1
    assert "cannot be retrieved by name across all namespaces" in capsys.readouterr().err


# ---- manifests and HelmCharts (CONTRACT MF1, MF2, MF3, MF4) -----------------------------
def chart(files: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return base64.b64encode(raw.getvalue()).decode()


def helmchart(spec: dict[str, object]) -> dict[str, object]:
    md = {"name": "hello", "namespace": "kube-system"}
    return {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata": md, "spec": spec}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: x\n",
            "metadata.name is required",
        ),
        ("kind: ConfigMap\nmetadata:\n  name: x\n", "Object 'ApiVersion' is missing"),
        ('{"apiVersion": "v1", "kind": "List", "items": {"a": 1}}', "items is not a list"),
        ("--- apiVersion: v1\n", "content after the document marker"),
    ],
)
def test_manifest_objects_need_apiversion_kind_and_name(
    rke2: ModuleType, text: str, why: str
) -> None:
    with pytest.raises(rke2.ManifestError, match=re.escape(why)):
        rke2.parse_manifest("m.yaml", text.encode())


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"chart": "hello", "repo": "https://charts.example"}, "no chart repository is reachable"),
        ({}, "neither spec.chart nor spec.chartContent"),
        ({"chartContent": "not base64!"}, "not base64"),
        ({"chartContent": base64.b64encode(b"plain bytes").decode()}, "not a chart archive"),
        ({"chartContent": chart({"README.md": b"x"})}, "no NAME/Chart.yaml"),
        (
            {"chartContent": chart({"hello/Chart.yaml": b"name: hello\n"})},
            "name and version are required",
        ),
    ],
)
def test_a_helmchart_that_cannot_be_installed_fails_its_whole_file(
    rke2: ModuleType, tmp_path: Path, spec: dict[str, object], why: str
) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before"}}
    path = tmp_path / "hello.json"
    path.write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": [configmap, helmchart(spec)]})
    )
    rec = rke2.process_manifest(str(path))
    assert rec["status"] == "failed" and why in rec["error"]
    assert rec["objects"] == []  # nothing of the file, the ConfigMap before it included
    good = {"chartContent": chart({"hello/Chart.yaml": b"name: hello\nversion: 0.1.0\n"})}
    path.write_text(json.dumps(helmchart(good)))
    rec = rke2.process_manifest(str(path))
    assert rec["status"] == "applied" and rec["objects"][0]["version"] == "0.1.0"


def test_manifest_files_that_are_hidden_skipped_or_not_yaml_json_are_ignored(
    rke2: ModuleType,
) -> None:
    d = Path(rke2.MANIFESTS_DIR)
    d.mkdir(parents=True)
    for name in (
        "a.yaml",
        "b.yml",
        "c.json",
        "d.yaml",
        "d.yaml.skip",
        ".e.yaml",
        "f.txt",
        "g.yaml.bak",
    ):
        (d / name).write_text("{}")
    assert rke2.manifest_files() == ["a.yaml", "b.yml", "c.json"]


# ---- image import and registries.yaml (CONTRACT IP3, RG3) -------------------------------
def tar_file(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return str(path)


def test_an_image_tarball_that_is_no_image_archive_is_an_import_error(
    rke2: ModuleType, tmp_path: Path
) -> None:
    errors = {
        "plain.tar": ({"hello.txt": b"hi"}, "neither an OCI image layout"),
        "layout.tar": (
            {"oci-layout": b'{"imageLayoutVersion": "2.0.0"}', "index.json": b'{"manifests": []}'},
            "unsupported image layout version",
        ),
        "tags.tar": (
            {
                "manifest.json": json.dumps(
                    [{"Config": "c.json", "RepoTags": ["Not/Valid:1"]}]
                ).encode()
            },
            "invalid image reference 'Not/Valid:1'",
        ),
    }
    for name, (files, why) in errors.items():
        with pytest.raises(rke2.ImageImportError, match=re.escape(why)):
            rke2.import_archive(tar_file(tmp_path / name, files))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("mirrors:\n\tdocker.io:\n", "tabs in indentation"),
        ("- docker.io\n", "not a mapping"),
        ("mirrors:\n  docker.io:\n    endpoint: [a, b\n", "bad flow list"),
        ("mirrors:\n  docker.io:\n      endpoint: x\n    bad: y\n", "unexpected indentation"),
    ],
)
def test_registries_yaml_outside_the_subset_is_refused(
    rke2: ModuleType, text: str, why: str
) -> None:
    path = Path(rke2.REGISTRIES)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert why in fatal(rke2, rke2.load_registries)


# ---- the rke2 command (CONTRACT CL1, CL2) -----------------------------------------------
def test_a_binary_of_another_arch_does_not_run(
    tmp_path: Path, rke2: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    other = program(tmp_path, OTHER_ARCH, "rke2_standin_other")
    for argv in (["server"], ["--version"], ["--help"], []):
        assert other.main(["/usr/local/bin/rke2", *argv]) == 126, argv
        out = capsys.readouterr()
        assert "Exec format error" in out.err and out.out == "", argv
    assert rke2.main(["/usr/local/bin/rke2", "--version"]) == 0  # the control: its own arch
    assert capsys.readouterr().out.startswith(f"rke2 version {TAG}")
    assert rke2.main(["/usr/local/bin/rke2", "serve"]) == 3
    assert 'No help topic for "serve"' in capsys.readouterr().err


# ---- install.sh and journalctl (CONTRACT IN2, IN4, IN5, JC1) ----------------------------
@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"INSTALL_RKE2_METHOD": "rpm"}, "supports only the tar method"),
        ({"ARCH": "s390x"}, "unsupported architecture s390x"),
        ({}, "can not find curl or wget"),  # no INSTALL_RKE2_ARTIFACT_PATH: nothing to download
    ],
)
def test_install_sh_refusals(tmp_path: Path, env: dict[str, str], why: str) -> None:
    script = tmp_path / "install.sh"
    script.write_bytes(standin.install_script(TAG))
    prefix = tmp_path / "prefix"
    full = {"PATH": os.environ["PATH"], "INSTALL_RKE2_TAR_PREFIX": str(prefix), **env}
    root = [] if os.geteuid() == 0 else ["unshare", "-r"]  # install.sh wants root
    p = subprocess.run(
        [*root, "sh", str(script)], env=full, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1 and why in p.stderr, p.stderr
    assert not prefix.exists()


def test_journalctl_needs_a_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journalctl = load(tmp_path / "journalctl.py", standin.journalctl_script(), "journalctl_standin")
    assert journalctl.main(["-n", "5"]) == 1
    assert "only -u UNIT is supported" in capsys.readouterr().err


# ---- the table itself ----------------------------------------------------------------
STANDIN = Path(standin.__file__).parent


def test_the_contract_table_names_real_tests_and_every_cited_rule() -> None:
    """CONTRACT.md names tests that exist, and the ids the code's ``# upstream:``
    comments cite are exactly the table's."""
    table = (STANDIN / "CONTRACT.md").read_text()
    # "`short` = `tests/...py`": the files the table's short names stand for
    files = dict(re.findall(r"`([a-z0-9_]+)` =\s+`(tests/[a-z_/]+\.py)`", table))
    assert len(files) == 15, files
    for short, name in re.findall(r"\b([a-z0-9_]+)::(test_[a-z0-9_]+)", table):
        assert short in files, f"{short}:: is not one of the table's test files"
        text = (ROOT / files[short]).read_text()
        assert re.search(rf"^def {name}\(", text, re.M), f"{short}::{name}"
    rows = set(re.findall(r"^\| ([A-Z]{2}[0-9]+) \|", table, re.M))
    cited: set[str] = set()
    for f in STANDIN.iterdir():
        if f.is_file() and f.suffix != ".md":
            for ids in re.findall(r"\[CONTRACT ([A-Z0-9 ]+)\]", f.read_text()):
                cited |= set(ids.split())
    assert cited == {r for r in rows if not r.startswith("VG")}
