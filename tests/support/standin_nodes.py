"""Driving the RKE2 stand-in by hand on test hosts (tests/support/hosts.py), without mk8s:
install.sh with a release's artifacts, config.yaml, systemctl, kubectl and etcdctl on a node."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tests.support import standin
from tests.support.hosts import Host
from tests.support.standin import images

TAG = "v1.28.15+rke2r1"


ARCH = "amd64"


ART = "/var/lib/mk8s/artifacts"


KUBECTL = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"


# etcdctl (Debian's etcd-client) on a server, with the server's etcd client certificate
ETCD_TLS = "/var/lib/rancher/rke2/server/tls/etcd"


ETCDCTL = (
    f"etcdctl --endpoints https://127.0.0.1:2379 --cacert {ETCD_TLS}/server-ca.crt"
    f" --cert {ETCD_TLS}/client.crt --key {ETCD_TLS}/client.key"
)


# Fast knobs for the stand-in, read by the service from /etc/default/rke2-*.
KNOBS = (
    "MK8S_STANDIN_JOIN_TIMEOUT=3\n"
    "MK8S_STANDIN_LEARNER_SECONDS=1.5\n"
    "MK8S_STANDIN_START_SECONDS=0.1\n"
    "MK8S_STANDIN_HEARTBEAT=0.5\n"
    "MK8S_STANDIN_NODE_GRACE=2.5\n"
    "MK8S_STANDIN_AGENT_RETRY=0.5\n"
)


def make_artifacts(d: Path, tag: str = TAG) -> Path:
    """The release files install.sh reads, plus install.sh itself, in ``d``."""
    tarball = standin.rke2_tarball(ARCH, tag)
    images = standin.image_tarball(f"rke2-images.linux-{ARCH}.tar.zst", tag=tag)
    extra = standin.image_tarball(f"rke2-images-multus.linux-{ARCH}.tar.zst", tag=tag)
    (d / f"rke2.linux-{ARCH}.tar.gz").write_bytes(tarball)
    (d / f"rke2-images.linux-{ARCH}.tar.zst").write_bytes(images)
    (d / f"rke2-images-multus.linux-{ARCH}.tar.zst").write_bytes(extra)
    (d / f"sha256sum-{ARCH}.txt").write_text(
        standin.sha256sum_line(f"rke2.linux-{ARCH}.tar.gz", tarball)
        + standin.sha256sum_line(f"rke2-images.linux-{ARCH}.tar.zst", images)
        + standin.sha256sum_line(f"rke2-images-multus.linux-{ARCH}.tar.zst", extra)
    )
    (d / "install.sh").write_bytes(standin.install_script(tag))
    return d


# Uninstall wherever install.sh put RKE2 (/usr/local, /opt/rke2 or a custom prefix).
RESET = (
    "for u in /usr/local/bin/rke2-uninstall.sh /opt/*/bin/rke2-uninstall.sh; do"
    " [ -x $u ] && $u >/dev/null 2>&1; done;"
    f" rm -rf {ART} /var/lib/rancher /etc/rancher /etc/default/rke2-* /opt/*;"
    " rm -f /etc/systemd/system/rke2-* /etc/systemd/system/multi-user.target.wants/rke2-*;"
    " rm -f /etc/systemd/system/nm-cloud-setup.service"
    " /etc/systemd/system/multi-user.target.wants/nm-cloud-setup.service; true"
)


def ssh(
    h: Host, cmd: str, *, user: str = "root", ok: bool = True
) -> subprocess.CompletedProcess[str]:
    p = h.ssh(cmd, user=user)
    if ok and p.returncode != 0:
        raise AssertionError(f"{h.name}: {cmd!r} exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def upload(h: Host, artifacts: Path, names: list[str] | None = None) -> None:
    files = names or sorted(p.name for p in artifacts.iterdir())
    ssh(h, f"mkdir -p {ART}")
    subprocess.run(
        [
            "scp",
            "-q",
            *h.hostset.ssh_options(mux=True),
            *[str(artifacts / f) for f in files],
            f"root@{h.address}:{ART}/",
        ],
        check=True,
        capture_output=True,
    )


def install(
    h: Host, artifacts: Path, *, user: str = "root", ok: bool = True, env: str = ""
) -> subprocess.CompletedProcess[str]:
    upload(h, artifacts)
    return ssh(h, f"{env} INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh", user=user, ok=ok)


def configure(h: Host, role: str, **cfg: object) -> None:
    lines = []
    for k, v in cfg.items():
        key = k.replace("_", "-")
        if isinstance(v, list):
            lines.append(f"{key}:")
            lines += [f"  - {json.dumps(x)}" for x in v]
        else:
            lines.append(f"{key}: {json.dumps(v)}")
    text = "\n".join(lines) + "\n"
    p = h.ssh(
        "mkdir -p /etc/rancher/rke2 && umask 077 && cat > /etc/rancher/rke2/config.yaml && "
        f"printf '%s' {shlex.quote(KNOBS)} > /etc/default/rke2-{role}",
        input=text,
    )
    assert p.returncode == 0, p.stderr


def start(h: Host, role: str, *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return ssh(h, f"systemctl enable rke2-{role} && systemctl start rke2-{role}", ok=ok)


def why_start_failed(h: Host, role: str) -> str:
    """Start the unit, expecting RKE2 to refuse to start; return what it said
    (systemctl's error, then the unit's log since this start).

    Both units are Type=notify: when the service exits before it is ready,
    `systemctl start` itself fails."""
    p = start(h, role, ok=False)
    assert p.returncode != 0, p.stdout + p.stderr
    return p.stderr + this_start(ssh(h, f"journalctl -u rke2-{role}").stdout)


def this_start(log: str) -> str:
    """The part of a unit's log written since its last start."""
    return log.rsplit(" Starting rke2-", 1)[-1]


