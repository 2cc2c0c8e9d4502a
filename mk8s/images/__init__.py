"""Container images: pull into OCI image-layout archives, push into a registry.

The shared foundation of image distribution (docs/deploy.md, "Images at scale":
``registry`` mode pushes the bundle's image tarballs into a registry inside the air gap)
and of workloads (docs/bundles.md: pull the operator's own images by digest into OCI
layout archives).

Why a thin client on ``requests`` and not a registry library: we compared oras-py
(0.2.x) and python-dxf (12.x). oras-py is built for ORAS artifacts: it parses
manifests into dicts and re-serialises them on upload (so exact digests cannot be kept
or checked), reads whole blobs into memory for monolithic uploads, does not verify
downloaded blobs, has no Range resume, logs and raises plain ValueError, and ships no
type information. python-dxf is closer (typed, custom CA, basic/token auth, HEAD,
digest check at the end of a blob), but has no retries, no resume, no chunked upload,
sends manifests as text, and pulls in tqdm and www-authenticate. Both would need
wrapping at every call to get retries with backoff, resume, hash-while-streaming and
commit-only-after-check, which is most of the work. The distribution API we need is
eight endpoints; a ~500-line client on ``requests`` (already a dependency, already
how mk8s retries, resumes and hashes release downloads) adds no package to the one-file
executable and keeps every byte under our checks.

Modules: ``reference`` (image names), ``auth`` (credentials), ``challenge`` (answering
a registry's 401), ``wire`` (one registry on the wire: TLS, authentication, retries,
deadlines, error statuses), ``client`` (the API calls), ``blobs`` (blob downloads and
uploads), ``model`` (media types, descriptors, platforms), ``archive`` (reading tar
streams, plain / gzip / zstd), ``layout`` (OCI image-layout archives),
``dockerarchive`` (``docker save`` archives), ``pull``, ``push`` and ``inspect``.
"""

from mk8s.images.auth import Credentials, find_credentials, resolve_credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.inspect import ImageInfo, list_images
from mk8s.images.model import ArchiveFormat
from mk8s.images.pull import PulledImage, pull_image
from mk8s.images.push import (
    PushedImage,
    PushReport,
    push_archive,
)
from mk8s.images.reference import Reference, parse_reference

__all__ = [
    "ArchiveFormat",
    "Credentials",
    "ImageInfo",
    "PulledImage",
    "PushReport",
    "PushedImage",
    "Reference",
    "RegistryClient",
    "RegistryClientSettings",
    "find_credentials",
    "list_images",
    "parse_reference",
    "pull_image",
    "push_archive",
    "resolve_credentials",
]
