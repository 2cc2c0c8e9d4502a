"""config.yaml and registries.yaml of a node, real and masked (pure).

Layers: ``spec.rke2.config``, then ``serverConfig``/``agentConfig``, then the node's
own ``config`` (:meth:`mk8s.deploy.cluster.Cluster.user_config`), then what mk8s manages
(``node-name``, ``server``, ``token``, the servers' ``tls-san``, and on servers the
bundle's ``cni`` and ``system-default-registry``). The masked form replaces every
secret-looking value by ``***`` for dry-run output and logs; only the real form ever
reaches a node, on stdin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from mk8s.bundle.format.manifest import ArtifactKind
from mk8s.deploy.builders.context import Context, supervisor_url
from mk8s.deploy.builders.facts import REGISTRY_CA_PATH
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import MASK
from mk8s.deploy.rke2config import RKE2_DEFAULT_CNI, plain


def node_config(ctx: Context, node: Node) -> dict[str, Any]:
    """The config.yaml of one node: cluster config, role config, node config, then ours."""
    rke2 = ctx.cluster.rke2
    config = ctx.cluster.user_config(node)
    config.setdefault("node-name", node.name)
    if node.name != ctx.cluster.bootstrap.name:
        config["server"] = ctx.server_url
    elif ctx.first_joins:
        config["server"] = ctx.first_joins  # the first server rejoins a live member
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
        # RKE2 runs canal unless told otherwise (rke2-docs reference/server_config.md):
        # a bundle made for another CNI carries that CNI's images only.
        if ctx.manifest.release.cni != RKE2_DEFAULT_CNI:
            config.setdefault("cni", ctx.manifest.release.cni)
    images = ctx.cluster.images
    if images.distribution == "servers" and node.is_server:
        config["embedded-registry"] = True
    if images.distribution == "registry" and images.registry is not None and node.is_server:
        # A server option: agents take the registry their server hands out.
        config["system-default-registry"] = images.registry.host
    return config


def config_variants(ctx: Context, node: Node) -> list[bytes]:
    """The real bytes of config.yaml that are equivalent for a server that already has
    a datastore: RKE2 then ignores ``server:`` (rke2-docs install/ha.md), so a first
    server that rejoined keeps its config and is not restarted for it."""
    config = {**node_config(ctx, node), "token": ctx.token.reveal()}
    urls = {ctx.server_url, ctx.first_joins}
    urls |= {supervisor_url(n.address) for n in ctx.cluster.servers if n.name != node.name}
    out = [_dump({k: v for k, v in config.items() if k != "server"})]
    out += [_dump({**config, "server": u}) for u in sorted(u for u in urls if u)]
    return out


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


# config_bytes per (context, node): a run asks for each node's config several times
# (is it converged, does it restart, the start step), and rendering it is most of the
# pure work a deploy does per node (docs/scale.md). The entry keeps its context, so an
# id() is never reused while cached; the whole cache is dropped when it grows large.
_CONFIGS: dict[tuple[int, str], tuple[Context, tuple[bytes, bytes]]] = {}
_CONFIGS_MAX = 4096


def config_bytes(ctx: Context, node: Node) -> tuple[bytes, bytes]:
    """(real bytes, masked bytes) of the node's config.yaml."""
    key = (id(ctx), node.name)
    hit = _CONFIGS.get(key)
    if hit is not None and hit[0] is ctx:
        return hit[1]
    config = {**node_config(ctx, node), "token": ctx.token.reveal()}
    out = _dump(config), _dump(mask_secrets(config))
    if len(_CONFIGS) >= _CONFIGS_MAX:
        _CONFIGS.clear()
    _CONFIGS[key] = (ctx, out)
    return out


# Where RKE2's own images come from: these registries are mirrored (embedded registry)
# or redirected (a registry in the air gap).
IMAGE_REGISTRIES = ("docker.io",)


def image_sources(ctx: Context) -> list[str]:
    """The registries images come from: RKE2's, and those of the operator's images."""
    extra = {
        (a.url or "").removeprefix("oci://").split("/", 1)[0]
        for a in ctx.manifest.find(kind=ArtifactKind.IMAGE)
    }
    return [*IMAGE_REGISTRIES, *sorted(extra - set(IMAGE_REGISTRIES) - {""})]


def registries(ctx: Context) -> dict[str, Any] | None:
    """registries.yaml as data: the user's spec.rke2.registries plus what
    spec.images needs (mk8s's entries win for the registries it manages)."""
    user = plain(ctx.cluster.rke2.registries) if ctx.cluster.rke2.registries else None
    images = ctx.cluster.images
    if images.distribution == "all":
        return user
    out: dict[str, Any] = dict(user or {})
    mirrors = dict(out.get("mirrors") or {})
    sources = image_sources(ctx)
    if images.distribution == "servers":
        for source in sources:
            mirrors.setdefault(source, {})
    elif images.registry is not None:
        reg = images.registry
        for source in sources:
            mirrors[source] = {"endpoint": [reg.url.rstrip("/")]}
        configs = dict(out.get("configs") or {})
        entry: dict[str, Any] = {}
        if reg.username and ctx.registry_password is not None:
            entry["auth"] = {"username": reg.username, "password": ctx.registry_password.reveal()}
        if reg.ca_file is not None:
            entry["tls"] = {"ca_file": REGISTRY_CA_PATH}
        configs[reg.host] = entry
        out["configs"] = configs
    out["mirrors"] = mirrors
    return out


def registries_bytes(ctx: Context) -> tuple[bytes, bytes] | None:
    """(real bytes, masked bytes) of registries.yaml, or None when none is written."""
    plain = registries(ctx)
    if plain is None:
        return None
    return _dump(plain), _dump(mask_secrets(plain))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
