"""What RKE2 requires of each host and of the cluster file, checked before anything
changes (pure: facts + cluster + manifest -> one line per problem, naming the fix).

* SELinux (rancher/rke2-docs docs/install/airgap.md, docs/security/selinux.md): on a
  host where SELinux enforces, the ``rke2-selinux`` RPM must be installed before the
  tarball install (without it RKE2 does not start: rancher/rke2#3888), and RKE2 needs
  ``selinux: true`` (a tarball install does not turn it on).
* ``profile: cis`` (docs/security/hardening_guide.md; rancher/rke2
  pkg/cli/cmds/profile_linux.go): RKE2 exits unless the kernel parameters of
  ``CIS_SYSCTLS`` have their values (every node) and, on servers, an ``etcd`` user and
  group exist. ``profile: etcd`` needs the etcd user and group only.
* The CNI: RKE2 runs canal unless ``cni:`` says otherwise (docs/reference/
  server_config.md); the bundle carries the images of one CNI (``--cni``), so a
  ``cni:`` the bundle has no images for can never become Ready.

:func:`host_problems` are the host's (exit 1: prepare the node); :func:`input_problems`
are the cluster file's (exit 2: change cluster.yaml or the bundle).
"""

from __future__ import annotations

from collections.abc import Mapping

from mk8s.bundle.format.manifest import Lock
from mk8s.deploy.builders.facts import CIS_SYSCTLS, NodeFacts
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.rke2config import RKE2_DEFAULT_CNI

SYSCTL_FILE = "/etc/sysctl.d/60-rke2-cis.conf"


def profile(cluster: Cluster, node: Node) -> str:
    """The node's ``profile`` ("" when none): ``cis`` (or an older ``cis-1.x``) or ``etcd``."""
    value = cluster.user_config(node).get("profile")
    return str(value) if value else ""


def _selinux_on(cluster: Cluster, node: Node) -> bool:
    return cluster.user_config(node).get("selinux") in (True, "true")


def host_problems(cluster: Cluster, facts: Mapping[str, NodeFacts]) -> list[str]:
    """What a host lacks that RKE2 needs: the rke2-selinux RPM where SELinux enforces;
    the etcd user and the CIS kernel parameters where ``profile`` asks for them."""
    problems: list[str] = []
    for node in cluster.nodes:
        f = facts[node.name]
        if not f.can_root:
            continue
        if f.selinux_enforcing and not f.rke2_selinux:
            problems.append(
                f"{node.name}: SELinux is enforcing but the rke2-selinux RPM is not installed;"
                " RKE2 does not start there without its policy: install rke2-selinux (and"
                " container-selinux) from local RPM files before deploying (carry them in the"
                " bundle with --file)"
            )
        prof = profile(cluster, node)
        if (prof.startswith("cis") or prof == "etcd") and node.is_server and not f.etcd_user:
            problems.append(
                f"{node.name}: profile: {prof} needs an etcd user and group (in /etc/passwd"
                " and /etc/group); create them: useradd -r -c 'etcd user' -s /sbin/nologin"
                " -M etcd -U"
            )
        if prof.startswith("cis"):
            wrong = [
                f"{k}={f.sysctls.get(k) or '?'} (needs {v})"
                for k, v in CIS_SYSCTLS.items()
                if f.sysctls.get(k) != str(v)
            ]
            if wrong:
                want = " ".join(f"{k}={v}" for k, v in CIS_SYSCTLS.items())
                problems.append(
                    f"{node.name}: profile: {prof} needs the CIS kernel parameters, but "
                    + ", ".join(wrong)
                    + f"; put {want} into {SYSCTL_FILE} and apply them (sysctl --system)"
                    " before deploying"
                )
    return problems


def input_problems(cluster: Cluster, manifest: Lock, facts: Mapping[str, NodeFacts]) -> list[str]:
    """What the cluster file asks that these hosts and this bundle cannot give."""
    problems = cni_problems(cluster, manifest)
    for node in cluster.nodes:
        f = facts[node.name]
        if f.selinux_enforcing and not _selinux_on(cluster, node):
            problems.append(
                f"{node.name}: SELinux is enforcing, but RKE2's config has no selinux: true"
                " (a tarball install leaves SELinux support off); add selinux: true to"
                " spec.rke2.config"
            )
    return problems


def _cnis(value: object) -> list[str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(c).strip() for c in items if str(c).strip()]


def cni_problems(cluster: Cluster, manifest: Lock) -> list[str]:
    """A server's ``cni:`` must name the bundle's CNI (or ``none``, or an image group
    the bundle carries, such as multus)."""
    release = manifest.release
    carried = {release.cni, "none", *release.image_groups}
    problems: list[str] = []
    for node in cluster.servers:
        value = cluster.user_config(node).get("cni")
        if value is None:
            continue
        missing = [c for c in _cnis(value) if c not in carried]
        if missing:
            problems.append(
                f"{node.name}: cni: {', '.join(_cnis(value))} but the bundle carries the"
                f" images of {release.cni or RKE2_DEFAULT_CNI} only (no {', '.join(missing)});"
                f" create the bundle with --cni {missing[0]}, or set cni: {release.cni}"
            )
    return problems
