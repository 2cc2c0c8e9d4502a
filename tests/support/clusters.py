"""Deploy inputs as values, for the pure tests of mk8s/deploy (no SSH, no hosts): a
release's manifest, a cluster.yaml and the node facts a fresh node reports."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Sequence
from pathlib import Path

from mk8s.bundle.format.manifest import Artifact, Lock, Release, artifact_path
from mk8s.deploy.builders import facts, membership, plan
from mk8s.deploy.cluster import Cluster, load_cluster
from mk8s.deploy.command import Secret
from tests.support.registry import TestCA

TAG = "v1.28.15+rke2r1"
ARCH = "amd64"
IMAGES = f"rke2-images.linux-{ARCH}.tar.zst"

# One server: the smallest cluster.yaml that loads.
ONE_SERVER = "    - {address: 10.0.0.1, name: cp1, role: server}\n"


def artifact(
    name: str, kind: str, arch: str | None = ARCH, *, size: int = 10, salt: str = ""
) -> Artifact:
    """An artifact whose digest is that of ``salt + name`` (a release tag as the salt:
    the same file name in another release has other bytes)."""
    return Artifact(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        path=artifact_path(name, kind),
        size=size,
        sha256=hashlib.sha256((salt + name).encode()).hexdigest(),
        arch=arch,
    )


def release_manifest(
    tag: str = TAG,
    extra: Sequence[tuple[str, str, str | None]] = (),
    *,
    requested: str = "v1.28.x",
    size: int = 10,
    salted: bool = False,
    cni: str = "canal",
    groups: tuple[str, ...] = (),
) -> Lock:
    """The manifest of a bundle of ``tag`` for amd64: the checksums, the RKE2 tarball,
    the image tarballs of ``cni`` (one file for canal, core + the CNI's otherwise),
    install.sh, then ``extra`` (name, kind, arch). ``salted``: digests depend on the tag."""
    salt = tag if salted else ""

    def art(name: str, kind: str, arch: str | None = ARCH) -> Artifact:
        return artifact(name, kind, arch, size=size, salt=salt)

    images = (
        [art(IMAGES, "images")]
        if cni == "canal"
        else [
            art(f"rke2-images-core.linux-{ARCH}.tar.zst", "images"),
            art(f"rke2-images-{cni}.linux-{ARCH}.tar.zst", "images"),
        ]
    )
    return Lock(
        release=Release(requested=requested, tag=tag, arch=(ARCH,), cni=cni, image_groups=groups),
        resolved_at="2026-01-01T00:00:00Z",
        artifacts=(
            art(f"sha256sum-{ARCH}.txt", "checksums"),
            art(f"rke2.linux-{ARCH}.tar.gz", "rke2"),
            *images,
            art("install.sh", "install-script", None),
            *(art(n, k, a) for n, k, a in extra),
        ),
    ).as_manifest("0.1.0")


def cluster_text(
    nodes: str = ONE_SERVER, rke2: str = "", options: str = "", *, name: str = "demo"
) -> str:
    """A cluster.yaml: ``rke2`` is every line of ``spec`` before ``nodes:``, ``options``
    every line after the nodes (each indented under ``spec``)."""
    return (
        f"apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n"
        f"{rke2}  nodes:\n{nodes}{options}"
    )


def write_cluster(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def load(tmp_path: Path, text: str, *, name: str = "c.yaml", check_files: bool = False) -> Cluster:
    """``text`` written to ``tmp_path/name`` and loaded."""
    return load_cluster(write_cluster(tmp_path, text, name), check_files=check_files)


def fresh_node(**kw: object) -> facts.NodeFacts:
    """What a fresh amd64 node reports (root, sudo, nothing installed), ``kw`` on top."""
    base: dict[str, object] = {
        "arch": ARCH,
        "uname_m": "x86_64",
        "os": "",
        "hostname": "",
        "root": True,
        "sudo": True,
    }
    return facts.NodeFacts(**{**base, **kw})  # type: ignore[arg-type]


# -- one production-like cluster: two servers and an agent, config at every level ------
MANIFEST = release_manifest()
FRESH = fresh_node(os="Debian", hostname="h", disk_free=100 << 30)


def prod_cluster(tmp_path: Path, extra: str = "") -> Cluster:
    """``prod``: cp1, cp2 (servers), w1 (agent); ``extra``: more lines of spec.rke2."""
    text = f"""
apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: prod}}
spec:
  rke2:
    tlsSan: [k8s.internal]
    config: {{cni: canal}}
    serverConfig: {{etcd-snapshot-retention: 3}}
    agentConfig: {{node-label: [tier=app]}}
{extra}
  ssh: {{user: root}}
  nodes:
    - {{address: 10.0.0.11, name: cp1, role: server}}
    - {{address: 10.0.0.12, name: cp2, role: server}}
    - {{address: 10.0.0.21, name: w1, role: agent, config: {{node-label: [gpu=true]}}}}
