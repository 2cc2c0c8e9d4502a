"""The RKE2 releases client: list releases, resolve a version spec, pick the assets.

Every endpoint is configurable (README, "On a machine with internet access") so a
mirror or a test server can stand in for GitHub: :mod:`.settings`; what the server's
answers mean is :mod:`.server`, shared with :mod:`.fetch`, which downloads what this
module selects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from mk8s import net
from mk8s.bundle.upstream.server import MAX_RELEASE_PAGE, Document, get_document
from mk8s.bundle.upstream.settings import REPO, UpstreamSettings
from mk8s.bundle.upstream.versions import SPEC_HELP, Version, VersionSpec, parse_spec, parse_tag
from mk8s.errors import InputError, UpstreamError, VersionNotFound
from mk8s.untrusted import load_json, shown

ARCHES = ("amd64", "arm64")
DEFAULT_CNI = "canal"
CNIS = ("canal", "cilium", "calico", "flannel")
# Over a thousand releases exist; 100 per page is GitHub's maximum. The page cap only
# guards against a server whose Link headers loop.
PER_PAGE = 100
MAX_PAGES = 1000


# -- releases --------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseAsset:
    """One file attached to a release, as the API lists it."""

    name: str
    size: int
    url: str = ""


@dataclass(frozen=True)
class UpstreamRelease:
    """One RKE2 release with a parseable tag."""

    version: Version
    tag: str
    draft: bool = False
    prerelease: bool = False
    published_at: str | None = None
    assets: tuple[ReleaseAsset, ...] = ()

    @property
    def asset_names(self) -> list[str]:
        return [a.name for a in self.assets]

    def asset(self, name: str) -> ReleaseAsset:
        """The asset called ``name``; raises UpstreamError if the release lacks it."""
        for a in self.assets:
            if a.name == name:
                return a
        raise UpstreamError(
            f"release {self.tag} has no asset {name}", "pick another release or report it upstream"
        )

    def eligible(self, allow_prerelease: bool) -> bool:
        """Drafts never match (they have no public download URL); prereleases and
        ``-rc`` tags only with ``allow_prerelease``."""
        if self.draft:
            return False
        return allow_prerelease or not (self.prerelease or self.version.is_rc)


def releases_url(settings: UpstreamSettings) -> str:
    return f"{settings.api_url}/repos/{REPO}/releases?per_page={PER_PAGE}"


def list_releases(
    settings: UpstreamSettings,
    session: requests.Session | None = None,
    *,
    sleep: Callable[[float], Any] = time.sleep,
) -> list[UpstreamRelease]:
    """Every release with a parseable tag, following ``Link: rel="next"`` page by page.

    Tags that are not ``vX.Y.Z[-rcK]+rke2rN`` are skipped. Raises UpstreamError when a
    page cannot be fetched (after retries), is rate limited, or is not a JSON list of
    releases; the message names the URL.
    """
    own = session is None
    s = net.new_session() if session is None else session
    out: list[UpstreamRelease] = []
    seen: set[str] = set()
    url: str | None = releases_url(settings)
    try:
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise UpstreamError(
                    f"the release list's Link headers loop at {shown(url, limit=300)}"
                )
            seen.add(url)
            page = get_document(
                s,
                url,
                settings,
                what="the release list",
                cap=MAX_RELEASE_PAGE,
                headers={"Accept": "application/vnd.github+json"},
                sleep=sleep,
            )
            out.extend(_parse_page(page, url))
            nxt = page.links.get("next", {}).get("url")
            url = nxt or None
    finally:
        if own:
            s.close()
    return out


def _parse_page(page: Document, url: str) -> list[UpstreamRelease]:
    where = shown(url, limit=300)
    ctype = shown(page.headers.get("Content-Type", "no content type"), limit=80)
    fix = "point MK8S_GITHUB_API_URL at the API root (https://api.github.com or "
    fix += "https://HOST/api/v3 for GitHub Enterprise)"

    def unusable(problem: str) -> UpstreamError:
        why = f"{where} did not answer JSON ({ctype}; {problem})"
        return UpstreamError(f"{why}: is MK8S_GITHUB_API_URL a GitHub API?", fix)

    data = load_json(page.data, what="the answer", error=unusable, max_bytes=MAX_RELEASE_PAGE)
    if not isinstance(data, list):
        raise UpstreamError(f"{where} answered JSON that is not a list of releases", fix)
    return [rel for rel in map(_parse_release, data) if rel is not None]


def _parse_release(item: Any) -> UpstreamRelease | None:
    if not isinstance(item, dict) or not isinstance(item.get("tag_name"), str):
        return None
    version = parse_tag(item["tag_name"])
    if version is None:
        return None
    assets = []
    for a in item.get("assets") or ():
        if isinstance(a, dict) and isinstance(a.get("name"), str):
            size = a.get("size")
            url = a.get("browser_download_url")
            assets.append(
                ReleaseAsset(
                    name=a["name"],
                    size=size if isinstance(size, int) else -1,
                    url=url if isinstance(url, str) else "",
                )
            )
    return UpstreamRelease(
        version=version,
        tag=item["tag_name"],
        draft=bool(item.get("draft")),
        prerelease=bool(item.get("prerelease")),
        published_at=item.get("published_at"),
        assets=tuple(assets),
    )


def resolve(
    spec: str | VersionSpec,
    releases: Iterable[UpstreamRelease],
    *,
    allow_prerelease: bool = False,
) -> UpstreamRelease:
    """The newest release matching ``spec`` (pure; no I/O).

    Raises InputError for a malformed spec and VersionNotFound (exit 2) when nothing
    matches; that message lists the nearest versions that do exist, and says so when
    the only match is a prerelease that ``--allow-prerelease`` would admit.
    """
    vs = parse_spec(spec) if isinstance(spec, str) else spec
    all_releases = list(releases)
    eligible = [r for r in all_releases if r.eligible(allow_prerelease)]
    matches = [r for r in eligible if vs.matches(r.version)]
    if matches:
        return max(matches, key=lambda r: r.version.key)
    raise _not_found(vs, all_releases, eligible, allow_prerelease)


def _not_found(
    vs: VersionSpec,
    all_releases: list[UpstreamRelease],
    eligible: list[UpstreamRelease],
    allow_prerelease: bool,
) -> VersionNotFound:
    hidden = [r for r in all_releases if not r.draft and vs.matches(r.version)]
    if hidden and not allow_prerelease:
        best = max(hidden, key=lambda r: r.version.key)
        return VersionNotFound(
            f"RKE2 {vs.text} matches only prereleases (newest {best.tag})",
            "pass --allow-prerelease to use it, or pick a final release",
        )
    if not eligible:
        return VersionNotFound(
            f"RKE2 {vs.text}: the release list has no usable releases at all",
            "check MK8S_GITHUB_API_URL",
        )
    nearest = nearest_versions(vs, eligible)
    return VersionNotFound(
        f"no RKE2 release matches {vs.text}; nearest: {', '.join(nearest)}",
        f"pick one of those; {SPEC_HELP}",
    )


def nearest_versions(vs: VersionSpec, releases: Sequence[UpstreamRelease], n: int = 5) -> list[str]:
    """Up to ``n`` tags near ``vs``, newest first: the newest of the same minor when it
    has any, else the newest of the minors just below and above."""
    newest_first = sorted(releases, key=lambda r: r.version.key, reverse=True)
    if vs.major is None:
        return [r.tag for r in newest_first[:n]]
    same = [r for r in newest_first if (r.version.major, r.version.minor) == (vs.major, vs.minor)]
    if same:
        if vs.patch is not None:
            # Closest patches first, so v1.28.99 shows the newest and v1.28.0 the oldest.
            same.sort(key=lambda r: (abs(r.version.patch - (vs.patch or 0)), -r.version.patch))
            same = sorted(same[:n], key=lambda r: r.version.key, reverse=True)
        return [r.tag for r in same[:n]]
    target = (vs.major, vs.minor)
    minors = sorted({(r.version.major, r.version.minor) for r in releases})
    below = [m for m in minors if m < target][-2:]
    above = [m for m in minors if m > target][:2]
    picks = []
    for m in (*reversed(above), *reversed(below)):
        picks.append(next(r for r in newest_first if (r.version.major, r.version.minor) == m))
    return [r.tag for r in picks]


def resolve_release(
    spec: str,
    settings: UpstreamSettings,
    *,
    allow_prerelease: bool = False,
    session: requests.Session | None = None,
) -> UpstreamRelease:
    """List releases and resolve ``spec``: :func:`list_releases` then :func:`resolve`.

    Raises InputError for a malformed spec before any request, UpstreamError for
    network or server problems, VersionNotFound when nothing matches.
    """
    vs = parse_spec(spec)
    return resolve(vs, list_releases(settings, session), allow_prerelease=allow_prerelease)


# -- assets ----------------------------------------------------------------------------
_IMAGE_ASSET = re.compile(
    r"^rke2-images(?:-(?P<group>[a-z0-9][a-z0-9-]*))?\.linux-(?P<arch>[a-z0-9]+)\.tar\.zst$"
)


def sha256sums_name(arch: str) -> str:
    return f"sha256sum-{arch}.txt"


def tarball_name(arch: str) -> str:
    return f"rke2.linux-{arch}.tar.gz"


def images_name(arch: str, group: str | None = None) -> str:
    """``rke2-images.linux-ARCH.tar.zst`` or ``rke2-images-GROUP.linux-ARCH.tar.zst``."""
    return f"rke2-images{'-' + group if group else ''}.linux-{arch}.tar.zst"


def image_groups(asset_names: Iterable[str], arch: str) -> list[str]:
    """The image groups a release has for ``arch`` (``.tar.zst`` only), sorted."""
    groups = set()
    for name in asset_names:
        m = _IMAGE_ASSET.match(name)
        if m and m["arch"] == arch and m["group"]:
            groups.add(m["group"])
    return sorted(groups)


def select_assets(
    asset_names: Iterable[str],
    arches: Sequence[str],
    cni: str | None = None,
    groups: Sequence[str] = (),
    *,
    tag: str = "the release",
) -> list[str]:
    """The release files a bundle needs (docs/format.md, "Artifacts"), per arch in order.

    Always ``sha256sum-ARCH.txt`` and ``rke2.linux-ARCH.tar.gz``; images are
    ``.tar.zst`` only: ``rke2-images.linux-ARCH`` for canal (the default), else
    ``rke2-images-core`` plus ``rke2-images-<cni>``, plus one file per extra group.
    Raises InputError (exit 2) for an unknown arch or CNI, an arch the release was not
    built for, or a CNI / group it lacks (listing the groups it has).
    """
    names = set(asset_names)
    cni = cni or DEFAULT_CNI
    if cni not in CNIS:
        raise InputError(f"unknown CNI {cni!r}", f"use one of {', '.join(CNIS)}")
    if not arches:
        raise InputError("no architecture given", f"use one of {', '.join(ARCHES)}")
    out: list[str] = []
    for arch in arches:
        if arch not in ARCHES:
            raise InputError(f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHES)}")
        base = [sha256sums_name(arch), tarball_name(arch)]
        if not all(b in names for b in base):
            built = [a for a in ARCHES if tarball_name(a) in names] or ["none"]
            raise InputError(
                f"{tag} has no {arch} build (it has: {', '.join(built)})",
                "drop that --arch or pick another release",
            )
        wanted: list[str | None] = [None] if cni == DEFAULT_CNI else ["core", cni]
        wanted += [g for g in groups if g not in wanted]
        have = image_groups(names, arch)
        out += base
        for group in wanted:
            name = images_name(arch, group)
            if name not in names:
                if group is None:
                    what = "default image tarball"
                elif group in ("core", cni) and cni != DEFAULT_CNI:
                    what = f"images for CNI {cni}"
                else:
                    what = f"image group {group}"
                raise InputError(
                    f"{tag} has no {what} for {arch} ({name} is missing); "
                    f"its image groups: {', '.join(have) or 'none'}",
                    "pick one of those or another release",
                )
            out.append(name)
    return out


# -- URLs ------------------------------------------------------------------------------
def quote_tag(tag: str) -> str:
    """The tag as a URL path segment: ``v1.28.15+rke2r1`` -> ``v1.28.15%2Brke2r1``."""
    return quote(tag, safe="")


def asset_url(settings: UpstreamSettings, tag: str, name: str) -> str:
    """``{release_url}/{tag}/{name}`` with the tag's ``+`` as ``%2B``."""
    return f"{settings.release_url}/{quote_tag(tag)}/{quote(name, safe='')}"


def install_script_url(settings: UpstreamSettings, tag: str) -> str:
    """``{raw_url}/{tag}/install.sh``: the installer at the resolved tag, never floating."""
    return f"{settings.raw_url}/{quote_tag(tag)}/install.sh"


__all__ = [
    "ARCHES",
    "CNIS",
    "DEFAULT_CNI",
    "MAX_PAGES",
    "PER_PAGE",
    "ReleaseAsset",
    "UpstreamRelease",
    "asset_url",
    "image_groups",
    "images_name",
    "install_script_url",
    "list_releases",
    "nearest_versions",
    "quote_tag",
    "resolve",
    "resolve_release",
    "select_assets",
    "sha256sums_name",
    "tarball_name",
]
