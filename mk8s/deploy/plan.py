"""Facts + cluster + manifest -> the ordered steps of a deploy, as values. No I/O.

Every function here is pure: given what the nodes reported (:class:`NodeFacts`), the
validated cluster file and the verified manifest, it returns the commands and file
uploads each node needs, skipping what is already in place. ``--dry-run`` prints these
values; tests assert them without SSH; :mod:`mk8s.deploy.run` only executes them.

RKE2 facts this encodes (SPEC section 8):
* install.sh in tar mode installs from ``INSTALL_RKE2_ARTIFACT_PATH``, a directory with
  ``rke2.linux-ARCH.tar.gz`` and ``sha256sum-ARCH.txt``; it starts nothing.
* Image tarballs must be in ``/var/lib/rancher/rke2/agent/images/`` before the first
  start (no registry in an air gap); mk8s places them itself, checked.
* The first server starts without ``server:``; every other node gets
  ``server: https://<first server or serverUrl>:9345`` and ``token:``.
* Server joins happen one at a time (parallel etcd joins fail).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from mk8s.bundle.manifest import Artifact, Lock
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import MASK, Command, FileUpload, Secret, write_file
from mk8s.deploy.facts import (
    CONFIG_PATH,
    IMAGES_DIR,
    KUBECONFIG_PATH,
    KUBECTL,
    RECORD_TEMPLATE,
    REGISTRIES_PATH,
    NodeFacts,
    record_values,
)

SUPERVISOR_PORT = 9345
API_PORT = 6443
START_TIMEOUT = 900.0
# Room for the staged files plus a copy of the images, and some slack.
DISK_SLACK = 512 << 20


@dataclass(frozen=True)
class Step:
    """One named unit of work on one node: uploads first, then commands in order."""

    node: str
    name: str
    commands: tuple[Command, ...] = ()
    uploads: tuple[FileUpload, ...] = ()
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.commands and not self.uploads


@dataclass(frozen=True)
class Context:
    """What every step of one deploy shares."""

    cluster: Cluster
    manifest: Lock
    bundle_id: str
    token: Secret
    local_artifacts: Mapping[str, Any] = field(default_factory=dict)  # bundle path -> Path

    @property
    def staging(self) -> str:
        return posixpath.join(self.cluster.options.staging_dir, self.bundle_id)

    @property
    def server_url(self) -> str:
        return server_url(self.cluster)

    @property
    def api_host(self) -> str:
        return api_host(self.cluster)


def server_url(cluster: Cluster) -> str:
    """Where joining nodes register: ``serverUrl`` or the first server on 9345."""
    if cluster.rke2.server_url:
        return cluster.rke2.server_url
    return f"https://{_host_for_url(cluster.bootstrap.address)}:{SUPERVISOR_PORT}"


def api_host(cluster: Cluster) -> str:
    """The host the kubeconfig points at: serverUrl's host or the first server."""
    if cluster.rke2.server_url:
        return urlsplit(cluster.rke2.server_url).hostname or cluster.bootstrap.address
    return cluster.bootstrap.address