"""
    return load(tmp_path, text, name="cluster.yaml")


def prod_context(c: Cluster) -> plan.Context:
    """The deploy context of ``c`` with MANIFEST, its artifacts under /local."""
    return plan.Context(
        c,
        MANIFEST,
        "b1d",
        Secret("s3cret-token"),
        {a.path: Path("/local") / a.path for a in MANIFEST.artifacts},
    )


# -- spec.images: a server and an agent, a registry's CA and password files beside ------
FRESH_BARE = fresh_node()
CA_PEM = TestCA.create().pem()
REGISTRY = "{distribution: registry, registry: {url: 'https://reg.internal:5000', caFile: ca.pem, username: pusher, passwordFile: pw}}"


def images_manifest(tag: str = TAG) -> Lock:
    return release_manifest(tag, size=1000)


def images_cluster(tmp_path: Path, images: str, rke2: str = "") -> Cluster:
    """cp1 (server) and w1 (agent) with ``spec.images: IMAGES``; ``rke2``: lines before."""
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    (tmp_path / "pw").write_text("s3cret-pw\n")
    nodes = (
        "    - {address: 10.0.0.1, name: cp1, role: server}\n"
        "    - {address: 10.0.0.2, name: w1, role: agent}\n"
    )
    return load(
        tmp_path, cluster_text(nodes, f"{rke2}  images: {images}\n", name="img"), check_files=True
    )


# -- "lab": a server and an agent, for the tests of one spec block at a time ------------
LAB_HEAD = """\
apiVersion: mk8s/v1alpha1
kind: Cluster
metadata:
  name: lab
spec:
"""


LAB_NODES = """\
  nodes:
    - address: 10.0.0.11
      role: server
    - address: 10.0.0.21
      name: w1
      role: agent
"""


def write_lab(tmp_path: Path, spec: str = "") -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(LAB_HEAD + spec + LAB_NODES)
    return p


def indent_spec(block: str) -> str:
    return textwrap.indent(textwrap.dedent(block), "  ")


# -- RKE2's contract: cp1, cp2 and w1 on Debian nodes, the context the Token phase builds --
# The kernel parameters profile: cis needs (rancher/rke2 pkg/cli/cmds/profile_linux.go).
CIS_SYSCTLS = {
    "vm.panic_on_oom": "0",
    "vm.overcommit_memory": "1",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
}


def contract_cluster(tmp_path: Path, rke2: str = "", nodes: str = "", extra: str = "") -> Cluster:
    nodes = nodes or (
        "    - {address: 10.0.0.11, name: cp1, role: server}\n"
        "    - {address: 10.0.0.12, name: cp2, role: server}\n"
        "    - {address: 10.0.0.21, name: w1, role: agent}\n"
    )
    p = tmp_path / "cluster.yaml"
    p.write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: prod}\nspec:\n"
        f"  rke2:\n    tlsSan: [k8s.internal]\n{rke2}{extra}  nodes:\n{nodes}"
    )
    return load_cluster(p, check_files=False)


def debian_node(**kw: object) -> facts.NodeFacts:
    base: dict[str, object] = {
        "arch": "amd64",
        "uname_m": "x86_64",
        "os": "Debian",
        "hostname": "h",
        "root": True,
        "sudo": True,
        "disk_free": 100 << 30,
        "sysctls": dict(CIS_SYSCTLS),
    }
    return facts.NodeFacts(**{**base, **kw})  # type: ignore[arg-type]


def member_context(
    c: Cluster, m: Lock | None = None, found: dict[str, facts.NodeFacts] | None = None
) -> plan.Context:
    """The deploy context as the Token phase builds it from the facts."""
    mem = membership.membership(c, found or {n.name: debian_node() for n in c.nodes})
    anchor = c.node(mem.anchor)
    return plan.Context(
        c,
        m or release_manifest(),
        "b1d",
        Secret("s3cret-token"),
        anchor=mem.anchor,
        first_joins=f"https://{anchor.address}:9345" if mem.rejoin else "",
    )
