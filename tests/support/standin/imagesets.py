"""Which images a stand-in RKE2 release carries, and which of them each patch rebuilds.

Modeled on rancher/rke2 ``scripts/build-images`` at two pairs of consecutive patches,
v1.31.4+rke2r1 -> v1.31.5+rke2r1 -> v1.31.6+rke2r1 (``images-core.txt`` and
``images-canal.txt``, concatenated into ``images.txt``: the
``rke2-images.linux-ARCH.tar.zst`` of the default CNI). Each release carries
``rke2-runtime`` and ``hardened-kubernetes`` (tagged with the release: new every patch)
and 16 other images: 14 core ones (coredns, cluster-autoscaler, dns-node-cache, etcd,
metrics-server, addon-resizer, klipper-helm, klipper-lb, pause, the ingress-nginx
webhook certgen and controller, cloud-provider, snapshot-controller, traefik) and
canal's two (calico, flannel). Between v1.31.4 and v1.31.5, 7 of the 16 changed
(metrics-server, addon-resizer, certgen, ingress-nginx, snapshot-controller, calico,
flannel); between v1.31.5 and v1.31.6 7 again (etcd, klipper-helm, klipper-lb,
ingress-nginx, traefik, calico, flannel): the biggest ones (calico, ingress-nginx)
both times.

The model: an image's weight is its share of the archive's bytes (rough proportions of
these images' sizes, a model, not a measurement); at each patch an image is rebuilt
with probability ``0.25 + 0.6 * weight / the biggest weight`` (pause never), decided by
a hash of (image, minor, patch), so about 6 of the 16 are rebuilt per patch and the
biggest most often. A new minor rebuilds everything. An image is a shared base layer
(one per minor and arch, in every image), a dependencies layer (new every second
rebuild) and its own top layer (new every rebuild), so a rebuilt image still shares
layers with the one before it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PAUSE = "docker.io/rancher/pause:3.6"
# (repository, weight, group): the 16 non-Kubernetes images of rke2-images.linux-ARCH.
OTHERS = (
    ("docker.io/rancher/hardened-coredns", 3, "core"),
    ("docker.io/rancher/hardened-cluster-autoscaler", 4, "core"),
    ("docker.io/rancher/hardened-dns-node-cache", 4, "core"),
    ("docker.io/rancher/hardened-etcd", 6, "core"),
    ("docker.io/rancher/hardened-k8s-metrics-server", 3, "core"),
    ("docker.io/rancher/hardened-addon-resizer", 2, "core"),
    ("docker.io/rancher/klipper-helm", 9, "core"),
    ("docker.io/rancher/klipper-lb", 1, "core"),
    ("docker.io/rancher/pause", 1, "core"),
    ("docker.io/rancher/mirrored-ingress-nginx-kube-webhook-certgen", 2, "core"),
    ("docker.io/rancher/nginx-ingress-controller", 11, "core"),
    ("docker.io/rancher/rke2-cloud-provider", 5, "core"),
    ("docker.io/rancher/mirrored-sig-storage-snapshot-controller", 3, "core"),
    ("docker.io/rancher/mirrored-library-traefik", 5, "core"),
    ("docker.io/rancher/hardened-calico", 20, "canal"),
    ("docker.io/rancher/hardened-flannel", 3, "canal"),
)
# Tagged with the release itself: rebuilt every patch.
KUBERNETES = (
    ("docker.io/rancher/rke2-runtime", 10),
    ("docker.io/rancher/hardened-kubernetes", 24),
)
BIGGEST = max(w for _, w, _ in OTHERS)
_TAG = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:-rc(\d+))?\+rke2r(\d+)$")


@dataclass(frozen=True)
class Image:
    """One image of a release: its reference, weight and layer generations."""

    ref: str
    weight: int
    base: str  # the shared base layer's generation (per minor)
    deps: str  # the dependencies layer's generation
    top: str  # the image's own layer's generation

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]


def image_tag(tag: str) -> str:
    """RKE2's image tag for a release tag: ``v1.28.15+rke2r1`` -> ``v1.28.15-rke2r1``."""
    return tag.replace("+", "-")


def parse(tag: str) -> tuple[int, int, int] | None:
    """(minor, patch, respin) of an RKE2 tag; None for a tag that is not one."""
    m = _TAG.match(tag)
    return (int(m.group(2)), int(m.group(3)), int(m.group(5))) if m else None


def _uniform(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def rebuilt(repository: str, minor: int, patch: int) -> bool:
    """Whether patch ``patch`` of minor ``minor`` rebuilds this (non-Kubernetes) image."""
    weight = next(w for r, w, _ in OTHERS if r == repository)
    if repository.endswith("/pause"):
        return False
    if patch == 0:
        return True
    return _uniform(f"{repository}|{minor}|{patch}") < 0.25 + 0.6 * weight / BIGGEST


def generation(repository: str, minor: int, patch: int) -> int:
    """How many times this minor rebuilt the image up to ``patch`` (0: its first build)."""
    return sum(rebuilt(repository, minor, p) for p in range(1, patch + 1))


def images(tag: str) -> dict[str, list[Image]]:
    """The release's images by group: ``core`` (with the two Kubernetes ones first)
    and ``canal``."""
    minor, patch, _ = parse(tag) or (0, 0, 1)
    base = f"{minor}"
    out: dict[str, list[Image]] = {"core": [], "canal": []}
    for repo, weight in KUBERNETES:
        suffix = "" if repo.endswith("runtime") else "-build"
        ref = f"{repo}:{image_tag(tag)}{suffix}"
        out["core"].append(Image(ref, weight, base, f"{minor}.{patch // 3}", tag))
    for repo, weight, group in OTHERS:
        if repo.endswith("/pause"):
            out[group].append(Image(PAUSE, weight, base, "pause", "pause"))
            continue
        gen = generation(repo, minor, patch)
        ref = f"{repo}:v1.{minor}.{gen}-build{minor}{gen:03d}"
        out[group].append(Image(ref, weight, base, f"{minor}.{gen // 2}", f"{minor}.{gen}"))
    return out


__all__ = ["KUBERNETES", "OTHERS", "PAUSE", "Image", "generation", "image_tag", "images"]