def why_agent_waits(h: Host, timeout: float = 15) -> str:
    """Start rke2-agent expecting its server to refuse the join; return what it logged.

    Like upstream's, the agent retries a refused join for ever, so a blocking
    `systemctl start` would never return: it is started with --no-block, seen
    "activating" and retrying, and stopped again."""
    ssh(h, "systemctl enable rke2-agent && systemctl start --no-block rke2-agent")
    deadline = time.monotonic() + timeout
    while True:
        log = this_start(ssh(h, "journalctl -u rke2-agent").stdout)
        if log.count("Waiting to retrieve agent configuration") >= 2:
            break
        assert "level=fatal" not in log, log
        assert time.monotonic() < deadline, f"the agent did not retry its join\n{log}"
        time.sleep(0.2)
    assert ssh(h, "systemctl is-active rke2-agent", ok=False).stdout.strip() == "activating"
    ssh(h, "systemctl stop rke2-agent")
    return log


def etcd_members(h: Host) -> list[dict]:
    """``etcdctl member list`` on a server, sorted by name."""
    p = h.run(f"{ETCDCTL} member list -w json", timeout=30)
    assert p.returncode == 0, p.stderr
    return sorted(json.loads(p.stdout)["members"], key=lambda m: m.get("name", ""))


def bootstrap(h: Host, artifacts: Path, **cfg: object) -> str:
    install(h, artifacts)
    configure(h, "server", **cfg)
    start(h, "server")
    return ssh(h, "cat /var/lib/rancher/rke2/server/node-token").stdout.strip()


def ready_nodes(h: Host) -> dict[str, bool]:
    out = json.loads(ssh(h, f"{KUBECTL} get nodes -o json").stdout)
    return {
        i["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"]
        )
        for i in out["items"]
    }


def wait_ready(h: Host, names: set[str], timeout: float = 15) -> dict[str, bool]:
    deadline = time.monotonic() + timeout
    while True:
        got = ready_nodes(h)
        if {n for n, r in got.items() if r} >= names or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


IMAGES = f"rke2-images.linux-{ARCH}.tar.zst"


CA_PATH = "/etc/rancher/rke2/mk8s-registry-ca.pem"


IMAGES_DIR = "/var/lib/rancher/rke2/agent/images"


def write_artifacts(d: Path, tag: str, image_files: list[str]) -> Path:
    """install.sh, the rke2 tarball and ``image_files`` (real docker archives of the
    release's images), with their sha256sum file."""
    d.mkdir(parents=True, exist_ok=True)
    built = {name: images.image_archive(ARCH, tag, name) for name in image_files}
    # The stand-in knows its release's genuine image hashes: these archives' own.
    genuine = {
        **standin.standin_images(ARCH, tag),
        **{n: hashlib.sha256(b).hexdigest() for n, b in built.items()},
    }
    files = {f"rke2.linux-{ARCH}.tar.gz": standin.rke2_tarball(ARCH, tag, genuine), **built}
    for name, data in files.items():
        (d / name).write_bytes(data)
    sums = "".join(standin.sha256sum_line(n, b) for n, b in files.items())
    (d / f"sha256sum-{ARCH}.txt").write_text(sums)
    (d / "install.sh").write_bytes(standin.install_script(tag))
    return d


def write_registries(h: Host, data: dict[str, object]) -> None:
    text = yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    cmd = "mkdir -p /etc/rancher/rke2 && umask 077 && cat > /etc/rancher/rke2/registries.yaml"
    p = h.ssh(cmd, input=text)
    assert p.returncode == 0, p.stderr


def install_bare(h: Host, artifacts: Path) -> None:
    install(h, artifacts)
    assert not h.path("/var/lib/rancher/rke2/agent/images").exists() or not list(
        h.path("/var/lib/rancher/rke2/agent/images").iterdir()
    )


def server_token(h: Host) -> str:
    return ssh(h, "cat /var/lib/rancher/rke2/server/node-token").stdout.strip()


def first_server(h: Host, artifacts: Path, **cfg: object) -> str:
    install(h, artifacts)
    configure(h, "server", **cfg)
    start(h, "server")
    return server_token(h)


def journal(h: Host, unit: str) -> str:
    return ssh(h, f"journalctl -u {unit} --no-pager").stdout


MIRROR_DOCKER_IO = {"mirrors": {"docker.io": {}}}


def copy_files(h: Host, files: list[Path], dest: str) -> None:
    """Copy ``files`` into ``dest`` on the node (as mk8s's uploads do, over SSH)."""
    ssh(h, f"mkdir -p {dest}")
    subprocess.run(
        [
            "scp",
            "-q",
            *h.hostset.ssh_options(mux=True),
            *map(str, files),
            f"root@{h.address}:{dest}/",
        ],
        check=True,
        capture_output=True,
    )


def put_file(h: Host, path: str, data: bytes) -> None:
    """Write ``path`` on the node atomically (sent under a temporary name, then renamed)."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        ssh(h, f"mkdir -p $(dirname {path})")
        h.put(f.name, f"{path}.tmp-x")
    ssh(h, f"mv -f {path}.tmp-x {path}")
