"""Push the images of an archive (OCI layout or docker archive, plain or zstd) into a
registry, e.g. the bundle's RKE2 image tarballs into a registry inside the air gap.

Each image goes to its own repository path on the target registry (``docker.io/
rancher/foo:v1`` -> ``REGISTRY[/PREFIX]/rancher/foo:v1``, see
:meth:`Reference.retarget`), or wherever a ``rewrite`` function says. The push:

1. reads the archive once, checking every manifest, config and layer digest;
2. asks the registry (HEAD) which blobs each repository already has, and links blobs
   it holds in another repository (a cross-repository mount, no bytes sent);
3. only if something is missing, reads the archive a second time and uploads the
   missing blobs as they stream by, each hashed and committed only if it matches;
4. puts the manifests (platform manifests by digest, then the tag), skipping those
   the registry already has.

So a push that was cut off, or is run again, sends only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mk8s.callbacks import TransferProgress
from mk8s.errors import ImageArchiveError, RegistryError
from mk8s.images.archive import iter_members, scan_archive
from mk8s.images.client import RegistryClient
from mk8s.images.inspect import images_of
from mk8s.images.model import ArchiveFormat, ArchiveImage, BlobSource
from mk8s.images.reference import Reference, parse_reference

Rewrite = Callable[[Reference], Reference]


@dataclass(frozen=True)
class PushedImage:
    """An image now in the registry: where it came from and its pinned target."""

    source: str
    target: Reference

    @property
    def digest(self) -> str:
        return self.target.digest or ""


@dataclass
class PushReport:
    """The pushed images and what moved: blobs uploaded, mounted or already there."""

    images: list[PushedImage] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    manifests_skipped: int = 0


def push_archive(
    path: Path,
    client: RegistryClient,
    *,
    prefix: str = "",
    rewrite: Rewrite | None = None,
    name: str | None = None,
    kind: ArchiveFormat | None = None,
    progress: TransferProgress | None = None,
) -> PushReport:
    """Push every image of the archive at ``path`` to ``client``'s registry.

    ``rewrite`` maps an image's name to its target (default: the same path on the
    client's registry under ``prefix``). ``name`` names an image the archive leaves
    unnamed. ``kind`` insists on one :class:`ArchiveFormat`. Returns the
    pushed references with their digests. Raises ImageArchiveError or ChecksumMismatch
    for a bad archive (before anything is sent when the first pass finds it), and the
    client's errors for registry trouble; a re-run resumes.
    """
    scan = scan_archive(Path(path))
    found, images = images_of(scan)
    if kind is not None and found != kind:
        raise ImageArchiveError(
            f"{path} is a {found} archive, not {kind}", "use the push for its kind"
        )
    _refuse_partial(images, Path(path))
    retarget = rewrite or (lambda ref: ref.retarget(client.registry, prefix))
    plan = [(img, _targets(img, retarget, name, scan.path)) for img in images]
    report = PushReport()
    _BlobPusher(client, Path(path), report, progress).push(plan)
    for image, targets in plan:
        for source, target in targets:
            report.images.append(PushedImage(source, _put_manifests(client, image, target, report)))
    return report


def _refuse_partial(images: list[ArchiveImage], path: Path) -> None:
    """A registry stores an index only with every manifest it lists (distribution
    answers MANIFEST_BLOB_UNKNOWN), so an index the archive carries in part could not
    be pushed under its digest: refuse before anything is sent."""
    for img in images:
        if img.partial:
            name = img.names[0] if img.names else img.root.digest
            raise ImageArchiveError(
                f"{path}: {name} carries {', '.join(img.platforms) or 'part'} of what its"
                f" index {img.root.digest} lists, and a registry stores an index only with"
                " every manifest it lists, so that pinned digest could not exist there",
                "create the bundle with --all-platforms to push its images into a registry",
            )


def _targets(
    image: ArchiveImage, retarget: Rewrite, name: str | None, path: Path
) -> list[tuple[str, Reference]]:
    names = list(image.names)
    if not names:
        if name is None:
            raise ImageArchiveError(
                f"{path} holds an image without a name ({image.root.digest})",
                "give the name to push it under",
            )
        names = [name]
    return [(n, retarget(parse_reference(n))) for n in names]


def _put_manifests(
    client: RegistryClient, image: ArchiveImage, target: Reference, report: PushReport
) -> Reference:
    repo = target.repository
    for m in image.manifests:
        if client.manifest_digest(repo, m.digest) == m.digest:
            report.manifests_skipped += 1
            continue
        client.put_manifest(repo, m.digest, m)
        report.manifests_pushed += 1
    ref = target.tag or image.root.digest
    if client.manifest_digest(repo, ref) == image.root.digest:
        report.manifests_skipped += 1
    else:
        client.put_manifest(repo, ref, image.root)
        report.manifests_pushed += 1
    return target.with_digest(image.root.digest)


class _BlobPusher:
    """Steps 2 and 3: make every (repository, blob) pair exist in the registry."""

    def __init__(
        self,
        client: RegistryClient,
        path: Path,
        report: PushReport,
        progress: TransferProgress | None,
    ) -> None:
        self.client = client
        self.path = path
        self.report = report
        self.progress = progress
        self.present = client.known_blobs  # digest -> a repository that has it
        self.checked: set[tuple[str, str]] = set()
        self.missing: dict[str, list[str]] = {}  # digest -> repositories lacking it
        self.sources: dict[str, BlobSource] = {}

    def push(self, plan: list[tuple[ArchiveImage, list[tuple[str, Reference]]]]) -> None:
        for image, targets in plan:
            for _, target in targets:
                for blob in image.blobs:
                    self._probe(target.repository, blob)
        self._mount_known()
        for _ in range(2):  # a second round only if a mount after upload failed
            if not self.missing:
                return
            self._upload_missing()
        if self.missing:
            raise RegistryError(
                f"{self.client.registry} did not take {len(self.missing)} blob(s) from {self.path}",
                "check the registry's logs and run the push again",
            )

    def _probe(self, repo: str, blob: BlobSource) -> None:
        self.sources.setdefault(blob.digest, blob)
        if (repo, blob.digest) in self.checked:
            return
        self.checked.add((repo, blob.digest))
        if self.client.blob_exists(repo, blob.digest):
            self.report.blobs_skipped += 1
        else:
            self.missing.setdefault(blob.digest, []).append(repo)

    def _mount_known(self) -> None:
        for digest in list(self.missing):
            source = self.present.get(digest)
            if source is not None:
                self._mount_into(digest, source)

    def _mount_into(self, digest: str, source: str) -> None:
        still: list[str] = []
        for repo in self.missing.pop(digest, []):
            if self.client.mount_blob(repo, digest, source):
                self.report.blobs_mounted += 1
            else:
                still.append(repo)
        if still:
            self.missing[digest] = still

    def _upload_missing(self) -> None:
        by_member: dict[str, list[str]] = {}
        for digest in self.missing:
            by_member.setdefault(self.sources[digest].member, []).append(digest)
        for member, stream in iter_members(self.path, by_member):
            digests = [d for d in by_member.pop(member) if d in self.missing]
            if not digests:
                continue
            digest = digests[0]  # one member holds one blob: its name or its hash says so
            blob = self.sources[digest]
            repos = self.missing[digest]
            self.client.upload_blob(
                repos[0],
                digest,
                blob.size,
                stream,
                image=f"{self.path}:{member}",
                progress=self.progress,
            )
            self.report.blobs_uploaded += 1
            self.report.bytes_uploaded += blob.size
            self.missing[digest] = repos[1:]
            if not self.missing[digest]:
                del self.missing[digest]
            else:
                self._mount_into(digest, repos[0])
        if by_member:
            raise ImageArchiveError(
                f"{self.path} changed between two reads: {sorted(by_member)[0]} is gone",
                "do not modify an archive while it is pushed; run the push again",
            )
