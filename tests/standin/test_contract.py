"""The stand-in RKE2 refuses the wrong moves real RKE2 refuses, node side: the rules of
tests/support/standin/CONTRACT.md that no host test showed (config, tokens and joins,
images and versions, TLS and the API, etcd-snapshot), driven at unit level on the
stand-in program itself (tests/support/standin_program.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import standin
from tests.support.standin_program import (
    ARCH,
    OLDER,
    TAG,
    fatal,
    http_fail,
    program,
    sandboxed,
)


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return program(tmp_path_factory.mktemp("standin"))


@pytest.fixture
def rke2(module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return sandboxed(module, tmp_path, monkeypatch)


def put_images(rke2: ModuleType, name: str, tag: str) -> None:
    images = Path(rke2.IMAGES_DIR)
    images.mkdir(parents=True, exist_ok=True)
    (images / name).write_bytes(standin.image_tarball(name, tag=tag))


def cluster_server(rke2: ModuleType, agent_token: str = "") -> object:
    cluster = {
        "ca_hash": "a" * 64,
        "ca_pem": "",
        "secret": "s3cret",
        "agent_token": agent_token,
        "settings": rke2.critical_settings({}),
    }
    # the datastore client: none here (no etcd), so whatever needs etcd fails as without it
    return rke2.Server({}, rke2.apiobjects.Store(None, cluster), "cp1", None)


# ---- config.yaml (CONTRACT CF1, CF2) ---------------------------------------------------
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("node-label:\n  role: worker\n", "nested mappings are not supported"),
        ("token: &t secret\n", "unsupported YAML value"),
        ("- worker\n", "list item without a key"),
        ("tls-san: [a, b\n", "unterminated flow list"),
        ('token: "open\n', "bad double-quoted string"),
    ],
)
def test_config_outside_the_flat_subset_is_refused(rke2: ModuleType, text: str, why: str) -> None:
    assert why in fatal(rke2, rke2.parse_config, text, "config.yaml")


def test_config_dropins_are_read_after_config_yaml_in_name_order(rke2: ModuleType) -> None:
    config = Path(rke2.CONFIG)
    dropins = Path(rke2.CONFIG + ".d")
    dropins.mkdir(parents=True)
    config.write_text("token: a\nnode-label: [x=1]\n")
    (dropins / "20-b.yaml").write_text("token: c\n")
    (dropins / "10-a.yml").write_text("token: b\nnode-label+: [y=2]\n")
    (dropins / "30-c.conf").write_text("token: not-yaml-suffix\n")
    cfg = rke2.load_config(rke2.CONFIG)
    assert cfg["token"] == "c"
    assert cfg["node-label"] == ["x=1", "y=2"]


# ---- tokens and joins (CONTRACT TK3, TK4, TK5, TK6, TK7) --------------------------------
@pytest.mark.parametrize("url", ["", "https://", "https://:9345"])
def test_a_server_url_without_a_host_is_refused(rke2: ModuleType, url: str) -> None:
    assert "invalid server url" in fatal(rke2, rke2.parse_server_url, url)


def test_join_tokens_are_checked_by_the_server(rke2: ModuleType) -> None:
    srv = cluster_server(rke2, agent_token="agent-secret")
    check = srv.check_token  # type: ignore[attr-defined]
    other_ca = "K10" + "b" * 64 + "::server:s3cret"
    for token, role, why in [
        ("", "agent", "no token given"),
        ("wrong", "server", "server token rejected"),
        ("wrong", "agent", "agent token rejected"),
        (other_ca, "server", "token CA hash does not match"),
        ("agent-secret", "server", "server token rejected"),  # the agent token joins no server
        ("K10" + "a" * 64 + "::node:agent-secret", "server", "server token rejected"),
    ]:
        code, msg = http_fail(rke2, check, token, role)
        assert code == 401 and why in msg, (token, role, msg)
    # the control: the right tokens pass
    check("s3cret", "server")
    check("K10" + "a" * 64 + "::server:s3cret", "server")
    check("agent-secret", "agent")
    check("s3cret", "agent")  # the short server token joins agents too


@pytest.mark.parametrize(
    "setting",
    [
        {"embedded-registry": True},
        {"enable-servicelb": True},
        {"secrets-encryption-provider": "secretbox"},
        {"supervisor-metrics": True},
    ],
)
def test_a_server_with_other_critical_settings_is_refused(
    rke2: ModuleType, setting: dict[str, object]
) -> None:
    srv = cluster_server(rke2)
    body = {"role": "server", "name": "cp2", "token": "s3cret", "password": "p"}
    theirs = rke2.critical_settings(setting)
    code, msg = http_fail(rke2, srv.join, {**body, "settings": theirs})  # type: ignore[attr-defined]
    assert code == 400 and "critical configuration value mismatch" in msg
    assert next(iter(setting)) in msg
    # the control: the same settings pass the check (the join itself needs etcd)
    assert rke2.critical_mismatch(theirs, theirs) == ""
    assert rke2.critical_mismatch(rke2.critical_settings({}), theirs) in msg


def test_an_agent_needs_a_server_and_a_token(rke2: ModuleType) -> None:
    assert "--server is required" in fatal(rke2, rke2.run_agent, {"token": "t"})
    assert "--token is required" in fatal(
        rke2, rke2.run_agent, {"server": "https://192.0.2.1:9345"}
    )


def test_an_agent_takes_no_agent_token(
    rke2: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {"server": "https://192.0.2.1:9345", "agent-token": "agent-secret"}
    assert "--token is required" in fatal(rke2, rke2.run_agent, cfg)
    rke2.warn_dropped_keys(cfg)
    assert "Unknown flag --agent-token found in config.yaml, skipping" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://192.0.2.1:9345", "only https:// URLs are supported, invalid scheme"),
        ("192.0.2.1:9345", "invalid server url"),
        ("cp1", "invalid server url"),
    ],
)
def test_a_server_url_that_is_not_https_is_refused(rke2: ModuleType, url: str, why: str) -> None:
    assert why in fatal(rke2, rke2.parse_server_url, url)
    # the control: an https URL without a port goes to 443 (Go's default), not 9345
    assert rke2.parse_server_url("https://cp1") == ("cp1", 443)
    assert rke2.parse_server_url("https://cp1:9345") == ("cp1", 9345)


def test_an_agent_retries_every_refusal_for_ever(
    rke2: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(rke2, "AGENT_RETRY", 0)
    refusals = [
        rke2.HTTPFail(401, "token mismatch: agent token rejected by the server"),
        rke2.HTTPFail(403, "Node password rejected, duplicate hostname"),
        rke2.Fatal("token CA hash does not match the Cluster CA certificate hash"),
        rke2.Fatal("only https:// URLs are supported, invalid scheme: http://x:9345"),
        ConnectionRefusedError("connection refused"),
    ]
    attempts = iter(refusals)

    def attempt() -> str:
        e = next(attempts, None)
        if e is not None:
            raise e
        return "joined"

    assert rke2.agent_retry(attempt) == "joined"  # it gave up on none of them
    err = capsys.readouterr().err
    assert err.count("Waiting to retrieve agent configuration; server is not ready") == 5
    assert "Node password rejected" in err and "token mismatch" in err


def test_a_server_join_needs_a_token_and_a_restart_the_datastore_token(rke2: ModuleType) -> None:
    put_images(rke2, f"rke2-images.linux-{ARCH}.tar.zst", TAG)
    msg = fatal(rke2, rke2.run_server, {"server": "https://192.0.2.1:9345"})
    assert "--token is required when joining" in msg
    # an etcd member whose bootstrap data has another token: the restart is refused
    Path(rke2.SERVER_DIR, "db/etcd/member/wal").mkdir(parents=True)
    Path(rke2.BOOTSTRAP_FILE).parent.mkdir(parents=True)
    Path(rke2.BOOTSTRAP_FILE).write_text(json.dumps({"secret": "first", "ca_hash": "a" * 64}))
    msg = fatal(rke2, rke2.run_server, {"token": "second"})
    assert "bootstrap data already found and encrypted with different token" in msg


# ---- images and versions (CONTRACT IM1, IM2, VS2, VS3, VS4, VS5) ------------------------
def test_a_node_without_its_releases_images_does_not_start(rke2: ModuleType) -> None:
    assert "no image tarballs in" in fatal(rke2, rke2.check_images)
    put_images(rke2, f"rke2-images.linux-{ARCH}.tar.zst", OLDER)  # another release's
    msg = fatal(rke2, rke2.check_images)
    assert f"airgap images of {TAG} missing" in msg and "not " + TAG + "'s images" in msg
    put_images(rke2, f"rke2-images-core.linux-{ARCH}.tar.zst", TAG)  # its own (core)
    rke2.check_images()


def test_a_downgrade_or_a_skipped_minor_is_refused(rke2: ModuleType) -> None:
    recorded = Path(rke2.NODE_VERSION)
    recorded.parent.mkdir(parents=True)

    def last_ran(version: str) -> None:
        recorded.write_text(json.dumps({"version": version}))

    last_ran("v1.28.15+rke2r2")  # a respin of this release is newer
    assert "downgrading RKE2 is not supported" in fatal(rke2, rke2.check_node_version, "agent")
    last_ran("v1.26.15+rke2r1")
    assert "skipping a minor version" in fatal(rke2, rke2.check_node_version, "server")
    rke2.check_node_version("agent")  # the control plane's rule: an agent may
    last_ran(OLDER)
    rke2.check_node_version("server")  # one minor up
    last_ran("v1.28.15-rc1+rke2r1")
    rke2.check_node_version("server")  # rc before final


def test_version_skew_between_nodes_is_refused(rke2: ModuleType) -> None:
    skew = rke2.skew_problem
    assert "within one minor version" in skew("server", "v1.30.1+rke2r1", {"cp1": TAG})
    assert skew("server", "v1.29.1+rke2r1", {"cp1": TAG}) == ""
    servers = {"cp1": TAG, "cp2": "v1.29.1+rke2r1"}
    assert "newer than kube-apiserver" in skew("agent", "v1.29.1+rke2r1", servers)
    assert skew("agent", TAG, servers) == ""


# ---- TLS, kubeconfig and the API (CONTRACT TL2, TL3, TL4, TL5, TL6, TL7) ----------------
def test_a_tls_san_that_is_no_host_name_is_refused(rke2: ModuleType) -> None:
    sans = ["k8s.example", "10.0.0.1", "bad name;x"]
    cluster = {"ca_pem": "", "ca_key": ""}
    leaf = rke2.leaf
    assert "invalid tls-san" in fatal(
        rke2, leaf, "serving", cluster, "ca", "/CN=x", "serving", sans
    )


def test_a_write_kubeconfig_mode_that_is_not_octal_is_refused(rke2: ModuleType) -> None:
    assert rke2.kubeconfig_mode({}) == 0o600
    assert rke2.kubeconfig_mode(rke2.parse_config("write-kubeconfig-mode: 0644\n")) == 0o644
    cfg = {"write-kubeconfig-mode": "0999"}
    assert "invalid write-kubeconfig-mode" in fatal(rke2, rke2.kubeconfig_mode, cfg)


def test_the_api_needs_a_client_certificate_of_system_masters(rke2: ModuleType) -> None:
    srv = cluster_server(rke2)
    api = srv.api  # type: ignore[attr-defined]
    admin = rke2.Who("system:admin", ["system:masters"])
    assert http_fail(rke2, api, "GET", "/api/v1/nodes", {}, {}, None, None)[0] == 401
    code, msg = http_fail(rke2, api, "GET", "/api/v1/nodes", {}, {}, None, rke2.Who("alice", []))
    assert code == 403 and "alice" in msg
    assert api("GET", "/readyz", {}, {}, None, admin)[0] == 503  # not ready yet
    srv.ready = True  # type: ignore[attr-defined]
    assert api("GET", "/readyz", {}, {}, None, admin)[0] == 503  # nor without etcd
    assert http_fail(rke2, api, "POST", "/readyz", {}, {}, None, admin)[0] == 405
    assert http_fail(rke2, api, "POST", "/api/v1/namespaces/x/pods", {}, {}, None, admin)[0] == 405
    assert http_fail(rke2, api, "GET", "/apis/apps/v1/deployments", {}, {}, None, admin)[0] == 404


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ({"fieldSelector": ["status.phase=Running"]}, "field label not supported"),
        ({"labelSelector": ["env in (prod)"]}, "unable to parse requirement"),
    ],
)
def test_selectors_outside_the_supported_set_are_refused(
    rke2: ModuleType, query: dict[str, list[str]], why: str
) -> None:
    code, msg = http_fail(rke2, rke2._select, [], query)
    assert code == 400 and why in msg
    node = {"metadata": {"name": "a", "labels": {"env": "prod"}}, "spec": {}}
    ok = {"fieldSelector": ["metadata.name=a"], "labelSelector": ["env=prod,!gpu"]}
    assert rke2._select([node], ok) == [node]


@pytest.mark.parametrize(
    ("ctype", "body", "code"),
    [
        ("application/json", {"spec": {"unschedulable": True}}, 415),
        ("application/merge-patch+json", {"metadata": {"labels": {"a": "b"}}}, 422),
        ("application/strategic-merge-patch+json", {"spec": {"unschedulable": "yes"}}, 400),
        ("application/json-patch+json", [{"op": "add", "path": "/spec/taints", "value": []}], 422),
        ("application/json-patch+json", [{"op": "move", "path": "/spec/unschedulable"}], 422),
    ],
)
def test_a_node_patch_beyond_spec_unschedulable_is_refused(
    rke2: ModuleType, ctype: str, body: object, code: int
) -> None:
    assert http_fail(rke2, rke2.parse_node_patch, ctype, body)[0] == code
    cordon = {"spec": {"unschedulable": True}}
    assert rke2.parse_node_patch("application/strategic-merge-patch+json", cordon) is True


# ---- etcd-snapshot (CONTRACT ES1, ES3, ES4) ---------------------------------------------
def test_etcd_snapshot_refusals_on_the_server(rke2: ModuleType, tmp_path: Path) -> None:
    srv = cluster_server(rke2)

    def snap(body: dict) -> tuple:
        return rke2.snapshot_answer(srv, {"operation": "save", **body})  # type: ignore[no-any-return]

    assert http_fail(rke2, snap, {"name": "x"})[0] == 503  # etcd not ready
    srv.ready = True  # type: ignore[attr-defined]
    code, msg = http_fail(rke2, snap, {"name": "x", "dir": "relative/dir"})
    assert code == 400 and "must be absolute" in msg
    code, msg = http_fail(rke2, snap, {"name": "../x", "dir": str(tmp_path)})
    assert code == 400 and "invalid snapshot name" in msg
    code, msg = http_fail(rke2, snap, {"name": "ok", "dir": str(tmp_path / "nope")})
    assert code == 500 and "no such file or directory" in msg  # only the default dir is made
    code, msg = http_fail(rke2, rke2.snapshot_answer, srv, {"operation": "restore"})
    assert code == 400 and "unknown etcd snapshot operation" in msg


def test_etcd_snapshot_cli_refusals(rke2: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    for args, rc, why in [
        (["restore"], 3, 'No help topic for "restore"'),
        (["save", "--nme", "x"], 1, "flag provided but not defined: --nme"),
        (["save", "--name"], 1, "flag needs an argument: --name"),
        (["save", "--data-dir", "/srv/rke2"], 1, "open /srv/rke2/server/token"),
        (["delete"], 1, "no snapshots given for removal"),
        (["ls", "extra"], 1, "does not take any arguments"),
        (["save"], 1, "not an etcd server"),  # no etcd on this node
    ]:
        assert rke2.etcd_snapshot(args) == rc, args
        assert why in capsys.readouterr().err, args