def _host_for_url(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


# -- what a node needs -------------------------------------------------------------------
def node_artifacts(manifest: Lock, arch: str) -> list[Artifact]:
    """The artifacts a node of ``arch`` needs: its arch's files plus arch-free ones (not
    the mk8s executable the bundle may carry: that is for the operator)."""
    return [a for a in manifest.artifacts if a.arch in (None, arch) and a.kind != "mk8s"]


def remote_path(ctx: Context, art: Artifact) -> str:
    rel = art.path.removeprefix("artifacts/")
    return posixpath.join(ctx.staging, rel)


def install_dir(ctx: Context, arch: str) -> str:
    return posixpath.join(ctx.staging, f"install-{arch}")


def preflight(cluster: Cluster, manifest: Lock, facts: Mapping[str, NodeFacts]) -> list[str]:
    """Every reason a node is unfit, as one line each naming the node and the fix."""
    problems: list[str] = []
    for node in cluster.nodes:
        f = facts[node.name]
        name = node.name
        if not f.can_root:
            problems.append(
                f"{name}: user {node.ssh.user} cannot run sudo without a password; "
                "add a NOPASSWD sudoers rule or log in as root"
            )
            continue
        if f.arch is None:
            problems.append(f"{name}: unsupported architecture {f.uname_m!r}")
        elif f.arch not in manifest.release.arch:
            problems.append(
                f"{name}: is {f.arch} but the bundle holds only "
                f"{', '.join(manifest.release.arch)}; create a bundle with --arch {f.arch}"
            )
        if f.rpm_installed:
            problems.append(
                f"{name}: RKE2 RPMs are installed (rke2-common), which the tarball install "
                "refuses; remove them first (rpm -e rke2-common ...)"
            )
        if f.nm_cloud_setup_enabled:
            problems.append(
                f"{name}: nm-cloud-setup is enabled, which breaks RKE2 networking; "
                "disable it (systemctl disable nm-cloud-setup.service nm-cloud-setup.timer) "
                "and reboot"
            )
        if f.arch in manifest.release.arch and f.disk_free is not None:
            need = _bytes_needed(manifest, f.arch or "", f, cluster.options.staging_dir)
            if f.disk_free < need:
                problems.append(
                    f"{name}: {cluster.options.staging_dir} has {f.disk_free >> 20} MiB free, "
                    f"needs {need >> 20} MiB; free space or set options.stagingDir"
                )
    return problems


def _bytes_needed(manifest: Lock, arch: str, f: NodeFacts, staging_root: str) -> int:
    need = DISK_SLACK
    for art in node_artifacts(manifest, arch):
        present = any(
            p.endswith("/" + art.path.removeprefix("artifacts/")) and h == art.sha256
            for p, h in f.hashes.items()
            if p.startswith(staging_root)
        )
        if not present:
            need += art.size
        if art.kind == "images":
            need += art.size
    return need


# -- steps -------------------------------------------------------------------------------
def upload_step(ctx: Context, node: Node, f: NodeFacts) -> Step:
    """Artifacts not yet on the node with the right hash (partial ones resume)."""
    arch = f.arch or ctx.manifest.release.arch[0]
    uploads = []
    for art in node_artifacts(ctx.manifest, arch):
        dest = remote_path(ctx, art)
        if f.hashes.get(dest) == art.sha256:
            continue
        local = ctx.local_artifacts.get(art.path) or Path(f"<bundle>/{art.path}")
        uploads.append(
            FileUpload(
                source=local,
                remote_path=dest,
                sha256=art.sha256,
                size=art.size,
                mode=0o755 if art.kind in ("install-script", "mk8s") else 0o644,
                description=art.name,
            )
        )
    note = "all artifacts already staged" if not uploads else ""
    return Step(node.name, "upload", uploads=tuple(uploads), note=note)


def install_step(ctx: Context, node: Node, f: NodeFacts) -> Step:
    """install.sh in tar mode (when RKE2 at the bundle's tag is absent), then images."""
    arch = f.arch or ctx.manifest.release.arch[0]
    cmds: list[Command] = []
    if f.rke2_tag != ctx.manifest.release.tag:
        tarball = _one(ctx.manifest, "rke2", arch)
        sums = _one(ctx.manifest, "checksums", arch)
        script = _one(ctx.manifest, "install-script", None)
        idir = install_dir(ctx, arch)
        # install.sh would also copy every image tarball it finds in its artifact
        # directory, unchecked; give it a directory with just the two files it needs.
        cmds.append(
            Command.script(
                "mkdir -p {idir} && ln -f {tar} {idir}/ && ln -f {sums} {idir}/ && "
                "INSTALL_RKE2_ARTIFACT_PATH={idir} INSTALL_RKE2_METHOD=tar sh {script}",
                {
                    "idir": idir,
                    "tar": remote_path(ctx, tarball),
                    "sums": remote_path(ctx, sums),
                    "script": remote_path(ctx, script),
                },
                sudo=True,
                description=f"install RKE2 {ctx.manifest.release.tag} (install.sh, tar mode)",
                timeout=600,
            )
        )
    # Every missing image tarball in one command: hard-linked (or copied) from the
    # staging directory, checked, and its hash recorded.
    parts: list[str] = []
    values: dict[str, str] = {"dir": IMAGES_DIR}
    names = []
    for i, art in enumerate(ctx.manifest.find(kind="images", arch=arch)):
        dest = posixpath.join(IMAGES_DIR, art.name)
        if f.hashes.get(dest) == art.sha256:
            continue
        names.append(art.name)
        rec = record_values(ctx.cluster.options.staging_dir, dest, art.sha256)
        template = (
            "(ln -f {src} {dest} 2>/dev/null || "
            "(cp -f {src} {dest}.mk8s-tmp && mv -f {dest}.mk8s-tmp {dest})) && "
            "printf '%s  %s\\n' {sha} {dest} | sha256sum -c --quiet - && " + RECORD_TEMPLATE
        )
        keys = {"src": remote_path(ctx, art), "dest": dest, "sha": art.sha256, **rec}
        for k, v in keys.items():
            template = template.replace("{" + k + "}", "{" + f"{k}{i}" + "}")
            values[f"{k}{i}"] = v
        parts.append(template)
    if parts:
        cmds.append(
            Command.script(
                "mkdir -p {dir} && " + " && ".join(parts),
                values,
                sudo=True,
                description=f"place image tarballs: {', '.join(names)}",
                timeout=900,
            )
        )
    registries = registries_bytes(ctx)
    if registries is not None:
        body = registries[0]
        if f.hashes.get(REGISTRIES_PATH) != _sha(body):
            cmds.append(
                write_file(
                    REGISTRIES_PATH,
                    Secret(body.decode()),
                    mode=0o600,
                    description="write registries.yaml (0600)",
                )
            )
    return Step(
        node.name,
        "install",
        commands=tuple(cmds),
        note="" if cmds else "RKE2 and images already in place",
    )


def missing_for_deploy(manifest: Lock) -> list[str]:
    """What a signed, intact bundle still lacks to install RKE2 (empty when complete):
    install.sh, and for every arch the RKE2 tarball, its checksum file and images."""
    missing = [] if manifest.find(kind="install-script") else ["install.sh"]
    for arch in manifest.release.arch:
        for kind, what in (
            ("rke2", f"rke2.linux-{arch}.tar.gz"),
            ("checksums", f"sha256sum-{arch}.txt"),
            ("images", f"an image tarball for {arch}"),
        ):
            if not manifest.find(kind=kind, arch=arch):
                missing.append(what)
    return missing


def _one(manifest: Lock, kind: str, arch: str | None) -> Artifact:
    found = [a for a in manifest.artifacts if a.kind == kind and (arch is None or a.arch == arch)]
    if not found:
        raise ValueError(f"the bundle has no {kind} artifact for {arch or 'any arch'}")
    return found[0]


def node_config(ctx: Context, node: Node) -> dict[str, Any]:
    """The config.yaml of one node: cluster config, role config, node config, then ours."""
    rke2 = ctx.cluster.rke2
    role_config = rke2.server_config if node.is_server else rke2.agent_config
    config: dict[str, Any] = {}
    for layer in (rke2.config, role_config, node.config):
        config.update(_plain(layer))
    config.setdefault("node-name", node.name)
    if node.name != ctx.cluster.bootstrap.name:
        config["server"] = ctx.server_url
    if node.is_server:
        given = config.get("tls-san") or []
        sans = [str(s) for s in given] if isinstance(given, list | tuple) else [str(given)]
        extra = list(rke2.tls_san)
        if rke2.server_url:
            extra.append(urlsplit(rke2.server_url).hostname or "")
        for san in extra:
            if san and san not in sans:
                sans.append(san)
        if sans:
            config["tls-san"] = sans
    return config


# Config keys whose values are secrets (RKE2's etcd-s3-secret-key, a registry's
# password or auth, any *-token): masked wherever a config is shown.
SECRET_KEY_SUFFIXES = ("-secret", "-key", "password", "token", "secret")
SECRET_KEYS = frozenset({"auth", "identitytoken"})


def is_secret_key(key: object) -> bool:
    k = str(key).lower()
    return k in SECRET_KEYS or k.endswith(SECRET_KEY_SUFFIXES)


def mask_secrets(value: Any) -> Any:
    """``value`` with every secret-looking key's value replaced by ``***``, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: MASK
            if is_secret_key(k) and v is not None and not isinstance(v, Mapping)
            else mask_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return value


def _dump(value: Any) -> bytes:
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).encode()


def config_bytes(ctx: Context, node: Node) -> tuple[bytes, bytes]:
    """(real bytes, masked bytes) of the node's config.yaml."""
    config = {**node_config(ctx, node), "token": ctx.token.reveal()}
    return _dump(config), _dump(mask_secrets(config))


def registries_bytes(ctx: Context) -> tuple[bytes, bytes] | None:
    """(real bytes, masked bytes) of registries.yaml, or None when none is written."""
    registries = ctx.cluster.rke2.registries
    if registries is None:
        return None
    plain = _plain(registries)
    return _dump(plain), _dump(mask_secrets(plain))


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _plain(value: Any) -> Any:
    """Read-only mappings from the cluster model as plain dicts/lists for YAML."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def service(node: Node) -> str:
    return "rke2-server" if node.is_server else "rke2-agent"


def start_step(ctx: Context, node: Node, f: NodeFacts, *, installed_now: bool) -> Step:
    """Write config.yaml if it differs, then enable and start (or restart) the service.

    A node whose config is unchanged, whose RKE2 was not just installed and whose
    service is active is left alone: no restart on a converged cluster.
    """
    real, _masked = config_bytes(ctx, node)
    unit = service(node)
    active = f.server_active if node.is_server else f.agent_active
    changed = f.hashes.get(CONFIG_PATH) != _sha(real)
    cmds: list[Command] = []
    if changed:
        cmds.append(
            write_file(
                CONFIG_PATH,
                Secret(real.decode()),
                mode=0o600,
                description="write config.yaml (0600)",
            )
        )
    if active and not changed and not installed_now:
        return Step(node.name, "start", note=f"{unit} already active with this config")
    verb = "restart" if active else "start"
    cmds.append(
        Command.script(
            "systemctl enable {unit} && systemctl " + verb + " {unit}",
            {"unit": unit},
            sudo=True,
            description=f"enable and {verb} {unit} (blocks until it reports ready)",
            timeout=START_TIMEOUT,
        )
    )
    return Step(node.name, "start", commands=tuple(cmds))


def readyz_command() -> Command:
    return Command.argv(
        KUBECTL,
        "--kubeconfig",
        KUBECONFIG_PATH,
        "get",
        "--raw",
        "/readyz",
        sudo=True,
        check=False,
        timeout=30,
        description="API server /readyz",
    )


def nodes_command() -> Command:
    return Command.argv(
        KUBECTL,
        "--kubeconfig",
        KUBECONFIG_PATH,
        "get",
        "nodes",
        "-o",
        "json",
        sudo=True,
        check=False,
        timeout=30,
        description="list nodes",
    )


def read_token_command() -> Command:
    return Command.argv(
        "cat",
        "/var/lib/rancher/rke2/server/node-token",
        sudo=True,
        timeout=30,
        description="read the join token",
    )


def kubeconfig_command() -> Command:
    return Command.argv(
        "cat", KUBECONFIG_PATH, sudo=True, timeout=30, description="read the admin kubeconfig"
    )


def uninstall_command() -> Command:
    return Command.script(
        "if [ -x /usr/local/bin/rke2-uninstall.sh ]; then /usr/local/bin/rke2-uninstall.sh; "
        "elif [ -x /opt/rke2/bin/rke2-uninstall.sh ]; then /opt/rke2/bin/rke2-uninstall.sh; "
        "else echo 'RKE2 is not installed'; fi",
        sudo=True,
        timeout=600,
        description="uninstall RKE2 (rke2-uninstall.sh)",
    )


def delete_node_command(name: str) -> Command:
    return Command.argv(
        KUBECTL,
        "--kubeconfig",
        KUBECONFIG_PATH,
        "delete",
        "node",
        name,
        "--ignore-not-found",
        sudo=True,
        check=False,
        timeout=120,
        description=f"remove node {name} from the cluster",
    )


def rewrite_kubeconfig(text: str, host: str) -> str:
    """Point RKE2's admin kubeconfig (server https://127.0.0.1:6443) at ``host``."""
    target = f"https://{_host_for_url(host)}:{API_PORT}"
    out = []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("server:"):
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}server: {target}\n"
        out.append(line)
    return "".join(out)


def order(cluster: Cluster) -> tuple[Node, Sequence[Node], Sequence[Node]]:
    """(bootstrap server, other servers in file order, agents)."""
    first = cluster.bootstrap
    return first, [n for n in cluster.servers if n.name != first.name], list(cluster.agents)
