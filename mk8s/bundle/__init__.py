"""Bundles: the format (:mod:`.format`), the connected side's downloading
(:mod:`.upstream`) and provenance (:mod:`.provenance`). :mod:`.lock` pins a release in
a lockfile and :mod:`.create` builds a bundle from it, with the operator's workloads
(:mod:`.workload_sources`); these three alone use more than one of the packages.
"""
