"""A bundle's SBOM: CycloneDX 1.5 JSON or SPDX 2.3 JSON, written with the stdlib only.

It lists the RKE2 release, every artifact with its size and sha256 (and download URL
where it came from upstream), every container image inside the image archives (name,
tag, manifest digest, platforms) and every Helm chart among the operator's files.

Output is deterministic: the same bundle gives the same bytes. The time is the
manifest's ``resolvedAt``, the serial number / document namespace is derived from the
manifest's content, and an embedded SBOM artifact is never listed (it cannot describe
itself), so ``bundle sbom`` of a bundle made with ``create --sbom`` reproduces the
embedded file byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mk8s import __version__
from mk8s.bundle.format.manifest import Artifact, Lock, artifact_path, build_lock
from mk8s.bundle.provenance.inventory import SBOM_KIND, Chart, Image, Inventory, from_files
from mk8s.files import atomic_write


class SbomFormat(StrEnum):
    """The SBOM formats mk8s writes: CycloneDX 1.5 JSON, SPDX 2.3 JSON."""

    CYCLONEDX = "cyclonedx"
    SPDX = "spdx"


FORMATS = tuple(str(f) for f in SbomFormat)
FILE_NAMES = {SbomFormat.CYCLONEDX: "mk8s-sbom.cdx.json", SbomFormat.SPDX: "mk8s-sbom.spdx.json"}
_NAMESPACE = uuid.UUID("5f1c1f8e-3c1a-4f55-9a51-6d6b38a7e2b1")  # mk8s SBOMs


def render(inv: Inventory, fmt: SbomFormat) -> bytes:
    """The SBOM of ``inv`` in ``fmt``, as canonical JSON."""
    doc = _cyclonedx(inv) if fmt == SbomFormat.CYCLONEDX else _spdx(inv)
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


# -- shared facts ----------------------------------------------------------------------------
def _identity(inv: Inventory) -> str:
    """A stable digest of what the SBOM describes (release + artifacts, no SBOM)."""
    lock = inv.lock
    doc = {"rke2": lock.release.to_json(), "artifacts": [a.to_json() for a in inv.artifacts]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _tool(inv: Inventory) -> str:
    return (inv.lock.created_by or f"mk8s {__version__}").removeprefix("mk8s ")


def _subject(inv: Inventory) -> str:
    return inv.lock.bundle_name() if inv.contents is not None else "mk8s.lock"


def _rke2_purl(tag: str) -> str:
    return f"pkg:github/rancher/rke2@{quote(tag, safe='')}"


def _image_purl(img: Image) -> str | None:
    if not img.name:
        return None
    last = img.name.rsplit("/", 1)[-1].lower()
    quals = f"repository_url={quote(img.name, safe='/:')}"
    if img.tag:
        quals += f"&tag={quote(img.tag, safe='')}"
    return f"pkg:oci/{quote(last, safe='')}@{quote(img.digest, safe='')}?{quals}"


def _download(art: Artifact) -> str | None:
    # An operator's file:// source is a path on the creator's machine: not for an SBOM.
    return art.url if art.url and art.url.startswith(("http://", "https://")) else None


def _props(pairs: Mapping[str, object | None]) -> list[dict[str, str]]:
    return [{"name": f"mk8s:{k}", "value": str(v)} for k, v in pairs.items() if v is not None]


# -- CycloneDX 1.5 ---------------------------------------------------------------------------
def _cyclonedx(inv: Inventory) -> dict[str, Any]:
    lock = inv.lock
    serial = uuid.uuid5(_NAMESPACE, "cyclonedx:" + _identity(inv))
    rke2_ref = "rke2"
    components: list[dict[str, Any]] = [
        {
            "type": "platform",
            "bom-ref": rke2_ref,
            "name": "rke2",
            "version": lock.release.tag,
            "purl": _rke2_purl(lock.release.tag),
            "properties": _props(
                {
                    "requested": lock.release.requested,
                    "arch": ",".join(lock.release.arch),
                    "cni": lock.release.cni,
                    "imageGroups": ",".join(lock.release.image_groups) or None,
                }
            ),
        }
    ]
    deps: list[dict[str, Any]] = []
    for art in inv.artifacts:
        comp = _cdx_artifact(art)
        found = inv.contents_of(art)
        nested = [_cdx_image(art, img) for img in found.images]
        nested += [_cdx_chart(art, ch) for ch in found.charts]
        if nested:
            comp["components"] = nested
            deps.append({"ref": comp["bom-ref"], "dependsOn": [c["bom-ref"] for c in nested]})
        if found.problem:
            comp["properties"] += _props({"contents": found.problem})
        components.append(comp)
    subject = {
        "type": "application",
        "bom-ref": "bundle",
        "name": _subject(inv),
        "version": lock.release.tag,
        "properties": _props({"kind": lock.kind, "createdBy": lock.created_by}),
    }
    deps.insert(0, {"ref": "bundle", "dependsOn": [c["bom-ref"] for c in components]})
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": lock.resolved_at,
            "tools": {
                "components": [{"type": "application", "name": "mk8s", "version": _tool(inv)}]
            },
            "component": subject,
        },
        "components": components,
        "dependencies": deps,
    }


def _cdx_artifact(art: Artifact) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "type": "file",
        "bom-ref": f"artifact:{art.path}",
        "name": art.name,
        "hashes": [{"alg": "SHA-256", "content": art.sha256}],
        "properties": _props(
            {"kind": art.kind, "path": art.path, "size": art.size, "arch": art.arch}
        ),
    }
    url = _download(art)
    if url:
        comp["externalReferences"] = [{"type": "distribution", "url": url}]
    return comp


def _cdx_image(art: Artifact, img: Image) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "type": "container",
        "bom-ref": f"image:{art.path}:{img.ref}",
        "name": img.name or "<unnamed>",
        "hashes": [{"alg": "SHA-256", "content": img.digest.removeprefix("sha256:")}],
        "properties": _props({"digest": img.digest, "platform": ",".join(img.platforms) or None}),
    }
    if img.tag:
        comp["version"] = img.tag
    purl = _image_purl(img)
    if purl:
        comp["purl"] = purl
    return comp


def _cdx_chart(art: Artifact, ch: Chart) -> dict[str, Any]:
    return {
        "type": "application",
        "bom-ref": f"chart:{art.path}:{ch.name}@{ch.version}",
        "name": ch.name,
        "version": ch.version,
        "properties": _props({"helmChart": "true", "appVersion": ch.app_version}),
    }


# -- SPDX 2.3 --------------------------------------------------------------------------------
def _spdx(inv: Inventory) -> dict[str, Any]:
    lock = inv.lock
    ns = uuid.uuid5(_NAMESPACE, "spdx:" + _identity(inv))
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": "SPDXRef-Bundle",
            "name": _subject(inv),
            "versionInfo": lock.release.tag,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "ARCHIVE",
            "comment": f"{lock.kind} written by {lock.created_by or 'mk8s'}",
        },
        {
            "SPDXID": "SPDXRef-RKE2",
            "name": "rke2",
            "versionInfo": lock.release.tag,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "APPLICATION",
            "externalRefs": [_spdx_purl(_rke2_purl(lock.release.tag))],
        },
    ]
    rels = [_rel("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Bundle")]
    rels.append(_rel("SPDXRef-Bundle", "CONTAINS", "SPDXRef-RKE2"))
    for n, art in enumerate(inv.artifacts, start=1):
        art_id = f"SPDXRef-Artifact-{n}"
        packages.append(_spdx_artifact(art, art_id, inv.contents_of(art).problem))
        rels.append(_rel("SPDXRef-Bundle", "CONTAINS", art_id))
        for pkg in _spdx_contents(art, art_id, inv):
            packages.append(pkg)
            rels.append(_rel(art_id, "CONTAINS", pkg["SPDXID"]))
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": _subject(inv),
        "documentNamespace": f"https://mk8s.invalid/spdxdocs/{_subject(inv)}-{ns}",
        "creationInfo": {"created": lock.resolved_at, "creators": [f"Tool: mk8s-{_tool(inv)}"]},
        "packages": packages,
        "relationships": rels,
    }


def _spdx_artifact(art: Artifact, spdx_id: str, problem: str | None) -> dict[str, Any]:
    purpose = {"images": "ARCHIVE", "rke2": "ARCHIVE", "install-script": "INSTALL"}
    pkg: dict[str, Any] = {
        "SPDXID": spdx_id,
        "name": art.name,
        "downloadLocation": _download(art) or "NOASSERTION",
        "filesAnalyzed": False,
        "packageFileName": art.path,
        "checksums": [{"algorithm": "SHA256", "checksumValue": art.sha256}],
        "primaryPackagePurpose": purpose.get(art.kind, "FILE"),
        "comment": f"kind {art.kind}, {art.size} bytes"
        + (f", arch {art.arch}" if art.arch else "")
        + (f"; contents {problem}" if problem else ""),
    }
    return pkg


def _spdx_contents(art: Artifact, art_id: str, inv: Inventory) -> Iterator[dict[str, Any]]:
    found = inv.contents_of(art)
    index = art_id.removeprefix("SPDXRef-Artifact-")
    for m, img in enumerate(found.images, start=1):
        pkg: dict[str, Any] = {
            "SPDXID": f"SPDXRef-Image-{index}-{m}",
            "name": img.name or "<unnamed>",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [
                {"algorithm": "SHA256", "checksumValue": img.digest.removeprefix("sha256:")}
            ],
            "comment": f"image {img.ref} ({', '.join(img.platforms) or 'no platform'})",
        }
        if img.tag:
            pkg["versionInfo"] = img.tag
        purl = _image_purl(img)
        if purl:
            pkg["externalRefs"] = [_spdx_purl(purl)]
        yield pkg
    for m, ch in enumerate(found.charts, start=1):
        yield {
            "SPDXID": f"SPDXRef-Chart-{index}-{m}",
            "name": ch.name,
            "versionInfo": ch.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "APPLICATION",
            "comment": "Helm chart" + (f", appVersion {ch.app_version}" if ch.app_version else ""),
        }


def _spdx_purl(purl: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    }


def _rel(a: str, how: str, b: str) -> dict[str, str]:
    return {"spdxElementId": a, "relationshipType": how, "relatedSpdxElement": b}


# -- embedding at create time ----------------------------------------------------------------
def embed(
    manifest: Lock, files: Mapping[str, Path], fmt: SbomFormat, cache_dir: Path
) -> tuple[Lock, dict[str, Path]]:
    """Add the SBOM of ``manifest`` (read from ``files``) as a signed artifact.

    The SBOM file is kept in the content cache under its sha256, like every other
    input of the writer. Returns the manifest and files to write.
    """
    data = render(from_files(manifest, files), fmt)
    sha = hashlib.sha256(data).hexdigest()
    path = Path(cache_dir) / "sha256" / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    name = FILE_NAMES[fmt]
    art = Artifact(
        name=name, kind=SBOM_KIND, path=artifact_path(name, SBOM_KIND), size=len(data), sha256=sha
    )
    others = [a for a in manifest.artifacts if a.kind != SBOM_KIND]
    lock = build_lock(manifest.release, [*others, art], manifest.resolved_at)
    return lock.as_manifest((manifest.created_by or "").removeprefix("mk8s ") or __version__), {
        **files,
        art.path: path,
    }
