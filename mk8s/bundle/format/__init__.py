"""The bundle file format: what a bundle is, byte for byte, and how it is checked.

The lock and manifest model (``manifest``, ``artifact``), signing keys and the
signature member (``keys``), the tar and zstd framing (``tarfmt``, ``zstdframe``,
``stream``), writing (``writer``), verifying in one streaming pass (``reader``) and
extracting (``extract``), and split bundles (``parts``, ``partstream``, ``split``).
Nothing here touches the network: the disconnected side needs only this package.
"""
