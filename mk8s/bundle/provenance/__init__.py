"""What a bundle or a lock holds, for a transfer review: the inventory of artifacts and
the images and charts inside them (``inventory``, ``chartarchive``), the SBOM
(``sbom``) and the differences between two bundles (``diff``).
"""
