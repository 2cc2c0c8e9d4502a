"""The connected side's downloading: RKE2 releases from GitHub or a mirror.

Settings and URLs (``http``), the release list and version specs (``releases``,
``versions``), and parallel, resumable, hash-checked downloads into the content cache
(``fetch``, ``transfer``). Every byte travels through :mod:`mk8s.net`. Nothing here
knows the bundle format.
"""
