"""Delta bundles: carry only what the base bundle inside the air gap lacks.

``bundle create --base OLD`` writes a delta (:mod:`.create`); ``verify``, ``extract``,
``sbom``, ``diff`` and ``deploy`` take it with ``--base`` and behave as if the whole
release had been carried (:mod:`.verify`, :mod:`.extract`). The format, the trust
chain and the auditor's recipe: docs/format.md, "Delta bundles". This package's
``__init__`` imports nothing: the manifest module embeds :mod:`.model`.
"""
