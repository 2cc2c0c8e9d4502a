"""The connected side's downloading: RKE2 releases from GitHub or a mirror.

Where they come from (``settings``: URLs, credentials, retries), what the server's
answers mean (``server``), the release list and version specs (``releases``,
``versions``), the release's checksum files (``checksums``), and parallel,
resumable, hash-checked downloads into the content cache (``fetch``; ``transfer``:
one file). Every byte travels through :mod:`mk8s.net`. Nothing here knows the
bundle format.
"""
